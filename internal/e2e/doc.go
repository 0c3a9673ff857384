// Package e2e holds Holdfast's end-to-end chaos tests; it has no non-test
// code besides this comment.
//
// TestChaos builds examples/telemetry and runs it as the publisher of two
// lanes, QoS 1 (topic e2e/q1) and QoS 2 (topic e2e/q2), each through a
// fault proxy (internal/faultproxy) to a Mosquitto child process with
// persistence (internal/testbroker), at 100 messages per second each (a rate
// Holdfast sustains at QoS 2 on a small machine, so the final drain stays
// short). For about a minute a seeded schedule
// cuts connections at random intervals, refuses connections for 2-4s
// (outages), black-holes the link for about 4s (the 2s keepalive notices),
// restarts Mosquitto gracefully twice, and SIGKILLs each lane's publisher at
// least ten times, restarting it at once on the same outbox directory and
// client identifier with -start one past the last number it printed. Then
// every fault stops, each lane's running publisher gets SIGTERM, and a final
// run publishes a few hundred more and waits until everything is
// acknowledged ("drained").
//
// An independent subscriber, a paho client connected straight to Mosquitto
// with a persistent session at QoS 2, records every sequence number per
// topic in arrival order. TestChaos asserts:
//
//   - zero loss: every number a run printed as accepted arrives;
//   - zero reordering: the first arrivals come in accepted order;
//   - QoS 2 exactly once: a number arrives twice only if a run ended after
//     handing it to Publish and before printing it, so the next run
//     published it again as a new message;
//   - QoS 1 duplicates are counted and reported.
//
// TestChaosBarePaho runs the same schedule, from the same seed, with
// internal/cmd/barepaho, which is bare paho configured as its documentation
// suggests (FileStore, CleanSession false, AutoReconnect, ConnectRetry). It
// reports that client's losses, reordering and duplicates and fails only if
// the harness itself did not work, so the README can show the difference
// measured. Because a paho token completes when resume() re-queues a stored
// message, bare paho's final run can print "drained" with messages still in
// its FileStore; the test therefore runs it once more on the same store and
// reports both figures (lost before and after that extra run).
//
// When TestChaos fails it logs a diagnosis: for each range of lost,
// reordered or duplicated numbers, the run that accepted them and when, how
// they arrived, the faults around that time and the publishers' stderr; and,
// for QoS 2, the broker-log lines of any PUBLISH resent with DUP after its
// exchange had completed on the same connection (lateQoS2Resends), the
// signature of a duplicate made by the publisher.
//
// Running:
//
//	HOLDFAST_REQUIRE_MOSQUITTO=1 go test -race -count=1 -v ./internal/e2e/
//	HOLDFAST_E2E_SEED=42 HOLDFAST_E2E_REPORT=/tmp/e2e.json go test -count=1 ./internal/e2e/
//	go test -count=1 -timeout 30m ./internal/e2e/ -holdfast.soak=10m
//
// HOLDFAST_E2E_SEED fixes the schedule (the seed is logged), HOLDFAST_E2E_REPORT
// names a JSON file that receives each test's summary under its name, and
// HOLDFAST_E2E_LOGDIR keeps the children's stderr (run with -v), the arrivals,
// the runs and the broker's log.
//
// # Guarantees
//
//   - The schedule is a pure function of the seed and the chaos length: two
//     tests in one run, or two runs with the same seed, inject the same
//     faults at the same offsets (timing of the processes themselves varies).
//   - The subscriber never goes through the proxy, and deduplicates inbound
//     QoS 2 redeliveries of one exchange only (see dedupStore), so every
//     duplicate it records was produced on the publishing side.
//   - A test that could not inject its faults, kill its publishers, or see
//     messages arrive fails: it cannot pass vacuously.
//
// # Caveats
//
//   - The tests take about 75s each; -short skips them. They need Mosquitto
//     (skipped without it unless HOLDFAST_REQUIRE_MOSQUITTO=1).
//   - The children are built without -race, once per test run, with the go
//     command of the running toolchain.
//   - Mosquitto is only ever restarted gracefully: a broker crash loses what
//     it acknowledged since its last save, which is outside Holdfast's
//     promise.
package e2e
