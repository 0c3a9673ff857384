package client_test

import (
	"context"
	"testing"
	"time"

	"github.com/holdfast-mqtt/holdfast/client"
	"github.com/holdfast-mqtt/holdfast/internal/testsub"
)

// Waiting for delivery: tests assert progress, not speed. Under -race on a
// small, busy machine a backlog can take minutes to drain; that is not a
// failure. Nothing moving for stall is.
const (
	// stall is how long a wait accepts no progress at all before failing.
	stall = 60 * time.Second
	// deadlineMargin is left before the test binary's -timeout, so that a
	// wait still moving when it comes fails with its figures instead of the
	// timeout's goroutine dump.
	deadlineMargin = 30 * time.Second
	// progressPoll is how often flushWithProgress reads the client's Stats.
	progressPoll = 250 * time.Millisecond
)

// flushWithProgress calls c.Flush and fails the test if the outbox stops
// draining: no message acknowledged, dropped or expired, and the outbox's
// length unchanged, for stall. It has no budget for the total time; only
// the test's deadline (-timeout) bounds it.
func flushWithProgress(t *testing.T, c *client.Client, stall time.Duration) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- c.Flush(ctx) }()

	var deadline <-chan time.Time
	if dl, ok := t.Deadline(); ok {
		timer := time.NewTimer(time.Until(dl) - deadlineMargin)
		defer timer.Stop()
		deadline = timer.C
	}
	tick := time.NewTicker(progressPoll)
	defer tick.Stop()
	began := time.Now()
	last, lastAt := progressOf(c.Stats()), time.Now()
	fail := func(why string) {
		cancel()
		<-done
		t.Fatalf("Flush: %s after %v (stats %+v)", why, time.Since(began).Round(time.Second), c.Stats())
	}
	for {
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("Flush: %v (stats %+v)", err, c.Stats())
			}
			t.Logf("Flush: drained in %v", time.Since(began).Round(time.Millisecond))
			return
		case <-deadline:
			fail("still draining near the test's deadline")
			return
		case <-tick.C:
		}
		if p := progressOf(c.Stats()); p != last {
			last, lastAt = p, time.Now()
		} else if time.Since(lastAt) >= stall {
			fail("no progress for " + stall.String())
			return
		}
	}
}

// progress is what changes while an outbox drains.
type progress struct {
	done   uint64 // acknowledged, dropped or expired
	queued int
}

func progressOf(st client.Stats) progress {
	return progress{done: st.Acked + st.Dropped + st.Expired, queued: st.Queued}
}

// waitArrivals waits until sub has at least n messages on topic, failing the
// test only if none arrives for stall (see testsub.WaitProgress).
func waitArrivals(t *testing.T, sub *testsub.Subscriber, topic string, n int, stall time.Duration) {
	t.Helper()
	if !sub.WaitProgress(topic, n, stall) {
		t.Fatalf("subscriber got %d of %d on %s, and nothing new for %v", sub.Count(topic), n, topic, stall)
	}
}
