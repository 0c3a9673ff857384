package client

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/eclipse/paho.mqtt.golang/packets"

	"github.com/holdfast-mqtt/holdfast/outbox"
	"github.com/holdfast-mqtt/holdfast/reconnect"
)

// flight is a message handed to paho and not yet acknowledged.
type flight struct {
	seq     uint64
	id      uint16
	qos     byte
	phase   outbox.Phase           // PhaseSent, or PhaseReleased once the PUBREL is due
	pkt     *packets.PublishPacket // the flight's own copy, never handed to paho (Get copies it)
	claimed bool                   // paho's identifier table holds id (false for a PUBREL replayed after a restart)
	gen     uint64                 // the connection the first send was meant for
	batch   *stateBatch            // durability of the latest QoS 2 state; nil once known durable
	relSent bool                   // QoS 2: a PUBREL was written (the broker may forward it now)
}

// dispatcher moves records from the outbox to paho in order, within the
// in-flight window, and removes them on the broker's acknowledgement. It
// is also paho's Store (store.go).
type dispatcher struct {
	q       outbox.Queue
	persist *persister
	in      *inLedger // inbound QoS 2 identifiers handled, PUBREL not yet arrived (inledger.go)
	log     *slog.Logger
	hooks   Hooks
	stats   *counters
	maxFly  int
	maxQoS2 int
	// clean: paho connects with clean-session=true, so at every connection
	// it forgets what was in flight instead of resuming it (sessionGone).
	clean bool

	kick chan struct{} // capacity 1: the window or a barrier changed
	rc   *registry     // the receipts: outcomes are reported there

	mu           sync.Mutex // guards every field below
	flights      map[uint16]*flight
	other        map[string]packets.ControlPacket // subscribe/unsubscribe and inbound packets
	pending      *outbox.Record                   // the record inside paho.Publish right now
	inflight     int                              // len(flights)
	inflightQoS2 int                              // QoS 2 flights
	unreleased   int                              // QoS 2 flights whose PUBREL was not written yet
	unclaimed    int                              // flights whose identifier paho does not hold
	cursor       uint64                           // highest seq handed to paho (or resumed from disk)
	gen          uint64                           // connection generation: incremented at every dial
	// acksIn holds, per identifier, the kinds of the acknowledgements of
	// outbound packets read on this connection that paho has not yet
	// answered with Del("o.<id>"), oldest first: paho deletes that key on
	// SUBACK and UNSUBACK too, and only a PUBACK (QoS 1) or PUBCOMP
	// (QoS 2) retires a message.
	acksIn map[uint16]ackKinds
}

// ackKinds is a short FIFO of acknowledgement kinds, held in the map's
// value itself so that recording one allocates nothing.
type ackKinds struct {
	n uint8
	k [7]byte
}

type counters struct {
	accepted, sent, acked, dropped, expired, connects, reconnects, resent, suppressed atomic.Uint64
}

func newDispatcher(cfg *Config, st *counters) *dispatcher {
	return &dispatcher{
		log:     cfg.Logger,
		hooks:   cfg.Hooks,
		stats:   st,
		in:      newMemLedger(),
		maxFly:  cfg.MaxInflight,
		maxQoS2: cfg.MaxInflightQoS2,
		clean:   !cfg.persistentSession(),
		kick:    make(chan struct{}, 1),
		flights: map[uint16]*flight{},
		other:   map[string]packets.ControlPacket{},
		rc:      newRegistry(),
		acksIn:  map[uint16]ackKinds{},
	}
}

// attach gives the dispatcher its outbox, once open.
func (d *dispatcher) attach(q outbox.Queue) {
	d.q = q
	d.persist = newPersister(q)
}

func (d *dispatcher) signal() {
	select {
	case d.kick <- struct{}{}:
	default:
	}
}

func (d *dispatcher) addFlight(f *flight) {
	d.flights[f.id] = f
	d.inflight++
	if f.qos == 2 {
		d.inflightQoS2++
		if f.phase == outbox.PhaseSent {
			d.unreleased++
		} else {
			f.relSent = true // loaded after a restart: the PUBREL goes first on connect
		}
	}
	if !f.claimed {
		d.unclaimed++
	}
	if f.seq > d.cursor {
		d.cursor = f.seq
	}
}

