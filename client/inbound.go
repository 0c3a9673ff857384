package client

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/eclipse/paho.mqtt.golang/packets"
)

// The inbound side. paho's router holds a single catch-all route (see
// catchAllRoute): every message it reads goes to receiver.arrive, which
// matches it against the client's own routes and queues it. Handler
// goroutines take it from the queue, run every matching handler (retrying a
// refusal, then handing it to the dead-letter callback) and only then
// acknowledge it, with paho's AutoAckDisabled Message.Ack. paho's router
// goroutine therefore never runs a handler: a slow handler, or one that
// waits for a publish's receipt, does not stop paho reading the PUBACKs and
// PINGRESPs behind the next message, until the queue is full.

const (
	// inboundQueue bounds the messages read and not yet taken by a handler
	// goroutine. When it is full paho's reader waits: backpressure down to
	// TCP, and memory stays bounded.
	inboundQueue = 256
	// Defaults and bounds of the handler retry policy (Config.HandlerRetries).
	defaultHandlerRetries = 5
	defaultHandlerBackoff = 100 * time.Millisecond
	maxHandlerBackoff     = 10 * time.Second
	// catchAllRoute is the only route given to paho: "$share/<group>/" is
	// stripped by paho's matcher, leaving "#", which matches every topic.
	// The NUL byte keeps it out of reach of an Unsubscribe (checkFilter
	// refuses NUL), which would otherwise delete the route in paho.
	catchAllRoute = "$share/\x00holdfast/#"
)

// receiver is the client's inbound side: routes, subscriptions and the
// goroutines that run handlers.
type receiver struct {
	c      *Client
	compat *compat // the paho adapter (compat.go)

	mu      sync.Mutex           // guards routes, dflt, active and intents
	routes  []*route             // in the order they were added; one per filter
	dflt    Handler              // Config.DefaultHandler, or the adapter's default handler
	active  map[uint16]*delivery // QoS 1/2 messages queued or being handled, by packet identifier
	intents map[string]*intent   // what the broker should hold, by filter (subscribe.go)

	queue  chan *delivery // arrival order
	kick   chan struct{}  // wakes the subscription syncer (capacity 1)
	syncMu sync.Mutex     // serialises subscription syncs (subscribe.go)

	retries    int
	backoff    time.Duration
	deadLetter func(context.Context, Message, error)
	// manualAcks: the paho adapter's callbacks acknowledge with
	// Message.Ack (paho's SetAutoAckDisabled).
	manualAcks bool

	received, unrouted, refusals, deadLettered atomic.Uint64
}

// route sends the messages whose topic matches filter to h.
type route struct {
	filter string
	levels []string // filter's levels, without a "$share/<group>/" prefix
	h      Handler
}

func newRoute(filter string, h Handler) *route {
	f := filter
	if rest, ok := strings.CutPrefix(f, "$share/"); ok {
		if _, after, ok := strings.Cut(rest, "/"); ok {
			f = after
		}
	}
	return &route{filter: filter, levels: strings.Split(f, "/"), h: h}
}

// match reports whether topic (split in levels) matches the route's filter,
// as MQTT 3.1.1 section 4.7 defines it: a wildcard in the first level does
// not match a topic beginning with '$'.
func (rt *route) match(topic []string) bool {
	if len(topic[0]) > 0 && topic[0][0] == '$' && (rt.levels[0] == "#" || rt.levels[0] == "+") {
		return false
	}
	for i, f := range rt.levels {
		if f == "#" {
			return true
		}
		if i >= len(topic) || (f != "+" && f != topic[i]) {
			return false
		}
	}
	return len(topic) == len(rt.levels)
}

// delivery is one inbound message on its way through the handlers.
type delivery struct {
	m        Message
	handlers []Handler // the matching routes' handlers, or the default one; none: unrouted
	acks     []func()  // its Ack, then those of redeliveries that joined it
}

