package client_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/holdfast-mqtt/holdfast/client"
	"github.com/holdfast-mqtt/holdfast/internal/faultproxy"
	"github.com/holdfast-mqtt/holdfast/internal/testbroker"
)

// TestPahoAdapterIsADropIn drives the client through paho's mqtt.Client
// interface, built from paho ClientOptions, as migrating code would.
func TestPahoAdapterIsADropIn(t *testing.T) {
	b := testbroker.StartMosquitto(t, testbroker.MosquittoOptions{})
	opts := mqtt.NewClientOptions().AddBroker(b.URL()).SetClientID("compat").SetCleanSession(false).SetKeepAlive(5 * time.Second)
	cfg := client.FromPaho(opts, t.TempDir())
	if cfg.ClientID != "compat" || len(cfg.Brokers) != 1 || cfg.KeepAlive != 5*time.Second {
		t.Fatalf("FromPaho: %+v", cfg)
	}
	hf, err := client.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	var cli mqtt.Client = hf.Paho()
	defer cli.Disconnect(1000)
	if tok := cli.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("Connect: %v", tok.Error())
	}
	got := make(chan string, 4)
	if tok := cli.Subscribe("compat/#", 1, func(_ mqtt.Client, m mqtt.Message) { got <- string(m.Payload()) }); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("Subscribe: %v", tok.Error())
	}
	tok := cli.Publish("compat/a", 1, false, "1 hello")
	if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("Publish token: %v", tok.Error())
	}
	if hf.Stats().Acked < 1 {
		t.Fatalf("the QoS 1 token completed before the broker's acknowledgement: %+v", hf.Stats())
	}
	select {
	case p := <-got:
		if p != "1 hello" {
			t.Fatalf("received %q", p)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("subscriber callback not called")
	}
	if tok := cli.Publish("compat/#", 1, false, "x"); !tok.WaitTimeout(time.Second) || tok.Error() == nil {
		t.Fatal("an invalid topic was accepted through the adapter")
	}
	if tok := cli.Publish("compat/b", 1, false, *bytes.NewBufferString("2 buffer")); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("bytes.Buffer payload (paho accepts it): %v", tok.Error())
	}
	if !cli.IsConnected() || !cli.IsConnectionOpen() {
		t.Fatal("adapter reports not connected")
	}
}

// impl is a way to get an mqtt.Client from paho options: bare paho, or
// Holdfast through FromPaho and Paho. Tests that take paho as the reference
// run the same scenario with both.
type impl struct {
	name string
	new  func(t *testing.T, opts *mqtt.ClientOptions) mqtt.Client
}

var impls = []impl{
	{"paho", func(_ *testing.T, opts *mqtt.ClientOptions) mqtt.Client { return mqtt.NewClient(opts) }},
	{"holdfast", func(t *testing.T, opts *mqtt.ClientOptions) mqtt.Client {
		hf, err := client.New(client.FromPaho(opts, t.TempDir()))
		if err != nil {
			t.Fatalf("New(FromPaho): %v", err)
		}
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			_ = hf.Close(ctx)
		})
		return hf.Paho()
	}},
}

// connectImpl builds and connects a client; it is disconnected by Cleanup.
func connectImpl(t *testing.T, im impl, opts *mqtt.ClientOptions) mqtt.Client {
	t.Helper()
	cli := im.new(t, opts)
	waitTok(t, "connect", cli.Connect())
	t.Cleanup(func() { cli.Disconnect(250) })
	return cli
}

func waitTok(t *testing.T, what string, tok mqtt.Token) {
	t.Helper()
	if !tok.WaitTimeout(15 * time.Second) {
		t.Fatalf("%s: token not complete after 15s", what)
	}
	if err := tok.Error(); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// sink collects payloads, safe for concurrent use.
type sink struct {
	mu  sync.Mutex
	got []string
}

func (s *sink) add(p string) { s.mu.Lock(); s.got = append(s.got, p); s.mu.Unlock() }
func (s *sink) list() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.got)
}

// distinct returns how many different payloads arrived.
func (s *sink) distinct() int {
	l := s.list()
	slices.Sort(l)
	return len(slices.Compact(l))
}

func (s *sink) handler() mqtt.MessageHandler {
	return func(_ mqtt.Client, m mqtt.Message) { s.add(string(m.Payload())) }
}

func (s *sink) native() client.Handler {
	return func(_ context.Context, m client.Message) error { s.add(string(m.Payload)); return nil }
}

// TestPahoDefaultHandlerGetsNilCallbackMessages subscribes with a nil
// callback, as paho's examples do: messages go to the options'
// DefaultPublishHandler.
func TestPahoDefaultHandlerGetsNilCallbackMessages(t *testing.T) {
	m := testbroker.StartMosquitto(t, testbroker.MosquittoOptions{})
	pub := pahoPublisher(t, m.URL())
	for _, im := range impls {
		t.Run(im.name, func(t *testing.T) {
			var got sink
			topic := "dflt/" + im.name
			opts := mqtt.NewClientOptions().AddBroker(m.URL()).SetClientID("dflt-" + im.name).
				SetDefaultPublishHandler(got.handler())
			cli := connectImpl(t, im, opts)
			waitTok(t, "subscribe", cli.Subscribe(topic, 1, nil))
			for i := 1; i <= 3; i++ {
				waitTok(t, "publish", pub.Publish(topic, 1, false, fmt.Sprint(i)))
			}
			testbroker.Eventually(t, 10*time.Second, func() bool { return got.distinct() == 3 },
				"3 messages at the default handler (got %v)", got.list())
		})
	}
}

