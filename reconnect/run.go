package reconnect

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/cenkalti/backoff/v4"
)

// run is the supervisor goroutine: the only place that decides when to
// connect. It owns bo, the one ExponentialBackOff of this supervisor.
func (s *Supervisor) run() {
	defer s.wg.Done()
	defer s.finish()

	p := s.cfg.Policy
	bo := p.NewBackOff()
	n := len(s.cfg.Brokers)
	idx := 0     // broker of the next attempt
	attempt := 0 // attempts since the last established connection, Start or RetryNow
	refused := 0 // consecutive permanent refusals
	var delay time.Duration

	for {
		broker := s.cfg.Brokers[idx]
		attempt++
		s.transition(Event{State: Connecting, Broker: broker, Attempt: attempt, Delay: delay}, nil, false)
		conn, err := s.attempt(broker)
		if s.ctx.Err() != nil {
			if conn != nil && err == nil {
				// Succeeded as Close cancelled it: keep it for Current so its owner can release it.
				s.mu.Lock()
				s.conn = conn
				s.mu.Unlock()
			}
			return
		}

		if err != nil {
			permanent := s.isPermanent(err)
			s.count(func(st *Stats) {
				st.Failures++
				if permanent {
					st.Permanent++
				}
			})
			idx = (idx + 1) % n
			if !permanent {
				refused = 0
				delay = s.next(bo)
			} else {
				refused++
				switch {
				case refused < n:
					// Another broker may still accept: fail over at the normal pace.
					delay = s.next(bo)
				case p.OnPermanent == SlowOnPermanent:
					delay = jitter(p.PermanentInterval, p.Jitter)
				default:
					s.transition(Event{State: Stopped, Broker: broker, Attempt: attempt,
						Err: fmt.Errorf("%w: %w", ErrStopped, err)}, nil, false)
					if !s.waitKick() {
						return
					}
					bo.Reset()
					attempt, refused, delay = 0, 0, 0
					continue
				}
			}
			s.transition(Event{State: Disconnected, Broker: broker, Attempt: attempt, Delay: delay, Err: err}, nil, false)
			if !s.wait(delay) {
				return
			}
			continue
		}

		// Connected: watch the Conn until it is lost or Close is called.
		refused = 0
		s.count(func(st *Stats) { st.Connects++ })
		up := time.Now()
		s.transition(Event{State: Connected, Broker: broker, Attempt: attempt}, conn, false)
		select {
		case <-conn.Done():
		case <-s.ctx.Done():
			return
		}
		uptime := time.Since(up)
		if uptime >= p.StableAfter {
			bo.Reset() // stable: the first reconnect waits about InitialInterval
		}
		delay = s.next(bo)
		attempt = 0
		s.drainKick() // a RetryNow while connected is stale
		s.count(func(st *Stats) { st.Losses++ })
		s.transition(Event{State: Disconnected, Broker: broker, Delay: delay, Uptime: uptime,
			Err: lostError(conn.Err())}, nil, false)
		if !s.wait(delay) {
			return
		}
	}
}

// attempt calls the ConnectFunc once, bounded by AttemptTimeout.
func (s *Supervisor) attempt(broker string) (Conn, error) {
	ctx := s.ctx
	if s.cfg.AttemptTimeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, s.cfg.AttemptTimeout)
		defer cancel()
	}
	s.count(func(st *Stats) { st.Attempts++ })
	conn, err := s.cfg.Connect(ctx, broker)
	if err == nil && conn == nil {
		err = ErrNoConn
	}
	return conn, err
}

// next returns the backoff's next delay. backoff.Stop cannot come from a
// policy built by NewBackOff (MaxElapsedTime is 0); it is mapped to
// MaxInterval rather than let a negative delay spin the loop.
func (s *Supervisor) next(bo backoff.BackOff) time.Duration {
	d := bo.NextBackOff()
	if d == backoff.Stop || d < 0 {
		return s.cfg.Policy.MaxInterval
	}
	return d
}

// isPermanent applies the package classifier and the configured one.
func (s *Supervisor) isPermanent(err error) bool {
	if err == nil {
		return false
	}
	return IsPermanent(err) || (s.cfg.IsPermanent != nil && s.cfg.IsPermanent(err))
}

// wait waits d, or less if RetryNow is called; false if Close was called.
func (s *Supervisor) wait(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-s.kick:
		return true
	case <-s.ctx.Done():
		return false
	}
}

// waitKick waits for RetryNow; false if Close was called.
func (s *Supervisor) waitKick() bool {
	select {
	case <-s.kick:
		return true
	case <-s.ctx.Done():
		return false
	}
}

func (s *Supervisor) drainKick() {
	select {
	case <-s.kick:
	default:
	}
}

// lostError is the Err of the Disconnected event after a loss.
func lostError(cause error) error {
	if cause == nil || errors.Is(cause, ErrConnectionLost) {
		if cause == nil {
			return ErrConnectionLost
		}
		return cause
	}
	return fmt.Errorf("%w: %w", ErrConnectionLost, cause)
}
