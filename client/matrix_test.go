package client_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/holdfast-mqtt/holdfast/client"
	"github.com/holdfast-mqtt/holdfast/internal/faultproxy"
	"github.com/holdfast-mqtt/holdfast/internal/testbroker"
	"github.com/holdfast-mqtt/holdfast/internal/testsub"
	"github.com/holdfast-mqtt/holdfast/outbox"
)

// The promise in every configuration (issue 10): the same faults (cuts, an
// outage, a graceful broker restart; no process is killed) against each
// kind of outbox and each QoS. Every wait fails on no progress for
// stallTimeout, never on a total budget; the seed of each run's randomness
// is logged and repeated in every failure (HOLDFAST_SEED repeats a run).

// outboxKind is one row of the matrix.
type outboxKind struct {
	name       string
	durable    bool // OutboxDir set: Badger, persistent session
	persistent bool // in memory, with PersistentSession
}

var (
	durableOutbox    = outboxKind{name: "durable", durable: true}
	memoryOutbox     = outboxKind{name: "memory"} // the default session: clean
	persistentMemory = outboxKind{name: "memory-persistent", persistent: true}
	matrixOutboxes   = []outboxKind{durableOutbox, memoryOutbox}
)

func (o outboxKind) config(t *testing.T, cfg client.Config) client.Config {
	if o.durable {
		cfg.OutboxDir = t.TempDir()
	}
	cfg.PersistentSession = o.persistent
	return cfg
}

// keepsSession reports whether the broker keeps this client's session, which
// QoS 2's exactly-once depends on.
func (o outboxKind) keepsSession() bool { return o.durable || o.persistent }

func qosOf(q byte) func(uint64) client.PublishOptions {
	return func(uint64) client.PublishOptions { return client.PublishOptions{QoS: q} }
}

// TestMatrixFaultsLoseNothing publishes 3,000 messages at a steady rate
// through cuts, an outage and a graceful broker restart, with a durable and
// with an in-memory outbox (default session), at QoS 1 and 2: nothing lost,
// first arrivals in order, Flush returns, Acked == Accepted.
func TestMatrixFaultsLoseNothing(t *testing.T) {
	const n, rate = 3000, 300
	const topic = "matrix/faults"
	for _, ob := range matrixOutboxes {
		for _, qos := range []byte{1, 2} {
			t.Run(fmt.Sprintf("%s/qos%d", ob.name, qos), func(t *testing.T) {
				seed, rng := matrixRand(t)
				v := &verdict{seed: seed}
				m, p := rig(t, testbroker.MosquittoOptions{})
				sub := subscriber(t, m, topic)
				c := newClient(t, ob.config(t, client.Config{Brokers: []string{p.URL()}, ClientID: "faults"}))
				pub := startPublisher(t, c, topic, n, rate, qosOf(qos))
				runFaults(t, v, pub, plan(rng, n, planOpts{cuts: 10, outage: true, restart: true}),
					func(f fault) { applyBasic(t, m, p, f) })
				if err := pub.wait(); err != nil {
					t.Fatalf("seed %d: %v", seed, err)
				}
				accepted, _, _ := pub.result()
				accepted = finish(c, sub, topic, n+1, qos, accepted, v)

				rep := testsub.Check(accepted, sub.Arrivals(topic))
				st := c.Stats()
				t.Logf("accepted %d, received %d, lost %d, reordered %d, duplicates %d; proxy cuts %d; stats %+v",
					rep.Accepted, rep.Received, len(rep.Lost), len(rep.Reordered), len(rep.Duplicates), p.Stats().Cuts, st)
				reportArrivals(v, "", rep, qos == 1 || !ob.keepsSession())
				if st.Acked != st.Accepted || st.Dropped != 0 || st.Expired != 0 || st.Queued != 0 {
					v.failf("stats inconsistent: Accepted %d Acked %d Dropped %d Expired %d Queued %d Inflight %d",
						st.Accepted, st.Acked, st.Dropped, st.Expired, st.Queued, st.Inflight)
				}
				v.check(t)
			})
		}
	}
}

