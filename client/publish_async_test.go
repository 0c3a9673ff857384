package client_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/holdfast-mqtt/holdfast/client"
	"github.com/holdfast-mqtt/holdfast/internal/testbroker"
	"github.com/holdfast-mqtt/holdfast/internal/testsub"
	"github.com/holdfast-mqtt/holdfast/outbox"
)

// TestPublishAsyncInOrderUnderCuts: one publishing loop hands messages over
// without waiting for their commit, Publish and PublishAsync mixed, while
// the link is cut: each receipt says durable, then acknowledged, and the
// broker gets everything in call order, for both outboxes and both QoS.
func TestPublishAsyncInOrderUnderCuts(t *testing.T) {
	for _, tc := range []struct {
		name    string
		durable bool
		qos     byte
	}{{"durable/qos1", true, 1}, {"durable/qos2", true, 2}, {"memory/qos1", false, 1}, {"memory/qos2", false, 2}} {
		t.Run(tc.name, func(t *testing.T) {
			const n = 3000
			m, p := rig(t, testbroker.MosquittoOptions{})
			topic := "async/" + tc.name
			sub := subscriber(t, m, topic)
			cfg := client.Config{Brokers: []string{p.URL()}, MaxPending: 64}
			if tc.durable {
				cfg.OutboxDir = t.TempDir()
			}
			c := newClient(t, cfg)
			ctx := context.Background()
			rs := make([]*client.Receipt, 0, n)
			for i := uint64(1); i <= n; i++ {
				pub := c.PublishAsync
				if i%10 == 0 {
					pub = c.Publish
				}
				r, err := pub(ctx, topic, payload(i), client.PublishOptions{QoS: tc.qos})
				if err != nil {
					t.Fatalf("publish %d: %v", i, err)
				}
				rs = append(rs, r)
				if i%500 == 0 {
					p.Cut()
				}
			}
			var last uint64
			for i, r := range rs {
				waitProgress(t, c, r.Durable(), fmt.Sprintf("message %d durable", i+1))
				if r.Seq() <= last {
					t.Fatalf("message %d got seq %d after %d: call order lost", i+1, r.Seq(), last)
				}
				last = r.Seq()
			}
			for i, r := range rs {
				waitProgress(t, c, r.Done(), fmt.Sprintf("message %d acknowledged", i+1))
				if err := r.Err(); err != nil {
					t.Fatalf("message %d: %v", i+1, err)
				}
			}
			if st := c.Stats(); st.Accepted != n || st.Acked < n || st.Queued != 0 {
				t.Fatalf("stats %+v", st)
			}
			// QoS 2 is exactly once on a persistent session only: with a
			// clean one (in-memory outbox) the broker forgets the
			// identifiers at a cut and a message in flight goes again.
			requireClean(t, tc.name, waitAll(t, sub, topic, n), tc.qos == 1 || !tc.durable)
		})
	}
}

// waitProgress waits for ch, failing only when the client makes no
// progress (nothing acknowledged) for a long interval.
func waitProgress(t *testing.T, c *client.Client, ch <-chan struct{}, what string) {
	t.Helper()
	const stall = time.Minute
	last := c.Stats().Acked
	tick := time.NewTicker(stall)
	defer tick.Stop()
	for {
		select {
		case <-ch:
			return
		case <-tick.C:
			now := c.Stats().Acked
			if now == last {
				t.Fatalf("%s: no progress for %v (stats %+v)", what, stall, c.Stats())
			}
			last = now
		}
	}
}

// waitAll waits until the subscriber saw every one of 1..n at least once,
// failing only when nothing new arrives for a long interval, and returns
// the check of what arrived.
func waitAll(t *testing.T, sub *testsub.Subscriber, topic string, n uint64) testsub.Report {
	t.Helper()
	const stall = time.Minute
	for {
		ch := sub.Changed()
		rep := testsub.Check(seqs(1, n), sub.Arrivals(topic))
		if len(rep.Lost) == 0 {
			return rep
		}
		select {
		case <-ch:
		case <-time.After(stall):
			t.Fatalf("subscriber: nothing new for %v; %d of %d missing (first %v)", stall, len(rep.Lost), n, head(rep.Lost))
		}
	}
}

