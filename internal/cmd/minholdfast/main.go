// Command minholdfast is the smallest useful publisher written with
// Holdfast: it publishes -count sequence-numbered messages through a durable
// outbox, waits until the broker has acknowledged them all (Flush), closes
// and prints "published N". It is internal/cmd/minpaho on Holdfast, and
// exists to be measured: .ci/run cross-compiles both for device targets, so
// that the binary size Holdfast adds over paho is known apart from what
// examples/telemetry links besides (its embedded demo broker, slog).
//
//	go run ./internal/cmd/minholdfast -broker tcp://127.0.0.1:1883 -count 10
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/holdfast-mqtt/holdfast/client"
)

// timeout bounds the whole run: publishing, the acknowledgements and Close.
const timeout = 30 * time.Second

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("minholdfast", flag.ContinueOnError)
	fs.SetOutput(stderr)
	broker := fs.String("broker", "tcp://127.0.0.1:1883", "broker URL")
	clientID := fs.String("client-id", "minholdfast", "MQTT client identifier")
	outboxDir := fs.String("outbox", "", "outbox directory (default: a directory named after -client-id in the temp dir)")
	topic := fs.String("topic", "holdfast/telemetry", "topic to publish to")
	qos := fs.Int("qos", 1, "QoS of the messages (0, 1 or 2)")
	count := fs.Int("count", 20, "number of messages")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *qos < 0 || *qos > 2 || *count < 0 || fs.NArg() > 0 {
		fmt.Fprintln(stderr, "minholdfast: -qos must be 0..2, -count non-negative, no arguments")
		return 2
	}
	if *outboxDir == "" {
		*outboxDir = filepath.Join(os.TempDir(), "holdfast-"+*clientID)
	}

	// QoS 0 queues too while not connected, as in examples/telemetry.
	c, err := client.New(client.Config{Brokers: []string{*broker}, ClientID: *clientID, OutboxDir: *outboxDir, QoS0: client.QoS0Queue})
	if err != nil {
		fmt.Fprintln(stderr, "minholdfast:", err)
		return 1
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	code := 0
	for n := 1; n <= *count && code == 0; n++ {
		if _, err := c.Publish(ctx, *topic, []byte(strconv.Itoa(n)+" telemetry"), client.PublishOptions{QoS: byte(*qos)}); err != nil {
			fmt.Fprintf(stderr, "minholdfast: message %d: %v\n", n, err)
			code = 1
		}
	}
	if code == 0 {
		if err := c.Flush(ctx); err != nil {
			fmt.Fprintln(stderr, "minholdfast: flush:", err)
			code = 1
		}
	}
	if err := c.Close(ctx); err != nil && code == 0 {
		fmt.Fprintln(stderr, "minholdfast: close:", err)
		code = 1
	}
	if code == 0 {
		fmt.Fprintf(stdout, "published %d\n", *count)
	}
	return code
}