// finish drains the client and sends a sentinel (see sentinel). It returns
// accepted with the sentinel added if it was accepted; failures go to v.
// After a failed drain it waits for arrivals to settle, so that the report
// says what got through.
func finish(c *client.Client, sub *testsub.Subscriber, topic string, last uint64, qos byte, accepted []uint64, v *verdict) []uint64 {
	loop := noReconnectLoop(c)
	if err := drain(c, loop); err != nil {
		v.failf("%v", err)
		settle(sub, topic, 3*time.Second)
		return accepted
	}
	published, err := sentinel(c, sub, topic, last, qos, loop)
	if err != nil {
		v.failf("%v", err)
		settle(sub, topic, 3*time.Second)
	}
	if published {
		accepted = append(accepted, last)
	}
	return accepted
}

// reportArrivals adds a subscriber report's loss, reordering, unexpected
// messages and (unless allowed) duplicates to v.
func reportArrivals(v *verdict, what string, rep testsub.Report, allowDup bool) {
	if len(rep.Lost) > 0 {
		v.failf("%slost %d of %d accepted: %v", what, len(rep.Lost), rep.Accepted, head(rep.Lost))
	}
	if len(rep.Reordered) > 0 {
		v.failf("%sreordered %d: %v", what, len(rep.Reordered), head(rep.Reordered))
	}
	if len(rep.Unexpected) > 0 {
		v.failf("%sunexpected %d: %v", what, len(rep.Unexpected), head(rep.Unexpected))
	}
	if !allowDup && len(rep.Duplicates) > 0 {
		v.failf("%sduplicates %d: %v", what, len(rep.Duplicates), rep.Duplicates)
	}
}

