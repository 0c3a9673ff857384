package e2e

import (
	"fmt"
	"slices"
	"time"
)

// maxListed bounds the example lists in a LaneResult.
const maxListed = 50

// LaneResult is what the subscriber saw of one lane, judged against what the
// lane's runs printed as accepted.
type LaneResult struct {
	Lane  string `json:"lane"`
	Topic string `json:"topic"`
	QoS   int    `json:"qos"`

	Runs            int `json:"runs"`
	Kills           int `json:"kills"`            // runs ended by SIGKILL
	Stops           int `json:"stops"`            // runs ended by SIGTERM
	UnexpectedExits int `json:"unexpected_exits"` // runs that exited on their own before the final one

	Accepted  int `json:"accepted"`  // numbers printed as accepted (distinct)
	Received  int `json:"received"`  // messages the subscriber's handler recorded
	Delivered int `json:"delivered"` // accepted numbers that arrived at least once

	Lost     int      `json:"lost"` // accepted, never arrived
	LostSeqs []uint64 `json:"lost_seqs,omitempty"`
	// LostBeforeExtraRun, set only when the lane had an extra run (bare
	// paho), is what was lost after the final run had drained, before one
	// more run on the same store sent what the earlier runs left in it.
	LostBeforeExtraRun *int `json:"lost_before_extra_run,omitempty"`

	// Reordered counts accepted numbers whose first arrival came after the
	// first arrival of a higher number.
	Reordered         int      `json:"reordered"`
	ReorderedExamples []string `json:"reordered_examples,omitempty"`

	Duplicates    int      `json:"duplicates"` // arrivals beyond the first of each number
	DuplicateSeqs []uint64 `json:"duplicate_seqs,omitempty"`
	// AllowedDuplicates are duplicates of a number that was published again
	// because its run ended after Publish but before printing it; the others
	// are UnexpectedDuplicates.
	AllowedDuplicates    int      `json:"allowed_duplicates"`
	UnexpectedDuplicates int      `json:"unexpected_duplicates"`
	UnexpectedDupSeqs    []uint64 `json:"unexpected_duplicate_seqs,omitempty"`

	// LateResends (QoS 2 lanes) counts, in the broker's log, PUBLISH
	// packets with DUP for an identifier whose exchange had completed on the
	// same connection: each is a duplicate made by the publisher.
	LateResends int `json:"broker_late_resends"`

	Unaccepted     int      `json:"unaccepted"` // arrived, never printed as accepted
	UnacceptedSeqs []uint64 `json:"unaccepted_seqs,omitempty"`

	// HarnessErrors are inconsistencies in what the runs printed (a run not
	// continuing after the previous one, a gap, unknown output).
	HarnessErrors []string `json:"harness_errors,omitempty"`
}

// republished returns the numbers that may legitimately be published twice:
// for each run that ended before the final one (killed, stopped or exited),
// the number after the last it printed, which it may have handed to Publish
// without printing it, and which the next run publishes again.
// The count says how many times: runs killed one after the other before
// printing anything each hand the same number to Publish.
func republished(runs []Run) map[uint64]int {
	m := map[uint64]int{}
	for _, r := range runs {
		switch r.End {
		case endKilled, endStopped, endExited, endNotDrained:
			m[r.next()]++
		}
	}
	return m
}

// analyse judges a lane's arrivals against its runs.
func analyse(name, topic string, qos int, runs []Run, arrivals []Arrival) LaneResult {
	res := LaneResult{Lane: name, Topic: topic, QoS: qos, Runs: len(runs)}

	accepted := map[uint64]bool{}
	var expect uint64 = 1
	for i, r := range runs {
		switch r.End {
		case endKilled:
			res.Kills++
		case endStopped:
			res.Stops++
		case endExited, endNotDrained:
			if i < len(runs)-1 || r.End == endNotDrained {
				res.UnexpectedExits++
			}
		}
		if r.Start != expect {
			res.HarnessErrors = append(res.HarnessErrors, fmt.Sprintf("run %d started at %d, want %d", r.Index, r.Start, expect))
		}
		for j, n := range r.Accepted {
			if n != r.Start+uint64(j) {
				res.HarnessErrors = append(res.HarnessErrors, fmt.Sprintf("run %d printed %d at position %d, want %d", r.Index, n, j, r.Start+uint64(j)))
				break
			}
			accepted[n] = true
		}
		if len(r.Other) > 0 {
			res.HarnessErrors = append(res.HarnessErrors, fmt.Sprintf("run %d printed unexpected lines: %q", r.Index, r.Other))
		}
		expect = r.next()
	}
	res.Accepted = len(accepted)
	res.Received = len(arrivals)

	seen := map[uint64]int{}
	var maxFirst uint64
	for _, a := range arrivals {
		seen[a.Seq]++
		if seen[a.Seq] > 1 {
			res.Duplicates++
			if len(res.DuplicateSeqs) < maxListed {
				res.DuplicateSeqs = append(res.DuplicateSeqs, a.Seq)
			}
			continue
		}
		if !accepted[a.Seq] {
			res.Unaccepted++
			if len(res.UnacceptedSeqs) < maxListed {
				res.UnacceptedSeqs = append(res.UnacceptedSeqs, a.Seq)
			}
			continue
		}
		if a.Seq < maxFirst {
			res.Reordered++
			if len(res.ReorderedExamples) < maxListed {
				res.ReorderedExamples = append(res.ReorderedExamples, fmt.Sprintf("%d after %d", a.Seq, maxFirst))
			}
		}
		maxFirst = max(maxFirst, a.Seq)
	}
	allowed := republished(runs)
	for _, n := range sortedKeys(seen) {
		extra := seen[n] - 1
		if extra <= 0 {
			continue
		}
		ok := min(extra, allowed[n])
		res.AllowedDuplicates += ok
		if extra > ok {
			res.UnexpectedDuplicates += extra - ok
			if len(res.UnexpectedDupSeqs) < maxListed {
				res.UnexpectedDupSeqs = append(res.UnexpectedDupSeqs, n)
			}
		}
	}
	for _, n := range sortedKeys(accepted) {
		if seen[n] == 0 {
			res.Lost++
			if len(res.LostSeqs) < maxListed {
				res.LostSeqs = append(res.LostSeqs, n)
			}
		} else {
			res.Delivered++
		}
	}
	return res
}

func sortedKeys[V any](m map[uint64]V) []uint64 {
	keys := make([]uint64, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// acceptedBy finds the run that printed n, and when.
func acceptedBy(runs []Run, n uint64) (*Run, time.Time) {
	for i := range runs {
		r := &runs[i]
		if len(r.Accepted) > 0 && n >= r.Start && n < r.next() {
			return r, r.At[n-r.Start]
		}
	}
	return nil, time.Time{}
}

// publishedBy lists the runs whose -start range could have handed n to
// Publish: the run that printed it and any earlier run that ended just
// before printing it.
func publishedBy(runs []Run, n uint64) []int {
	var out []int
	for _, r := range runs {
		if (len(r.Accepted) > 0 && n >= r.Start && n < r.next()) || (r.End != endDrained && r.next() == n) {
			out = append(out, r.Index)
		}
	}
	return out
}
