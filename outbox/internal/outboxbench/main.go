// Command outboxbench measures the outbox in one run: appends/s per
// durability mode with 1 and 16 appenders, drain (read and remove) rate,
// reopen time and peak RSS of a process holding 1,000,000 queued 256-byte
// records, in the device and server profiles, with ratios against the
// targets.
//
//	go run ./outbox/internal/outboxbench [-n 1000000] [-dur 3s] [-dir /var/tmp]
//
// RSS is measured in child processes (this binary re-executed) that read
// their own VmHWM from /proc/self/status, so the parent's work does not
// count; they also sample RssAnon, to tell heap from mapped files.
// Diagnostics for a child: OUTBOXBENCH_SMAPS=1 (resident size per mapping at
// the end of a fill), OUTBOXBENCH_HEAP=file (heap profile half-way),
// OUTBOXBENCH_PEAKHEAP=file (heap profile at the anon peak),
// OUTBOXBENCH_CPU=file (CPU profile of a reopen).
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/holdfast-mqtt/holdfast/outbox"
	"github.com/holdfast-mqtt/holdfast/outbox/internal/benchdata"
)

var (
	flagN      = flag.Int("n", 1_000_000, "records for the reopen and RSS measurements")
	flagDur    = flag.Duration("dur", 3*time.Second, "duration of each append measurement")
	flagDir    = flag.String("dir", "", "directory for the outboxes (default: a temporary one)")
	flagDrain  = flag.Int("drain", 200_000, "records for the drain measurement")
	flagRounds = flag.Int("rounds", 3, "rounds of the append measurements")
	flagPairs  = flag.Int("pairs", 7, "back-to-back sync-each/1 and group-commit/16 pairs for the ratio")
	flagChild  = flag.String("child", "", "internal: child role (fill, reopen)")
	flagProf   = flag.String("profile", "device", "internal: profile of a child")
	flagQDir   = flag.String("qdir", "", "internal: outbox directory of a child")
)

const payloadLen = benchdata.PayloadLen

func record() *outbox.Record {
	return &outbox.Record{Topic: "bench/telemetry", QoS: 1, Payload: benchdata.Payload()}
}