// TestMatrixBoundedDeliveredOrDropped bounds the outbox by a short TTL
// (5-20 ms a message, so messages expire while in flight) and, separately,
// by MaxQueued with drop-oldest, under cuts and a short outage. Every
// accepted message must be exactly one of delivered (the subscriber saw it)
// or reported dropped (its receipt's error wraps ErrDropped and OnDrop was
// called for its seq); Flush returns; no reconnect loop once faults stop.
func TestMatrixBoundedDeliveredOrDropped(t *testing.T) {
	const n, rate = 4000, 1000
	const topic = "matrix/bounded"
	bounds := []struct {
		name string
		cfg  client.Config
		ttl  bool
	}{
		{name: "ttl", ttl: true},
		{name: "dropoldest", cfg: client.Config{MaxQueued: 200, Overflow: outbox.OverflowDropOldest}},
	}
	for _, b := range bounds {
		for _, ob := range matrixOutboxes {
			for _, qos := range []byte{1, 2} {
				t.Run(fmt.Sprintf("%s/%s/qos%d", b.name, ob.name, qos), func(t *testing.T) {
					seed, rng := matrixRand(t)
					v := &verdict{seed: seed}
					m, p := rig(t, testbroker.MosquittoOptions{})
					sub := subscriber(t, m, topic)

					var hookMu sync.Mutex
					hooked := map[uint64]int{} // outbox seq -> OnDrop calls
					var badReason []error
					cfg := b.cfg
					cfg.Brokers, cfg.ClientID = []string{p.URL()}, "bounded"
					cfg.Hooks.OnDrop = func(seq uint64, reason error) {
						hookMu.Lock()
						defer hookMu.Unlock()
						hooked[seq]++
						if !errors.Is(reason, client.ErrDropped) {
							badReason = append(badReason, reason)
						}
					}
					c := newClient(t, ob.config(t, cfg))

					ttlRng := rand.New(rand.NewPCG(seed, 2)) // the publisher goroutine's alone
					opts := func(uint64) client.PublishOptions {
						o := client.PublishOptions{QoS: qos}
						if b.ttl {
							o.TTL = 5*time.Millisecond + time.Duration(ttlRng.Int64N(int64(16*time.Millisecond)))
						}
						return o
					}
					pub := startPublisher(t, c, topic, n, rate, opts)
					runFaults(t, v, pub, plan(rng, n, planOpts{cuts: 12, outage: true}),
						func(f fault) { applyBasic(t, m, p, f) })
					if err := pub.wait(); err != nil {
						t.Fatalf("seed %d: %v", seed, err)
					}
					accepted, receipts, rejected := pub.result()
					withSentinel := finish(c, sub, topic, n+1, qos, accepted, v)

					// Reported dropped, by message number: through the receipt and
					// through the hook (which names the outbox seq).
					msgOf := make(map[uint64]uint64, len(receipts))
					for msg, r := range receipts {
						msgOf[r.Seq()] = msg
					}
					byReceipt := map[uint64]bool{}
					var notDone, otherErr []uint64
					for _, msg := range accepted {
						r := receipts[msg]
						select {
						case <-r.Done():
						default:
							notDone = append(notDone, msg)
							continue
						}
						switch err := r.Err(); {
						case err == nil:
						case errors.Is(err, client.ErrDropped):
							byReceipt[msg] = true
						default:
							otherErr = append(otherErr, msg)
						}
					}
					hookMu.Lock()
					byHook := map[uint64]bool{}
					var unknownSeqs, repeated int
					for seq, k := range hooked {
						msg, ok := msgOf[seq]
						if !ok {
							unknownSeqs++
							continue
						}
						byHook[msg] = true
						if k > 1 {
							repeated++
						}
					}
					reasons := badReason
					hookMu.Unlock()

					arrivals := sub.Arrivals(topic)
					delivered := map[uint64]bool{}
					for _, a := range arrivals {
						delivered[a.Seq] = true
					}
					var both, neither, disagree, kept []uint64
					for _, msg := range accepted {
						dropped := byReceipt[msg] || byHook[msg]
						if byReceipt[msg] != byHook[msg] {
							disagree = append(disagree, msg)
						}
						switch {
						case dropped && delivered[msg]:
							both = append(both, msg)
						case !dropped && !delivered[msg]:
							neither = append(neither, msg)
						case !dropped:
							kept = append(kept, msg)
						}
					}
					if len(withSentinel) > len(accepted) {
						kept = append(kept, n+1)
					}
					rep := testsub.Check(kept, arrivals)
					st := c.Stats()
					t.Logf("accepted %d (rejected %d), delivered %d, dropped %d by receipt, %d by hook; both %d, neither %d; proxy cuts %d; stats %+v",
						len(accepted), rejected, len(delivered), len(byReceipt), len(byHook), len(both), len(neither), p.Stats().Cuts, st)
					if len(both) > 0 {
						v.failf("delivered and reported dropped: %d %v", len(both), head(both))
					}
					if len(neither) > 0 {
						v.failf("neither delivered nor reported dropped (lost): %d %v", len(neither), head(neither))
					}
					if len(disagree) > 0 {
						v.failf("receipt and OnDrop disagree: %d %v", len(disagree), head(disagree))
					}
					if len(notDone) > 0 || len(otherErr) > 0 {
						v.failf("receipts not completed %d %v, completed with another error %d %v", len(notDone), head(notDone), len(otherErr), head(otherErr))
					}
					if unknownSeqs > 0 || repeated > 0 || len(reasons) > 0 {
						v.failf("OnDrop: %d calls for seqs no receipt names, %d seqs reported more than once, reasons not wrapping ErrDropped: %v",
							unknownSeqs, repeated, reasons[:min(len(reasons), 3)])
					}
					if len(rep.Reordered) > 0 {
						v.failf("delivered messages reordered: %d %v", len(rep.Reordered), head(rep.Reordered))
					}
					if st.Acked+st.Dropped+st.Expired != st.Accepted {
						v.failf("stats: Acked %d + Dropped %d + Expired %d != Accepted %d (Sent %d)",
							st.Acked, st.Dropped, st.Expired, st.Accepted, st.Sent)
					}
					v.check(t)
				})
			}
		}
	}
}

