package e2e

import (
	"cmp"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"slices"
	"time"
)

// EventKind is one kind of event in a chaos schedule.
type EventKind int

// The kinds of event. An outage is one event (the proxy's own timer ends it);
// a black hole has a start and an end event.
const (
	EvCut            EventKind = iota // reset every connection through the proxy
	EvOutage                          // cut, then refuse connections for Dur
	EvBlackholeStart                  // forward nothing until the matching EvBlackholeEnd
	EvBlackholeEnd                    // end of a black hole
	EvRestart                         // graceful broker restart (SIGTERM, start again)
	EvKill                            // SIGKILL the publisher of Lane, start it again at once
	EvExit                            // not planned: the publisher of Lane exited on its own and was started again
)

func (k EventKind) String() string {
	switch k {
	case EvCut:
		return "cut"
	case EvOutage:
		return "outage"
	case EvBlackholeStart:
		return "blackhole"
	case EvBlackholeEnd:
		return "blackhole-end"
	case EvRestart:
		return "broker-restart"
	case EvKill:
		return "kill"
	case EvExit:
		return "exit"
	}
	return fmt.Sprintf("EventKind(%d)", int(k))
}

// Event is one planned fault, At after the start of the chaos phase.
type Event struct {
	At   time.Duration
	Kind EventKind
	Dur  time.Duration // outage and black-hole length
	Lane int           // EvKill, EvExit: index of the lane
}

// MarshalJSON writes times in seconds and the kind by name.
func (e Event) MarshalJSON() ([]byte, error) {
	type event struct {
		At   float64 `json:"at_s"`
		Kind string  `json:"kind"`
		Dur  float64 `json:"dur_s,omitempty"`
		Lane *int    `json:"lane,omitempty"`
	}
	j := event{At: e.At.Seconds(), Kind: e.Kind.String(), Dur: e.Dur.Seconds()}
	if e.Kind == EvKill || e.Kind == EvExit {
		j.Lane = &e.Lane
	}
	return json.Marshal(j)
}

func (e Event) String() string {
	s := fmt.Sprintf("%6.2fs %s", e.At.Seconds(), e.Kind)
	switch e.Kind {
	case EvOutage, EvBlackholeStart:
		s += fmt.Sprintf(" %v", e.Dur.Round(time.Millisecond))
	case EvKill, EvExit:
		if e.Lane < len(laneSpecs) {
			s += " " + laneSpecs[e.Lane].name
		} else {
			s += fmt.Sprintf(" lane %d", e.Lane)
		}
	}
	return s
}

// ScheduleParams shape a schedule. Counts given per minute scale with Total
// and never go below the minimums the issue asks for.
type ScheduleParams struct {
	Total          time.Duration // length of the chaos phase
	Lanes          int           // publishers to kill
	Lead, Tail     time.Duration // quiet time at the start and the end
	KillsPerLane   int           // per minute; at least MinKills
	MinKills       int
	MinKillGap     time.Duration // between two kills of one lane
	Restarts       int           // per minute; at least MinRestarts
	MinRestarts    int
	Outages        int // per minute; at least MinOutages
	MinOutages     int
	OutageMin      time.Duration
	OutageMax      time.Duration
	Blackholes     int // per minute; at least MinBlackholes
	MinBlackholes  int
	BlackholeMin   time.Duration
	BlackholeMax   time.Duration
	RestartWindow  time.Duration // time reserved for one broker restart
	WindowGap      time.Duration // between two windows (outage, black hole, restart)
	CutIntervalMin time.Duration // between two cuts
	CutIntervalMax time.Duration
}

// defaultParams is the schedule for a chaos phase of total.
func defaultParams(total time.Duration, lanes int) ScheduleParams {
	return ScheduleParams{
		Total:          total,
		Lanes:          lanes,
		Lead:           3 * time.Second,
		Tail:           2 * time.Second,
		KillsPerLane:   12,
		MinKills:       10,
		MinKillGap:     1500 * time.Millisecond,
		Restarts:       2,
		MinRestarts:    2,
		Outages:        2,
		MinOutages:     2,
		OutageMin:      2 * time.Second,
		OutageMax:      4 * time.Second,
		Blackholes:     2,
		MinBlackholes:  2,
		BlackholeMin:   3500 * time.Millisecond,
		BlackholeMax:   4500 * time.Millisecond,
		RestartWindow:  2 * time.Second,
		WindowGap:      time.Second,
		CutIntervalMin: time.Second,
		CutIntervalMax: 4 * time.Second,
	}
}

