package testbroker

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Timeouts for the broker's lifecycle.
const (
	readyTimeout = 10 * time.Second // from exec to accepting connections
	stopTimeout  = 10 * time.Second // from SIGTERM to exit, before SIGKILL
	bindAttempts = 3                // ports tried by StartMosquitto
	logTailBytes = 32 * 1024        // log shown when a test failed
)

// MosquittoOptions configures StartMosquitto. The zero value is a plain TCP
// broker with persistence, anonymous access and a large queue limit.
type MosquittoOptions struct {
	// NoPersistence turns persistence off. By default it is on and the
	// database is saved at every graceful stop (autosave_interval 0).
	NoPersistence bool
	// TLS makes the listener TLS-only, with a CA and a server certificate
	// (ECDSA, for 127.0.0.1 and "localhost") generated for the test; see CA,
	// CAPEM and ClientTLSConfig. URL then starts with "ssl://".
	TLS bool
	// Users maps user names to passwords. When non-empty a password file is
	// written with mosquitto_passwd and anonymous access is refused.
	Users map[string]string
	// ACL, when non-empty, is written verbatim as the broker's acl_file.
	ACL string
	// MaxInflightMessages sets max_inflight_messages; 0 keeps Mosquitto's
	// default (20).
	MaxInflightMessages int
	// MaxQueuedMessages sets max_queued_messages; 0 means 1,000,000.
	MaxQueuedMessages int
	// Extra is appended verbatim to the generated configuration.
	Extra string
}

// Mosquitto is a mosquitto child process run for one test. Its methods take
// the calling test (which may be a subtest) to report failures.
type Mosquitto struct {
	opts MosquittoOptions
	path string // mosquitto binary
	dir  string // config, TLS files, password file, data/
	port int
	ca   *CA // nil without TLS
	log  *logBuffer

	mu   sync.Mutex // guards proc
	proc *process   // the running process; nil when stopped
}

// process is one run of the broker.
type process struct {
	cmd  *exec.Cmd
	done chan struct{} // closed once the process has exited and been reaped
	err  error         // cmd.Wait's result; read only after done is closed

	logStart int64 // log offset where this run's output begins
}

// errBind marks a start that failed because the port was taken.
var errBind = errors.New("address already in use")

// StartMosquitto starts mosquitto as a child process on a free 127.0.0.1 port
// with its own configuration and persistence directory under t.TempDir(),
// and returns once it accepts TCP connections. It skips the test when
// mosquitto is not installed, or fails it when HOLDFAST_REQUIRE_MOSQUITTO=1.
// The broker is stopped by t.Cleanup; if the test failed, the tail of its
// log is written with t.Log.
func StartMosquitto(t testing.TB, opts MosquittoOptions) *Mosquitto {
	t.Helper()
	path, ok := MosquittoPath()
	if !ok {
		missing(t, "mosquitto")
	}
	m := &Mosquitto{opts: opts, path: path, dir: t.TempDir(), log: newLogBuffer()}
	// Registered after TempDir's cleanup, so it runs before the directory is removed.
	t.Cleanup(func() {
		m.shutdown()
		if t.Failed() {
			t.Logf("mosquitto log (%s), last %d bytes:\n%s", m.confPath(), logTailBytes, m.log.tail(logTailBytes))
		}
	})
	if opts.TLS {
		m.writeTLSFiles(t)
	}
	for attempt := 1; ; attempt++ {
		m.port = FreePort(t)
		m.writeConfig(t)
		err := m.launch()
		if err == nil {
			return m
		}
		if !errors.Is(err, errBind) || attempt == bindAttempts {
			t.Fatalf("testbroker: start mosquitto: %v\nlog:\n%s", err, m.log.tail(logTailBytes))
		}
	}
}

// Addr returns "127.0.0.1:port".
func (m *Mosquitto) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(m.port)) }

// Port returns the broker's TCP port, which stays the same across restarts.
func (m *Mosquitto) Port() int { return m.port }

// URL returns "tcp://" + Addr(), or "ssl://" + Addr() with TLS.
func (m *Mosquitto) URL() string {
	if m.opts.TLS {
		return "ssl://" + m.Addr()
	}
	return "tcp://" + m.Addr()
}

// Dir returns the directory holding the broker's configuration and data.
func (m *Mosquitto) Dir() string { return m.dir }

// CA returns the generated certificate authority, or nil without TLS.
func (m *Mosquitto) CA() *CA { return m.ca }

// CAPEM returns the generated CA certificate, PEM-encoded, or nil without TLS.
func (m *Mosquitto) CAPEM() []byte {
	if m.ca == nil {
		return nil
	}
	return m.ca.CertPEM
}

// ClientTLSConfig returns a new client configuration that trusts only the
// generated CA, with ServerName set; nil without TLS.
func (m *Mosquitto) ClientTLSConfig() *tls.Config {
	if m.ca == nil {
		return nil
	}
	return m.ca.ClientTLSConfig()
}

// Log returns everything the broker has logged so far, across restarts.
// Each run starts with a line beginning "==== testbroker:".
func (m *Mosquitto) Log() string { return m.log.String() }

