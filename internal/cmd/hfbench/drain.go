package main

import (
	"context"
	"encoding/binary"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/holdfast-mqtt/holdfast/client"
	"github.com/holdfast-mqtt/holdfast/reconnect"
)

// Drain is the backlog drain case: two drains of the same size, one alone
// (the throughput figure) and one with a subscriber checking the order.
type Drain struct {
	Messages int `json:"messages"`
	// BuildSeconds is how long 16 goroutines took to publish the backlog
	// while the broker was down (the append rate, default durability).
	BuildSeconds float64 `json:"build_seconds"`
	BuildPerSec  float64 `json:"build_msg_per_s"`
	// Seconds from the connection coming up to Flush returning, without a
	// subscriber.
	Seconds   float64 `json:"seconds"`
	MsgPerSec float64 `json:"msg_per_s"`
	// TotalSeconds from the broker accepting connections again to Flush
	// returning (includes the rest of the backoff wait and connecting).
	TotalSeconds float64 `json:"total_seconds"`
	ClientCPU    float64 `json:"client_cpu_s"`
	BrokerCPU    float64 `json:"broker_cpu_s"`
	OtherCPU     float64 `json:"other_cpu_s"`
	// The second drain, with a QoS 1 subscriber on the broker (its own
	// session survives the broker's restart): its rate, and what the
	// subscriber saw.
	SubMsgPerSec float64 `json:"with_subscriber_msg_per_s"`
	Received     int     `json:"received"`
	Duplicates   int     `json:"duplicates"`
	Lost         int     `json:"lost"`
	Reordered    int     `json:"reordered"`
	InOrder      bool    `json:"in_order"`
	// Reference is bare paho publishing live with the same subscriber
	// (paho-mem-sub-q1-g1); RatioRef is SubMsgPerSec / its rate.
	Reference []CaseResult `json:"-"`
	RefPerSec float64      `json:"reference_msg_per_s"`
	RatioRef  float64      `json:"ratio_reference"`
	// RatioMem is MsgPerSec / paho-mem-q1-g1 (live, no subscriber).
	RatioMem float64 `json:"ratio_paho_mem_g1"`
}

// orderSub is a bare paho subscriber (QoS 1) that records the order in
// which the first copy of each message (by the sequence number in its
// payload, 1..want) arrives, and counts duplicates. With a persistent
// session it reconnects on its own and the broker queues for it meanwhile.
type orderSub struct {
	c    mqtt.Client
	want uint64

	mu     sync.Mutex // guards the fields below
	seen   []bool
	firsts []uint64 // payload sequence numbers of first copies, in arrival order
	dups   int
	done   chan struct{}
}

func startOrderSub(broker, id, topic string, want int, persistent bool) (*orderSub, error) {
	s := &orderSub{want: uint64(want), seen: make([]bool, want+1), firsts: make([]uint64, 0, want), done: make(chan struct{})}
	opts := mqtt.NewClientOptions().AddBroker(broker).SetClientID(id).SetCleanSession(!persistent).
		SetOrderMatters(true).SetKeepAlive(30 * time.Second)
	if persistent {
		opts.SetAutoReconnect(true).SetMaxReconnectInterval(100 * time.Millisecond).SetConnectRetry(true).
			SetConnectRetryInterval(100 * time.Millisecond)
	} else {
		opts.SetAutoReconnect(false)
	}
	s.c = mqtt.NewClient(opts)
	if tok := s.c.Connect(); !tok.WaitTimeout(15*time.Second) || tok.Error() != nil {
		s.c.Disconnect(0)
		return nil, fmt.Errorf("subscriber connect: %v", tok.Error())
	}
	if tok := s.c.Subscribe(topic, 1, s.handle); !tok.WaitTimeout(15*time.Second) || tok.Error() != nil {
		s.c.Disconnect(0)
		return nil, fmt.Errorf("subscribe: %v", tok.Error())
	}
	// Route the session's messages after a reconnect too.
	s.c.AddRoute(topic, s.handle)
	return s, nil
}

func (s *orderSub) handle(_ mqtt.Client, m mqtt.Message) {
	p := m.Payload()
	if len(p) < 8 {
		return
	}
	seq := binary.BigEndian.Uint64(p)
	s.mu.Lock()
	defer s.mu.Unlock()
	if seq == 0 || seq > s.want {
		return // warm-up or foreign
	}
	if s.seen[seq] {
		s.dups++
		return
	}
	s.seen[seq] = true
	s.firsts = append(s.firsts, seq)
	if len(s.firsts) == int(s.want) {
		close(s.done)
	}
}

