package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/holdfast-mqtt/holdfast/client"
	"github.com/holdfast-mqtt/holdfast/internal/mosquitto"
)

// RSS is the peak memory of a process holding a large backlog.
type RSS struct {
	Messages   int    `json:"messages"`
	Profile    string `json:"profile"`
	Durability string `json:"durability"`
	Goroutines int    `json:"goroutines"`
	// BuildSeconds is how long publishing the backlog took (broker
	// unreachable).
	BuildSeconds float64 `json:"build_seconds"`
	BuildPerSec  float64 `json:"build_msg_per_s"`
	// Peak RSS (VmHWM, KiB) after building the backlog, after reopening the
	// outbox in a fresh client (the restart path), and after draining it to
	// the broker (when DrainSeconds > 0).
	HWMBuildKiB  int64 `json:"hwm_after_build_kib"`
	HWMReopenKiB int64 `json:"hwm_after_reopen_kib"`
	HWMDrainKiB  int64 `json:"hwm_after_drain_kib,omitempty"`
	// RSSEndKiB is VmRSS at the end.
	RSSEndKiB int64 `json:"rss_end_kib"`
	// RssAnon (heap, stacks) and RssFile (Badger's memory-mapped files)
	// right after building and after reopening, in KiB: what the peak is
	// made of.
	AnonBuildKiB  int64 `json:"rss_anon_after_build_kib"`
	FileBuildKiB  int64 `json:"rss_file_after_build_kib"`
	AnonReopenKiB int64 `json:"rss_anon_after_reopen_kib"`
	FileReopenKiB int64 `json:"rss_file_after_reopen_kib"`
	// PeakAnonKiB and PeakFileKiB are RssAnon and RssFile at the highest
	// VmRSS seen by a 50ms sampler (the peak's make-up); MaxAnonKiB and
	// MaxFileKiB are the highest of each seen.
	PeakAnonKiB int64 `json:"rss_anon_at_peak_kib"`
	PeakFileKiB int64 `json:"rss_file_at_peak_kib"`
	MaxAnonKiB  int64 `json:"rss_anon_max_kib"`
	MaxFileKiB  int64 `json:"rss_file_max_kib"`
	// GoMemLimit is the GOMEMLIMIT the child ran with ("" for none).
	GoMemLimit string `json:"gomemlimit,omitempty"`
	// ReopenSeconds is how long New took on the full outbox.
	ReopenSeconds float64 `json:"reopen_seconds"`
	DrainSeconds  float64 `json:"drain_seconds,omitempty"`
	DrainPerSec   float64 `json:"drain_msg_per_s,omitempty"`
	// Go runtime figures at the peak phase (after building).
	GoHeapSysKiB   int64 `json:"go_heap_sys_kib"`
	GoSysKiB       int64 `json:"go_sys_kib"`
	GoHeapInuseKiB int64 `json:"go_heap_inuse_kib"`
	NumGC          int64 `json:"num_gc"`
	DiskKiB        int64 `json:"outbox_disk_kib"`
	Queued         int   `json:"queued_after_reopen"`
	PeakKiB        int64 `json:"peak_kib"`
	Pass           bool  `json:"pass"`
}

// rssLimitKiB is the target: the whole process under 64 MiB.
const rssLimitKiB = 64 << 10

// runRSS runs the RSS child and returns its report.
func runRSS(ctx context.Context, e *env) (*RSS, error) {
	dir := e.caseDir("rss")
	defer os.RemoveAll(dir)
	port, err := mosquitto.FreePort() // nothing listens there: the broker is unreachable
	if err != nil {
		return nil, err
	}
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	brokers := "tcp://127.0.0.1:" + strconv.Itoa(port)
	if e.cfg.rssDrain {
		brokers += "," + e.broker.URL()
	}
	args := []string{"-child", "rss", "-child-dir", dir, "-child-n", strconv.Itoa(e.cfg.rssN), "-child-broker", brokers,
		"-rss-goroutines", strconv.Itoa(e.cfg.childGoroutines), "-size", strconv.Itoa(e.cfg.size), "-max-payload", strconv.Itoa(e.cfg.maxPayload)}
	if e.cfg.childMemProfile != "" {
		args = append(args, "-rss-memprofile", e.cfg.childMemProfile)
	}
	if e.cfg.verbose {
		args = append(args, "-v")
	}
	e.logf("rss: child process with a %d-message backlog", e.cfg.rssN)
	cmd := exec.CommandContext(ctx, exe, args...)
	if e.cfg.rssMemLimit != "" {
		cmd.Env = append(os.Environ(), "GOMEMLIMIT="+e.cfg.rssMemLimit)
	}
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = os.Stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("child: %w", err)
	}
	var r RSS
	if err := json.Unmarshal(out.Bytes(), &r); err != nil {
		return nil, fmt.Errorf("child output %q: %w", out.String(), err)
	}
	e.logf("rss: peak %d KiB (build %d, reopen %d, drain %d)", r.PeakKiB, r.HWMBuildKiB, r.HWMReopenKiB, r.HWMDrainKiB)
	return &r, nil
}

