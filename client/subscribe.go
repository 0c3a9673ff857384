package client

import (
	"context"
	"fmt"
	"time"

	"github.com/cenkalti/backoff/v4"
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

	ack *manualAck // the paho adapter's Message.Ack, with SetAutoAckDisabled (inbound.go)
}

// Handler processes one inbound message. Returning nil accepts it. An error
// refuses it: the message is offered again after a backoff, up to
// Config.HandlerRetries times, and then handed to Config.DeadLetter. A QoS
// 1/2 message is acknowledged to the broker (PUBACK, or PUBREC for QoS 2)
// only when its handling ends that way, and only once every handler whose
// filter matches it has ended: a crash or a Close before that means the
// broker redelivers it to the next connection of this persistent session,
// never loss. A QoS 2 message is handed to the handlers once: its packet
// identifier is recorded before the PUBREC, durably with Config.OutboxDir,
// so that the broker's resend (before it has the PUBREC) is acknowledged
// without being handled again, even by the next process.
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

// intent is what the broker should hold for one filter: a subscription, or
// none (an Unsubscribe not yet acknowledged).
type intent struct {
	sub     bool          // subscribe (true) or unsubscribe (false)
	qos     byte          // for sub
	synced  bool          // the broker acknowledged it in the current session
	gen     uint64        // incremented by every call that changes it
	waiters []chan answer // calls waiting for the broker's answer
}

// answer is the broker's answer to an intent, as a waiting call receives it.
type answer struct {
	err     error
	granted byte // a subscription's granted QoS (0x80: refused)
}

// finish answers every waiting call with err.
func (in *intent) finish(err error) { in.answer(answer{err: err}) }

// answer answers every waiting call.
func (in *intent) answer(a answer) {
	for _, w := range in.waiters {
		w <- a // buffered, capacity 1
	}
	in.waiters = nil
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

// Subscribe subscribes to filter and routes its messages to h (which
// replaces an earlier handler of the same filter). The subscription is
// durable for the life of the client: made while offline, it is sent on the
// next connection, a SUBSCRIBE that fails (connection lost) is sent again,
// and it is restored whenever the broker lost the session.
//
// Subscribe waits for the broker's SUBACK, or for ctx: if ctx ends first,
// the error is the context's and the subscription is still made later (call
// Unsubscribe to withdraw it). Messages of a filter subscribed in an earlier
// run arrive from the first connection: use Config.Subscriptions or
// Config.DefaultHandler so that they have a handler by then.
//
// Errors: ErrInvalidFilter, ErrInvalidQoS, ErrInvalidConfig (nil handler
// and no Config.DefaultHandler), ErrSubscriptionRefused (the broker answered
// 0x80; the route is removed), ErrClosed, the context's error.
func (c *Client) Subscribe(ctx context.Context, filter string, qos byte, h Handler) error {
	c.rx.mu.Lock()
	haveDefault := c.rx.dflt != nil
	c.rx.mu.Unlock()
	if err := checkSubscription(filter, qos, h, haveDefault); err != nil {
		return err
	}
	if c.closing.Load() {
		return ErrClosed
	}
	return c.await(ctx, c.rx.want(filter, true, qos, h))
}

// Unsubscribe removes filter's route at once and unsubscribes from it:
// while offline, the UNSUBSCRIBE is sent on the next connection whose broker
// kept the session (one that did not holds nothing to remove). It waits for
// the UNSUBACK or ctx, like Subscribe. Errors: ErrInvalidFilter, ErrClosed,
// the context's error.
func (c *Client) Unsubscribe(ctx context.Context, filter string) error {
	if err := checkFilter(filter); err != nil {
		return err
	}
	if c.closing.Load() {
		return ErrClosed
	}
	return c.await(ctx, c.rx.want(filter, false, 0, nil))
}

// want records what the broker should hold for filter and wakes the syncer.
// h, when not nil, becomes filter's route; an unsubscribe removes the route.
// The returned channel receives the broker's answer.
func (r *receiver) want(filter string, sub bool, qos byte, h Handler) <-chan answer {
	done := make(chan answer, 1)
	r.mu.Lock()
	switch {
	case !sub:
		r.deleteRouteLocked(filter)
	case h != nil:
		r.setRouteLocked(filter, h)
	}
	in := r.intents[filter]
	if in == nil {
		in = &intent{}
		r.intents[filter] = in
	}
	in.sub, in.qos, in.synced = sub, qos, false
	in.gen++
	in.waiters = append(in.waiters, done)
	r.mu.Unlock()
	r.wake()
	return done
}

func (r *receiver) wake() {
	select {
	case r.kick <- struct{}{}:
	default:
	}
}

func (c *Client) await(ctx context.Context, done <-chan answer) error {
	select {
	case a := <-done:
		return a.err
	case <-ctx.Done():
		return ctx.Err()
	case <-c.ctx.Done():
		return ErrClosed
	}
}

// resubscribe is called by connect on a connection whose broker session is
// new: every subscription is sent again, and pending unsubscriptions have
// nothing left to remove.
func (c *Client) resubscribe(ctx context.Context, _ *session) {
	r := &c.rx
	r.mu.Lock()
	for f, in := range r.intents {
		if in.sub {
			in.synced = false
		} else {
			delete(r.intents, f)
			in.finish(nil)
		}
	}
	r.mu.Unlock()
	if !c.syncOnce(ctx) {
		r.wake()
	}
}

// syncSubscriptions is the goroutine that sends what the broker does not
// hold yet: on every new intent, on every connection (onEvent wakes it), and
// after a failure with exponential backoff while connected.
func (c *Client) syncSubscriptions(ctx context.Context) {
	defer c.rx.closeIntents()
	bo := backoff.NewExponentialBackOff()
	bo.InitialInterval = 200 * time.Millisecond
	bo.MaxInterval = 10 * time.Second
	bo.MaxElapsedTime = 0
	retry := time.NewTimer(time.Hour)
	retry.Stop()
	defer retry.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-c.rx.kick:
		case <-retry.C:
		}
		if !c.paho.IsConnectionOpen() {
			continue // the next connection wakes it
		}
		if c.syncOnce(ctx) {
			bo.Reset()
			continue
		}
		retry.Stop()
		select {
		case <-retry.C:
		default:
		}
		retry.Reset(bo.NextBackOff())
	}
}

