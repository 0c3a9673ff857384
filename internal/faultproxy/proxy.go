package faultproxy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// dialTimeout bounds how long a new connection waits for the target.
const dialTimeout = 5 * time.Second

// Proxy forwards TCP connections from a loopback listener to a target address
// and injects faults on request. All methods are safe for concurrent use.
type Proxy struct {
	ln   net.Listener
	addr string

	// ctx is cancelled by Close; it aborts dials, timers and Chaos.
	ctx    context.Context
	cancel context.CancelFunc

	// wg tracks every goroutine the Proxy starts. wg.Add is only called with
	// mu held and closed false, so no Add can race with the Wait in Close.
	wg sync.WaitGroup

	// mu guards the fields below.
	mu        sync.Mutex
	closed    bool
	target    string
	links     map[*link]struct{}
	refuse    bool
	outageGen uint64        // incremented by every SetRefuse/Outage; an outage ends only if unchanged
	blackhole bool          // forwarding is held while true
	bhOff     chan struct{} // closed when the black hole ends; replaced when it starts
	latency   time.Duration
	bandwidth int // bytes per second per direction; 0 = unlimited

	closeDone chan struct{} // closed when Close has finished

	stats counters
}

// counters are the Stats fields, updated atomically.
type counters struct {
	accepted   atomic.Uint64
	active     atomic.Int64
	refused    atomic.Uint64
	dialErrors atomic.Uint64
	cuts       atomic.Uint64
	bytesUp    atomic.Uint64
	bytesDown  atomic.Uint64
	faults     atomic.Uint64
}

// Stats is a snapshot of a Proxy's counters.
type Stats struct {
	Accepted   uint64 // connections accepted and forwarded to the target (a dial was attempted)
	Active     int64  // connections currently forwarded
	Refused    uint64 // connections accepted and reset at once because of SetRefuse or Outage
	DialErrors uint64 // connections reset because the target could not be dialled
	Cuts       uint64 // live connections reset by Cut, SetRefuse, Outage or Chaos
	BytesUp    uint64 // bytes written from clients to the target
	BytesDown  uint64 // bytes written from the target to clients
	Faults     uint64 // faults injected by Chaos
}

// New starts a Proxy listening on 127.0.0.1 on a free port that forwards every
// connection to target ("host:port"). It returns ErrInvalidTarget for a
// malformed target, or the listener's error. Close it when done.
func New(target string) (*Proxy, error) {
	if err := checkTarget(target); err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("faultproxy: listen: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	p := &Proxy{
		ln:        ln,
		addr:      ln.Addr().String(),
		ctx:       ctx,
		cancel:    cancel,
		target:    target,
		links:     make(map[*link]struct{}),
		bhOff:     make(chan struct{}),
		closeDone: make(chan struct{}),
	}
	close(p.bhOff) // not black-holed
	p.wg.Add(1)
	go p.acceptLoop()
	return p, nil
}

func checkTarget(target string) error {
	host, port, err := net.SplitHostPort(target)
	if err != nil || port == "" {
		return fmt.Errorf("%w: %q", ErrInvalidTarget, target)
	}
	_ = host // an empty host means the local system, as for net.Dial
	return nil
}

// Addr returns the address clients should connect to, "127.0.0.1:port".
func (p *Proxy) Addr() string { return p.addr }

// URL returns "tcp://" + Addr(), for MQTT client options.
func (p *Proxy) URL() string { return "tcp://" + p.addr }

// SetTarget changes where new connections are forwarded; live connections
// keep their current target. A malformed address makes new connections fail
// to dial (counted in Stats.DialErrors).
func (p *Proxy) SetTarget(addr string) {
	p.mu.Lock()
	p.target = addr
	p.mu.Unlock()
}

// Stats returns a snapshot of the counters.
func (p *Proxy) Stats() Stats {
	return Stats{
		Accepted:   p.stats.accepted.Load(),
		Active:     p.stats.active.Load(),
		Refused:    p.stats.refused.Load(),
		DialErrors: p.stats.dialErrors.Load(),
		Cuts:       p.stats.cuts.Load(),
		BytesUp:    p.stats.bytesUp.Load(),
		BytesDown:  p.stats.bytesDown.Load(),
		Faults:     p.stats.faults.Load(),
	}
}

// Close stops the listener, resets every live connection, stops outage timers
// and Chaos, and waits for all the Proxy's goroutines to end. It is idempotent
// and always returns nil; later calls wait for the first to finish.
func (p *Proxy) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		<-p.closeDone
		return nil
	}
	p.closed = true
	live := p.snapshotLocked()
	p.mu.Unlock()

	// Teardown order: stop timers and dials, stop accepting, reset live
	// connections (unblocks their pumps), then wait for every goroutine.
	p.cancel()
	_ = p.ln.Close()
	for _, l := range live {
		l.reset()
	}
	p.wg.Wait()
	close(p.closeDone)
	return nil
}

// goLocked starts f on a tracked goroutine; it must be called with mu held.
// It reports false, and starts nothing, once the Proxy is closed.
func (p *Proxy) goLocked(f func()) bool {
	if p.closed {
		return false
	}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		f()
	}()
	return true
}

func (p *Proxy) snapshotLocked() []*link {
	out := make([]*link, 0, len(p.links))
	for l := range p.links {
		out = append(out, l)
	}
	return out
}

func (p *Proxy) acceptLoop() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) || p.ctx.Err() != nil {
				return
			}
			// Transient failure (e.g. too many open files): back off briefly.
			t := time.NewTimer(10 * time.Millisecond)
			select {
			case <-t.C:
			case <-p.ctx.Done():
				t.Stop()
				return
			}
			continue
		}
		p.handle(c.(*net.TCPConn))
	}
}

// handle decides what to do with a new client connection.
func (p *Proxy) handle(c *net.TCPConn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.refuse {
		p.stats.refused.Add(1)
		resetConn(c)
		return
	}
	target := p.target
	if !p.goLocked(func() { p.serve(c, target) }) {
		resetConn(c)
		return
	}
	p.stats.accepted.Add(1)
}

// serve dials the target and forwards until either side ends. It runs the
// client-to-target pump itself and a second goroutine for the reverse one.
func (p *Proxy) serve(c *net.TCPConn, target string) {
	d := net.Dialer{Timeout: dialTimeout}
	uc, err := d.DialContext(p.ctx, "tcp", target)
	if err != nil {
		p.stats.dialErrors.Add(1)
		resetConn(c)
		return
	}
	l := &link{client: c, upstream: uc.(*net.TCPConn), done: make(chan struct{})}
	downDone := make(chan struct{})

	p.mu.Lock()
	if p.refuse {
		// An outage began while dialling.
		p.mu.Unlock()
		p.stats.refused.Add(1)
		l.reset()
		return
	}
	started := p.goLocked(func() {
		defer close(downDone)
		p.pump(l, l.upstream, l.client, &p.stats.bytesDown)
	})
	if !started {
		p.mu.Unlock()
		l.reset()
		return
	}
	p.links[l] = struct{}{}
	p.stats.active.Add(1)
	p.mu.Unlock()

	p.pump(l, l.client, l.upstream, &p.stats.bytesUp)
	<-downDone

	l.close()
	p.mu.Lock()
	delete(p.links, l)
	p.mu.Unlock()
	p.stats.active.Add(-1)
}

// resetConn closes c with SO_LINGER 0 so that the peer receives a RST.
func resetConn(c *net.TCPConn) {
	_ = c.SetLinger(0)
	_ = c.Close()
}
