package embedbroker

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/holdfast-mqtt/holdfast/internal/leakcheck"
)

func TestMain(m *testing.M) {
	// mochi's Badger hook (PersistDir) leaves its garbage-collection loop
	// parked on a stopped ticker after Close.
	os.Exit(leakcheck.Run(m, leakcheck.IgnoreTopFunction("github.com/mochi-mqtt/server/v2/hooks/storage/badger.(*Hook).gcLoop")))
}

func start(t *testing.T) *Broker {
	t.Helper()
	b, err := Start("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b
}

func connect(t *testing.T, url, id string, lost chan<- error) paho.Client {
	t.Helper()
	opts := paho.NewClientOptions().
		AddBroker(url).
		SetClientID(id).
		SetAutoReconnect(false).
		SetConnectRetry(false).
		SetConnectTimeout(5 * time.Second).
		SetConnectionLostHandler(func(_ paho.Client, err error) {
			if lost != nil {
				lost <- err
			}
		})
	c := paho.NewClient(opts)
	if tok := c.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("connect %s to %s: %v", id, url, tok.Error())
	}
	t.Cleanup(func() {
		if c.IsConnectionOpen() {
			c.Disconnect(100)
		}
	})
	return c
}

func TestPublishSubscribeThroughBroker(t *testing.T) {
	b := start(t)
	if !strings.HasPrefix(b.Addr(), "127.0.0.1:") || b.URL() != "tcp://"+b.Addr() {
		t.Fatalf("Addr() = %q, URL() = %q", b.Addr(), b.URL())
	}

	const n = 20
	var mu sync.Mutex
	got := map[string]byte{}
	sub := connect(t, b.URL(), "sub", nil)
	tok := sub.Subscribe("holdfast/test/#", 1, func(_ paho.Client, m paho.Message) {
		mu.Lock()
		got[string(m.Payload())] = m.Qos()
		mu.Unlock()
	})
	if !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("subscribe: %v", tok.Error())
	}

	pub := connect(t, b.URL(), "pub", nil)
	for i := range n {
		tok := pub.Publish("holdfast/test/x", 1, false, fmt.Sprintf("m%d", i))
		if !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
			t.Fatalf("publish %d: %v", i, tok.Error())
		}
	}

	tick := time.NewTicker(10 * time.Millisecond) // bounded poll
	defer tick.Stop()
	deadline := time.After(5 * time.Second)
	for {
		mu.Lock()
		count := len(got)
		mu.Unlock()
		if count == n {
			break
		}
		select {
		case <-tick.C:
		case <-deadline:
			t.Fatalf("received %d of %d messages", count, n)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	for i := range n {
		if q, ok := got[fmt.Sprintf("m%d", i)]; !ok || q != 1 {
			t.Errorf("m%d: received=%v qos=%d", i, ok, q)
		}
	}
}

func TestCloseDisconnectsClientsAndStopsListening(t *testing.T) {
	b := start(t)
	lost := make(chan error, 1)
	connect(t, b.URL(), "c1", lost)

	// A connection that never sends CONNECT must not hold Close up.
	raw, err := net.Dial("tcp", b.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()

	done := make(chan error, 1)
	go func() { done <- b.Close() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not return")
	}
	select {
	case <-lost:
	case <-time.After(5 * time.Second):
		t.Fatal("connected client did not see the connection lost")
	}
	if err := b.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if c, err := net.DialTimeout("tcp", b.Addr(), time.Second); err == nil {
		_ = c.Close()
		t.Fatal("broker still accepts after Close")
	}
}

func TestStartErrors(t *testing.T) {
	b := start(t)
	_, err := Start(b.Addr()) // port already taken
	if !errors.Is(err, ErrStart) {
		t.Fatalf("Start on a taken port: %v, want ErrStart", err)
	}
}

// TestPersistDirKeepsSessions restarts a broker on the same port and
// directory: a persistent subscriber that was away gets the messages queued
// for it before the restart, with its session present.
func TestPersistDirKeepsSessions(t *testing.T) {
	dir := t.TempDir()
	b, err := StartWith("127.0.0.1:0", Options{PersistDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	addr := b.Addr()
	defer func() { _ = b.Close() }()

	got := make(chan string, 10)
	subOpts := func() *paho.ClientOptions {
		return paho.NewClientOptions().AddBroker("tcp://" + addr).SetClientID("sub").
			SetCleanSession(false).SetAutoReconnect(false).SetConnectTimeout(5 * time.Second).
			SetDefaultPublishHandler(func(_ paho.Client, m paho.Message) { got <- string(m.Payload()) })
	}
	sub := paho.NewClient(subOpts())
	if tok := sub.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("connect: %v", tok.Error())
	}
	if tok := sub.Subscribe("keep/#", 1, nil); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("subscribe: %v", tok.Error())
	}
	sub.Disconnect(100) // away: the broker queues for the session

	pub := connect(t, "tcp://"+addr, "pub", nil)
	for i := range 3 {
		if tok := pub.Publish("keep/x", 1, false, fmt.Sprintf("m%d", i)); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
			t.Fatalf("publish %d: %v", i, tok.Error())
		}
	}
	pub.Disconnect(100)

	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	b, err = StartWith(addr, Options{PersistDir: dir})
	if err != nil {
		t.Fatalf("restart on %s: %v", addr, err)
	}

	sub = paho.NewClient(subOpts())
	tok := sub.Connect()
	if !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("reconnect: %v", tok.Error())
	}
	defer sub.Disconnect(100)
	if !tok.(*paho.ConnectToken).SessionPresent() {
		t.Error("the session was not kept across the restart")
	}
	seen := map[string]bool{}
	for len(seen) < 3 {
		select {
		case m := <-got:
			seen[m] = true
		case <-time.After(5 * time.Second):
			t.Fatalf("after the restart received only %v", seen)
		}
	}
}