// closeIntents answers every waiting call with ErrClosed.
func (r *receiver) closeIntents() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, in := range r.intents {
		in.finish(ErrClosed)
	}
}

// pendingIntent is an intent as it was sent.
type pendingIntent struct {
	filter string
	qos    byte
	gen    uint64
}

// syncOnce sends one SUBSCRIBE for every subscription the broker does not
// hold and one UNSUBSCRIBE for every pending removal, and waits for the
// answers. It returns false if a packet failed (connection lost): what it
// carried is sent again by a later pass.
func (c *Client) syncOnce(ctx context.Context) bool {
	r := &c.rx
	r.syncMu.Lock()
	defer r.syncMu.Unlock()
	sess := c.sess.Load()
	var subs, unsubs []pendingIntent
	r.mu.Lock()
	for f, in := range r.intents {
		if !in.synced {
			p := pendingIntent{filter: f, qos: in.qos, gen: in.gen}
			if in.sub {
				subs = append(subs, p)
			} else {
				unsubs = append(unsubs, p)
			}
		}
	}
	r.mu.Unlock()
	ok := true
	if len(subs) > 0 {
		filters := make(map[string]byte, len(subs))
		for _, p := range subs {
			filters[p.filter] = p.qos
		}
		tok := c.paho.SubscribeMultiple(filters, nil)
		if err := waitPaho(ctx, sess, tok); err != nil {
			c.log.Debug("holdfast: subscribing; will retry", "filters", len(subs), "err", err)
			ok = false
		} else {
			var codes map[string]byte
			if st, isSub := tok.(*mqtt.SubscribeToken); isSub {
				codes = st.Result()
			}
			r.settle(subs, func(in *intent, p pendingIntent) {
				if code, has := codes[p.filter]; has && code == 0x80 {
					c.log.Warn("holdfast: the broker refused a subscription", "filter", p.filter)
					delete(r.intents, p.filter)
					r.deleteRouteLocked(p.filter)
					in.answer(answer{err: fmt.Errorf("%w: %q", ErrSubscriptionRefused, p.filter), granted: code})
					return
				}
				in.synced = true
				granted, has := codes[p.filter]
				if !has {
					granted = p.qos
				}
				in.answer(answer{granted: granted})
			})
		}
	}
	if len(unsubs) > 0 {
		filters := make([]string, len(unsubs))
		for i, p := range unsubs {
			filters[i] = p.filter
		}
		tok := c.paho.Unsubscribe(filters...)
		if err := waitPaho(ctx, sess, tok); err != nil {
			c.log.Debug("holdfast: unsubscribing; will retry", "filters", len(unsubs), "err", err)
			ok = false
		} else {
			r.settle(unsubs, func(in *intent, p pendingIntent) {
				delete(r.intents, p.filter)
				in.finish(nil)
			})
		}
	}
	return ok
}

// settle applies f to each intent that no call changed since it was sent;
// a changed one is left for the next pass, which it wakes.
func (r *receiver) settle(sent []pendingIntent, f func(*intent, pendingIntent)) {
	changed := false
	r.mu.Lock()
	for _, p := range sent {
		in := r.intents[p.filter]
		if in == nil || in.gen != p.gen {
			changed = true
			continue
		}
		f(in, p)
	}
	r.mu.Unlock()
	if changed {
		r.wake()
	}
}

// waitPaho waits for a SUBSCRIBE or UNSUBSCRIBE token. paho completes it on
// the answer or on a lost connection; sess ending bounds the wait as well,
// in case the loss overtook paho's bookkeeping.
func waitPaho(ctx context.Context, sess *session, tok mqtt.Token) error {
	var lost <-chan struct{}
	if sess != nil {
		lost = sess.Done()
	}
	select {
	case <-tok.Done():
		return tok.Error()
	case <-ctx.Done():
		return ctx.Err()
	case <-lost:
		return fmt.Errorf("%w: connection lost before the answer", ErrNotConnected)
	}
}
