package client

import (
	"context"
	"fmt"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/eclipse/paho.mqtt.golang/packets"
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

// Handler processes one inbound message. Returning nil accepts it: only then
// is it acknowledged to the broker (PUBACK, or PUBREC for QoS 2). Returning
// an error leaves it unacknowledged, so the broker redelivers it on the next
// connection of this persistent session: a crash or a refusal before
// acceptance means redelivery, never loss. Handlers run one at a time, in
// arrival order, on one goroutine: a Handler must not wait for a Receipt
// (Publish itself is fine: it returns once the message is durable).
type Handler func(ctx context.Context, m Message) error

// Subscription is one topic filter and its handler.
type Subscription struct {
	Filter  string
	QoS     byte
	Handler Handler
}

// route adapts a Handler to paho. A QoS 2 message that reaches the client a
// second time before its exchange completed (a duplicate PUBLISH before
// PUBREL) is acknowledged without calling the handler again.
func (c *Client) route(s Subscription) mqtt.MessageHandler {
	return func(_ mqtt.Client, pm mqtt.Message) {
		id := pm.MessageID()
		if pm.Qos() == 2 {
			c.d.mu.Lock()
			done := c.d.inHandled[id]
			c.d.mu.Unlock()
			if done {
				pm.Ack()
				return
			}
		}
		m := Message{
			Topic: pm.Topic(), Payload: pm.Payload(), QoS: pm.Qos(),
			Retained: pm.Retained(), Duplicate: pm.Duplicate(), PacketID: id,
		}
		if err := s.Handler(c.ctx, m); err != nil {
			c.log.Warn("holdfast: handler refused a message; the broker will redeliver it", "topic", m.Topic, "qos", m.QoS, "err", err)
			return
		}
		if pm.Qos() == 2 {
			c.d.mu.Lock()
			c.d.inHandled[id] = true
			c.d.mu.Unlock()
		}
		pm.Ack()
	}
}

// inboundPut tracks inbound QoS 2 exchanges through paho's "i.<id>" Puts:
// a PUBLISH without DUP, or the broker's PUBREL, ends what is known of an
// identifier (the next PUBLISH under it is a new message). A Del is no such
// signal: paho's resume deletes stored inbound PUBLISH entries on every
// reconnect, while the broker will still resend that PUBLISH with DUP.
// Called with d.mu held.
func (d *dispatcher) inboundPut(id uint16, cp packets.ControlPacket) {
	switch p := cp.(type) {
	case *packets.PublishPacket:
		if !p.Dup {
			delete(d.inHandled, id)
		}
	case *packets.PubrelPacket:
		delete(d.inHandled, id)
	}
}

// Subscribe adds a subscription and keeps it: it is restored whenever the
// broker lost the session. When connected it waits for the SUBACK (or ctx);
// when not, it returns nil and the subscription is made on connecting.
// Errors: ErrInvalidFilter, ErrInvalidQoS, ErrClosed, the context's error,
// or the broker's refusal (SUBACK 0x80).
func (c *Client) Subscribe(ctx context.Context, filter string, qos byte, h Handler) error {
	if err := checkFilter(filter); err != nil {
		return err
	}
	if qos > 2 {
		return fmt.Errorf("%w: %d", ErrInvalidQoS, qos)
	}
	if h == nil {
		return fmt.Errorf("%w: nil handler", ErrInvalidConfig)
	}
	if c.closing.Load() {
		return ErrClosed
	}
	s := Subscription{Filter: filter, QoS: qos, Handler: h}
	c.subsMu.Lock()
	c.subs[filter] = s
	c.subsMu.Unlock()
	c.paho.AddRoute(filter, c.route(s))
	if !c.paho.IsConnectionOpen() {
		return nil
	}
	return c.subscribeNow(ctx, s)
}

func (c *Client) subscribeNow(ctx context.Context, s Subscription) error {
	tok := c.paho.Subscribe(s.Filter, s.QoS, c.route(s))
	select {
	case <-tok.Done():
	case <-ctx.Done():
		return ctx.Err()
	}
	if err := tok.Error(); err != nil {
		return err
	}
	if st, ok := tok.(*mqtt.SubscribeToken); ok {
		if code, ok := st.Result()[s.Filter]; ok && code == 0x80 {
			return fmt.Errorf("holdfast: broker refused subscription %q", s.Filter)
		}
	}
	return nil
}

// resubscribe restores every subscription on a connection whose broker
// session is new.
func (c *Client) resubscribe(ctx context.Context, sess *session) {
	c.subsMu.Lock()
	subs := make([]Subscription, 0, len(c.subs))
	for _, s := range c.subs {
		subs = append(subs, s)
	}
	c.subsMu.Unlock()
	for _, s := range subs {
		if err := c.subscribeNow(ctx, s); err != nil {
			c.log.Warn("holdfast: restoring subscription", "filter", s.Filter, "err", err)
		}
	}
}

// Unsubscribe removes a subscription. Errors: ErrInvalidFilter, ErrClosed,
// the context's error.
func (c *Client) Unsubscribe(ctx context.Context, filter string) error {
	if err := checkFilter(filter); err != nil {
		return err
	}
	if c.closing.Load() {
		return ErrClosed
	}
	c.subsMu.Lock()
	delete(c.subs, filter)
	c.subsMu.Unlock()
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
