package client

import (
	"slices"
	"strconv"

	"github.com/eclipse/paho.mqtt.golang/packets"

	"github.com/holdfast-mqtt/holdfast/outbox"
)

// The dispatcher is paho's Store. paho calls Put("o.<id>") synchronously
// inside Publish, before the PUBLISH is written, and Del("o.<id>") when the
// PUBACK or PUBCOMP arrives: that is the acknowledgement hook. On connect
// (clean-session=false) paho's resume() replays All() in the order given,
// which is the outbox order. Subscribe/unsubscribe packets and inbound
// state ("i.<id>") are kept in memory.

// Open implements mqtt.Store.
func (d *dispatcher) Open() {}

// Close implements mqtt.Store. The outbox is closed by the client.
func (d *dispatcher) Close() {}

// Reset implements mqtt.Store. paho calls it at every connection of a clean
// session instead of resuming; sessionGone has already returned the
// messages in flight to the dispatcher.
func (d *dispatcher) Reset() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.other = map[string]packets.ControlPacket{}
}

// Put implements mqtt.Store.
func (d *dispatcher) Put(key string, cp packets.ControlPacket) {
	id, out, ok := parseKey(key)
	if !ok {
		return
	}
	pub, isPub := cp.(*packets.PublishPacket)
	if !out {
		d.inboundPut(id, cp)
	}
	if !out || !isPub {
		d.mu.Lock()
		d.other[key] = cp
		d.mu.Unlock()
		return
	}
	d.mu.Lock()
	if f := d.flights[id]; f != nil {
		// A resend of a message already in flight: nothing changes.
		d.mu.Unlock()
		return
	}
	rec := d.pending
	if rec == nil {
		// Not ours (a publish through the paho client directly): keep it in
		// memory so paho can resume it, but it carries no guarantee.
		d.other[key] = cp
		d.mu.Unlock()
		return
	}
	d.pending = nil
	// The flight keeps its own copy, taken now, before paho's writer
	// touches the packet (Write updates its header): Get copies from it
	// while paho may be writing the original.
	tmpl := *pub
	f := &flight{seq: rec.Seq, id: id, qos: pub.Qos, phase: outbox.PhaseSent, pkt: &tmpl, claimed: true, gen: d.gen}
	d.addFlight(f)
	if pub.Qos == 2 {
		// The packet identifier must be durable before the PUBLISH is on the
		// wire: a resend after a restart must reuse it, or the broker would
		// take it for a new message. wireConn waits for this batch.
		f.batch = d.persist.enqueue(outbox.StateUpdate{Seq: f.seq, PacketID: id, Phase: outbox.PhaseSent})
	}
	d.mu.Unlock()
}

// Get implements mqtt.Store. A QoS 2 message whose PUBREC arrived is
// replayed as its PUBREL, never as a new PUBLISH.
func (d *dispatcher) Get(key string) packets.ControlPacket {
	id, out, ok := parseKey(key)
	if !ok {
		return nil
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if out {
		if f := d.flights[id]; f != nil {
			if f.phase == outbox.PhaseReleased {
				rel := packets.NewControlPacket(packets.Pubrel).(*packets.PubrelPacket)
				rel.MessageID = id
				return rel
			}
			// A copy: paho's resume sets DUP on what Get returns, and the
			// original may still sit in paho's outbound queue from before the
			// reconnect. Keeping the original without DUP lets wireConn tell
			// that leftover from the resend and drop it.
			cp := *f.pkt
			return &cp
		}
	}
	return d.other[key]
}

// All implements mqtt.Store: outbound messages in outbox order first, then
// subscription and inbound state.
func (d *dispatcher) All() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	fl := make([]*flight, 0, len(d.flights))
	for _, f := range d.flights {
		fl = append(fl, f)
	}
	slices.SortFunc(fl, func(a, b *flight) int {
		switch {
		case a.seq < b.seq:
			return -1
		case a.seq > b.seq:
			return 1
		}
		return 0
	})
	keys := make([]string, 0, len(fl)+len(d.other))
	for _, f := range fl {
		keys = append(keys, "o."+strconv.Itoa(int(f.id)))
	}
	for k := range d.other {
		keys = append(keys, k)
	}
	return keys
}

// Del implements mqtt.Store. For a message of the outbox it is the broker's
// acknowledgement when the packet paho is answering is the one that
// completes the message: a PUBACK for QoS 1, a PUBCOMP for QoS 2 (paho
// deletes "o.<id>" on SUBACK and UNSUBACK as well, and an identifier it did
// not know of may collide with one of ours).
func (d *dispatcher) Del(key string) {
	id, out, ok := parseKey(key)
	if !ok {
		return
	}
	d.mu.Lock()
	if out {
		kind := d.takeAckLocked(id)
		if f := d.flights[id]; f != nil {
			want := byte(ptypePuback)
			if f.qos == 2 {
				want = ptypePubcomp
			}
			if kind == want {
				d.ackLocked(f)
				d.mu.Unlock()
				d.retire(f.seq)
				return
			}
			if kind == 0 {
				d.mu.Unlock()
				d.log.Warn("holdfast: paho deleted a message in flight without an acknowledgement read; kept", "id", id, "seq", f.seq)
				return
			}
			// Another packet's acknowledgement under this identifier.
			delete(d.other, key)
			d.mu.Unlock()
			d.log.Warn("holdfast: acknowledgement of another kind for a message in flight ignored", "id", id, "seq", f.seq, "packet", kind)
			return
		}
	}
	delete(d.other, key)
	d.mu.Unlock()
}

func parseKey(key string) (id uint16, outbound, ok bool) {
	if len(key) < 3 || key[1] != '.' {
		return 0, false, false
	}
	n, err := strconv.ParseUint(key[2:], 10, 16)
	if err != nil || n == 0 {
		return 0, false, false
	}
	return uint16(n), key[0] == 'o', true
}