func main() {
	flag.Parse()
	if *flagChild != "" {
		child()
		return
	}
	dir := *flagDir
	if dir == "" {
		d, err := os.MkdirTemp("", "outboxbench-")
		check(err)
		defer os.RemoveAll(d)
		dir = d
	}
	fmt.Printf("outboxbench: %s/%s, %d CPUs, %s, payload %d bytes\n\n", runtime.GOOS, runtime.GOARCH, runtime.NumCPU(), runtime.Version(), payloadLen)

	// Appends.
	fmt.Printf("Append throughput, device profile (median of %d rounds of %v, configurations interleaved so that disk noise hits all alike):\n", *flagRounds, *flagDur)
	type cfg struct {
		mode outbox.Durability
		w    int
	}
	var cfgs []cfg
	for _, m := range []outbox.Durability{outbox.SyncEach, outbox.GroupCommit, outbox.NoSync} {
		for _, w := range []int{1, 16} {
			cfgs = append(cfgs, cfg{m, w})
		}
	}
	samples := map[cfg][]float64{}
	perCommit := map[cfg][]float64{}
	for round := 0; round < *flagRounds; round++ {
		for _, c := range cfgs {
			r, per := appendRateBatch(filepath.Join(dir, fmt.Sprintf("append-%s-%d", c.mode, c.w)), outbox.Options{Durability: c.mode}, c.w)
			samples[c] = append(samples[c], r)
			perCommit[c] = append(perCommit[c], per)
		}
	}
	rates := map[string]float64{}
	for _, c := range cfgs {
		r, per := median(samples[c]), median(perCommit[c])
		rates[fmt.Sprintf("%s/%d", c.mode, c.w)] = r
		fmt.Printf("  %-14s %2d appenders  %9.0f appends/s  %5.1f records/commit  (rounds: %s)\n", c.mode, c.w, r, per, list(samples[c]))
	}
	// The ratio from adjacent pairs: the disk's speed drifts, so pairs
	// measured back to back compare like with like.
	var ratios []float64
	for i := 0; i < *flagPairs; i++ {
		se := appendRate(filepath.Join(dir, "pair-se"), outbox.Options{Durability: outbox.SyncEach}, 1)
		gc := appendRate(filepath.Join(dir, "pair-gc"), outbox.Options{}, 16)
		ratios = append(ratios, gc/se)
	}
	rs := appendRate(filepath.Join(dir, "append-server"), outbox.Options{Profile: outbox.ProfileServer}, 16)
	fmt.Printf("  %-14s %2d appenders  %9.0f appends/s  (server profile)\n", outbox.GroupCommit, 16, rs)
	nat := nativeRate(filepath.Join(dir, "native"), 16)
	fmt.Printf("  badger-native  16 appenders  %9.0f appends/s  (reference: one Badger txn per append, SyncWrites, Badger batching)\n", nat)
	g16 := rates["group-commit/16"]
	fmt.Printf("  ratio group-commit/16 : sync-each/1  = %.1fx from the medians; %.1fx median of %d back-to-back pairs (%s) (target >= 20x)\n",
		g16/rates["sync-each/1"], median(ratios), len(ratios), list1(ratios))
	fmt.Printf("  ratio group-commit/16 : sync-each/16 = %.1fx\n", g16/rates["sync-each/16"])
	fmt.Printf("  ratio group-commit/16 : badger-native/16 = %.1fx\n\n", g16/nat)

	// Drain.
	fmt.Println("Drain (read 256 from the head, remove them; records/s):")
	for _, p := range []outbox.Profile{outbox.ProfileDevice, outbox.ProfileServer} {
		fmt.Printf("  %-7s %9.0f records/s\n", p, drainRate(filepath.Join(dir, "drain-"+p.String()), p, *flagDrain))
	}
	fmt.Println()

	// Fill, reopen, RSS.
	fmt.Printf("%d queued %d-byte records, each step in its own process:\n", *flagN, payloadLen)
	for _, p := range []string{"device", "server"} {
		qdir := filepath.Join(dir, "big-"+p)
		fillRes := runChild("fill", p, qdir, "")
		var opens []float64
		var reopenRes result
		for i := 0; i < 3; i++ {
			reopenRes = runChild("reopen", p, qdir, "")
			opens = append(opens, reopenRes.OpenSeconds)
		}
		sort.Float64s(opens)
		du := dirSize(qdir)
		fmt.Printf("  %s profile: filled in %.1fs (%.0f appends/s, no-sync, 16 appenders), %.0f MiB on disk\n",
			p, fillRes.Seconds, float64(*flagN)/fillRes.Seconds, float64(du)/(1<<20))
		fmt.Printf("    peak RSS while filling: %6.1f MiB (anon peak %.1f MiB)\n", fillRes.HWM, fillRes.AnonPeak)
		fmt.Printf("    reopen (Open + Stats, median of 3): %.3fs (target < 2s: %.2fx of budget)\n", opens[1], opens[1]/2)
		fmt.Printf("    peak RSS reopened, reading 10,000 from the head, appending 1,000: %6.1f MiB (anon peak %.1f MiB)\n",
			reopenRes.HWM, reopenRes.AnonPeak)
		if p == "device" {
			fmt.Printf("    device peak RSS vs target 64 MiB: fill %.2fx, reopen %.2fx\n", fillRes.HWM/64, reopenRes.HWM/64)
			_ = os.RemoveAll(qdir)
			lim := runChild("fill", p, qdir, "32MiB")
			limRe := runChild("reopen", p, qdir, "32MiB")
			fmt.Printf("    with GOMEMLIMIT=32MiB: peak RSS filling %.1f MiB (anon %.1f), reopened %.1f MiB (anon %.1f)\n",
				lim.HWM, lim.AnonPeak, limRe.HWM, limRe.AnonPeak)
		}
		_ = os.RemoveAll(qdir)
	}
}

type result struct {
	Seconds     float64 // fill duration
	OpenSeconds float64 // Open + Stats
	HWM         float64 // VmHWM, MiB
	AnonPeak    float64 // highest RssAnon sampled, MiB
}

func runChild(role, profile, qdir, memLimit string) result {
	cmd := exec.Command(os.Args[0], "-child", role, "-profile", profile, "-qdir", qdir, "-n", strconv.Itoa(*flagN))
	cmd.Env = os.Environ()
	if memLimit != "" {
		cmd.Env = append(cmd.Env, "GOMEMLIMIT="+memLimit)
	}
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	check(err)
	var r result
	check(json.Unmarshal(out, &r))
	return r
}

