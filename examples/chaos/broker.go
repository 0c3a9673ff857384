package main

import (
	"fmt"
	"sync"

	"github.com/holdfast-mqtt/holdfast/examples/internal/embedbroker"
)

// This is the only file that imports the embedded broker.

// brokerNote says what the embedded broker keeps across a restart; the
// demo prints it.
const brokerNote = "embedded broker (mochi-mqtt) with persistence: sessions, subscriptions and queued messages survive its restarts"

// localBroker is the embedded broker, restartable on the same port with
// the same persistent state, like a broker restarted gracefully.
type localBroker struct {
	dir  string // persistence directory
	addr string // host:port, fixed by the first start

	mu sync.Mutex          // guards b
	b  *embedbroker.Broker // nil while stopped
}

// startLocal starts the embedded broker on a free loopback port, keeping
// its state in dir.
func startLocal(dir string) (*localBroker, error) {
	b, err := embedbroker.StartWith("127.0.0.1:0", embedbroker.Options{PersistDir: dir})
	if err != nil {
		return nil, err
	}
	return &localBroker{dir: dir, addr: b.Addr(), b: b}, nil
}

// Addr is the broker's host:port; it does not change across restarts.
func (l *localBroker) Addr() string { return l.addr }

// Stop closes the broker gracefully (its state is saved); Start brings it
// back.
func (l *localBroker) Stop() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.b == nil {
		return nil
	}
	err := l.b.Close()
	l.b = nil
	return err
}

// Start starts the broker again on the same port and state. It does
// nothing if it is running.
func (l *localBroker) Start() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.b != nil {
		return nil
	}
	b, err := embedbroker.StartWith(l.addr, embedbroker.Options{PersistDir: l.dir})
	if err != nil {
		return fmt.Errorf("restart on %s: %w", l.addr, err)
	}
	l.b = b
	return nil
}

// Close stops the broker for good.
func (l *localBroker) Close() error { return l.Stop() }
