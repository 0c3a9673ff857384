package embedbroker

import (
	"fmt"
	"log/slog"
	"net"
	"sync"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
)

// Options configures StartWith. The zero value is valid.
type Options struct {
	// Logger receives the broker's logs; nil discards them.
	Logger *slog.Logger

	// PersistDir, when set, keeps the broker's state (client sessions,
	// subscriptions, in-flight and queued QoS 1/2 messages, retained
	// messages) in a Badger database in this directory (mochi's storage
	// hook), so that a broker started again on the same directory after
	// Close resumes every persistent session. Empty: state lives in memory
	// and Close loses it.
	PersistDir string

	// wrapConn, when set (by tests), wraps every accepted connection.
	wrapConn func(net.Conn) net.Conn
}

// Broker is a running in-process MQTT broker.
type Broker struct {
	srv *mqtt.Server
	ln  *listener

	closeOnce sync.Once
	closeErr  error
}

// Start starts a broker listening on addr ("127.0.0.1:0" picks a free port),
// letting every client in, with logging discarded. Errors wrap ErrStart.
func Start(addr string) (*Broker, error) {
	return StartWith(addr, Options{})
}

// StartWith is Start with options. Errors wrap ErrStart.
func StartWith(addr string, opts Options) (*Broker, error) {
	logger := opts.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	srv := mqtt.New(&mqtt.Options{Logger: logger})
	if err := srv.AddHook(new(auth.AllowHook), nil); err != nil {
		return nil, fmt.Errorf("%w: add auth hook: %w", ErrStart, err)
	}
	if err := srv.AddHook(newDeliverFirst(srv), nil); err != nil {
		return nil, fmt.Errorf("%w: add delivery hook: %w", ErrStart, err)
	}
	if opts.PersistDir != "" {
		if err := addStorage(srv, opts.PersistDir); err != nil {
			_ = srv.Close()
			return nil, fmt.Errorf("%w: storage in %s: %w", ErrStart, opts.PersistDir, err)
		}
	}
	ln := newListener("tcp", addr)
	ln.wrap = opts.wrapConn
	if err := srv.AddListener(ln); err != nil {
		return nil, fmt.Errorf("%w: listen on %s: %w", ErrStart, addr, err)
	}
	b := &Broker{srv: srv, ln: ln}
	if err := srv.Serve(); err != nil {
		_ = b.Close()
		return nil, fmt.Errorf("%w: serve: %w", ErrStart, err)
	}
	return b, nil
}

// Addr returns the listener's address, "127.0.0.1:port".
func (b *Broker) Addr() string { return b.ln.Address() }

// URL returns "tcp://" + Addr(), for MQTT client options.
func (b *Broker) URL() string { return "tcp://" + b.Addr() }

// Close disconnects every client, stops the listener and waits for the
// goroutines serving connections. It is idempotent; every call returns the
// first call's result.
func (b *Broker) Close() error {
	b.closeOnce.Do(func() {
		// mochi's Close disconnects registered clients, then closes each
		// listener (ours also closes connections that have not sent CONNECT
		// and waits for their goroutines), then stops the hooks.
		b.closeErr = b.srv.Close()
	})
	return b.closeErr
}
