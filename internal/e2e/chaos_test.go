package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/holdfast-mqtt/holdfast/internal/faultproxy"
	"github.com/holdfast-mqtt/holdfast/internal/testbroker"
)

// Shape of a chaos run.
const (
	defaultChaos    = 60 * time.Second // chaos phase without -holdfast.soak
	laneRate        = 300              // messages per second per lane
	laneSize        = 64               // payload bytes
	laneKeepAlive   = 2 * time.Second  // publishers' keepalive: black holes are noticed in about 3s
	finalCount      = 300              // messages published by each lane's final run
	finalTimeout    = 60 * time.Second // for a final run to drain and exit
	deliveryTimeout = 60 * time.Second // after the final runs, for every accepted number to arrive
	quietPeriod     = 5 * time.Second  // a child whose losses are only reported: arrivals have stopped
	settlePeriod    = time.Second      // no arrival for this long: late duplicates are in
	settleTimeout   = 10 * time.Second
	stderrShown     = 3000 // bytes of a run's stderr shown in a diagnosis
)

// lanes of every chaos run: one per QoS.
var laneSpecs = []struct {
	name, topic string
	qos         int
}{
	{"q1", "e2e/q1", 1},
	{"q2", "e2e/q2", 2},
}

// child is the publisher program of a chaos run.
type child struct {
	pkg string
	// promise: the child is Holdfast, and its promise is asserted. Otherwise
	// losses, reordering and duplicates are measured and reported only.
	promise bool
}

// TestChaos runs Holdfast's telemetry example as the publisher of two lanes
// (QoS 1 and QoS 2) through a fault proxy to Mosquitto, under connection
// cuts, outages, black holes, broker restarts and SIGKILLs, and asserts
// zero loss, zero reordering, and exactly-once QoS 2.
func TestChaos(t *testing.T) {
	runChaos(t, child{pkg: pkgTelemetry, promise: true})
}

// TestChaosBarePaho runs the same schedule (same seed) with bare paho
// configured as its documentation suggests, and reports what it lost. It
// asserts only that the harness did its work.
func TestChaosBarePaho(t *testing.T) {
	runChaos(t, child{pkg: pkgBarePaho})
}

// The seed is chosen once per test run, so both tests follow one schedule.
var seed struct {
	once sync.Once
	v    uint64
	err  error
}

func chaosSeed(t testing.TB) uint64 {
	t.Helper()
	seed.once.Do(func() {
		if s := os.Getenv(EnvSeed); s != "" {
			seed.v, seed.err = strconv.ParseUint(s, 10, 64)
		} else {
			seed.v = uint64(time.Now().UnixNano())
		}
	})
	if seed.err != nil {
		t.Fatalf("%s: %v", EnvSeed, seed.err)
	}
	return seed.v
}

