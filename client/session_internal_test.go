package client

import (
	"bytes"
	"strconv"
	"testing"

	"github.com/eclipse/paho.mqtt.golang/packets"

	"github.com/holdfast-mqtt/holdfast/outbox"
)

// handOver is what paho does when the dispatcher publishes record seq under
// id: Put("o.<id>") inside Publish.
func handOver(d *dispatcher, seq uint64, qos byte, id uint16) *packets.PublishPacket {
	pub := packets.NewControlPacket(packets.Publish).(*packets.PublishPacket)
	pub.TopicName, pub.Qos, pub.MessageID, pub.Payload = "t", qos, id, []byte("x")
	d.mu.Lock()
	d.pending = &outbox.Record{Seq: seq, QoS: qos}
	d.mu.Unlock()
	d.Put("o."+strconv.Itoa(int(id)), pub)
	return pub
}

// TestSubackDoesNotRetireAMessage: paho deletes "o.<id>" on SUBACK and
// UNSUBACK too. Under an identifier that collides with a message in flight
// (paho did not know it yet, after a restart) that deletion must not remove
// an unacknowledged record; only the PUBACK does.
func TestSubackDoesNotRetireAMessage(t *testing.T) {
	q := newTestQueue(t)
	d := newTestDispatcher(q, &Config{MaxInflight: 10, MaxInflightQoS2: 10, Logger: discard()}, &counters{})
	startPersister(t, d)
	seq1 := appendRecord(t, q, 1)
	seq2 := appendRecord(t, q, 2)
	d.dialed()
	handOver(d, seq1, 1, 3)
	handOver(d, seq2, 2, 4)
	for _, k := range []byte{ptypeSuback, ptypeUnsuback, ptypePubcomp} {
		acked(d, k, 3)
	}
	for _, k := range []byte{ptypeSuback, ptypePuback} {
		acked(d, k, 4)
	}
	if st := q.Stats(); st.Len != 2 || d.stats.acked.Load() != 0 {
		t.Fatalf("acknowledgements of other kinds retired messages: outbox %d records, acked %d", st.Len, d.stats.acked.Load())
	}
	acked(d, ptypePuback, 3)
	acked(d, ptypePubcomp, 4)
	if st := q.Stats(); st.Len != 0 || d.stats.acked.Load() != 2 {
		t.Fatalf("PUBACK/PUBCOMP did not retire: outbox %d records, acked %d", st.Len, d.stats.acked.Load())
	}
}

// TestSessionGoneResendsAsNew: a broker that answers SessionPresent=0 has
// no state for our identifiers. With a persistent session paho resumes the
// Store: a QoS 2 message whose PUBREC was recorded must go as its PUBLISH
// again (a PUBREL would complete a message the broker never had), with its
// phase durably back to sent.
func TestSessionGoneResendsAsNew(t *testing.T) {
	q := newTestQueue(t)
	d := newTestDispatcher(q, &Config{MaxInflight: 10, MaxInflightQoS2: 10, Logger: discard(), OutboxDir: "x"}, &counters{})
	startPersister(t, d)
	seq1 := appendRecord(t, q, 2)
	seq2 := appendRecord(t, q, 1)
	d.dialed()
	handOver(d, seq1, 2, 1)
	handOver(d, seq2, 1, 2)
	if err := d.pubrecs([]uint16{1}); err != nil {
		t.Fatal(err)
	}
	if _, ok := d.Get("o.1").(*packets.PubrelPacket); !ok {
		t.Fatal("setup: the PUBREC was not recorded")
	}
	gen := d.dialed()
	d.sessionGone()
	got, ok := d.Get("o.1").(*packets.PublishPacket)
	if !ok || got.MessageID != 1 {
		t.Fatalf("after SessionPresent=0 resume would send %v, want the PUBLISH", d.Get("o.1"))
	}
	drop, b, seq, phase := d.beforePublish(1, gen, true)
	if drop || seq != seq1 || phase != outbox.PhaseSent {
		t.Fatalf("the resent PUBLISH: drop=%v seq=%d phase=%v", drop, seq, phase)
	}
	if err := d.durable(b, seq, 1, phase); err != nil {
		t.Fatal(err)
	}
	recs, err := q.Read(0, 2, nil)
	if err != nil || len(recs) != 2 || recs[0].Phase != outbox.PhaseSent || recs[0].PacketID != 1 {
		t.Fatalf("the record's durable state is %+v (%v), want sent under id 1", recs, err)
	}
	if keys := d.All(); len(keys) != 2 || keys[0] != "o.1" || keys[1] != "o.2" {
		t.Fatalf("resume order %v", keys)
	}
	if d.unreleased != 1 {
		t.Fatalf("unreleased %d: the QoS 1 message must wait for the new PUBREL", d.unreleased)
	}
}

// TestCleanSessionRewinds: with clean-session=true paho forgets its
// identifiers and resumes nothing. Every message in flight returns to the
// dispatcher's order, to be sent again before anything newer.
func TestCleanSessionRewinds(t *testing.T) {
	q := outbox.NewMemory(outbox.Options{})
	defer q.Close()
	d := newTestDispatcher(q, &Config{MaxInflight: 10, MaxInflightQoS2: 10, Logger: discard()}, &counters{})
	startPersister(t, d)
	if !d.clean {
		t.Fatal("an in-memory outbox without PersistentSession is a clean session")
	}
	var seqs []uint64
	for i := range 4 {
		seqs = append(seqs, appendRecord(t, q, byte(1+i%2)))
	}
	d.dialed()
	for i, s := range seqs[:3] {
		handOver(d, s, byte(1+i%2), uint16(10+i))
	}
	acked(d, ptypePuback, 10) // seqs[0] done
	d.dialed()
	d.sessionGone()
	if len(d.flights) != 0 || d.inflight != 0 || d.inflightQoS2 != 0 || d.unreleased != 0 {
		t.Fatalf("flights left after a clean session: %d (inflight %d)", len(d.flights), d.inflight)
	}
	recs, err := q.Read(d.cursor, 10, nil)
	if err != nil || len(recs) != 3 || recs[0].Seq != seqs[1] {
		t.Fatalf("the dispatcher would send next %v (%v), want from seq %d", recs, err, seqs[1])
	}
}

// TestScannerNotesConnack: the CONNACK's session-present flag and return
// code are noted however the stream is split, so the client learns that a
// broker lost the session before paho resumes anything.
func TestScannerNotesConnack(t *testing.T) {
	for _, present := range []bool{false, true} {
		ca := packets.NewControlPacket(packets.Connack).(*packets.ConnackPacket)
		ca.SessionPresent, ca.ReturnCode = present, 0
		var b bytes.Buffer
		if err := ca.Write(&b); err != nil {
			t.Fatal(err)
		}
		stream := append(b.Bytes(), 0x40, 0x02, 0x00, 0x07) // then a PUBACK for 7
		for cut := 0; cut <= len(stream); cut++ {
			var s pubrecScanner
			s.scan(stream[:cut], nil)
			s.scan(stream[cut:], nil)
			if !s.connack || s.sessionSet != present || s.connackRC != 0 {
				t.Fatalf("present=%v cut at %d: connack %v session %v rc %d", present, cut, s.connack, s.sessionSet, s.connackRC)
			}
			if len(s.acks) != 1 || s.acks[0] != (ackRead{ptypePuback, 7}) {
				t.Fatalf("cut at %d: acks %v", cut, s.acks)
			}
		}
	}
}
