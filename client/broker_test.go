package client_test

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/eclipse/paho.mqtt.golang/packets"

	"github.com/holdfast-mqtt/holdfast/client"
	"github.com/holdfast-mqtt/holdfast/internal/faultproxy"
	"github.com/holdfast-mqtt/holdfast/internal/testbroker"
	"github.com/holdfast-mqtt/holdfast/internal/testsub"
	"github.com/holdfast-mqtt/holdfast/outbox"
	"github.com/holdfast-mqtt/holdfast/reconnect"
)

// rig starts Mosquitto with persistence and a fault proxy in front of it.
func rig(t *testing.T, opts testbroker.MosquittoOptions) (*testbroker.Mosquitto, *faultproxy.Proxy) {
	t.Helper()
	m := testbroker.StartMosquitto(t, opts)
	p, err := faultproxy.New(m.Addr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close() })
	return m, p
}

func subscriber(t *testing.T, m *testbroker.Mosquitto, topics ...string) *testsub.Subscriber {
	t.Helper()
	s, err := testsub.Start(testsub.Options{Broker: m.URL(), ClientID: "sub-" + t.Name(), Topics: topics})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

func newClient(t *testing.T, cfg client.Config) *client.Client {
	t.Helper()
	if cfg.ClientID == "" {
		cfg.ClientID = "pub-" + t.Name()
	}
	if cfg.Backoff.InitialInterval == 0 {
		cfg.Backoff.InitialInterval = 20 * time.Millisecond
		cfg.Backoff.MaxInterval = 500 * time.Millisecond
	}
	if cfg.KeepAlive == 0 {
		cfg.KeepAlive = 2 * time.Second
	}
	c, err := client.New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = c.Close(ctx)
	})
	return c
}

func payload(n uint64) []byte { return []byte(strconv.FormatUint(n, 10) + " payload") }

func requireClean(t *testing.T, what string, rep testsub.Report, allowDup bool) {
	t.Helper()
	if len(rep.Lost) > 0 || len(rep.Reordered) > 0 || len(rep.Unexpected) > 0 || (!allowDup && len(rep.Duplicates) > 0) {
		t.Fatalf("%s: accepted %d received %d lost %d %v reordered %v duplicates %v unexpected %v",
			what, rep.Accepted, rep.Received, len(rep.Lost), head(rep.Lost), head(rep.Reordered), rep.Duplicates, head(rep.Unexpected))
	}
}

func head(s []uint64) []uint64 { return s[:min(len(s), 10)] }

func seqs(from, to uint64) []uint64 {
	out := make([]uint64, 0, to-from+1)
	for n := from; n <= to; n++ {
		out = append(out, n)
	}
	return out
}

// TestBacklogOver65535BuiltWhileBrokerDown publishes 100,000 messages before
// the first connection ever succeeds, more than paho's packet identifiers can
// hold, and checks that all arrive, in order, once the broker is reachable.
func TestBacklogOver65535BuiltWhileBrokerDown(t *testing.T) {
	const n = 100_000
	m, p := rig(t, testbroker.MosquittoOptions{})
	p.SetRefuse(true)
	sub := subscriber(t, m, "backlog/t")
	c := newClient(t, client.Config{
		Brokers:    []string{p.URL()},
		OutboxDir:  t.TempDir(),
		Durability: outbox.NoSync, // this test is about size and order, not fsync
	})
	ctx := context.Background()
	for i := uint64(1); i <= n; i++ {
		if _, err := c.Publish(ctx, "backlog/t", payload(i), client.QoS1); err != nil {
			t.Fatalf("publish %d: %v", i, err)
		}
	}
	if st := c.Stats(); st.Queued != n || st.Acked != 0 {
		t.Fatalf("before the broker is reachable: %+v", st)
	}
	p.SetRefuse(false)
	flushWithProgress(t, c, stall)
	waitArrivals(t, sub, "backlog/t", n, stall)
	requireClean(t, "backlog", testsub.Check(seqs(1, n), sub.Arrivals("backlog/t")), true)
}

// TestQoS2ExactlyOnceInOrderUnderCuts cuts the connection again and again
// while QoS 2 messages flow, and checks every message arrives exactly once
// and in order.
func TestQoS2ExactlyOnceInOrderUnderCuts(t *testing.T) {
	const n = 3000
	m, p := rig(t, testbroker.MosquittoOptions{})
	sub := subscriber(t, m, "cuts/q2", "cuts/q1")
	c := newClient(t, client.Config{Brokers: []string{p.URL()}, OutboxDir: t.TempDir()})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(150 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
				p.Cut()
			}
		}
	}()
	for i := uint64(1); i <= n; i++ {
		if _, err := c.Publish(ctx, "cuts/q2", payload(i), client.QoS2); err != nil {
			t.Fatalf("publish %d: %v", i, err)
		}
		if _, err := c.Publish(ctx, "cuts/q1", payload(i), client.QoS1); err != nil {
			t.Fatalf("publish %d: %v", i, err)
		}
	}
	cancel()
	wg.Wait()
	flushWithProgress(t, c, stall)
	// What is missing after these is reported below as lost.
	sub.WaitProgress("cuts/q2", n, stall)
	sub.WaitProgress("cuts/q1", n, stall)
	st := c.Stats()
	rep2 := testsub.Check(seqs(1, n), sub.Arrivals("cuts/q2"))
	rep1 := testsub.Check(seqs(1, n), sub.Arrivals("cuts/q1"))
	t.Logf("cuts %d, reconnects %d, resent %d, QoS 1 duplicates %d", p.Stats().Cuts, st.Reconnects, st.Resent, len(rep1.Duplicates))
	if st.Reconnects < 3 {
		t.Fatalf("the test cut too little: %d reconnects", st.Reconnects)
	}
	requireClean(t, "QoS 2", rep2, false)
	requireClean(t, "QoS 1", rep1, true)
}

