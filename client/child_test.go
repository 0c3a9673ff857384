package client_test

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
	"testing"
	"time"

	"github.com/holdfast-mqtt/holdfast/client"
)

// A subscriber in a child process, so that a test can SIGKILL it while it
// handles messages: the test binary runs itself with envChild set. The
// child subscribes with the given filters and prints, for every message its
// handler accepts, one line "H <topic> <payload>" right before the handler
// returns (after the handler's delay, so that a kill usually lands while a
// message is being handled). It prints "ready" once every SUBACK arrived,
// and closes cleanly when its stdin ends.

const (
	envChild       = "HOLDFAST_TEST_CHILD"
	envChildBroker = "HOLDFAST_TEST_CHILD_BROKER"
	envChildID     = "HOLDFAST_TEST_CHILD_ID"
	envChildDir    = "HOLDFAST_TEST_CHILD_DIR"
	envChildSubs   = "HOLDFAST_TEST_CHILD_SUBS" // filter:qos,filter:qos
	envChildDelay  = "HOLDFAST_TEST_CHILD_DELAY"
)

// childSubscriber is the child's main; it returns the exit code.
func childSubscriber() int {
	delay, _ := time.ParseDuration(os.Getenv(envChildDelay))
	var out sync.Mutex
	say := func(s string) {
		out.Lock()
		defer out.Unlock()
		_, _ = os.Stdout.WriteString(s + "\n") // one write per line: a kill never splits one
	}
	h := func(ctx context.Context, m client.Message) error {
		if delay > 0 {
			t := time.NewTimer(delay)
			select {
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
				return ctx.Err()
			}
		}
		say("H " + m.Topic + " " + string(m.Payload))
		return nil
	}
	var subs []client.Subscription
	for _, s := range strings.Split(os.Getenv(envChildSubs), ",") {
		f, q, _ := strings.Cut(s, ":")
		qos, _ := strconv.Atoi(q)
		subs = append(subs, client.Subscription{Filter: f, QoS: byte(qos), Handler: h})
	}
	c, err := client.New(client.Config{
		Brokers:       []string{os.Getenv(envChildBroker)},
		ClientID:      os.Getenv(envChildID),
		OutboxDir:     os.Getenv(envChildDir),
		Subscriptions: subs,
		KeepAlive:     2 * time.Second,
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "child: New:", err)
		return 2
	}
	ctx := context.Background()
	for _, s := range subs {
		if err := c.Subscribe(ctx, s.Filter, s.QoS, h); err != nil {
			fmt.Fprintln(os.Stderr, "child: Subscribe:", err)
			return 2
		}
	}
	say("ready")
	_, _ = io.Copy(io.Discard, os.Stdin)
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := c.Close(cctx); err != nil {
		fmt.Fprintln(os.Stderr, "child: Close:", err)
		return 1
	}
	return 0
}

// handledLine is one message a child's handler accepted.
type handledLine struct {
	run     int
	topic   string
	payload string
}

// handledLog gathers the lines of every run of a child subscriber.
type handledLog struct {
	mu    sync.Mutex
	lines []handledLine
}

func (l *handledLog) add(h handledLine) { l.mu.Lock(); l.lines = append(l.lines, h); l.mu.Unlock() }

func (l *handledLog) snapshot() []handledLine {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]handledLine(nil), l.lines...)
}

func (l *handledLog) len() int { l.mu.Lock(); defer l.mu.Unlock(); return len(l.lines) }

// distinct counts the different payloads handled on topic.
func (l *handledLog) distinct(topic string) int {
	seen := map[string]bool{}
	for _, h := range l.snapshot() {
		if h.topic == topic {
			seen[h.payload] = true
		}
	}
	return len(seen)
}

// lastOf returns the last line a run printed, if any.
func (l *handledLog) lastOf(run int) (handledLine, bool) {
	lines := l.snapshot()
	for i := len(lines) - 1; i >= 0; i-- {
		if lines[i].run == run {
			return lines[i], true
		}
	}
	return handledLine{}, false
}

// childRun is one run of the child subscriber.
type childRun struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	ready  chan struct{}
	done   chan struct{} // closed when its stdout ended
	stderr *lockedBuf
}

type childSpec struct {
	broker, id, dir string
	subs            []string // "filter:qos"
	delay           time.Duration
}

// startChild starts run number run of the child subscriber, its handled
// lines going to log, and waits for "ready".
func startChild(t *testing.T, spec childSpec, run int, log *handledLog) *childRun {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(),
		envChild+"=subscriber",
		envChildBroker+"="+spec.broker,
		envChildID+"="+spec.id,
		envChildDir+"="+spec.dir,
		envChildSubs+"="+strings.Join(spec.subs, ","),
		envChildDelay+"="+spec.delay.String(),
	)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	r := &childRun{cmd: cmd, stdin: stdin, ready: make(chan struct{}), done: make(chan struct{}), stderr: &lockedBuf{}}
	cmd.Stderr = r.stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		defer close(r.done)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			line := sc.Text()
			if line == "ready" {
				close(r.ready)
				continue
			}
			if rest, ok := strings.CutPrefix(line, "H "); ok {
				topic, payload, _ := strings.Cut(rest, " ")
				log.add(handledLine{run: run, topic: topic, payload: payload})
			}
		}
	}()
	t.Cleanup(func() { r.kill() })
	select {
	case <-r.ready:
	case <-r.done:
		r.kill()
		t.Fatalf("child run %d ended before it was ready: %s", run, r.stderr)
	case <-time.After(stallTimeout):
		r.kill()
		t.Fatalf("child run %d not ready after %v: %s", run, stallTimeout, r.stderr)
	}
	return r
}

// kill sends SIGKILL and waits for the process and its output to end.
func (r *childRun) kill() {
	if r.cmd.ProcessState == nil {
		_ = r.cmd.Process.Signal(syscall.SIGKILL)
		<-r.done
		_ = r.cmd.Wait()
	}
}

// stop closes the child's stdin (a clean Close) and waits for it.
func (r *childRun) stop(t *testing.T) {
	t.Helper()
	_ = r.stdin.Close()
	select {
	case <-r.done:
	case <-time.After(stallTimeout):
		r.kill()
		t.Fatalf("child did not stop: %s", r.stderr)
	}
	if err := r.cmd.Wait(); err != nil {
		t.Fatalf("child: %v: %s", err, r.stderr)
	}
}

// lockedBuf collects a child's stderr.
type lockedBuf struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func (r *childRun) String() string { return fmt.Sprintf("pid %d", r.cmd.Process.Pid) }
