package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/holdfast-mqtt/holdfast/internal/faultproxy"
	"github.com/holdfast-mqtt/holdfast/internal/testbroker"
)

// Shape of a chaos run.
const (
	defaultChaos    = 60 * time.Second // chaos phase without -holdfast.soak
	laneRate        = 100              // messages per second per lane (Holdfast must keep up: see the package doc)
	laneSize        = 64               // payload bytes
	laneKeepAlive   = 2 * time.Second  // publishers' keepalive: black holes are noticed in about 3s
	finalCount      = 300              // messages published by each lane's final run
	finalTimeout    = 5 * time.Minute  // for a final run to drain and exit: a hang, not a slow drain
	deliveryStalled = 60 * time.Second // after the final runs: nothing arrived for this long ends the wait
	deliveryMaxWait = 10 * time.Minute // safety bound of that wait while arrivals keep coming
	quietPeriod     = 5 * time.Second  // a child whose losses are only reported: arrivals have stopped
	settlePeriod    = time.Second      // no arrival for this long: late duplicates are in
	settleTimeout   = 10 * time.Second
	stderrShown     = 3000 // bytes of a run's stderr shown in a diagnosis
	maxExits        = 10   // publisher exits on its own (not killed) before the test gives up
)

// lanes of every chaos run: one per QoS.
var laneSpecs = []struct {
	name, topic string
	qos         int
}{
	{"q1", "e2e/q1", 1},
	{"q2", "e2e/q2", 2},
}

// clientID is the MQTT client identifier of a lane's publisher.
func clientID(lane string) string { return "e2e-" + lane }

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

// rig is everything one chaos run sets up.
type rig struct {
	c      child
	seed   uint64
	total  time.Duration // chaos phase
	params ScheduleParams
	sched  []Event
	dir    string // logs
	m      *testbroker.Mosquitto
	proxy  *faultproxy.Proxy
	sub    *Subscriber
	lanes  []*Lane
}

// newRig builds the child, starts Mosquitto, the proxy and the subscriber,
// and prepares (without starting) the lanes. Everything is stopped by
// t.Cleanup.
func newRig(t *testing.T, c child) *rig {
	t.Helper()
	r := &rig{c: c, seed: chaosSeed(t), total: defaultChaos}
	if *soak > 0 {
		// Shorter phases cannot fit the minimum faults the issue asks for.
		r.total = max(*soak, defaultChaos)
	}
	bin := buildChild(t, c.pkg)
	r.dir = logDir(t)

	// No limit on messages in flight. The subscriber checks the order in
	// which the broker received the publishers' messages, but Mosquitto
	// 2.0.11 does not keep that order towards a subscriber whose in-flight
	// window (max_inflight_messages, 20 by default) is full: its log then
	// shows later message ids sent to the subscriber before earlier ones
	// (seen after a burst of resends; its documentation promises order only
	// with a window of 1). Unlimited, nothing is queued and the subscriber
	// sees the broker's receive order. The publishers' QoS 2 window stays
	// at Holdfast's default of 20 (the receive quota is tested in client/).
	// Debug: lateQoS2Resends reads the broker's per-packet log lines.
	r.m = testbroker.StartMosquitto(t, testbroker.MosquittoOptions{Extra: "max_inflight_messages 0\n", Debug: true})
	var err error
	if r.proxy, err = faultproxy.New(r.m.Addr()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.proxy.Close() })

	topics := make([]string, len(laneSpecs))
	for i, s := range laneSpecs {
		topics[i] = s.topic
	}
	if r.sub, err = NewSubscriber(r.m.URL(), "e2e-subscriber", topics); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.sub.Close)

	for _, s := range laneSpecs {
		l := NewLane(LaneConfig{
			Name: s.name, Binary: bin, Broker: r.proxy.URL(), ClientID: clientID(s.name),
			Dir: filepath.Join(t.TempDir(), s.name), Topic: s.topic, QoS: s.qos,
			Rate: laneRate, Size: laneSize, KeepAlive: laneKeepAlive, LogDir: r.dir,
		})
		t.Cleanup(l.Close)
		r.lanes = append(r.lanes, l)
	}
	r.params = defaultParams(r.total, len(r.lanes))
	r.sched = NewSchedule(r.seed, r.params)
	return r
}

