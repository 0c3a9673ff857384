package mosquitto

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Timeouts and limits of the broker's lifecycle. They bound a broker that
// hangs, not a slow one: on a loaded 2-core machine under -race a graceful
// stop that saves the database has taken more than 5s.
const (
	ReadyTimeout  = 30 * time.Second // from exec to accepting connections
	StopTimeout   = 30 * time.Second // from SIGTERM to exit in Stop, before SIGKILL
	closeTimeout  = 30 * time.Second // the same in Close
	bindAttempts  = 3                // ports tried by the first Start with an automatic port
	readyInterval = 10 * time.Millisecond
)

// Broker is a mosquitto child process, stopped and started again on the
// same port and directory as often as needed. Its methods are safe for
// concurrent use, but lifecycle calls (Start, Stop, Kill, Restart, Close)
// are meant to come from one goroutine at a time.
type Broker struct {
	opts     Options
	path     string // mosquitto binary
	dir      string
	ownDir   bool // dir was created by New and is removed by Close
	autoPort bool // the port was chosen by New: the first Start may pick another
	port     int
	log      *logBuffer

	mu      sync.Mutex // guards proc, started, closed
	proc    *process   // the running process; nil when stopped
	started bool       // a Start has succeeded once
	closed  bool
}

// process is one run of the broker.
type process struct {
	cmd  *exec.Cmd
	done chan struct{} // closed once the process has exited and been reaped
	err  error         // cmd.Wait's result; read only after done is closed

	logStart int64 // log offset where this run's output begins
}

// New prepares a broker: it resolves the binary, creates the directory,
// picks the port and writes the configuration and the files it refers to.
// Nothing runs until Start. Errors: ErrNotInstalled, ErrInvalidOptions, or
// a file-system error.
func New(opts Options) (*Broker, error) {
	if opts.Port < 0 || opts.Port > 65535 {
		return nil, fmt.Errorf("%w: port %d", ErrInvalidOptions, opts.Port)
	}
	if opts.Quiet && opts.Debug {
		return nil, fmt.Errorf("%w: Quiet and Debug", ErrInvalidOptions)
	}
	b := &Broker{opts: opts, path: opts.Binary, dir: opts.Dir, port: opts.Port, log: newLogBuffer()}
	if b.path == "" {
		p, ok := Path()
		if !ok {
			return nil, fmt.Errorf("%w: mosquitto not found (install the Debian package mosquitto or set %s)", ErrNotInstalled, EnvBinary)
		}
		b.path = p
	} else if !isExecutable(b.path) {
		return nil, fmt.Errorf("%w: %s is not an executable file", ErrNotInstalled, b.path)
	}
	if b.dir == "" {
		d, err := os.MkdirTemp("", "holdfast-mosquitto-")
		if err != nil {
			return nil, err
		}
		b.dir, b.ownDir = d, true
	} else if err := os.MkdirAll(b.dir, 0o700); err != nil {
		return nil, err
	}
	fail := func(err error) (*Broker, error) {
		if b.ownDir {
			_ = os.RemoveAll(b.dir)
		}
		return nil, err
	}
	if b.port == 0 {
		p, err := FreePort()
		if err != nil {
			return fail(err)
		}
		b.port, b.autoPort = p, true
	}
	if err := b.writeFiles(); err != nil {
		return fail(err)
	}
	if err := b.writeConfig(); err != nil {
		return fail(err)
	}
	return b, nil
}

// Start is New followed by Broker.Start. On failure nothing is left
// running or on disk (unless Options.Dir was given), and the error ends
// with the tail of the broker's log.
func Start(opts Options) (*Broker, error) {
	b, err := New(opts)
	if err != nil {
		return nil, err
	}
	if err := b.Start(); err != nil {
		tail := b.LogTail(16 * 1024)
		_ = b.Close()
		return nil, fmt.Errorf("%w\nlog:\n%s", err, tail)
	}
	return b, nil
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func FreePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("mosquitto: find a free port: %w", err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// Addr returns "127.0.0.1:port".
func (b *Broker) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(b.port)) }

// Port returns the broker's TCP port. It stays the same across restarts
// (after the first successful Start, which may have picked another free
// port when the automatic one was taken).
func (b *Broker) Port() int { return b.port }

// URL returns "tcp://" + Addr(), or "ssl://" + Addr() with TLS.
func (b *Broker) URL() string {
	if b.opts.TLS != nil {
		return "ssl://" + b.Addr()
	}
	return "tcp://" + b.Addr()
}

// Dir returns the directory holding the configuration and the data.
func (b *Broker) Dir() string { return b.dir }

// ConfPath returns the path of the generated configuration file.
func (b *Broker) ConfPath() string { return filepath.Join(b.dir, ConfName) }

// Log returns everything the broker has logged so far (at least the last 8 MiB),
// across restarts. Each run starts with a line beginning "==== testbroker:".
func (b *Broker) Log() string { return b.log.String() }

// LogTail returns at most the last n bytes of the log.
func (b *Broker) LogTail(n int) string { return b.log.tail(n) }

// Running reports whether the broker process is running.
func (b *Broker) Running() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.proc != nil
}

// Pid returns the process id of the running broker, or 0.
func (b *Broker) Pid() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.proc == nil {
		return 0
	}
	return b.proc.cmd.Process.Pid
}