// logDir returns where the children's logs go: $HOLDFAST_E2E_LOGDIR/<test>
// if set, else a temp dir of the test.
func logDir(t testing.TB) string {
	t.Helper()
	base := os.Getenv(EnvLogDir)
	if base == "" {
		return t.TempDir()
	}
	dir := filepath.Join(base, t.Name())
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

func runChaos(t *testing.T, c child) {
	if testing.Short() {
		t.Skip("e2e chaos test (about 75s): skipped with -short")
	}
	began := time.Now()
	seedV := chaosSeed(t)
	total := defaultChaos
	if *soak > 0 {
		total = *soak
	}
	bin := buildChild(t, c.pkg)
	dir := logDir(t)

	m := testbroker.StartMosquitto(t, testbroker.MosquittoOptions{})
	proxy, err := faultproxy.New(m.Addr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { proxy.Close() })

	topics := make([]string, len(laneSpecs))
	for i, s := range laneSpecs {
		topics[i] = s.topic
	}
	sub, err := NewSubscriber(m.URL(), "e2e-subscriber", topics)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sub.Close)

	lanes := make([]*Lane, len(laneSpecs))
	for i, s := range laneSpecs {
		lanes[i] = NewLane(LaneConfig{
			Name: s.name, Binary: bin, Broker: proxy.URL(), ClientID: "e2e-" + s.name,
			Dir: filepath.Join(t.TempDir(), s.name), Topic: s.topic, QoS: s.qos,
			Rate: laneRate, Size: laneSize, KeepAlive: laneKeepAlive, LogDir: dir,
		})
		t.Cleanup(lanes[i].Close)
	}

	params := defaultParams(total, len(lanes))
	sched := NewSchedule(seedV, params)
	planned := countKinds(sched)
	t.Logf("seed %d (%s=%d repeats it); chaos phase %v: %d cuts, %d outages, %d black holes, %d broker restarts, %d SIGKILLs; logs in %s",
		seedV, EnvSeed, seedV, total, planned[EvCut], planned[EvOutage], planned[EvBlackholeStart], planned[EvRestart], planned[EvKill], dir)

	t0 := time.Now()
	for _, l := range lanes {
		l.Start(t)
	}
	executed := drive(t, t0, total, sched, proxy, m, lanes)

	// Every fault off; each lane's last chaos run is stopped with SIGTERM and
	// a final run publishes finalCount more and drains.
	proxy.SetBlackhole(false)
	proxy.SetRefuse(false)
	finishErrs := finish(lanes)
	complete := waitDelivery(sub, lanes, c.promise)

	rep := &Report{
		Test: t.Name(), Child: c.pkg, Time: began, Seed: seedV, Chaos: total.String(),
		Rate: laneRate, Size: laneSize, Complete: complete,
		Proxy: proxy.Stats(), Subscriber: sub.Stats(), Runs: map[string][]Run{}, Events: executed, LogDir: dir,
	}
	done := countKinds(executed)
	rep.Cuts, rep.Outages, rep.Blackholes, rep.Restarts, rep.Kills = done[EvCut], done[EvOutage], done[EvBlackholeStart], done[EvRestart], done[EvKill]
	arrivals := make([][]Arrival, len(lanes))
	runs := make([][]Run, len(lanes))
	for i, s := range laneSpecs {
		runs[i], arrivals[i] = lanes[i].Runs(), sub.Arrivals(s.topic)
		rep.Lanes = append(rep.Lanes, analyse(s.name, s.topic, s.qos, runs[i], arrivals[i]))
		rep.Runs[s.name] = runs[i]
	}
	for _, err := range finishErrs {
		if err != nil {
			rep.Problems = append(rep.Problems, err.Error())
		}
	}
	rep.Elapsed = time.Since(began).Round(time.Second).String()

	// The harness must have done its work, whatever the child.
	checkHarness(t, rep, planned, params)
	if c.promise {
		checkPromise(t, rep)
	} else {
		for _, l := range rep.Lanes {
			t.Logf("%s (QoS %d) measured: %d accepted, %d lost, %d reordered, %d duplicates (%d unexpected), %d unexpected exits; lost: %v; reordered: %v",
				l.Lane, l.QoS, l.Accepted, l.Lost, l.Reordered, l.Duplicates, l.UnexpectedDuplicates, l.UnexpectedExits, l.LostSeqs, l.ReorderedExamples)
		}
	}
	for _, p := range rep.Problems {
		t.Logf("problem: %s", p)
	}
	t.Logf("summary:\n%s", rep.summary())
	writeReport(t, rep)

	if t.Failed() || os.Getenv(EnvLogDir) != "" {
		for i, s := range laneSpecs {
			if err := writeArrivals(dir, s.name, runs[i], arrivals[i], t0); err != nil {
				t.Errorf("e2e: %v", err)
			}
		}
		if err := os.WriteFile(filepath.Join(dir, "mosquitto.log"), []byte(m.Log()), 0o644); err != nil {
			t.Errorf("e2e: %v", err)
		}
	}
	if t.Failed() && c.promise {
		for i := range rep.Lanes {
			diagnose(t, rep.Lanes[i], runs[i], arrivals[i], executed, t0)
		}
		t.Logf("children's stderr, arrivals (<lane>-arrivals.txt), runs and the broker log are in %s (set %s to keep them)", dir, EnvLogDir)
	}
}