// connEvents records paho's connection callbacks.
type connEvents struct {
	mu           sync.Mutex
	connects     int
	lost         int
	reconnecting int
	notes        map[mqtt.ConnectionNotificationType]int
	args         []mqtt.Client
}

func (e *connEvents) count(f func(*connEvents) int) int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return f(e)
}

// TestPahoConnectionHandlersAsInPaho checks the connect, connection-lost,
// reconnecting and connection-notification handlers are called as paho calls
// them, with the client as argument, and that the usual "subscribe in
// OnConnect" keeps messages flowing after a cut.
func TestPahoConnectionHandlersAsInPaho(t *testing.T) {
	m := testbroker.StartMosquitto(t, testbroker.MosquittoOptions{})
	pub := pahoPublisher(t, m.URL())
	results := map[string]*connEvents{}
	for _, im := range impls {
		t.Run(im.name, func(t *testing.T) {
			p, err := faultproxy.New(m.Addr())
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = p.Close() })
			ev := &connEvents{notes: map[mqtt.ConnectionNotificationType]int{}}
			results[im.name] = ev
			var got sink
			topic := "onconn/" + im.name
			subscribed := make(chan struct{}, 4)
			opts := mqtt.NewClientOptions().AddBroker(p.URL()).SetClientID("onconn-" + im.name).
				SetKeepAlive(2 * time.Second).SetMaxReconnectInterval(time.Second).
				SetOnConnectHandler(func(c mqtt.Client) {
					tok := c.Subscribe(topic, 1, got.handler())
					tok.Wait()
					ev.mu.Lock()
					ev.connects++
					ev.args = append(ev.args, c)
					ev.mu.Unlock()
					if tok.Error() == nil {
						subscribed <- struct{}{}
					}
				}).
				SetConnectionLostHandler(func(c mqtt.Client, err error) {
					ev.mu.Lock()
					ev.lost++
					ev.args = append(ev.args, c)
					ev.mu.Unlock()
				}).
				SetReconnectingHandler(func(c mqtt.Client, _ *mqtt.ClientOptions) {
					ev.mu.Lock()
					ev.reconnecting++
					ev.args = append(ev.args, c)
					ev.mu.Unlock()
				}).
				SetConnectionNotificationHandler(func(c mqtt.Client, n mqtt.ConnectionNotification) {
					ev.mu.Lock()
					ev.notes[n.Type()]++
					ev.mu.Unlock()
				})
			cli := connectImpl(t, im, opts)
			for round := 1; round <= 2; round++ {
				select {
				case <-subscribed:
				case <-time.After(15 * time.Second):
					t.Fatalf("round %d: OnConnect did not subscribe (connects %d)", round, ev.count(func(e *connEvents) int { return e.connects }))
				}
				payload := fmt.Sprint(round)
				waitTok(t, "publish", pub.Publish(topic, 1, false, payload))
				testbroker.Eventually(t, 10*time.Second, func() bool { return slices.Contains(got.list(), payload) },
					"round %d: message through the OnConnect subscription", round)
				if round == 1 {
					p.Cut()
				}
			}
			testbroker.Eventually(t, 5*time.Second, func() bool {
				return ev.count(func(e *connEvents) int { return e.notes[mqtt.ConnectionNotificationTypeLost] }) == 1
			}, "a Lost notification")
			ev.mu.Lock()
			defer ev.mu.Unlock()
			if ev.connects != 2 || ev.lost != 1 || ev.reconnecting < 1 {
				t.Fatalf("connects %d (want 2), lost %d (want 1), reconnecting %d (want >= 1)", ev.connects, ev.lost, ev.reconnecting)
			}
			for _, a := range ev.args {
				if a != cli {
					t.Fatalf("a handler got %T %p, not the client %p", a, a, cli)
				}
			}
			n := ev.notes
			if n[mqtt.ConnectionNotificationTypeConnected] != 2 || n[mqtt.ConnectionNotificationTypeConnecting] < 2 ||
				n[mqtt.ConnectionNotificationTypeBroker] < 2 {
				t.Fatalf("notifications %v", n)
			}
		})
	}
	if a, b := results["paho"], results["holdfast"]; a != nil && b != nil {
		t.Logf("paho: %d/%d/%d %v; holdfast: %d/%d/%d %v", a.connects, a.lost, a.reconnecting, a.notes, b.connects, b.lost, b.reconnecting, b.notes)
	}
}

