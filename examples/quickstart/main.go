// Command quickstart is the README's quick start as a program: a client with
// a durable outbox and one subscription publishes two readings (Publish and
// PublishAsync), waits for the broker's acknowledgements (Flush), handles
// what its subscription receives until its context ends, and closes.
//
// Without -broker it starts an embedded broker, so it runs with nothing
// installed:
//
//	go run ./examples/quickstart
//	go run ./examples/quickstart -broker tcp://127.0.0.1:1883 -for 10s
//
// The function quickStart, between the markers below, is the README's quick
// start character for character; TestREADMEQuickStart keeps the two equal.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/holdfast-mqtt/holdfast/client"
	"github.com/holdfast-mqtt/holdfast/examples/internal/embedbroker"
)

func main() {
	broker := flag.String("broker", "", "broker URL, tcp:// (default: an embedded in-process broker)")
	dir := flag.String("outbox", "", "outbox directory (default: a new temporary directory, removed at exit)")
	runFor := flag.Duration("for", 2*time.Second, "how long to handle messages before closing (Ctrl-C stops sooner)")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *broker, *dir, *runFor); err != nil {
		fmt.Fprintln(os.Stderr, "quickstart:", err)
		os.Exit(1)
	}
}

// run starts an embedded broker when broker is empty and a temporary outbox
// when dir is empty, then runs quickStart for at most runFor.
func run(ctx context.Context, broker, dir string, runFor time.Duration) error {
	if broker == "" {
		b, err := embedbroker.Start("127.0.0.1:0")
		if err != nil {
			return err
		}
		defer b.Close()
		broker = b.URL()
	}
	if dir == "" {
		tmp, err := os.MkdirTemp("", "holdfast-quickstart-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(tmp)
		dir = tmp
	}
	ctx, cancel := context.WithTimeout(ctx, runFor)
	defer cancel()
	if err := quickStart(ctx, broker, dir); err != nil {
		return err
	}
	fmt.Println("closed: every reading acknowledged")
	return nil
}

// README quick start: begin
func quickStart(ctx context.Context, broker, dir string) error {
	c, err := client.New(client.Config{
		Brokers:   []string{broker},
		ClientID:  "sensor-42", // stable: the broker keeps the session under it
		OutboxDir: dir,         // what Publish accepted survives a crash or a restart here
		Subscriptions: []client.Subscription{{Filter: "site/1/#", QoS: 1,
			Handler: func(ctx context.Context, m client.Message) error {
				fmt.Printf("%s: %s\n", m.Topic, m.Payload)
				return nil // acknowledged to the broker now, never before
			}}},
	})
	if err != nil {
		return err // errors.Is(err, client.ErrInvalidConfig), outbox.ErrLocked, ...
	}
	defer c.Close(ctx) // waits for the outbox to drain until ctx ends; the rest stays on disk
	// Returns once the message is on disk: from then on it is delivered.
	if _, err := c.Publish(ctx, "site/1/temp", []byte("21.5"), client.QoS1); err != nil {
		return err // ErrInvalidTopic, ErrPayloadTooLarge, ErrOutboxFull, ...
	}
	// Returns once it has its place in the order; the receipt's Durable() and
	// Done() (or Wait) say when it is on disk and when the broker acknowledged it.
	if _, err := c.PublishAsync(ctx, "site/1/temp", []byte("21.6"), client.QoS1); err != nil {
		return err
	}
	// Before a power-off: wait until the broker acknowledged everything.
	if err := c.Flush(ctx); err != nil {
		return err
	}
	<-ctx.Done() // handle messages until ctx ends (Ctrl-C)
	return nil
}

// README quick start: end