// TestPublishBatchOneCommit: a batch is validated as a whole (bad input
// accepts nothing), then committed together, durable when the call returns,
// and delivered in order.
func TestPublishBatchOneCommit(t *testing.T) {
	m, _ := rig(t, testbroker.MosquittoOptions{})
	sub := subscriber(t, m, "batch/t")
	c := newClient(t, client.Config{Brokers: []string{m.URL()}, OutboxDir: t.TempDir()})
	ctx := context.Background()
	bad := []client.Outgoing{{Topic: "batch/t", Payload: payload(1), Options: client.QoS1}, {Topic: "batch/#", Payload: payload(2), Options: client.QoS1}}
	if _, err := c.PublishBatch(ctx, bad); !errors.Is(err, client.ErrInvalidTopic) {
		t.Fatalf("batch with a bad topic: %v, want ErrInvalidTopic", err)
	}
	if st := c.Stats(); st.Accepted != 0 || st.Queued != 0 {
		t.Fatalf("a refused batch accepted something: %+v", st)
	}
	const n = 2000
	msgs := make([]client.Outgoing, n)
	for i := range msgs {
		msgs[i] = client.Outgoing{Topic: "batch/t", Payload: payload(uint64(i + 1)), Options: client.PublishOptions{QoS: byte(1 + i%2)}}
	}
	rs, err := c.PublishBatch(ctx, msgs)
	if err != nil {
		t.Fatal(err)
	}
	var last uint64
	for i, r := range rs {
		select {
		case <-r.Durable():
		default:
			t.Fatalf("message %d not durable when PublishBatch returned", i+1)
		}
		if r.Seq() <= last {
			t.Fatalf("message %d seq %d after %d", i+1, r.Seq(), last)
		}
		last = r.Seq()
	}
	if st := c.Stats(); st.Accepted != n {
		t.Fatalf("accepted %d of %d", st.Accepted, n)
	}
	fctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	if err := c.Flush(fctx); err != nil {
		t.Fatalf("Flush: %v (%+v)", err, c.Stats())
	}
	requireClean(t, "batch", waitAll(t, sub, "batch/t", n), false)
}

// stalledQueue holds AppendAsync commits until release is closed.
type stalledQueue struct {
	*outbox.Memory
	release chan struct{}
}

func (q *stalledQueue) AppendAsync(ctx context.Context, r *outbox.Record, done func(uint64, error)) error {
	rec := *r
	go func() {
		<-q.release
		_ = q.Memory.AppendAsync(context.Background(), &rec, done)
	}()
	return nil
}

// TestPublishAsyncBackpressure: a producer far faster than the outbox's
// commits never has more than MaxPending messages handed over and not yet
// durable: the next call waits, and ends with its ctx.
func TestPublishAsyncBackpressure(t *testing.T) {
	const maxPending = 8
	q := &stalledQueue{Memory: outbox.NewMemory(outbox.Options{}), release: make(chan struct{})}
	t.Cleanup(func() { _ = q.Close() }) // after the client's Close (cleanups run last first)
	c := newClient(t, client.Config{
		Brokers:    []string{"tcp://127.0.0.1:1"}, // nothing to send to: only the commits matter
		ClientID:   "bp",
		Outbox:     q,
		MaxPending: maxPending,
	})
	ctx := context.Background()
	var rs []*client.Receipt
	for i := uint64(1); i <= maxPending; i++ {
		r, err := c.PublishAsync(ctx, "bp/t", payload(i), client.QoS1)
		if err != nil {
			t.Fatal(err)
		}
		rs = append(rs, r)
	}
	if st := c.Stats(); st.Pending != maxPending || st.Accepted != 0 {
		t.Fatalf("with commits stalled: %+v", st)
	}
	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	if _, err := c.PublishAsync(short, "bp/t", payload(99), client.QoS1); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("PublishAsync past MaxPending: %v, want it to wait for its ctx", err)
	}
	close(q.release)
	for i, r := range rs {
		waitProgress(t, c, r.Durable(), fmt.Sprintf("message %d durable", i+1))
	}
	if _, err := c.PublishAsync(ctx, "bp/t", payload(9), client.QoS1); err != nil {
		t.Fatalf("after the commits: %v", err)
	}
	if st := c.Stats(); st.Accepted < maxPending || q.Stats().Appended < maxPending {
		t.Fatalf("after release: %+v", st)
	}
}

// TestResumePointAcrossRestart: a producer that records its source offset
// as the marker finds, after a restart on the same outbox, the last one
// accepted, and continues right after it.
func TestResumePointAcrossRestart(t *testing.T) {
	dir := t.TempDir()
	cfg := client.Config{Brokers: []string{"tcp://127.0.0.1:1"}, ClientID: "rp", OutboxDir: dir}
	c, err := client.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for i := uint64(1); i <= 50; i++ {
		pub := c.PublishAsync
		if i%2 == 0 {
			pub = c.Publish
		}
		if _, err := pub(ctx, "rp/t", payload(i), client.PublishOptions{QoS: 1, Marker: []byte(fmt.Sprint(i))}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := c.Publish(ctx, "rp/t", payload(0), client.PublishOptions{QoS: 1, Marker: make([]byte, outbox.MaxMarker+1)}); !errors.Is(err, client.ErrInvalidConfig) {
		t.Fatalf("oversized marker: %v", err)
	}
	short, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	_ = c.Close(short) // not drained: the broker is unreachable
	c, err = client.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		ctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
		defer cancel()
		_ = c.Close(ctx)
	}()
	seq, marker := c.ResumePoint()
	if string(marker) != "50" || seq != 50 { // a fresh outbox numbers from 1
		t.Fatalf("resume point after restart: seq %d marker %q, want marker 50", seq, marker)
	}
}
