package client_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/holdfast-mqtt/holdfast/client"
)

// A durable publisher while its broker is out of reach: Publish returns once
// the message is on disk, bad input is refused at the call, and what the
// broker has not acknowledged stays in the outbox across Close and the next
// start, to be sent once a connection is up. (examples/telemetry is the same
// with a broker.)
func Example() {
	dir, _ := os.MkdirTemp("", "holdfast-example-")
	defer os.RemoveAll(dir)
	cfg := client.Config{
		Brokers:   []string{"tcp://127.0.0.1:1"}, // nothing listens: offline
		ClientID:  "example-device",
		OutboxDir: dir,
	}
	c, err := client.New(cfg)
	if err != nil {
		fmt.Println(err)
		return
	}
	ctx := context.Background()

	_, err = c.Publish(ctx, "site/1/temp", []byte("21.5"), client.QoS1)
	fmt.Println("accepted while offline:", err == nil)

	_, err = c.Publish(ctx, "site/+/temp", []byte("x"), client.QoS1)
	fmt.Println("wildcard rejected:", errors.Is(err, client.ErrInvalidTopic))

	// Close waits for the broker's acknowledgements until its context ends.
	short, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	fmt.Println("closed, not drained:", errors.Is(c.Close(short), client.ErrNotDrained))

	c, err = client.New(cfg) // the next start, on the same outbox
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("queued after a restart:", c.Stats().Queued)
	short, cancel = context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	_ = c.Close(short)
	// Output:
	// accepted while offline: true
	// wildcard rejected: true
	// closed, not drained: true
	// queued after a restart: 1
}
