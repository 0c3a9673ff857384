// Package reconnect decides when an MQTT connection is (re-)established.
//
// A [Supervisor] owns one goroutine that calls a [ConnectFunc], watches the
// [Conn] it returns, and after a failed attempt or a lost connection waits a
// delay chosen by its [Policy] before trying again: exponential backoff with
// jitter on cenkalti/backoff/v4, from [Policy.InitialInterval] up to
// [Policy.MaxInterval], never giving up. Several broker URLs are tried in turn
// (failover). Transitions between [Disconnected], [Connecting], [Connected],
// [Stopped] and [Closed] are reported to [Config.OnEvent], each [Event]
// carrying the broker and the cause, and can be awaited with
// [Supervisor.AwaitConnected] or [Supervisor.Changed].
//
// The package knows nothing of any MQTT library or of the outbox: the
// ConnectFunc does the dialling. With paho.mqtt.golang, the ConnectFunc
// builds or reuses a client with AutoReconnect(false) and ConnectRetry(false)
// (so that exactly one supervisor decides when to connect), sets a
// ConnectionLostHandler that closes the Conn's Done, and reports a CONNACK
// refusal as a [*RefusedError] with the token's return code, or maps paho's
// refusal errors through [Config.IsPermanent]:
//
//	IsPermanent: func(err error) bool {
//		return errors.Is(err, packets.ErrorRefusedBadUsernameOrPassword) ||
//			errors.Is(err, packets.ErrorRefusedNotAuthorised) || ...
//	},
//
// Such a client should also fix the protocol version (SetProtocolVersion(4)):
// otherwise paho retries a refused MQTT 3.1.1 CONNECT as MQTT 3.1 within the
// same attempt, and reports the second refusal.
//
// # Timing
//
// The first attempt is made at once by [Supervisor.Start]. After a failed
// attempt the next broker is tried after the backoff's next delay. After a
// lost connection the same broker is tried after the backoff's next delay:
// if the connection had stayed up at least [Policy.StableAfter] the backoff
// is reset first, so that delay is InitialInterval with jitter (never zero, so
// that many clients losing one broker do not come back at once); otherwise it
// keeps growing, so a flapping link is not retried at full speed.
//
// # Errors and classification
//
// An attempt error is permanent if [IsPermanent] or [Config.IsPermanent] says
// so: a [*PermanentError] (from [Permanent]), a backoff.PermanentError, or a
// [*RefusedError] with code 1, 2, 4 or 5 (unacceptable protocol version,
// identifier rejected, bad user name or password, not authorised). "Server
// unavailable" and every network error are transient. A permanent refusal
// fails over to the next broker; once every broker has refused permanently in
// a row, the supervisor stops ([StopOnPermanent], the default; see
// [Supervisor.RetryNow]) or waits [Policy.PermanentInterval] between attempts
// ([SlowOnPermanent]).
//
// Causes are errors wrapped with %w, never flattened: a loss wraps
// [ErrConnectionLost] and the Conn's Err (io.EOF, the MQTT library's keepalive
// timeout, ...), so errors.Is works against both this package's sentinels and
// the library's own errors. Keepalive is the MQTT library's concern; this
// package defines no keepalive error of its own.
//
// # Guarantees
//
//   - At most one ConnectFunc call runs at a time per Supervisor, and never
//     while a Conn it returned is still up (its Done not closed).
//   - Backoff never gives up (MaxElapsedTime is 0); every delay lies in
//     [base*(1-Jitter), base*(1+Jitter)] with base <= MaxInterval.
//   - Events reach OnEvent in the order of the transitions, from one
//     goroutine; the last one is Closed, with Err [ErrClosed].
//   - Close cancels an attempt in progress (through its ctx) or a delay at
//     once, and returns only once the goroutine has exited. No goroutine is
//     left behind, no timer is left running.
//   - Waiting (AwaitConnected, Changed, delays) uses channels and timers;
//     nothing polls.
//
// # Caveats
//
//   - The supervisor never closes a Conn: the caller owns it, including the
//     one [Supervisor.Current] reports after Close.
//   - A ConnectFunc that ignores its ctx delays Close (and defeats
//     [Config.AttemptTimeout]) until it returns: bound it with the MQTT
//     library's own connect timeout too.
//   - OnEvent runs on the supervisor's goroutine: a slow callback delays
//     reconnects, and calling Close from it deadlocks.
//   - AwaitConnected can return a Conn that is lost an instant later; check
//     its Done.
//   - Failover is round-robin after failures only; there is no preference to
//     return to the first broker while a later one works.
package reconnect
