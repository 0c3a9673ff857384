package client

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/holdfast-mqtt/holdfast/outbox"
)

// PublishOptions are the per-message options of Publish. The zero value is
// QoS 0, not retained, no expiry beyond Config.TTL.
type PublishOptions struct {
	QoS      byte
	Retained bool
	// TTL, when positive, drops the message (counted and reported) if it is
	// still unsent this long after Publish accepted it. Zero means
	// Config.TTL.
	TTL time.Duration
	// Marker, when not nil, is the application's position for this message
	// (a source offset, at most outbox.MaxMarker bytes), committed with it:
	// after a restart, ResumePoint returns the last one accepted.
	Marker []byte
}

// QoS1 and QoS2 are shorthands for the common options.
var (
	QoS1 = PublishOptions{QoS: 1}
	QoS2 = PublishOptions{QoS: 2}
)

// Receipt tracks one accepted message until the broker acknowledges it.
// Ignoring it is fine and costs nothing: the message is delivered all the
// same, and the client forgets a receipt once the caller dropped it.
type Receipt struct {
	c    *Client // set at creation, read-only; nil for a QoS 0 message sent directly
	slot bool    // PublishAsync: holds a MaxPending slot until committed

	mu       sync.Mutex // guards the fields below
	seq      uint64     // set once durable (at once for Publish)
	done     chan struct{}
	finished bool
	err      error
	// durable is closed once the message is in the outbox as durably as
	// Config.Durability promises, or failed to get there (PublishAsync);
	// nil until asked for.
	durable   chan struct{}
	isDurable bool // durable, or failed: the first stage is over
}

// Seq is the message's sequence number in the outbox (0 for a QoS 0 message
// sent directly, and for a PublishAsync message until it is durable).
// Sequence numbers grow in acceptance order.
func (r *Receipt) Seq() uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.seq
}

// Done is closed once the broker acknowledged the message (PUBACK, PUBCOMP
// for QoS 2; the write to the network for QoS 0), or it was dropped, or it
// failed to become durable (PublishAsync), or the client closed before the
// acknowledgement. A caller that keeps only the channel still gets it
// closed: asking for it makes the client hold the receipt until then.
func (r *Receipt) Done() <-chan struct{} {
	r.mu.Lock()
	if r.done == nil {
		r.done = make(chan struct{})
		if r.finished {
			close(r.done)
		} else if r.c != nil {
			r.mu.Unlock()
			r.c.d.rc.pin(r)
			return r.done
		}
	}
	r.mu.Unlock()
	return r.done
}

// Durable is closed once the message is in the outbox as durably as
// Config.Durability promises - from then on it is delivered whatever
// happens - or failed to get there (Err then says why). For Publish it is
// closed already when Publish returns.
func (r *Receipt) Durable() <-chan struct{} {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.durable == nil {
		r.durable = make(chan struct{})
		if r.isDurable {
			close(r.durable)
		}
	}
	return r.durable
}

// madeDurable ends the first stage: the message got sequence seq, or err.
func (r *Receipt) madeDurable(seq uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.seq, r.isDurable = seq, true
	if r.durable != nil {
		close(r.durable)
	}
}

// Err is nil after an acknowledgement. It wraps ErrDropped for a message
// dropped unsent, and ErrClosed when the client closed first (the message
// then stays in a durable outbox for the next start). Err blocks until Done
// is closed.
func (r *Receipt) Err() error {
	<-r.Done()
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.err
}

