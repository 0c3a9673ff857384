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
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/eclipse/paho.mqtt.golang/packets"

	"github.com/holdfast-mqtt/holdfast/client"
	"github.com/holdfast-mqtt/holdfast/reconnect"
)

// childFlag, as the first argument, runs the program as one publisher: the
// parent starts, kills and restarts these children. It is not a flag of the
// FlagSet, so -h does not list it.
const childFlag = "-child"

// A child writes these lines to stdout, one at a time:
//
//	accepted N    message N is accepted (Holdfast: durable; paho: Publish
//	              returned a token that had not failed), in order
//	stats K=V...  its counters so far (this process only), every statsEvery
//	drained       everything it published is acknowledged (Holdfast) or its
//	              tokens completed (paho); it exits 0 next
const statsEvery = 100 * time.Millisecond

// childConfig is a child's command line.
type childConfig struct {
	client     string // "holdfast" or "paho"
	broker     string
	clientID   string
	dir        string // Holdfast outbox or paho FileStore
	topic      string
	qos        int
	start, end uint64 // publish start..end
	rate       float64
	size       int
	keepalive  time.Duration
}

func (c childConfig) args() []string {
	return []string{childFlag,
		"-client", c.client, "-broker", c.broker, "-client-id", c.clientID, "-dir", c.dir,
		"-topic", c.topic, "-qos", strconv.Itoa(c.qos),
		"-start", strconv.FormatUint(c.start, 10), "-end", strconv.FormatUint(c.end, 10),
		"-rate", strconv.FormatFloat(c.rate, 'g', -1, 64), "-size", strconv.Itoa(c.size),
		"-keepalive", c.keepalive.String(),
	}
}

// childMain runs a child. Its context ends at SIGINT, SIGTERM or when stdin
// reaches its end (the parent is gone): it then stops publishing and exits
// 0 without draining.
func childMain(args []string, stdout, stderr io.Writer) int {
	var c childConfig
	fs := flag.NewFlagSet("chaos child", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&c.client, "client", "", "holdfast or paho")
	fs.StringVar(&c.broker, "broker", "", "broker URL")
	fs.StringVar(&c.clientID, "client-id", "", "client identifier")
	fs.StringVar(&c.dir, "dir", "", "outbox or FileStore directory")
	fs.StringVar(&c.topic, "topic", "", "topic")
	fs.IntVar(&c.qos, "qos", 1, "QoS")
	fs.Uint64Var(&c.start, "start", 1, "first sequence number")
	fs.Uint64Var(&c.end, "end", 1, "last sequence number")
	fs.Float64Var(&c.rate, "rate", 0, "messages per second")
	fs.IntVar(&c.size, "size", 64, "payload bytes")
	fs.DurationVar(&c.keepalive, "keepalive", 2*time.Second, "keepalive")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() { // the parent holds our stdin open for as long as it lives
		_, _ = io.Copy(io.Discard, os.Stdin)
		cancel()
	}()

	out := &lineWriter{w: stdout}
	var err error
	switch c.client {
	case "holdfast":
		err = runHoldfast(ctx, c, out, stderr)
	case "paho":
		err = runPaho(ctx, c, out)
	default:
		err = fmt.Errorf("unknown -client %q", c.client)
	}
	if err != nil && ctx.Err() == nil {
		fmt.Fprintf(stderr, "chaos %s: %v\n", c.client, err)
		return 1
	}
	return 0
}

// lineWriter writes whole lines from several goroutines.
type lineWriter struct {
	mu sync.Mutex // guards w
	w  io.Writer
}

func (l *lineWriter) printf(format string, a ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	fmt.Fprintf(l.w, format+"\n", a...)
}

// payload is message n: the decimal n, a space, and padding to size bytes.
func payload(n uint64, size int) []byte {
	b := strconv.AppendUint(make([]byte, 0, max(size, 24)), n, 10)
	b = append(b, ' ')
	for len(b) < size {
		b = append(b, 'x')
	}
	return b
}

// pace returns a ticker channel at rate per second, or nil (no pacing) for
// rate 0, and its stop function.
func pace(rate float64) (<-chan time.Time, func()) {
	if rate <= 0 {
		return nil, func() {}
	}
	t := time.NewTicker(time.Duration(float64(time.Second) / rate))
	return t.C, t.Stop
}

