package embedbroker

import (
	"log/slog"
	"net"
	"sync"

	"github.com/mochi-mqtt/server/v2/listeners"
)

// listener is a mochi listeners.Listener over TCP that, unlike mochi's own,
// tracks the connections it accepts and the goroutines serving them, so that
// Close can end them all and wait: mochi's listener leaves a connection that
// never sends CONNECT blocked in a read, and never waits for its accept loop.
type listener struct {
	id      string
	address string
	ln      net.Listener
	wrap    func(net.Conn) net.Conn // nil: connections as accepted

	// wg tracks the accept loop and every establish goroutine. wg.Add is only
	// called with mu held and closed false, so it cannot race with Close's Wait.
	wg sync.WaitGroup

	mu     sync.Mutex // guards the fields below
	closed bool
	conns  map[net.Conn]struct{}
}

var _ listeners.Listener = (*listener)(nil)

func newListener(id, address string) *listener {
	return &listener{id: id, address: address, conns: make(map[net.Conn]struct{})}
}

// Init opens the TCP socket.
func (l *listener) Init(*slog.Logger) error {
	ln, err := net.Listen("tcp", l.address)
	if err != nil {
		return err
	}
	l.ln = ln
	return nil
}

// ID returns the listener's id.
func (l *listener) ID() string { return l.id }

// Address returns the bound address once Init has run.
func (l *listener) Address() string {
	if l.ln != nil {
		return l.ln.Addr().String()
	}
	return l.address
}

// Protocol returns "tcp".
func (l *listener) Protocol() string { return "tcp" }

// Serve accepts connections until Close, handing each to establish on a
// tracked goroutine. mochi runs it on a goroutine of its own.
func (l *listener) Serve(establish listeners.EstablishFn) {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return
	}
	l.wg.Add(1)
	l.mu.Unlock()
	defer l.wg.Done()

	for {
		c, err := l.ln.Accept()
		if err != nil {
			return // closed (a transient error also ends serving, as in mochi's listener)
		}
		l.mu.Lock()
		if l.closed {
			l.mu.Unlock()
			_ = c.Close()
			return
		}
		l.conns[c] = struct{}{}
		l.wg.Add(1)
		l.mu.Unlock()
		conn := c
		if l.wrap != nil {
			conn = l.wrap(c)
		}
		go func() {
			defer l.wg.Done()
			_ = establish(l.id, conn) // mochi logs and closes; errors here are per client
			l.mu.Lock()
			delete(l.conns, c)
			l.mu.Unlock()
			_ = c.Close()
		}()
	}
}

// Close disconnects the listener's clients through closeClients, stops
// accepting, closes every connection still open (including those that have
// not sent CONNECT) and waits for the accept loop and every establish call.
func (l *listener) Close(closeClients listeners.CloseFn) {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return
	}
	l.closed = true
	l.mu.Unlock()

	closeClients(l.id)
	if l.ln != nil {
		_ = l.ln.Close()
	}
	l.mu.Lock()
	for c := range l.conns {
		_ = c.Close()
	}
	l.mu.Unlock()
	l.wg.Wait()
}