// Start starts the broker and waits until it is ready: it has logged that
// it runs and accepts TCP connections. Errors: ErrRunning, ErrClosed,
// ErrBind (the port is taken), ErrNotReady (it exited or did not come up
// within ReadyTimeout); the process has then been reaped.
func (b *Broker) Start() error {
	b.mu.Lock()
	switch {
	case b.closed:
		b.mu.Unlock()
		return ErrClosed
	case b.proc != nil:
		b.mu.Unlock()
		return ErrRunning
	}
	retry := b.autoPort && !b.started
	b.mu.Unlock()
	for attempt := 1; ; attempt++ {
		err := b.launch()
		if err == nil {
			b.mu.Lock()
			b.started = true
			b.mu.Unlock()
			return nil
		}
		if !retry || !errors.Is(err, ErrBind) || attempt == bindAttempts {
			return err
		}
		p, perr := FreePort()
		if perr != nil {
			return perr
		}
		b.port = p
		if err := b.writeConfig(); err != nil {
			return err
		}
	}
}

// Stop sends SIGTERM and waits for the broker to exit, which saves its
// persistence database. Stopping a stopped broker does nothing. Errors:
// ErrStop (a failure status, or killed after StopTimeout), ErrNotSaved.
func (b *Broker) Stop() error {
	p := b.take()
	if p == nil {
		return nil
	}
	if err := terminate(p, syscall.SIGTERM, StopTimeout); err != nil {
		return err
	}
	// Mosquitto exits with status 0 even when it cannot save its database.
	if out := b.log.since(p.logStart); strings.Contains(out, "Error saving in-memory database") {
		return fmt.Errorf("%w:\n%s", ErrNotSaved, out)
	}
	return nil
}

// Kill sends SIGKILL and waits for the process to be reaped: nothing is
// saved. Killing a stopped broker does nothing.
func (b *Broker) Kill() {
	p := b.take()
	if p == nil {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
}

// Restart is Stop then Start, on the same port and directory.
func (b *Broker) Restart() error {
	if err := b.Stop(); err != nil {
		return err
	}
	return b.Start()
}

// Close stops the broker (SIGTERM, then SIGKILL after 30s) and removes the
// directory if New created it. Later calls return nil; other methods then
// return ErrClosed or do nothing.
func (b *Broker) Close() error {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil
	}
	b.closed = true
	b.mu.Unlock()
	var err error
	if p := b.take(); p != nil {
		err = terminate(p, syscall.SIGTERM, closeTimeout)
	}
	if b.ownDir {
		err = errors.Join(err, os.RemoveAll(b.dir))
	}
	return err
}

// take removes and returns the running process, or nil.
func (b *Broker) take() *process {
	b.mu.Lock()
	defer b.mu.Unlock()
	p := b.proc
	b.proc = nil
	return p
}

// terminate sends sig and waits up to timeout for the process to exit, then
// kills it. It returns an error wrapping ErrStop if the process had to be
// killed or exited with a failure status.
func terminate(p *process, sig syscall.Signal, timeout time.Duration) error {
	_ = p.cmd.Process.Signal(sig)
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-p.done:
		if p.err != nil {
			return fmt.Errorf("%w: mosquitto exited with %w after %v", ErrStop, p.err, sig)
		}
		return nil
	case <-t.C:
		_ = p.cmd.Process.Signal(syscall.SIGKILL)
		<-p.done
		return fmt.Errorf("%w: mosquitto did not exit within %v of %v and was killed", ErrStop, timeout, sig)
	}
}

// launch runs the broker with the current configuration and waits until it
// is ready. On failure the process has been reaped.
func (b *Broker) launch() error {
	cmd := exec.Command(b.path, "-c", b.ConfPath())
	cmd.Dir = b.dir
	cmd.Stdout = b.log
	cmd.Stderr = b.log
	cmd.SysProcAttr = sysProcAttr()
	cmd.WaitDelay = time.Second // bound the wait for the output pipe

	start := b.log.offset()
	fmt.Fprintf(b.log, "==== testbroker: %s -c %s (port %d) ====\n", b.path, b.ConfPath(), b.port)
	if err := cmd.Start(); err != nil {
		return err
	}
	p := &process{cmd: cmd, done: make(chan struct{}), logStart: start}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	b.mu.Lock()
	b.proc = p
	b.mu.Unlock()

	if err := b.waitReady(p, start); err != nil {
		if q := b.take(); q != nil {
			_ = q.cmd.Process.Signal(syscall.SIGKILL)
		}
		<-p.done
		return err
	}
	return nil
}

// waitReady waits until the broker has logged that it runs and a TCP
// connection to its port succeeds, or until it exits or ReadyTimeout passes.
func (b *Broker) waitReady(p *process, logStart int64) error {
	deadline := time.NewTimer(ReadyTimeout)
	defer deadline.Stop()
	tick := time.NewTicker(readyInterval)
	defer tick.Stop()
	for {
		select {
		case <-p.done:
			out := b.log.since(logStart)
			if strings.Contains(out, "Address already in use") {
				return fmt.Errorf("port %d: %w", b.port, ErrBind)
			}
			return fmt.Errorf("%w: mosquitto exited before it was ready: %v", ErrNotReady, p.err)
		case <-deadline.C:
			return fmt.Errorf("%w: mosquitto not ready within %v", ErrNotReady, ReadyTimeout)
		case <-tick.C:
		}
		if !strings.Contains(b.log.since(logStart), " running") {
			continue
		}
		c, err := net.DialTimeout("tcp", b.Addr(), time.Second)
		if err == nil {
			_ = c.Close()
			return nil
		}
	}
}
