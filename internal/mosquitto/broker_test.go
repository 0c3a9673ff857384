package mosquitto

import (
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/holdfast-mqtt/holdfast/internal/leakcheck"
)

func TestMain(m *testing.M) {
	os.Exit(leakcheck.Run(m))
}

// need skips the test when mosquitto is not installed, or fails it when
// HOLDFAST_REQUIRE_MOSQUITTO=1.
func need(t *testing.T) {
	t.Helper()
	if _, ok := Path(); !ok {
		if v := os.Getenv("HOLDFAST_REQUIRE_MOSQUITTO"); v == "1" || v == "true" {
			t.Fatal("mosquitto not found and HOLDFAST_REQUIRE_MOSQUITTO=1")
		}
		t.Skip("mosquitto not installed")
	}
}

func start(t *testing.T, o Options) *Broker {
	t.Helper()
	b, err := Start(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b
}

func dial(addr string) error {
	c, err := net.Dial("tcp", addr)
	if err == nil {
		_ = c.Close()
	}
	return err
}

func TestLifecycle(t *testing.T) {
	need(t)
	b := start(t, Options{})
	if !b.Running() || b.Pid() == 0 {
		t.Fatal("not running after Start")
	}
	if err := dial(b.Addr()); err != nil {
		t.Fatalf("dial after Start: %v", err)
	}
	if err := b.Start(); !errors.Is(err, ErrRunning) {
		t.Fatalf("second Start: %v, want ErrRunning", err)
	}
	port := b.Port()
	if err := b.Stop(); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if b.Running() {
		t.Fatal("running after Stop")
	}
	if err := dial(b.Addr()); err == nil {
		t.Fatal("dial succeeded while stopped")
	}
	if _, err := os.Stat(filepath.Join(b.Dir(), DataDirName, DBName)); err != nil {
		t.Fatalf("no persistence database after Stop: %v", err)
	}
	if err := b.Restart(); err != nil { // Stop of a stopped broker, then Start
		t.Fatalf("Restart: %v", err)
	}
	if b.Port() != port {
		t.Fatalf("port changed from %d to %d", port, b.Port())
	}
	b.Kill()
	if b.Running() {
		t.Fatal("running after Kill")
	}
	if strings.Count(b.Log(), "==== testbroker:") != 2 {
		t.Fatalf("log does not show two runs:\n%s", b.Log())
	}
	if err := b.Start(); err != nil {
		t.Fatalf("Start after Kill: %v", err)
	}
	dir := b.Dir()
	if err := b.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Fatalf("own directory left after Close: %v", err)
	}
	if err := b.Start(); !errors.Is(err, ErrClosed) {
		t.Fatalf("Start after Close: %v, want ErrClosed", err)
	}
	if err := b.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

func TestQuietAndGivenDir(t *testing.T) {
	need(t)
	dir := t.TempDir()
	b := start(t, Options{Dir: dir, Quiet: true, NoPersistence: true, MaxInflightMessages: 9})
	conf, err := os.ReadFile(b.ConfPath())
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"log_type information\n", "connection_messages false\n", "persistence false\n", "max_inflight_messages 9\n"} {
		if !strings.Contains(string(conf), want) {
			t.Errorf("config lacks %q:\n%s", want, conf)
		}
	}
	if strings.Contains(string(conf), "log_type all") {
		t.Error("quiet config logs everything")
	}
	if err := dial(b.Addr()); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(b.Log(), "New connection") {
		t.Error("quiet broker logged a connection")
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(b.ConfPath()); err != nil {
		t.Fatalf("a given directory must be kept: %v", err)
	}
}

func TestPortTaken(t *testing.T) {
	need(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	port := ln.Addr().(*net.TCPAddr).Port
	_, err = Start(Options{Port: port})
	if !errors.Is(err, ErrBind) {
		t.Fatalf("Start on a taken port: %v, want ErrBind", err)
	}
}

func TestNotInstalled(t *testing.T) {
	_, err := New(Options{Binary: filepath.Join(t.TempDir(), "mosquitto")})
	if !errors.Is(err, ErrNotInstalled) {
		t.Fatalf("New with a missing binary: %v, want ErrNotInstalled", err)
	}
	t.Setenv(EnvBinary, "/nonexistent/mosquitto")
	if _, err := New(Options{}); !errors.Is(err, ErrNotInstalled) {
		t.Fatalf("New with %s pointing nowhere: %v, want ErrNotInstalled", EnvBinary, err)
	}
	if _, err := New(Options{Port: -1}); !errors.Is(err, ErrInvalidOptions) {
		t.Fatalf("New with port -1: %v, want ErrInvalidOptions", err)
	}
}

// TestLogTypes checks that only Debug writes Mosquitto's per-packet debug
// lines, and that the default still logs connections and subscriptions.
func TestLogTypes(t *testing.T) {
	need(t)
	for _, tc := range []struct {
		name      string
		o         Options
		want, not []string
	}{
		{"default", Options{}, []string{"log_type information\n", "log_type subscribe\n", "connection_messages true\n"}, []string{"log_type all", "log_type debug"}},
		{"debug", Options{Debug: true}, []string{"log_type all\n", "connection_messages true\n"}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.o.Dir = t.TempDir()
			b, err := New(tc.o)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = b.Close() })
			conf, err := os.ReadFile(b.ConfPath())
			if err != nil {
				t.Fatal(err)
			}
			for _, w := range tc.want {
				if !strings.Contains(string(conf), w) {
					t.Errorf("config lacks %q:\n%s", w, conf)
				}
			}
			for _, n := range tc.not {
				if strings.Contains(string(conf), n) {
					t.Errorf("config has %q:\n%s", n, conf)
				}
			}
		})
	}
	if _, err := New(Options{Quiet: true, Debug: true}); !errors.Is(err, ErrInvalidOptions) {
		t.Fatalf("New with Quiet and Debug: %v, want ErrInvalidOptions", err)
	}
}

// TestLogBufferKeepsTheTail writes well past the bound and checks that the
// buffer keeps at least the last maxLogBytes, no more than trimSlack over,
// and that absolute offsets still find the right bytes.
func TestLogBufferKeepsTheTail(t *testing.T) {
	l := newLogBuffer()
	line := []byte(strings.Repeat("x", 99) + "\n")
	var mark int64
	for i := 0; l.offset() < 3*maxLogBytes; i++ {
		if i == 100_000 {
			mark = l.offset()
			if _, err := l.Write([]byte("mark\n")); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := l.Write(line); err != nil {
			t.Fatal(err)
		}
	}
	n := len(l.String())
	if n < maxLogBytes || n > maxLogBytes+trimSlack {
		t.Fatalf("kept %d bytes, want %d..%d", n, maxLogBytes, maxLogBytes+trimSlack)
	}
	if !strings.HasSuffix(l.String(), string(line)) || l.tail(len(line)) != string(line) {
		t.Fatal("the tail is not the last write")
	}
	if got := l.since(l.offset() - 5); got != string(line[len(line)-5:]) {
		t.Fatalf("since(offset-5) = %q", got)
	}
	if got := l.since(mark); len(got) != n {
		t.Fatalf("since(an offset already dropped) = %d bytes, want all %d kept", len(got), n)
	}
}
