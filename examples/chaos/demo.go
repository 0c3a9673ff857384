package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/holdfast-mqtt/holdfast/internal/faultproxy"
	"github.com/holdfast-mqtt/holdfast/internal/testsub"
)

// rig is what a run of the demo sets up: the broker (unless external), the
// fault proxy, the subscriber and the two publishers' lanes.
type rig struct {
	broker     *localBroker // nil with -broker
	brokerAddr string
	proxy      *faultproxy.Proxy
	sub        *testsub.Subscriber
	lanes      []*lane  // Holdfast first
	topics     []string // one per lane
}

// newRig starts the broker, the proxy and the subscriber, and prepares
// the lanes (not started), with their directories under tmp.
func newRig(cfg config, tmp string) (*rig, error) {
	r := &rig{}
	if cfg.broker == "" {
		b, err := startLocal(filepath.Join(tmp, "broker"))
		if err != nil {
			return nil, err
		}
		r.broker, r.brokerAddr = b, b.Addr()
	} else {
		r.brokerAddr = strings.TrimPrefix(cfg.broker, "tcp://")
	}
	var err error
	if r.proxy, err = faultproxy.New(r.brokerAddr); err != nil {
		r.close()
		return nil, err
	}
	// A run id keeps sessions and topics of runs against one broker apart.
	runID := randomID()
	topic := func(client string) string { return "holdfast-chaos/" + runID + "/" + client }
	r.topics = []string{topic("holdfast"), topic("paho")}
	r.sub, err = testsub.Start(testsub.Options{
		Broker:   "tcp://" + r.brokerAddr, // not through the proxy
		ClientID: "hfchaos-" + runID + "-sub",
		Topics:   r.topics,
		QoS:      byte(cfg.qos),
	})
	if err != nil {
		r.close()
		return nil, err
	}
	base := childConfig{broker: r.proxy.URL(), qos: cfg.qos, start: 1, end: cfg.count, rate: cfg.rate,
		size: cfg.size, keepalive: cfg.keepalive}
	hf, pa := base, base
	hf.client, hf.clientID, hf.dir, hf.topic = "holdfast", "hfchaos-"+runID+"-hf", filepath.Join(tmp, "holdfast-outbox"), r.topics[0]
	pa.client, pa.clientID, pa.dir, pa.topic = "paho", "hfchaos-"+runID+"-pa", filepath.Join(tmp, "paho-store"), r.topics[1]
	r.lanes = []*lane{newLane("Holdfast", cfg.exe, hf), newLane("bare paho", cfg.exe, pa)}
	return r, nil
}

// close stops the subscriber, the proxy and the broker, in that order.
func (r *rig) close() {
	if r.sub != nil {
		r.sub.Close()
	}
	if r.proxy != nil {
		_ = r.proxy.Close()
	}
	if r.broker != nil {
		_ = r.broker.Close()
	}
}

// restarter is the broker the driver may restart: nil when external.
func (r *rig) restarter() restartable {
	if r.broker == nil {
		return nil
	}
	return r.broker
}

// demo runs the demo and returns its report. onProgress, when set, is
// called with a number that changes whenever anything progresses (tests
// watch it).
func demo(ctx context.Context, cfg config, stdout io.Writer, onProgress func(uint64)) (report, error) {
	rep := report{qos: cfg.qos}
	sp, err := parseFaults(cfg.faults)
	if err != nil {
		return rep, err
	}
	tmp, err := os.MkdirTemp("", "holdfast-chaos-")
	if err != nil {
		return rep, err
	}
	defer os.RemoveAll(tmp)
	r, err := newRig(cfg, tmp)
	if err != nil {
		return rep, err
	}
	defer r.close()

	pr := newPrinter(stdout)
	evs := sp.plan(cfg.seed, cfg.span())
	header(pr, cfg, r, evs)

	// Teardown order: the driver (it leaves the proxy forwarding and the
	// broker running), then the publishers, then the rig.
	start := time.Now()
	lanesCtx, stopLanes := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for _, l := range r.lanes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			l.run(lanesCtx)
		}()
	}
	lanesDone := make(chan struct{})
	go func() { wg.Wait(); close(lanesDone) }()
	defer func() { stopLanes(); <-lanesDone }()

	drv := &driver{proxy: r.proxy, broker: r.restarter(), subUp: r.sub.Connected, lanes: r.lanes, pr: pr, start: start, applied: map[kind]int{}}
	drvCtx, stopDriver := context.WithCancel(ctx)
	drvDone := make(chan struct{})
	go func() {
		defer close(drvDone)
		drv.run(drvCtx, evs)
	}()
	defer func() { stopDriver(); <-drvDone }()

	w := &watch{rig: r, pr: pr, start: start, onProgress: onProgress}
	if !w.follow(ctx, lanesDone, cfg.stall) {
		rep.notes = append(rep.notes, fmt.Sprintf("No progress for %v: the publishers were stopped.", cfg.stall))
	}
	stopDriver()
	<-drvDone
	stopLanes()
	<-lanesDone
	w.settle(ctx, cfg.quiet)
	rep.interrupted = ctx.Err() != nil

	for _, s := range drv.skipped {
		pr.event(s)
	}
	rep.applied = drv.applied
	pr.event(fmt.Sprintf("Faults applied: %s.", appliedSummary(drv.applied)))
	for i, l := range r.lanes {
		s := l.state()
		rep.rows = append(rep.rows, judge(s.name, s.accepted, r.sub.Arrivals(r.topics[i])))
		rep.runs = append(rep.runs, s.runs)
		rep.drained = append(rep.drained, s.drained)
		pr.event(s.describe())
		if s.bad != "" {
			rep.notes = append(rep.notes, fmt.Sprintf("%s printed an unexpected line: %s", s.name, s.bad))
		}
		if !s.drained && !rep.interrupted {
			if t := strings.TrimSpace(l.stderr.String()); t != "" {
				rep.notes = append(rep.notes, fmt.Sprintf("%s stderr (end):\n%s", s.name, t))
			}
		}
	}
	rep.write(stdout)
	return rep, nil
}

