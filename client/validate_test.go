package client_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/holdfast-mqtt/holdfast/client"
)

// unreachable is a broker URL nothing listens on: the client keeps trying
// in the background while the test works offline.
const unreachable = "tcp://127.0.0.1:1"

func newOffline(t *testing.T, cfg client.Config) *client.Client {
	t.Helper()
	if cfg.Brokers == nil {
		cfg.Brokers = []string{unreachable}
	}
	if cfg.ClientID == "" {
		cfg.ClientID = "offline-" + strings.ReplaceAll(t.Name(), "/", "-")
	}
	c, err := client.New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		_ = c.Close(ctx)
	})
	return c
}

func TestPublishRejectsBadInputAndKeepsOutbox(t *testing.T) {
	for _, durable := range []bool{false, true} {
		name := "memory"
		if durable {
			name = "badger"
		}
		t.Run(name, func(t *testing.T) {
			cfg := client.Config{MaxPayload: 1024}
			if durable {
				cfg.OutboxDir = t.TempDir()
			}
			c := newOffline(t, cfg)
			ctx := context.Background()
			if _, err := c.Publish(ctx, "ok/1", []byte("1 first"), client.QoS1); err != nil {
				t.Fatalf("valid publish: %v", err)
			}
			before := c.Stats()
			cases := []struct {
				name    string
				topic   string
				payload []byte
				opts    client.PublishOptions
				want    error
			}{
				{"empty topic", "", nil, client.QoS1, client.ErrInvalidTopic},
				{"plus wildcard", "a/+/b", nil, client.QoS1, client.ErrInvalidTopic},
				{"hash wildcard", "a/#", nil, client.QoS2, client.ErrInvalidTopic},
				{"invalid utf8", "a/\xff", nil, client.QoS1, client.ErrInvalidTopic},
				{"nul", "a\x00b", nil, client.QoS1, client.ErrInvalidTopic},
				{"topic too long", strings.Repeat("t", 65536), nil, client.QoS1, client.ErrInvalidTopic},
				{"qos 3", "a/b", nil, client.PublishOptions{QoS: 3}, client.ErrInvalidQoS},
				{"payload over MaxPayload", "a/b", make([]byte, 1025), client.QoS1, client.ErrPayloadTooLarge},
				{"negative ttl", "a/b", nil, client.PublishOptions{QoS: 1, TTL: -time.Second}, client.ErrInvalidConfig},
			}
			for _, tc := range cases {
				r, err := c.Publish(ctx, tc.topic, tc.payload, tc.opts)
				if !errors.Is(err, tc.want) {
					t.Errorf("%s: err = %v, want %v", tc.name, err, tc.want)
				}
				if r != nil {
					t.Errorf("%s: got a receipt for a rejected message", tc.name)
				}
			}
			after := c.Stats()
			if after.Queued != before.Queued || after.Accepted != before.Accepted {
				t.Fatalf("outbox changed by rejected input: before %+v after %+v", before, after)
			}
			if _, err := c.Publish(ctx, "ok/2", []byte("2 second"), client.QoS2); err != nil {
				t.Fatalf("valid publish after bad ones: %v", err)
			}
			if got := c.Stats().Queued; got != before.Queued+1 {
				t.Fatalf("queued = %d, want %d", got, before.Queued+1)
			}
		})
	}
}

func TestQoS0WhileDisconnectedIsNeverAFalseSuccess(t *testing.T) {
	c := newOffline(t, client.Config{})
	_, err := c.Publish(context.Background(), "a/b", []byte("x"), client.PublishOptions{QoS: 0})
	if !errors.Is(err, client.ErrNotConnected) {
		t.Fatalf("QoS 0 while disconnected: err = %v, want ErrNotConnected", err)
	}
	q := newOffline(t, client.Config{QoS0: client.QoS0Queue})
	r, err := q.Publish(context.Background(), "a/b", []byte("x"), client.PublishOptions{QoS: 0})
	if err != nil || r == nil {
		t.Fatalf("QoS 0 with QoS0Queue: %v", err)
	}
	if got := q.Stats().Queued; got != 1 {
		t.Fatalf("queued = %d, want 1", got)
	}
}

func TestConfigErrors(t *testing.T) {
	cases := []struct {
		name string
		cfg  client.Config
	}{
		{"no broker", client.Config{}},
		{"bad scheme", client.Config{Brokers: []string{"http://x:1"}}},
		{"no host", client.Config{Brokers: []string{"tcp://"}}},
		{"durable without client id", client.Config{Brokers: []string{unreachable}, OutboxDir: "/tmp/x"}},
		{"persistent without client id", client.Config{Brokers: []string{unreachable}, PersistentSession: true}},
		{"password without user", client.Config{Brokers: []string{unreachable}, Password: "p"}},
		{"keepalive under a second", client.Config{Brokers: []string{unreachable}, KeepAlive: time.Millisecond}},
		{"window too large", client.Config{Brokers: []string{unreachable}, MaxInflight: 70000}},
		{"will with wildcard", client.Config{Brokers: []string{unreachable}, Will: &client.Will{Topic: "a/#"}}},
		{"bad subscription", client.Config{Brokers: []string{unreachable}, Subscriptions: []client.Subscription{{Filter: "a/#/b"}}}},
	}
	for _, tc := range cases {
		c, err := client.New(tc.cfg)
		if !errors.Is(err, client.ErrInvalidConfig) {
			t.Errorf("%s: err = %v, want ErrInvalidConfig", tc.name, err)
		}
		if c != nil {
			_ = c.Close(context.Background())
		}
	}
}

func TestCloseIsIdempotentAndRejectsLaterCalls(t *testing.T) {
	c := newOffline(t, client.Config{OutboxDir: t.TempDir()})
	if _, err := c.Publish(context.Background(), "a/b", []byte("1"), client.QoS1); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	err := c.Close(ctx)
	if !errors.Is(err, client.ErrNotDrained) {
		t.Fatalf("Close with an undelivered message: %v, want ErrNotDrained", err)
	}
	if err2 := c.Close(context.Background()); !errors.Is(err2, client.ErrNotDrained) {
		t.Fatalf("second Close: %v", err2)
	}
	if _, err := c.Publish(context.Background(), "a/b", []byte("2"), client.QoS1); !errors.Is(err, client.ErrClosed) {
		t.Fatalf("Publish after Close: %v, want ErrClosed", err)
	}
}
