package main

import (
	"cmp"
	"context"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"sync"
	"time"

	"github.com/holdfast-mqtt/holdfast/outbox"
)

// Implementations measured.
const (
	implPahoMem  = "paho-mem"  // bare paho, MemoryStore
	implPahoFile = "paho-file" // bare paho, FileStore
	implHoldfast = "hf"
)

// caseSpec is one throughput case.
type caseSpec struct {
	Name       string
	Impl       string
	QoS        byte
	Durability outbox.Durability // Holdfast only
	Goroutines int
	Messages   int
	Async      bool // Holdfast: PublishAsync (one loop, commits pipelined)
	Adapter    bool // Holdfast through its mqtt.Client adapter, in paho's loop (publish all, then wait the tokens)
}

// durabilityName is the short name used in case names.
func durabilityName(d outbox.Durability) string {
	switch d {
	case outbox.GroupCommit:
		return "group"
	case outbox.SyncEach:
		return "each"
	case outbox.NoSync:
		return "nosync"
	}
	return d.String()
}

// throughputCases lists the cases in run order: for each goroutine count,
// the bare paho baselines, then Holdfast.
func throughputCases(cfg *config) []caseSpec {
	n := cfg.n
	var specs []caseSpec
	for _, g := range cfg.goroutines {
		specs = append(specs,
			caseSpec{Name: fmt.Sprintf("paho-mem-q1-g%d", g), Impl: implPahoMem, QoS: 1, Goroutines: g, Messages: n},
			caseSpec{Name: fmt.Sprintf("paho-file-q1-g%d", g), Impl: implPahoFile, QoS: 1, Goroutines: g, Messages: n / 5},
			caseSpec{Name: fmt.Sprintf("paho-mem-q0-g%d", g), Impl: implPahoMem, QoS: 0, Goroutines: g, Messages: n},
		)
		for _, qos := range []byte{1, 2} {
			for _, d := range []outbox.Durability{outbox.GroupCommit, outbox.SyncEach, outbox.NoSync} {
				m := n
				switch {
				case d == outbox.SyncEach, qos == 2 && d != outbox.NoSync:
					m = n / 10
				case d == outbox.GroupCommit && g == 1:
					m = n / 5
				}
				specs = append(specs, caseSpec{
					Name: fmt.Sprintf("hf-q%d-%s-g%d", qos, durabilityName(d), g), Impl: implHoldfast,
					QoS: qos, Durability: d, Goroutines: g, Messages: m,
				})
			}
			if g == 1 {
				// One publishing loop with PublishAsync, default durability.
				specs = append(specs, caseSpec{
					Name: fmt.Sprintf("hf-q%d-group-async-g%d", qos, g), Impl: implHoldfast,
					QoS: qos, Durability: outbox.GroupCommit, Goroutines: g, Messages: n, Async: true,
				})
				if qos == 1 {
					// paho's own loop, through the mqtt.Client adapter.
					specs = append(specs, caseSpec{
						Name: fmt.Sprintf("hf-adapter-q%d-group-g%d", qos, g), Impl: implHoldfast,
						QoS: qos, Durability: outbox.GroupCommit, Goroutines: g, Messages: n, Adapter: true,
					})
				}
			}
		}
	}
	return specs
}

// CaseResult is the measurement of one throughput case.
type CaseResult struct {
	Name       string `json:"name"`
	Impl       string `json:"impl"`
	QoS        int    `json:"qos"`
	Durability string `json:"durability,omitempty"`
	Goroutines int    `json:"goroutines"`
	Messages   int    `json:"messages"`
	// Seconds from the first Publish to the last acknowledgement.
	Seconds   float64 `json:"seconds"`
	MsgPerSec float64 `json:"msg_per_s"`
	// PublishSeconds is when the last Publish call returned.
	PublishSeconds float64 `json:"publish_seconds"`
	// ClientCPU and BrokerCPU are CPU seconds (user+system) of this process
	// and of the broker during the measurement.
	ClientCPU float64 `json:"client_cpu_s"`
	BrokerCPU float64 `json:"broker_cpu_s"`
	// OtherCPU is the CPU seconds the rest of the machine used meanwhile
	// (stolen time included): load that skews the figure.
	OtherCPU float64 `json:"other_cpu_s"`
	// AllocsPerMsg and BytesPerMsg are this process's heap allocations
	// during the measurement, per message.
	AllocsPerMsg float64 `json:"allocs_per_msg"`
	BytesPerMsg  float64 `json:"alloc_bytes_per_msg"`
	// Runs holds every run's msg/s when -runs > 1 (the figures above are
	// those of the median run).
	Runs []float64 `json:"runs_msg_per_s,omitempty"`
	// Ratios to bare paho at the same goroutine count (QoS 1).
	RatioMem  float64 `json:"ratio_paho_mem,omitempty"`
	RatioFile float64 `json:"ratio_paho_file,omitempty"`
	Note      string  `json:"note,omitempty"`
}

// runner runs one measurement of a case and fills the timing fields.
type runner func(ctx context.Context, e *env, spec caseSpec) (CaseResult, error)

func runCase(ctx context.Context, e *env, spec caseSpec) (CaseResult, error) {
	var fn runner
	switch spec.Impl {
	case implPahoMem, implPahoFile:
		fn = runPaho
	case implHoldfast:
		fn = runHoldfast
	default:
		return CaseResult{}, fmt.Errorf("unknown implementation %q", spec.Impl)
	}
	var runs []CaseResult
	for range e.cfg.runs {
		r, err := fn(ctx, e, spec)
		if err != nil {
			return r, err
		}
		runs = append(runs, r)
	}
	slices.SortFunc(runs, func(a, b CaseResult) int { return cmp.Compare(a.MsgPerSec, b.MsgPerSec) })
	med := runs[len(runs)/2]
	if len(runs) > 1 {
		for _, r := range runs {
			med.Runs = append(med.Runs, r.MsgPerSec)
		}
	}
	return med, nil
}