func profileOf(s string) outbox.Profile {
	if s == "server" {
		return outbox.ProfileServer
	}
	return outbox.ProfileDevice
}

// child runs one measured step and prints a result as JSON.
func child() {
	var anonPeak atomic.Int64
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() { // sample RssAnon; VmHWM covers file-backed pages too
		defer close(done)
		t := time.NewTicker(50 * time.Millisecond)
		defer t.Stop()
		for {
			if a := statusKB("RssAnon"); a > anonPeak.Load() {
				anonPeak.Store(a)
				if hp := os.Getenv("OUTBOXBENCH_PEAKHEAP"); hp != "" {
					if f, err := os.Create(hp); err == nil {
						_ = pprof.Lookup("heap").WriteTo(f, 0)
						f.Close()
					}
				}
			}
			select {
			case <-stop:
				return
			case <-t.C:
			}
		}
	}()
	var r result
	prof := profileOf(*flagProf)
	switch *flagChild {
	case "fill":
		q, err := outbox.Open(*flagQDir, outbox.Options{Profile: prof, Durability: outbox.NoSync})
		check(err)
		start := time.Now()
		var wg sync.WaitGroup
		var next atomic.Int64
		for w := 0; w < 16; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					i := next.Add(1)
					if i > int64(*flagN) {
						break
					}
					_, err := q.Append(context.Background(), record())
					check(err)
					if hp := os.Getenv("OUTBOXBENCH_HEAP"); hp != "" && i == int64(*flagN)/2 {
						f, err := os.Create(hp)
						check(err)
						check(pprof.WriteHeapProfile(f))
						f.Close()
					}
				}
			}()
		}
		wg.Wait()
		if os.Getenv("OUTBOXBENCH_SMAPS") != "" {
			dumpSmaps()
		}
		check(q.Close())
		r.Seconds = time.Since(start).Seconds()
	case "reopen":
		if cp := os.Getenv("OUTBOXBENCH_CPU"); cp != "" {
			f, err := os.Create(cp)
			check(err)
			check(pprof.StartCPUProfile(f))
		}
		start := time.Now()
		q, err := outbox.Open(*flagQDir, outbox.Options{Profile: prof})
		check(err)
		st := q.Stats()
		r.OpenSeconds = time.Since(start).Seconds()
		if os.Getenv("OUTBOXBENCH_CPU") != "" {
			pprof.StopCPUProfile()
		}
		if st.Len < *flagN {
			check(fmt.Errorf("reopened with %d records, want %d", st.Len, *flagN))
		}
		var buf []outbox.Record
		var cursor uint64
		for read := 0; read < 10_000; {
			buf, err = q.Read(cursor, 500, buf[:0])
			check(err)
			read += len(buf)
			cursor = buf[len(buf)-1].Seq
		}
		for i := 0; i < 1000; i++ {
			_, err := q.Append(context.Background(), record())
			check(err)
		}
		check(q.Close())
	}
	close(stop)
	<-done
	r.HWM = float64(statusKB("VmHWM")) / 1024
	r.AnonPeak = float64(anonPeak.Load()) / 1024
	check(json.NewEncoder(os.Stdout).Encode(r))
}

func median(xs []float64) float64 {
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	return s[len(s)/2]
}

func list1(xs []float64) string {
	var parts []string
	for _, x := range xs {
		parts = append(parts, strconv.FormatFloat(x, 'f', 1, 64))
	}
	return strings.Join(parts, " ")
}

func list(xs []float64) string {
	var parts []string
	for _, x := range xs {
		parts = append(parts, strconv.FormatFloat(x, 'f', 0, 64))
	}
	return strings.Join(parts, " ")
}

// statusKB reads a "Name: N kB" line of /proc/self/status.
func statusKB(name string) int64 {
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(data), "\n") {
		if strings.HasPrefix(l, name+":") {
			f := strings.Fields(l)
			if len(f) >= 2 {
				n, _ := strconv.ParseInt(f[1], 10, 64)
				return n
			}
		}
	}
	return 0
}

