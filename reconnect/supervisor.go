package reconnect

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// Supervisor decides, alone, when to connect: it calls a [ConnectFunc], watches
// the resulting [Conn], and after a failure or a loss waits a delay set by its
// [Policy] before the next attempt. It owns one goroutine, started by Start
// and stopped by Close. All methods are safe for concurrent use.
type Supervisor struct {
	cfg  Config // immutable after New (defaults applied, Brokers copied)
	log  *slog.Logger
	kick chan struct{} // capacity 1; RetryNow's non-blocking wake-up of the goroutine

	ctx    context.Context    // cancelled by Close; the goroutine's and every attempt's parent
	cancel context.CancelFunc // cancels ctx
	wg     sync.WaitGroup     // the supervisor goroutine
	done   chan struct{}      // closed once the state is Closed and the last event was delivered

	mu sync.Mutex // guards the fields below
	// started and closed record Start and Close calls.
	started, closed bool
	state           State
	broker          string        // broker of the current or last attempt or connection
	conn            Conn          // the current Conn while Connected; kept at Close
	stopErr         error         // while Stopped: ErrStopped wrapped with the refusal
	restarting      bool          // RetryNow was called while Stopped; cleared at the next transition
	changed         chan struct{} // closed and replaced at every transition
	stats           Stats         // counters (State, Broker, LastErr filled on read/transition)
}

// New validates cfg and returns a Supervisor in state [Disconnected]. Nothing
// runs until [Supervisor.Start]. The error wraps [ErrInvalidConfig].
func New(cfg Config) (*Supervisor, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Supervisor{
		cfg:     cfg,
		log:     cfg.Logger,
		kick:    make(chan struct{}, 1),
		ctx:     ctx,
		cancel:  cancel,
		done:    make(chan struct{}),
		state:   Disconnected,
		changed: make(chan struct{}),
	}, nil
}

// Start starts the supervisor's goroutine, which makes the first attempt at
// once, on the first broker. Calls after the first, or after Close, do
// nothing.
func (s *Supervisor) Start() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.started || s.closed {
		return
	}
	s.started = true
	s.wg.Add(1)
	go s.run()
}

// Close stops the supervisor: it cancels any attempt in progress (through the
// ConnectFunc's ctx) or any delay at once, waits for the goroutine to exit and
// moves to [Closed]. It does not close the current [Conn], which its owner
// still reaches through [Supervisor.Current]. Close is idempotent, always
// returns nil, and every call returns only once the state is Closed.
func (s *Supervisor) Close() error {
	s.mu.Lock()
	first := !s.closed
	s.closed = true
	started := s.started
	s.mu.Unlock()
	if first {
		s.cancel()
		if !started {
			s.finish()
		}
	}
	s.wg.Wait()
	<-s.done
	return nil
}

