package e2e

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// How a run of a publisher ended.
const (
	endRunning    = ""           // still running
	endKilled     = "killed"     // SIGKILL by the chaos driver
	endStopped    = "stopped"    // SIGTERM at the end of the chaos phase
	endDrained    = "drained"    // final run: printed "drained" and exited 0
	endExited     = "exited"     // exited on its own (a crash, or an error exit)
	endNotDrained = "notdrained" // final run: did not drain in time and was killed
)

// stopTimeout bounds a SIGTERM'd publisher's clean exit before SIGKILL.
const stopTimeout = 15 * time.Second

// LaneConfig describes one publisher lane.
type LaneConfig struct {
	Name      string // "q1", used in file names
	Binary    string // the child program (examples/telemetry or internal/cmd/barepaho)
	Broker    string // URL the child connects to (the fault proxy)
	ClientID  string
	Dir       string // outbox (or FileStore) directory, shared by every run
	Topic     string
	QoS       int
	Rate      int // messages per second
	Size      int // payload bytes
	KeepAlive time.Duration
	LogDir    string // where each run's stderr is written
}

// Run is one process of a lane's publisher.
type Run struct {
	Index    int         `json:"index"`
	Start    uint64      `json:"start"` // -start
	Count    uint64      `json:"count"` // -count (0: until signalled)
	Accepted []uint64    `json:"-"`     // in the order printed
	At       []time.Time `json:"-"`     // when each accepted line was read
	Drained  bool        `json:"drained"`
	End      string      `json:"end"`
	ExitErr  string      `json:"exit,omitempty"`
	Began    time.Time   `json:"began"`
	Ended    time.Time   `json:"ended"`
	Stderr   string      `json:"stderr"` // path of the stderr log
	Other    []string    `json:"other,omitempty"`
	// NAccepted is len(Accepted), for the JSON report.
	NAccepted int `json:"accepted"`
}

// next is the sequence number the run after this one starts at: the one
// after the last printed.
func (r *Run) next() uint64 {
	if len(r.Accepted) == 0 {
		return r.Start
	}
	return r.Accepted[len(r.Accepted)-1] + 1
}

// Lane runs one publisher child again and again on the same directory and
// client identifier, and records what every run printed.
type Lane struct {
	cfg LaneConfig

	// mu guards runs and the Run fields the reader goroutine writes.
	mu   sync.Mutex
	runs []*Run

	cur *proc // the running process; only used by the test goroutine
}

// proc is one started process.
type proc struct {
	run    *Run
	cmd    *exec.Cmd
	stderr *os.File
	done   chan struct{} // closed once stdout hit EOF and the process was reaped
	err    error         // cmd.Wait's result, read after done
}

// NewLane returns a lane; Start starts its first run.
func NewLane(cfg LaneConfig) *Lane { return &Lane{cfg: cfg} }

// Start starts the first run at sequence number 1, publishing until
// signalled.
func (l *Lane) Start(t testing.TB) {
	t.Helper()
	l.launch(t, 1, 0)
}

// Done is closed when the current process exits.
func (l *Lane) Done() <-chan struct{} { return l.cur.done }

// Kill sends SIGKILL to the current run, waits for it, and starts the next
// run at the number after the last one printed. If the process had already
// exited on its own, that is recorded (End "exited") and the next run
// started all the same.
func (l *Lane) Kill(t testing.TB) {
	t.Helper()
	l.end(syscall.SIGKILL, endKilled, 0)
	l.launch(t, l.next(), 0)
}

// Restart records that the current run exited on its own and starts the
// next one. It is for a process whose Done channel was closed.
func (l *Lane) Restart(t testing.TB) {
	t.Helper()
	l.end(0, endExited, 0)
	l.launch(t, l.next(), 0)
}

// Finish stops the current run with SIGTERM (SIGKILL after stopTimeout),
// then runs a final instance that publishes count more messages and waits
// up to timeout for it to print "drained" and exit. It returns an error
// describing what went wrong, if anything; it must be called from the
// goroutine that owns the lane, but not necessarily the test goroutine.
func (l *Lane) Finish(count uint64, timeout time.Duration) error {
	l.end(syscall.SIGTERM, endStopped, stopTimeout)
	return l.runToEnd("final", count, timeout)
}

// ExtraRun runs one more instance after Finish, on the same directory: it
// publishes count messages, and its connection sends whatever the previous
// runs left behind. It waits like Finish.
func (l *Lane) ExtraRun(count uint64, timeout time.Duration) error {
	return l.runToEnd("extra", count, timeout)
}

// runToEnd starts a run of count messages after the last printed and waits
// up to timeout for it to print "drained" and exit 0.
func (l *Lane) runToEnd(what string, count uint64, timeout time.Duration) error {
	if err := l.start(l.next(), count); err != nil {
		return err
	}
	p := l.cur
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case <-p.done:
	case <-timer.C:
		l.end(syscall.SIGKILL, endNotDrained, 0)
		return fmt.Errorf("lane %s: %s run did not exit within %v (stderr %s)", l.cfg.Name, what, timeout, p.run.Stderr)
	}
	l.end(0, endExited, 0) // reaps and classifies
	l.mu.Lock()
	defer l.mu.Unlock()
	r := p.run
	switch {
	case r.End == endDrained:
		return nil
	case !r.Drained:
		return fmt.Errorf("lane %s: %s run exited (%s) without printing \"drained\" (stderr %s)", l.cfg.Name, what, r.ExitErr, r.Stderr)
	default:
		return fmt.Errorf("lane %s: %s run printed \"drained\" but exited with %s (stderr %s)", l.cfg.Name, what, r.ExitErr, r.Stderr)
	}
}