// initReceiver sets the inbound side up from the Config, before the first
// connection: the routes and subscriptions of Config.Subscriptions, the
// default handler, the paho adapter, and paho's catch-all route. Errors wrap
// ErrInvalidConfig.
func (c *Client) initReceiver() error {
	r := &c.rx
	r.c = c
	r.active = map[uint16]*delivery{}
	r.intents = map[string]*intent{}
	r.queue = make(chan *delivery, inboundQueue)
	r.kick = make(chan struct{}, 1)
	r.dflt = c.cfg.DefaultHandler
	r.retries = max(c.cfg.HandlerRetries, 0)
	r.backoff = c.cfg.HandlerBackoff
	r.deadLetter = c.cfg.DeadLetter
	r.manualAcks = c.cfg.fromPaho != nil && c.cfg.fromPaho.autoAckDisabled
	r.compat = newCompat(c)
	for _, s := range c.cfg.Subscriptions {
		if err := checkSubscription(s.Filter, s.QoS, s.Handler, r.dflt != nil); err != nil {
			return fmt.Errorf("%w: subscription: %w", ErrInvalidConfig, err)
		}
		if s.Handler != nil {
			r.setRouteLocked(s.Filter, s.Handler)
		}
		r.intents[s.Filter] = &intent{sub: true, qos: s.QoS}
	}
	c.paho.AddRoute(catchAllRoute, r.arrive)
	return nil
}

// startReceiver starts the handler goroutines, the subscription syncer and
// the adapter's callback goroutine. They stop with c.ctx (Close).
func (c *Client) startReceiver() {
	n := max(c.cfg.HandlerConcurrency, 1)
	c.wg.Add(n + 2)
	for range n {
		go func() {
			defer c.wg.Done()
			c.rx.work(c.ctx)
		}()
	}
	go func() {
		defer c.wg.Done()
		c.syncSubscriptions(c.ctx)
	}()
	go func() {
		defer c.wg.Done()
		c.rx.compat.runCallbacks(c.ctx)
	}()
}

// setRouteLocked adds a route for filter, or replaces its handler. Called
// with r.mu held.
func (r *receiver) setRouteLocked(filter string, h Handler) {
	for _, rt := range r.routes {
		if rt.filter == filter {
			rt.h = h
			return
		}
	}
	r.routes = append(r.routes, newRoute(filter, h))
}

// deleteRouteLocked removes filter's route. Called with r.mu held.
func (r *receiver) deleteRouteLocked(filter string) {
	for i, rt := range r.routes {
		if rt.filter == filter {
			r.routes = append(r.routes[:i:i], r.routes[i+1:]...)
			return
		}
	}
}

// addRoute routes filter to h without subscribing (paho's AddRoute).
func (r *receiver) addRoute(filter string, h Handler) {
	r.mu.Lock()
	r.setRouteLocked(filter, h)
	r.mu.Unlock()
}

// arrive is paho's handler for every inbound message; it runs on paho's
// router goroutine and returns once the message is queued.
func (r *receiver) arrive(_ mqtt.Client, pm mqtt.Message) {
	c := r.c
	id, qos := pm.MessageID(), pm.Qos()
	if qos == 2 && c.d.in.has(id) {
		// A duplicate PUBLISH before PUBREL, in this process or after a
		// restart: already handled. Its PUBREC waits for the entry to be
		// durable, like the first one did.
		if err := c.d.in.wait(c.d.in.pending(id)); err != nil {
			r.unrecorded(err)
			return
		}
		pm.Ack()
		return
	}
	m := Message{
		Topic: pm.Topic(), Payload: pm.Payload(), QoS: qos,
		Retained: pm.Retained(), Duplicate: pm.Duplicate(), PacketID: id,
	}
	r.mu.Lock()
	if d := r.active[id]; qos > 0 && d != nil && m.Duplicate && d.m.Topic == m.Topic {
		// The broker's redelivery (after a reconnect) of a message still
		// queued or being handled: it is acknowledged with it, on this
		// connection, instead of being handled twice.
		d.acks = append(d.acks, pm.Ack)
		r.mu.Unlock()
		return
	}
	d := &delivery{m: m, acks: []func(){pm.Ack}}
	if r.manualAcks && qos > 0 {
		d.m.ack = &manualAck{r: r, d: d}
	}
	topic := strings.Split(m.Topic, "/")
	for _, rt := range r.routes {
		if rt.match(topic) {
			d.handlers = append(d.handlers, rt.h)
		}
	}
	if len(d.handlers) == 0 && r.dflt != nil {
		d.handlers = []Handler{r.dflt}
	}
	if qos > 0 {
		r.active[id] = d
	}
	r.mu.Unlock()
	select {
	case r.queue <- d:
	case <-c.ctx.Done():
		r.forget(d) // closing: not acknowledged, the broker redelivers it
	}
}