// payloads returns n payloads of the template's size, each starting with its
// sequence number (first+i, big-endian uint64). They are made before the
// clock starts: bare paho keeps a reference to a payload until its
// acknowledgement, so buffers cannot be reused.
func (e *env) payloads(first uint64, n int) [][]byte {
	size := len(e.payload)
	buf := make([]byte, n*size)
	out := make([][]byte, n)
	for i := range out {
		p := buf[i*size : (i+1)*size : (i+1)*size]
		copy(p, e.payload)
		binary.BigEndian.PutUint64(p, first+uint64(i))
		out[i] = p
	}
	return out
}

// drive runs g goroutines; goroutine w publishes messages w, w+g, w+2g...
// of n through publish, then calls finish (which waits for that goroutine's
// acknowledgements, or does nothing). It returns when every goroutine
// returned; published is the time the last publish call returned.
func drive(g, n int, publish func(w, i int) error, finish func(w int) error) (published time.Duration, err error) {
	var wg sync.WaitGroup
	var mu sync.Mutex
	var firstErr error
	start := time.Now()
	var lastPub time.Duration
	for w := range g {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var perr error
			for i := w; i < n; i += g {
				if perr = publish(w, i); perr != nil {
					break
				}
			}
			d := time.Since(start)
			if perr == nil && finish != nil {
				perr = finish(w)
			}
			mu.Lock()
			lastPub = max(lastPub, d)
			if firstErr == nil {
				firstErr = perr
			}
			mu.Unlock()
		}()
	}
	wg.Wait()
	return lastPub, firstErr
}

// meter measures the CPU time of this process and of the broker, and this
// process's allocations, over an interval.
type meter struct {
	prof            *os.File // per-interval CPU profile (-cpuprofile-dir), or nil
	brokerPid       int
	start           time.Time
	self, brk, mach float64
	mallocs, bytes  uint64
}

// startMeter starts measuring; with -cpuprofile-dir it also profiles the
// interval into DIR/name.pprof.
func (e *env) startMeter(name string) *meter {
	m := startMeter(e.broker.Pid())
	if dir := e.cfg.cpuProfileDir; dir != "" && e.cfg.cpuProfile == "" {
		f, err := os.Create(filepath.Join(dir, name+".pprof"))
		if err == nil && pprof.StartCPUProfile(f) == nil {
			m.prof = f
		} else if f != nil {
			_ = f.Close()
		}
	}
	return m
}

func startMeter(brokerPid int) *meter {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	mach, _ := machineCPU()
	return &meter{brokerPid: brokerPid, start: time.Now(), self: selfCPU(), brk: procCPU(brokerPid), mach: mach, mallocs: ms.Mallocs, bytes: ms.TotalAlloc}
}

// restarted switches to a new broker process, counting all its CPU time.
func (m *meter) restarted(pid int) { m.brokerPid, m.brk = pid, 0 }

// stop fills r's CPU and allocation fields for n messages.
func (m *meter) stop(r *CaseResult, n int) {
	if m.prof != nil {
		pprof.StopCPUProfile()
		_ = m.prof.Close()
		m.prof = nil
	}
	self, brk := selfCPU(), procCPU(m.brokerPid)
	mach, _ := machineCPU()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	r.ClientCPU = self - m.self
	r.BrokerCPU = brk - m.brk
	r.OtherCPU = max(0, (mach-m.mach)-r.ClientCPU-r.BrokerCPU)
	r.AllocsPerMsg = float64(ms.Mallocs-m.mallocs) / float64(n)
	r.BytesPerMsg = float64(ms.TotalAlloc-m.bytes) / float64(n)
}

// minMessages is the fewest messages a case measures.
const minMessages = 500

// size picks the number of messages to measure: as many as the warm-up's
// rate (w messages in d) sends in -case-seconds, within [minMessages,
// spec.Messages]; spec.Messages when -case-seconds is 0.
func (e *env) size(spec caseSpec, w int, d time.Duration) int {
	if e.cfg.caseSeconds <= 0 || w <= 0 || d <= 0 {
		return spec.Messages
	}
	n := int(perSecond(w, d) * e.cfg.caseSeconds)
	return max(min(n, spec.Messages), min(minMessages, spec.Messages))
}

// warmup is the number of messages sent before a case is measured.
func warmup(n int) int { return min(1000, n/10) }

// measure runs one throughput case on a connected client: a warm-up of
// warmup(spec.Messages) messages, which also sizes the case, then the
// measured publish of the rest under the meter. publish sends msgs and
// returns when the last publish call returned (it waits for the
// acknowledgements before it returns).
func (e *env) measure(spec caseSpec, res *CaseResult, publish func(msgs [][]byte) (time.Duration, error)) error {
	w := warmup(spec.Messages)
	wstart := time.Now()
	if _, err := publish(e.payloads(0, w)); err != nil {
		return fmt.Errorf("warm-up: %w", err)
	}
	n := e.size(spec, w, time.Since(wstart))
	res.Messages = n
	msgs := e.payloads(1, n)
	m := e.startMeter(spec.Name)
	start := time.Now()
	pub, err := publish(msgs)
	elapsed := time.Since(start)
	m.stop(res, n)
	if err != nil {
		return err
	}
	res.Seconds = elapsed.Seconds()
	res.PublishSeconds = pub.Seconds()
	res.MsgPerSec = perSecond(n, elapsed)
	return nil
}

// perSecond returns n / d in messages per second.
func perSecond(n int, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return float64(n) / d.Seconds()
}
