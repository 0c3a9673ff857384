package e2e

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"
)

// diagnose logs, for the first few ranges of lost, reordered, unexpectedly
// duplicated or unaccepted numbers of a lane, which run accepted them and
// when, how they arrived, the faults around that time, and the tail of the
// stderr of the runs that may have published them.
func diagnose(t *testing.T, l LaneResult, runs []Run, arrivals []Arrival, events []Event, t0 time.Time) {
	t.Helper()
	var reordered []uint64
	for _, ex := range l.ReorderedExamples {
		var n, after uint64
		if _, err := fmt.Sscanf(ex, "%d after %d", &n, &after); err == nil {
			reordered = append(reordered, n)
		}
	}
	var dupsIfQoS2 []uint64 // QoS 1 duplicates are allowed
	if l.QoS == 2 {
		dupsIfQoS2 = l.UnexpectedDupSeqs
	}
	shown := map[int]bool{} // runs whose stderr is shown
	for _, kind := range []struct {
		what string
		ns   []uint64
	}{
		{"lost", l.LostSeqs},
		{"duplicated", dupsIfQoS2},
		{"arrived unaccepted", l.UnacceptedSeqs},
		{"reordered", reordered},
	} {
		rs := ranges(kind.ns)
		for _, r := range rs[:min(len(rs), 5)] {
			t.Log(describeRange(l.Lane, kind.what, r, runs, arrivals, events, t0))
			for _, i := range publishedBy(runs, r[0]) {
				shown[i] = true
			}
			for _, i := range publishedBy(runs, r[1]) {
				shown[i] = true
			}
		}
	}
	for i := range runs {
		if shown[i] {
			r := runs[i]
			t.Logf("lane %s run %d stderr (%s), last %d bytes:\n%s", l.Lane, r.Index, r.Stderr, stderrShown, stderrTail(r.Stderr, stderrShown))
		}
	}
}

// describeRange explains the numbers from r[0] to r[1] of one finding.
func describeRange(lane, what string, r [2]uint64, runs []Run, arrivals []Arrival, events []Event, t0 time.Time) string {
	var b strings.Builder
	if r[0] == r[1] {
		fmt.Fprintf(&b, "lane %s: %d %s.", lane, r[0], what)
	} else {
		fmt.Fprintf(&b, "lane %s: %d..%d %s (%d numbers).", lane, r[0], r[1], what, r[1]-r[0]+1)
	}
	var from, to time.Duration
	for k, n := range []uint64{r[0], r[1]} {
		run, when := acceptedBy(runs, n)
		if run == nil {
			fmt.Fprintf(&b, " %d was not printed by any run.", n)
			continue
		}
		at := when.Sub(t0)
		if k == 0 {
			from = at
		}
		to = at
		fmt.Fprintf(&b, " %d accepted at %.3fs by run %d (start %d, %s at %.3fs).", n, at.Seconds(), run.Index, run.Start, run.End, run.Ended.Sub(t0).Seconds())
		if r[0] == r[1] {
			break
		}
	}
	fmt.Fprintf(&b, " Runs that may have published %d: %v.", r[0], publishedBy(runs, r[0]))
	for i, a := range arrivals {
		if a.Seq != r[0] {
			continue
		}
		fmt.Fprintf(&b, "\n  %d arrived at %.3fs qos %d dup %t packet id %d; arrivals around it: %v",
			a.Seq, a.At.Sub(t0).Seconds(), a.QoS, a.Dup, a.ID, seqsOf(arrivals[max(0, i-4):min(len(arrivals), i+4)]))
	}
	if from != 0 || to != 0 {
		for _, e := range events {
			if e.At > from-5*time.Second && e.At < to+5*time.Second {
				fmt.Fprintf(&b, "\n  event %s", e)
			}
		}
	}
	return b.String()
}

// ranges groups numbers into runs of consecutive values, in ascending order.
func ranges(ns []uint64) [][2]uint64 {
	s := slices.Clone(ns)
	slices.Sort(s)
	s = slices.Compact(s)
	var out [][2]uint64
	for _, n := range s {
		if k := len(out) - 1; k >= 0 && out[k][1]+1 == n {
			out[k][1] = n
			continue
		}
		out = append(out, [2]uint64{n, n})
	}
	return out
}

func seqsOf(as []Arrival) []uint64 {
	out := make([]uint64, len(as))
	for i, a := range as {
		out[i] = a.Seq
	}
	return out
}