// TestMatrixPublishWhileSubscribed publishes to topic A from a client that
// is also subscribed to topic B, which another client feeds, through cuts,
// an outage and a graceful broker restart after which the application
// subscribes again. With a durable outbox the client is also restarted
// (Close, New on the same outbox) during an outage, and subscribes again
// and again while it reconnects, so SUBSCRIBEs meet the resume of messages
// left in flight (paho deletes "o.<id>" on SUBACK as on PUBACK). Nothing
// published to A is lost or reordered, and every message on B reaches the
// handler at least once.
func TestMatrixPublishWhileSubscribed(t *testing.T) {
	const n, rate = 2000, 250
	const topicA, topicB = "matrix/pubsub/a", "matrix/pubsub/b"
	mixed := func(i uint64) client.PublishOptions { return client.PublishOptions{QoS: byte(1 + i%2)} }
	rows := []struct {
		name          string
		ob            outboxKind
		opts          func(uint64) client.PublishOptions
		qos           byte // of the subscription, of B, and of the sentinel
		allowDup      bool // on A: some of it is QoS 1
		restartClient bool
	}{
		{"durable/qos1", durableOutbox, qosOf(1), 1, true, true},
		{"durable/qos2", durableOutbox, qosOf(2), 2, false, true},
		{"durable/mixed", durableOutbox, mixed, 2, true, true},
		{"memory-persistent/qos1", persistentMemory, qosOf(1), 1, true, false},
		{"memory-persistent/qos2", persistentMemory, qosOf(2), 2, false, false},
	}
	for _, row := range rows {
		t.Run(row.name, func(t *testing.T) {
			seed, rng := matrixRand(t)
			v := &verdict{seed: seed}
			// A window wider than the default, so that a client restart leaves
			// many messages to resume.
			m, p := rig(t, testbroker.MosquittoOptions{MaxInflightMessages: 100})
			sub := subscriber(t, m, topicA, topicB) // independent: what the broker delivered

			var hmu sync.Mutex
			handled := map[uint64]int{}
			handler := func(_ context.Context, msg client.Message) error {
				hmu.Lock()
				handled[testsub.SeqOf(msg.Payload)]++
				hmu.Unlock()
				return nil
			}
			handledCount := func() uint64 { hmu.Lock(); defer hmu.Unlock(); return uint64(len(handled)) }
			cfg := row.ob.config(t, client.Config{
				Brokers: []string{p.URL()}, ClientID: "pubsub", MaxInflightQoS2: 100,
				Subscriptions: []client.Subscription{{Filter: topicB, QoS: row.qos, Handler: handler}},
			})
			c := newClient(t, cfg)
			ctx, cancel := context.WithTimeout(context.Background(), stallTimeout)
			defer cancel()
			if err := c.AwaitConnected(ctx); err != nil { // subscribed before B is fed
				t.Fatalf("seed %d: %v", seed, err)
			}
			feeder := newClient(t, client.Config{Brokers: []string{m.URL()}, ClientID: "feeder", OutboxDir: t.TempDir()})
			feed := startPublisher(t, feeder, topicB, n, rate, qosOf(row.qos))
			pub := startPublisher(t, c, topicA, n, rate, row.opts)

			resubscribe := func(c *client.Client) {
				ctx, cancel := context.WithTimeout(context.Background(), stallTimeout)
				defer cancel()
				if err := c.Subscribe(ctx, topicB, row.qos, handler); err != nil {
					t.Logf("subscribe again: %v", err)
				}
			}
			runFaults(t, v, pub, plan(rng, n, planOpts{cuts: 10, outage: true, restart: true, clientRestart: row.restartClient}),
				func(f fault) {
					switch f.kind {
					case faultRestart:
						m.Restart(t)
						resubscribe(pub.client())
					case faultClientRestart:
						restartWhileSubscribing(t, v, pub, p, cfg, topicB, row.qos, handler)
					default:
						applyBasic(t, m, p, f)
					}
				})
			if err := pub.wait(); err != nil {
				t.Fatalf("seed %d: %v", seed, err)
			}
			if err := feed.wait(); err != nil {
				t.Fatalf("seed %d: feeder: %v", seed, err)
			}
			c = pub.client()

			accepted, _, _ := pub.result()
			accepted = finish(c, sub, topicA, n+1, row.qos, accepted, v)
			rep := testsub.Check(accepted, sub.Arrivals(topicA))
			reportArrivals(v, "A: ", rep, row.allowDup)

			// B: every message the feeder got acknowledged reaches the handler.
			if err := drain(feeder, nil); err != nil {
				v.failf("feeder: %v", err)
			}
			fed, _, _ := feed.result()
			all := func() bool {
				hmu.Lock()
				defer hmu.Unlock()
				for _, s := range fed {
					if handled[s] == 0 {
						return false
					}
				}
				return true
			}
			if err := awaitProgress(all, handledCount, nil); err != nil {
				v.failf("B: handler: %v", err)
			}
			atSub := map[uint64]bool{}
			for _, a := range sub.Arrivals(topicB) {
				atSub[a.Seq] = true
			}
			var missed, missedBoth []uint64
			hmu.Lock()
			for _, s := range fed {
				switch {
				case handled[s] > 0:
				case atSub[s]:
					missed = append(missed, s)
				default:
					missedBoth = append(missedBoth, s)
				}
			}
			hmu.Unlock()
			if len(missed) > 0 {
				v.failf("B: %d of %d never reached the handler though the broker delivered them to another subscriber: %v", len(missed), len(fed), head(missed))
			}
			if len(missedBoth) > 0 {
				v.failf("B: %d of %d reached neither the handler nor the independent subscriber: %v", len(missedBoth), len(fed), head(missedBoth))
			}
			t.Logf("A: accepted %d received %d duplicates %d; B: fed %d handled %d; proxy cuts %d; stats %+v",
				rep.Accepted, rep.Received, len(rep.Duplicates), len(fed), handledCount(), p.Stats().Cuts, c.Stats())
			v.check(t)
		})
	}
}

