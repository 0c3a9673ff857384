package client_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/holdfast-mqtt/holdfast/client"
	"github.com/holdfast-mqtt/holdfast/internal/faultproxy"
	"github.com/holdfast-mqtt/holdfast/internal/testbroker"
	"github.com/holdfast-mqtt/holdfast/internal/testsub"
)

// Helpers of the configuration matrix (matrix_test.go): a paced publisher,
// a fault schedule, waits that fail on no progress rather than on a time
// budget, and a relay that leaves one message half-acknowledged.

const (
	// stallTimeout is how long a wait goes on with nothing moving (no
	// acknowledgement, drop or arrival) before the test fails. No matrix
	// test has a total time budget: a loaded machine is slow, not wrong.
	stallTimeout = 60 * time.Second
	// quietReconnects is how many reconnects a client may make once the
	// faults stopped (the one after the last fault, and slack) before the
	// test calls it a reconnect loop.
	quietReconnects = 3
	// pollEvery is how often the waits look at their measure.
	pollEvery = 20 * time.Millisecond
	// envSeed repeats a run's randomness.
	envSeed = "HOLDFAST_SEED"
)

// matrixRand returns the seed of the test's randomness, from $HOLDFAST_SEED
// or fresh, and a generator seeded with it. The seed is logged; every
// failure message of the matrix repeats it.
func matrixRand(t *testing.T) (uint64, *rand.Rand) {
	t.Helper()
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv(envSeed); s != "" {
		n, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("%s=%q: %v", envSeed, s, err)
		}
		seed = n
	}
	t.Logf("seed %d (repeat with %s=%d)", seed, envSeed, seed)
	return seed, rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
}

// awaitProgress polls until done reports true. It returns an error when
// measure has not changed for stallTimeout, or at once when check (if set)
// returns one.
func awaitProgress(done func() bool, measure func() uint64, check func() error) error {
	last, since := measure(), time.Now()
	tick := time.NewTicker(pollEvery)
	defer tick.Stop()
	for !done() {
		if check != nil {
			if err := check(); err != nil {
				return err
			}
		}
		if m := measure(); m != last {
			last, since = m, time.Now()
		} else if time.Since(since) > stallTimeout {
			return fmt.Errorf("no progress for %v (stuck at %d)", stallTimeout, m)
		}
		<-tick.C
	}
	return nil
}

// settled reports what a client has finished with: acknowledged, dropped
// or expired.
func settled(c *client.Client) uint64 {
	st := c.Stats()
	return st.Acked + st.Dropped + st.Expired
}

// noReconnectLoop returns a check that fails once c made more than
// quietReconnects reconnects after base, while no fault is injected.
func noReconnectLoop(c *client.Client) func() error {
	base, since := c.Stats().Reconnects, time.Now()
	return func() error {
		if n := c.Stats().Reconnects - base; n > quietReconnects {
			return fmt.Errorf("reconnect loop: %d reconnects in %v with no fault injected (stats %+v)",
				n, time.Since(since).Round(time.Millisecond), c.Stats())
		}
		return nil
	}
}

// drain calls Flush and waits for it to return, failing on no progress or
// on check's error.
func drain(c *client.Client, check func() error) error {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	errc := make(chan error, 1)
	go func() { errc <- c.Flush(ctx) }()
	var ferr error
	returned := false
	err := awaitProgress(func() bool {
		select {
		case ferr = <-errc:
			returned = true
		default:
		}
		return returned
	}, func() uint64 { return settled(c) }, check)
	if err != nil {
		cancel()
		<-errc
		return fmt.Errorf("Flush did not return: %w (stats %+v)", err, c.Stats())
	}
	if ferr != nil {
		return fmt.Errorf("Flush: %w (stats %+v)", ferr, c.Stats())
	}
	return nil
}

