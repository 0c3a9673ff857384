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
//
// # Caveats
//
//   - Sessions and queued messages live in memory only: they do not survive
//     Close. Use a Mosquitto broker (internal/testbroker) to test a broker
//     restart.
//   - The broker's own housekeeping goroutine returns shortly after Close,
//     not before Close returns (mochi does not expose a way to wait for it).
package embedbroker
