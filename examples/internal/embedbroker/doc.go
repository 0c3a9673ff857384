// Package embedbroker runs an in-process MQTT broker (mochi-mqtt/server/v2)
// on a TCP listener, so that tests and examples need nothing installed.
//
//	b, err := embedbroker.Start("127.0.0.1:0")
//	if err != nil { ... }
//	defer b.Close()
//	opts.AddBroker(b.URL())
//
// # Guarantees
//
//   - Every client is allowed to connect, publish and subscribe (mochi's
//     auth.AllowHook); MQTT 3.1.1 and 5 clients are accepted.
//   - Close disconnects every client, including one that has connected but not
//     yet sent CONNECT, stops the listener and waits for the goroutines that
//     serve connections. It is idempotent.
//   - Logging is discarded unless Options.Logger is set.
//   - An inbound QoS 1/2 message is delivered to subscribers before its
//     PUBACK or PUBREC is written, so a connection lost at that moment loses
//     nothing; a QoS 2 resend is not delivered again. (mochi v2.7.9 alone
//     records the message, fails to write the acknowledgement, never
//     delivers it, and sends that acknowledgement when the publisher
//     reconnects: see deliver.go.)
//   - With Options.PersistDir, client sessions, subscriptions, in-flight and
//     queued QoS 1/2 messages and retained messages are kept in Badger
//     (mochi's storage hook): a broker started again on the same address
//     and directory after Close answers session-present to a persistent
//     client and delivers what it had queued, like Mosquitto with
//     persistence restarted gracefully.
//
// # Caveats
//
//   - Without PersistDir, sessions and queued messages live in memory only:
//     they do not survive Close.
//   - With PersistDir, what the broker had in flight towards a subscriber is
//     resent after a restart in mochi's order (by creation second, not by
//     arrival), with DUP set; the state of a QoS 2 exchange towards a
//     subscriber is stored as its PUBLISH, so a PUBLISH whose PUBREL was
//     already sent comes again with DUP. mochi's Badger hook leaves one
//     goroutine (its garbage-collection loop) parked after Close.
//   - The broker's own housekeeping goroutine returns shortly after Close,
//     not before Close returns (mochi does not expose a way to wait for it).
package embedbroker
