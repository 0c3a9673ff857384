package main

import (
	"bufio"
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/holdfast-mqtt/holdfast/internal/mosquitto"
)

// clockTicks is USER_HZ, the unit of /proc/<pid>/stat times (100 on Linux
// for every architecture Go supports).
const clockTicks = 100

// selfCPU returns this process's user+system CPU seconds.
func selfCPU() float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return tv(ru.Utime) + tv(ru.Stime)
}

// childCPU returns the user+system CPU seconds of this process's waited-for
// children (the RSS child).
func childCPU() float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_CHILDREN, &ru); err != nil {
		return 0
	}
	return tv(ru.Utime) + tv(ru.Stime)
}

func tv(t syscall.Timeval) float64 { return float64(t.Sec) + float64(t.Usec)/1e6 }

// procCPU returns the user+system CPU seconds of process pid (0 if unknown).
func procCPU(pid int) float64 {
	if pid <= 0 {
		return 0
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0
	}
	// Fields after the command name (which may contain spaces) start at state.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0
	}
	ut, _ := strconv.ParseFloat(f[11], 64) // utime, field 14
	st, _ := strconv.ParseFloat(f[12], 64) // stime, field 15
	return (ut + st) / clockTicks
}

// machineCPU returns the busy CPU seconds of the whole machine (every
// state but idle and iowait) and the stolen ones, from /proc/stat.
func machineCPU() (busy, steal float64) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 9 || f[0] != "cpu" {
		return 0, 0
	}
	var total float64
	v := make([]float64, len(f)-1)
	for i, x := range f[1:] {
		v[i], _ = strconv.ParseFloat(x, 64)
		if i < 8 { // user nice system idle iowait irq softirq steal
			total += v[i]
		}
	}
	busy = total - v[3] - v[4]
	return busy / clockTicks, v[7] / clockTicks
}

// loadAvg returns the first three fields of /proc/loadavg.
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return ""
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return ""
	}
	return strings.Join(f[:3], " ")
}

// procStatusKiB returns a "VmXxx:" value of /proc/self/status in KiB.
func procStatusKiB(key string) int64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		line := s.Text()
		if v, ok := strings.CutPrefix(line, key+":"); ok {
			fs := strings.Fields(v)
			if len(fs) > 0 {
				n, _ := strconv.ParseInt(fs[0], 10, 64)
				return n
			}
		}
	}
	return 0
}

// Env describes the machine and software of a run.
type Env struct {
	GOOS       string `json:"goos"`
	GOARCH     string `json:"goarch"`
	Go         string `json:"go"`
	CPUs       int    `json:"cpus"`
	CPUModel   string `json:"cpu_model,omitempty"`
	Kernel     string `json:"kernel,omitempty"`
	Mosquitto  string `json:"mosquitto"`
	Filesystem string `json:"work_dir_fs,omitempty"`
	// Commit is the source's git commit, with "+dirty" when the working
	// tree had changes ("" outside a git checkout).
	Commit string `json:"commit,omitempty"`
	// LoadStart and LoadEnd are /proc/loadavg at the start and the end.
	LoadStart string `json:"loadavg_start,omitempty"`
	LoadEnd   string `json:"loadavg_end,omitempty"`
	// OtherCores is the average number of cores the rest of the machine
	// (neither this process, its children, nor the broker) kept busy during
	// the run, stolen time included: other load skews every figure.
	OtherCores float64 `json:"other_cores"`
}

func environment(b *mosquitto.Broker, dir string) Env {
	e := Env{GOOS: runtime.GOOS, GOARCH: runtime.GOARCH, Go: runtime.Version(), CPUs: runtime.NumCPU(), LoadStart: loadAvg()}
	if v, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		e.Kernel = strings.TrimSpace(string(v))
	}
	if info, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(info), "\n") {
			if v, ok := strings.CutPrefix(line, "model name"); ok {
				e.CPUModel = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(v), ":"))
				break
			}
		}
	}
	e.Mosquitto = "unknown"
	log := b.Log()
	if i := strings.Index(log, "mosquitto version "); i >= 0 {
		rest := log[i+len("mosquitto version "):]
		if j := strings.IndexAny(rest, " \n"); j > 0 {
			e.Mosquitto = rest[:j]
		}
	}
	e.Filesystem = fsType(dir)
	e.Commit = gitCommit()
	return e
}

// gitCommit describes the checkout in the current directory (read-only git
// commands), or "".
func gitCommit() string {
	out, err := exec.Command("git", "rev-parse", "--short", "HEAD").Output()
	if err != nil {
		return ""
	}
	c := strings.TrimSpace(string(out))
	if st, err := exec.Command("git", "status", "--porcelain", "--untracked-files=no").Output(); err == nil && len(bytes.TrimSpace(st)) > 0 {
		c += "+dirty"
	}
	return c
}

// fsType names the file system holding dir, from /proc/mounts (longest
// matching mount point).
func fsType(dir string) string {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return ""
	}
	if r, err := filepath.EvalSymlinks(abs); err == nil {
		abs = r
	}
	b, err := os.ReadFile("/proc/mounts")
	if err != nil {
		return ""
	}
	best, typ := "", ""
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 3 {
			continue
		}
		mp := f[1]
		if (abs == mp || strings.HasPrefix(abs, strings.TrimSuffix(mp, "/")+"/")) && len(mp) > len(best) {
			best, typ = mp, f[2]+" ("+f[0]+")"
		}
	}
	return typ
}

// Fsync is the latency of one small appending write + fsync.
type Fsync struct {
	Samples  int     `json:"samples"`
	MedianMs float64 `json:"median_ms"`
	P99Ms    float64 `json:"p99_ms"`
	PerSec   float64 `json:"per_s"` // 1 / median
}

// measureFsync appends size bytes and fsyncs, n times, in dir.
func measureFsync(dir string, size, n int) (Fsync, error) {
	f, err := os.CreateTemp(dir, "fsync-")
	if err != nil {
		return Fsync{}, err
	}
	defer os.Remove(f.Name())
	defer f.Close()
	buf := make([]byte, size)
	lat := make([]time.Duration, 0, n)
	for range n {
		t := time.Now()
		if _, err := f.Write(buf); err != nil {
			return Fsync{}, err
		}
		if err := f.Sync(); err != nil {
			return Fsync{}, err
		}
		lat = append(lat, time.Since(t))
	}
	slices.Sort(lat)
	ms := func(d time.Duration) float64 { return float64(d) / 1e6 }
	med := lat[len(lat)/2]
	return Fsync{Samples: n, MedianMs: ms(med), P99Ms: ms(lat[len(lat)*99/100]), PerSec: 1 / med.Seconds()}, nil
}
