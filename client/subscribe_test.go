package client_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/holdfast-mqtt/holdfast/client"
	"github.com/holdfast-mqtt/holdfast/internal/testbroker"
)

func awaitConnected(t *testing.T, c *client.Client) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := c.AwaitConnected(ctx); err != nil {
		t.Fatalf("AwaitConnected: %v", err)
	}
}

func closeClient(t *testing.T, c *client.Client) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.Close(ctx); err != nil {
		t.Fatalf("Close: %v", err)
	}
}

func subscribe(t *testing.T, c *client.Client, filter string, qos byte, h client.Handler) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := c.Subscribe(ctx, filter, qos, h); err != nil {
		t.Fatalf("Subscribe %q: %v", filter, err)
	}
}

func publishAll(t *testing.T, pub mqtt.Client, topic string, qos byte, payloads ...string) {
	t.Helper()
	for _, p := range payloads {
		waitTok(t, "publish "+p, pub.Publish(topic, qos, false, p))
	}
}

func numbered(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s %d", prefix, i+1)
	}
	return out
}

func accept(context.Context, client.Message) error { return nil }

// TestUnroutedQueuedMessagesAreAcknowledged restarts a subscriber whose
// session holds more queued messages than the broker's window, without a
// route for them: they are acknowledged (or go to the DefaultHandler), so
// live messages keep flowing.
func TestUnroutedQueuedMessagesAreAcknowledged(t *testing.T) {
	const queued = 30 // more than Mosquitto's window of 20
	for _, withDefault := range []bool{false, true} {
		t.Run(fmt.Sprintf("default=%v", withDefault), func(t *testing.T) {
			m := testbroker.StartMosquitto(t, testbroker.MosquittoOptions{})
			pub := pahoPublisher(t, m.URL())
			cfg := client.Config{Brokers: []string{m.URL()}, ClientID: "unrouted", OutboxDir: t.TempDir(),
				Subscriptions: []client.Subscription{{Filter: "q/#", QoS: 1, Handler: accept}}}
			c := newClient(t, cfg)
			awaitConnected(t, c)
			closeClient(t, c)
			publishAll(t, pub, "q/x", 1, numbered("queued", queued)...)

			var dflt, live sink
			cfg.Subscriptions = nil
			if withDefault {
				cfg.DefaultHandler = dflt.native()
			}
			c2 := newClient(t, cfg)
			awaitConnected(t, c2)
			subscribe(t, c2, "live/#", 1, live.native())
			publishAll(t, pub, "live/x", 1, numbered("live", 5)...)
			testbroker.Eventually(t, 15*time.Second, func() bool { return live.distinct() == 5 },
				"5 live messages after %d unrouted ones (got %d)", queued, live.distinct())
			if withDefault {
				testbroker.Eventually(t, 5*time.Second, func() bool { return dflt.distinct() == queued },
					"the default handler got %d of %d", dflt.distinct(), queued)
				if st := c2.Stats(); st.Unrouted != 0 {
					t.Fatalf("Unrouted %d with a default handler", st.Unrouted)
				}
			} else if st := c2.Stats(); st.Unrouted != queued {
				t.Fatalf("Stats.Unrouted = %d, want %d", st.Unrouted, queued)
			}
		})
	}
}

