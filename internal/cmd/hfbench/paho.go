package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
)

// pahoClient connects a bare paho client the way its documentation
// suggests for reliable delivery: a persistent session, the given store,
// no auto-reconnect (nothing is cut during the throughput cases).
func pahoClient(broker, id string, store mqtt.Store) (mqtt.Client, error) {
	opts := mqtt.NewClientOptions().
		AddBroker(broker).
		SetClientID(id).
		SetCleanSession(false).
		SetAutoReconnect(false).
		SetKeepAlive(30 * time.Second).
		SetConnectTimeout(10 * time.Second).
		SetStore(store)
	c := mqtt.NewClient(opts)
	tok := c.Connect()
	if !tok.WaitTimeout(15*time.Second) || tok.Error() != nil {
		c.Disconnect(0)
		return nil, fmt.Errorf("paho connect: %v", tok.Error())
	}
	return c, nil
}

// runPaho measures bare paho: each goroutine publishes its share keeping
// the tokens, then waits for all of them.
func runPaho(ctx context.Context, e *env, spec caseSpec) (CaseResult, error) {
	res := CaseResult{Name: spec.Name, Impl: spec.Impl, QoS: int(spec.QoS), Goroutines: spec.Goroutines, Messages: spec.Messages}
	var store mqtt.Store = mqtt.NewMemoryStore()
	if spec.Impl == implPahoFile {
		dir := e.caseDir(spec.Name)
		defer os.RemoveAll(dir)
		store = mqtt.NewFileStore(dir)
	}
	c, err := pahoClient(e.broker.URL(), e.clientID(spec.Name), store)
	if err != nil {
		return res, err
	}
	defer c.Disconnect(250)
	topic := "bench/" + spec.Name
	err = e.measure(spec, &res, func(msgs [][]byte) (time.Duration, error) {
		return pahoPublishTimed(ctx, c, topic, spec.QoS, spec.Goroutines, msgs)
	})
	return res, err
}

func pahoPublish(ctx context.Context, c mqtt.Client, topic string, qos byte, g int, msgs [][]byte) error {
	_, err := pahoPublishTimed(ctx, c, topic, qos, g, msgs)
	return err
}

// pahoPublishTimed publishes msgs from g goroutines and waits for every
// token; it returns when the last Publish call returned.
func pahoPublishTimed(ctx context.Context, c mqtt.Client, topic string, qos byte, g int, msgs [][]byte) (time.Duration, error) {
	toks := make([][]mqtt.Token, g)
	for w := range toks {
		toks[w] = make([]mqtt.Token, 0, len(msgs)/g+1)
	}
	return drive(g, len(msgs), func(w, i int) error {
		toks[w] = append(toks[w], c.Publish(topic, qos, false, msgs[i]))
		return nil
	}, func(w int) error {
		for _, t := range toks[w] {
			select {
			case <-t.Done():
			case <-ctx.Done():
				return ctx.Err()
			}
			if err := t.Error(); err != nil {
				return fmt.Errorf("paho publish: %w", err)
			}
		}
		return nil
	})
}

// errTimeout is returned when a bounded wait ends.
var errTimeout = errors.New("timed out")