// rssChild is the child process: -child-broker is "unreachable,real"; the
// backlog is built against the unreachable one, then drained to the real
// one if given.
func rssChild(ctx context.Context, cfg *config, stdout io.Writer) error {
	if cfg.childDir == "" || cfg.childN <= 0 || cfg.childBroker == "" {
		return errors.New("-child-dir, -child-n and -child-broker are required")
	}
	logf := func(string, ...any) {}
	if cfg.verbose {
		logf = func(format string, args ...any) {
			fmt.Fprintf(os.Stderr, "%s hfbench rss: %s\n", time.Now().Format("15:04:05.000"), fmt.Sprintf(format, args...))
		}
	}
	unreachable, real, _ := strings.Cut(cfg.childBroker, ",")
	n, g := cfg.childN, cfg.childGoroutines
	r := RSS{Messages: n, Profile: "device", Durability: "group", Goroutines: g, GoMemLimit: os.Getenv("GOMEMLIMIT")}
	newClient := func(broker string) (*client.Client, error) {
		return client.New(client.Config{Brokers: []string{broker}, ClientID: "hfbench-rss", OutboxDir: cfg.childDir, MaxPayload: cfg.maxPayload})
	}

	stopSampler := sampleRSS(&r)
	defer stopSampler()
	c, err := newClient(unreachable)
	if err != nil {
		return err
	}
	start := time.Now()
	_, err = drive(g, n, func(w, i int) error {
		p := make([]byte, cfg.size) // a fresh payload, as an application would build it
		binary.BigEndian.PutUint64(p, uint64(i+1))
		_, err := c.Publish(ctx, "bench/rss", p, client.QoS1)
		if i%100_000 == 0 {
			logf("%d published, VmHWM %d KiB", i, procStatusKiB("VmHWM"))
		}
		return err
	}, nil)
	if err != nil {
		return err
	}
	build := time.Since(start)
	r.BuildSeconds, r.BuildPerSec = build.Seconds(), perSecond(n, build)
	r.HWMBuildKiB = procStatusKiB("VmHWM")
	r.AnonBuildKiB, r.FileBuildKiB = procStatusKiB("RssAnon"), procStatusKiB("RssFile")
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	r.GoHeapSysKiB, r.GoSysKiB, r.GoHeapInuseKiB, r.NumGC = int64(ms.HeapSys>>10), int64(ms.Sys>>10), int64(ms.HeapInuse>>10), int64(ms.NumGC)
	logf("built in %v, VmHWM %d KiB", build, r.HWMBuildKiB)
	if err := heapProfile(cfg.childMemProfile, "build"); err != nil {
		return err
	}
	if err := closeShort(c); err != nil && !errors.Is(err, client.ErrNotDrained) {
		return fmt.Errorf("close after build: %w", err)
	}

	start = time.Now()
	c, err = newClient(unreachable)
	if err != nil {
		return fmt.Errorf("reopen: %w", err)
	}
	r.ReopenSeconds = time.Since(start).Seconds()
	r.Queued = c.Stats().Queued
	r.HWMReopenKiB = procStatusKiB("VmHWM")
	r.AnonReopenKiB, r.FileReopenKiB = procStatusKiB("RssAnon"), procStatusKiB("RssFile")
	if err := heapProfile(cfg.childMemProfile, "reopen"); err != nil {
		return err
	}
	if err := closeShort(c); err != nil && !errors.Is(err, client.ErrNotDrained) {
		return fmt.Errorf("close after reopen: %w", err)
	}
	r.DiskKiB = diskKiB(cfg.childDir)
	logf("reopened in %.2fs with %d queued, VmHWM %d KiB", r.ReopenSeconds, r.Queued, r.HWMReopenKiB)

	if real != "" {
		c, err = newClient(real)
		if err != nil {
			return fmt.Errorf("reopen for the drain: %w", err)
		}
		start = time.Now()
		fctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
		err = c.Flush(fctx)
		cancel()
		d := time.Since(start)
		if cerr := closeClient(c); err == nil {
			err = cerr
		}
		if err != nil {
			return fmt.Errorf("drain: %w", err)
		}
		r.DrainSeconds, r.DrainPerSec = d.Seconds(), perSecond(n, d)
		r.HWMDrainKiB = procStatusKiB("VmHWM")
		logf("drained in %v, VmHWM %d KiB", d, r.HWMDrainKiB)
	}
	stopSampler()
	r.RSSEndKiB = procStatusKiB("VmRSS")
	r.PeakKiB = max(r.HWMBuildKiB, r.HWMReopenKiB, r.HWMDrainKiB)
	r.Pass = r.PeakKiB < rssLimitKiB
	return json.NewEncoder(stdout).Encode(r)
}

// sampleRSS records the make-up of the resident set every 50ms until the
// returned function is called (idempotent).
func sampleRSS(r *RSS) (stop func()) {
	quit, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(50 * time.Millisecond)
		defer t.Stop()
		var peak int64
		for {
			anon, file := procStatusKiB("RssAnon"), procStatusKiB("RssFile")
			if anon+file > peak {
				peak, r.PeakAnonKiB, r.PeakFileKiB = anon+file, anon, file
			}
			r.MaxAnonKiB, r.MaxFileKiB = max(r.MaxAnonKiB, anon), max(r.MaxFileKiB, file)
			select {
			case <-t.C:
			case <-quit:
				return
			}
		}
	}()
	var once sync.Once
	return func() {
		once.Do(func() {
			close(quit)
			<-done
		})
	}
}

// heapProfile writes prefix-phase.pprof (nothing when prefix is empty).
func heapProfile(prefix, phase string) error {
	if prefix == "" {
		return nil
	}
	f, err := os.Create(prefix + "-" + phase + ".pprof")
	if err != nil {
		return err
	}
	defer f.Close()
	return pprof.WriteHeapProfile(f)
}

// closeShort closes a client that cannot drain (the broker is unreachable).
func closeShort(c *client.Client) error {
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	return c.Close(ctx)
}

// diskKiB returns the size of the files under dir.
func diskKiB(dir string) int64 {
	var total int64
	_ = filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			if fi, err := d.Info(); err == nil {
				total += fi.Size()
			}
		}
		return nil
	})
	return total >> 10
}