// Wait waits for Done or for ctx, and returns Err or the context's error.
func (r *Receipt) Wait(ctx context.Context) error {
	select {
	case <-r.Done():
		return r.Err()
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (r *Receipt) complete(err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.finished {
		return
	}
	r.finished, r.err = true, err
	if !r.isDurable {
		r.isDurable = true // a failed commit ends both stages
		if r.durable != nil {
			close(r.durable)
		}
	}
	if r.done != nil {
		close(r.done)
	}
}

// Publish accepts a message for delivery. A QoS 1 or 2 message is written
// to the outbox, durably as Config.Durability says, before Publish returns
// nil; from then on it is delivered to the broker at least once (QoS 2:
// exactly once), in acceptance order, across disconnects, broker restarts
// and process restarts on the same outbox. Publishing while disconnected,
// before the first connection, or with a backlog larger than 65,535
// messages works the same way.
//
// A QoS 0 message is written to the network when a connection is up; while
// disconnected, Publish returns ErrNotConnected unless Config.QoS0 is
// QoS0Queue.
//
// Errors: the context's error when ctx is already done (nothing accepted);
// ErrInvalidTopic, ErrInvalidQoS, ErrPayloadTooLarge (nothing
// accepted, outbox unchanged); ErrOutboxFull (limit reached with the reject
// policy); ErrNotConnected (QoS 0 only); ErrClosed; the context's error
// (with the block policy, or while waiting for durability: the message may
// then still have been accepted, see Stats); outbox errors such as
// outbox.ErrDiskFull.
func (c *Client) Publish(ctx context.Context, topic string, payload []byte, opts PublishOptions) (*Receipt, error) {
	if err := c.check(ctx, topic, payload, opts); err != nil {
		return nil, err
	}
	if opts.QoS == 0 && c.cfg.QoS0 == QoS0Reject {
		return c.publishQoS0(ctx, topic, payload, opts.Retained)
	}
	rec := newRecord(topic, payload, opts)
	r := &Receipt{c: c}
	durable := r.Durable() // closed by the commit, or by its failure
	if err := c.enqueue(ctx, &rec, r); err != nil {
		return nil, err
	}
	// Once handed to the store, the commit is awaited whatever ctx says
	// (it is bounded: one commit).
	<-durable
	if r.Seq() == 0 {
		return nil, r.Err() // the commit failed: complete has the error
	}
	return r, nil
}

// enqueue hands rec to the outbox for receipt r: r becomes durable (its
// Durable channel closes, Seq is set) and registered before the dispatcher
// can read the record, so its acknowledgement always finds it; or r fails
// (complete with the error). Close waits for calls past its closing check
// (appending), so a message accepted during Close is never left behind.
// The error returned is the call's own (nothing accepted, r untouched).
func (c *Client) enqueue(ctx context.Context, rec *outbox.Record, r *Receipt) error {
	aa, async := c.q.(outbox.AsyncAppender)
	if err := c.d.rc.begin(!async); err != nil {
		return err
	}
	if async {
		// r.committed is the whole callback: one allocation for the
		// method value, none for closures.
		if err := aa.AppendAsync(ctx, rec, r.committed); err != nil {
			c.d.rc.end(r, false, false)
			return c.mapOutboxErr(err)
		}
		return nil
	}
	// A Queue without AsyncAppender: the record may be read and even
	// acknowledged before it is registered (registry.early).
	seq, err := c.q.Append(ctx, rec)
	if err == nil {
		r.madeDurable(seq)
		c.stats.accepted.Add(1)
	}
	c.d.rc.end(r, true, err == nil)
	if err != nil {
		return c.mapOutboxErr(err)
	}
	r.release()
	return nil
}

// committed is the outbox's AppendAsync callback for r's message. It runs
// under the queue's lock as the record becomes visible (or after a failed
// commit), and only takes the registry's and r's locks.
func (r *Receipt) committed(seq uint64, err error) {
	c := r.c
	if err == nil {
		r.madeDurable(seq)
		c.stats.accepted.Add(1)
	}
	c.d.rc.end(r, false, err == nil)
	if err != nil {
		r.complete(c.mapOutboxErr(err))
	}
	r.release()
}

// release gives back a PublishAsync message's MaxPending slot once its
// commit is over.
func (r *Receipt) release() {
	if r.slot {
		<-r.c.pending
	}
}

// check validates a Publish call; nothing is accepted when it fails.
func (c *Client) check(ctx context.Context, topic string, payload []byte, opts PublishOptions) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := checkTopic(topic); err != nil {
		return err
	}
	if opts.QoS > 2 {
		return fmt.Errorf("%w: %d", ErrInvalidQoS, opts.QoS)
	}
	if len(payload) > c.cfg.MaxPayload || len(payload)+len(topic)+4 > maxPacketPayload {
		return fmt.Errorf("%w: %d bytes", ErrPayloadTooLarge, len(payload))
	}
	if opts.TTL < 0 {
		return fmt.Errorf("%w: negative TTL", ErrInvalidConfig)
	}
	if len(opts.Marker) > outbox.MaxMarker {
		return fmt.Errorf("%w: marker of %d bytes (max %d)", ErrInvalidConfig, len(opts.Marker), outbox.MaxMarker)
	}
	if c.closing.Load() {
		return ErrClosed
	}
	return nil
}

func newRecord(topic string, payload []byte, opts PublishOptions) outbox.Record {
	rec := outbox.Record{
		Topic:    topic,
		QoS:      opts.QoS,
		Retained: opts.Retained,
		Payload:  payload,
	}
	if opts.TTL > 0 {
		rec.Expires = time.Now().Add(opts.TTL)
	}
	rec.Marker = opts.Marker
	return rec
}

func (c *Client) mapOutboxErr(err error) error {
	switch {
	case errors.Is(err, outbox.ErrFull):
		return fmt.Errorf("%w: %w", ErrOutboxFull, err)
	case errors.Is(err, outbox.ErrClosed):
		return fmt.Errorf("%w: %w", ErrClosed, err)
	case errors.Is(err, outbox.ErrTooLarge):
		return fmt.Errorf("%w: %w", ErrPayloadTooLarge, err)
	}
	return err
}

// checkTopic validates a topic name for publishing (MQTT 3.1.1, 4.7).
func checkTopic(topic string) error {
	switch {
	case topic == "":
		return fmt.Errorf("%w: empty", ErrInvalidTopic)
	case len(topic) > 65535:
		return fmt.Errorf("%w: %d bytes (max 65535)", ErrInvalidTopic, len(topic))
	case !utf8.ValidString(topic):
		return fmt.Errorf("%w: not valid UTF-8", ErrInvalidTopic)
	case strings.ContainsRune(topic, 0):
		return fmt.Errorf("%w: contains U+0000", ErrInvalidTopic)
	case strings.ContainsAny(topic, "+#"):
		return fmt.Errorf("%w: %q contains a wildcard", ErrInvalidTopic, topic)
	}
	return nil
}

// checkFilter validates a subscription topic filter (MQTT 3.1.1, 4.7.1).
func checkFilter(filter string) error {
	switch {
	case filter == "":
		return fmt.Errorf("%w: empty", ErrInvalidFilter)
	case len(filter) > 65535:
		return fmt.Errorf("%w: %d bytes", ErrInvalidFilter, len(filter))
	case !utf8.ValidString(filter) || strings.ContainsRune(filter, 0):
		return fmt.Errorf("%w: not valid UTF-8", ErrInvalidFilter)
	}
	levels := strings.Split(filter, "/")
	if rest, ok := strings.CutPrefix(filter, "$share/"); ok {
		// A shared subscription: "$share/<group>/<filter>" (MQTT 5.0 section
		// 4.8.2, which Mosquitto and other brokers accept over 3.1.1).
		group, inner, ok := strings.Cut(rest, "/")
		switch {
		case group == "" || strings.ContainsAny(group, "+#"):
			return fmt.Errorf("%w: %q: a shared subscription needs a group name without wildcards", ErrInvalidFilter, filter)
		case !ok || inner == "":
			return fmt.Errorf("%w: %q: a shared subscription needs a filter after its group", ErrInvalidFilter, filter)
		}
		levels = strings.Split(inner, "/")
	}
	for i, l := range levels {
		if strings.Contains(l, "#") && (l != "#" || i != len(levels)-1) {
			return fmt.Errorf("%w: %q: '#' must be a whole last level", ErrInvalidFilter, filter)
		}
		if strings.Contains(l, "+") && l != "+" {
			return fmt.Errorf("%w: %q: '+' must be a whole level", ErrInvalidFilter, filter)
		}
	}
	return nil
}