// ackLocked retires a flight on PUBACK/PUBCOMP. The caller removes the
// record from the outbox after unlocking (see acked), so that no outbox
// lock is ever taken under d.mu.
func (d *dispatcher) ackLocked(f *flight) {
	delete(d.flights, f.id)
	d.inflight--
	if f.qos == 2 {
		d.inflightQoS2--
		if !f.relSent {
			d.unreleased--
		}
	}
	if !f.claimed {
		d.unclaimed--
	}
	d.rc.finish(f.seq, nil)
	d.stats.acked.Add(1)
}

// retire removes an acknowledged record and reports it. Called without d.mu.
func (d *dispatcher) retire(seq uint64) {
	if err := d.q.Remove(seq); err != nil {
		d.log.Error("holdfast: removing acknowledged record", "seq", seq, "err", err)
	}
	// Flush checks the outbox's length: wake it again now that the record
	// is gone (the wake-up at the acknowledgement came before the Remove).
	d.rc.broadcast()
	if d.hooks.OnAck != nil {
		d.hooks.OnAck(seq)
	}
	d.signal()
}

// dialed starts a new connection generation and returns it.
func (d *dispatcher) dialed() uint64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.gen++
	clear(d.acksIn) // paho answered, or dropped with the connection, every one read before
	return d.gen
}

// acksRead records acknowledgements read from the wire, before paho sees
// them (see acksIn).
func (d *dispatcher) acksRead(acks []ackRead) {
	d.mu.Lock()
	for _, a := range acks {
		q := d.acksIn[a.id]
		if int(q.n) == len(q.k) {
			// Never seen: that many unanswered acknowledgements under one
			// identifier. The oldest goes; a message it would have retired
			// stays in flight and is sent again (at least once).
			copy(q.k[:], q.k[1:])
			q.n--
		}
		q.k[q.n] = a.ptype
		q.n++
		d.acksIn[a.id] = q
	}
	d.mu.Unlock()
}

// takeAckLocked returns the kind of the oldest acknowledgement of id read
// and not yet answered by paho, or 0.
func (d *dispatcher) takeAckLocked(id uint16) byte {
	q, ok := d.acksIn[id]
	if !ok {
		return 0
	}
	k := q.k[0]
	if q.n == 1 {
		delete(d.acksIn, id)
	} else {
		copy(q.k[:], q.k[1:q.n])
		q.n--
		d.acksIn[id] = q
	}
	return k
}

// sessionGone is called when the broker answers a connection with
// SessionPresent=0, before paho acts on the CONNACK: the broker holds no
// state for any packet identifier of this client (a clean session, a
// broker restarted without persistence, a failover to another broker).
// Every message in flight must reach it again as a new PUBLISH, in order.
//
// With clean-session=false paho resumes the Store's flights in order: a
// QoS 2 message whose PUBREC was recorded goes back to its first phase
// (its PUBLISH, durably recorded again before it is written), since a
// PUBREL would be answered with PUBCOMP for a message the broker never
// had. With clean-session=true paho has forgotten its identifiers and
// resumes nothing: the flights are returned to the outbox's order and
// the dispatcher sends them again, as new messages, before anything newer.
func (d *dispatcher) sessionGone() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if len(d.flights) == 0 {
		return
	}
	if d.clean {
		first := d.cursor
		for _, f := range d.flights {
			first = min(first, f.seq)
		}
		clear(d.flights)
		d.inflight, d.inflightQoS2, d.unreleased, d.unclaimed = 0, 0, 0, 0
		d.cursor = first - 1
		d.log.Info("holdfast: the broker has no session; resending the messages in flight", "from_seq", first)
		d.signal()
		return
	}
	n := 0
	for id, f := range d.flights {
		if f.qos == 2 && f.phase == outbox.PhaseReleased {
			f.phase = outbox.PhaseSent
			f.batch = d.persist.enqueue(outbox.StateUpdate{Seq: f.seq, PacketID: id, Phase: outbox.PhaseSent})
			if f.relSent {
				f.relSent = false
				d.unreleased++
			}
		}
		if !f.claimed {
			// paho's resume claims the identifier of every PUBLISH it replays.
			f.claimed = true
			d.unclaimed--
		}
		n++
	}
	d.log.Info("holdfast: the broker has no session; resending the messages in flight as new", "count", n)
}

