package main

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/holdfast-mqtt/holdfast/internal/faultproxy"
)

// restartable is a broker the demo can restart: the embedded one.
type restartable interface {
	Stop() error
	Start() error
}

// driver applies a plan: the network faults through the proxy, broker
// restarts, and kills of the publishers.
type driver struct {
	proxy  *faultproxy.Proxy
	broker restartable // nil for an external broker: restarts are skipped
	subUp  func() bool // reports whether the subscriber is connected
	lanes  []*lane
	pr     *printer
	start  time.Time

	applied map[kind]int // only touched by the driver's goroutine until run returns
	skipped []string
}

// action is one step of the plan: a fault starting, or a lasting one ending.
type action struct {
	at  time.Duration
	e   event
	end bool
}

// run applies evs at their offsets from d.start until they are all done or
// ctx ends. Whatever is in progress when it returns (a black hole, the
// broker down) is ended first: the proxy forwards and the broker runs.
func (d *driver) run(ctx context.Context, evs []event) {
	var acts []action
	for _, e := range evs {
		acts = append(acts, action{at: e.at, e: e})
		if e.kind == kindBlackhole || e.kind == kindRestart {
			acts = append(acts, action{at: e.at + e.dur, e: e, end: true})
		}
	}
	slices.SortStableFunc(acts, func(a, b action) int { return cmp.Compare(a.at, b.at) })

	brokerDown, blackhole := false, false
	defer func() {
		if blackhole {
			d.proxy.SetBlackhole(false)
		}
		d.proxy.SetRefuse(false) // ends an outage in progress
		if brokerDown {
			if err := d.broker.Start(); err != nil {
				d.pr.event(fmt.Sprintf("broker restart failed: %v", err))
			}
		}
	}()
	timer := time.NewTimer(0)
	defer timer.Stop()
	<-timer.C
	for i, a := range acts {
		timer.Reset(time.Until(d.start.Add(a.at)))
		select {
		case <-timer.C:
		case <-ctx.Done():
			if n := countStarts(acts[i:]); n > 0 {
				d.skipped = append(d.skipped, plural(n, "planned fault")+" not applied: the run ended first")
			}
			return
		}
		at := fmt.Sprintf("%5.1fs  ", time.Since(d.start).Seconds())
		switch e := a.e; {
		case e.kind == kindCut:
			d.proxy.Cut()
			d.pr.event(at + "cut: every connection through the proxy reset")
		case e.kind == kindOutage:
			d.proxy.Outage(e.dur)
			d.pr.event(at + fmt.Sprintf("outage %.1fs: connections cut, new ones refused", e.dur.Seconds()))
		case e.kind == kindBlackhole && !a.end:
			d.proxy.SetBlackhole(true)
			blackhole = true
			d.pr.event(at + fmt.Sprintf("black hole %.1fs: the link passes nothing, only keepalives notice", e.dur.Seconds()))
		case e.kind == kindBlackhole:
			d.proxy.SetBlackhole(false)
			blackhole = false
			continue // not a fault of its own
		case e.kind == kindRestart && d.broker == nil:
			if !a.end {
				d.skipped = append(d.skipped, "broker restarts skipped: the demo cannot restart an external broker")
			}
			continue
		case e.kind == kindRestart && !a.end:
			// The proxy refuses the publishers until the subscriber is
			// back, so that what they send is not queued for it meanwhile:
			// the broker resends such a queue out of order.
			d.proxy.SetRefuse(true)
			if err := d.broker.Stop(); err != nil {
				d.pr.event(at + fmt.Sprintf("broker stop: %v", err))
			}
			brokerDown = true
			d.pr.event(at + fmt.Sprintf("broker restart: closed gracefully, back after %.1fs on the same port and state", e.dur.Seconds()))
		case e.kind == kindRestart:
			if err := d.broker.Start(); err != nil {
				d.pr.event(at + fmt.Sprintf("broker restart failed: %v", err))
				continue
			}
			brokerDown = false
			d.awaitSubscriber(ctx)
			d.proxy.SetRefuse(false)
			continue
		case e.kind == kindKill:
			var killed []string
			for _, l := range d.lanes {
				if l.kill() {
					killed = append(killed, l.name)
				}
			}
			if len(killed) == 0 {
				d.pr.event(at + "kill: no publisher running")
				continue
			}
			d.pr.event(at + "kill: SIGKILL " + strings.Join(killed, " and ") + "; started again at once on the same directory")
		}
		d.applied[a.e.kind]++
	}
}

// subscriberWait bounds the wait for the subscriber after a broker restart.
const subscriberWait = 10 * time.Second

// awaitSubscriber waits until the subscriber is connected, for at most
// subscriberWait or until ctx ends.
func (d *driver) awaitSubscriber(ctx context.Context) {
	bound := time.NewTimer(subscriberWait)
	defer bound.Stop()
	poll := time.NewTicker(20 * time.Millisecond)
	defer poll.Stop()
	for !d.subUp() {
		select {
		case <-poll.C:
		case <-bound.C:
			d.pr.event("the subscriber is not back after the broker restart; letting the publishers in")
			return
		case <-ctx.Done():
			return
		}
	}
}

// countStarts counts the faults (not ends) among acts.
func countStarts(acts []action) int {
	n := 0
	for _, a := range acts {
		if !a.end {
			n++
		}
	}
	return n
}