// drive executes the schedule in time, restarting a lane's publisher at
// once if it exits on its own, and returns the events as executed (At is
// when each happened). It returns when the chaos phase is over.
func drive(t *testing.T, t0 time.Time, total time.Duration, sched []Event, proxy *faultproxy.Proxy, m *testbroker.Mosquitto, lanes []*Lane) []Event {
	t.Helper()
	if len(lanes) != 2 {
		t.Fatalf("drive watches two lanes, got %d", len(lanes))
	}
	var executed []Event
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	exited := func(i int) {
		executed = append(executed, Event{At: time.Since(t0), Kind: EvExit, Lane: i})
		lanes[i].Restart(t)
	}
	for i := 0; ; {
		at := total
		if i < len(sched) {
			at = sched[i].At
		}
		timer.Reset(time.Until(t0.Add(at)))
		select {
		case <-timer.C:
		case <-lanes[0].Done():
			exited(0)
			continue
		case <-lanes[1].Done():
			exited(1)
			continue
		}
		if i == len(sched) {
			return executed
		}
		e := sched[i]
		i++
		switch e.Kind {
		case EvCut:
			proxy.Cut()
		case EvOutage:
			proxy.Outage(e.Dur)
		case EvBlackholeStart:
			proxy.SetBlackhole(true)
		case EvBlackholeEnd:
			proxy.SetBlackhole(false)
		case EvRestart:
			m.Restart(t)
		case EvKill:
			lanes[e.Lane].Kill(t)
		}
		e.At = time.Since(t0)
		executed = append(executed, e)
	}
}

// finish runs every lane's final instance in parallel.
func finish(lanes []*Lane) []error {
	errs := make([]error, len(lanes))
	var wg sync.WaitGroup
	for i, l := range lanes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = l.Finish(finalCount, finalTimeout)
		}()
	}
	wg.Wait()
	return errs
}

// waitDelivery waits until every accepted number of every lane has arrived
// (then a little longer, for late duplicates) and reports whether they all
// did. It gives up after deliveryTimeout or, unless strict, once nothing
// has arrived for quietPeriod.
func waitDelivery(sub *Subscriber, lanes []*Lane, strict bool) bool {
	complete := func() bool {
		for i, s := range laneSpecs {
			if analyse(s.name, s.topic, s.qos, lanes[i].Runs(), sub.Arrivals(s.topic)).Lost > 0 {
				return false
			}
		}
		return true
	}
	all := poll(deliveryTimeout, func() bool {
		return complete() || (!strict && time.Since(sub.Last()) > quietPeriod)
	}) && complete()
	poll(settleTimeout, func() bool { return time.Since(sub.Last()) > settlePeriod })
	return all
}

// poll evaluates cond every 100ms until it holds or timeout passes, and
// reports whether it held.
func poll(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		<-tick.C
	}
	return true
}

// checkHarness fails the test if the run could pass vacuously: faults not
// injected, publishers not killed, nothing published or received.
func checkHarness(t *testing.T, rep *Report, planned map[EventKind]int, p ScheduleParams) {
	t.Helper()
	switch {
	case rep.Restarts != planned[EvRestart] || rep.Restarts < p.MinRestarts:
		t.Errorf("harness: %d broker restarts, planned %d (at least %d)", rep.Restarts, planned[EvRestart], p.MinRestarts)
	case rep.Outages < p.MinOutages || rep.Blackholes < p.MinBlackholes || rep.Cuts == 0:
		t.Errorf("harness: %d outages, %d black holes, %d cuts: fewer than planned", rep.Outages, rep.Blackholes, rep.Cuts)
	case rep.Proxy.Cuts == 0:
		t.Errorf("harness: the proxy reset no connection")
	}
	for _, l := range rep.Lanes {
		if l.Kills < p.MinKills {
			t.Errorf("harness: lane %s: %d SIGKILLs, want at least %d", l.Lane, l.Kills, p.MinKills)
		}
		if l.Accepted == 0 || l.Received == 0 || l.Delivered == 0 {
			t.Errorf("harness: lane %s: %d accepted, %d received, %d delivered: nothing to judge", l.Lane, l.Accepted, l.Received, l.Delivered)
		}
		for _, e := range l.HarnessErrors {
			t.Errorf("harness: lane %s: %s", l.Lane, e)
		}
	}
}

