package client_test

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/holdfast-mqtt/holdfast/client"
	"github.com/holdfast-mqtt/holdfast/internal/testbroker"
)

// TestSharedSubscriptionFilters: "$share/<group>/<filter>" needs a group
// (one level, no wildcard) and a valid filter after it; anything else is
// refused at the call, by Subscribe, Unsubscribe and New alike.
func TestSharedSubscriptionFilters(t *testing.T) {
	c := newOffline(t, client.Config{})
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // valid filters return the context's error: the SUBSCRIBE waits for a connection
	for _, f := range []string{"$share/g/t", "$share/g/a/+/b", "$share/g/#", "$share/grp-1/+", "$shared/x", "$share"} {
		if err := c.Subscribe(ctx, f, 1, accept); !errors.Is(err, context.Canceled) {
			t.Errorf("Subscribe(%q): %v, want the filter accepted", f, err)
		}
	}
	for _, f := range []string{"$share/", "$share/g", "$share/g/", "$share//t", "$share/g+/t", "$share/+/t", "$share/#/t", "$share/g#/t", "$share/g/a#"} {
		if err := c.Subscribe(ctx, f, 1, accept); !errors.Is(err, client.ErrInvalidFilter) {
			t.Errorf("Subscribe(%q): %v, want ErrInvalidFilter", f, err)
		}
		if err := c.Unsubscribe(ctx, f); !errors.Is(err, client.ErrInvalidFilter) {
			t.Errorf("Unsubscribe(%q): %v, want ErrInvalidFilter", f, err)
		}
		bad, err := client.New(client.Config{Brokers: []string{unreachable}, ClientID: "x",
			Subscriptions: []client.Subscription{{Filter: f, QoS: 1, Handler: accept}}})
		if err == nil {
			_ = bad.Close(ctx)
		}
		if !errors.Is(err, client.ErrInvalidConfig) || !errors.Is(err, client.ErrInvalidFilter) {
			t.Errorf("New with %q: %v, want ErrInvalidConfig and ErrInvalidFilter", f, err)
		}
	}
}

// TestSharedSubscriptionConsumersShareAndLoseNothing runs three consumers
// (child processes, persistent sessions) of one shared subscription group.
// The broker splits the stream between them; one is SIGKILLed mid-run and
// restarted on its outbox: every message is handled by the group, none
// lost. The broker keeps the messages it had given the killed consumer
// (and any it gives it while away) in that consumer's session, so they are
// handled when it returns: nothing unacknowledged is lost, provided the
// consumer comes back (see README, shared subscriptions).
func TestSharedSubscriptionConsumersShareAndLoseNothing(t *testing.T) {
	const n = 900
	m := testbroker.StartMosquitto(t, testbroker.MosquittoOptions{})
	log := &handledLog{}
	spec := func(name string) childSpec {
		return childSpec{broker: m.URL(), id: "share-" + name, dir: filepath.Join(t.TempDir(), name),
			subs: []string{"$share/workers/jobs/+:1"}, delay: 3 * time.Millisecond}
	}
	a, b, c := spec("a"), spec("b"), spec("c")
	runA := startChild(t, a, 0, log)
	startChild(t, b, 1, log)
	startChild(t, c, 2, log)
	pub := newClient(t, client.Config{Brokers: []string{m.URL()}, ClientID: "share-pub"})
	for i := 1; i <= n; i++ {
		if _, err := pub.PublishAsync(context.Background(), "jobs/x", payload(uint64(i)), client.QoS1); err != nil {
			t.Fatal(err)
		}
	}
	byRun := func(run int) int {
		k := 0
		for _, h := range log.snapshot() {
			if h.run == run {
				k++
			}
		}
		return k
	}
	if err := awaitProgress(func() bool { return byRun(0) >= 30 }, func() uint64 { return uint64(log.len()) }, nil); err != nil {
		t.Fatalf("consumer a: %v", err)
	}
	runA.kill()
	killedAfter := byRun(0)
	startChild(t, a, 3, log)
	if err := drain(pub, nil); err != nil {
		t.Fatal(err)
	}
	awaitHandled(t, log, map[string]int{"jobs/x": n})
	shares := []int{byRun(0) + byRun(3), byRun(1), byRun(2)}
	t.Logf("shares a/b/c: %v (a killed after %d, handled %d after its restart)", shares, killedAfter, byRun(3))
	for i, s := range shares {
		if s == 0 || s == log.len() {
			t.Fatalf("consumer %c handled %d of %d: the group did not share the stream", 'a'+i, s, log.len())
		}
	}
}