// restartWhileSubscribing fills the in-flight window behind a black hole,
// cuts, and while the broker stays unreachable closes the publisher's
// client, leaving messages in flight in its durable outbox. It opens a new
// client on the same outbox and subscribes again and again, from several
// goroutines, while that one reconnects and resumes: a SUBSCRIBE issued
// during the resume takes a packet identifier that a resumed message is
// about to claim.
func restartWhileSubscribing(t *testing.T, v *verdict, pub *publisher, p *faultproxy.Proxy, cfg client.Config, filter string, qos byte, h client.Handler) {
	t.Helper()
	old := pub.client()
	p.SetBlackhole(true)
	from := pub.calls.Load()
	full := func() bool {
		return old.Stats().Inflight >= 50 || pub.calls.Load() >= from+200 || pub.finished()
	}
	if err := awaitProgress(full, pub.calls.Load, nil); err != nil {
		t.Fatalf("seed %d: publisher behind the black hole: %v", v.seed, err)
	}
	inflight := old.Stats().Inflight
	p.SetRefuse(true)
	p.SetBlackhole(false)
	backlog := pub.calls.Load() + 50
	if err := awaitProgress(func() bool { return pub.calls.Load() >= backlog || pub.finished() }, pub.calls.Load, nil); err != nil {
		t.Fatalf("seed %d: publisher during the outage: %v", v.seed, err)
	}
	var next *client.Client
	pub.swap(func(old *client.Client) *client.Client {
		// Close as at a shutdown: a short drain, the rest stays on disk.
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		defer cancel()
		if err := old.Close(ctx); err != nil && !errors.Is(err, client.ErrNotDrained) {
			v.failf("Close before the client restart: %v", err)
		}
		next = newClient(t, cfg)
		return next
	})
	hctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var calls atomic.Int64
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tick := time.NewTicker(time.Millisecond)
			defer tick.Stop()
			for hctx.Err() == nil {
				_ = next.Subscribe(hctx, filter, qos, h)
				calls.Add(1)
				select {
				case <-tick.C:
				case <-hctx.Done():
				}
			}
		}()
	}
	p.SetRefuse(false)
	// Subscribing goes on until the new client has had 50 acknowledgements:
	// by then it has resumed what the old one left in flight.
	err := awaitProgress(func() bool { return next.Stats().Acked >= 50 || pub.finished() }, func() uint64 { return next.Stats().Acked + pub.calls.Load() }, nil)
	stop()
	wg.Wait()
	t.Logf("client restart: %d in flight at the cut, %d Subscribe calls while the new client reconnected", inflight, calls.Load())
	if err != nil {
		t.Fatalf("seed %d: client after restart: %v (stats %+v)", v.seed, err, next.Stats())
	}
}