// work is a handler goroutine.
func (r *receiver) work(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case d := <-r.queue:
			if ctx.Err() != nil {
				r.forget(d)
				return
			}
			r.handle(ctx, d)
		}
	}
}

// handle runs every handler of d, then acknowledges it. Only a Close that
// interrupts it leaves it unacknowledged.
func (r *receiver) handle(ctx context.Context, d *delivery) {
	if len(d.handlers) == 0 {
		r.unrouted.Add(1)
		r.c.log.Warn("holdfast: message matches no subscription and there is no DefaultHandler: acknowledged unhandled",
			"topic", d.m.Topic, "qos", d.m.QoS)
	} else {
		r.received.Add(1)
		for _, h := range d.handlers {
			if !r.offer(ctx, h, d.m) {
				r.forget(d)
				return
			}
		}
	}
	if d.m.ack != nil && !d.m.ack.handled() {
		return // acknowledged when a callback calls Message.Ack
	}
	r.ack(d)
}

// manualAck joins the two conditions for acknowledging a message that a
// paho callback must acknowledge itself (SetAutoAckDisabled): its handling
// ended, and Message.Ack was called (during a callback or after). Until both
// hold the message stays unacknowledged, and the handler goroutine goes on
// with the next one, as paho's router does; the broker's window bounds how
// many wait.
type manualAck struct {
	r *receiver
	d *delivery

	mu       sync.Mutex // guards the fields below
	expected bool       // a callback that acknowledges by itself received the message
	called   bool       // Message.Ack was called
	ended    bool       // every handler returned
	done     bool       // acknowledged
}

// expect is called before such a callback runs.
func (a *manualAck) expect() {
	a.mu.Lock()
	a.expected = true
	a.mu.Unlock()
}

// handled is called when handling ended. It reports whether the message
// may be acknowledged now; otherwise Message.Ack will do it.
func (a *manualAck) handled() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.ended = true
	if !a.expected || a.called {
		a.done = true
		return true
	}
	return false
}

// call is Message.Ack.
func (a *manualAck) call() {
	a.mu.Lock()
	a.called = true
	now := a.ended && !a.done
	a.done = a.done || now
	a.mu.Unlock()
	if now {
		a.r.ack(a.d)
	}
}

// offer gives m to h until h accepts it, retrying a refusal with backoff
// r.retries times and then handing it to the dead-letter callback. It
// returns false only when ctx ended first.
func (r *receiver) offer(ctx context.Context, h Handler, m Message) bool {
	wait := r.backoff
	for attempt := 0; ; attempt++ {
		err := h(ctx, m)
		if err == nil {
			return true
		}
		r.refusals.Add(1)
		if ctx.Err() != nil {
			return false
		}
		if attempt >= r.retries {
			r.deadLettered.Add(1)
			if r.deadLetter != nil {
				r.deadLetter(ctx, m, err)
			} else {
				r.c.log.Error("holdfast: handler refused a message after every retry: acknowledged without a DeadLetter callback",
					"topic", m.Topic, "qos", m.QoS, "attempts", attempt+1, "err", err)
			}
			return true
		}
		r.c.log.Debug("holdfast: handler refused a message; retrying", "topic", m.Topic, "attempt", attempt+1, "wait", wait, "err", err)
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return false
		}
		wait = min(2*wait, maxHandlerBackoff)
	}
}