// AwaitConnected returns the current [Conn] as soon as the state is
// [Connected], waiting for it if needed. It returns [ErrClosed] after Close,
// an error wrapping [ErrStopped] and the refusal while [Stopped] (unless
// RetryNow has been called since, in which case it waits), and
// ctx.Err() if ctx is done first. It does not poll: it sleeps on a channel
// closed at every transition. The Conn may already be lost when the caller
// looks at it; its Done says so. It may return before OnEvent has received
// the Connected event.
func (s *Supervisor) AwaitConnected(ctx context.Context) (Conn, error) {
	for {
		s.mu.Lock()
		state, conn, stopErr, restarting, changed := s.state, s.conn, s.stopErr, s.restarting, s.changed
		s.mu.Unlock()
		switch state {
		case Connected:
			return conn, nil
		case Closed:
			return nil, ErrClosed
		case Stopped:
			if !restarting {
				return nil, stopErr
			}
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// Changed returns a channel that is closed at the next transition (after
// Closed, a channel that is already closed). Together with State it lets a
// caller wait for any state without polling: take the channel, check State,
// then wait on the channel.
func (s *Supervisor) Changed() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.changed
}

// State returns the current state.
func (s *Supervisor) State() State {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.state
}

// Current returns the broker of the current (or last) attempt or connection,
// and the current Conn: non-nil while [Connected], and after Close if Close
// found the supervisor connected (or an attempt succeeded as Close cancelled
// it), so that the owner can release it.
func (s *Supervisor) Current() (broker string, conn Conn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.broker, s.conn
}

// RetryNow cuts short the delay before the next attempt, and restarts a
// [Stopped] supervisor (with its backoff reset), for instance after the
// credentials that a ConnectFunc uses were fixed. A call while Connecting
// takes effect at the delay after that attempt, if it fails; a call while
// Connected, Closed or before Start has no effect. It never blocks.
func (s *Supervisor) RetryNow() {
	s.mu.Lock()
	if s.state == Stopped {
		s.restarting = true
	}
	s.mu.Unlock()
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// Stats returns a snapshot of the counters.
func (s *Supervisor) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.stats
	st.State, st.Broker = s.state, s.broker
	return st
}

// transition moves to ev.State, wakes every waiter and delivers ev to
// OnEvent. Only the supervisor goroutine calls it (or Close, when the
// goroutine never started), so events are delivered in order. conn is the
// new current Conn (used with Connected); keepConn keeps the old one.
func (s *Supervisor) transition(ev Event, conn Conn, keepConn bool) {
	ev.At = time.Now()
	s.mu.Lock()
	ev.Prev = s.state
	if ev.Broker == "" {
		ev.Broker = s.broker
	}
	s.state, s.broker = ev.State, ev.Broker
	if !keepConn {
		s.conn = conn
	}
	s.stopErr, s.restarting = nil, false
	switch ev.State {
	case Connected:
		s.stats.ConnectedSince = ev.At
	case Stopped:
		s.stopErr = ev.Err
		s.stats.LastErr = ev.Err
		s.stats.ConnectedSince = time.Time{}
	case Disconnected:
		s.stats.LastErr = ev.Err
		s.stats.ConnectedSince = time.Time{}
	default:
		s.stats.ConnectedSince = time.Time{}
	}
	close(s.changed)
	if ev.State != Closed {
		s.changed = make(chan struct{}) // after Closed, Changed keeps returning the closed channel
	}
	s.mu.Unlock()

	s.logEvent(ev)
	if s.cfg.OnEvent != nil {
		s.cfg.OnEvent(ev)
	}
}

// count applies f to the counters under the lock.
func (s *Supervisor) count(f func(*Stats)) {
	s.mu.Lock()
	f(&s.stats)
	s.mu.Unlock()
}

// finish moves to Closed (keeping the current Conn for its owner) and
// releases every Close call.
func (s *Supervisor) finish() {
	s.transition(Event{State: Closed, Err: ErrClosed}, nil, true)
	close(s.done)
}

func (s *Supervisor) logEvent(ev Event) {
	broker := redact(ev.Broker)
	switch ev.State {
	case Connecting:
		s.log.Debug("reconnect: connecting", "broker", broker, "attempt", ev.Attempt, "waited", ev.Delay)
	case Connected:
		s.log.Info("reconnect: connected", "broker", broker, "attempt", ev.Attempt)
	case Disconnected:
		if ev.Prev == Connected {
			s.log.Info("reconnect: connection lost", "broker", broker, "uptime", ev.Uptime,
				"retry_in", ev.Delay, "err", ev.Err)
		} else {
			s.log.Debug("reconnect: attempt failed", "broker", broker, "attempt", ev.Attempt,
				"permanent", s.isPermanent(ev.Err), "retry_in", ev.Delay, "err", ev.Err)
		}
	case Stopped:
		s.log.Error("reconnect: stopped after a permanent refusal; call RetryNow once fixed",
			"broker", broker, "attempt", ev.Attempt, "err", ev.Err)
	case Closed:
		s.log.Debug("reconnect: closed", "broker", broker)
	}
}