// TestPoisonMessagesAreRetriedThenDeadLettered refuses some messages
// always: each is retried HandlerRetries times, handed to DeadLetter and
// acknowledged, so the messages behind them are handled and nothing comes
// back after a restart.
func TestPoisonMessagesAreRetriedThenDeadLettered(t *testing.T) {
	const poison = 25 // more than the broker's window
	m := testbroker.StartMosquitto(t, testbroker.MosquittoOptions{})
	pub := pahoPublisher(t, m.URL())
	errPoison := errors.New("poison")
	var mu sync.Mutex
	attempts := map[string]int{}
	var dead []string
	var good sink
	h := func(_ context.Context, msg client.Message) error {
		p := string(msg.Payload)
		mu.Lock()
		attempts[p]++
		mu.Unlock()
		if strings.HasPrefix(p, "poison") {
			return fmt.Errorf("refusing %q: %w", p, errPoison)
		}
		good.add(p)
		return nil
	}
	cfg := client.Config{Brokers: []string{m.URL()}, ClientID: "poison", OutboxDir: t.TempDir(),
		Subscriptions:  []client.Subscription{{Filter: "dl/#", QoS: 1, Handler: h}},
		HandlerRetries: 2, HandlerBackoff: 5 * time.Millisecond,
		DeadLetter: func(_ context.Context, msg client.Message, err error) {
			mu.Lock()
			defer mu.Unlock()
			if !errors.Is(err, errPoison) {
				t.Errorf("DeadLetter error %v", err)
			}
			dead = append(dead, string(msg.Payload))
		}}
	c := newClient(t, cfg)
	awaitConnected(t, c)
	publishAll(t, pub, "dl/x", 1, numbered("poison", poison)...)
	publishAll(t, pub, "dl/x", 1, numbered("good", 5)...)
	testbroker.Eventually(t, 20*time.Second, func() bool { return good.distinct() == 5 },
		"5 good messages behind %d poison ones (got %d)", poison, good.distinct())
	mu.Lock()
	if len(dead) != poison {
		t.Fatalf("dead-lettered %d, want %d", len(dead), poison)
	}
	for _, p := range numbered("poison", poison) {
		if attempts[p] != 3 {
			t.Fatalf("%q offered %d times, want 3 (1 + HandlerRetries)", p, attempts[p])
		}
	}
	mu.Unlock()
	if st := c.Stats(); st.DeadLettered != poison || st.Refusals != 3*poison {
		t.Fatalf("Stats: DeadLettered %d Refusals %d", st.DeadLettered, st.Refusals)
	}
	closeClient(t, c)

	// Acknowledged: a restart gets only what is published after.
	var after sink
	cfg.Subscriptions = []client.Subscription{{Filter: "dl/#", QoS: 1, Handler: after.native()}}
	c2 := newClient(t, cfg)
	awaitConnected(t, c2)
	publishAll(t, pub, "dl/x", 1, "end")
	testbroker.Eventually(t, 10*time.Second, func() bool { return after.distinct() >= 1 }, "the end marker")
	if got := after.list(); len(got) != 1 || got[0] != "end" {
		t.Fatalf("after the restart: %v, want only the end marker", got)
	}
}

// TestUnacceptedMessageIsRedelivered closes the client while a handler
// still refuses a message, alone or beside another handler (overlapping
// filters) that accepted it: the message was not acknowledged, so the broker
// redelivers it to the next run.
func TestUnacceptedMessageIsRedelivered(t *testing.T) {
	for _, overlap := range []bool{false, true} {
		t.Run(fmt.Sprintf("overlap=%v", overlap), func(t *testing.T) {
			m := testbroker.StartMosquitto(t, testbroker.MosquittoOptions{})
			pub := pahoPublisher(t, m.URL())
			var accepted sink
			var refusals atomic.Int32
			refuse := func(context.Context, client.Message) error { refusals.Add(1); return errors.New("not yet") }
			subs := []client.Subscription{{Filter: "ov/+", QoS: 1, Handler: refuse}}
			if overlap {
				subs = []client.Subscription{{Filter: "ov/#", QoS: 1, Handler: accepted.native()}, subs[0]}
			}
			cfg := client.Config{Brokers: []string{m.URL()}, ClientID: "overlap", OutboxDir: t.TempDir(),
				Subscriptions: subs, HandlerRetries: 1000, HandlerBackoff: 10 * time.Millisecond}
			c := newClient(t, cfg)
			awaitConnected(t, c)
			publishAll(t, pub, "ov/x", 1, "1")
			testbroker.Eventually(t, 10*time.Second, func() bool { return refusals.Load() >= 2 }, "refusals")
			if overlap && accepted.distinct() != 1 {
				t.Fatalf("the accepting handler got %v", accepted.list())
			}
			closeClient(t, c)

			var redelivered sink
			cfg.Subscriptions = []client.Subscription{{Filter: "ov/#", QoS: 1, Handler: redelivered.native()}}
			c2 := newClient(t, cfg)
			awaitConnected(t, c2)
			testbroker.Eventually(t, 10*time.Second, func() bool { return redelivered.distinct() == 1 },
				"the refused message redelivered after the restart")
		})
	}
}

