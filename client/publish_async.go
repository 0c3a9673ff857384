package client

import (
	"context"
	"errors"
	"fmt"

	"github.com/holdfast-mqtt/holdfast/outbox"
)

// PublishAsync accepts a message like Publish, without waiting for it to
// become durable: it validates the message, takes its place in the order
// (the order of the calls, Publish and PublishAsync mixed) and returns. The
// outbox commits it in the background, together with whatever else is
// pending (one commit, one fsync, for many messages), and the receipt
// tells the two stages: Durable (from then on the promise holds: delivered
// at least once, QoS 2 exactly once, in order, across disconnects and
// restarts) and Done (the broker acknowledged it). A message whose commit
// failed completes both with an error (outbox.ErrDiskFull, ...); the
// messages before and after it are not affected.
//
// At most Config.MaxPending messages wait for their commit; past that,
// PublishAsync blocks until one is durable or ctx ends. A message that was
// not yet durable when the process died was never accepted: a producer
// that must not publish twice asks Stats().LastSeq after a restart, or
// keeps its own marker with the payload.
//
// Errors at the call (nothing accepted, outbox unchanged): the context's
// error; ErrInvalidTopic, ErrInvalidQoS, ErrPayloadTooLarge; ErrOutboxFull
// (limit reached with the reject policy); ErrNotConnected (QoS 0 with
// QoS0Reject, as for Publish); ErrClosed.
func (c *Client) PublishAsync(ctx context.Context, topic string, payload []byte, opts PublishOptions) (*Receipt, error) {
	if err := c.check(ctx, topic, payload, opts); err != nil {
		return nil, err
	}
	return c.publishAsync(ctx, topic, payload, opts)
}

// publishAsync is PublishAsync after its checks.
func (c *Client) publishAsync(ctx context.Context, topic string, payload []byte, opts PublishOptions) (*Receipt, error) {
	if opts.QoS == 0 && c.cfg.QoS0 == QoS0Reject {
		return c.publishQoS0(ctx, topic, payload, opts.Retained)
	}
	select {
	case c.pending <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	rec := newRecord(topic, payload, opts)
	r := &Receipt{c: c, slot: true}
	if err := c.enqueue(ctx, &rec, r); err != nil {
		<-c.pending
		return nil, err
	}
	return r, nil
}

// Outgoing is one message of a PublishBatch.
type Outgoing struct {
	Topic   string
	Payload []byte
	Options PublishOptions
}

// PublishBatch accepts msgs in order and returns once all of them are
// durable: the outbox commits them together (one fsync for the batch, or
// a few for a batch larger than a commit). Every message is validated
// before any is handed over, so bad input accepts nothing. receipts[i]
// belongs to msgs[i]; a message whose commit failed has a nil receipt and
// its error is in err (errors.Join of each failure). QoS 0 messages follow
// Config.QoS0 as in Publish.
//
// Errors at the call (nothing accepted): the context's error,
// ErrInvalidTopic, ErrInvalidQoS, ErrPayloadTooLarge (wrapped with the
// index of the first bad message), ErrClosed. Later ones (the messages
// before were accepted): ErrOutboxFull, ErrNotConnected, outbox errors.
func (c *Client) PublishBatch(ctx context.Context, msgs []Outgoing) ([]*Receipt, error) {
	for i, m := range msgs {
		if err := c.check(ctx, m.Topic, m.Payload, m.Options); err != nil {
			return nil, fmt.Errorf("message %d: %w", i, err)
		}
	}
	rs := make([]*Receipt, len(msgs))
	for i, m := range msgs {
		r, err := c.publishAsync(ctx, m.Topic, m.Payload, m.Options)
		if err != nil {
			// The messages before were handed over: report theirs too.
			return rs[:i], errors.Join(fmt.Errorf("message %d: %w", i, err), c.awaitDurable(rs[:i]))
		}
		rs[i] = r
	}
	return rs, c.awaitDurable(rs)
}

// awaitDurable waits until every receipt is durable or failed (a commit is
// bounded, so this does not take ctx), replaces failed ones with nil and
// returns their errors.
func (c *Client) awaitDurable(rs []*Receipt) error {
	var errs []error
	for i, r := range rs {
		if r == nil {
			continue
		}
		<-r.Durable()
		// Seq 0 once durable: the commit failed (or a QoS 0 message went
		// straight to the network, without error).
		if r.Seq() == 0 {
			if err := r.Err(); err != nil {
				errs = append(errs, fmt.Errorf("message %d: %w", i, err))
				rs[i] = nil
			}
		}
	}
	return errors.Join(errs...)
}

// ResumePoint returns the outbox sequence and the PublishOptions.Marker of
// the last message accepted with a marker: durable with that message, kept
// after it was delivered and removed, and across restarts of a durable
// outbox. A producer restarted after a crash asks it, and continues right
// after the marker: it publishes nothing twice and skips nothing accepted.
// It returns 0 and nil when no message carried a marker, or when the
// outbox (Config.Outbox) does not keep one (outbox.Resumer).
func (c *Client) ResumePoint() (seq uint64, marker []byte) {
	if r, ok := c.q.(outbox.Resumer); ok {
		return r.ResumePoint()
	}
	return 0, nil
}