// failingConn fails every write after the first (the CONNACK), and closes
// the connection when it does, like a link cut just after a PUBLISH came in.
type failingConn struct {
	net.Conn
	mu     sync.Mutex // guards writes
	writes int
}

func (c *failingConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	c.writes++
	n := c.writes
	c.mu.Unlock()
	if n > 1 {
		_ = c.Conn.Close()
		return 0, net.ErrClosed
	}
	return c.Conn.Write(p)
}

// TestDeliveredWhenAckWriteFails: a QoS 1 or 2 message whose PUBACK or
// PUBREC cannot be written is still delivered. The broker sends that
// acknowledgement when the publisher reconnects, before the publisher sends
// anything: it must not acknowledge a message it never delivered.
func TestDeliveredWhenAckWriteFails(t *testing.T) {
	for _, qos := range []byte{1, 2} {
		t.Run(fmt.Sprintf("qos%d", qos), func(t *testing.T) {
			var mu sync.Mutex
			accepted := 0
			b, err := StartWith("127.0.0.1:0", Options{wrapConn: func(c net.Conn) net.Conn {
				mu.Lock()
				defer mu.Unlock()
				accepted++
				if accepted == 2 { // the publisher's first connection
					return &failingConn{Conn: c}
				}
				return c
			}})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = b.Close() })

			got := make(chan string, 10)
			sub := connect(t, b.URL(), "sub", nil)
			if tok := sub.Subscribe("q/#", qos, func(_ paho.Client, m paho.Message) { got <- string(m.Payload()) }); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
				t.Fatalf("subscribe: %v", tok.Error())
			}

			// First connection: CONNACK, then the PUBLISH whose
			// acknowledgement cannot be written.
			c1 := rawConnect(t, b.Addr())
			publish := []byte{0x30 | qos<<1, 12, 0, 3, 'q', '/', 'x', 0, 1, 'f', 'i', 'r', 's', 't'}
			if _, err := c1.Write(publish); err != nil {
				t.Fatal(err)
			}
			_ = c1.SetReadDeadline(time.Now().Add(5 * time.Second))
			if _, err := c1.Read(make([]byte, 1)); err == nil {
				t.Fatal("the first connection got an answer: the acknowledgement's write did not fail")
			}

			// Second connection: the broker sends the acknowledgement it holds.
			c2 := rawConnect(t, b.Addr())
			ack := make([]byte, 4)
			_ = c2.SetReadDeadline(time.Now().Add(5 * time.Second))
			if _, err := io.ReadFull(c2, ack); err != nil {
				t.Fatalf("no acknowledgement after reconnecting: %v", err)
			}
			want := []byte{0x40, 2, 0, 1} // PUBACK 1
			if qos == 2 {
				want = []byte{0x50, 2, 0, 1} // PUBREC 1
			}
			if !bytes.Equal(ack, want) {
				t.Fatalf("after reconnecting got % x, want % x", ack, want)
			}
			select {
			case m := <-got:
				if m != "first" {
					t.Fatalf("received %q", m)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("acknowledged, never delivered")
			}
			if qos == 2 { // completing the exchange delivers nothing more
				if _, err := c2.Write([]byte{0x62, 2, 0, 1}); err != nil { // PUBREL 1
					t.Fatal(err)
				}
				if _, err := io.ReadFull(c2, ack); err != nil || !bytes.Equal(ack, []byte{0x70, 2, 0, 1}) {
					t.Fatalf("PUBCOMP: % x, %v", ack, err)
				}
				// A round trip through the subscriber's connection: a
				// second delivery would have arrived before its answer.
				if tok := sub.Unsubscribe("none"); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
					t.Fatalf("unsubscribe: %v", tok.Error())
				}
				select {
				case m := <-got:
					t.Fatalf("delivered again: %q", m)
				default:
				}
			}
		})
	}
}

// rawConnect opens an MQTT 3.1.1 connection as client "pub" with a
// persistent session and reads the CONNACK.
func rawConnect(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	connect := []byte{0x10, 15, 0, 4, 'M', 'Q', 'T', 'T', 4, 0, 0, 60, 0, 3, 'p', 'u', 'b'}
	if _, err := c.Write(connect); err != nil {
		t.Fatal(err)
	}
	connack := make([]byte, 4)
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(c, connack); err != nil || connack[0] != 0x20 || connack[3] != 0 {
		t.Fatalf("CONNACK: % x, %v", connack, err)
	}
	return c
}