// ack acknowledges d (and every redelivery that joined it). A QoS 2
// identifier is first recorded as handled, durably (inledger.go), so that a
// duplicate PUBLISH before the PUBREL is not handled again, even by the
// next process. If that record cannot be written the message is not
// acknowledged: the connection is dropped and the broker resends it, to be
// acknowledged once the record is written.
func (r *receiver) ack(d *delivery) {
	if d.m.QoS == 2 {
		in := r.c.d.in
		if err := in.wait(in.add(d.m.PacketID)); err != nil {
			r.forget(d)
			r.unrecorded(err)
			return
		}
	}
	for _, ack := range r.forget(d) {
		ack()
	}
}

// unrecorded reports a failed write of the inbound QoS 2 ledger and drops
// the connection, whose unacknowledged messages the broker sends again.
func (r *receiver) unrecorded(err error) {
	r.c.log.Error("holdfast: inbound QoS 2 message handled but not recorded; not acknowledged, reconnecting", "err", err)
	if wc := r.c.conn.Load(); wc != nil {
		wc.breakWith(err)
	}
}

// forget ends d's tracking and returns its acknowledgement functions.
func (r *receiver) forget(d *delivery) []func() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if d.m.QoS > 0 && r.active[d.m.PacketID] == d {
		delete(r.active, d.m.PacketID)
	}
	return d.acks
}

// inboundPut tracks inbound QoS 2 exchanges through paho's "i.<id>" Puts:
// a PUBLISH without DUP, or the broker's PUBREL, ends what is known of an
// identifier (the next PUBLISH under it is a new message). A Del is no such
// signal: paho's resume deletes stored inbound PUBLISH entries on every
// reconnect, while the broker will still resend that PUBLISH with DUP.
//
// The removal at a PUBREL is written before paho's PUBCOMP leaves (see
// wireConn.Write). A PUBLISH without DUP under an identifier still in the
// ledger is rare (the broker ended the exchange without our PUBCOMP): its
// removal is written before the message can reach a handler. Called on
// paho's reader goroutine, without d.mu.
func (d *dispatcher) inboundPut(id uint16, cp packets.ControlPacket) {
	switch p := cp.(type) {
	case *packets.PublishPacket:
		if !p.Dup && p.Qos == 2 && d.in.has(id) {
			if err := d.in.wait(d.in.remove(id)); err != nil {
				d.log.Error("holdfast: inbound QoS 2 ledger", "err", err)
			}
		}
	case *packets.PubrelPacket:
		d.in.remove(id)
	}
}

// validateReceive checks and completes the inbound fields of a Config (see
// Config.validate).
func (c *Config) validateReceive() error {
	if c.fromPaho != nil && len(c.fromPaho.refused) > 0 {
		return fmt.Errorf("%w: paho options Holdfast does not carry out: %s", ErrInvalidConfig, strings.Join(c.fromPaho.refused, "; "))
	}
	switch {
	case c.HandlerConcurrency < 0:
		return fmt.Errorf("%w: HandlerConcurrency %d", ErrInvalidConfig, c.HandlerConcurrency)
	case c.HandlerRetries < -1:
		return fmt.Errorf("%w: HandlerRetries %d (-1 means none)", ErrInvalidConfig, c.HandlerRetries)
	case c.HandlerBackoff < 0:
		return fmt.Errorf("%w: negative HandlerBackoff", ErrInvalidConfig)
	}
	if c.HandlerRetries == 0 {
		c.HandlerRetries = defaultHandlerRetries
	}
	if c.HandlerBackoff == 0 {
		c.HandlerBackoff = defaultHandlerBackoff
	}
	return nil
}

// addStats copies the inbound counters into st.
func (r *receiver) addStats(st *Stats) {
	st.Received = r.received.Load()
	st.Unrouted = r.unrouted.Load()
	st.Refusals = r.refusals.Load()
	st.DeadLettered = r.deadLettered.Load()
}
