package main

import (
	"cmp"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/holdfast-mqtt/holdfast/internal/faultproxy"
)

// kind is one kind of fault in a plan.
type kind int

// The kinds of fault. Cut, outage and black hole are the fault proxy's; a
// restart closes the broker gracefully and starts it again on the same port
// and state; a kill SIGKILLs both publishers at the same instant and starts
// them again at once on the same outbox and client identifier.
const (
	kindCut kind = iota
	kindOutage
	kindBlackhole
	kindRestart
	kindKill
)

var kindNames = []string{"cut", "outage", "blackhole", "restart", "kill"}

func (k kind) String() string { return kindNames[k] }

// windowed reports whether a fault lasts (and takes a window of the plan
// that no other lasting fault may share).
func (k kind) windowed() bool { return k == kindOutage || k == kindBlackhole || k == kindRestart }

// event is one planned fault, at its offset from the start of publishing.
type event struct {
	at   time.Duration
	kind kind
	dur  time.Duration // outage, black hole, broker down time
}

func (e event) String() string {
	s := fmt.Sprintf("%5.1fs %s", e.at.Seconds(), e.kind)
	if e.kind.windowed() {
		s += fmt.Sprintf(" %.1fs", e.dur.Seconds())
	}
	return s
}

// Durations drawn for faults placed by the seed, and for timed ones given
// without a duration (the middle of the range).
var durRange = map[kind][2]time.Duration{
	kindOutage:    {time.Second, 2 * time.Second},
	kindBlackhole: {3 * time.Second, 4 * time.Second}, // past 1.5x the 2s keepalive: both clients must notice
	kindRestart:   {500 * time.Millisecond, 1500 * time.Millisecond},
}

// presets name fault specs.
var presets = map[string]string{
	"default": "chaos,blackhole,outage,restart,kill=4",
	"network": "chaos",
	"kills":   "kill=5",
	"none":    "",
}

// spec is a parsed -faults value.
type spec struct {
	chaos  bool         // the fault proxy's seeded network chaos as background
	counts map[kind]int // faults placed by the seed
	timed  []event      // faults at given offsets
}

// parseFaults parses -faults: a preset name, or a comma list of items:
//
//	chaos        the fault proxy's seeded schedule of cuts, outages and
//	             black holes (faultproxy.Schedule), between the other faults
//	KIND         one fault of that kind, placed by the seed
//	KIND=N       N of them
//	KIND@T       one at T after the start of publishing (a Go duration)
//	KIND@T/D     the same, lasting D (outage, blackhole, restart)
//
// KIND is cut, outage, blackhole, restart or kill; items may also be preset
// names.
func parseFaults(s string) (spec, error) {
	sp := spec{counts: map[kind]int{}}
	if err := sp.add(s, 0); err != nil {
		return spec{}, err
	}
	return sp, nil
}

func (sp *spec) add(s string, depth int) error {
	if p, ok := presets[s]; ok && depth == 0 {
		return sp.add(p, depth+1)
	}
	for item := range strings.SplitSeq(s, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		if p, ok := presets[item]; ok && depth == 0 {
			if err := sp.add(p, depth+1); err != nil {
				return err
			}
			continue
		}
		if item == "chaos" {
			sp.chaos = true
			continue
		}
		name, rest, _ := strings.Cut(item, "@")
		name, n, hasCount := strings.Cut(name, "=")
		k := kind(slices.Index(kindNames, name))
		if k < 0 {
			return fmt.Errorf("-faults: unknown fault %q (want %s, chaos, or a preset: default, network, kills, none)", name, strings.Join(kindNames, ", "))
		}
		switch {
		case hasCount && rest != "":
			return fmt.Errorf("-faults: %q: give a count or a time, not both", item)
		case hasCount:
			c, err := strconv.Atoi(n)
			if err != nil || c < 0 {
				return fmt.Errorf("-faults: %q: bad count", item)
			}
			sp.counts[k] += c
		case strings.Contains(item, "@"):
			at, d, hasDur := strings.Cut(rest, "/")
			e := event{kind: k}
			var err error
			if e.at, err = time.ParseDuration(at); err != nil || e.at < 0 {
				return fmt.Errorf("-faults: %q: bad time %q", item, at)
			}
			if r, ok := durRange[k]; ok {
				e.dur = (r[0] + r[1]) / 2
			}
			if hasDur {
				if !k.windowed() {
					return fmt.Errorf("-faults: %q: a %s has no duration", item, k)
				}
				if e.dur, err = time.ParseDuration(d); err != nil || e.dur <= 0 {
					return fmt.Errorf("-faults: %q: bad duration %q", item, d)
				}
			}
			sp.timed = append(sp.timed, e)
		default:
			sp.counts[k]++
		}
	}
	return nil
}

// Placement of the faults within the publishing span.
const (
	planLead = 1500 * time.Millisecond // no fault before: let both publishers get going
	planTail = 2 * time.Second         // lasting faults end this long before the span ends
	planGap  = time.Second             // between two lasting faults
	cutGap   = 300 * time.Millisecond  // between a cut and a lasting fault
	killGap  = 1500 * time.Millisecond // between two kills
)

