package testbroker

import (
	"fmt"
	"net"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

// recordingTB stands in for a testing.TB to observe Skip and Fatal: both
// record the message and end the calling goroutine, as the real ones do.
type recordingTB struct {
	testing.TB // the real test, for everything not overridden

	mu      sync.Mutex // guards the fields below
	skipped bool
	failed  bool
	msg     string
}

func (r *recordingTB) Helper() {}

func (r *recordingTB) Skipf(format string, args ...any) {
	r.mu.Lock()
	r.skipped, r.msg = true, fmt.Sprintf(format, args...)
	r.mu.Unlock()
	runtime.Goexit()
}

func (r *recordingTB) Fatalf(format string, args ...any) {
	r.mu.Lock()
	r.failed, r.msg = true, fmt.Sprintf(format, args...)
	r.mu.Unlock()
	runtime.Goexit()
}

// run calls f with r on a new goroutine and waits for it to return or exit.
func (r *recordingTB) run(f func(testing.TB)) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		f(r)
	}()
	<-done
}

func TestMissingMosquittoSkipsOrFails(t *testing.T) {
	t.Setenv(EnvMosquitto, "/nonexistent/mosquitto")
	if _, ok := MosquittoPath(); ok {
		t.Fatal("MosquittoPath found a nonexistent binary")
	}

	t.Setenv(EnvRequireMosquitto, "")
	r := &recordingTB{TB: t}
	r.run(func(tb testing.TB) { StartMosquitto(tb, MosquittoOptions{}) })
	if !r.skipped || r.failed || !strings.Contains(r.msg, "mosquitto not found") {
		t.Fatalf("without %s: skipped=%v failed=%v msg=%q", EnvRequireMosquitto, r.skipped, r.failed, r.msg)
	}

	t.Setenv(EnvRequireMosquitto, "1")
	r = &recordingTB{TB: t}
	r.run(func(tb testing.TB) { StartMosquitto(tb, MosquittoOptions{}) })
	if !r.failed || r.skipped || !strings.Contains(r.msg, EnvRequireMosquitto) {
		t.Fatalf("with %s=1: skipped=%v failed=%v msg=%q", EnvRequireMosquitto, r.skipped, r.failed, r.msg)
	}
}

func TestMosquittoPathFindsInstalledBroker(t *testing.T) {
	path, ok := MosquittoPath()
	if !ok {
		if requireMosquitto() {
			t.Fatalf("mosquitto not found and %s=1", EnvRequireMosquitto)
		}
		t.Skip("mosquitto not installed")
	}
	if !isExecutable(path) {
		t.Fatalf("MosquittoPath() = %q, not executable", path)
	}
}

func TestEventually(t *testing.T) {
	n := 0
	Eventually(t, time.Second, func() bool { n++; return n == 3 }, "n reaches 3")
	if n != 3 {
		t.Fatalf("cond called %d times, want 3", n)
	}

	r := &recordingTB{TB: t}
	start := time.Now()
	r.run(func(tb testing.TB) {
		Eventually(tb, 50*time.Millisecond, func() bool { return false }, "never %s", "true")
	})
	if !r.failed || !strings.Contains(r.msg, "never true") || !strings.Contains(r.msg, "50ms") {
		t.Fatalf("failed=%v msg=%q", r.failed, r.msg)
	}
	if d := time.Since(start); d < 50*time.Millisecond {
		t.Fatalf("gave up after %v, before the timeout", d)
	}
}

func TestFreePort(t *testing.T) {
	port := FreePort(t)
	ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		t.Fatalf("FreePort returned %d, which cannot be bound: %v", port, err)
	}
	_ = ln.Close()
}
