package reconnect_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/holdfast-mqtt/holdfast/reconnect"
)

// fakeConn is a Conn the test loses by hand.
type fakeConn struct {
	done chan struct{}
	once sync.Once
	mu   sync.Mutex // guards err
	err  error
}

func newFakeConn() *fakeConn { return &fakeConn{done: make(chan struct{})} }

func (c *fakeConn) Done() <-chan struct{} { return c.done }

func (c *fakeConn) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// lose closes Done with err as the cause (first call wins).
func (c *fakeConn) lose(err error) {
	c.once.Do(func() {
		c.mu.Lock()
		c.err = err
		c.mu.Unlock()
		close(c.done)
	})
}

// attemptRec is one call of the fake ConnectFunc.
type attemptRec struct {
	broker string
	at     time.Time
}

// fakeDialer is a scripted ConnectFunc. script receives the 1-based number
// of the attempt (over the dialer's lifetime) and the broker; nil script
// succeeds every time.
type fakeDialer struct {
	script func(ctx context.Context, n int, broker string) (reconnect.Conn, error)

	mu       sync.Mutex // guards the fields below
	attempts []attemptRec
	conns    []*fakeConn
}

func (d *fakeDialer) connect(ctx context.Context, broker string) (reconnect.Conn, error) {
	d.mu.Lock()
	d.attempts = append(d.attempts, attemptRec{broker: broker, at: time.Now()})
	n := len(d.attempts)
	script := d.script
	d.mu.Unlock()
	if script == nil {
		return d.newConn(), nil
	}
	return script(ctx, n, broker)
}

// newConn makes a fakeConn and remembers it.
func (d *fakeDialer) newConn() *fakeConn {
	c := newFakeConn()
	d.mu.Lock()
	d.conns = append(d.conns, c)
	d.mu.Unlock()
	return c
}

func (d *fakeDialer) setScript(f func(ctx context.Context, n int, broker string) (reconnect.Conn, error)) {
	d.mu.Lock()
	d.script = f
	d.mu.Unlock()
}

func (d *fakeDialer) snapshot() []attemptRec {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]attemptRec(nil), d.attempts...)
}

func (d *fakeDialer) count() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.attempts)
}

func (d *fakeDialer) lastConn() *fakeConn {
	d.mu.Lock()
	defer d.mu.Unlock()
	if len(d.conns) == 0 {
		return nil
	}
	return d.conns[len(d.conns)-1]
}

// recorder collects events.
type recorder struct {
	mu      sync.Mutex // guards the fields below
	events  []reconnect.Event
	changed chan struct{} // closed at the next event; made by waitFor
}

func (r *recorder) on(ev reconnect.Event) {
	r.mu.Lock()
	r.events = append(r.events, ev)
	if r.changed != nil {
		close(r.changed)
		r.changed = nil
	}
	r.mu.Unlock()
}

func (r *recorder) snapshot() []reconnect.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]reconnect.Event(nil), r.events...)
}

// waitFor waits, without polling, until pred holds for the events recorded
// so far, and returns them; it fails the test after timeout.
func (r *recorder) waitFor(t testing.TB, timeout time.Duration, what string, pred func([]reconnect.Event) bool) []reconnect.Event {
	t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		r.mu.Lock()
		evs := append([]reconnect.Event(nil), r.events...)
		if pred(evs) {
			r.mu.Unlock()
			return evs
		}
		if r.changed == nil {
			r.changed = make(chan struct{})
		}
		ch := r.changed
		r.mu.Unlock()
		select {
		case <-ch:
		case <-deadline.C:
			var b strings.Builder
			for _, ev := range evs {
				fmt.Fprintf(&b, "  %s %v\n", ev.At.Format("15:04:05.000"), ev)
			}
			t.Fatalf("timed out after %v waiting for %s; events:\n%s", timeout, what, b.String())
		}
	}
}

// countState counts the events with state s.
func countState(evs []reconnect.Event, s reconnect.State) int {
	n := 0
	for _, ev := range evs {
		if ev.State == s {
			n++
		}
	}
	return n
}

// of returns the recorded events with the given state.
func (r *recorder) of(s reconnect.State) []reconnect.Event {
	var out []reconnect.Event
	for _, ev := range r.snapshot() {
		if ev.State == s {
			out = append(out, ev)
		}
	}
	return out
}

// gaps returns the time between consecutive attempts.
func gaps(as []attemptRec) []time.Duration {
	var out []time.Duration
	for i := 1; i < len(as); i++ {
		out = append(out, as[i].at.Sub(as[i-1].at))
	}
	return out
}