// header prints what runs, and the plan.
func header(pr *printer, cfg config, r *rig, evs []event) {
	rate := fmt.Sprintf("%g/s", cfg.rate)
	if cfg.rate <= 0 {
		rate = "full speed"
	}
	broker := cfg.broker + " (external: not restarted)"
	if r.broker != nil {
		broker = fmt.Sprintf("%s on %s", brokerNote, r.brokerAddr)
	}
	pr.event(fmt.Sprintf("Holdfast chaos demo: %d QoS %d messages per client at %s, seed %d", cfg.count, cfg.qos, rate, cfg.seed))
	pr.event("broker:     " + broker)
	pr.event("publishers: Holdfast (durable outbox, PublishAsync, resume point) and bare paho (FileStore,")
	pr.event("            CleanSession=false, AutoReconnect, ConnectRetry), child processes, through a fault proxy")
	pr.event(fmt.Sprintf("subscriber: QoS %d, persistent session, straight to the broker", cfg.qos))
	pr.event(fmt.Sprintf("faults:     %s (-faults %s)", summary(evs), cfg.faults))
	pr.event(progressLegend)
}

// watch follows a run: what the lanes report and what the subscriber
// received. Only the demo's goroutine uses it.
type watch struct {
	rig        *rig
	pr         *printer
	start      time.Time
	onProgress func(uint64)

	seen       []map[uint64]bool // per lane, the numbers that arrived
	read       []int             // per lane, the arrivals already looked at
	sig        uint64            // a sum that changes with any progress
	lastChange time.Time
}

// observe updates the progress line (force: print it even when it is not
// due) and reports whether every number accepted so far has arrived.
func (w *watch) observe(force bool) (allDelivered bool) {
	if w.seen == nil {
		w.seen = make([]map[uint64]bool, len(w.rig.lanes))
		for i := range w.seen {
			w.seen[i] = map[uint64]bool{}
		}
		w.read = make([]int, len(w.rig.lanes))
		w.lastChange = time.Now()
	}
	states := make([]laneState, len(w.rig.lanes))
	delivered := make([]int, len(w.rig.lanes))
	allDelivered = true
	var sig uint64
	for i, l := range w.rig.lanes {
		s := l.state()
		states[i] = s
		arr := w.rig.sub.Arrivals(w.rig.topics[i])
		for _, a := range arr[w.read[i]:] {
			w.seen[i][a.Seq] = true
		}
		w.read[i] = len(arr)
		delivered[i] = len(w.seen[i])
		sig += uint64(s.pub) + uint64(len(s.accepted)) + uint64(s.acked) + uint64(len(arr))
		for _, n := range s.accepted {
			if !w.seen[i][n] {
				allDelivered = false
				break
			}
		}
	}
	w.pr.progress(progressLine(time.Since(w.start), states, delivered), force)
	if sig != w.sig {
		w.sig, w.lastChange = sig, time.Now()
		if w.onProgress != nil {
			w.onProgress(sig)
		}
	}
	return allDelivered
}

// follow shows progress until the lanes are done (done closed) or ctx
// ends. It reports false if it gave up because nothing progressed for
// stall.
func (w *watch) follow(ctx context.Context, done <-chan struct{}, stall time.Duration) bool {
	tick := time.NewTicker(w.pr.every / 2)
	defer tick.Stop()
	for {
		select {
		case <-tick.C:
		case <-ctx.Done():
			return true
		case <-done:
			return true
		}
		w.observe(false)
		if time.Since(w.lastChange) > stall {
			return false
		}
	}
}

// settle waits until everything accepted has arrived, or nothing new has
// for quiet, or ctx ends; then it prints the last progress line.
func (w *watch) settle(ctx context.Context, quiet time.Duration) {
	tick := time.NewTicker(w.pr.every / 2)
	defer tick.Stop()
	w.lastChange = time.Now()
	for ctx.Err() == nil && !w.observe(false) && time.Since(w.lastChange) <= quiet {
		select {
		case <-tick.C:
		case <-ctx.Done():
		}
	}
	w.observe(true)
	w.pr.done()
}

// appliedSummary is summary for the faults applied.
func appliedSummary(applied map[kind]int) string {
	var evs []event
	for k, n := range applied {
		for range n {
			evs = append(evs, event{kind: k})
		}
	}
	return summary(evs)
}