// checkPromise asserts Holdfast's promise: every accepted number arrived,
// first arrivals in accepted order, QoS 2 exactly once (but for numbers
// published again after a kill), and every run behaved.
func checkPromise(t *testing.T, rep *Report) {
	t.Helper()
	for _, p := range rep.Problems {
		t.Errorf("%s", p)
	}
	for _, l := range rep.Lanes {
		if l.Lost > 0 {
			t.Errorf("lane %s (QoS %d): %d of %d accepted messages lost: %v", l.Lane, l.QoS, l.Lost, l.Accepted, l.LostSeqs)
		}
		if l.Reordered > 0 {
			t.Errorf("lane %s (QoS %d): %d messages reordered: %v", l.Lane, l.QoS, l.Reordered, l.ReorderedExamples)
		}
		if l.Unaccepted > 0 {
			t.Errorf("lane %s (QoS %d): %d numbers arrived that no run accepted: %v", l.Lane, l.QoS, l.Unaccepted, l.UnacceptedSeqs)
		}
		if l.UnexpectedExits > 0 {
			t.Errorf("lane %s (QoS %d): %d publisher runs exited on their own", l.Lane, l.QoS, l.UnexpectedExits)
		}
		switch {
		case l.QoS == 2 && l.UnexpectedDuplicates > 0:
			t.Errorf("lane %s (QoS 2): %d duplicates not explained by a kill before printing: %v", l.Lane, l.UnexpectedDuplicates, l.UnexpectedDupSeqs)
		case l.QoS == 1 && l.Duplicates > 0:
			t.Logf("lane %s (QoS 1): %d duplicates (allowed at QoS 1): %v", l.Lane, l.Duplicates, l.DuplicateSeqs)
		}
	}
}

// diagnose logs, for the first few lost, reordered, unexpectedly duplicated
// or unaccepted numbers of a lane, which run accepted them and when, how
// they arrived, the faults around that time, and the tail of the stderr of
// the runs that published them.
func diagnose(t *testing.T, l LaneResult, runs []Run, arrivals []Arrival, events []Event, t0 time.Time) {
	t.Helper()
	type finding struct {
		what string
		n    uint64
	}
	var fs []finding
	add := func(what string, ns []uint64) {
		for _, n := range ns[:min(len(ns), 5)] {
			fs = append(fs, finding{what, n})
		}
	}
	add("lost", l.LostSeqs)
	add("duplicated", l.UnexpectedDupSeqs)
	add("arrived unaccepted", l.UnacceptedSeqs)
	var reordered []uint64
	for _, ex := range l.ReorderedExamples {
		var n, after uint64
		if _, err := fmt.Sscanf(ex, "%d after %d", &n, &after); err == nil {
			reordered = append(reordered, n)
		}
	}
	add("reordered", reordered)

	byRun := map[int]bool{}
	for _, f := range fs {
		var b strings.Builder
		fmt.Fprintf(&b, "lane %s: %d %s.", l.Lane, f.n, f.what)
		at := time.Time{}
		if r, when := acceptedBy(runs, f.n); r != nil {
			at = when
			fmt.Fprintf(&b, " Accepted by run %d (start %d, %s at %.3fs) at %.3fs.", r.Index, r.Start, r.End, r.Ended.Sub(t0).Seconds(), when.Sub(t0).Seconds())
		}
		pub := publishedBy(runs, f.n)
		fmt.Fprintf(&b, " Runs that may have published it: %v.", pub)
		for _, a := range arrivals {
			if a.Seq == f.n {
				fmt.Fprintf(&b, "\n  arrived at %.3fs qos %d dup %t packet id %d", a.At.Sub(t0).Seconds(), a.QoS, a.Dup, a.ID)
			}
		}
		if f.what == "reordered" {
			for i, a := range arrivals {
				if a.Seq == f.n {
					lo := max(0, i-5)
					fmt.Fprintf(&b, "\n  arrivals around it: %v", seqsOf(arrivals[lo:min(len(arrivals), i+3)]))
					break
				}
			}
		}
		if !at.IsZero() {
			for _, e := range events {
				if d := e.At - at.Sub(t0); d > -5*time.Second && d < 5*time.Second {
					fmt.Fprintf(&b, "\n  event %s", e)
				}
			}
		}
		t.Log(b.String())
		for _, i := range pub {
			byRun[i] = true
		}
	}
	for _, i := range sortedKeys(func() map[uint64]bool {
		m := map[uint64]bool{}
		for i := range byRun {
			m[uint64(i)] = true
		}
		return m
	}()) {
		r := runs[i]
		t.Logf("lane %s run %d stderr (%s), last %d bytes:\n%s", l.Lane, r.Index, r.Stderr, stderrShown, stderrTail(r.Stderr, stderrShown))
	}
}

func seqsOf(as []Arrival) []uint64 {
	out := make([]uint64, len(as))
	for i, a := range as {
		out[i] = a.Seq
	}
	return out
}
