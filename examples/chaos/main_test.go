//go:build unix

package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/holdfast-mqtt/holdfast/internal/leakcheck"
	"github.com/holdfast-mqtt/holdfast/internal/testsub"
)

// TestMain runs the test binary as a publisher when the demo starts it as
// one (the demo re-executes its own program), and checks for leaked
// goroutines otherwise.
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == childFlag {
		os.Exit(childMain(os.Args[2:], os.Stdout, os.Stderr))
	}
	// mochi's Badger storage hook leaves its garbage-collection loop parked
	// after the embedded broker closes (see examples/internal/embedbroker).
	os.Exit(leakcheck.Run(m, leakcheck.IgnoreTopFunction("github.com/mochi-mqtt/server/v2/hooks/storage/badger.(*Hook).gcLoop")))
}

// stallBound fails a demo run that makes no progress for this long. There
// is no bound on a run's total time: a slow machine is not a failure.
const stallBound = 90 * time.Second

// runDemo runs the demo's main path in this process with args (the
// publishers are child processes of the test binary), failing the test if
// it stops progressing. It returns the report, the exit status and the
// output.
func runDemo(t *testing.T, args ...string) (report, int, string) {
	t.Helper()
	cfg, err := parseFlags(args, os.Stderr)
	if err != nil {
		t.Fatalf("flags %q: %v", args, err)
	}
	if cfg.exe, err = os.Executable(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	progress := make(chan uint64, 1)
	type result struct {
		rep report
		err error
	}
	done := make(chan result, 1)
	var out syncBuffer
	go func() {
		rep, err := demo(ctx, cfg, &out, func(n uint64) {
			select {
			case progress <- n:
			default:
			}
		})
		done <- result{rep, err}
	}()
	stall := time.NewTimer(stallBound)
	defer stall.Stop()
	for {
		select {
		case <-progress:
			stall.Reset(stallBound)
		case <-stall.C:
			cancel()
			<-done
			t.Fatalf("no progress for %v; output:\n%s", stallBound, out.String())
		case r := <-done:
			if r.err != nil {
				t.Fatalf("demo: %v; output:\n%s", r.err, out.String())
			}
			return r.rep, r.rep.exitCode(), out.String()
		}
	}
}

// TestVerdict runs the demo under faults of every kind against the
// embedded broker, and once against a broker given with -broker, and
// asserts Holdfast's row: everything accepted delivered, nothing
// reordered, and at QoS 2 nothing duplicated; exit status 0. The bare paho
// row is only logged.
func TestVerdict(t *testing.T) {
	local, err := startLocal(filepath.Join(t.TempDir(), "broker"))
	if err != nil {
		t.Fatal(err)
	}
	defer local.Close()
	cases := []struct {
		name     string
		args     []string
		restarts int
	}{
		{"embedded-qos2", []string{"-qos", "2", "-faults", "cut@0.8s,kill@1.4s,restart@2s/0.5s,outage@3.2s/0.5s,kill@3.6s,cut@4.4s"}, 1},
		{"external-qos1", []string{"-qos", "1", "-broker", "tcp://" + local.Addr(), "-faults", "cut@0.8s,kill@1.4s,outage@2s/0.5s,kill@3s,restart@3.5s"}, 0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			const count = 500
			args := append([]string{"-count", "500", "-rate", "100", "-seed", "3"}, c.args...)
			rep, code, out := runDemo(t, args...)
			t.Logf("output:\n%s", out)
			if len(rep.rows) != 2 || rep.rows[0].name != "Holdfast" {
				t.Fatalf("rows %+v, want Holdfast's first", rep.rows)
			}
			h, p := rep.rows[0], rep.rows[1]
			t.Logf("bare paho: accepted %d, delivered %d, lost %d, duplicated %d, reordered %d",
				p.accepted, p.delivered, p.lost, p.duplicated, p.reordered)
			if h.accepted != count || h.lost != 0 || h.reordered != 0 || h.unexpected != 0 {
				t.Errorf("Holdfast: accepted %d (want %d), lost %d, reordered %d, unexpected %d; want 0 of each",
					h.accepted, count, h.lost, h.reordered, h.unexpected)
			}
			if rep.qos == 2 && h.duplicated != 0 {
				t.Errorf("Holdfast at QoS 2: %d duplicates", h.duplicated)
			}
			if code != 0 {
				t.Errorf("exit status %d, want 0", code)
			}
			// The faults were applied: the run could not pass vacuously.
			if rep.applied[kindKill] != 2 || rep.applied[kindCut] < 1 || rep.applied[kindOutage] != 1 || rep.applied[kindRestart] != c.restarts {
				t.Errorf("faults applied %v", rep.applied)
			}
			if rep.runs[0] < 3 || !rep.drained[0] {
				t.Errorf("Holdfast: %d processes, drained %v; want 3 (two kills) and drained", rep.runs[0], rep.drained[0])
			}
			if c.restarts == 0 && !strings.Contains(out, "broker restarts skipped") {
				t.Error("the skipped restart is not reported")
			}
			if !strings.Contains(out, "Holdfast lost nothing") {
				t.Error("no verdict line")
			}
		})
	}
}

