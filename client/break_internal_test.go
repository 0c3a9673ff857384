package client

import (
	"context"
	"testing"
	"time"

	"github.com/holdfast-mqtt/holdfast/internal/testbroker"
	"github.com/holdfast-mqtt/holdfast/outbox"
)

// TestBreakConnIsReportedAsALoss checks that dropping the connection from
// our side (used when paho could not queue a stored publish) makes paho
// report the loss, so that the supervisor reconnects and the resume resends
// in order. paho stays silent about a connection closed locally.
func TestBreakConnIsReportedAsALoss(t *testing.T) {
	b := testbroker.StartMosquitto(t, testbroker.MosquittoOptions{})
	c, err := New(Config{
		Brokers: []string{b.URL()}, ClientID: "break", OutboxDir: t.TempDir(),
		Backoff: backoffFast(),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(context.Background())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.AwaitConnected(ctx); err != nil {
		t.Fatal(err)
	}
	c.conn.Load().breakConn()
	testbroker.Eventually(t, 10*time.Second, func() bool { return c.Stats().Reconnects >= 1 && c.IsConnected() }, "no reconnect after breakConn")
	r, err := c.Publish(ctx, "t", []byte("1 after"), QoS1)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Wait(ctx); err != nil {
		t.Fatal(err)
	}
}

// slowRemove delays Remove, as a busy disk would.
type slowRemove struct{ outbox.Queue }

func (s slowRemove) Remove(seqs ...uint64) error {
	time.Sleep(50 * time.Millisecond)
	return s.Queue.Remove(seqs...)
}

// TestFlushWakesAfterTheRemove checks that Flush returns when the last
// acknowledged record leaves the outbox, even when the removal comes well
// after the acknowledgement (Flush used to miss that wake-up and hang).
func TestFlushWakesAfterTheRemove(t *testing.T) {
	b := testbroker.StartMosquitto(t, testbroker.MosquittoOptions{})
	q := outbox.NewMemory(outbox.Options{})
	defer q.Close()
	c, err := New(Config{Brokers: []string{b.URL()}, ClientID: "flush", Outbox: slowRemove{q}, Backoff: backoffFast()})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(context.Background())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := c.Publish(ctx, "t", []byte("1 x"), QoS1); err != nil {
		t.Fatal(err)
	}
	if err := c.Flush(ctx); err != nil {
		t.Fatalf("Flush: %v (outbox length %d)", err, q.Stats().Len)
	}
}