// arrived reports whether seq is among the arrivals.
func arrived(as []testsub.Arrival, seq uint64) bool {
	for i := len(as) - 1; i >= 0; i-- {
		if as[i].Seq == seq {
			return true
		}
	}
	return false
}

// awaitArrival waits until seq arrived on topic, failing on no new arrival
// for stallTimeout or on check's error.
func awaitArrival(sub *testsub.Subscriber, topic string, seq uint64, check func() error) error {
	err := awaitProgress(func() bool { return arrived(sub.Arrivals(topic), seq) },
		func() uint64 { return uint64(sub.Count(topic)) }, check)
	if err != nil {
		return fmt.Errorf("message %d did not arrive on %s: %w", seq, topic, err)
	}
	return nil
}

// settle waits until nothing arrived on topic for quiet: after a failure,
// so that the report says what did arrive.
func settle(sub *testsub.Subscriber, topic string, quiet time.Duration) {
	last, since := sub.Count(topic), time.Now()
	tick := time.NewTicker(pollEvery)
	defer tick.Stop()
	for time.Since(since) < quiet {
		<-tick.C
		if n := sub.Count(topic); n != last {
			last, since = n, time.Now()
		}
	}
}

// sentinel publishes one last message, numbered seq and without TTL, once
// the client drained, and waits for it to be acknowledged and to arrive on
// topic at sub. By the order promise, every earlier message that is going
// to arrive has arrived before it. published reports whether Publish
// accepted it.
func sentinel(c *client.Client, sub *testsub.Subscriber, topic string, seq uint64, qos byte, check func() error) (published bool, err error) {
	if _, err := c.Publish(context.Background(), topic, payload(seq), client.PublishOptions{QoS: qos}); err != nil {
		return false, fmt.Errorf("sentinel %d: %w", seq, err)
	}
	if err := drain(c, check); err != nil {
		return true, fmt.Errorf("after the sentinel: %w", err)
	}
	return true, awaitArrival(sub, topic, seq, check)
}

// verdict collects a test's failures, to report them all at once with the
// seed.
type verdict struct {
	seed  uint64
	fails []string
}

func (v *verdict) failf(format string, args ...any) {
	v.fails = append(v.fails, fmt.Sprintf(format, args...))
}

func (v *verdict) check(t *testing.T) {
	t.Helper()
	if len(v.fails) > 0 {
		t.Fatalf("seed %d:\n  %s", v.seed, strings.Join(v.fails, "\n  "))
	}
}

// publisher publishes messages numbered 1..n on one topic from its own
// goroutine, at a steady rate, and records which ones Publish accepted.
type publisher struct {
	topic string
	n     uint64
	rate  int // messages per second; 0: as fast as Publish returns
	opts  func(seq uint64) client.PublishOptions

	gate sync.RWMutex   // held for writing while the client is replaced
	c    *client.Client // guarded by gate

	calls  atomic.Uint64 // Publish calls that returned
	cancel context.CancelFunc
	done   chan struct{}

	mu       sync.Mutex // guards the fields below
	accepted []uint64
	receipts map[uint64]*client.Receipt // by message number
	rejected int                        // ErrOutboxFull
	err      error                      // the error that stopped it, if any
}

// startPublisher starts publishing; the test's cleanup stops it.
func startPublisher(t *testing.T, c *client.Client, topic string, n uint64, rate int, opts func(seq uint64) client.PublishOptions) *publisher {
	ctx, cancel := context.WithCancel(context.Background())
	p := &publisher{topic: topic, n: n, rate: rate, opts: opts, c: c, cancel: cancel,
		done: make(chan struct{}), receipts: map[uint64]*client.Receipt{}}
	go p.run(ctx)
	t.Cleanup(p.stop)
	return p
}

