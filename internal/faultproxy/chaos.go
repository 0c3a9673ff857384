package faultproxy

import (
	"context"
	"fmt"
	"math/rand/v2"
	"time"
)

// Schedule configures Chaos. The zero value of every field means its
// documented default, so Schedule{Seed: 1} is a valid schedule.
type Schedule struct {
	// Seed makes the sequence of faults reproducible: the same Schedule always
	// yields the same faults (kinds, waits and durations).
	Seed uint64

	// MinInterval and MaxInterval bound the wait before each fault, drawn
	// uniformly; defaults 500ms and 2s. A MaxInterval below MinInterval is
	// raised to it.
	MinInterval, MaxInterval time.Duration

	// CutWeight, OutageWeight and BlackholeWeight are the relative chances of
	// each kind of fault. A zero (or negative) weight disables that kind; if all
	// are zero, the three kinds are equally likely.
	CutWeight, OutageWeight, BlackholeWeight int

	// MinOutage and MaxOutage bound the length of an outage; defaults 200ms
	// and 1s.
	MinOutage, MaxOutage time.Duration

	// MinBlackhole and MaxBlackhole bound the length of a black hole; defaults
	// 200ms and 1s.
	MinBlackhole, MaxBlackhole time.Duration

	// OnFault, when set, is called from the Chaos goroutine just before each
	// fault is applied. It must be fast and must not call Close.
	OnFault func(Fault)
}

// FaultKind is the kind of a fault injected by Chaos.
type FaultKind int

// The kinds of fault.
const (
	FaultCut       FaultKind = iota // Cut: reset live connections
	FaultOutage                     // Outage: cut, then refuse new connections for Duration
	FaultBlackhole                  // SetBlackhole for Duration
)

// String returns "cut", "outage" or "blackhole".
func (k FaultKind) String() string {
	switch k {
	case FaultCut:
		return "cut"
	case FaultOutage:
		return "outage"
	case FaultBlackhole:
		return "blackhole"
	default:
		return fmt.Sprintf("FaultKind(%d)", int(k))
	}
}

// Fault is one fault in a Chaos sequence.
type Fault struct {
	Kind     FaultKind
	Wait     time.Duration // wait before the fault, after the previous one ended
	Duration time.Duration // how long an outage or black hole lasts; 0 for a cut
}

// String describes the fault, e.g. "outage 350ms after 1.2s".
func (f Fault) String() string {
	if f.Kind == FaultCut {
		return fmt.Sprintf("cut after %v", f.Wait)
	}
	return fmt.Sprintf("%v %v after %v", f.Kind, f.Duration, f.Wait)
}

// Faults returns the first n faults that Chaos would inject with s, in order.
// It is deterministic: the same Schedule always returns the same faults.
func (s Schedule) Faults(n int) []Fault {
	g := newFaultGen(s)
	out := make([]Fault, n)
	for i := range out {
		out[i] = g.next()
	}
	return out
}

// withDefaults returns s with defaults filled in and bounds made consistent.
func (s Schedule) withDefaults() Schedule {
	span := func(lo, hi *time.Duration, dlo, dhi time.Duration) {
		if *lo <= 0 {
			*lo = dlo
		}
		if *hi <= 0 {
			*hi = dhi
		}
		if *hi < *lo {
			*hi = *lo
		}
	}
	span(&s.MinInterval, &s.MaxInterval, 500*time.Millisecond, 2*time.Second)
	span(&s.MinOutage, &s.MaxOutage, 200*time.Millisecond, time.Second)
	span(&s.MinBlackhole, &s.MaxBlackhole, 200*time.Millisecond, time.Second)
	s.CutWeight = max(s.CutWeight, 0)
	s.OutageWeight = max(s.OutageWeight, 0)
	s.BlackholeWeight = max(s.BlackholeWeight, 0)
	if s.CutWeight+s.OutageWeight+s.BlackholeWeight == 0 {
		s.CutWeight, s.OutageWeight, s.BlackholeWeight = 1, 1, 1
	}
	return s
}

// faultGen draws faults from a seeded generator.
type faultGen struct {
	s   Schedule
	rng *rand.Rand
}

func newFaultGen(s Schedule) *faultGen {
	s = s.withDefaults()
	return &faultGen{s: s, rng: rand.New(rand.NewPCG(s.Seed, s.Seed^0x9e3779b97f4a7c15))}
}

func (g *faultGen) between(lo, hi time.Duration) time.Duration {
	if hi <= lo {
		return lo
	}
	return lo + time.Duration(g.rng.Int64N(int64(hi-lo)+1))
}

func (g *faultGen) next() Fault {
	s := g.s
	f := Fault{Wait: g.between(s.MinInterval, s.MaxInterval)}
	switch r := g.rng.IntN(s.CutWeight + s.OutageWeight + s.BlackholeWeight); {
	case r < s.CutWeight:
		f.Kind = FaultCut
	case r < s.CutWeight+s.OutageWeight:
		f.Kind = FaultOutage
		f.Duration = g.between(s.MinOutage, s.MaxOutage)
	default:
		f.Kind = FaultBlackhole
		f.Duration = g.between(s.MinBlackhole, s.MaxBlackhole)
	}
	return f
}

// Chaos injects faults drawn from s until ctx is done or the Proxy is closed.
// It does not block: the faults run on a goroutine owned by the Proxy, which
// Close stops and waits for. When it stops during an outage or black hole it
// ends that fault first, so the Proxy is left forwarding. Each fault is
// counted in Stats.Faults. Calling Chaos on a closed Proxy does nothing.
func (p *Proxy) Chaos(ctx context.Context, s Schedule) {
	g := newFaultGen(s)
	p.mu.Lock()
	defer p.mu.Unlock()
	p.goLocked(func() { p.runChaos(ctx, g) })
}

func (p *Proxy) runChaos(ctx context.Context, g *faultGen) {
	// sleep waits for d, and reports false once ctx is done or the Proxy closed.
	sleep := func(d time.Duration) bool {
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-t.C:
			return true
		case <-ctx.Done():
			return false
		case <-p.ctx.Done():
			return false
		}
	}
	for {
		f := g.next()
		if !sleep(f.Wait) {
			return
		}
		p.stats.faults.Add(1)
		if g.s.OnFault != nil {
			g.s.OnFault(f)
		}
		switch f.Kind {
		case FaultCut:
			p.Cut()
		case FaultOutage:
			p.SetRefuse(true)
			ok := sleep(f.Duration)
			p.SetRefuse(false)
			if !ok {
				return
			}
		case FaultBlackhole:
			p.SetBlackhole(true)
			ok := sleep(f.Duration)
			p.SetBlackhole(false)
			if !ok {
				return
			}
		}
	}
}
