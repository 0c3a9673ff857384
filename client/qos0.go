package client

import (
	"context"
	"errors"
)

// publishQoS0 writes a QoS 0 message directly when connected. paho reports
// a QoS 0 publish made while reconnecting as a success and drops it; this
// client never does: it returns ErrNotConnected instead.
func (c *Client) publishQoS0(ctx context.Context, topic string, payload []byte, retained bool) (*Receipt, error) {
	if !c.IsConnected() || !c.paho.IsConnectionOpen() {
		return nil, ErrNotConnected
	}
	tok := c.paho.Publish(topic, 0, retained, payload)
	select {
	case <-tok.Done():
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	if err := tok.Error(); err != nil {
		return nil, errors.Join(ErrNotConnected, err)
	}
	r := &Receipt{}
	r.complete(nil)
	c.stats.sent.Add(1)
	return r, nil
}