func TestFlags(t *testing.T) {
	for _, bad := range [][]string{{"-qos", "0"}, {"-qos", "3"}, {"-count", "0"}, {"-rate", "-1"},
		{"-broker", "ssl://x:8883"}, {"-faults", "earthquake"}, {"-faults", "cut@x"}, {"-faults", "kill@1s/2s"}, {"extra"}} {
		var stderr bytes.Buffer
		if code := run(bad, &bytes.Buffer{}, &stderr); code != 2 {
			t.Errorf("run(%q) = %d, want 2", bad, code)
		}
	}
	cfg, err := parseFlags([]string{"-broker", "mqtt://example.org"}, os.Stderr)
	if err != nil || cfg.broker != "tcp://example.org:1883" {
		t.Errorf("-broker mqtt://example.org: %q, %v", cfg.broker, err)
	}
	if cfg.count != 2000 || cfg.rate != 100 || cfg.qos != 2 || cfg.faults != "default" || cfg.span() != 20*time.Second {
		t.Errorf("defaults %+v", cfg)
	}
}

func TestParseFaults(t *testing.T) {
	sp, err := parseFaults("cut=3, kill, outage@2s, blackhole@5s/1.5s, restart@9s")
	if err != nil {
		t.Fatal(err)
	}
	if sp.chaos || sp.counts[kindCut] != 3 || sp.counts[kindKill] != 1 {
		t.Errorf("counts %v, chaos %v", sp.counts, sp.chaos)
	}
	want := []event{
		{at: 2 * time.Second, kind: kindOutage, dur: 1500 * time.Millisecond},
		{at: 5 * time.Second, kind: kindBlackhole, dur: 1500 * time.Millisecond},
		{at: 9 * time.Second, kind: kindRestart, dur: time.Second},
	}
	if !reflect.DeepEqual(sp.timed, want) {
		t.Errorf("timed %v, want %v", sp.timed, want)
	}
	def, err := parseFaults("default")
	if err != nil || !def.chaos || def.counts[kindKill] != 4 || def.counts[kindRestart] != 1 {
		t.Errorf("default: %+v, %v", def, err)
	}
	if none, err := parseFaults("none"); err != nil || len(none.plan(1, time.Minute)) != 0 {
		t.Errorf("none: %+v, %v", none, err)
	}
}

// TestPlan: a plan is a function of the seed; lasting faults do not
// overlap and end before the span does; the timed faults are kept.
func TestPlan(t *testing.T) {
	sp, _ := parseFaults("default,restart@3s")
	const span = 20 * time.Second
	a, b := sp.plan(7, span), sp.plan(7, span)
	if !reflect.DeepEqual(a, b) {
		t.Fatal("the same seed gave two plans")
	}
	if reflect.DeepEqual(a, sp.plan(8, span)) {
		t.Fatal("two seeds gave the same plan")
	}
	counts := map[kind]int{}
	var lastEnd time.Duration
	for i, e := range a {
		counts[e.kind]++
		if i > 0 && e.at < a[i-1].at {
			t.Errorf("not sorted at %v", e)
		}
		if e.kind.windowed() {
			if e.at < lastEnd {
				t.Errorf("%v overlaps the fault before", e)
			}
			lastEnd = e.at + e.dur
			if lastEnd > span-planTail && e.at != 3*time.Second {
				t.Errorf("%v ends after the span less its tail", e)
			}
		}
	}
	if counts[kindKill] != 4 || counts[kindRestart] != 2 || counts[kindOutage] < 1 || counts[kindBlackhole] < 1 || counts[kindCut] < 1 {
		t.Errorf("plan %v: counts %v", a, counts)
	}
}

// TestJudge: losses, duplicates and late first arrivals are counted; a
// first arrival that is the broker's resend (DUP) is not checked for order.
func TestJudge(t *testing.T) {
	arr := func(seqs ...int) []testsub.Arrival {
		var out []testsub.Arrival
		for _, s := range seqs {
			a := testsub.Arrival{Seq: uint64(s)}
			if s < 0 {
				a = testsub.Arrival{Seq: uint64(-s), Dup: true}
			}
			out = append(out, a)
		}
		return out
	}
	accepted := []uint64{1, 2, 3, 4, 5, 6}
	r := judge("x", accepted, arr(1, 3, 2, 3, 5, -4, 9))
	if r.accepted != 6 || r.delivered != 5 || r.lost != 1 || r.duplicated != 1 || r.reordered != 1 || r.resent != 1 || r.unexpected != 1 {
		t.Errorf("judge: %+v", r)
	}
	if r.firstLost[0] != 6 || r.firstReord[0] != 2 {
		t.Errorf("examples: lost %v, reordered %v", r.firstLost, r.firstReord)
	}
}

// syncBuffer is a bytes.Buffer safe for concurrent use.
type syncBuffer struct {
	mu sync.Mutex // guards b
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
