package client

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net/url"
	"sync"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/holdfast-mqtt/holdfast/reconnect"
)

// Paho returns a view of c that satisfies paho's mqtt.Client interface, for
// code written against bare paho (always the same value). Migrating is then
// a constructor change:
//
//	var cli mqtt.Client = mqtt.NewClient(opts)          // before
//	hf, err := client.New(client.FromPaho(opts, "/var/lib/app/outbox"))
//	var cli mqtt.Client = hf.Paho()                     // after
//
// Through it, Publish of QoS 1/2 goes through the outbox (the token
// completes on the broker's acknowledgement, not on paho's resend), a QoS 0
// publish while disconnected fails with ErrNotConnected instead of a silent
// drop, a message is acknowledged after its callbacks return, and Subscribe
// and Unsubscribe are durable (see Client.Subscribe): made while
// reconnecting, they are sent on the next connection and their token
// completes then. A broker's refusal of a subscription is the token's
// error, wrapping ErrSubscriptionRefused.
//
// Tokens are not paho's concrete types, which cannot be made outside paho:
// `tok.(*mqtt.ConnectToken)` fails. The connect token has SessionPresent and
// ReturnCode, the subscribe token Result, as paho's do, so an assertion to
// an interface (`tok.(interface{ SessionPresent() bool })`) works with both;
// the publish token has Receipt instead of MessageID (tokens.go).
func (c *Client) Paho() mqtt.Client { return c.rx.compat }

// pahoUnorderedHandlers is Config.HandlerConcurrency for paho options with
// SetOrderMatters(false) (paho starts a goroutine per message, unbounded).
const pahoUnorderedHandlers = 64

// pahoSettings are what FromPaho keeps of paho options beyond Config: the
// callbacks, run by the adapter as paho runs them, and the options Holdfast
// does not carry out, which New refuses.
type pahoSettings struct {
	opts           mqtt.ClientOptions // a copy, handed to the reconnecting handler
	dflt           mqtt.MessageHandler
	onConnect      mqtt.OnConnectHandler
	onLost         mqtt.ConnectionLostHandler
	onReconnecting mqtt.ReconnectHandler
	onNotify       mqtt.ConnectionNotificationHandler
	openConn       mqtt.OpenConnectionFunc // SetCustomOpenConnectionFn; nil: Holdfast dials
	// autoAckDisabled: callbacks acknowledge with Message.Ack
	// (SetAutoAckDisabled).
	autoAckDisabled bool
	refused         []string
}