// Running reports whether the broker process is running.
func (m *Mosquitto) Running() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.proc != nil
}

// Restart stops the broker gracefully (SIGTERM: persistence is saved), waits
// for it to exit, starts it again on the same port with the same directory,
// and waits until it accepts connections.
func (m *Mosquitto) Restart(t testing.TB) {
	t.Helper()
	m.Stop(t)
	m.Start(t)
}

// Stop sends SIGTERM and waits for the broker to exit, which saves its
// persistence database. It fails the test if the broker exits with an error,
// logs that it could not save its database, or has to be killed after 10s. Stopping a stopped broker does nothing.
func (m *Mosquitto) Stop(t testing.TB) {
	t.Helper()
	p := m.take()
	if p == nil {
		return
	}
	if err := terminate(p, syscall.SIGTERM, stopTimeout); err != nil {
		t.Fatalf("testbroker: stop mosquitto: %v\nlog:\n%s", err, m.log.tail(logTailBytes))
	}
	// Mosquitto exits with status 0 even when it cannot save its database.
	if out := m.log.since(p.logStart); strings.Contains(out, "Error saving in-memory database") {
		t.Fatalf("testbroker: mosquitto could not save its persistence database:\n%s", out)
	}
}

// Kill sends SIGKILL and waits for the process to be reaped: nothing is
// saved. Killing a stopped broker does nothing.
func (m *Mosquitto) Kill(t testing.TB) {
	t.Helper()
	p := m.take()
	if p == nil {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
}

// Start starts a stopped broker again on the same port with the same
// directory and waits until it accepts connections. It fails the test if the
// broker is already running or does not come up.
func (m *Mosquitto) Start(t testing.TB) {
	t.Helper()
	if m.Running() {
		t.Fatal("testbroker: Start: mosquitto is already running")
	}
	if err := m.launch(); err != nil {
		t.Fatalf("testbroker: start mosquitto on port %d: %v\nlog:\n%s", m.port, err, m.log.tail(logTailBytes))
	}
}

// take removes and returns the running process, or nil.
func (m *Mosquitto) take() *process {
	m.mu.Lock()
	defer m.mu.Unlock()
	p := m.proc
	m.proc = nil
	return p
}

// shutdown stops the broker at the end of the test, whatever its state.
func (m *Mosquitto) shutdown() {
	if p := m.take(); p != nil {
		_ = terminate(p, syscall.SIGTERM, 5*time.Second)
	}
}

// terminate sends sig and waits up to timeout for the process to exit, then
// kills it. It returns an error if the process had to be killed or exited
// with a failure status.
func terminate(p *process, sig syscall.Signal, timeout time.Duration) error {
	_ = p.cmd.Process.Signal(sig)
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-p.done:
		if p.err != nil {
			return fmt.Errorf("mosquitto exited with %w after %v", p.err, sig)
		}
		return nil
	case <-t.C:
		_ = p.cmd.Process.Signal(syscall.SIGKILL)
		<-p.done
		return fmt.Errorf("mosquitto did not exit within %v of %v and was killed", timeout, sig)
	}
}

// launch runs the broker with the current configuration and waits until it
// is ready. On failure the process has been reaped; an error wrapping errBind
// means the port was taken.
func (m *Mosquitto) launch() error {
	cmd := exec.Command(m.path, "-c", m.confPath())
	cmd.Dir = m.dir
	cmd.Stdout = m.log
	cmd.Stderr = m.log
	cmd.SysProcAttr = sysProcAttr()
	cmd.WaitDelay = time.Second // bound the wait for the output pipe

	start := m.log.offset()
	fmt.Fprintf(m.log, "==== testbroker: %s -c %s (port %d) ====\n", m.path, m.confPath(), m.port)
	if err := cmd.Start(); err != nil {
		return err
	}
	p := &process{cmd: cmd, done: make(chan struct{}), logStart: start}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	m.mu.Lock()
	m.proc = p
	m.mu.Unlock()

	if err := m.waitReady(p, start); err != nil {
		if q := m.take(); q != nil {
			_ = q.cmd.Process.Signal(syscall.SIGKILL)
		}
		<-p.done
		return err
	}
	return nil
}

// waitReady waits until the broker has logged that it runs and a TCP
// connection to its port succeeds, or until it exits or readyTimeout passes.
func (m *Mosquitto) waitReady(p *process, logStart int64) error {
	deadline := time.NewTimer(readyTimeout)
	defer deadline.Stop()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-p.done:
			out := m.log.since(logStart)
			if strings.Contains(out, "Address already in use") {
				return fmt.Errorf("port %d: %w", m.port, errBind)
			}
			return fmt.Errorf("mosquitto exited before it was ready: %v", p.err)
		case <-deadline.C:
			return fmt.Errorf("mosquitto not ready within %v", readyTimeout)
		case <-tick.C:
		}
		if !strings.Contains(m.log.since(logStart), " running") {
			continue
		}
		c, err := net.DialTimeout("tcp", m.Addr(), time.Second)
		if err == nil {
			_ = c.Close()
			return nil
		}
	}
}