// wait waits until every message arrived or timeout passes.
func (s *orderSub) wait(ctx context.Context, timeout time.Duration) error {
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-s.done:
		return nil
	case <-t.C:
		return errTimeout
	case <-ctx.Done():
		return ctx.Err()
	}
}

// report counts first copies and duplicates, and the first copies that
// arrived after a first copy that the publisher accepted later: rank maps a
// payload sequence number to its acceptance order (nil: the payload order).
func (s *orderSub) report(rank []uint64) (firsts, dups, reordered int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var top uint64
	for _, seq := range s.firsts {
		r := seq
		if rank != nil {
			r = rank[seq]
		}
		if r < top {
			reordered++
		}
		top = max(top, r)
	}
	return len(s.firsts), s.dups, reordered
}

func (s *orderSub) close() { s.c.Disconnect(100) }

// runDrain measures how fast Holdfast drains a backlog built while the
// broker was down, once it is back: first alone, then with a subscriber
// that checks the order; and bare paho live with the same subscriber.
func runDrain(ctx context.Context, e *env) (*Drain, error) {
	n := e.cfg.backlog
	d := &Drain{Messages: n}

	ref, err := runPahoSub(ctx, e, min(n, e.cfg.n))
	if err != nil {
		return nil, fmt.Errorf("reference: %w", err)
	}
	d.Reference = []CaseResult{ref}
	d.RefPerSec = ref.MsgPerSec

	alone, err := drainOnce(ctx, e, n, false)
	if err != nil {
		return nil, err
	}
	d.BuildSeconds, d.BuildPerSec = alone.build.Seconds(), perSecond(n, alone.build)
	d.Seconds, d.MsgPerSec, d.TotalSeconds = alone.drain.Seconds(), perSecond(n, alone.drain), alone.total.Seconds()
	d.ClientCPU, d.BrokerCPU, d.OtherCPU = alone.cpu.ClientCPU, alone.cpu.BrokerCPU, alone.cpu.OtherCPU
	e.logf("drain: %d in %.2fs (%.0f msg/s) after the connection came up; backlog built at %.0f msg/s", n, d.Seconds, d.MsgPerSec, d.BuildPerSec)

	sub, err := drainOnce(ctx, e, n, true)
	if err != nil {
		return nil, err
	}
	d.SubMsgPerSec = perSecond(n, sub.drain)
	d.Received, d.Duplicates, d.Reordered, d.Lost = sub.firsts, sub.dups, sub.reordered, n-sub.firsts
	d.InOrder = sub.complete && sub.reordered == 0 && sub.firsts == n
	if d.RefPerSec > 0 {
		d.RatioRef = d.SubMsgPerSec / d.RefPerSec
	}
	e.logf("drain with a subscriber: %.0f msg/s; %d received, %d reordered, %d duplicates", d.SubMsgPerSec, d.Received, d.Reordered, d.Duplicates)
	return d, nil
}

// drained is one drain's outcome.
type drained struct {
	build, drain, total     time.Duration
	cpu                     CaseResult
	firsts, dups, reordered int
	complete                bool
}