// perMinute scales a per-minute count to total, with a floor.
func perMinute(n, floor int, total time.Duration) int {
	return max(floor, int(float64(n)*total.Minutes()+0.5))
}

// NewSchedule returns the events of a chaos phase, sorted by time. It is
// deterministic: the same seed and parameters give the same schedule, so a
// Holdfast run and a bare paho run can be compared fault for fault.
func NewSchedule(seed uint64, p ScheduleParams) []Event {
	rng := rand.New(rand.NewPCG(seed, seed^0x5eed5eed5eed5eed))
	between := func(lo, hi time.Duration) time.Duration {
		if hi <= lo {
			return lo
		}
		return lo + time.Duration(rng.Int64N(int64(hi-lo)+1))
	}
	type window struct{ from, to time.Duration }
	var windows []window
	free := func(w window) bool {
		for _, o := range windows {
			if w.from < o.to+p.WindowGap && o.from < w.to+p.WindowGap {
				return false
			}
		}
		return true
	}
	// place reserves a window of length d at a random time in [lo, hi-d];
	// it gives up (returns false) only if the phase is too crowded.
	place := func(d, lo, hi time.Duration) (time.Duration, bool) {
		for range 1000 {
			at := between(lo, hi-d)
			if w := (window{at, at + d}); free(w) {
				windows = append(windows, w)
				return at, true
			}
		}
		return 0, false
	}
	var evs []Event
	lo, hi := p.Lead, p.Total-p.Tail

	// Broker restarts first, one in each equal slice of the phase.
	nRestarts := perMinute(p.Restarts, p.MinRestarts, p.Total)
	slice := (hi - lo) / time.Duration(nRestarts)
	for i := range nRestarts {
		from := lo + time.Duration(i)*slice
		if at, ok := place(p.RestartWindow, from, from+slice); ok {
			evs = append(evs, Event{At: at, Kind: EvRestart})
		}
	}
	for range perMinute(p.Outages, p.MinOutages, p.Total) {
		d := between(p.OutageMin, p.OutageMax)
		if at, ok := place(d, lo, hi); ok {
			evs = append(evs, Event{At: at, Kind: EvOutage, Dur: d})
		}
	}
	for range perMinute(p.Blackholes, p.MinBlackholes, p.Total) {
		d := between(p.BlackholeMin, p.BlackholeMax)
		if at, ok := place(d, lo, hi); ok {
			evs = append(evs, Event{At: at, Kind: EvBlackholeStart, Dur: d},
				Event{At: at + d, Kind: EvBlackholeEnd})
		}
	}
	// Cuts at random intervals, outside the windows (a cut during a black
	// hole would end it early; during an outage it does nothing).
	for at := lo + between(0, p.CutIntervalMax); at < hi; at += between(p.CutIntervalMin, p.CutIntervalMax) {
		if free(window{at, at}) {
			evs = append(evs, Event{At: at, Kind: EvCut})
		}
	}
	// Kills anywhere after the start, at least MinKillGap apart per lane.
	nKills := perMinute(p.KillsPerLane, p.MinKills, p.Total)
	for lane := range p.Lanes {
		var kills []time.Duration
		for tries := 0; len(kills) < nKills && tries < 100_000; tries++ {
			at := between(p.Lead/2, hi)
			if !slices.ContainsFunc(kills, func(k time.Duration) bool { return (k - at).Abs() < p.MinKillGap }) {
				kills = append(kills, at)
			}
		}
		for _, at := range kills {
			evs = append(evs, Event{At: at, Kind: EvKill, Lane: lane})
		}
	}
	slices.SortStableFunc(evs, func(a, b Event) int {
		return cmp.Or(cmp.Compare(a.At, b.At), cmp.Compare(a.Kind, b.Kind))
	})
	return evs
}

// countKinds counts the events of each kind.
func countKinds(evs []Event) map[EventKind]int {
	m := map[EventKind]int{}
	for _, e := range evs {
		m[e.Kind]++
	}
	return m
}
