// Command telemetry is a small device-style publisher built on Holdfast.
//
// It publishes sequence-numbered messages through a durable outbox and
// prints "accepted N" on its own line, in order, for each message once it
// is durable (up to -pipeline messages are handed over and committing at
// once), then "drained" once the broker acknowledged everything, and exits
// 0. Each message records N as its resume point: restarted on the same
// outbox with -start S at or below the last one accepted (M), it prints
// "accepted" for S..M without publishing them again and goes on at M+1.
// Without -broker it starts an embedded broker in-process, so it runs with
// nothing installed:
//
//	go run ./examples/telemetry
//	go run ./examples/telemetry -broker tcp://127.0.0.1:1883 -qos 2 -count 1000 -rate 0
//
// The payload of message N begins with the decimal N and a space. SIGINT or
// SIGTERM closes it cleanly, at any -rate: it stops publishing, waits up to
// 5s for the broker's acknowledgements, and exits 0; what was accepted and
// not yet acknowledged stays in the outbox and is sent by the next run with
// the same -outbox and -client-id. A second signal exits at once, with status
// 130 (SIGINT) or 143 (SIGTERM); the outbox keeps every accepted message.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/holdfast-mqtt/holdfast/client"
	"github.com/holdfast-mqtt/holdfast/examples/internal/embedbroker"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("telemetry", flag.ContinueOnError)
	fs.SetOutput(stderr)
	broker := fs.String("broker", "", "broker URL (default: an embedded in-process broker)")
	clientID := fs.String("client-id", "holdfast-telemetry", "MQTT client identifier (stable: the broker keeps the session under it)")
	outboxDir := fs.String("outbox", "", "outbox directory (default: a directory named after -client-id in the temp dir)")
	topic := fs.String("topic", "holdfast/telemetry", "topic to publish to")
	qos := fs.Int("qos", 1, "QoS of the messages (0, 1 or 2)")
	start := fs.Uint64("start", 1, "first sequence number")
	count := fs.Uint64("count", 20, "number of messages (0: until interrupted)")
	rate := fs.Float64("rate", 10, "messages per second (0: as fast as possible)")
	size := fs.Int("size", 64, "payload bytes (at least the sequence number and a space)")
	keepalive := fs.Duration("keepalive", 30*time.Second, "MQTT keepalive (a black-holed link is noticed after about 1.5x)")
	verbose := fs.Bool("v", false, "log connection events to stderr")
	pipeline := fs.Int("pipeline", 1024, "messages handed over and not yet durable at most (1: wait for each, as Publish does)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *qos < 0 || *qos > 2 || *size < 0 || *rate < 0 || *pipeline < 1 {
		fmt.Fprintln(stderr, "telemetry: -qos must be 0..2, -size and -rate non-negative, -pipeline at least 1")
		return 2
	}

	ctx, stop := interrupts(stderr)
	defer stop()

	logLevel := slog.LevelWarn
	if *verbose {
		logLevel = slog.LevelInfo
	}
	logger := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: logLevel}))

	if *broker == "" {
		b, err := embedbroker.Start("127.0.0.1:0")
		if err != nil {
			fmt.Fprintln(stderr, "telemetry: embedded broker:", err)
			return 1
		}
		defer b.Close()
		*broker = b.URL()
		fmt.Fprintln(stderr, "telemetry: embedded broker on", b.URL())
	}
	if *outboxDir == "" {
		*outboxDir = filepath.Join(os.TempDir(), "holdfast-"+*clientID)
	}

	c, err := client.New(client.Config{
		Brokers:    []string{*broker},
		ClientID:   *clientID,
		OutboxDir:  *outboxDir,
		QoS0:       client.QoS0Queue,
		KeepAlive:  *keepalive,
		Logger:     logger,
		MaxPending: *pipeline,
	})
	if err != nil {
		fmt.Fprintln(stderr, "telemetry:", err)
		return 1
	}

	code := publish(ctx, c, stdout, stderr, *topic, byte(*qos), *start, *count, *rate, *size, *pipeline)
	if code == 0 {
		if err := c.Flush(ctx); err != nil {
			code = closeOnSignal(ctx, err, stderr)
		} else {
			fmt.Fprintln(stdout, "drained")
		}
	}
	closeCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.Close(closeCtx); err != nil && !errors.Is(err, client.ErrNotDrained) {
		fmt.Fprintln(stderr, "telemetry: close:", err)
		return 1
	}
	return code
}