func (p *publisher) run(ctx context.Context) {
	defer close(p.done)
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	start := time.Now()
	for i := uint64(1); i <= p.n; i++ {
		if p.rate > 0 {
			if d := time.Until(start.Add(time.Duration(i-1) * time.Second / time.Duration(p.rate))); d > 0 {
				timer.Reset(d)
				select {
				case <-timer.C:
				case <-ctx.Done():
					return
				}
			}
		}
		p.gate.RLock()
		r, err := p.c.Publish(ctx, p.topic, payload(i), p.opts(i))
		p.gate.RUnlock()
		p.mu.Lock()
		switch {
		case err == nil:
			p.accepted = append(p.accepted, i)
			p.receipts[i] = r
		case errors.Is(err, client.ErrOutboxFull):
			p.rejected++
		default:
			if ctx.Err() == nil {
				p.err = fmt.Errorf("publish %d: %w", i, err)
			}
		}
		stop := p.err != nil
		p.mu.Unlock()
		p.calls.Add(1)
		if stop {
			return
		}
	}
}

// swap replaces the client between two Publish calls: f gets the old one
// and returns the new one.
func (p *publisher) swap(f func(old *client.Client) *client.Client) {
	p.gate.Lock()
	defer p.gate.Unlock()
	p.c = f(p.c)
}

// client returns the client publishing now.
func (p *publisher) client() *client.Client {
	p.gate.RLock()
	defer p.gate.RUnlock()
	return p.c
}

func (p *publisher) stop() {
	p.cancel()
	<-p.done
}

func (p *publisher) finished() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// wait waits for the publisher to finish, failing on no progress.
func (p *publisher) wait() error {
	if err := awaitProgress(p.finished, p.calls.Load, nil); err != nil {
		return fmt.Errorf("publisher of %s: %w after %d calls", p.topic, err, p.calls.Load())
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.err
}

// result returns what was accepted, in order, with the receipts, and how
// many calls the outbox's limit rejected. Call it after wait.
func (p *publisher) result() (accepted []uint64, receipts map[uint64]*client.Receipt, rejected int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.accepted), p.receipts, p.rejected
}

// faultKind is one kind of injected fault. None kills a process.
type faultKind int

const (
	faultCut           faultKind = iota // reset the connection through the proxy
	faultOutage                         // cut, then refuse connections for dur
	faultRestart                        // graceful broker restart (persistence kept)
	faultClientRestart                  // Close and New on the same outbox, during an outage
)

func (k faultKind) String() string {
	return [...]string{"cut", "outage", "broker-restart", "client-restart"}[k]
}

// fault is applied once the publisher has made at calls.
type fault struct {
	at   uint64
	kind faultKind
	dur  time.Duration
}

func (f fault) String() string {
	if f.kind == faultOutage {
		return fmt.Sprintf("%d:%v(%v)", f.at, f.kind, f.dur.Round(time.Millisecond))
	}
	return fmt.Sprintf("%d:%v", f.at, f.kind)
}

// planOpts shape a fault schedule over n messages.
type planOpts struct {
	cuts          int
	outage        bool // one outage of 0.5-1.5s around 30-40% of the run
	restart       bool // one graceful broker restart around 60-70%
	clientRestart bool // one client restart around 45-50%
}

// plan draws a fault schedule from rng.
func plan(rng *rand.Rand, n uint64, o planOpts) []fault {
	var fs []fault
	for range o.cuts {
		fs = append(fs, fault{at: n/20 + rng.Uint64N(n*17/20), kind: faultCut})
	}
	if o.outage {
		fs = append(fs, fault{at: n*3/10 + rng.Uint64N(n/10), kind: faultOutage,
			dur: 500*time.Millisecond + time.Duration(rng.Int64N(int64(time.Second)))})
	}
	if o.clientRestart {
		fs = append(fs, fault{at: n*45/100 + rng.Uint64N(n/20), kind: faultClientRestart})
	}
	if o.restart {
		fs = append(fs, fault{at: n*6/10 + rng.Uint64N(n/10), kind: faultRestart})
	}
	slices.SortStableFunc(fs, func(a, b fault) int { return int(a.at) - int(b.at) })
	return fs
}

