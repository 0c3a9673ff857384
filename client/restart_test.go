package client_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/holdfast-mqtt/holdfast/client"
	"github.com/holdfast-mqtt/holdfast/internal/testbroker"
)

// awaitHandled waits until the child subscribers handled want distinct
// payloads on each topic, failing when nothing new was handled for
// stallTimeout.
func awaitHandled(t *testing.T, log *handledLog, want map[string]int) {
	t.Helper()
	done := func() bool {
		for topic, n := range want {
			if log.distinct(topic) < n {
				return false
			}
		}
		return true
	}
	if err := awaitProgress(done, func() uint64 { return uint64(log.len()) }, nil); err != nil {
		got := map[string]int{}
		for topic := range want {
			got[topic] = log.distinct(topic)
		}
		t.Fatalf("handled %v of %v: %v", got, want, err)
	}
}

// awaitQuiet waits until the log has not grown for quiet.
func awaitQuiet(log *handledLog, quiet time.Duration) {
	last, since := log.len(), time.Now()
	tick := time.NewTicker(pollEvery)
	defer tick.Stop()
	for time.Since(since) < quiet {
		<-tick.C
		if n := log.len(); n != last {
			last, since = n, time.Now()
		}
	}
}

// handledTwice returns the payloads of topic handled more than once, and
// how many times each.
func handledTwice(log *handledLog, topic string) map[string]int {
	count := map[string]int{}
	for _, h := range log.snapshot() {
		if h.topic == topic {
			count[h.payload]++
		}
	}
	for p, n := range count {
		if n < 2 {
			delete(count, p)
		}
	}
	return count
}

// TestQoS2HandledOnceAcrossSubscriberKill kills a QoS 2 subscriber (a child
// process, SIGKILL) after its handler accepted messages whose PUBREC never
// reached the broker: the link was black-holed, so the broker resends those
// PUBLISHes (DUP) to the next run. The next run must recognise them as
// handled and acknowledge them without handing them to the handler again.
func TestQoS2HandledOnceAcrossSubscriberKill(t *testing.T) {
	const n = 60
	m, p := rig(t, testbroker.MosquittoOptions{})
	spec := childSpec{broker: p.URL(), id: "killed-q2", dir: t.TempDir(), subs: []string{"kq2/t:2"}, delay: 20 * time.Millisecond}
	log := &handledLog{}
	run1 := startChild(t, spec, 1, log)
	pub := pahoPublisher(t, m.URL())
	publishAll(t, pub, "kq2/t", 2, numbered("m", n)...)
	awaitHandled(t, log, map[string]int{"kq2/t": 5})
	// From here on nothing the child writes reaches the broker: the
	// PUBRECs of what it handles next are held, then dropped by the cut.
	p.SetBlackhole(true)
	awaitQuiet(log, time.Second)
	held := log.len()
	run1.kill()
	p.Cut()
	p.SetBlackhole(false)
	t.Logf("run 1 handled %d messages, the last ones with their PUBREC held back", held)

	run2 := startChild(t, spec, 2, log)
	awaitHandled(t, log, map[string]int{"kq2/t": n})
	awaitQuiet(log, time.Second)
	run2.stop(t)
	if twice := handledTwice(log, "kq2/t"); len(twice) > 0 {
		t.Fatalf("QoS 2 messages handled more than once across the restart: %v", twice)
	}
}

