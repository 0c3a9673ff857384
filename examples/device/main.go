// Command device shows Holdfast configured for a device: the small-memory
// outbox profile, an outbox bounded in messages and bytes that drops the
// oldest readings when full, a TTL for stale telemetry, encryption at rest,
// and Flush before a power-off. It prints what it did.
//
// It plays two boots of one device behind a link it controls (a fault proxy
// in front of the broker):
//
//  1. Boot 1, link down: it records -stale readings, waits past -ttl (they
//     expire), records -readings more (the oldest are dropped past
//     -max-queued), and powers off with the rest still queued.
//  2. Between boots it looks at the outbox at rest: no reading in plaintext
//     in its files, and a wrong key refused.
//  3. Boot 2, link up: the queued readings go out; Flush says when the
//     outbox is empty, and only then does it power off.
//
// Without -broker it starts an embedded broker, so it runs with nothing
// installed:
//
//	go run ./examples/device
//	go run ./examples/device -broker tcp://127.0.0.1:1883 -key $(openssl rand -hex 32)
//
// It exits 0 when every step went as described, 1 otherwise.
package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/holdfast-mqtt/holdfast/client"
	"github.com/holdfast-mqtt/holdfast/examples/internal/embedbroker"
	"github.com/holdfast-mqtt/holdfast/internal/faultproxy"
	"github.com/holdfast-mqtt/holdfast/outbox"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

// settings are the parsed flags.
type settings struct {
	broker     string
	clientID   string
	outboxDir  string
	topic      string
	key        []byte
	keyGiven   bool
	stale      int
	readings   int
	maxQueued  int
	maxBytes   int64
	ttl        time.Duration
	flushLimit time.Duration
	verbose    bool
}

func parseFlags(args []string, stderr io.Writer) (settings, error) {
	var s settings
	fs := flag.NewFlagSet("device", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&s.broker, "broker", "", "broker URL, tcp:// (default: an embedded in-process broker)")
	fs.StringVar(&s.clientID, "client-id", "holdfast-device", "MQTT client identifier (stable across boots)")
	fs.StringVar(&s.outboxDir, "outbox", "", "outbox directory (default: a new temporary directory, removed at exit)")
	fs.StringVar(&s.topic, "topic", "holdfast/device/readings", "topic of the readings")
	keyHex := fs.String("key", "", "outbox encryption key, hex, 16/24/32 bytes (default: a random 32-byte key for this run)")
	fs.IntVar(&s.stale, "stale", 10, "readings recorded before the wait; they expire")
	fs.IntVar(&s.readings, "readings", 50, "readings recorded after the wait")
	fs.IntVar(&s.maxQueued, "max-queued", 40, "outbox bound in messages (Config.MaxQueued); the oldest are dropped past it")
	fs.Int64Var(&s.maxBytes, "max-bytes", 64<<10, "outbox bound in bytes of topic and payload (Config.MaxQueuedBytes)")
	fs.DurationVar(&s.ttl, "ttl", 3*time.Second, "age past which an unsent reading is dropped (Config.TTL)")
	fs.DurationVar(&s.flushLimit, "flush-timeout", 30*time.Second, "how long boot 2 waits for the outbox to drain")
	fs.BoolVar(&s.verbose, "v", false, "log the client's events to stderr")
	if err := fs.Parse(args); err != nil {
		return s, err
	}
	switch {
	case fs.NArg() > 0:
		return s, fmt.Errorf("unexpected arguments %q", fs.Args())
	case s.stale < 0 || s.readings < 1 || s.maxQueued < 1 || s.maxBytes < 1 || s.ttl <= 0 || s.flushLimit <= 0:
		return s, errors.New("-stale must be at least 0; -readings, -max-queued, -max-bytes, -ttl and -flush-timeout positive")
	}
	if *keyHex != "" {
		k, err := hex.DecodeString(*keyHex)
		if err != nil || (len(k) != 16 && len(k) != 24 && len(k) != 32) {
			return s, errors.New("-key must be 32, 48 or 64 hex digits")
		}
		s.key, s.keyGiven = k, true
	} else {
		s.key = make([]byte, 32)
		if _, err := rand.Read(s.key); err != nil {
			return s, err
		}
	}
	return s, nil
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	s, err := parseFlags(args, stderr)
	if err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(stderr, "device:", err)
		}
		return 2
	}
	level := slog.LevelWarn
	if s.verbose {
		level = slog.LevelInfo
	}
	d := &device{s: s, out: stdout, log: slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))}
	if err := d.run(ctx); err != nil {
		fmt.Fprintln(stderr, "device:", err)
		return 1
	}
	return 0
}

