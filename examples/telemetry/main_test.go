//go:build unix

package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Bounds of the signal tests. They are generous: they fail a program that
// does not stop, not a slow machine.
const (
	startBound = 60 * time.Second // from exec to warmLines accepted lines (and to "stopping")
	exitBound  = 60 * time.Second // from a signal to the exit
	// warmLines "accepted" lines show the program publishing flat out.
	warmLines = 1000
)

// buildTelemetry builds this program into a temporary directory.
func buildTelemetry(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "telemetry")
	out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// child is a running telemetry process whose output is being read.
type child struct {
	cmd    *exec.Cmd
	done   chan struct{} // closed once the process has exited and its output was read
	err    error         // cmd.Wait's result, read after done
	stderr syncBuffer

	mu       sync.Mutex    // guards accepted, bad
	accepted uint64        // "accepted N" lines read
	bad      string        // the first stdout line that is not the next "accepted N" or "drained"
	warm     chan struct{} // closed at warmLines accepted lines
}

// startTelemetry runs bin with args and reads its stdout at once and
// throughout: at -rate 0 it writes thousands of lines a second and would
// block on a full pipe.
func startTelemetry(t *testing.T, bin string, args ...string) *child {
	t.Helper()
	c := &child{cmd: exec.Command(bin, args...), done: make(chan struct{}), warm: make(chan struct{})}
	c.cmd.Stderr = &c.stderr
	stdout, err := c.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := c.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		defer close(c.done)
		c.read(stdout)
		c.err = c.cmd.Wait() // after EOF, as StdoutPipe requires
	}()
	t.Cleanup(func() {
		select {
		case <-c.done:
		default:
			_ = c.cmd.Process.Kill()
			<-c.done
		}
	})
	return c
}

func (c *child) read(r io.Reader) {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line := sc.Text()
		c.mu.Lock()
		if n, ok := strings.CutPrefix(line, "accepted "); ok && n == strconv.FormatUint(c.accepted+1, 10) {
			c.accepted++
			if c.accepted == warmLines {
				close(c.warm)
			}
		} else if line != "drained" && c.bad == "" {
			c.bad = line
		}
		c.mu.Unlock()
	}
}

// waitFor waits up to bound for ch, failing the test otherwise.
func (c *child) waitFor(t *testing.T, ch <-chan struct{}, bound time.Duration, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-c.done:
		t.Fatalf("exited (%v) before %s; stderr:\n%s", c.err, what, c.stderr.String())
	case <-time.After(bound):
		t.Fatalf("no %s within %v; stderr:\n%s", what, bound, c.stderr.String())
	}
}

// signalAndWait sends sig and waits up to exitBound for the exit. It returns
// the exit status and how long the exit took.
func (c *child) signalAndWait(t *testing.T, sig syscall.Signal) (int, time.Duration) {
	t.Helper()
	sent := time.Now()
	if err := c.cmd.Process.Signal(sig); err != nil {
		t.Fatal(err)
	}
	select {
	case <-c.done:
	case <-time.After(exitBound):
		t.Fatalf("still running %v after %v; stderr:\n%s", exitBound, sig, c.stderr.String())
	}
	took := time.Since(sent)
	var ee *exec.ExitError
	switch {
	case c.err == nil:
		return 0, took
	case errors.As(c.err, &ee) && ee.Exited():
		return ee.ExitCode(), took
	}
	t.Fatalf("ended by %v, not by exiting; stderr:\n%s", c.err, c.stderr.String())
	return 0, 0
}

func (c *child) acceptedLines() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.accepted
}

// checkOutput fails the test if stdout was not "accepted 1", "accepted 2",
// ... (the lines other tools parse).
func (c *child) checkOutput(t *testing.T) {
	t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.bad != "" || c.accepted == 0 {
		t.Fatalf("stdout: %d accepted lines in order, then %q", c.accepted, c.bad)
	}
}

// TestStopsOnSignalAtFullRate runs the example as fast as it can publish
// (-count 0 -rate 0) against its embedded broker, and checks that one signal
// stops it cleanly (status 0) within the bound.
func TestStopsOnSignalAtFullRate(t *testing.T) {
	bin := buildTelemetry(t)
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT} {
		t.Run(sig.String(), func(t *testing.T) {
			c := startTelemetry(t, bin, "-count", "0", "-rate", "0",
				"-outbox", t.TempDir(), "-client-id", "telemetry-test-"+strconv.Itoa(int(sig)))
			c.waitFor(t, c.warm, startBound, "publishing")
			code, took := c.signalAndWait(t, sig)
			t.Logf("%d accepted; exited %d, %v after %v", c.acceptedLines(), code, took.Round(time.Millisecond), sig)
			if code != 0 {
				t.Fatalf("exit status %d after %v, want 0; stderr:\n%s", code, sig, c.stderr.String())
			}
			c.checkOutput(t)
		})
	}
}

// TestSecondSignalExitsAtOnce stops the example while its broker is
// unreachable, so the clean shutdown waits (5s for acknowledgements that
// cannot come), and checks that a second signal ends it at once, with the
// status that says so.
func TestSecondSignalExitsAtOnce(t *testing.T) {
	bin := buildTelemetry(t)
	for _, tc := range []struct {
		sig  syscall.Signal
		code int
	}{{syscall.SIGTERM, 143}, {syscall.SIGINT, 130}} {
		t.Run(tc.sig.String(), func(t *testing.T) {
			c := startTelemetry(t, bin, "-count", "0", "-rate", "0", "-broker", deadBroker(t),
				"-outbox", t.TempDir(), "-client-id", "telemetry-test-"+strconv.Itoa(int(tc.sig)))
			c.waitFor(t, c.warm, startBound, "publishing")
			if err := c.cmd.Process.Signal(tc.sig); err != nil {
				t.Fatal(err)
			}
			c.waitFor(t, c.stderr.waitFor("telemetry: stopping"), startBound, `"stopping" on stderr`)
			code, took := c.signalAndWait(t, tc.sig)
			t.Logf("%d accepted; exited %d, %v after the second %v", c.acceptedLines(), code, took.Round(time.Millisecond), tc.sig)
			if code != tc.code {
				t.Fatalf("exit status %d after a second %v, want %d; stderr:\n%s", code, tc.sig, tc.code, c.stderr.String())
			}
			c.checkOutput(t)
		})
	}
}

// deadBroker returns the URL of a loopback port nothing listens on.
func deadBroker(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	if err := ln.Close(); err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("tcp://%s", addr)
}

// syncBuffer collects a child's stderr and tells when a text appears in it.
type syncBuffer struct {
	mu      sync.Mutex // guards b and waiters
	b       bytes.Buffer
	waiters []waiter
}

type waiter struct {
	text string
	ch   chan struct{}
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.b.Write(p)
	kept := s.waiters[:0]
	for _, w := range s.waiters {
		if strings.Contains(s.b.String(), w.text) {
			close(w.ch)
		} else {
			kept = append(kept, w)
		}
	}
	s.waiters = kept
	return len(p), nil
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// waitFor returns a channel closed once text has been written.
func (s *syncBuffer) waitFor(text string) <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	ch := make(chan struct{})
	if strings.Contains(s.b.String(), text) {
		close(ch)
	} else {
		s.waiters = append(s.waiters, waiter{text, ch})
	}
	return ch
}