// FromPaho builds a Config from paho ClientOptions; outboxDir is the durable
// outbox ("" for an in-memory one). Every option is either carried over or
// makes New fail with an error wrapping ErrInvalidConfig that names it:
//
// Carried over: brokers (AddBroker, unix:// included; user information in
// a broker URL is that broker's credentials), client identifier, username
// and password, SetCredentialsProvider (Config.Credentials, called once per
// attempt), clean session (false asks for a persistent session; with an
// outbox directory the session is always persistent), keepalive, connect
// and write timeouts, SetPingTimeout (other than paho's default of 10s,
// which becomes Holdfast's KeepAlive/4), the TLS configuration (one with
// InsecureSkipVerify also needs Config.InsecureSkipVerify, or New refuses
// it), SetConnectionAttemptHandler (Config.GetTLSConfig: called before
// each attempt at a TLS broker only), SetDialer (Config.Dialer; the SOCKS5
// proxy of the environment applies as in paho), SetHTTPHeaders and
// SetWebsocketOptions (Config.WebSocket), SetCustomOpenConnectionFn (called
// for each attempt with the broker chosen and the options; Holdfast watches
// the connection it returns), will, SetOrderMatters (false: up to 64
// handlers at once, see Config.HandlerConcurrency),
// SetMaxReconnectInterval (Config.Backoff's MaxInterval),
// SetMaxResumePubInFlight (Config.MaxInflight), and the handlers, run
// through the adapter (Client.Paho) as paho runs them, with the adapter as
// their client argument: the default publish handler (for nil-callback
// subscriptions and messages that match no route, from the first
// connection), OnConnect after each connection, connection-lost,
// reconnecting (before each attempt after a loss; changes it makes to the
// options are ignored) and connection-notification; SetAutoAckDisabled: a
// QoS 1/2 message is acknowledged once its callbacks returned and one of
// them called Message.Ack (during the callback or later, from any
// goroutine); the callbacks go on with the next messages meanwhile, and a
// message never acknowledged is redelivered to the next run.
//
// Replaced by Holdfast's own equivalent: AutoReconnect, ConnectRetry and
// ConnectRetryInterval (Holdfast always reconnects, with Config.Backoff),
// ResumeSubs (subscriptions are always restored), SetStore when outboxDir
// is set (the outbox), MessageChannelDepth (unused by paho too).
//
// Refused: SetProtocolVersion other than 4, and SetStore with an in-memory
// outbox (pass a directory instead).
func FromPaho(o *mqtt.ClientOptions, outboxDir string) Config {
	r := mqtt.NewOptionsReader(o)
	cfg := Config{
		ClientID:       r.ClientID(),
		OutboxDir:      outboxDir,
		Username:       r.Username(),
		Password:       r.Password(),
		KeepAlive:      r.KeepAlive(),
		ConnectTimeout: r.ConnectTimeout(),
		WriteTimeout:   r.WriteTimeout(),
		TLS:            r.TLSConfig(),
	}
	for _, u := range r.Servers() {
		cfg.Brokers = append(cfg.Brokers, u.String())
	}
	if r.WillEnabled() {
		cfg.Will = &Will{Topic: r.WillTopic(), Payload: r.WillPayload(), QoS: r.WillQos(), Retained: r.WillRetained()}
	}
	if !r.CleanSession() {
		cfg.PersistentSession = true
	}
	if !o.Order {
		cfg.HandlerConcurrency = pahoUnorderedHandlers
	}
	if d := o.MaxReconnectInterval; d > 0 && d != 10*time.Minute { // 10 minutes: paho's default
		cfg.Backoff.MaxInterval = d
		if d < reconnect.DefaultInitialInterval {
			cfg.Backoff.InitialInterval = d
		}
	}
	if o.MaxResumePubInFlight > 0 {
		cfg.MaxInflight = min(o.MaxResumePubInFlight, 65535)
	}
	ps := &pahoSettings{
		opts: *o, dflt: o.DefaultPublishHandler, onConnect: o.OnConnect, onLost: o.OnConnectionLost,
		onReconnecting: o.OnReconnecting, onNotify: o.OnConnectionNotification,
	}
	refuse := func(option, why string) { ps.refused = append(ps.refused, option+": "+why) }
	if prov := o.CredentialsProvider; prov != nil {
		cfg.Credentials = func(context.Context) (string, string, error) {
			u, p := prov()
			return u, p, nil
		}
	}
	if len(o.HTTPHeaders) > 0 || o.WebsocketOptions != nil {
		w := &WebSocketOptions{Header: o.HTTPHeaders.Clone()}
		if wo := o.WebsocketOptions; wo != nil {
			w.ReadBufferSize, w.WriteBufferSize, w.Proxy = wo.ReadBufferSize, wo.WriteBufferSize, wo.Proxy
		}
		cfg.WebSocket = w
	}
	if o.Dialer != nil {
		cfg.Dialer = o.Dialer
	}
	ps.openConn = o.CustomOpenConnectionFn
	if h := o.OnConnectAttempt; h != nil {
		base := cfg.TLS
		cfg.TLS = nil // exclusive with GetTLSConfig
		cfg.GetTLSConfig = func(_ context.Context, broker string) (*tls.Config, error) {
			u, err := url.Parse(broker)
			if err != nil {
				return nil, err
			}
			return h(u, base), nil
		}
	}
	if o.PingTimeout != 0 && o.PingTimeout != 10*time.Second { // 10s: paho's default, replaced by KeepAlive/4
		cfg.PingTimeout = o.PingTimeout
	}
	if v := o.ProtocolVersion; v != 0 && v != 4 {
		refuse("SetProtocolVersion", fmt.Sprintf("only MQTT 3.1.1 (4), not %d", v))
	}
	ps.autoAckDisabled = o.AutoAckDisabled
	if o.Store != nil && outboxDir == "" {
		refuse("SetStore", "pass a directory as FromPaho's outboxDir for a durable outbox")
	}
	cfg.fromPaho = ps
	return cfg
}

// compat is the adapter returned by Client.Paho.
type compat struct {
	c *Client
	p *pahoSettings // nil unless the Config came from FromPaho

	mu        sync.Mutex      // guards connected, waiters and calls
	connected bool            // a connection was established before (reconnecting handler, notifications)
	waiters   []*connectToken // Connect calls waiting for the first outcome
	calls     []func()        // callbacks not run yet, in order
	wake      chan struct{}
}

var _ mqtt.Client = (*compat)(nil)

func newCompat(c *Client) *compat {
	p := &compat{c: c, p: c.cfg.fromPaho, wake: make(chan struct{}, 1)}
	if p.p != nil && p.p.dflt != nil && c.rx.dflt == nil {
		c.rx.dflt = p.handler(p.p.dflt)
	}
	return p
}

func (p *compat) IsConnected() bool      { return p.c.IsConnected() }
func (p *compat) IsConnectionOpen() bool { return p.c.paho.IsConnectionOpen() }

// Connect returns a token that completes when a connection is up, or with
// the error of the next failed attempt (as paho's does). The client connects
// on its own from New, and goes on trying after a failed attempt.
func (p *compat) Connect() mqtt.Token {
	t := &connectToken{token: newToken()}
	p.mu.Lock()
	p.waiters = append(p.waiters, t)
	p.mu.Unlock()
	if p.c.closing.Load() {
		t.finishConnect(ErrClosed, false)
	} else if p.c.IsConnected() {
		t.finishConnect(nil, p.c.sessionPresent())
	}
	return t
}

