package embedbroker

import (
	"errors"
	"fmt"
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
	os.Exit(leakcheck.Run(m))
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