// runFaults applies each fault once the publisher has made f.at calls, in
// order, from the test goroutine. It returns when all are applied or the
// publisher stopped.
func runFaults(t *testing.T, v *verdict, pub *publisher, faults []fault, apply func(fault)) {
	t.Helper()
	t.Logf("faults: %v", faults)
	for _, f := range faults {
		err := awaitProgress(func() bool { return pub.calls.Load() >= f.at || pub.finished() }, pub.calls.Load, nil)
		if err != nil {
			t.Fatalf("seed %d: publisher before fault %v: %v", v.seed, f, err)
		}
		if pub.finished() {
			return
		}
		apply(f)
	}
}

// applyBasic applies the faults every test knows: cut, outage, broker
// restart.
func applyBasic(t *testing.T, m *testbroker.Mosquitto, p *faultproxy.Proxy, f fault) {
	t.Helper()
	switch f.kind {
	case faultCut:
		p.Cut()
	case faultOutage:
		p.Outage(f.dur)
	case faultRestart:
		m.Restart(t)
	default:
		t.Fatalf("fault %v not handled here", f)
	}
}

// trapRelay forwards TCP connections to a broker. Once armed, it lets one
// more acknowledgement of the chosen kind (PUBACK or PUBREC) through to the
// client and then freezes: nothing passes in either direction any more, so
// the client holds a message in the state that acknowledgement put it in
// (for PUBREC: its PUBREL is written and held here, and the broker never
// releases the message). Refuse then cuts every connection and refuses new
// ones: the broker is gone for this client.
type trapRelay struct {
	ln     net.Listener
	target string
	ack    byte // MQTT packet type that springs the trap
	wg     sync.WaitGroup

	mu       sync.Mutex // guards the fields below
	closed   bool
	refusing bool
	armed    bool
	frozen   bool
	conns    map[*net.TCPConn]struct{}
	trapped  uint16        // packet identifier of the acknowledgement let through
	sprung   chan struct{} // closed when the trap springs
	held     chan struct{} // closed when the client's PUBREL for trapped is held back
	heldOnce bool
}

const (
	mqttPuback = 4
	mqttPubrec = 5
	mqttPubrel = 6
)

func newTrapRelay(t *testing.T, target string, ack byte) *trapRelay {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &trapRelay{ln: ln, target: target, ack: ack, conns: map[*net.TCPConn]struct{}{},
		sprung: make(chan struct{}), held: make(chan struct{})}
	r.wg.Add(1)
	go r.accept()
	t.Cleanup(r.close)
	return r
}

func (r *trapRelay) URL() string { return "tcp://" + r.ln.Addr().String() }

// arm springs the trap at the next acknowledgement of the chosen kind.
func (r *trapRelay) arm() {
	r.mu.Lock()
	r.armed = true
	r.mu.Unlock()
}

// refuse cuts every connection and refuses new ones from now on.
func (r *trapRelay) refuse() {
	r.mu.Lock()
	r.refusing = true
	for c := range r.conns {
		reset(c)
	}
	r.mu.Unlock()
}

func (r *trapRelay) close() {
	r.mu.Lock()
	r.closed = true
	for c := range r.conns {
		reset(c)
	}
	r.mu.Unlock()
	_ = r.ln.Close()
	r.wg.Wait()
}

func reset(c *net.TCPConn) {
	_ = c.SetLinger(0)
	_ = c.Close()
}

func (r *trapRelay) accept() {
	defer r.wg.Done()
	for {
		c, err := r.ln.Accept()
		if err != nil {
			return
		}
		client := c.(*net.TCPConn)
		r.mu.Lock()
		if r.refusing || r.closed {
			r.mu.Unlock()
			reset(client)
			continue
		}
		r.conns[client] = struct{}{}
		r.wg.Add(1)
		r.mu.Unlock()
		go r.serve(client)
	}
}