// beforePublish decides about a QoS 1/2 PUBLISH about to be written on
// connection gen. It reports drop for a leftover: paho keeps a Publish that
// was waiting when the connection dropped and writes it on the next
// connection, possibly before the resume of older messages, which would
// reorder them (paho's resume sends it again, with DUP, in its place); and
// for any copy of a message the broker already has (PUBREL due, or the
// exchange complete), which the broker would take for a new message.
// Otherwise it returns the state batch the write must wait for.
func (d *dispatcher) beforePublish(id uint16, gen uint64, dup bool) (drop bool, b *stateBatch, seq uint64, phase outbox.Phase) {
	d.mu.Lock()
	defer d.mu.Unlock()
	f := d.flights[id]
	switch {
	case f == nil, f.phase == outbox.PhaseReleased:
		return true, nil, 0, 0
	case !dup && f.gen != gen:
		return true, nil, 0, 0
	}
	return false, f.batch, f.seq, f.phase
}

// pubrecs records the PUBRECs just read, before paho can answer them with
// PUBRELs: from then on a resume sends the PUBREL, never the PUBLISH. It
// returns once the new phases are durable (one group commit for all).
func (d *dispatcher) pubrecs(ids []uint16) error {
	var batches []*stateBatch
	d.mu.Lock()
	for _, id := range ids {
		f := d.flights[id]
		if f == nil || f.qos != 2 || f.phase != outbox.PhaseSent {
			continue
		}
		f.phase = outbox.PhaseReleased
		f.batch = d.persist.enqueue(outbox.StateUpdate{Seq: f.seq, PacketID: id, Phase: outbox.PhaseReleased})
		if len(batches) == 0 || batches[len(batches)-1] != f.batch {
			batches = append(batches, f.batch)
		}
	}
	d.mu.Unlock()
	for _, b := range batches {
		if err := b.wait(); err != nil {
			return err
		}
	}
	return nil
}

// releasing is called as paho hands over the PUBREL of id: its PUBREC must
// be durable before the PUBREL leaves (pubrecs normally recorded it when the
// PUBREC was read). It returns the batch to wait for.
func (d *dispatcher) releasing(id uint16) (b *stateBatch, seq uint64, ok bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	f := d.flights[id]
	if f == nil || f.qos != 2 {
		return nil, 0, false
	}
	if f.phase == outbox.PhaseSent {
		f.phase = outbox.PhaseReleased
		f.batch = d.persist.enqueue(outbox.StateUpdate{Seq: f.seq, PacketID: id, Phase: outbox.PhaseReleased})
	}
	return f.batch, f.seq, true
}

// pubrelWritten lifts the ordering barrier of id: its PUBREL is on the
// wire, later QoS 0/1 messages may follow it.
func (d *dispatcher) pubrelWritten(id uint16) {
	d.mu.Lock()
	if f := d.flights[id]; f != nil && f.qos == 2 && !f.relSent {
		f.relSent = true
		d.unreleased--
		d.signal()
	}
	d.mu.Unlock()
}

// durable waits for a state batch, and retries the one update alone if the
// batch failed.
func (d *dispatcher) durable(b *stateBatch, seq uint64, id uint16, phase outbox.Phase) error {
	if b == nil || b.wait() == nil {
		return nil
	}
	return d.q.SetState(context.Background(), seq, id, phase)
}

// dropped is the outbox's report of a record removed unsent.
func (d *dispatcher) dropped(seq uint64, reason error, expired bool) {
	if expired {
		d.stats.expired.Add(1)
	} else {
		d.stats.dropped.Add(1)
	}
	d.rc.finish(seq, reason)
	if d.hooks.OnDrop != nil {
		d.hooks.OnDrop(seq, reason)
	}
}