func appendRate(dir string, o outbox.Options, workers int) float64 {
	r, _ := appendRateBatch(dir, o, workers)
	return r
}

// appendRateBatch also returns the mean records per commit.
func appendRateBatch(dir string, o outbox.Options, workers int) (float64, float64) {
	q, err := outbox.Open(dir, o)
	check(err)
	defer os.RemoveAll(dir)
	defer q.Close()
	rate := opsPerSecond(workers, func() {
		_, err := q.Append(context.Background(), record())
		check(err)
	})
	st := q.Stats()
	return rate, float64(st.Appended) / float64(max(st.Commits, 1))
}

// opsPerSecond runs op in a loop on each of workers goroutines for -dur and
// returns the calls per second.
func opsPerSecond(workers int, op func()) float64 {
	var n atomic.Int64
	deadline := time.Now().Add(*flagDur)
	start := time.Now()
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(deadline) {
				op()
				n.Add(1)
			}
		}()
	}
	wg.Wait()
	return float64(n.Load()) / time.Since(start).Seconds()
}

// nativeRate: each appender commits its own Badger transaction with
// SyncWrites on, leaving batching to Badger's write loop (what the outbox
// would do without its committer), with device-like options.
func nativeRate(dir string, workers int) float64 {
	bo := badger.DefaultOptions(dir).WithLogger(nil).WithSyncWrites(true).WithMemTableSize(4 << 20).
		WithNumMemtables(1).WithValueThreshold(64).WithValueLogFileSize(16 << 20).WithNumCompactors(2).
		WithBlockCacheSize(1 << 20).WithDetectConflicts(false).WithMetricsEnabled(false)
	db, err := badger.Open(bo)
	check(err)
	defer os.RemoveAll(dir)
	defer db.Close()
	var seq atomic.Uint64
	val := make([]byte, 300)
	return opsPerSecond(workers, func() {
		k := []byte(fmt.Sprintf("r%016x", seq.Add(1)))
		check(db.Update(func(txn *badger.Txn) error { return txn.Set(k, val) }))
	})
}

func drainRate(dir string, p outbox.Profile, total int) float64 {
	q, err := outbox.Open(dir, outbox.Options{Profile: p, Durability: outbox.NoSync})
	check(err)
	defer os.RemoveAll(dir)
	defer q.Close()
	var wg sync.WaitGroup
	var next atomic.Int64
	for w := 0; w < 16; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= int64(total) {
				_, err := q.Append(context.Background(), record())
				check(err)
			}
		}()
	}
	wg.Wait()
	start := time.Now()
	var buf []outbox.Record
	seqs := make([]uint64, 0, 256)
	n := 0
	for n < total {
		buf, err = q.Read(0, 256, buf[:0])
		check(err)
		if len(buf) == 0 {
			check(fmt.Errorf("drained %d of %d", n, total))
		}
		seqs = seqs[:0]
		for _, r := range buf {
			seqs = append(seqs, r.Seq)
		}
		check(q.Remove(seqs...))
		n += len(buf)
	}
	return float64(n) / time.Since(start).Seconds()
}

func dirSize(dir string) int64 {
	var n int64
	_ = filepath.Walk(dir, func(_ string, fi os.FileInfo, err error) error {
		if err == nil && !fi.IsDir() {
			if st, ok := fi.Sys().(*syscall.Stat_t); ok {
				n += st.Blocks * 512 // allocated, not apparent (Badger's files are sparse)
			} else {
				n += fi.Size()
			}
		}
		return nil
	})
	return n
}

// dumpSmaps prints the resident size of each mapping over 1 MiB (debugging aid).
func dumpSmaps() {
	data, _ := os.ReadFile("/proc/self/smaps")
	var name string
	for _, l := range strings.Split(string(data), "\n") {
		f := strings.Fields(l)
		if len(f) >= 5 && strings.Contains(f[0], "-") {
			name = "[anon]"
			if len(f) >= 6 {
				name = f[5]
			}
		}
		if len(f) >= 2 && f[0] == "Rss:" {
			if kb, _ := strconv.Atoi(f[1]); kb > 1024 {
				fmt.Fprintf(os.Stderr, "%8d kB %s\n", kb, name)
			}
		}
	}
}

func check(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, "outboxbench:", err)
		os.Exit(1)
	}
}