// TestMatrixFailoverToBrokerWithoutSession publishes through a failover from
// a broker that holds the client's session to one that never saw it. The
// first broker's relay lets one more acknowledgement through (PUBACK; for
// QoS 2 a PUBREC, so the client sends its PUBREL, which is held back and
// never reaches the broker), then freezes and refuses: the client fails
// over to the second broker, which answers SessionPresent=0. Every
// unacknowledged message must go again as a new PUBLISH (QoS 2 from the
// first phase: a PUBREL alone would be completed by a broker that never had
// the message). A subscriber on each broker: the union holds every accepted
// message, each broker's first arrivals in order.
func TestMatrixFailoverToBrokerWithoutSession(t *testing.T) {
	const n, rate = 3000, 300
	const topic = "matrix/failover"
	for _, ob := range matrixOutboxes {
		for _, qos := range []byte{1, 2} {
			t.Run(fmt.Sprintf("%s/qos%d", ob.name, qos), func(t *testing.T) {
				seed, rng := matrixRand(t)
				v := &verdict{seed: seed}
				m1 := testbroker.StartMosquitto(t, testbroker.MosquittoOptions{})
				m2 := testbroker.StartMosquitto(t, testbroker.MosquittoOptions{})
				ack := byte(mqttPuback)
				if qos == 2 {
					ack = mqttPubrec
				}
				relay := newTrapRelay(t, m1.Addr(), ack)
				sub1, sub2 := subscriber(t, m1, topic), subscriber(t, m2, topic)
				c := newClient(t, ob.config(t, client.Config{Brokers: []string{relay.URL(), m2.URL()}, ClientID: "failover"}))
				pub := startPublisher(t, c, topic, n, rate, qosOf(qos))

				armAt := n*3/10 + rng.Uint64N(n/5)
				t.Logf("trap armed after %d messages", armAt)
				moving := func() uint64 { return settled(c) + pub.calls.Load() }
				if err := awaitProgress(func() bool { return pub.calls.Load() >= armAt || pub.finished() }, pub.calls.Load, nil); err != nil {
					t.Fatalf("seed %d: publisher: %v", seed, err)
				}
				relay.arm()
				if err := awaitProgress(func() bool { return closed(relay.sprung) }, moving, nil); err != nil {
					t.Fatalf("seed %d: the trap never sprang: %v (stats %+v)", seed, err, c.Stats())
				}
				if qos == 2 {
					if err := awaitProgress(func() bool { return closed(relay.held) }, moving, nil); err != nil {
						t.Fatalf("seed %d: no PUBREL for the trapped PUBREC %d: %v", seed, relay.trapped, err)
					}
				}
				relay.refuse()
				if err := pub.wait(); err != nil {
					t.Fatalf("seed %d: %v", seed, err)
				}
				accepted, _, _ := pub.result()
				accepted = finish(c, sub2, topic, n+1, qos, accepted, v)
				settle(sub1, topic, 2*time.Second)

				a1, a2 := sub1.Arrivals(topic), sub2.Arrivals(topic)
				union := map[uint64]bool{}
				both := 0
				for _, a := range a1 {
					union[a.Seq] = true
				}
				for _, a := range a2 {
					if union[a.Seq] {
						both++
					}
					union[a.Seq] = true
				}
				var lost []uint64
				for _, s := range accepted {
					if !union[s] {
						lost = append(lost, s)
					}
				}
				r1, r2 := testsub.Check(accepted, a1), testsub.Check(accepted, a2)
				st := c.Stats()
				relay.mu.Lock()
				trapped := relay.trapped
				relay.mu.Unlock()
				t.Logf("trapped packet id %d; accepted %d; broker 1 received %d, broker 2 received %d (first arrival %v), on both %d; stats %+v",
					trapped, len(accepted), len(a1), len(a2), firstSeq(a2), both, st)
				if len(lost) > 0 {
					v.failf("lost %d of %d (on neither broker): %v", len(lost), len(accepted), head(lost))
				}
				strict := qos == 2 && ob.keepsSession()
				for i, r := range []testsub.Report{r1, r2} {
					if len(r.Reordered) > 0 {
						v.failf("broker %d: reordered %d %v", i+1, len(r.Reordered), head(r.Reordered))
					}
					if len(r.Unexpected) > 0 {
						v.failf("broker %d: unexpected %d %v", i+1, len(r.Unexpected), head(r.Unexpected))
					}
					if strict && len(r.Duplicates) > 0 {
						v.failf("broker %d: QoS 2 duplicates %v", i+1, r.Duplicates)
					}
				}
				if st.Broker != m2.URL() {
					v.failf("connected to %q at the end, want the second broker %q", st.Broker, m2.URL())
				}
				v.check(t)
			})
		}
	}
}

