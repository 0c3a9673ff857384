// Command chaos shows Holdfast's promise kept under faults, next to bare
// paho under the same faults, with nothing installed:
//
//	go run ./examples/chaos
//	go run ./examples/chaos -qos 1 -count 5000 -rate 200 -faults kills -seed 7
//	go run ./examples/chaos -broker tcp://127.0.0.1:1883
//
// It starts an embedded broker (mochi-mqtt, with persistence: sessions and
// queued messages survive its restarts) and a fault proxy in front of it,
// then two publishers, each a child process of this program publishing
// -count sequence-numbered messages at -rate through the proxy:
//
//   - Holdfast: client.New with a durable outbox in a temporary directory,
//     PublishAsync, each message's number as its marker. A message is
//     accepted once durable (Receipt.Durable). Restarted after a kill, the
//     child asks Client.ResumePoint and continues right after the last
//     message its outbox accepted, so nothing is skipped or published twice.
//   - bare paho, configured as its documentation suggests for reliable
//     delivery (internal/cmd/barepaho): a FileStore, CleanSession(false),
//     AutoReconnect and ConnectRetry. A message is accepted once Publish
//     returned a token that had not failed. Restarted after a kill, it
//     continues after the last message it reported accepted.
//
// An independent subscriber, connected straight to the broker with a
// persistent session at the lane's QoS (-qos), records every arrival.
// Meanwhile a seeded plan (-faults, -seed) cuts connections, makes outages
// (connections refused) and black holes (the link passes nothing until
// keepalives notice), restarts the broker gracefully on the same port and
// state (the proxy lets the publishers in again once the subscriber is
// back, so that nothing is queued for an absent subscriber: a broker
// resends such a queue in its own order), and SIGKILLs both publishers at
// the same instants, restarting them at once on the same directories. A
// progress line (rewritten in place on a terminal, every 2s otherwise)
// shows, per client, published/durable/acknowledged/in outbox/delivered/
// reconnects. When both publishers have drained and the subscriber has
// received everything (or nothing more for 3s), a verdict table shows, per
// client, the messages accepted, delivered, lost (accepted, never
// delivered), duplicated (arrivals beyond the first) and reordered (first
// arrivals after a later message's first arrival; a first arrival that is
// the broker's resend to a reconnecting subscriber is not counted).
//
// The exit status is 0 only when Holdfast lost nothing and reordered
// nothing (and at QoS 2 duplicated nothing); what bare paho did is only
// reported. A message a killed child had not reported accepted is not
// counted against it: it publishes it again after the restart.
//
// -faults takes a preset (default, network, kills, none) or a comma list:
// chaos (the fault proxy's seeded schedule of cuts, outages and black
// holes), a kind (cut, outage, blackhole, restart, kill) placed by the
// seed, KIND=N for N of them, KIND@T at T after the start of publishing, or
// KIND@T/D lasting D. The default preset is
// "chaos,blackhole,outage,restart,kill=4"; the plan is spread over
// -count/-rate seconds. Both publishers use a 2s keepalive and reconnect
// with a backoff capped at 2s.
//
// With -broker, the publishers and the subscriber use that broker (tcp://
// or mqtt:// only: the fault proxy forwards TCP) and broker restarts are
// skipped. Topics and client identifiers carry a random run id, so runs
// against one broker do not meet.
// SIGINT or SIGTERM stops the children and the demo; the exit status is
// then 130.
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// config is the demo's command line, and what tests may change.
type config struct {
	broker    string
	count     uint64
	rate      float64
	qos       int
	faults    string
	seed      uint64
	size      int
	keepalive time.Duration // of both publishers
	stall     time.Duration // give up after no progress for this long
	quiet     time.Duration // the subscriber's wait for stragglers
	exe       string        // the program run as the children
}

func parseFlags(args []string, stderr io.Writer) (config, error) {
	c := config{size: 64, keepalive: 2 * time.Second, stall: 30 * time.Second, quiet: 3 * time.Second}
	fs := flag.NewFlagSet("chaos", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&c.broker, "broker", "", "broker URL, tcp:// or mqtt:// (default: an embedded broker in this process)")
	fs.Uint64Var(&c.count, "count", 2000, "messages per client")
	fs.Float64Var(&c.rate, "rate", 100, "messages per second per client (0: as fast as possible)")
	fs.IntVar(&c.qos, "qos", 2, "QoS of the messages and of the subscription: 1 or 2")
	fs.StringVar(&c.faults, "faults", "default", "fault plan: a preset (default, network, kills, none) or a comma list such as cut=3,outage,kill@4s,restart@9s/1s")
	fs.Uint64Var(&c.seed, "seed", 1, "seed of the fault plan (the same seed, flags and plan give the same faults)")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	switch {
	case fs.NArg() > 0:
		return c, fmt.Errorf("unexpected arguments %q", fs.Args())
	case c.qos != 1 && c.qos != 2:
		return c, errors.New("-qos must be 1 or 2 (QoS 0 is at most once by definition)")
	case c.count == 0:
		return c, errors.New("-count must be at least 1")
	case c.rate < 0:
		return c, errors.New("-rate must not be negative")
	}
	if c.broker != "" {
		u, err := url.Parse(c.broker)
		if err != nil || (u.Scheme != "tcp" && u.Scheme != "mqtt") || u.Host == "" {
			return c, fmt.Errorf("-broker %q: want tcp://host:port or mqtt://host:port", c.broker)
		}
		if u.Port() == "" {
			u.Host += ":1883"
		}
		c.broker = "tcp://" + u.Host
	}
	if _, err := parseFaults(c.faults); err != nil {
		return c, err
	}
	return c, nil
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 && args[0] == childFlag {
		return childMain(args[1:], stdout, stderr)
	}
	cfg, err := parseFlags(args, stderr)
	if err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(stderr, "chaos:", err)
		}
		return 2
	}
	if cfg.exe, err = os.Executable(); err != nil {
		fmt.Fprintln(stderr, "chaos:", err)
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	rep, err := demo(ctx, cfg, stdout, nil)
	if err != nil {
		fmt.Fprintln(stderr, "chaos:", err)
		return 1
	}
	return rep.exitCode()
}

// span is how long publishing is expected to take, over which the faults
// are planned: count/rate, or 10s at -rate 0.
func (c config) span() time.Duration {
	if c.rate <= 0 {
		return 10 * time.Second
	}
	return time.Duration(float64(c.count) / c.rate * float64(time.Second))
}

// plural formats n and noun, "1 message", "2 messages".
func plural(n int, noun string) string {
	switch {
	case n == 1:
		return "1 " + noun
	case strings.HasSuffix(noun, "s"):
		return fmt.Sprintf("%d %ses", n, noun)
	}
	return fmt.Sprintf("%d %ss", n, noun)
}

// randomID names a run's topics and client identifiers.
func randomID() string {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
