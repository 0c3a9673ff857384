// Package testbroker starts MQTT brokers for tests: Mosquitto as a child
// process with its own configuration, port and persistence directory. (The
// in-process broker, examples/internal/embedbroker, belongs to the examples
// module, so that mochi-mqtt is no dependency of this one.) It also has the
// small helpers tests share: FreePort and Eventually. The Mosquitto process itself is
// managed by internal/mosquitto (usable without the testing package); this
// package adds testing.TB reporting, skipping and cleanup.
//
//	m := testbroker.StartMosquitto(t, testbroker.MosquittoOptions{})
//	opts.AddBroker(m.URL())
//	...
//	m.Restart(t) // graceful: the persistent sessions survive
//
// # Guarantees
//
//   - StartMosquitto returns only once the broker has logged that it is
//     running and accepts TCP connections on its port (a bounded wait, 10s).
//   - Persistence is on by default and saved at every graceful stop (Stop,
//     Restart): a persistent session's subscriptions and queued QoS 1/2
//     messages survive Restart. When the test runs as root, the broker is told
//     to stay root (config "user root") so it can write its directory.
//   - The broker is stopped and its process reaped by t.Cleanup. When the test
//     failed, the tail of the broker's log is written to t.Log.
//   - When mosquitto is not installed the test is skipped with a message
//     saying so, unless HOLDFAST_REQUIRE_MOSQUITTO=1, which turns the skip
//     into a failure (set it in CI).
//
// # Caveats
//
//   - Kill (SIGKILL) loses everything since the last save; with the default
//     autosave_interval 0 that is everything since the broker was started.
//   - FreePort closes the port it found: another process may take it before
//     the broker binds it. StartMosquitto retries with a new port when the
//     bind fails; Restart reuses the same port and fails the test if it is
//     taken meanwhile.
//   - HOLDFAST_MOSQUITTO may name the mosquitto binary; otherwise PATH and
//     the usual sbin directories are searched.
package testbroker
