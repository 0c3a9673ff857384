package reconnect

import (
	"fmt"
	"time"
)

// State is the connection state of a [Supervisor].
//
//	Disconnected --Start--> Connecting --ok--> Connected --Conn.Done--> Disconnected
//	                  ^          |                                          |
//	                  |          +--failure--> Disconnected --delay---------+
//	                  |          +--every broker refused permanently, StopOnPermanent--> Stopped
//	                  +------------------------- RetryNow --------------------------------+
//	any state --Close--> Closed
type State int

const (
	// Disconnected: not connected; before Start, or waiting out a delay
	// before the next attempt.
	Disconnected State = iota
	// Connecting: the ConnectFunc is running.
	Connecting
	// Connected: a Conn is up (Supervisor.Current returns it).
	Connected
	// Closed: Supervisor.Close was called. Terminal.
	Closed
	// Stopped: every broker refused permanently and the policy is
	// StopOnPermanent. No attempts are made until Supervisor.RetryNow.
	Stopped
)

// String returns the state's name.
func (s State) String() string {
	switch s {
	case Disconnected:
		return "Disconnected"
	case Connecting:
		return "Connecting"
	case Connected:
		return "Connected"
	case Closed:
		return "Closed"
	case Stopped:
		return "Stopped"
	}
	return fmt.Sprintf("State(%d)", int(s))
}

// Event describes one state transition of a [Supervisor].
type Event struct {
	// State is the new state; Prev the one it left.
	State, Prev State
	// Broker is the broker URL concerned: the one being tried (Connecting),
	// connected to (Connected), that failed or was lost (Disconnected,
	// Stopped), or the last one used (Closed).
	Broker string
	// Attempt numbers connection attempts from 1, counting since the last
	// established connection (or Start): on Connecting, Connected, and on a
	// Disconnected or Stopped event after a failed attempt. It is 0 on the
	// Disconnected event that follows a lost connection.
	Attempt int
	// Delay is, on Disconnected, how long the supervisor waits before the
	// next attempt; on Connecting, how long it waited before this one (0 for
	// the first attempt after Start or RetryNow).
	Delay time.Duration
	// Err is the cause: on Disconnected after a failed attempt, the
	// ConnectFunc's error (dial error, CONNACK refusal, ...); on
	// Disconnected after a loss, an error wrapping ErrConnectionLost and the
	// Conn's Err (io.EOF, keepalive timeout, ...); on Stopped, an error
	// wrapping ErrStopped and the refusal; on Closed, ErrClosed. Nil on
	// Connecting and Connected.
	Err error
	// Uptime is, on the Disconnected event after a loss, how long that
	// connection had been up; 0 otherwise.
	Uptime time.Duration
	// At is when the transition happened.
	At time.Time
}

// String formats the event for logs.
func (e Event) String() string {
	s := fmt.Sprintf("%v->%v broker=%s attempt=%d", e.Prev, e.State, redact(e.Broker), e.Attempt)
	if e.Delay > 0 {
		s += fmt.Sprintf(" delay=%v", e.Delay)
	}
	if e.Uptime > 0 {
		s += fmt.Sprintf(" uptime=%v", e.Uptime)
	}
	if e.Err != nil {
		s += fmt.Sprintf(" err=%q", e.Err.Error())
	}
	return s
}

// Stats is a snapshot of a [Supervisor]'s counters.
type Stats struct {
	State  State  // current state
	Broker string // broker of the current or last attempt or connection
	// Attempts counts calls of the ConnectFunc; Connects the ones that
	// succeeded; Failures the ones that failed (Permanent of which were
	// classified permanent); Losses established connections that were lost.
	Attempts, Connects, Failures, Permanent, Losses uint64
	// LastErr is the Err of the last Disconnected or Stopped event.
	LastErr error
	// ConnectedSince is when the current connection came up; zero when not
	// Connected.
	ConnectedSince time.Time
}
