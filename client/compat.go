package client

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
)

// Paho returns a view of c that satisfies paho's mqtt.Client interface, for
// code written against bare paho. Migrating is then a constructor change:
//
//	var cli mqtt.Client = mqtt.NewClient(opts)          // before
//	hf, err := client.New(client.FromPaho(opts, "/var/lib/app/outbox"))
//	var cli mqtt.Client = hf.Paho()                     // after
//
// Through it, Publish of QoS 1/2 goes through the outbox (the token
// completes on the broker's acknowledgement, not on paho's resend), a QoS 0
// publish while disconnected fails with ErrNotConnected instead of a silent
// drop, and message handlers are acknowledged after they return.
func (c *Client) Paho() mqtt.Client { return &compat{c: c} }

// FromPaho builds a Config from paho ClientOptions: brokers, client
// identifier, credentials, keepalive, timeouts, TLS, will and the default
// handler's subscriptions are carried over; outboxDir is the durable outbox
// ("" for an in-memory one). Reconnection is Holdfast's (paho's
// AutoReconnect/ConnectRetry settings are ignored).
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
	return cfg
}

type compat struct{ c *Client }

var _ mqtt.Client = (*compat)(nil)

func (p *compat) IsConnected() bool      { return p.c.IsConnected() }
func (p *compat) IsConnectionOpen() bool { return p.c.paho.IsConnectionOpen() }

// Connect returns a token that completes at the first connection (the client
// connects on its own from New), or with ErrStopped on a permanent refusal.
func (p *compat) Connect() mqtt.Token {
	t := newToken()
	go func() {
		ctx, cancel := context.WithTimeout(p.c.ctx, p.c.cfg.ConnectTimeout)
		defer cancel()
		t.finish(p.c.AwaitConnected(ctx))
	}()
	return t
}

// Disconnect closes the client, waiting up to quiesce milliseconds for the
// outbox to drain. What is left stays in a durable outbox.
func (p *compat) Disconnect(quiesce uint) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(quiesce)*time.Millisecond)
	defer cancel()
	_ = p.c.Close(ctx)
}

func (p *compat) Publish(topic string, qos byte, retained bool, payload interface{}) mqtt.Token {
	t := newToken()
	var b []byte
	switch v := payload.(type) {
	case []byte:
		b = v
	case string:
		b = []byte(v)
	default:
		t.finish(fmt.Errorf("holdfast: unknown payload type %T", payload))
		return t
	}
	r, err := p.c.Publish(context.Background(), topic, b, PublishOptions{QoS: qos, Retained: retained})
	if err != nil {
		t.finish(err)
		return t
	}
	return receiptToken{r}
}

// receiptToken is a Receipt seen as a paho token.
type receiptToken struct{ r *Receipt }

func (t receiptToken) Wait() bool { <-t.r.Done(); return true }
func (t receiptToken) WaitTimeout(d time.Duration) bool {
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-t.r.Done():
		return true
	case <-timer.C:
		return false
	}
}
func (t receiptToken) Done() <-chan struct{} { return t.r.Done() }
func (t receiptToken) Error() error {
	t.r.mu.Lock()
	defer t.r.mu.Unlock()
	return t.r.err
}

func (p *compat) Subscribe(topic string, qos byte, callback mqtt.MessageHandler) mqtt.Token {
	return p.SubscribeMultiple(map[string]byte{topic: qos}, callback)
}

func (p *compat) SubscribeMultiple(filters map[string]byte, callback mqtt.MessageHandler) mqtt.Token {
	t := newToken()
	go func() {
		var errs []error
		for f, q := range filters {
			errs = append(errs, p.c.Subscribe(p.c.ctx, f, q, p.handler(callback)))
		}
		t.finish(errors.Join(errs...))
	}()
	return t
}

func (p *compat) Unsubscribe(topics ...string) mqtt.Token {
	t := newToken()
	go func() {
		var errs []error
		for _, f := range topics {
			errs = append(errs, p.c.Unsubscribe(p.c.ctx, f))
		}
		t.finish(errors.Join(errs...))
	}()
	return t
}

func (p *compat) AddRoute(topic string, callback mqtt.MessageHandler) {
	p.c.paho.AddRoute(topic, func(_ mqtt.Client, m mqtt.Message) {
		callback(p, m)
		m.Ack()
	})
}

func (p *compat) OptionsReader() mqtt.ClientOptionsReader { return p.c.paho.OptionsReader() }

// handler adapts a paho callback: it is acknowledged once it returns.
func (p *compat) handler(cb mqtt.MessageHandler) Handler {
	if cb == nil {
		return func(context.Context, Message) error { return nil }
	}
	return func(_ context.Context, m Message) error {
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
func (m compatMessage) Ack()              {} // acknowledged when the callback returns

// token is an mqtt.Token completed once.
type token struct {
	done chan struct{}
	once sync.Once
	err  error
}

func newToken() *token { return &token{done: make(chan struct{})} }

func (t *token) finish(err error) {
	t.once.Do(func() { t.err = err; close(t.done) })
}

func (t *token) Wait() bool { <-t.done; return true }
func (t *token) WaitTimeout(d time.Duration) bool {
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-t.done:
		return true
	case <-timer.C:
		return false
	}
}
func (t *token) Done() <-chan struct{} { return t.done }
func (t *token) Error() error {
	select {
	case <-t.done:
		return t.err
	default:
		return nil
	}
}