// load rebuilds the in-flight set after a process restart: every record up
// to the last one that was handed to the network is resumed by paho, in
// outbox order, before anything newer is sent. QoS 2 messages keep their
// packet identifier and phase; QoS 1 messages get identifiers that collide
// with none of them. QoS 0 records in that prefix may already have been
// sent and are removed (at most once).
func (d *dispatcher) load() error {
	var prefix []outbox.Record
	last := -1
	var after uint64
	horizon := max(d.maxFly, 1024)
	for len(prefix)-(last+1) < horizon {
		recs, err := d.q.Read(after, 256, nil)
		if err != nil {
			return err
		}
		if len(recs) == 0 {
			break
		}
		for _, r := range recs {
			prefix = append(prefix, r)
			if r.Phase != outbox.PhaseQueued {
				last = len(prefix) - 1
			}
			after = r.Seq
		}
	}
	prefix = prefix[:last+1]
	used := map[uint16]bool{}
	for _, r := range prefix {
		if r.Phase != outbox.PhaseQueued && r.PacketID != 0 {
			used[r.PacketID] = true
		}
	}
	next := 0
	var stale []uint64
	defer func() { _ = d.q.Remove(stale...) }()
	d.mu.Lock()
	defer d.mu.Unlock()
	for i, r := range prefix {
		if r.QoS == 0 {
			stale = append(stale, r.Seq)
			if r.Seq > d.cursor {
				d.cursor = r.Seq
			}
			continue
		}
		id, phase := r.PacketID, r.Phase
		if phase == outbox.PhaseQueued || id == 0 {
			for next++; next <= 65535 && used[uint16(next)]; next++ {
			}
			if next > 65535 {
				// Every identifier is taken (a prefix this long means many
				// removals were lost in a crash): the rest of the prefix is
				// sent again by the dispatcher, in order, once identifiers
				// free up. A QoS 2 record there whose state holds an
				// identifier is resent as a new message.
				d.log.Warn("holdfast: more in-flight records than packet identifiers; resending the rest as new", "from_seq", r.Seq, "count", len(prefix)-i)
				break
			}
			id, phase = uint16(next), outbox.PhaseSent
		}
		pub := packets.NewControlPacket(packets.Publish).(*packets.PublishPacket)
		pub.TopicName, pub.Qos, pub.Retain, pub.Payload = r.Topic, r.QoS, r.Retained, r.Payload
		pub.MessageID = id
		d.addFlight(&flight{seq: r.Seq, id: id, qos: r.QoS, phase: phase, pkt: pub, claimed: phase != outbox.PhaseReleased})
	}
	if len(prefix) > 0 {
		d.log.Info("holdfast: resuming in-flight messages", "count", d.inflight, "first_seq", prefix[0].Seq, "last_seq", prefix[len(prefix)-1].Seq)
	}
	return nil
}

// run is the dispatcher goroutine: it waits for a connection, then sends
// records until the connection is lost, and again. It ends with ctx only:
// a supervisor stopped by a permanent refusal may be restarted (RetryNow).
func (c *Client) run(ctx context.Context) {
	for {
		changed := c.sup.Changed()
		conn, err := c.sup.AwaitConnected(ctx)
		if errors.Is(err, reconnect.ErrStopped) {
			select {
			case <-changed:
				continue
			case <-ctx.Done():
				return
			}
		}
		if err != nil {
			return
		}
		s, ok := conn.(*session)
		if !ok {
			return
		}
		c.sendOn(ctx, s)
		if ctx.Err() != nil {
			return
		}
	}
}

// sendOn sends records in order on one connection until it is lost.
func (c *Client) sendOn(ctx context.Context, s *session) {
	d := c.d
	var buf []outbox.Record // reused: send keeps no pointer into it
read:
	for {
		d.mu.Lock()
		room := d.maxFly - d.inflight
		blocked := d.unclaimed > 0 // replayed PUBRELs hold identifiers paho does not know
		after := d.cursor
		d.mu.Unlock()
		if room <= 0 || blocked {
			if !c.waitKick(ctx, s, nil) {
				return
			}
			continue
		}
		clear(buf)
		recs, err := c.q.Read(after, min(room, 128), buf[:0])
		buf = recs
		if err != nil {
			c.log.Error("holdfast: reading the outbox", "err", err)
			if !c.waitKick(ctx, s, c.q.Wake()) {
				return
			}
			continue
		}
		if len(recs) == 0 {
			if !c.waitKick(ctx, s, c.q.Wake()) {
				return
			}
			continue
		}
		for i := range recs {
			r := &recs[i]
			for !d.admit(r) {
				if !c.waitKick(ctx, s, nil) {
					return
				}
			}
			switch c.send(s, r) {
			case sendDone, sendSkipped:
			case sendNoID:
				// paho's identifiers are all taken (by packets it holds
				// besides the window): wait for an acknowledgement to free
				// one, and read again from the cursor.
				if !c.waitKick(ctx, s, nil) {
					return
				}
				continue read
			default:
				// paho refused: the connection is going down. Wait for the
				// loss to be reported rather than spin on it.
				select {
				case <-s.Done():
				case <-ctx.Done():
				}
				return
			}
		}
	}
}

