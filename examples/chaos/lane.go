package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// stopGrace bounds a child's clean exit after SIGTERM, before SIGKILL.
const stopGrace = 5 * time.Second

// lane runs one client's publisher as a child process of this program, and
// starts it again, on the same directory and client identifier, whenever
// it was killed or exited before draining. It records what every run
// reported.
type lane struct {
	name string      // "Holdfast", "bare paho"
	cfg  childConfig // start is replaced for each run
	exe  string      // this program

	mu       sync.Mutex // guards the fields below
	accepted []uint64   // reported accepted, in order, each once
	next     uint64     // the number after the last reported
	runs     []runStats // one per process, the last one current
	kills    int        // runs ended by a kill fault
	exits    int        // runs that exited on their own before draining
	drained  bool       // the final run reported "drained" and exited 0
	proc     *os.Process
	killed   bool   // the current process was killed by a fault
	stderr   tail   // the children's stderr, last bytes
	bad      string // the first line of a child's output that made no sense
}

// runStats are the counters one process reported last.
type runStats struct {
	pub, durable, acked, queued, conns int64
	hasDurable                         bool
}

func newLane(name, exe string, cfg childConfig) *lane {
	return &lane{name: name, exe: exe, cfg: cfg, next: cfg.start}
}

// run starts children until one drains or ctx ends, then returns. The
// process still running when ctx ends is stopped with SIGTERM (SIGKILL
// after stopGrace).
func (l *lane) run(ctx context.Context) {
	for ctx.Err() == nil {
		err := l.runOnce(ctx)
		l.mu.Lock()
		done, killed := l.drained, l.killed
		if !done && !killed && ctx.Err() == nil {
			l.exits++
			if err != nil {
				l.stderr.Write([]byte(fmt.Sprintf("[%s exited: %v]\n", l.name, err)))
			}
		}
		l.mu.Unlock()
		if done {
			return
		}
		if !killed { // a crash or an error exit: do not spin
			t := time.NewTimer(500 * time.Millisecond)
			select {
			case <-t.C:
			case <-ctx.Done():
			}
			t.Stop()
		}
	}
}

// runOnce runs one child to its end.
func (l *lane) runOnce(ctx context.Context) error {
	l.mu.Lock()
	cfg := l.cfg
	cfg.start = l.next
	l.killed = false
	l.runs = append(l.runs, runStats{})
	run := len(l.runs) - 1
	l.mu.Unlock()

	cmd := exec.Command(l.exe, cfg.args()...)
	setProcessGroup(cmd) // Ctrl-C reaches the parent only; it stops the children itself
	cmd.Stderr = &l.stderr
	stdin, err := cmd.StdinPipe() // the child stops when this closes
	if err != nil {
		return err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return err
	}
	l.mu.Lock()
	l.proc = cmd.Process
	l.mu.Unlock()

	read := make(chan struct{})
	go func() {
		defer close(read)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			l.line(run, sc.Text())
		}
	}()
	stopped := make(chan struct{})  // closed when the child has been reaped
	watching := make(chan struct{}) // closed when the goroutine below returns
	defer func() { close(stopped); <-watching }()
	go func() { // stop the child when ctx ends
		defer close(watching)
		select {
		case <-ctx.Done():
			_ = cmd.Process.Signal(syscall.SIGTERM)
			t := time.NewTimer(stopGrace)
			defer t.Stop()
			select {
			case <-t.C:
				_ = cmd.Process.Kill()
			case <-stopped:
			}
		case <-stopped:
		}
	}()
	<-read // EOF: the child has exited (or closed stdout)
	err = cmd.Wait()
	_ = stdin.Close()
	l.mu.Lock()
	l.proc = nil
	if err != nil {
		l.drained = false // "drained" then a failed exit is not drained
	}
	l.mu.Unlock()
	return err
}

