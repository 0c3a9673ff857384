package main

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/holdfast-mqtt/holdfast/client"
)

// closeTimeout bounds a client's Close at the end of a case; flushTimeout
// the wait for the acknowledgements of a case's messages.
const (
	closeTimeout = 30 * time.Second
	flushTimeout = 2 * time.Minute
)

// runHoldfast measures Holdfast: each goroutine publishes its share
// (Publish returns once the message is durable as the mode says), then
// Flush waits until the broker acknowledged everything.
func runHoldfast(ctx context.Context, e *env, spec caseSpec) (CaseResult, error) {
	res := CaseResult{Name: spec.Name, Impl: spec.Impl, QoS: int(spec.QoS), Durability: durabilityName(spec.Durability),
		Goroutines: spec.Goroutines, Messages: spec.Messages}
	dir := e.caseDir(spec.Name)
	defer os.RemoveAll(dir)
	c, err := client.New(client.Config{
		MaxPayload: e.cfg.maxPayload,
		Brokers:    []string{e.broker.URL()},
		ClientID:   e.clientID(spec.Name),
		OutboxDir:  dir,
		Durability: spec.Durability,
	})
	if err != nil {
		return res, err
	}
	defer closeClient(c)
	actx, cancel := context.WithTimeout(ctx, 15*time.Second)
	err = c.AwaitConnected(actx)
	cancel()
	if err != nil {
		return res, fmt.Errorf("connect: %w", err)
	}
	topic := "bench/" + spec.Name
	opts := client.PublishOptions{QoS: spec.QoS}
	if err := e.measure(spec, &res, func(msgs [][]byte) (time.Duration, error) {
		if spec.Adapter {
			return pahoPublishTimed(ctx, c.Paho(), topic, spec.QoS, spec.Goroutines, msgs)
		}
		return hfPublish(ctx, c, topic, opts, spec.Goroutines, spec.Async, msgs)
	}); err != nil {
		return res, err
	}
	if st := c.Stats(); st.Resent > 0 || st.Reconnects > 0 {
		res.Note = fmt.Sprintf("%d resent, %d reconnects", st.Resent, st.Reconnects)
	}
	return res, nil
}

// hfPublish publishes msgs from g goroutines, ignoring the receipts as most
// callers do, then flushes. It returns when the last Publish returned.
func hfPublish(ctx context.Context, c *client.Client, topic string, opts client.PublishOptions, g int, async bool, msgs [][]byte) (time.Duration, error) {
	publish := c.Publish
	if async {
		publish = c.PublishAsync
	}
	pub, err := drive(g, len(msgs), func(_, i int) error {
		_, err := publish(ctx, topic, msgs[i], opts)
		return err
	}, nil)
	if err != nil {
		return pub, fmt.Errorf("publish: %w", err)
	}
	fctx, cancel := context.WithTimeout(ctx, flushTimeout)
	defer cancel()
	if err := c.Flush(fctx); err != nil {
		return pub, fmt.Errorf("flush: %w (stats %+v)", err, c.Stats())
	}
	return pub, nil
}

func closeClient(c *client.Client) error {
	ctx, cancel := context.WithTimeout(context.Background(), closeTimeout)
	defer cancel()
	return c.Close(ctx)
}