func runChaos(t *testing.T, c child) {
	if testing.Short() {
		t.Skip("e2e chaos test (about 75s): skipped with -short")
	}
	began := time.Now()
	r := newRig(t, c)
	planned := countKinds(r.sched)
	t.Logf("seed %d (%s=%d repeats it); chaos phase %v: %d cuts, %d outages, %d black holes, %d broker restarts, %d SIGKILLs; logs in %s",
		r.seed, EnvSeed, r.seed, r.total, planned[EvCut], planned[EvOutage], planned[EvBlackholeStart], planned[EvRestart], planned[EvKill], r.dir)

	t0 := time.Now()
	for _, l := range r.lanes {
		l.Start(t)
	}
	executed := drive(t, t0, r.total, r.sched, r.proxy, r.m, r.lanes)

	// Every fault off; each lane's last chaos run is stopped with SIGTERM and
	// a final run publishes finalCount more and drains.
	r.proxy.SetBlackhole(false)
	r.proxy.SetRefuse(false)
	finishErrs := finish(r.lanes, (*Lane).Finish)
	complete := waitDelivery(r.sub, r.lanes, c.promise)
	var lostBefore []int
	if !c.promise {
		// A bare paho run that printed "drained" may still hold messages in
		// its store. One more run on the same store sends them: what is
		// lost after it is lost for good.
		for i, s := range laneSpecs {
			lostBefore = append(lostBefore, analyse(s.name, s.topic, s.qos, r.lanes[i].Runs(), r.sub.Arrivals(s.topic)).Lost)
		}
		finishErrs = append(finishErrs, finish(r.lanes, (*Lane).ExtraRun)...)
		complete = waitDelivery(r.sub, r.lanes, c.promise)
	}

	rep := &Report{
		Test: t.Name(), Child: c.pkg, Time: began, Seed: r.seed, Chaos: r.total.String(),
		Rate: laneRate, Size: laneSize, Complete: complete,
		Proxy: r.proxy.Stats(), Subscriber: r.sub.Stats(), Runs: map[string][]Run{}, Events: executed, LogDir: r.dir,
	}
	done := countKinds(executed)
	rep.Cuts, rep.Outages, rep.Blackholes, rep.Restarts, rep.Kills = done[EvCut], done[EvOutage], done[EvBlackholeStart], done[EvRestart], done[EvKill]
	brokerLog := r.m.Log()
	arrivals := make([][]Arrival, len(r.lanes))
	runs := make([][]Run, len(r.lanes))
	for i, s := range laneSpecs {
		runs[i], arrivals[i] = r.lanes[i].Runs(), r.sub.Arrivals(s.topic)
		res := analyse(s.name, s.topic, s.qos, runs[i], arrivals[i])
		if s.qos == 2 {
			res.LateResends = len(lateQoS2Resends(brokerLog, clientID(s.name)))
		}
		if lostBefore != nil {
			res.LostBeforeExtraRun = &lostBefore[i]
		}
		rep.Lanes = append(rep.Lanes, res)
		rep.Runs[s.name] = runs[i]
	}
	for _, err := range finishErrs {
		if err != nil {
			rep.Problems = append(rep.Problems, err.Error())
		}
	}
	rep.Elapsed = time.Since(began).Round(time.Second).String()

	// The harness must have done its work, whatever the child.
	checkHarness(t, rep, planned, r.params)
	if c.promise {
		checkPromise(t, rep)
	} else {
		for _, l := range rep.Lanes {
			t.Logf("%s (QoS %d) measured: %d accepted, %d lost (%d before an extra run on the same store), %d reordered, %d duplicates (%d unexpected), %d unexpected exits; lost: %v; reordered: %v",
				l.Lane, l.QoS, l.Accepted, l.Lost, *l.LostBeforeExtraRun, l.Reordered, l.Duplicates, l.UnexpectedDuplicates, l.UnexpectedExits, ranges(l.LostSeqs), l.ReorderedExamples[:min(len(l.ReorderedExamples), 10)])
		}
	}
	for _, p := range rep.Problems {
		t.Logf("problem: %s", p)
	}
	t.Logf("summary:\n%s", rep.summary())
	writeReport(t, rep)

	if t.Failed() || os.Getenv(EnvLogDir) != "" {
		for i, s := range laneSpecs {
			if err := writeArrivals(r.dir, s.name, runs[i], arrivals[i], t0); err != nil {
				t.Errorf("e2e: %v", err)
			}
		}
		if err := os.WriteFile(filepath.Join(r.dir, "mosquitto.log"), []byte(brokerLog), 0o644); err != nil {
			t.Errorf("e2e: %v", err)
		}
	}
	if t.Failed() && c.promise {
		for i, s := range laneSpecs {
			diagnose(t, rep.Lanes[i], runs[i], arrivals[i], executed, t0)
			if s.qos == 2 {
				id := clientID(s.name)
				if d := describeLateResends(brokerLog, id, lateQoS2Resends(brokerLog, id)); d != "" {
					t.Log(d)
				}
			}
		}
		keep := ""
		if os.Getenv(EnvLogDir) == "" {
			keep = fmt.Sprintf(" until the test ends (set %s to keep them)", EnvLogDir)
		}
		t.Logf("children's stderr, arrivals (<lane>-arrivals.txt), runs (<lane>-runs.txt) and the broker log are in %s%s", r.dir, keep)
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
	exits := make([]int, len(lanes))
	exited := func(i int) {
		executed = append(executed, Event{At: time.Since(t0), Kind: EvExit, Lane: i})
		if exits[i]++; exits[i] >= maxExits {
			runs := lanes[i].Runs()
			last := runs[len(runs)-1]
			t.Fatalf("lane %s: the publisher exited on its own %d times (a crash loop?); stopping. Last run %d (%s), stderr %s:\n%s",
				laneSpecs[i].name, exits[i], last.Index, last.ExitErr, last.Stderr, stderrTail(last.Stderr, stderrShown))
		}
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

// finish runs every lane's final (or extra) instance in parallel.
func finish(lanes []*Lane, run func(*Lane, uint64, time.Duration) error) []error {
	errs := make([]error, len(lanes))
	var wg sync.WaitGroup
	for i, l := range lanes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = run(l, finalCount, finalTimeout)
		}()
	}
	wg.Wait()
	return errs
}

// waitDelivery waits until every accepted number of every lane has arrived
// (then a little longer, for late duplicates) and reports whether they all
// did. It gives up once nothing has arrived for deliveryStalled
// (quietPeriod when not strict): it waits for progress, not for a speed.
func waitDelivery(sub *Subscriber, lanes []*Lane, strict bool) bool {
	complete := func() bool {
		for i, s := range laneSpecs {
			if analyse(s.name, s.topic, s.qos, lanes[i].Runs(), sub.Arrivals(s.topic)).Lost > 0 {
				return false
			}
		}
		return true
	}
	stalled := deliveryStalled
	if !strict {
		stalled = quietPeriod
	}
	all := poll(deliveryMaxWait, func() bool {
		return complete() || time.Since(sub.Last()) > stalled
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
// first arrivals in accepted order, QoS 2 exactly once (kills included),
// and every run behaved.
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
		case l.QoS == 2 && l.Duplicates > 0:
			// The telemetry resumes after the last number its outbox
			// accepted (the resume point), so not even a kill between the
			// commit and the printed line publishes a number twice.
			t.Errorf("lane %s (QoS 2): %d duplicates (%d of them after a kill before printing): %v", l.Lane, l.Duplicates, l.AllowedDuplicates, l.DuplicateSeqs)
		case l.QoS == 1 && l.Duplicates > 0:
			t.Logf("lane %s (QoS 1): %d duplicates (allowed at QoS 1): %v", l.Lane, l.Duplicates, l.DuplicateSeqs)
		}
	}
}