// TestQoS2WindowStaysWithinBrokerQuota queues more QoS 2 messages than
// Mosquitto accepts in flight (max_inflight_messages 20) and checks none is
// silently dropped by the broker when they all go out at once.
func TestQoS2WindowStaysWithinBrokerQuota(t *testing.T) {
	const n = 500
	m, p := rig(t, testbroker.MosquittoOptions{MaxInflightMessages: 20})
	p.SetRefuse(true)
	sub := subscriber(t, m, "quota/t")
	c := newClient(t, client.Config{Brokers: []string{p.URL()}, OutboxDir: t.TempDir()})
	for i := uint64(1); i <= n; i++ {
		if _, err := c.Publish(context.Background(), "quota/t", payload(i), client.QoS2); err != nil {
			t.Fatal(err)
		}
	}
	p.SetRefuse(false)
	flushWithProgress(t, c, stall)
	sub.WaitProgress("quota/t", n, stall) // what is missing is reported below as lost
	requireClean(t, "QoS 2 burst", testsub.Check(seqs(1, n), sub.Arrivals("quota/t")), false)
}

// TestQoS2ResumesWithPUBRELAfterRestart reproduces the trap of paho's
// QoS 2 resume: the broker completed an exchange (PUBREL received, PUBCOMP
// lost) and the publisher restarts. Resuming with the stored PUBLISH would
// make the broker deliver it again; Holdfast recorded the PUBREC and
// resumes with the PUBREL. The "phase sent" case shows the duplicate the
// recorded phase prevents, so the test can tell the two apart.
func TestQoS2ResumesWithPUBRELAfterRestart(t *testing.T) {
	for _, tc := range []struct {
		phase    outbox.Phase
		wantDups int
	}{
		{outbox.PhaseReleased, 0},
		{outbox.PhaseSent, 1},
	} {
		t.Run(tc.phase.String(), func(t *testing.T) {
			m := testbroker.StartMosquitto(t, testbroker.MosquittoOptions{})
			topic := "trap/" + tc.phase.String()
			sub := subscriber(t, m, topic)
			id := "trap-" + tc.phase.String()
			pid := completeQoS2LosingPUBCOMP(t, m.URL(), id, topic, payload(1))
			if !sub.WaitCount(topic, 1, 10*time.Second) {
				t.Fatal("the broker did not release the first message")
			}
			// The outbox as a Holdfast process killed at that moment left it.
			dir := t.TempDir()
			q, err := outbox.Open(dir, outbox.Options{})
			if err != nil {
				t.Fatal(err)
			}
			seq, err := q.Append(context.Background(), &outbox.Record{Topic: topic, QoS: 2, Payload: payload(1)})
			if err != nil {
				t.Fatal(err)
			}
			if err := q.SetState(context.Background(), seq, pid, tc.phase); err != nil {
				t.Fatal(err)
			}
			if err := q.Close(); err != nil {
				t.Fatal(err)
			}
			c := newClient(t, client.Config{Brokers: []string{m.URL()}, ClientID: id, OutboxDir: dir})
			r, err := c.Publish(context.Background(), topic, payload(2), client.QoS2)
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			if err := r.Wait(ctx); err != nil {
				t.Fatal(err)
			}
			if err := c.Flush(ctx); err != nil {
				t.Fatal(err)
			}
			if !sub.WaitCount(topic, 2+tc.wantDups, 10*time.Second) {
				t.Fatalf("got %d messages", sub.Count(topic))
			}
			rep := testsub.Check([]uint64{1, 2}, sub.Arrivals(topic))
			if len(rep.Duplicates) != tc.wantDups || len(rep.Lost) != 0 {
				t.Fatalf("phase %v: duplicates %v lost %v, want %d duplicates", tc.phase, rep.Duplicates, rep.Lost, tc.wantDups)
			}
		})
	}
}