// Runs returns a copy of the runs so far, with their accepted numbers.
func (l *Lane) Runs() []Run {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]Run, len(l.runs))
	for i, r := range l.runs {
		out[i] = *r
		out[i].Accepted = append([]uint64(nil), r.Accepted...)
		out[i].At = append([]time.Time(nil), r.At...)
		out[i].NAccepted = len(r.Accepted)
	}
	return out
}

// AcceptedCount returns how many numbers all runs have printed so far.
func (l *Lane) AcceptedCount() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, r := range l.runs {
		n += len(r.Accepted)
	}
	return n
}

func (l *Lane) next() uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.runs[len(l.runs)-1].next()
}

func (l *Lane) launch(t testing.TB, start, count uint64) {
	t.Helper()
	if err := l.start(start, count); err != nil {
		t.Fatal(err)
	}
}

// start starts a run at start publishing count messages (0: until
// signalled).
func (l *Lane) start(start, count uint64) error {
	c := l.cfg
	l.mu.Lock()
	r := &Run{Index: len(l.runs), Start: start, Count: count, Began: time.Now()}
	r.Stderr = filepath.Join(c.LogDir, fmt.Sprintf("%s-run%03d.stderr", c.Name, r.Index))
	l.runs = append(l.runs, r)
	l.mu.Unlock()

	stderr, err := os.Create(r.Stderr)
	if err != nil {
		return fmt.Errorf("lane %s: %w", c.Name, err)
	}
	cmd := exec.Command(c.Binary,
		"-broker", c.Broker,
		"-client-id", c.ClientID,
		"-outbox", c.Dir,
		"-topic", c.Topic,
		"-qos", strconv.Itoa(c.QoS),
		"-start", strconv.FormatUint(start, 10),
		"-count", strconv.FormatUint(count, 10),
		"-rate", strconv.Itoa(c.Rate),
		"-size", strconv.Itoa(c.Size),
		"-keepalive", c.KeepAlive.String(),
		"-v",
	)
	cmd.Stderr = stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		stderr.Close()
		return fmt.Errorf("lane %s: %w", c.Name, err)
	}
	if err := cmd.Start(); err != nil {
		stderr.Close()
		return fmt.Errorf("lane %s: start %s: %w", c.Name, c.Binary, err)
	}
	p := &proc{run: r, cmd: cmd, stderr: stderr, done: make(chan struct{})}
	l.cur = p
	go func() {
		defer close(p.done)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			l.line(r, sc.Text())
		}
		// Wait only after stdout hit EOF, as exec.Cmd.StdoutPipe requires.
		p.err = cmd.Wait()
		stderr.Close()
	}()
	return nil
}

// line records one line of a run's stdout.
func (l *Lane) line(r *Run, s string) {
	now := time.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	if n, ok := strings.CutPrefix(s, "accepted "); ok {
		if v, err := strconv.ParseUint(n, 10, 64); err == nil {
			r.Accepted = append(r.Accepted, v)
			r.At = append(r.At, now)
			return
		}
	}
	if s == "drained" {
		r.Drained = true
		return
	}
	if len(r.Other) < 20 {
		r.Other = append(r.Other, s)
	}
}

// end ends the current process: it sends sig (none when 0), waits for the
// exit (sending SIGKILL after grace, if positive), and records how the run
// ended. A process that had already exited before the signal is recorded as
// "exited" (or "drained"), whatever why says.
func (l *Lane) end(sig syscall.Signal, why string, grace time.Duration) {
	p := l.cur
	select {
	case <-p.done:
		why = endExited // it had ended on its own
	default:
		if sig != 0 {
			_ = p.cmd.Process.Signal(sig)
		}
		if grace > 0 {
			timer := time.NewTimer(grace)
			select {
			case <-p.done:
			case <-timer.C:
				why = endNotDrained
				_ = p.cmd.Process.Signal(syscall.SIGKILL)
			}
			timer.Stop()
		}
		<-p.done
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	r := p.run
	if r.End != endRunning {
		return // already recorded
	}
	r.Ended = time.Now()
	if p.err != nil {
		r.ExitErr = p.err.Error()
	} else {
		r.ExitErr = "exit status 0"
	}
	r.End = why
	if why == endExited && r.Drained && p.err == nil {
		r.End = endDrained
	}
}

// Close kills the current process, if it is still running, and waits for
// it. It is registered with t.Cleanup so that a failed test leaves no child
// behind.
func (l *Lane) Close() {
	if l.cur != nil {
		l.end(syscall.SIGKILL, endKilled, 0)
	}
}

// stderrTail returns up to n bytes of the end of a run's stderr log.
func stderrTail(path string, n int64) string {
	f, err := os.Open(path)
	if err != nil {
		return err.Error()
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err.Error()
	}
	off := max(0, fi.Size()-n)
	buf := make([]byte, fi.Size()-off)
	if _, err := f.ReadAt(buf, off); err != nil {
		return err.Error()
	}
	return string(buf)
}