// Disconnect closes the client, waiting up to quiesce milliseconds for the
// outbox to drain (what is left stays in a durable outbox). It returns when
// the client is closed, or at the latest disconnectGrace after quiesce (a
// callback that calls it would otherwise wait for itself).
func (p *compat) Disconnect(quiesce uint) {
	q := time.Duration(quiesce) * time.Millisecond
	done := make(chan struct{})
	go func() {
		defer close(done)
		ctx, cancel := context.WithTimeout(context.Background(), q)
		defer cancel()
		_ = p.c.Close(ctx)
	}()
	t := time.NewTimer(q + disconnectGrace)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
	}
}

const disconnectGrace = 5 * time.Second

func (p *compat) Publish(topic string, qos byte, retained bool, payload interface{}) mqtt.Token {
	t := newToken()
	var b []byte
	switch v := payload.(type) {
	case []byte:
		b = v
	case string:
		b = []byte(v)
	case bytes.Buffer:
		b = v.Bytes()
	default:
		t.finish(fmt.Errorf("holdfast: unknown payload type %T", payload))
		return t
	}
	// paho's contract: Publish returns at once, and the token completes on
	// the broker's acknowledgement or with what stopped the message
	// (invalid input, a full outbox, a commit that failed).
	r, err := p.c.PublishAsync(context.Background(), topic, b, PublishOptions{QoS: qos, Retained: retained})
	if err != nil {
		t.finish(err)
		return t
	}
	return receiptToken{r}
}

// Subscribe subscribes as Client.Subscribe does; a nil callback sends the
// messages to the default publish handler (or leaves an AddRoute in place).
func (p *compat) Subscribe(topic string, qos byte, callback mqtt.MessageHandler) mqtt.Token {
	return p.SubscribeMultiple(map[string]byte{topic: qos}, callback)
}

func (p *compat) SubscribeMultiple(filters map[string]byte, callback mqtt.MessageHandler) mqtt.Token {
	t := newToken()
	for f, q := range filters {
		if err := checkFilter(f); err != nil {
			t.finish(err)
			return t
		}
		if q > 2 {
			t.finish(fmt.Errorf("%w: %d", ErrInvalidQoS, q))
			return t
		}
	}
	if p.c.closing.Load() {
		t.finish(ErrClosed)
		return t
	}
	h := p.handler(callback)
	st := &subscribeToken{token: t, result: make(map[string]byte, len(filters))}
	var answers []<-chan answer
	var names []string
	for f, q := range filters {
		answers = append(answers, p.c.rx.want(f, true, q, h))
		names = append(names, f)
	}
	go p.finishAll(t, answers, func(i int, a answer) { st.set(names[i], a.granted) })
	return st
}

func (p *compat) Unsubscribe(topics ...string) mqtt.Token {
	t := newToken()
	for _, f := range topics {
		if err := checkFilter(f); err != nil {
			t.finish(err)
			return t
		}
	}
	if p.c.closing.Load() {
		t.finish(ErrClosed)
		return t
	}
	var answers []<-chan answer
	for _, f := range topics {
		answers = append(answers, p.c.rx.want(f, false, 0, nil))
	}
	go p.finishAll(t, answers, nil)
	return t
}

// finishAll completes t with the broker's answers, or ErrClosed. each, if
// not nil, sees every answer before t completes.
func (p *compat) finishAll(t *token, answers []<-chan answer, each func(int, answer)) {
	var errs []error
	for i, ch := range answers {
		select {
		case a := <-ch:
			if each != nil {
				each(i, a)
			}
			errs = append(errs, a.err)
		case <-p.c.ctx.Done():
			t.finish(ErrClosed)
			return
		}
	}
	t.finish(errors.Join(errs...))
}

// AddRoute routes topic to callback without subscribing, as paho's does.
func (p *compat) AddRoute(topic string, callback mqtt.MessageHandler) {
	if callback != nil {
		p.c.rx.addRoute(topic, p.handler(callback))
	}
}

func (p *compat) OptionsReader() mqtt.ClientOptionsReader { return p.c.paho.OptionsReader() }

// handler adapts a paho callback: its message is accepted once it returns.
// A nil callback is a nil Handler (no route).
func (p *compat) handler(cb mqtt.MessageHandler) Handler {
	if cb == nil {
		return nil
	}
	return func(_ context.Context, m Message) error {
		if m.ack != nil {
			m.ack.expect()
		}
		cb(p, compatMessage{m})
		return nil
	}
}

type compatMessage struct{ m Message }

func (m compatMessage) Duplicate() bool   { return m.m.Duplicate }
func (m compatMessage) Qos() byte         { return m.m.QoS }
func (m compatMessage) Retained() bool    { return m.m.Retained }
func (m compatMessage) Topic() string     { return m.m.Topic }
func (m compatMessage) MessageID() uint16 { return m.m.PacketID }
func (m compatMessage) Payload() []byte   { return m.m.Payload }

// Ack acknowledges the message once its callbacks returned, with
// SetAutoAckDisabled; otherwise it does nothing (the message is acknowledged
// when its callbacks return).
func (m compatMessage) Ack() {
	if m.m.ack != nil {
		m.m.ack.call()
	}
}