// TestSubscriberKilledWhileHandling SIGKILLs a subscriber (a child process)
// again and again while its handler works through a QoS 1 and a QoS 2
// stream that the broker queued for its persistent session. The messages it
// had not acknowledged are redelivered and handled by the next run: none is
// missing. At QoS 2 none is handled twice, except the one message whose
// handler had returned when the process died, before Holdfast recorded it
// (the last line a killed run printed): that window is inherent, since the
// handler's effect and Holdfast's record cannot be one write.
func TestSubscriberKilledWhileHandling(t *testing.T) {
	const n, kills = 300, 6
	seed, rng := matrixRand(t)
	m, p := rig(t, testbroker.MosquittoOptions{})
	spec := childSpec{broker: p.URL(), id: "killed-sub", dir: t.TempDir(),
		subs: []string{"kill/q1:1", "kill/q2:2"}, delay: 3 * time.Millisecond}
	log := &handledLog{}
	run := startChild(t, spec, 0, log)
	pub := pahoPublisher(t, m.URL())
	for i := 1; i <= n; i++ {
		publishAll(t, pub, "kill/q1", 1, fmt.Sprintf("q1 %d", i))
		publishAll(t, pub, "kill/q2", 2, fmt.Sprintf("q2 %d", i))
	}
	for k := 1; k <= kills; k++ {
		// Kill once the run handled a few more messages, at a random moment.
		base := log.len()
		if err := awaitProgress(func() bool { return log.len() >= base+5 }, func() uint64 { return uint64(log.len()) }, nil); err != nil {
			t.Fatalf("seed %d: run %d: %v", seed, k-1, err)
		}
		<-time.After(time.Duration(rng.IntN(150)) * time.Millisecond)
		run.kill()
		run = startChild(t, spec, k, log)
	}
	awaitHandled(t, log, map[string]int{"kill/q1": n, "kill/q2": n})
	awaitQuiet(log, time.Second)
	run.stop(t)

	window := map[string]bool{} // the last message each killed run handled
	for r := 0; r < kills; r++ {
		if h, ok := log.lastOf(r); ok && h.topic == "kill/q2" {
			window[h.payload] = true
		}
	}
	var bad []string
	for payload, times := range handledTwice(log, "kill/q2") {
		if times > 2 || !window[payload] {
			bad = append(bad, fmt.Sprintf("%q x%d", payload, times))
		}
	}
	if len(bad) > 0 {
		t.Fatalf("seed %d: QoS 2 messages handled more than once: %s", seed, strings.Join(bad, ", "))
	}
	t.Logf("seed %d: %d kills; %d QoS 1 redeliveries handled again; %d QoS 2 handled twice (each the last message of a killed run)",
		seed, kills, len(handledTwice(log, "kill/q1")), len(handledTwice(log, "kill/q2")))
}

// TestTenThousandQueuedWhileSubscriberOffline queues 10,000 messages (half
// QoS 1, half QoS 2) for a persistent subscriber while it is stopped,
// restarts the broker gracefully with them queued, and checks that all of
// them reach the subscriber's handlers when it returns, the QoS 2 ones once.
func TestTenThousandQueuedWhileSubscriberOffline(t *testing.T) {
	const n = 5000 // per topic
	m := testbroker.StartMosquitto(t, testbroker.MosquittoOptions{})
	var q1, q2 sink
	cfg := client.Config{Brokers: []string{m.URL()}, ClientID: "offline-10k", OutboxDir: t.TempDir(),
		Subscriptions: []client.Subscription{
			{Filter: "bulk/q1", QoS: 1, Handler: q1.native()},
			{Filter: "bulk/q2", QoS: 2, Handler: q2.native()},
		}}
	c := newClient(t, cfg)
	awaitConnected(t, c)
	closeClient(t, c)

	pub := newClient(t, client.Config{Brokers: []string{m.URL()}, ClientID: "offline-10k-pub"})
	for i := 1; i <= n; i++ {
		for _, qos := range []byte{1, 2} {
			topic := fmt.Sprintf("bulk/q%d", qos)
			if _, err := pub.PublishAsync(context.Background(), topic, []byte(fmt.Sprintf("%s %d", topic, i)), client.PublishOptions{QoS: qos}); err != nil {
				t.Fatalf("publish %d: %v", i, err)
			}
		}
	}
	if err := drain(pub, nil); err != nil {
		t.Fatal(err)
	}
	closeClient(t, pub)
	m.Restart(t)
	t0 := time.Now()

	c = newClient(t, cfg)
	if err := awaitProgress(func() bool { return q1.distinct() == n && q2.distinct() == n },
		func() uint64 { return uint64(len(q1.list()) + len(q2.list())) }, nil); err != nil {
		t.Fatalf("received %d (QoS 1) and %d (QoS 2) of %d each: %v", q1.distinct(), q2.distinct(), n, err)
	}
	if got := len(q2.list()); got != n {
		t.Fatalf("QoS 2: %d messages handled %d times", n, got)
	}
	t.Logf("all %d received in %v after the subscriber returned", 2*n, time.Since(t0).Round(time.Millisecond))
	closeClient(t, c)
}