// admit reports whether r may be sent now: within the window, within the
// QoS 2 receive quota, and (for QoS 0/1) after the PUBREL of every earlier
// QoS 2 message, because the broker forwards QoS 2 messages only on PUBREL
// and a later QoS 1 message must not overtake them.
func (d *dispatcher) admit(r *outbox.Record) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.inflight >= d.maxFly {
		return false
	}
	if r.QoS == 2 {
		return d.inflightQoS2 < d.maxQoS2
	}
	return d.unreleased == 0
}

func (c *Client) waitKick(ctx context.Context, s *session, wake <-chan struct{}) bool {
	select {
	case <-c.d.kick:
		return true
	case <-wake:
		return true
	case <-s.Done():
		return false
	case <-ctx.Done():
		return false
	}
}

// sendResult is the outcome of send.
type sendResult int

const (
	sendDone    sendResult = iota // handed to paho
	sendSkipped                   // the record left the outbox meanwhile (dropped, expired): its receipt has the outcome
	sendNoID                      // paho has no free packet identifier; the record stays
	sendGone                      // the connection is gone; the record stays for the next one
)

// send hands one record to paho. The record is claimed in the outbox
// first: from then on it is in flight, and neither expires nor is dropped
// by the overflow policy, so a message is never both sent and reported
// dropped.
func (c *Client) send(s *session, r *outbox.Record) sendResult {
	d := c.d
	c.sendMu.Lock()
	defer c.sendMu.Unlock()
	select {
	case <-s.Done():
		return sendGone
	default:
	}
	if err := c.q.Claim(r.Seq); err != nil {
		if errors.Is(err, outbox.ErrNotFound) {
			return sendSkipped
		}
		c.log.Error("holdfast: claiming a record", "seq", r.Seq, "err", err)
		return sendGone
	}
	d.mu.Lock()
	d.pending = r
	d.mu.Unlock()
	tok := c.paho.Publish(r.Topic, r.QoS, r.Retained, r.Payload)
	d.mu.Lock()
	stored := d.pending == nil
	d.pending = nil
	if stored && r.QoS > 0 && tok.Error() != nil {
		// paho stored the message but gave up queueing it (its write
		// timeout): later messages must not overtake it on this
		// connection. Dropping the connection makes paho's resume send
		// everything in flight again, in order.
		d.mu.Unlock()
		c.log.Warn("holdfast: paho could not queue a publish; reconnecting to keep the order", "seq", r.Seq, "err", tok.Error())
		if wc := c.conn.Load(); wc != nil {
			wc.breakConn()
		}
		c.stats.sent.Add(1)
		return sendGone
	}
	if !stored && r.QoS > 0 && isNoID(tok) {
		d.mu.Unlock()
		c.log.Warn("holdfast: paho has no free packet identifier; waiting for an acknowledgement", "seq", r.Seq)
		return sendNoID
	}
	if r.QoS == 0 {
		stored = !isNotConnected(tok)
		if stored {
			d.cursor = r.Seq
			d.rc.finish(r.Seq, nil)
		}
	}
	d.mu.Unlock()
	if !stored {
		return sendGone
	}
	if r.QoS == 0 {
		_ = c.q.Remove(r.Seq)
		d.rc.broadcast() // see retire
	}
	c.stats.sent.Add(1)
	return sendDone
}

// isNoID reports paho's refusal for want of a free packet identifier.
func isNoID(tok mqtt.Token) bool {
	select {
	case <-tok.Done():
		err := tok.Error()
		return err != nil && err != mqtt.ErrNotConnected && strings.Contains(err.Error(), "no message IDs available")
	default:
		return false
	}
}

func isNotConnected(tok mqtt.Token) bool {
	select {
	case <-tok.Done():
		return tok.Error() == mqtt.ErrNotConnected
	default:
		return false
	}
}