// TestFromPahoRefusesWhatItCannotHonour checks that every paho option the
// client does not carry out is refused by New, with an error naming it,
// rather than dropped.
func TestFromPahoRefusesWhatItCannotHonour(t *testing.T) {
	base := func() *mqtt.ClientOptions {
		return mqtt.NewClientOptions().AddBroker("tcp://127.0.0.1:1").SetClientID("refuse")
	}
	cases := []struct {
		option string
		set    func(o *mqtt.ClientOptions)
	}{
		{"SetProtocolVersion", func(o *mqtt.ClientOptions) { o.SetProtocolVersion(3) }},
		{"SetStore", func(o *mqtt.ClientOptions) { o.SetStore(mqtt.NewMemoryStore()) }},
	}
	for _, tc := range cases {
		o := base()
		tc.set(o)
		c, err := client.New(client.FromPaho(o, ""))
		if c != nil {
			_ = c.Close(context.Background())
		}
		if !errors.Is(err, client.ErrInvalidConfig) || !strings.Contains(err.Error(), tc.option) {
			t.Errorf("%s: New = %v, want ErrInvalidConfig naming it", tc.option, err)
		}
	}
	// What it honours, or replaces with its own equivalent, is accepted.
	o := base().SetOrderMatters(false).SetAutoReconnect(false).SetConnectRetry(true).SetResumeSubs(true).
		SetMaxReconnectInterval(time.Second).SetStore(mqtt.NewMemoryStore()).SetPingTimeout(10 * time.Second).
		SetProtocolVersion(4).SetDialer(&net.Dialer{Timeout: time.Second}).SetPingTimeout(3 * time.Second).
		SetHTTPHeaders(http.Header{"X-A": {"b"}}).SetWebsocketOptions(&mqtt.WebsocketOptions{ReadBufferSize: 1}).
		SetCustomOpenConnectionFn(func(*url.URL, mqtt.ClientOptions) (net.Conn, error) { return nil, errors.New("x") }).
		SetConnectionAttemptHandler(func(*url.URL, *tls.Config) *tls.Config { return nil }).
		SetAutoAckDisabled(true)
	o.AddBroker("unix:///tmp/mqtt.sock")
	c, err := client.New(client.FromPaho(o, t.TempDir()))
	if err != nil {
		t.Fatalf("honoured options refused: %v", err)
	}
	_ = c.Close(context.Background())
}

// TestPahoUnorderedHandlerPublishesAndWaits runs handlers with
// SetOrderMatters(false) that publish and wait for the token, as paho allows.
func TestPahoUnorderedHandlerPublishesAndWaits(t *testing.T) {
	m := testbroker.StartMosquitto(t, testbroker.MosquittoOptions{})
	pub := pahoPublisher(t, m.URL())
	for _, im := range impls {
		t.Run(im.name, func(t *testing.T) {
			var done sink
			topic := "unordered/" + im.name
			opts := mqtt.NewClientOptions().AddBroker(m.URL()).SetClientID("unordered-" + im.name).SetOrderMatters(false)
			cli := connectImpl(t, im, opts)
			waitTok(t, "subscribe", cli.Subscribe(topic, 1, func(c mqtt.Client, msg mqtt.Message) {
				tok := c.Publish("echo/"+im.name, 1, false, msg.Payload())
				if tok.WaitTimeout(20*time.Second) && tok.Error() == nil {
					done.add(string(msg.Payload()))
				}
			}))
			for i := 1; i <= 5; i++ {
				waitTok(t, "publish", pub.Publish(topic, 1, false, fmt.Sprint(i)))
			}
			testbroker.Eventually(t, 20*time.Second, func() bool { return done.distinct() == 5 },
				"5 handlers published and got their acknowledgement (got %v)", done.list())
		})
	}
}

// TestPahoConnectToDeadBrokerFailsFast connects to a port where nothing
// listens: the token fails with the dial error at once, as paho's does.
func TestPahoConnectToDeadBrokerFailsFast(t *testing.T) {
	dead := fmt.Sprintf("tcp://127.0.0.1:%d", testbroker.FreePort(t))
	for _, im := range impls {
		t.Run(im.name, func(t *testing.T) {
			opts := mqtt.NewClientOptions().AddBroker(dead).SetClientID("dead-" + im.name).SetConnectTimeout(30 * time.Second)
			cli := im.new(t, opts)
			tok := cli.Connect()
			if !tok.WaitTimeout(5 * time.Second) {
				t.Fatal("Connect to a dead broker still waiting after 5s")
			}
			if tok.Error() == nil || !strings.Contains(tok.Error().Error(), "refused") {
				t.Fatalf("Connect: %v, want the dial error", tok.Error())
			}
		})
	}
}

// pahoPublisher is a bare paho client connected straight to the broker.
func pahoPublisher(t *testing.T, url string) mqtt.Client {
	t.Helper()
	opts := mqtt.NewClientOptions().AddBroker(url).SetClientID("pub-" + strings.ReplaceAll(t.Name(), "/", "-")).
		SetAutoReconnect(false).SetProtocolVersion(4)
	c := mqtt.NewClient(opts)
	waitTok(t, "publisher connect", c.Connect())
	t.Cleanup(func() { c.Disconnect(100) })
	return c
}