func closed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

func firstSeq(as []testsub.Arrival) any {
	if len(as) == 0 {
		return "none"
	}
	return as[0].Seq
}

// TestMatrixPublishCancelledContextAcceptsNothing checks that Publish with a
// context already done fails at once with the context's error and accepts
// nothing: Stats().Accepted and the outbox unchanged, no receipt.
func TestMatrixPublishCancelledContextAcceptsNothing(t *testing.T) {
	const topic = "matrix/cancelled"
	for _, ob := range matrixOutboxes {
		for _, qos := range []byte{1, 2} {
			t.Run(fmt.Sprintf("%s/qos%d", ob.name, qos), func(t *testing.T) {
				c := newOffline(t, ob.config(t, client.Config{}))
				for i := uint64(1); i <= 10; i++ {
					if _, err := c.Publish(context.Background(), topic, payload(i), client.PublishOptions{QoS: qos}); err != nil {
						t.Fatalf("publish %d: %v", i, err)
					}
				}
				before := c.Stats()
				cancelled, cancel := context.WithCancel(context.Background())
				cancel()
				expired, cancel2 := context.WithDeadline(context.Background(), time.Now().Add(-time.Second))
				defer cancel2()
				var wrong []string
				for i := uint64(11); i <= 60; i++ {
					ctx := cancelled
					if i%2 == 0 {
						ctx = expired
					}
					r, err := c.Publish(ctx, topic, payload(i), client.PublishOptions{QoS: qos})
					if r != nil || !errors.Is(err, ctx.Err()) {
						wrong = append(wrong, fmt.Sprintf("%d: receipt %v, err %v (want %v)", i, r != nil, err, ctx.Err()))
					}
				}
				after := c.Stats()
				if len(wrong) > 0 || after.Accepted != before.Accepted || after.Queued != before.Queued {
					t.Fatalf("Accepted %d -> %d, Queued %d -> %d; %d of 50 calls wrong, first: %v",
						before.Accepted, after.Accepted, before.Queued, after.Queued, len(wrong), wrong[:min(len(wrong), 3)])
				}
			})
		}
	}
}