// every calls f every d until the returned stop is called; stop waits for
// a call in progress, and may be called again.
func every(d time.Duration, f func()) (stop func()) {
	done := make(chan struct{})
	exited := make(chan struct{})
	go func() {
		defer close(exited)
		t := time.NewTicker(d)
		defer t.Stop()
		for {
			select {
			case <-t.C:
				f()
			case <-done:
				return
			}
		}
	}()
	var once sync.Once
	return func() { once.Do(func() { close(done) }); <-exited }
}

// runHoldfast publishes c.start..c.end with Holdfast: a durable outbox in
// c.dir, PublishAsync, and each message's number as its marker. Restarted
// on the same outbox, it first reports what the previous process accepted
// without reporting it (ResumePoint), and goes on right after it.
func runHoldfast(ctx context.Context, c childConfig, out *lineWriter, stderr io.Writer) error {
	var conns int64
	var connsMu sync.Mutex // guards conns
	hc, err := client.New(client.Config{
		Brokers:   []string{c.broker},
		ClientID:  c.clientID,
		OutboxDir: c.dir,
		KeepAlive: c.keepalive,
		// The same reconnect cap as the paho child's MaxReconnectInterval.
		Backoff: reconnect.Policy{MaxInterval: 2 * time.Second},
		Logger:  slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
		Hooks: client.Hooks{OnConnection: func(ev reconnect.Event) {
			if ev.State == reconnect.Connected {
				connsMu.Lock()
				conns++
				connsMu.Unlock()
			}
		}},
	})
	if err != nil {
		return err
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = hc.Close(cctx) // what is not acknowledged stays in the outbox
	}()

	var published, durable int64 // this process's; guarded by pubMu
	var pubMu sync.Mutex
	stats := func() {
		s := hc.Stats()
		pubMu.Lock()
		p, d := published, durable
		pubMu.Unlock()
		connsMu.Lock()
		k := conns
		connsMu.Unlock()
		out.printf("stats pub=%d durable=%d acked=%d queued=%d conns=%d", p, d, s.Acked, s.Queued, k)
	}
	stopStats := every(statsEvery, stats)
	defer stopStats()

	n := c.start
	if _, m := hc.ResumePoint(); m != nil {
		last, err := strconv.ParseUint(string(m), 10, 64)
		if err != nil {
			return fmt.Errorf("resume point %q: %w", m, err)
		}
		for ; n <= last && n <= c.end; n++ {
			out.printf("accepted %d", n)
		}
	}
	tick, stopTick := pace(c.rate)
	defer stopTick()
	// Handed over, not yet reported: reported in order once durable.
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
			out.printf("accepted %d", h.n)
			pubMu.Lock()
			durable++
			pubMu.Unlock()
			fifo = fifo[1:]
		}
		return nil
	}
	for ; n <= c.end; n++ {
		if tick != nil {
			select {
			case <-tick:
			case <-ctx.Done():
			}
		}
		if ctx.Err() != nil {
			return errors.Join(ctx.Err(), report(true))
		}
		r, err := hc.PublishAsync(ctx, c.topic, payload(n, c.size), client.PublishOptions{
			QoS: byte(c.qos), Marker: strconv.AppendUint(nil, n, 10),
		})
		if err != nil {
			return errors.Join(err, report(true))
		}
		pubMu.Lock()
		published++
		pubMu.Unlock()
		fifo = append(fifo, handed{n, r})
		if err := report(false); err != nil {
			return err
		}
	}
	if err := report(true); err != nil {
		return err
	}
	if err := hc.Flush(ctx); err != nil {
		return err
	}
	stopStats()
	stats()
	out.printf("drained")
	return nil
}

