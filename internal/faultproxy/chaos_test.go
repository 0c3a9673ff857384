package faultproxy

import (
	"context"
	"reflect"
	"sync"
	"testing"
	"time"
)

func TestScheduleFaultsAreDeterministic(t *testing.T) {
	s := Schedule{Seed: 42}
	a, b := s.Faults(50), s.Faults(50)
	if !reflect.DeepEqual(a, b) {
		t.Fatal("the same schedule produced different faults")
	}
	if reflect.DeepEqual(a, Schedule{Seed: 43}.Faults(50)) {
		t.Fatal("different seeds produced the same faults")
	}
	kinds := map[FaultKind]int{}
	d := s.withDefaults()
	for _, f := range a {
		kinds[f.Kind]++
		if f.Wait < d.MinInterval || f.Wait > d.MaxInterval {
			t.Errorf("%v: wait outside [%v, %v]", f, d.MinInterval, d.MaxInterval)
		}
		switch f.Kind {
		case FaultCut:
			if f.Duration != 0 {
				t.Errorf("%v: a cut has a duration", f)
			}
		case FaultOutage:
			if f.Duration < d.MinOutage || f.Duration > d.MaxOutage {
				t.Errorf("%v: duration outside [%v, %v]", f, d.MinOutage, d.MaxOutage)
			}
		case FaultBlackhole:
			if f.Duration < d.MinBlackhole || f.Duration > d.MaxBlackhole {
				t.Errorf("%v: duration outside [%v, %v]", f, d.MinBlackhole, d.MaxBlackhole)
			}
		}
	}
	if len(kinds) != 3 {
		t.Fatalf("with equal weights, 50 faults covered only %v", kinds)
	}
}

func TestScheduleWeights(t *testing.T) {
	for _, f := range (Schedule{Seed: 7, OutageWeight: 1}).Faults(30) {
		if f.Kind != FaultOutage {
			t.Fatalf("only outages are weighted, got %v", f)
		}
	}
	s := Schedule{Seed: 7, MinInterval: time.Second, MaxInterval: time.Millisecond}
	for _, f := range s.Faults(10) {
		if f.Wait != time.Second {
			t.Fatalf("MaxInterval below MinInterval must be raised to it, got %v", f.Wait)
		}
	}
}

func TestChaosInjectsTheScheduledFaults(t *testing.T) {
	echo := startEcho(t, "")
	p := newProxy(t, echo.addr())
	s := Schedule{
		Seed:        99,
		MinInterval: 5 * time.Millisecond, MaxInterval: 20 * time.Millisecond,
		MinOutage: 5 * time.Millisecond, MaxOutage: 20 * time.Millisecond,
		MinBlackhole: 5 * time.Millisecond, MaxBlackhole: 20 * time.Millisecond,
	}
	const n = 12
	var mu sync.Mutex
	var seen []Fault
	s.OnFault = func(f Fault) {
		mu.Lock()
		seen = append(seen, f)
		mu.Unlock()
	}
	ctx, cancel := context.WithCancel(t.Context())
	p.Chaos(ctx, s)
	eventually(t, 10*time.Second, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(seen) >= n
	}, "chaos injects faults")
	cancel()

	mu.Lock()
	got := append([]Fault(nil), seen[:n]...)
	mu.Unlock()
	if want := s.Faults(n); !reflect.DeepEqual(got, want) {
		t.Fatalf("Chaos injected\n%v\nSchedule.Faults says\n%v", got, want)
	}
	if p.Stats().Faults < n {
		t.Fatalf("Stats.Faults = %d, want >= %d", p.Stats().Faults, n)
	}
	// Once stopped, Chaos leaves the proxy forwarding.
	eventually(t, 5*time.Second, func() bool { return dialRoundTrip(p, "ok") == nil }, "forwarding after Chaos stopped")
}

func TestFaultStrings(t *testing.T) {
	for f, want := range map[Fault]string{
		{Kind: FaultCut, Wait: time.Second}:                                   "cut after 1s",
		{Kind: FaultOutage, Wait: time.Second, Duration: time.Millisecond}:    "outage 1ms after 1s",
		{Kind: FaultBlackhole, Wait: time.Second, Duration: time.Millisecond}: "blackhole 1ms after 1s",
	} {
		if got := f.String(); got != want {
			t.Errorf("String() = %q, want %q", got, want)
		}
	}
	if got := FaultKind(9).String(); got != "FaultKind(9)" {
		t.Errorf("FaultKind(9).String() = %q", got)
	}
}