// publish publishes messages start.. (count of them; 0: until ctx ends)
// and prints "accepted N", in order, as each becomes durable. Each message
// carries N as its marker: a run restarted on the same outbox resumes after
// the last one the outbox accepted (ResumePoint), printing "accepted" for
// the ones it will not publish again.
func publish(ctx context.Context, c *client.Client, stdout, stderr io.Writer, topic string, qos byte, start, count uint64, rate float64, size int, pipeline int) int {
	end := func(n uint64) bool { return count != 0 && n >= start+count }
	n := start
	if _, m := c.ResumePoint(); m != nil {
		if last, err := strconv.ParseUint(string(m), 10, 64); err == nil && last >= start {
			for ; n <= last && !end(n); n++ {
				fmt.Fprintf(stdout, "accepted %d\n", n)
			}
		}
	}
	var tick <-chan time.Time
	if rate > 0 {
		t := time.NewTicker(time.Duration(float64(time.Second) / rate))
		defer t.Stop()
		tick = t.C
	}
	// Handed over, not yet printed: at most pipeline of them wait for
	// their commit (Config.MaxPending), the rest only for their turn.
	type handed struct {
		n uint64
		r *client.Receipt
	}
	var fifo []handed
	report := func(wait bool) error {
		for len(fifo) > 0 {
			h := fifo[0]
			if !wait {
				select {
				case <-h.r.Durable():
				default:
					return nil
				}
			}
			<-h.r.Durable() // a commit is bounded
			if h.r.Seq() == 0 {
				return h.r.Err()
			}
			fmt.Fprintf(stdout, "accepted %d\n", h.n)
			fifo = fifo[1:]
		}
		return nil
	}
	defer func() { _ = report(true) }() // what was handed over is durable or failed soon
	buf := make([]byte, 0, max(size, 24))
	for ; !end(n); n++ {
		if ctx.Err() != nil { // at -rate 0 nothing else would notice a signal
			return closeOnSignal(ctx, ctx.Err(), stderr)
		}
		if tick != nil {
			select {
			case <-tick:
			case <-ctx.Done():
				return closeOnSignal(ctx, ctx.Err(), stderr)
			}
		}
		buf = strconv.AppendUint(buf[:0], n, 10)
		buf = append(buf, ' ')
		for len(buf) < size {
			buf = append(buf, 'x')
		}
		payload := append([]byte(nil), buf...)
		opts := client.PublishOptions{QoS: qos, Marker: strconv.AppendUint(nil, n, 10)}
		if pipeline == 1 {
			if _, err := c.Publish(ctx, topic, payload, opts); err != nil {
				return closeOnSignal(ctx, err, stderr)
			}
			fmt.Fprintf(stdout, "accepted %d\n", n)
			continue
		}
		r, err := c.PublishAsync(ctx, topic, payload, opts)
		if err != nil {
			if rerr := report(true); rerr != nil {
				err = rerr
			}
			return closeOnSignal(ctx, err, stderr)
		}
		fifo = append(fifo, handed{n, r})
		if err := report(false); err != nil {
			return closeOnSignal(ctx, err, stderr)
		}
	}
	if err := report(true); err != nil {
		return closeOnSignal(ctx, err, stderr)
	}
	return 0
}

// interrupts returns a context cancelled by the first SIGINT or SIGTERM, for
// a clean shutdown. A second signal ends the process at once with status
// 128+signal (130 or 143), without waiting for the shutdown. stop releases
// the signals and the goroutine that counts them.
func interrupts(stderr io.Writer) (ctx context.Context, stop func()) {
	ctx, stopNotify := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	// Every signal comes here too, from the start, so none can slip between
	// the first and the second: the first is the one that cancelled ctx.
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	done := make(chan struct{})
	exited := make(chan struct{})
	go func() {
		defer close(exited)
		for first := true; ; first = false {
			var sig os.Signal
			select {
			case sig = <-sigs:
			case <-done:
				return
			}
			if first {
				fmt.Fprintln(stderr, "telemetry: stopping; a second signal exits at once")
				continue
			}
			fmt.Fprintln(stderr, "telemetry: second signal, exiting at once")
			code := 128 + int(syscall.SIGTERM)
			if sig == os.Interrupt {
				code = 128 + int(syscall.SIGINT)
			}
			os.Exit(code)
		}
	}()
	return ctx, func() {
		signal.Stop(sigs)
		stopNotify()
		close(done)
		<-exited
	}
}

// closeOnSignal turns an interruption into a clean exit and anything else
// into a failure.
func closeOnSignal(ctx context.Context, err error, stderr io.Writer) int {
	if ctx.Err() != nil {
		return 0
	}
	fmt.Fprintln(stderr, "telemetry:", err)
	return 1
}
