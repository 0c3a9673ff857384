package reconnect

import (
	"fmt"
	"math"
	"math/rand/v2"
	"time"

	"github.com/cenkalti/backoff/v4"
)

// Default values of [Policy]'s fields, applied where a field is zero.
const (
	DefaultInitialInterval   = 250 * time.Millisecond
	DefaultMaxInterval       = 30 * time.Second
	DefaultMultiplier        = 2.0
	DefaultJitter            = 0.5
	DefaultStableAfter       = 10 * time.Second
	DefaultPermanentInterval = 5 * time.Minute
)

// NoJitter, as [Policy.Jitter], turns randomisation off (any negative value
// does). Only tests and single-client deployments should want it: without
// jitter, clients that lose a broker together reconnect together.
const NoJitter = -1.0

// PermanentAction says what a [Supervisor] does when every broker has refused
// the connection with an error that retrying cannot fix (see [IsPermanent]).
type PermanentAction int

const (
	// StopOnPermanent (the default) moves the supervisor to [Stopped]: it
	// makes no more attempts until [Supervisor.RetryNow], and
	// [Supervisor.AwaitConnected] returns an error wrapping [ErrStopped] and
	// the refusal.
	StopOnPermanent PermanentAction = iota
	// SlowOnPermanent keeps trying, but waits [Policy.PermanentInterval]
	// (with jitter) instead of the exponential delay.
	SlowOnPermanent
)

// String returns the constant's name.
func (a PermanentAction) String() string {
	switch a {
	case StopOnPermanent:
		return "StopOnPermanent"
	case SlowOnPermanent:
		return "SlowOnPermanent"
	}
	return fmt.Sprintf("PermanentAction(%d)", int(a))
}

// Policy says when a [Supervisor] tries to connect. The zero value is usable:
// every zero field takes the documented default. Delays grow exponentially
// from InitialInterval to MaxInterval, each randomised by ±Jitter, and never
// give up (cenkalti/backoff's 15-minute MaxElapsedTime is disabled).
type Policy struct {
	// InitialInterval is the base delay before the first reconnect after a
	// loss, and the first retry after a failed attempt. Default 250ms.
	InitialInterval time.Duration
	// MaxInterval caps the base delay (the randomised delay may exceed it by
	// up to Jitter*MaxInterval). Default 30s, or InitialInterval if larger.
	// Must not be below InitialInterval.
	MaxInterval time.Duration
	// Multiplier is the growth factor of the base delay per failed attempt;
	// must be >= 1. Default 2.
	Multiplier float64
	// Jitter is the randomisation factor in [0, 1): each delay is drawn
	// uniformly from [base*(1-Jitter), base*(1+Jitter)]. Default 0.5;
	// [NoJitter] (any negative value) disables it.
	Jitter float64
	// StableAfter: a connection that stayed up at least this long resets the
	// backoff, so the reconnect after its loss waits about InitialInterval.
	// A connection lost sooner does not reset it, so a flapping link is
	// retried ever more slowly. Default 10s.
	StableAfter time.Duration
	// OnPermanent chooses what happens after permanent refusals; default
	// [StopOnPermanent].
	OnPermanent PermanentAction
	// PermanentInterval is the delay, randomised by Jitter, between attempts
	// after every broker refused permanently, with [SlowOnPermanent].
	// Default 5m. Ignored with StopOnPermanent.
	PermanentInterval time.Duration
}

// withDefaults returns p with the defaults applied and validated.
func (p Policy) withDefaults() (Policy, error) {
	switch {
	case p.InitialInterval < 0:
		return p, fmt.Errorf("%w: Policy.InitialInterval %v is negative", ErrInvalidConfig, p.InitialInterval)
	case p.MaxInterval < 0:
		return p, fmt.Errorf("%w: Policy.MaxInterval %v is negative", ErrInvalidConfig, p.MaxInterval)
	case p.StableAfter < 0:
		return p, fmt.Errorf("%w: Policy.StableAfter %v is negative", ErrInvalidConfig, p.StableAfter)
	case p.PermanentInterval < 0:
		return p, fmt.Errorf("%w: Policy.PermanentInterval %v is negative", ErrInvalidConfig, p.PermanentInterval)
	case math.IsNaN(p.Multiplier) || math.IsInf(p.Multiplier, 0) || (p.Multiplier != 0 && p.Multiplier < 1):
		return p, fmt.Errorf("%w: Policy.Multiplier %v must be >= 1", ErrInvalidConfig, p.Multiplier)
	case math.IsNaN(p.Jitter) || p.Jitter >= 1:
		return p, fmt.Errorf("%w: Policy.Jitter %v must be below 1", ErrInvalidConfig, p.Jitter)
	case p.OnPermanent != StopOnPermanent && p.OnPermanent != SlowOnPermanent:
		return p, fmt.Errorf("%w: unknown Policy.OnPermanent %d", ErrInvalidConfig, int(p.OnPermanent))
	}
	p = p.filled()
	if p.MaxInterval < p.InitialInterval {
		return p, fmt.Errorf("%w: Policy.MaxInterval %v is below InitialInterval %v",
			ErrInvalidConfig, p.MaxInterval, p.InitialInterval)
	}
	return p, nil
}

// filled applies the defaults without validating. It is idempotent.
func (p Policy) filled() Policy {
	if p.InitialInterval == 0 {
		p.InitialInterval = DefaultInitialInterval
	}
	if p.MaxInterval == 0 {
		p.MaxInterval = max(DefaultMaxInterval, p.InitialInterval)
	}
	if p.Multiplier == 0 {
		p.Multiplier = DefaultMultiplier
	}
	if p.Jitter == 0 {
		p.Jitter = DefaultJitter // a negative Jitter (NoJitter) stays: filled is idempotent
	}
	if p.StableAfter == 0 {
		p.StableAfter = DefaultStableAfter
	}
	if p.PermanentInterval == 0 {
		p.PermanentInterval = DefaultPermanentInterval
	}
	return p
}

// NewBackOff returns a fresh cenkalti/backoff ExponentialBackOff configured
// from p (defaults applied) with MaxElapsedTime 0, so that it never returns
// backoff.Stop. The result is not safe for concurrent use: a [Supervisor]
// owns one per goroutine, and so should any other retry loop that uses it.
// NewBackOff does not validate p; [New] does.
func (p Policy) NewBackOff() *backoff.ExponentialBackOff {
	p = p.filled()
	b := backoff.NewExponentialBackOff(
		backoff.WithInitialInterval(p.InitialInterval),
		backoff.WithMaxInterval(p.MaxInterval),
		backoff.WithMultiplier(p.Multiplier),
		backoff.WithRandomizationFactor(max(p.Jitter, 0)),
		backoff.WithMaxElapsedTime(0),
	)
	b.Reset()
	return b
}

// jitter randomises d by ±factor, the way the backoff randomises its delays.
func jitter(d time.Duration, factor float64) time.Duration {
	if factor <= 0 || d <= 0 {
		return d
	}
	delta := factor * float64(d)
	return time.Duration(float64(d) - delta + rand.Float64()*2*delta)
}