// device runs the two boots.
type device struct {
	s     settings
	out   io.Writer
	log   *slog.Logger
	link  *faultproxy.Proxy // between the device and the broker
	drops atomic.Int64      // OnDrop calls of the current boot (the hook runs on the client's goroutines)
}

func (d *device) printf(format string, args ...any) { fmt.Fprintf(d.out, format+"\n", args...) }

func (d *device) run(ctx context.Context) error {
	target, cleanup, err := d.broker()
	if err != nil {
		return err
	}
	defer cleanup()
	if d.link, err = faultproxy.New(target); err != nil {
		return err
	}
	defer d.link.Close()
	if d.s.outboxDir == "" {
		dir, err := os.MkdirTemp("", "holdfast-device-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		d.s.outboxDir = dir
	}
	keyNote := "a random key for this run (provision one per device: -key)"
	if d.s.keyGiven {
		keyNote = "the -key given"
	}
	d.printf("device: outbox %s: profile %v, at most %d messages and %d bytes (oldest dropped), TTL %v, AES-%d at rest with %s",
		d.s.outboxDir, outbox.ProfileDevice, d.s.maxQueued, d.s.maxBytes, d.s.ttl, 8*len(d.s.key), keyNote)

	if err := d.boot1(ctx); err != nil {
		return fmt.Errorf("boot 1: %w", err)
	}
	if err := d.atRest(); err != nil {
		return fmt.Errorf("at rest: %w", err)
	}
	if err := d.boot2(ctx); err != nil {
		return fmt.Errorf("boot 2: %w", err)
	}
	return nil
}

// broker returns the address ("host:port") of the broker the link leads
// to: -broker's, or an embedded broker's.
func (d *device) broker() (string, func(), error) {
	if d.s.broker == "" {
		b, err := embedbroker.Start("127.0.0.1:0")
		if err != nil {
			return "", nil, err
		}
		d.printf("device: embedded broker on %s", b.URL())
		return b.Addr(), func() { b.Close() }, nil
	}
	u, err := url.Parse(d.s.broker)
	if err != nil || (u.Scheme != "tcp" && u.Scheme != "mqtt") || u.Port() == "" {
		return "", nil, fmt.Errorf("-broker %q: want tcp://host:port", d.s.broker)
	}
	return u.Host, func() {}, nil
}

// config is the device's client configuration.
func (d *device) config(key []byte) client.Config {
	return client.Config{
		Brokers:        []string{d.link.URL()},
		ClientID:       d.s.clientID,
		OutboxDir:      d.s.outboxDir,
		Profile:        outbox.ProfileDevice,
		MaxQueued:      d.s.maxQueued,
		MaxQueuedBytes: d.s.maxBytes,
		Overflow:       outbox.OverflowDropOldest,
		TTL:            d.s.ttl,
		EncryptionKey:  key,
		Logger:         d.log,
		Hooks:          client.Hooks{OnDrop: func(uint64, error) { d.drops.Add(1) }},
	}
}

// reading is the payload of reading n. "reading" is what atRest looks for.
func reading(n int) []byte {
	return fmt.Appendf(nil, "reading %d temp=%.1f", n, 20+float64(n%50)/10)
}

func (d *device) record(ctx context.Context, c *client.Client, from, count int) error {
	for n := from; n < from+count; n++ {
		if _, err := c.Publish(ctx, d.s.topic, reading(n), client.QoS1); err != nil {
			return fmt.Errorf("reading %d: %w", n, err)
		}
	}
	return nil
}

// boot1 records readings with the link down and powers off with them queued.
func (d *device) boot1(ctx context.Context) error {
	d.link.SetRefuse(true)
	d.printf("boot 1: link down")
	c, err := client.New(d.config(d.s.key))
	if err != nil {
		return err
	}
	defer c.Close(context.Background()) // after a failure; a no-op after the Close below
	if err := d.record(ctx, c, 1, d.s.stale); err != nil {
		return err
	}
	if d.s.stale > 0 {
		wait := d.s.ttl + 500*time.Millisecond
		d.printf("boot 1: %d readings recorded; waiting %v, past their TTL", d.s.stale, wait)
		select {
		case <-time.After(wait):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if err := d.record(ctx, c, d.s.stale+1, d.s.readings); err != nil {
		return err
	}
	st := c.Stats()
	d.printf("boot 1: %d readings recorded", d.s.readings)
	d.printf("boot 1: accepted %d, expired %d, dropped %d (oldest first), queued %d (%d bytes)",
		st.Accepted, st.Expired, st.Dropped, st.Queued, st.QueuedBytes)
	want := min(d.s.readings, d.s.maxQueued)
	if st.Expired != uint64(d.s.stale) || st.Queued != want || int(st.Expired+st.Dropped) != d.s.stale+d.s.readings-want {
		return fmt.Errorf("want %d expired and %d queued; stats %+v", d.s.stale, want, st)
	}
	// Power off with the link down: Close waits briefly for acknowledgements
	// that cannot come; the outbox keeps what it holds.
	short, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	if err := c.Close(short); !errors.Is(err, client.ErrNotDrained) {
		return fmt.Errorf("close with the link down: %v, want ErrNotDrained", err)
	}
	d.printf("boot 1: power off with %d queued", st.Queued)
	return nil
}

// atRest checks the closed outbox: no reading in plaintext in its files,
// and a wrong key refused.
func (d *device) atRest() error {
	files := 0
	err := filepath.WalkDir(d.s.outboxDir, func(path string, e fs.DirEntry, err error) error {
		if err != nil || e.IsDir() {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		files++
		if bytes.Contains(b, []byte("reading ")) {
			return fmt.Errorf("a reading in plaintext in %s", path)
		}
		return nil
	})
	if err != nil {
		return err
	}
	wrong := bytes.Clone(d.s.key)
	wrong[0] ^= 0xff
	c, err := client.New(d.config(wrong))
	if err == nil {
		c.Close(context.Background())
		return errors.New("the outbox opened with a wrong key")
	}
	if !errors.Is(err, outbox.ErrBadKey) {
		return fmt.Errorf("wrong key: %v, want outbox.ErrBadKey", err)
	}
	d.printf("at rest: %d files, no reading in plaintext; a wrong key is refused (outbox.ErrBadKey)", files)
	return nil
}

// boot2 brings the link up, flushes, and powers off once the outbox is empty.
func (d *device) boot2(ctx context.Context) error {
	d.link.SetRefuse(false)
	d.printf("boot 2: link up")
	d.drops.Store(0)
	c, err := client.New(d.config(d.s.key))
	if err != nil {
		return err
	}
	defer c.Close(context.Background())
	queued := c.Stats().Queued
	start := time.Now()
	fctx, cancel := context.WithTimeout(ctx, d.s.flushLimit)
	defer cancel()
	// Flush is the "safe to power off" signal: everything accepted so far has
	// been acknowledged by the broker (or dropped, as reported).
	if err := c.Flush(fctx); err != nil {
		return fmt.Errorf("flush: %w (%d still queued)", err, c.Stats().Queued)
	}
	st := c.Stats()
	d.printf("boot 2: flushed in %v: %d of %d queued acknowledged, %d left; safe to power off",
		time.Since(start).Round(time.Millisecond), st.Acked, queued, st.Queued)
	if st.Acked != uint64(queued) || d.drops.Load() != 0 {
		return fmt.Errorf("acknowledged %d of %d, %d dropped", st.Acked, queued, d.drops.Load())
	}
	if err := c.Close(ctx); err != nil {
		return err
	}
	d.printf("boot 2: power off")
	return nil
}
