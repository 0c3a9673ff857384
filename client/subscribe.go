package client

import (
	"context"
	"fmt"

	mqtt "github.com/eclipse/paho.mqtt.golang"
)

// Message is an inbound message handed to a Handler.
type Message struct {
	Topic     string
	Payload   []byte
	QoS       byte
	Retained  bool
	Duplicate bool   // the broker marked it as a possible redelivery
	PacketID  uint16 // 0 for QoS 0
}

// Handler processes one inbound message. Returning nil accepts it. An error
// refuses it: the message is offered again after a backoff, up to
// Config.HandlerRetries times, and then handed to Config.DeadLetter. A QoS
// 1/2 message is acknowledged to the broker (PUBACK, or PUBREC for QoS 2)
// only when its handling ends that way, and only once every handler whose
// filter matches it has ended: a crash or a Close before that means the
// broker redelivers it to the next connection of this persistent session,
// never loss.
//
// By default handlers run one message at a time, in arrival order, on a
// goroutine of the client (Config.HandlerConcurrency runs more at once).
// A Handler may publish and wait for the Receipt. It must not call Close.
// ctx ends when Close stops the client.
type Handler func(ctx context.Context, m Message) error

// Subscription is one topic filter and its handler.
type Subscription struct {
	Filter  string
	QoS     byte
	Handler Handler // nil: messages go to Config.DefaultHandler, which must be set
}

func checkSubscription(filter string, qos byte, h Handler, haveDefault bool) error {
	if err := checkFilter(filter); err != nil {
		return err
	}
	if qos > 2 {
		return fmt.Errorf("%w: %d", ErrInvalidQoS, qos)
	}
	if h == nil && !haveDefault {
		return fmt.Errorf("%w: nil handler for %q and no DefaultHandler", ErrInvalidConfig, filter)
	}
	return nil
}

// Subscribe adds a subscription and keeps it: it is restored whenever the
// broker lost the session. When connected it waits for the SUBACK (or ctx);
// when not, it returns nil and the subscription is made on connecting.
// Errors: ErrInvalidFilter, ErrInvalidQoS, ErrInvalidConfig (nil handler
// and no Config.DefaultHandler), ErrClosed, the context's error, or the
// broker's refusal (SUBACK 0x80).
func (c *Client) Subscribe(ctx context.Context, filter string, qos byte, h Handler) error {
	return c.subscribe(ctx, filter, qos, h)
}

// subscribe is Subscribe; a nil h leaves filter's route as it is.
func (c *Client) subscribe(ctx context.Context, filter string, qos byte, h Handler) error {
	r := &c.rx
	r.mu.Lock()
	haveDefault := r.dflt != nil
	r.mu.Unlock()
	if err := checkSubscription(filter, qos, h, haveDefault); err != nil {
		return err
	}
	if c.closing.Load() {
		return ErrClosed
	}
	r.mu.Lock()
	if h != nil {
		r.setRouteLocked(filter, h)
	}
	r.subs[filter] = qos
	r.mu.Unlock()
	if !c.paho.IsConnectionOpen() {
		return nil
	}
	return c.subscribeNow(ctx, filter, qos)
}

func (c *Client) subscribeNow(ctx context.Context, filter string, qos byte) error {
	tok := c.paho.Subscribe(filter, qos, nil)
	select {
	case <-tok.Done():
	case <-ctx.Done():
		return ctx.Err()
	}
	if err := tok.Error(); err != nil {
		return err
	}
	if st, ok := tok.(*mqtt.SubscribeToken); ok {
		if code, ok := st.Result()[filter]; ok && code == 0x80 {
			return fmt.Errorf("holdfast: broker refused subscription %q", filter)
		}
	}
	return nil
}

// resubscribe restores every subscription on a connection whose broker
// session is new.
func (c *Client) resubscribe(ctx context.Context, _ *session) {
	r := &c.rx
	r.mu.Lock()
	subs := make(map[string]byte, len(r.subs))
	for f, q := range r.subs {
		subs[f] = q
	}
	r.mu.Unlock()
	for f, q := range subs {
		if err := c.subscribeNow(ctx, f, q); err != nil {
			c.log.Warn("holdfast: restoring subscription", "filter", f, "err", err)
		}
	}
}

// Unsubscribe removes a subscription and its route. Errors:
// ErrInvalidFilter, ErrClosed, the context's error.
func (c *Client) Unsubscribe(ctx context.Context, filter string) error {
	if err := checkFilter(filter); err != nil {
		return err
	}
	if c.closing.Load() {
		return ErrClosed
	}
	r := &c.rx
	r.mu.Lock()
	delete(r.subs, filter)
	r.deleteRouteLocked(filter)
	r.mu.Unlock()
	if !c.paho.IsConnectionOpen() {
		return nil
	}
	tok := c.paho.Unsubscribe(filter)
	select {
	case <-tok.Done():
		return tok.Error()
	case <-ctx.Done():
		return ctx.Err()
	}
}