// runPaho publishes c.start..c.end with bare paho configured as its
// documentation suggests for reliable delivery, as internal/cmd/barepaho
// does: a FileStore in c.dir, CleanSession(false) and a stable client
// identifier, AutoReconnect (backoff capped at 2s) and ConnectRetry (every
// second), so Publish can be called while (re)connecting. A Publish whose
// token fails at once is retried with the same number after 100ms.
// Restarted, it goes on after the last number it reported.
func runPaho(ctx context.Context, c childConfig, out *lineWriter) error {
	store := &countingStore{Store: mqtt.NewFileStore(c.dir), keys: map[string]bool{}}
	var conns int64
	var connsMu sync.Mutex // guards conns
	opts := mqtt.NewClientOptions().
		AddBroker(c.broker).
		SetClientID(c.clientID).
		SetCleanSession(false).
		SetStore(store).
		SetAutoReconnect(true).
		SetMaxReconnectInterval(2 * time.Second).
		SetConnectRetry(true).
		SetConnectRetryInterval(time.Second).
		SetConnectTimeout(5 * time.Second).
		SetKeepAlive(c.keepalive).
		SetPingTimeout(c.keepalive / 2).
		SetOnConnectHandler(func(mqtt.Client) {
			connsMu.Lock()
			conns++
			connsMu.Unlock()
		})
	pc := mqtt.NewClient(opts)
	pc.Connect() // with ConnectRetry it completes once connected; Publish may come first
	defer pc.Disconnect(250)

	var published int64 // guarded by pubMu
	var pubMu sync.Mutex
	stats := func() {
		acked, queued := store.counts()
		pubMu.Lock()
		p := published
		pubMu.Unlock()
		connsMu.Lock()
		k := conns
		connsMu.Unlock()
		out.printf("stats pub=%d acked=%d queued=%d conns=%d", p, acked, queued, k)
	}
	stopStats := every(statsEvery, stats)
	defer stopStats()

	tick, stopTick := pace(c.rate)
	defer stopTick()
	retry := time.NewTimer(0)
	defer retry.Stop()
	<-retry.C
	var pending []mqtt.Token
	for n := c.start; n <= c.end; n++ {
		if tick != nil {
			select {
			case <-tick:
			case <-ctx.Done():
			}
		}
		for {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			tok := pc.Publish(c.topic, byte(c.qos), false, payload(n, c.size))
			pubMu.Lock()
			published++
			pubMu.Unlock()
			if failedAtOnce(tok) == nil {
				pending = append(pending, tok)
				break
			}
			retry.Reset(100 * time.Millisecond)
			select {
			case <-retry.C:
			case <-ctx.Done():
			}
		}
		out.printf("accepted %d", n)
	}
	for _, tok := range pending {
		select {
		case <-tok.Done():
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	stopStats()
	stats()
	out.printf("drained")
	return nil
}

// failedAtOnce returns the error of a token that has already completed with
// one, and nil for a token that is pending or completed without error.
func failedAtOnce(tok mqtt.Token) error {
	select {
	case <-tok.Done():
		return tok.Error()
	default:
		return nil
	}
}

// countingStore is paho's Store with counters and nothing else changed:
// paho puts "o.<id>" before it writes a QoS 1/2 PUBLISH and deletes it when
// the PUBACK or PUBCOMP arrives (or a SUBACK: this client subscribes to
// nothing), so the outbound keys are what it holds unacknowledged.
type countingStore struct {
	mqtt.Store
	mu    sync.Mutex // guards keys, acked
	keys  map[string]bool
	acked int64
}

func (s *countingStore) Open() {
	s.Store.Open()
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, k := range s.Store.All() {
		if strings.HasPrefix(k, "o.") {
			s.keys[k] = true
		}
	}
}

func (s *countingStore) Put(key string, m packets.ControlPacket) {
	s.Store.Put(key, m)
	if strings.HasPrefix(key, "o.") {
		s.mu.Lock()
		s.keys[key] = true
		s.mu.Unlock()
	}
}

func (s *countingStore) Del(key string) {
	s.Store.Del(key)
	if strings.HasPrefix(key, "o.") {
		s.mu.Lock()
		if s.keys[key] {
			delete(s.keys, key)
			s.acked++
		}
		s.mu.Unlock()
	}
}

func (s *countingStore) Reset() {
	s.Store.Reset()
	s.mu.Lock()
	clear(s.keys)
	s.mu.Unlock()
}

func (s *countingStore) counts() (acked, queued int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.acked, int64(len(s.keys))
}
