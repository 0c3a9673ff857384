package main

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
)

// runLines runs the program in-process (its embedded broker) and returns
// its stdout lines.
func runLines(t *testing.T, args ...string) []string {
	t.Helper()
	var out, errs bytes.Buffer
	if code := run(args, &out, &errs); code != 0 {
		t.Fatalf("run %v: status %d; stderr:\n%s", args, code, errs.String())
	}
	return strings.Split(strings.TrimSpace(out.String()), "\n")
}

// wantAccepted checks "accepted from..to" in order, then "drained".
func wantAccepted(t *testing.T, lines []string, from, to uint64) {
	t.Helper()
	want := []string{}
	for n := from; n <= to; n++ {
		want = append(want, fmt.Sprintf("accepted %d", n))
	}
	want = append(want, "drained")
	if strings.Join(lines, "\n") != strings.Join(want, "\n") {
		t.Fatalf("stdout:\n%s\nwant accepted %d..%d then drained", strings.Join(lines, "\n"), from, to)
	}
}

// TestResumeAfterTheLastAccepted: a run restarted on the same outbox with a
// -start at or below the last number the outbox accepted prints those
// numbers without publishing them again and goes on after them; -pipeline
// 1 and the pipelined default print the same lines.
func TestResumeAfterTheLastAccepted(t *testing.T) {
	dir := t.TempDir()
	common := []string{"-outbox", dir, "-rate", "0", "-client-id", "resume-test"}
	wantAccepted(t, runLines(t, append(common, "-count", "300")...), 1, 300)
	wantAccepted(t, runLines(t, append(common, "-start", "250", "-count", "100", "-pipeline", "1")...), 250, 349)
	wantAccepted(t, runLines(t, append(common, "-start", "349", "-count", "2")...), 349, 350)
	// Entirely below the resume point: nothing is published, all is printed.
	wantAccepted(t, runLines(t, append(common, "-start", "10", "-count", "5")...), 10, 14)
}
