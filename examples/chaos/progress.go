package main

import (
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"
)

// printer writes the demo's output: event lines, and a progress line that
// is rewritten in place (with \r) on a terminal, or printed periodically
// otherwise.
type printer struct {
	mu      sync.Mutex // guards the fields below
	w       io.Writer
	tty     bool
	shown   int       // length of the progress line on screen (tty)
	last    string    // the last progress line
	printed time.Time // when a progress line was last printed (not a tty)
	every   time.Duration
}

// Progress line cadence.
const (
	ttyEvery  = 200 * time.Millisecond
	lineEvery = 2 * time.Second
)

func newPrinter(w io.Writer) *printer {
	p := &printer{w: w, every: lineEvery}
	if f, ok := w.(*os.File); ok {
		if fi, err := f.Stat(); err == nil && fi.Mode()&os.ModeCharDevice != 0 {
			p.tty, p.every = true, ttyEvery
		}
	}
	return p
}

// event prints s on a line of its own; on a terminal the progress line is
// drawn again below it.
func (p *printer) event(s string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.tty && p.shown > 0 {
		fmt.Fprintf(p.w, "\r%s\r", strings.Repeat(" ", p.shown))
		fmt.Fprintln(p.w, s)
		fmt.Fprint(p.w, p.last)
		return
	}
	fmt.Fprintln(p.w, s)
}

// progress shows s as the progress line: at once on a terminal, at most
// every lineEvery otherwise (unless force).
func (p *printer) progress(s string, force bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.last = s
	if p.tty {
		pad := max(p.shown-len(s), 0)
		fmt.Fprintf(p.w, "\r%s%s", s, strings.Repeat(" ", pad))
		p.shown = len(s)
		return
	}
	if force || time.Since(p.printed) >= p.every {
		fmt.Fprintln(p.w, s)
		p.printed = time.Now()
	}
}

// done ends the progress line on a terminal.
func (p *printer) done() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.tty && p.shown > 0 {
		fmt.Fprintln(p.w)
		p.shown = 0
	}
}

// progressLine formats the counters of every client:
// published/durable/acknowledged/in the outbox/delivered/reconnects.
func progressLine(elapsed time.Duration, states []laneState, delivered []int) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%6.1fs", elapsed.Seconds())
	for i, s := range states {
		durable := "-"
		if s.hasDurable {
			durable = fmt.Sprint(s.durable)
		}
		fmt.Fprintf(&b, "  %s %d/%s/%d/%d/%d/%d", s.name, s.pub, durable, s.acked, s.queued, delivered[i], s.reconnects)
	}
	return b.String()
}

const progressLegend = "progress per client: published/durable/acknowledged/in outbox/delivered/reconnects"