// line records one line of a child's stdout.
func (l *lane) line(run int, s string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	switch {
	case strings.HasPrefix(s, "accepted "):
		n, err := strconv.ParseUint(strings.TrimPrefix(s, "accepted "), 10, 64)
		switch {
		case err != nil:
			l.badLocked(s)
		case n == l.next:
			l.accepted = append(l.accepted, n)
			l.next++
		case n < l.next:
			// Already reported by the run before, which then died: not
			// counted twice.
		default:
			l.badLocked(fmt.Sprintf("%q after accepted %d (a gap)", s, l.next-1))
		}
	case strings.HasPrefix(s, "stats "):
		var r runStats
		for f := range strings.FieldsSeq(strings.TrimPrefix(s, "stats ")) {
			k, v, _ := strings.Cut(f, "=")
			n, _ := strconv.ParseInt(v, 10, 64)
			switch k {
			case "pub":
				r.pub = n
			case "durable":
				r.durable, r.hasDurable = n, true
			case "acked":
				r.acked = n
			case "queued":
				r.queued = n
			case "conns":
				r.conns = n
			}
		}
		l.runs[run] = r
	case s == "drained":
		l.drained = true
	default:
		l.badLocked(s)
	}
}

func (l *lane) badLocked(s string) {
	if l.bad == "" {
		l.bad = s
	}
}

// kill SIGKILLs the running child, if any; run starts the next one at once.
// It reports whether there was one to kill.
func (l *lane) kill() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.proc == nil || l.drained {
		return false
	}
	if err := l.proc.Kill(); err != nil {
		return false
	}
	l.killed = true
	l.kills++
	return true
}

// laneState is a snapshot of a lane.
type laneState struct {
	name                        string
	accepted                    []uint64
	pub, durable, acked, queued int64
	hasDurable                  bool
	reconnects                  int64
	runs, kills, exits          int
	drained                     bool
	bad                         string
}

// describe says how the lane's processes ended, for the end of a run.
func (s laneState) describe() string {
	line := fmt.Sprintf("%s: %s (%d killed", s.name, plural(s.runs, "process"), s.kills)
	if s.exits > 0 {
		line += fmt.Sprintf(", %d exited on their own", s.exits)
	}
	line += "), " + plural(int(s.reconnects), "reconnect")
	if s.queued > 0 {
		line += fmt.Sprintf("; %s left unacknowledged in its store at exit", plural(int(s.queued), "message"))
	}
	return line + "."
}

// state returns a snapshot. Its accepted slice shares the lane's, which
// only ever grows: the snapshot's elements never change.
func (l *lane) state() laneState {
	l.mu.Lock()
	defer l.mu.Unlock()
	s := laneState{name: l.name, accepted: l.accepted, runs: len(l.runs), kills: l.kills, exits: l.exits,
		drained: l.drained, bad: l.bad}
	var conns int64
	for _, r := range l.runs {
		s.acked += r.acked
		conns += r.conns
		s.hasDurable = s.hasDurable || r.hasDurable
	}
	// Published: accepted, or handed over and waiting for the commit in the
	// current process (what a killed process handed over without
	// committing is published again by the next).
	s.pub = int64(len(l.accepted))
	if n := len(l.runs); n > 0 {
		cur := l.runs[n-1]
		s.queued = cur.queued
		if cur.hasDurable {
			s.pub += max(cur.pub-cur.durable, 0)
		}
	}
	s.durable = int64(len(l.accepted))
	s.reconnects = max(conns-1, 0)
	return s
}

// tail keeps the last bytes written to it.
type tail struct {
	mu  sync.Mutex // guards buf
	buf []byte
}

const tailBytes = 4096

func (t *tail) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, p...)
	if len(t.buf) > tailBytes {
		t.buf = append(t.buf[:0], t.buf[len(t.buf)-tailBytes:]...)
	}
	return len(p), nil
}

func (t *tail) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.buf)
}

var _ io.Writer = (*tail)(nil)