// TestSubscribeWhileOfflineIsSentOnConnect subscribes and unsubscribes while
// the broker is unreachable: both are sent on the next connection, whether
// the broker kept the session or not.
func TestSubscribeWhileOfflineIsSentOnConnect(t *testing.T) {
	for _, sessionPresent := range []bool{true, false} {
		t.Run(fmt.Sprintf("session=%v", sessionPresent), func(t *testing.T) {
			m, p := rig(t, testbroker.MosquittoOptions{})
			pub := pahoPublisher(t, m.URL())
			id := "offline-sub"
			if sessionPresent {
				// An earlier run leaves a session subscribed to old/#.
				c := newClient(t, client.Config{Brokers: []string{m.URL()}, ClientID: id, OutboxDir: t.TempDir(),
					Subscriptions: []client.Subscription{{Filter: "old/#", QoS: 1, Handler: accept}}})
				awaitConnected(t, c)
				closeClient(t, c)
			}
			p.SetRefuse(true)
			var got, unrouted sink
			c := newClient(t, client.Config{Brokers: []string{p.URL()}, ClientID: id, OutboxDir: t.TempDir(),
				DefaultHandler: unrouted.native()})
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			errs := make(chan error, 2)
			go func() { errs <- c.Subscribe(ctx, "new/#", 1, got.native()) }()
			go func() { errs <- c.Unsubscribe(ctx, "old/#") }()
			testbroker.Eventually(t, 5*time.Second, func() bool { return p.Stats().Refused >= 2 }, "connection attempts refused")
			if c.IsConnected() {
				t.Fatal("connected through a refusing proxy")
			}
			p.SetRefuse(false)
			for range 2 {
				if err := <-errs; err != nil {
					t.Fatalf("Subscribe/Unsubscribe made offline: %v", err)
				}
			}
			publishAll(t, pub, "old/x", 1, "old")
			publishAll(t, pub, "new/x", 1, "new")
			testbroker.Eventually(t, 10*time.Second, func() bool { return got.distinct() == 1 }, "the offline subscription")
			if l := unrouted.list(); len(l) != 0 {
				t.Fatalf("messages of the unsubscribed filter still arrive: %v", l)
			}
		})
	}
}

// TestFailedSubscribeIsRetried loses the connection while a SUBSCRIBE waits
// for its SUBACK: it is sent again on the next connection (the broker kept
// the session, so nothing else would restore it).
func TestFailedSubscribeIsRetried(t *testing.T) {
	m, p := rig(t, testbroker.MosquittoOptions{})
	pub := pahoPublisher(t, m.URL())
	c := newClient(t, client.Config{Brokers: []string{p.URL()}, ClientID: "retry-sub", OutboxDir: t.TempDir()})
	awaitConnected(t, c)
	p.SetBlackhole(true)
	var got sink
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	errc := make(chan error, 1)
	go func() { errc <- c.Subscribe(ctx, "retry/#", 1, got.native()) }()
	// The black hole holds what it reads and the proxy counts nothing
	// until it ends: give the SUBSCRIBE time to be written into it.
	time.Sleep(300 * time.Millisecond)
	p.SetRefuse(true) // the held SUBSCRIBE is discarded with the connection
	p.SetBlackhole(false)
	p.SetRefuse(false)
	if err := <-errc; err != nil {
		t.Fatalf("Subscribe across a lost connection: %v", err)
	}
	publishAll(t, pub, "retry/x", 1, "1")
	testbroker.Eventually(t, 10*time.Second, func() bool { return got.distinct() == 1 }, "message on the retried subscription")
}