// drainOnce stops the broker, publishes n messages from 16 goroutines into
// a new Holdfast client, starts the broker and waits until the client's
// outbox is empty. With withSub, a persistent subscriber (whose session the
// broker saves when it stops) checks that everything arrived in order.
func drainOnce(ctx context.Context, e *env, n int, withSub bool) (drained, error) {
	var out drained
	name := "drain"
	if withSub {
		name = "drain-sub"
	}
	topic := "bench/" + name
	var sub *orderSub
	if withSub {
		var err error
		if sub, err = startOrderSub(e.broker.URL(), e.clientID(name+"-s"), topic, n, true); err != nil {
			return out, err
		}
		defer sub.close()
	}
	if err := e.broker.Stop(); err != nil {
		return out, fmt.Errorf("stopping the broker: %w", err)
	}
	restarted := false
	defer func() {
		if !restarted {
			_ = e.broker.Start()
		}
	}()

	dir := e.caseDir(name)
	defer os.RemoveAll(dir)
	var connected atomic.Int64 // unix nanos of the first Connected event
	c, err := client.New(client.Config{
		MaxPayload: e.cfg.maxPayload,
		Brokers:    []string{e.broker.URL()},
		ClientID:   e.clientID(name),
		OutboxDir:  dir,
		// Short backoff: this case measures the drain, not the wait (the
		// reconnect case measures that).
		Backoff: reconnect.Policy{InitialInterval: 20 * time.Millisecond, MaxInterval: 100 * time.Millisecond},
		Hooks: client.Hooks{OnConnection: func(ev reconnect.Event) {
			if ev.State == reconnect.Connected {
				connected.CompareAndSwap(0, ev.At.UnixNano())
			}
		}},
	})
	if err != nil {
		return out, err
	}
	defer closeClient(c)

	e.logf("%s: building a backlog of %d while the broker is down", name, n)
	msgs := e.payloads(1, n)
	// rank[i] is the outbox sequence (acceptance order) of the message whose
	// payload says i: with 16 publishers it differs from the payload order.
	rank := make([]uint64, n+1)
	start := time.Now()
	if _, err := drive(16, n, func(_, i int) error {
		r, err := c.Publish(ctx, topic, msgs[i], client.QoS1)
		if err == nil {
			rank[i+1] = r.Seq()
		}
		return err
	}, nil); err != nil {
		return out, fmt.Errorf("building the backlog: %w", err)
	}
	out.build = time.Since(start)
	if q := c.Stats().Queued; q != n {
		return out, fmt.Errorf("backlog holds %d messages, want %d", q, n)
	}
	msgs = nil

	m := e.startMeter(name)
	if err := e.broker.Start(); err != nil {
		return out, fmt.Errorf("restarting the broker: %w", err)
	}
	restarted = true
	back := time.Now()
	m.restarted(e.broker.Pid()) // a new broker process: count its CPU from its start
	fctx, cancel := context.WithTimeout(ctx, flushTimeout)
	err = c.Flush(fctx)
	cancel()
	end := time.Now()
	m.stop(&out.cpu, n)
	if err != nil {
		return out, fmt.Errorf("flush: %w (stats %+v)", err, c.Stats())
	}
	up := time.Unix(0, connected.Load())
	if up.Before(back) {
		up = back
	}
	out.drain, out.total = end.Sub(up), end.Sub(back)
	if withSub {
		werr := sub.wait(ctx, 2*time.Minute)
		out.firsts, out.dups, out.reordered = sub.report(rank)
		out.complete = werr == nil
	}
	return out, nil
}

// runPahoSub is the drain's like-for-like reference: bare paho (memory
// store, QoS 1, one goroutine) publishing n messages live while the order
// subscriber receives them.
func runPahoSub(ctx context.Context, e *env, n int) (CaseResult, error) {
	name := "paho-mem-sub-q1-g1"
	res := CaseResult{Name: name, Impl: implPahoMem, QoS: 1, Goroutines: 1, Messages: n,
		Note: "with a QoS 1 subscriber (the drain's like-for-like reference)"}
	topic := "bench/" + name
	sub, err := startOrderSub(e.broker.URL(), e.clientID(name+"-s"), topic, n, false)
	if err != nil {
		return res, err
	}
	defer sub.close()
	c, err := pahoClient(e.broker.URL(), e.clientID(name), mqtt.NewMemoryStore())
	if err != nil {
		return res, err
	}
	defer c.Disconnect(250)
	if err := pahoPublish(ctx, c, topic, 1, 1, e.payloads(0, warmup(n))); err != nil {
		return res, err
	}
	msgs := e.payloads(1, n)
	m := e.startMeter(name)
	start := time.Now()
	pub, err := pahoPublishTimed(ctx, c, topic, 1, 1, msgs)
	elapsed := time.Since(start)
	m.stop(&res, n)
	if err != nil {
		return res, err
	}
	res.Seconds, res.PublishSeconds, res.MsgPerSec = elapsed.Seconds(), pub.Seconds(), perSecond(n, elapsed)
	werr := sub.wait(ctx, time.Minute)
	if _, _, reordered := sub.report(nil); reordered > 0 {
		res.Note += fmt.Sprintf("; %d reordered", reordered)
	}
	if werr != nil {
		firsts, _, _ := sub.report(nil)
		res.Note += fmt.Sprintf("; subscriber got %d of %d", firsts, n)
	}
	return res, nil
}
