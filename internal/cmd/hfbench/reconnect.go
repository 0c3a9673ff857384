package main

import (
	"context"
	"fmt"
	"os"
	"slices"
	"time"

	"github.com/holdfast-mqtt/holdfast/client"
	"github.com/holdfast-mqtt/holdfast/internal/faultproxy"
	"github.com/holdfast-mqtt/holdfast/reconnect"
)

// Reconnect is the reconnect-to-first-delivery case.
type Reconnect struct {
	Trials []ReconnectTrial `json:"trials"`
	// WorstOverMs is the largest latency minus backoff interval, in ms
	// (the target is <= 100).
	WorstOverMs float64 `json:"worst_latency_minus_interval_ms"`
	// MedianOverheadMs is the median time from the end of the backoff wait
	// (or the broker's return, if later) to the acknowledgement.
	MedianOverheadMs float64 `json:"median_overhead_ms"`
	Pass             bool    `json:"pass"`
}

// ReconnectTrial is one trial.
type ReconnectTrial struct {
	// IntervalMs is the supervisor's current backoff interval (the Delay of
	// the last Disconnected event before the broker returned).
	IntervalMs float64 `json:"interval_ms"`
	// ReturnAtMs is when the broker returned, after the start of that wait.
	ReturnAtMs float64 `json:"return_at_ms"`
	// LatencyMs is from the broker's return to the acknowledgement of the
	// message queued while it was away.
	LatencyMs float64 `json:"latency_ms"`
	// OverheadMs is from max(return, end of the wait) to the acknowledgement:
	// the cost of connecting and delivering.
	OverheadMs float64 `json:"overhead_ms"`
	Pass       bool    `json:"pass"`
}

// reconnectSlack is the target's allowance over the backoff interval.
const reconnectSlack = 100 * time.Millisecond

// runReconnect measures reconnect-to-first-delivery with the default
// backoff policy (250ms initial, x2, jitter 0.5), except StableAfter, so
// that every trial starts from the initial interval.
func runReconnect(ctx context.Context, e *env) (*Reconnect, error) {
	proxy, err := faultproxy.New(e.broker.Addr())
	if err != nil {
		return nil, err
	}
	defer proxy.Close()
	dir := e.caseDir("reconnect")
	defer os.RemoveAll(dir)
	events := make(chan reconnect.Event, 256)
	const stable = 300 * time.Millisecond
	c, err := client.New(client.Config{
		MaxPayload: e.cfg.maxPayload,
		Brokers:    []string{proxy.URL()},
		ClientID:   e.clientID("reconnect"),
		OutboxDir:  dir,
		Backoff:    reconnect.Policy{StableAfter: stable},
		Hooks: client.Hooks{OnConnection: func(ev reconnect.Event) {
			select {
			case events <- ev:
			default:
			}
		}},
	})
	if err != nil {
		return nil, err
	}
	defer closeClient(c)
	next := func(timeout time.Duration, ok func(reconnect.Event) bool) (reconnect.Event, error) {
		t := time.NewTimer(timeout)
		defer t.Stop()
		for {
			select {
			case ev := <-events:
				if ok(ev) {
					return ev, nil
				}
			case <-t.C:
				return reconnect.Event{}, errTimeout
			case <-ctx.Done():
				return reconnect.Event{}, ctx.Err()
			}
		}
	}
	isUp := func(ev reconnect.Event) bool { return ev.State == reconnect.Connected }
	if _, err := next(15*time.Second, isUp); err != nil {
		return nil, fmt.Errorf("first connection: %w", err)
	}
	res := &Reconnect{Pass: true}
	var overheads []float64
	payload := e.payloads(1, 1)[0]
	for i := range e.cfg.reconnectTrials {
		// Let the connection count as stable, so the backoff starts over.
		if err := sleep(ctx, stable+100*time.Millisecond); err != nil {
			return nil, err
		}
		proxy.SetRefuse(true)
		// Wait for the third failed attempt: its Delay is the third
		// interval of the policy (about 1s, randomised by the jitter).
		last, err := next(30*time.Second, func(ev reconnect.Event) bool {
			return ev.State == reconnect.Disconnected && ev.Attempt >= 3
		})
		if err != nil {
			return nil, fmt.Errorf("trial %d: waiting for backoff: %w", i, err)
		}
		r, err := c.Publish(ctx, "bench/reconnect", payload, client.QoS1)
		if err != nil {
			return nil, err
		}
		frac := (float64(i) + 0.5) / float64(e.cfg.reconnectTrials) // spread over the wait
		backAt := last.At.Add(time.Duration(frac * float64(last.Delay)))
		if err := sleep(ctx, time.Until(backAt)); err != nil {
			return nil, err
		}
		back := time.Now()
		proxy.SetRefuse(false)
		wctx, cancel := context.WithTimeout(ctx, last.Delay+30*time.Second)
		err = r.Wait(wctx)
		cancel()
		acked := time.Now()
		if err != nil {
			return nil, fmt.Errorf("trial %d: waiting for the acknowledgement: %w", i, err)
		}
		waitEnd := last.At.Add(last.Delay)
		from := back
		if waitEnd.After(from) {
			from = waitEnd
		}
		t := ReconnectTrial{
			IntervalMs: ms(last.Delay),
			ReturnAtMs: ms(back.Sub(last.At)),
			LatencyMs:  ms(acked.Sub(back)),
			OverheadMs: ms(acked.Sub(from)),
		}
		t.Pass = acked.Sub(back) <= last.Delay+reconnectSlack
		res.Pass = res.Pass && t.Pass
		if over := t.LatencyMs - t.IntervalMs; i == 0 || over > res.WorstOverMs {
			res.WorstOverMs = over
		}
		overheads = append(overheads, t.OverheadMs)
		res.Trials = append(res.Trials, t)
		e.logf("reconnect trial %d: interval %.0fms, broker back at +%.0fms, acknowledged %.1fms later (overhead %.1fms)",
			i, t.IntervalMs, t.ReturnAtMs, t.LatencyMs, t.OverheadMs)
		if _, err := next(10*time.Second, isUp); err != nil {
			return nil, fmt.Errorf("trial %d: not connected again: %w", i, err)
		}
	}
	res.MedianOverheadMs = median(overheads)
	return res, nil
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// sleep waits d or until ctx ends.
func sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	return s[len(s)/2]
}