// dynsecDenying configures Mosquitto's dynamic-security plugin to refuse
// subscriptions to denied/# (an acl_file only filters deliveries: Mosquitto
// 2.0 grants the subscription).
func dynsecDenying(t *testing.T) string {
	t.Helper()
	const plugin = "/usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so"
	if _, err := os.Stat(plugin); err != nil {
		t.Skip("mosquitto's dynamic-security plugin is not installed")
	}
	conf := filepath.Join(t.TempDir(), "dynsec.json")
	const js = `{"defaultACLAccess":{"publishClientSend":true,"publishClientReceive":true,"subscribe":true,"unsubscribe":true},
 "clients":[],"groups":[{"groupname":"anon","roles":[{"rolename":"r"}]}],"anonymousGroup":"anon",
 "roles":[{"rolename":"r","acls":[{"acltype":"subscribePattern","topic":"denied/#","priority":0,"allow":false}]}]}`
	if err := os.WriteFile(conf, []byte(js), 0o600); err != nil {
		t.Fatal(err)
	}
	return "plugin " + plugin + "\nplugin_opt_config_file " + conf + "\n"
}

// TestSubscriptionRefusedByBroker subscribes to a filter the broker denies
// (SUBACK 0x80): Subscribe, and the adapter's token, fail with
// ErrSubscriptionRefused.
func TestSubscriptionRefusedByBroker(t *testing.T) {
	m := testbroker.StartMosquitto(t, testbroker.MosquittoOptions{Extra: dynsecDenying(t)})
	c := newClient(t, client.Config{Brokers: []string{m.URL()}, ClientID: "refused", OutboxDir: t.TempDir()})
	awaitConnected(t, c)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.Subscribe(ctx, "allowed/#", 1, accept); err != nil {
		t.Fatalf("allowed filter: %v", err)
	}
	err := c.Subscribe(ctx, "denied/#", 1, accept)
	if !errors.Is(err, client.ErrSubscriptionRefused) || !strings.Contains(err.Error(), "denied/#") {
		t.Fatalf("denied filter: %v, want ErrSubscriptionRefused naming it", err)
	}
	tok := c.Paho().Subscribe("denied/x", 1, nil)
	if !tok.WaitTimeout(10*time.Second) || !errors.Is(tok.Error(), client.ErrSubscriptionRefused) {
		t.Fatalf("adapter: %v, want ErrSubscriptionRefused", tok.Error())
	}
}

// TestHandlersRunInOrderOrConcurrently checks the default is one handler at
// a time in arrival order, and HandlerConcurrency > 1 runs them at once.
func TestHandlersRunInOrderOrConcurrently(t *testing.T) {
	m := testbroker.StartMosquitto(t, testbroker.MosquittoOptions{})
	pub := pahoPublisher(t, m.URL())
	for _, n := range []int{0, 4} {
		t.Run(fmt.Sprintf("concurrency=%d", n), func(t *testing.T) {
			var running, peak atomic.Int32
			var got sink
			h := func(_ context.Context, msg client.Message) error {
				r := running.Add(1)
				defer running.Add(-1)
				for {
					p := peak.Load()
					if r <= p || peak.CompareAndSwap(p, r) {
						break
					}
				}
				if n == 0 {
					time.Sleep(50 * time.Millisecond) // time for the next message to arrive, were it run at once
				} else {
					// Hold this one until a second runs beside it (bounded:
					// the last message has no successor).
					for wait := time.Now(); running.Load() < 2 && peak.Load() < 2 && time.Since(wait) < 30*time.Second; {
						time.Sleep(time.Millisecond)
					}
				}
				got.add(string(msg.Payload))
				return nil
			}
			topic := fmt.Sprintf("conc/%d", n)
			c := newClient(t, client.Config{Brokers: []string{m.URL()}, ClientID: "conc", HandlerConcurrency: n,
				Subscriptions: []client.Subscription{{Filter: topic, QoS: 1, Handler: h}}})
			awaitConnected(t, c)
			want := numbered("m", 12)
			publishAll(t, pub, topic, 1, want...)
			testbroker.Eventually(t, 2*time.Minute, func() bool { return got.distinct() == len(want) }, "all handled")
			if n == 0 {
				if peak.Load() != 1 || fmt.Sprint(got.list()) != fmt.Sprint(want) {
					t.Fatalf("ordered: peak %d, order %v", peak.Load(), got.list())
				}
			} else if peak.Load() < 2 {
				t.Fatalf("HandlerConcurrency %d: never more than %d at once", n, peak.Load())
			}
		})
	}
}