// chaosSchedule is the fault proxy's schedule behind "chaos": a cut, outage
// or black hole every 0.5-2s (the proxy's default pace), cuts four times as
// likely as either other kind.
func chaosSchedule(seed uint64) faultproxy.Schedule {
	return faultproxy.Schedule{
		Seed:      seed,
		CutWeight: 4, OutageWeight: 1, BlackholeWeight: 1,
		MinOutage: durRange[kindOutage][0], MaxOutage: durRange[kindOutage][1],
		MinBlackhole: durRange[kindBlackhole][0], MaxBlackhole: durRange[kindBlackhole][1],
	}
}

// plan places the faults of sp within span (the time publishing is expected
// to take), from seed, and returns them sorted by time. The same seed, spec
// and span always give the same plan. Timed faults are kept as given; a
// fault placed by the seed that finds no room is left out, and the "chaos"
// background fills the gaps between lasting faults.
func (sp spec) plan(seed uint64, span time.Duration) []event {
	rng := rand.New(rand.NewPCG(seed, seed^0xc4a05c4a05c4a05))
	between := func(lo, hi time.Duration) time.Duration {
		if hi <= lo {
			return lo
		}
		return lo + time.Duration(rng.Int64N(int64(hi-lo)+1))
	}
	evs := slices.Clone(sp.timed)
	type window struct{ from, to time.Duration }
	var windows []window
	// free reports whether w keeps planGap from every lasting fault (a
	// cut, cutGap).
	free := func(w window) bool {
		gap := planGap
		if w.from == w.to {
			gap = cutGap
		}
		for _, o := range windows {
			if w.from < o.to+gap && o.from < w.to+gap {
				return false
			}
		}
		return true
	}
	for _, e := range evs {
		if e.kind.windowed() {
			windows = append(windows, window{e.at, e.at + e.dur})
		}
	}
	end := max(span-planTail, planLead)

	// Lasting faults first (restarts, outages, black holes), each in a free
	// window; then cuts and kills anywhere.
	for _, k := range []kind{kindRestart, kindOutage, kindBlackhole} {
		for range sp.counts[k] {
			d := between(durRange[k][0], durRange[k][1])
			for range 1000 {
				at := between(planLead, max(end-d, planLead))
				if w := (window{at, at + d}); free(w) {
					windows = append(windows, w)
					evs = append(evs, event{at: at, kind: k, dur: d})
					break
				}
			}
		}
	}
	for range sp.counts[kindCut] {
		for range 1000 { // outside lasting faults: a cut there would change nothing or end one early
			if at := between(planLead, end); free(window{at, at}) {
				evs = append(evs, event{at: at, kind: kindCut})
				break
			}
		}
	}
	var kills []time.Duration
	for tries := 0; len(kills) < sp.counts[kindKill] && tries < 10_000; tries++ {
		at := between(planLead, end)
		if !slices.ContainsFunc(kills, func(k time.Duration) bool { return (k - at).Abs() < killGap }) {
			kills = append(kills, at)
		}
	}
	for _, at := range kills {
		evs = append(evs, event{at: at, kind: kindKill})
	}

	if sp.chaos {
		// The fault proxy's schedule, in its own order and pace, skipping
		// what would overlap a lasting fault placed above.
		at := planLead
		for _, f := range chaosSchedule(seed).Faults(int(span/(500*time.Millisecond)) + 1) {
			at += f.Wait
			e := event{at: at, dur: f.Duration}
			switch f.Kind {
			case faultproxy.FaultCut:
				e.kind = kindCut
			case faultproxy.FaultOutage:
				e.kind = kindOutage
			case faultproxy.FaultBlackhole:
				e.kind = kindBlackhole
			}
			at += f.Duration
			if at > end {
				break
			}
			if w := (window{e.at, e.at + e.dur}); free(w) {
				if e.kind.windowed() {
					windows = append(windows, w)
				}
				evs = append(evs, e)
			}
		}
	}
	slices.SortStableFunc(evs, func(a, b event) int {
		return cmp.Or(cmp.Compare(a.at, b.at), cmp.Compare(a.kind, b.kind))
	})
	return evs
}

// summary counts a plan's faults by kind, e.g. "5 cuts, 1 outage, 1 kill".
func summary(evs []event) string {
	n := make([]int, len(kindNames))
	for _, e := range evs {
		n[e.kind]++
	}
	var parts []string
	for k, c := range n {
		if c == 0 {
			continue
		}
		name := kindNames[k]
		switch kind(k) {
		case kindRestart:
			name = "broker restart"
		case kindBlackhole:
			name = "black hole"
		}
		if c > 1 {
			name += "s"
		}
		parts = append(parts, fmt.Sprintf("%d %s", c, name))
	}
	if len(parts) == 0 {
		return "no faults"
	}
	return strings.Join(parts, ", ")
}
