package main

import (
	"fmt"
	"io"
	"strings"

	"github.com/holdfast-mqtt/holdfast/internal/testsub"
)

// row is one client's verdict.
type row struct {
	name       string
	accepted   int // distinct numbers its runs reported accepted
	delivered  int // accepted numbers that arrived at least once
	lost       int // accepted, never arrived
	duplicated int // arrivals of accepted numbers beyond the first
	reordered  int // first arrivals that came after a higher number's first arrival
	// resent counts first arrivals that came as the broker's resend (DUP)
	// of what it had in flight to the subscriber when that one
	// reconnected: their place in the stream is the broker's doing, so
	// they are not checked for order.
	resent     int
	unexpected int // arrived, never reported accepted
	firstLost  []uint64
	firstReord []uint64
}

const maxListed = 5

// judge compares what arrived on a client's topic with what its runs
// reported accepted (ascending).
func judge(name string, accepted []uint64, arrivals []testsub.Arrival) row {
	r := row{name: name, accepted: len(accepted)}
	acc := make(map[uint64]bool, len(accepted))
	for _, n := range accepted {
		acc[n] = true
	}
	seen := make(map[uint64]int, len(arrivals))
	var maxFirst uint64
	for _, a := range arrivals {
		if !acc[a.Seq] {
			r.unexpected++
			continue
		}
		seen[a.Seq]++
		if seen[a.Seq] > 1 {
			r.duplicated++
			continue
		}
		if a.Dup {
			r.resent++
			continue
		}
		if a.Seq < maxFirst {
			r.reordered++
			if len(r.firstReord) < maxListed {
				r.firstReord = append(r.firstReord, a.Seq)
			}
		}
		maxFirst = max(maxFirst, a.Seq)
	}
	for _, n := range accepted {
		if seen[n] == 0 {
			r.lost++
			if len(r.firstLost) < maxListed {
				r.firstLost = append(r.firstLost, n)
			}
		}
	}
	r.delivered = r.accepted - r.lost
	return r
}

// report is the outcome of a run of the demo.
type report struct {
	qos         int
	rows        []row // Holdfast first
	applied     map[kind]int
	runs        []int // processes per client, in the order of rows
	drained     []bool
	interrupted bool
	notes       []string
}

// holdfastOK is the exit condition: Holdfast accepted messages and lost
// none, reordered none, and at QoS 2 duplicated none.
func (r report) holdfastOK() bool {
	if r.interrupted || len(r.rows) == 0 {
		return false
	}
	h := r.rows[0]
	return h.accepted > 0 && h.lost == 0 && h.reordered == 0 && h.unexpected == 0 && (r.qos < 2 || h.duplicated == 0)
}

// exitCode is the program's exit status for the report: 0 when Holdfast
// kept its promise, 130 when interrupted, 1 otherwise.
func (r report) exitCode() int {
	switch {
	case r.interrupted:
		return 130
	case r.holdfastOK():
		return 0
	}
	return 1
}

// write prints the verdict table and what explains it.
func (r report) write(w io.Writer) {
	fmt.Fprintln(w)
	lost := "lost"
	if r.interrupted {
		lost = "undelivered" // so far: an interrupted run did not wait for them
	}
	const format = "%-10s %9v %10v %*v %11v %10v\n"
	width := max(len(lost), 6)
	fmt.Fprintf(w, format, fmt.Sprintf("QoS %d", r.qos), "accepted", "delivered", width, lost, "duplicated", "reordered")
	for _, x := range r.rows {
		fmt.Fprintf(w, format, x.name, x.accepted, x.delivered, width, x.lost, x.duplicated, x.reordered)
	}
	fmt.Fprintln(w)
	for i, x := range r.rows {
		var why []string
		if x.lost > 0 && !r.interrupted {
			why = append(why, fmt.Sprintf("lost from %s", list(x.firstLost, x.lost)))
		}
		if x.reordered > 0 {
			why = append(why, fmt.Sprintf("late first arrivals %s", list(x.firstReord, x.reordered)))
		}
		if x.resent > 0 {
			verb := " were"
			if x.resent == 1 {
				verb = " was"
			}
			why = append(why, plural(x.resent, "first arrival")+verb+" the broker's resend to the reconnecting subscriber (not checked for order)")
		}
		if x.unexpected > 0 {
			why = append(why, plural(x.unexpected, "arrival")+" of numbers never reported accepted")
		}
		if i < len(r.drained) && !r.drained[i] {
			why = append(why, "did not drain")
		}
		if len(why) > 0 {
			fmt.Fprintf(w, "%s: %s.\n", x.name, strings.Join(why, "; "))
		}
	}
	for _, n := range r.notes {
		fmt.Fprintln(w, n)
	}
	switch {
	case r.interrupted:
		fmt.Fprintln(w, "Interrupted: the figures are what had arrived so far.")
	case r.holdfastOK():
		dup := ""
		if r.qos == 2 {
			dup = ", duplicated nothing"
		}
		fmt.Fprintf(w, "Holdfast lost nothing, reordered nothing%s: every message Publish accepted arrived, in order.\n", dup)
	default:
		fmt.Fprintln(w, "FAIL: Holdfast did not keep its promise in this run (exit status 1).")
	}
}

// list formats the first numbers of a set of n, e.g. "17, 18, 19 ... (40)".
func list(first []uint64, n int) string {
	parts := make([]string, len(first))
	for i, v := range first {
		parts[i] = fmt.Sprint(v)
	}
	s := strings.Join(parts, ", ")
	if n > len(first) {
		s += fmt.Sprintf(" ... (%d)", n)
	}
	return s
}
