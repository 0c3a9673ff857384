// Command barepaho is the baseline publisher for Holdfast's end-to-end chaos
// test and benchmarks: the same program as examples/telemetry, written with
// bare github.com/eclipse/paho.mqtt.golang configured the way its
// documentation suggests for reliable delivery, and nothing else:
//
//   - a FileStore in -store, so in-flight messages survive a restart;
//   - CleanSession(false) and a stable -client-id, so the broker keeps the session;
//   - AutoReconnect(true) with MaxReconnectInterval 2s, and ConnectRetry(true)
//     (retry every second), so Publish can be called while (re)connecting;
//   - KeepAlive from -keepalive, and PingTimeout half of it (as Holdfast does),
//     so both notice a black-holed link after about 1.5x the keepalive and a
//     comparison measures delivery, not detection.
//
// It prints "accepted N" on its own line for each message once Publish
// returned a token that did not fail at once (the token may still be
// pending: this is what a paho user sees), then "drained" once every token
// has completed, and exits 0. In paho a completed token does not mean the
// broker acknowledged the message: resume() completes the tokens of stored
// messages when it queues them again after a reconnect. What is still in the
// FileStore at exit is sent by the next run with the same -store and
// -client-id, if there is one. A Publish that fails at once (for example
// "not connected") is retried with the same N after a short pause; it is not
// printed until it is accepted. SIGINT or SIGTERM stops it cleanly with exit
// status 0. Flags are those of examples/telemetry, with -store naming the
// FileStore directory (-outbox is accepted as an alias):
//
//	go run ./internal/cmd/barepaho -broker tcp://127.0.0.1:1883 -qos 2 -count 1000 -rate 0
//
// The payload of message N begins with the decimal N and a space. With -v,
// connection events and paho's warnings and errors go to stderr, and a final
// line counts the tokens that completed with an error.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
)

// Settings that are not flags.
const (
	connectRetryInterval = time.Second            // ConnectRetry's pause between attempts (paho's default is 30s)
	maxReconnectInterval = 2 * time.Second        // AutoReconnect's backoff cap (paho's default is 10m)
	connectTimeout       = 5 * time.Second        // one connection attempt
	retryPause           = 100 * time.Millisecond // before publishing again after an immediate error
	disconnectQuiesce    = 250                    // milliseconds Disconnect waits for work in progress
	pruneEvery           = 1024                   // publishes between sweeps of completed tokens
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// config holds the parsed flags.
type config struct {
	broker, clientID, store, topic string
	qos                            int
	start, count                   uint64
	rate                           float64
	size                           int
	keepalive                      time.Duration
	verbose                        bool
}

func parseFlags(args []string, stderr io.Writer) (config, error) {
	var c config
	fs := flag.NewFlagSet("barepaho", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&c.broker, "broker", "tcp://127.0.0.1:1883", "broker URL")
	fs.StringVar(&c.clientID, "client-id", "barepaho", "MQTT client identifier (stable: the broker keeps the session under it)")
	fs.StringVar(&c.store, "store", "", "paho FileStore directory (default: a directory named after -client-id in the temp dir)")
	fs.StringVar(&c.store, "outbox", "", "alias of -store")
	fs.StringVar(&c.topic, "topic", "holdfast/telemetry", "topic to publish to")
	fs.IntVar(&c.qos, "qos", 1, "QoS of the messages (0, 1 or 2)")
	fs.Uint64Var(&c.start, "start", 1, "first sequence number")
	fs.Uint64Var(&c.count, "count", 20, "number of messages (0: until interrupted)")
	fs.Float64Var(&c.rate, "rate", 10, "messages per second (0: as fast as possible)")
	fs.IntVar(&c.size, "size", 64, "payload bytes (at least the sequence number and a space)")
	fs.DurationVar(&c.keepalive, "keepalive", 30*time.Second, "MQTT keepalive (a black-holed link is noticed after about 1.5x)")
	fs.BoolVar(&c.verbose, "v", false, "log connection events and paho's warnings to stderr")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	switch {
	case fs.NArg() > 0:
		return c, fmt.Errorf("unexpected arguments %q", fs.Args())
	case c.qos < 0 || c.qos > 2:
		return c, errors.New("-qos must be 0, 1 or 2")
	case c.size < 0 || c.rate < 0:
		return c, errors.New("-size and -rate must not be negative")
	case c.keepalive < time.Second:
		return c, errors.New("-keepalive must be at least 1s (MQTT counts it in seconds)")
	}
	if c.store == "" {
		c.store = filepath.Join(os.TempDir(), "barepaho-"+c.clientID)
	}
	return c, nil
}

func run(args []string, stdout, stderr io.Writer) int {
	cfg, err := parseFlags(args, stderr)
	if err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(stderr, "barepaho:", err)
		}
		return 2
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	logger := log.New(stderr, "barepaho: ", log.LstdFlags|log.Lmicroseconds)
	if cfg.verbose {
		mqtt.CRITICAL = logger
		mqtt.ERROR = logger
		mqtt.WARN = logger
	}

	c := mqtt.NewClient(clientOptions(cfg, logger))
	// With ConnectRetry the token completes only once connected; Publish may
	// be called before that, and what it stores is sent when the connection
	// comes up.
	c.Connect()
	defer c.Disconnect(disconnectQuiesce)

	var p publisher
	if !p.publish(ctx, c, cfg, stdout, logger) {
		return 0 // interrupted
	}
	if !p.wait(ctx) {
		return 0 // interrupted
	}
	fmt.Fprintln(stdout, "drained")
	if cfg.verbose {
		logger.Printf("%d tokens completed with an error, %d immediate errors retried", p.tokenErrors, p.retries)
	}
	return 0
}

