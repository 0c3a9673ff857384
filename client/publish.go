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
	seq uint64

	mu       sync.Mutex // guards the fields below
	done     chan struct{}
	finished bool
	err      error
}

// Seq is the message's sequence number in the outbox (0 for a QoS 0 message
// sent directly). Sequence numbers grow in acceptance order.
func (r *Receipt) Seq() uint64 { return r.seq }

// Done is closed once the broker acknowledged the message (PUBACK, PUBCOMP
// for QoS 2; the write to the network for QoS 0), or it was dropped, or the
// client closed before the acknowledgement.
func (r *Receipt) Done() <-chan struct{} {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.done == nil {
		r.done = make(chan struct{})
		if r.finished {
			close(r.done)
		}
	}
	return r.done
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
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := checkTopic(topic); err != nil {
		return nil, err
	}
	if opts.QoS > 2 {
		return nil, fmt.Errorf("%w: %d", ErrInvalidQoS, opts.QoS)
	}
	if len(payload) > c.cfg.MaxPayload || len(payload)+len(topic)+4 > maxPacketPayload {
		return nil, fmt.Errorf("%w: %d bytes", ErrPayloadTooLarge, len(payload))
	}
	if opts.TTL < 0 {
		return nil, fmt.Errorf("%w: negative TTL", ErrInvalidConfig)
	}
	if c.closing.Load() {
		return nil, ErrClosed
	}
	if opts.QoS == 0 && c.cfg.QoS0 == QoS0Reject {
		return c.publishQoS0(ctx, topic, payload, opts.Retained)
	}
	rec := outbox.Record{
		Topic:    topic,
		QoS:      opts.QoS,
		Retained: opts.Retained,
		Payload:  payload,
	}
	if opts.TTL > 0 {
		rec.Expires = time.Now().Add(opts.TTL)
	}
	// The receipt is registered under the dispatcher's lock before the
	// record can be read, so an acknowledgement always finds it.
	// Close waits for calls past this check (appending), so a message it
	// accepts is never left behind by Close.
	c.d.mu.Lock()
	if c.closing.Load() {
		c.d.mu.Unlock()
		return nil, ErrClosed
	}
	c.d.appending++
	c.d.mu.Unlock()
	seq, err := c.q.Append(ctx, &rec)
	var r *Receipt
	if err == nil {
		r = &Receipt{seq: seq}
	}
	c.d.mu.Lock()
	c.d.appending--
	if err == nil {
		c.d.trackLocked(r)
	}
	if c.d.appending == 0 {
		c.d.broadcastLocked() // Flush and Close wait for appending to end
	}
	c.d.mu.Unlock()
	if err != nil {
		return nil, c.mapOutboxErr(err)
	}
	c.stats.accepted.Add(1)
	return r, nil
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
