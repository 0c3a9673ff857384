package client_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/holdfast-mqtt/holdfast/client"
	"github.com/holdfast-mqtt/holdfast/internal/embedbroker"
)

// A durable publisher: Publish returns once the message is on disk, the
// receipt reports the broker's acknowledgement, Flush waits for the backlog.
func Example() {
	broker, err := embedbroker.Start("127.0.0.1:0")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer broker.Close()
	dir, _ := os.MkdirTemp("", "holdfast-example-")
	defer os.RemoveAll(dir)

	c, err := client.New(client.Config{
		Brokers:   []string{broker.URL()},
		ClientID:  "example-device",
		OutboxDir: dir,
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	r, err := c.Publish(ctx, "site/1/temp", []byte("21.5"), client.QoS1)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("acknowledged:", r.Wait(ctx) == nil)

	_, err = c.Publish(ctx, "site/+/temp", []byte("x"), client.QoS1)
	fmt.Println("wildcard rejected:", errors.Is(err, client.ErrInvalidTopic))

	fmt.Println("flushed:", c.Flush(ctx) == nil)
	fmt.Println("closed:", c.Close(ctx) == nil)
	// Output:
	// acknowledged: true
	// wildcard rejected: true
	// flushed: true
	// closed: true
}