// completeQoS2LosingPUBCOMP publishes one QoS 2 message with bare paho and
// drops the connection right after the PUBREL is written, so the broker
// finishes the exchange and its PUBCOMP is never read. It returns the packet
// identifier used.
func completeQoS2LosingPUBCOMP(t *testing.T, brokerURL, clientID, topic string, body []byte) uint16 {
	t.Helper()
	var pid atomic.Uint32
	lost := make(chan struct{})
	opts := mqtt.NewClientOptions().AddBroker(brokerURL).SetClientID(clientID).
		SetCleanSession(false).SetAutoReconnect(false).SetProtocolVersion(4).
		SetConnectionLostHandler(func(mqtt.Client, error) { close(lost) })
	opts.SetCustomOpenConnectionFn(func(u *url.URL, _ mqtt.ClientOptions) (net.Conn, error) {
		conn, err := net.Dial("tcp", u.Host)
		if err != nil {
			return nil, err
		}
		return &cutAfterPubrel{Conn: conn, pid: &pid}, nil
	})
	pc := mqtt.NewClient(opts)
	if tok := pc.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("bare paho connect: %v", tok.Error())
	}
	pc.Publish(topic, 2, false, body)
	select {
	case <-lost:
	case <-time.After(10 * time.Second):
		t.Fatal("connection not dropped after PUBREL")
	}
	if pid.Load() == 0 {
		t.Fatal("no PUBREL seen")
	}
	return uint16(pid.Load())
}

// cutAfterPubrel drops the connection right after writing a PUBREL (paho
// writes one packet per Write): nothing is read after it, so the PUBCOMP is
// lost, and the next Read fails so that paho reports the connection lost.
type cutAfterPubrel struct {
	net.Conn
	pid *atomic.Uint32
	cut atomic.Bool
}

var errCutAfterPubrel = errors.New("test: connection cut after PUBREL")

func (c *cutAfterPubrel) Write(b []byte) (int, error) {
	if len(b) >= 4 && b[0]>>4 == 6 {
		c.pid.Store(uint32(binary.BigEndian.Uint16(b[2:4])))
		c.cut.Store(true)
	}
	return c.Conn.Write(b)
}

func (c *cutAfterPubrel) Read(b []byte) (int, error) {
	if c.cut.Load() {
		return 0, errCutAfterPubrel
	}
	n, err := c.Conn.Read(b)
	if c.cut.Load() {
		return 0, errCutAfterPubrel
	}
	return n, err
}

// TestUndeliveredSurvivesCloseAndReopen closes with the broker unreachable,
// then reopens the same outbox and checks everything is delivered in order.
func TestUndeliveredSurvivesCloseAndReopen(t *testing.T) {
	const n = 200
	m, p := rig(t, testbroker.MosquittoOptions{})
	p.SetRefuse(true)
	sub := subscriber(t, m, "reopen/t")
	dir := t.TempDir()
	cfg := client.Config{Brokers: []string{p.URL()}, OutboxDir: dir, ClientID: "reopen"}
	c := newClient(t, cfg)
	for i := uint64(1); i <= n; i++ {
		if _, err := c.Publish(context.Background(), "reopen/t", payload(i), client.PublishOptions{QoS: byte(1 + i%2)}); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if err := c.Close(ctx); !errors.Is(err, client.ErrNotDrained) {
		t.Fatalf("Close: %v, want ErrNotDrained", err)
	}
	p.SetRefuse(false)
	c2 := newClient(t, cfg)
	flushWithProgress(t, c2, stall)
	sub.WaitProgress("reopen/t", n, stall) // what is missing is reported below as lost
	requireClean(t, "reopen", testsub.Check(seqs(1, n), sub.Arrivals("reopen/t")), true)
}

// TestWrongPasswordStopsWithTheBrokersReason checks a permanent refusal
// reaches the caller with its reason instead of a retry loop.
func TestWrongPasswordStopsWithTheBrokersReason(t *testing.T) {
	m := testbroker.StartMosquitto(t, testbroker.MosquittoOptions{Users: map[string]string{"dev": "right"}})
	var attempts atomic.Int32
	c := newClient(t, client.Config{
		Brokers: []string{m.URL()}, Username: "dev", Password: "wrong",
		Hooks: client.Hooks{OnConnection: func(ev reconnect.Event) {
			if ev.State == reconnect.Connecting {
				attempts.Add(1)
			}
		}},
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := c.AwaitConnected(ctx)
	if !errors.Is(err, client.ErrStopped) ||
		!(errors.Is(err, packets.ErrorRefusedBadUsernameOrPassword) || errors.Is(err, packets.ErrorRefusedNotAuthorised)) {
		t.Fatalf("AwaitConnected: %v, want ErrStopped with the broker's refusal", err)
	}
	if n := attempts.Load(); n > 2 {
		t.Fatalf("%d attempts after a permanent refusal", n)
	}
}

// TestTLSAndFailover connects over TLS to the second broker of the list
// after the first one is dead.
func TestTLSAndFailover(t *testing.T) {
	m := testbroker.StartMosquitto(t, testbroker.MosquittoOptions{TLS: true})
	dead := fmt.Sprintf("ssl://127.0.0.1:%d", testbroker.FreePort(t))
	c := newClient(t, client.Config{Brokers: []string{dead, m.URL()}, TLS: m.ClientTLSConfig(), OutboxDir: t.TempDir()})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	r, err := c.Publish(ctx, "tls/t", []byte("1 secret"), client.QoS2)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	if st := c.Stats(); st.Broker != m.URL() {
		t.Fatalf("connected to %q, want %q", st.Broker, m.URL())
	}
}