// clientOptions configures paho as its documentation suggests for reliable
// delivery (see the package comment).
func clientOptions(cfg config, logger *log.Logger) *mqtt.ClientOptions {
	o := mqtt.NewClientOptions().
		AddBroker(cfg.broker).
		SetClientID(cfg.clientID).
		SetCleanSession(false).
		SetStore(mqtt.NewFileStore(cfg.store)).
		SetAutoReconnect(true).
		SetMaxReconnectInterval(maxReconnectInterval).
		SetConnectRetry(true).
		SetConnectRetryInterval(connectRetryInterval).
		SetConnectTimeout(connectTimeout).
		SetKeepAlive(cfg.keepalive).
		SetPingTimeout(cfg.keepalive / 2)
	if cfg.verbose {
		o.SetOnConnectHandler(func(mqtt.Client) { logger.Print("connected") })
		o.SetConnectionLostHandler(func(_ mqtt.Client, err error) { logger.Printf("connection lost: %v", err) })
		o.SetReconnectingHandler(func(mqtt.Client, *mqtt.ClientOptions) { logger.Print("reconnecting") })
	}
	return o
}

// publisher publishes the sequence and keeps the tokens still pending.
type publisher struct {
	pending     []mqtt.Token
	tokenErrors int // tokens that completed with an error
	retries     int // immediate errors, each followed by a retry
}

// publish publishes cfg.count messages (or until ctx is done when
// cfg.count is 0), printing "accepted N" for each. It reports false if ctx
// was done first.
func (p *publisher) publish(ctx context.Context, c mqtt.Client, cfg config, stdout io.Writer, logger *log.Logger) bool {
	var tick <-chan time.Time
	if cfg.rate > 0 {
		t := time.NewTicker(time.Duration(float64(time.Second) / cfg.rate))
		defer t.Stop()
		tick = t.C
	}
	pause := time.NewTimer(0)
	defer pause.Stop()
	<-pause.C

	buf := make([]byte, 0, max(cfg.size, 24))
	for n := cfg.start; cfg.count == 0 || n < cfg.start+cfg.count; n++ {
		if tick != nil {
			select {
			case <-tick:
			case <-ctx.Done():
				return false
			}
		}
		buf = strconv.AppendUint(buf[:0], n, 10)
		buf = append(buf, ' ')
		for len(buf) < cfg.size {
			buf = append(buf, 'x')
		}
		payload := append([]byte(nil), buf...)
		for {
			tok := c.Publish(cfg.topic, byte(cfg.qos), false, payload)
			err := immediateError(tok)
			if err == nil {
				p.pending = append(p.pending, tok)
				break
			}
			p.retries++
			if cfg.verbose {
				logger.Printf("publish %d: %v (retrying)", n, err)
			}
			pause.Reset(retryPause)
			select {
			case <-pause.C:
			case <-ctx.Done():
				return false
			}
		}
		fmt.Fprintf(stdout, "accepted %d\n", n)
		if len(p.pending) >= pruneEvery {
			p.prune()
		}
	}
	return ctx.Err() == nil
}

// immediateError returns the error of a token that has already completed
// with one, and nil for a token that is pending or completed without error.
func immediateError(tok mqtt.Token) error {
	select {
	case <-tok.Done():
		return tok.Error()
	default:
		return nil
	}
}

// prune drops the tokens that have completed, counting their errors.
func (p *publisher) prune() {
	kept := p.pending[:0]
	for _, tok := range p.pending {
		select {
		case <-tok.Done():
			if tok.Error() != nil {
				p.tokenErrors++
			}
		default:
			kept = append(kept, tok)
		}
	}
	clear(p.pending[len(kept):])
	p.pending = kept
}

// wait waits until every pending token has completed, or reports false once
// ctx is done.
func (p *publisher) wait(ctx context.Context) bool {
	for _, tok := range p.pending {
		select {
		case <-tok.Done():
			if tok.Error() != nil {
				p.tokenErrors++
			}
		case <-ctx.Done():
			return false
		}
	}
	p.pending = p.pending[:0]
	return true
}
