package reconnect

import (
	"errors"
	"strconv"

	"github.com/cenkalti/backoff/v4"
)

// ErrInvalidConfig is returned (wrapped, with the reason) by [New] when a
// [Config] or its [Policy] cannot be used.
var ErrInvalidConfig = errors.New("reconnect: invalid config")

// ErrClosed is returned by [Supervisor.AwaitConnected] once [Supervisor.Close]
// has been called. It is also the Err of the final [Closed] event.
var ErrClosed = errors.New("reconnect: supervisor closed")

// ErrStopped is returned (wrapped together with the refusal that caused it)
// by [Supervisor.AwaitConnected] while the supervisor is in the [Stopped]
// state: every broker refused the connection permanently and the policy is
// [StopOnPermanent]. errors.Is matches both ErrStopped and the cause.
var ErrStopped = errors.New("reconnect: stopped after a permanent refusal")

// ErrConnectionLost is wrapped into the Err of a [Disconnected] event that
// follows an established connection (as opposed to a failed attempt),
// together with the [Conn]'s own Err (io.EOF, a keepalive timeout, ...).
// When Conn.Err returns nil, the event's Err is ErrConnectionLost alone.
var ErrConnectionLost = errors.New("reconnect: connection lost")

// ErrRefused matches (through errors.Is) every [*RefusedError].
var ErrRefused = errors.New("reconnect: connection refused by the broker")

// ErrNoConn is the attempt error recorded when a [ConnectFunc] returns
// neither a [Conn] nor an error. It is treated as a transient failure.
var ErrNoConn = errors.New("reconnect: ConnectFunc returned neither a Conn nor an error")

// PermanentError marks an error that retrying cannot fix. Build one with
// [Permanent]; test for one with [IsPermanent].
type PermanentError struct {
	// Err is the refusal being marked permanent; never nil.
	Err error
}

// Error returns "permanent: " and the text of the wrapped error.
func (e *PermanentError) Error() string { return "permanent: " + e.Err.Error() }

// Unwrap returns the wrapped error.
func (e *PermanentError) Unwrap() error { return e.Err }

// Permanent wraps err so that [IsPermanent] reports true for it (and for any
// error that wraps the result). A [ConnectFunc] returns Permanent(err) for a
// refusal that retrying cannot fix. Permanent(nil) is nil.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return &PermanentError{Err: err}
}

// IsPermanent reports whether err, or any error it wraps, is a
// [*PermanentError], a backoff.PermanentError from cenkalti/backoff/v4, or a
// [*RefusedError] whose code is permanent (see [ConnackCode.Permanent]).
// Everything else (network errors, timeouts, "server unavailable") is
// transient. [Config.IsPermanent] can widen this per supervisor.
func IsPermanent(err error) bool {
	if err == nil {
		return false
	}
	var pe *PermanentError
	if errors.As(err, &pe) {
		return true
	}
	var be *backoff.PermanentError
	if errors.As(err, &be) {
		return true
	}
	var re *RefusedError
	if errors.As(err, &re) {
		return re.Code.Permanent()
	}
	return false
}

// ConnackCode is an MQTT 3.1.1 CONNACK return code (MQTT 3.1.1 section
// 3.2.2.3). It lets a [ConnectFunc] report a refusal without this package
// knowing the MQTT library in use.
type ConnackCode byte

// CONNACK return codes of MQTT 3.1.1.
const (
	// ConnackAccepted: connection accepted.
	ConnackAccepted ConnackCode = 0
	// ConnackBadProtocolVersion: the broker does not support the requested
	// protocol level. Permanent.
	ConnackBadProtocolVersion ConnackCode = 1
	// ConnackIdentifierRejected: the client identifier is not allowed.
	// Permanent.
	ConnackIdentifierRejected ConnackCode = 2
	// ConnackServerUnavailable: the MQTT service is unavailable. Transient.
	ConnackServerUnavailable ConnackCode = 3
	// ConnackBadUsernameOrPassword: malformed user name or password.
	// Permanent.
	ConnackBadUsernameOrPassword ConnackCode = 4
	// ConnackNotAuthorized: the client is not authorised to connect.
	// Permanent.
	ConnackNotAuthorized ConnackCode = 5
)

// String returns the MQTT name of the code, or "connack code N".
func (c ConnackCode) String() string {
	switch c {
	case ConnackAccepted:
		return "accepted"
	case ConnackBadProtocolVersion:
		return "unacceptable protocol version"
	case ConnackIdentifierRejected:
		return "identifier rejected"
	case ConnackServerUnavailable:
		return "server unavailable"
	case ConnackBadUsernameOrPassword:
		return "bad user name or password"
	case ConnackNotAuthorized:
		return "not authorised"
	}
	return "connack code " + strconv.Itoa(int(c))
}

// Permanent reports whether retrying the same CONNECT cannot succeed:
// true for codes 1 (protocol version), 2 (identifier rejected), 4 (bad user
// name or password) and 5 (not authorised); false for 3 (server
// unavailable), 0 and any code MQTT 3.1.1 does not define.
func (c ConnackCode) Permanent() bool {
	switch c {
	case ConnackBadProtocolVersion, ConnackIdentifierRejected,
		ConnackBadUsernameOrPassword, ConnackNotAuthorized:
		return true
	}
	return false
}

// RefusedError reports that the broker answered CONNECT with a refusal.
// A [ConnectFunc] returns one so that [IsPermanent] can classify it by code;
// errors.Is(err, ErrRefused) matches it, and Unwrap returns Err, the MQTT
// library's own error, so errors.Is against that library's sentinels works too.
type RefusedError struct {
	// Code is the CONNACK return code.
	Code ConnackCode
	// Err is the MQTT library's error for the refusal; may be nil.
	Err error
}

// Error describes the refusal.
func (e *RefusedError) Error() string {
	s := "reconnect: broker refused the connection: " + e.Code.String()
	if e.Err != nil {
		s += " (" + e.Err.Error() + ")"
	}
	return s
}

// Unwrap returns the MQTT library's error.
func (e *RefusedError) Unwrap() error { return e.Err }

// Is reports whether target is [ErrRefused].
func (e *RefusedError) Is(target error) bool { return target == ErrRefused }