func (r *trapRelay) serve(client *net.TCPConn) {
	defer r.wg.Done()
	defer func() {
		r.mu.Lock()
		delete(r.conns, client)
		r.mu.Unlock()
		reset(client)
	}()
	uc, err := net.DialTimeout("tcp", r.target, 5*time.Second)
	if err != nil {
		return
	}
	broker := uc.(*net.TCPConn)
	r.mu.Lock()
	if r.refusing || r.closed {
		r.mu.Unlock()
		reset(broker)
		return
	}
	r.conns[broker] = struct{}{}
	r.mu.Unlock()
	defer func() {
		r.mu.Lock()
		delete(r.conns, broker)
		r.mu.Unlock()
		reset(broker)
	}()
	up := make(chan struct{})
	go func() {
		defer close(up)
		r.pump(client, broker, r.upstream)
		reset(broker)
	}()
	r.pump(broker, client, r.downstream)
	reset(client)
	<-up
}

// pump copies packets from src to dst through filter, which returns the
// packets that may pass.
func (r *trapRelay) pump(src, dst net.Conn, filter func([][]byte) [][]byte) {
	var f framer
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			var out []byte
			for _, pkt := range filter(f.feed(buf[:n])) {
				out = append(out, pkt...)
			}
			if len(out) > 0 {
				if _, werr := dst.Write(out); werr != nil {
					return
				}
			}
		}
		if err != nil {
			return
		}
	}
}

// downstream (broker to client) springs the trap.
func (r *trapRelay) downstream(pkts [][]byte) [][]byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	var pass [][]byte
	for _, pkt := range pkts {
		if r.frozen {
			break
		}
		pass = append(pass, pkt)
		if r.armed && pkt[0]>>4 == r.ack {
			// Frozen before the acknowledgement is written: whatever the
			// client answers is held back.
			r.frozen = true
			r.trapped = packetID(pkt)
			close(r.sprung)
		}
	}
	return pass
}

// upstream (client to broker) holds everything back once frozen.
func (r *trapRelay) upstream(pkts [][]byte) [][]byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.frozen {
		return pkts
	}
	for _, pkt := range pkts {
		if pkt[0]>>4 == mqttPubrel && packetID(pkt) == r.trapped && !r.heldOnce {
			r.heldOnce = true
			close(r.held)
		}
	}
	return nil
}

// packetID reads the identifier of a PUBACK, PUBREC, PUBREL or PUBCOMP.
func packetID(pkt []byte) uint16 {
	_, hdr, _ := packetLen(pkt)
	if len(pkt) < hdr+2 {
		return 0
	}
	return uint16(pkt[hdr])<<8 | uint16(pkt[hdr+1])
}

// framer splits a byte stream into MQTT packets.
type framer struct{ buf []byte }

// feed adds b and returns the packets it completes.
func (f *framer) feed(b []byte) [][]byte {
	f.buf = append(f.buf, b...)
	var out [][]byte
	for {
		n, _, ok := packetLen(f.buf)
		if !ok {
			break
		}
		out = append(out, f.buf[:n:n])
		f.buf = f.buf[n:]
	}
	f.buf = append([]byte(nil), f.buf...) // the packets returned keep the old array
	return out
}

// packetLen returns the length of the packet at the front of b and of its
// fixed header, if b holds all of it.
func packetLen(b []byte) (n, hdr int, ok bool) {
	rem, mul := 0, 1
	for i := 1; i <= 4; i++ {
		if len(b) <= i {
			return 0, 0, false
		}
		rem += int(b[i]&0x7f) * mul
		mul *= 128
		if b[i]&0x80 == 0 {
			hdr = i + 1
			return hdr + rem, hdr, len(b) >= hdr+rem
		}
	}
	return 0, 0, false // malformed: more than 4 length bytes
}
