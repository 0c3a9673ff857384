package client

import (
	"context"
	"testing"
	"time"

	"github.com/holdfast-mqtt/holdfast/internal/testbroker"
)

// TestBreakConnIsReportedAsALoss checks that dropping the connection from
// our side (used when paho could not queue a stored publish) makes paho
// report the loss, so that the supervisor reconnects and the resume resends
// in order. paho stays silent about a connection closed locally.
func TestBreakConnIsReportedAsALoss(t *testing.T) {
	b := testbroker.StartEmbedded(t)
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
