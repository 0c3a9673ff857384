package client

import (
	"context"
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
	if opts.QoS == 0 && c.cfg.QoS0 == QoS0Reject {
		return c.publishQoS0(ctx, topic, payload, opts.Retained)
	}
	select {
	case c.pending <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	rec := newRecord(topic, payload, opts)
	r := &Receipt{d: c.d}
	if err := c.enqueue(ctx, &rec, r, func(error) { <-c.pending }); err != nil {
		<-c.pending
		return nil, err
	}
	return r, nil
}
