// Command minpaho is the smallest useful publisher written with bare
// github.com/eclipse/paho.mqtt.golang: it connects, publishes -count
// sequence-numbered messages, waits until each is acknowledged, disconnects
// and prints "published N". It exists to be measured: .ci/run cross-compiles
// it for device targets beside internal/cmd/minholdfast (the same program on
// Holdfast) and examples/telemetry, so that the binary size Holdfast adds
// over paho is known.
//
//	go run ./internal/cmd/minpaho -broker tcp://127.0.0.1:1883 -count 10
package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
)

// timeout bounds the connection and each acknowledgement.
const timeout = 30 * time.Second

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("minpaho", flag.ContinueOnError)
	fs.SetOutput(stderr)
	broker := fs.String("broker", "tcp://127.0.0.1:1883", "broker URL")
	clientID := fs.String("client-id", "minpaho", "MQTT client identifier")
	topic := fs.String("topic", "holdfast/telemetry", "topic to publish to")
	qos := fs.Int("qos", 1, "QoS of the messages (0, 1 or 2)")
	count := fs.Int("count", 20, "number of messages")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *qos < 0 || *qos > 2 || *count < 0 || fs.NArg() > 0 {
		fmt.Fprintln(stderr, "minpaho: -qos must be 0..2, -count non-negative, no arguments")
		return 2
	}

	c := mqtt.NewClient(mqtt.NewClientOptions().AddBroker(*broker).SetClientID(*clientID))
	if tok := c.Connect(); !tok.WaitTimeout(timeout) || tok.Error() != nil {
		fmt.Fprintln(stderr, "minpaho: connect:", tok.Error())
		return 1
	}
	defer c.Disconnect(250)
	toks := make([]mqtt.Token, 0, *count)
	for n := 1; n <= *count; n++ {
		toks = append(toks, c.Publish(*topic, byte(*qos), false, strconv.Itoa(n)+" telemetry"))
	}
	for i, tok := range toks {
		if !tok.WaitTimeout(timeout) || tok.Error() != nil {
			fmt.Fprintf(stderr, "minpaho: message %d: %v\n", i+1, tok.Error())
			return 1
		}
	}
	fmt.Fprintf(stdout, "published %d\n", *count)
	return 0
}
