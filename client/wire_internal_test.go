package client

import (
	"bytes"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.mqtt.golang/packets"
)

func TestPublishIDParsesPahoPackets(t *testing.T) {
	for _, tc := range []struct {
		topic string
		size  int
		id    uint16
	}{
		{"a", 0, 1},
		{"sensors/1/temp", 100, 513},
		{string(bytes.Repeat([]byte("t"), 300)), 20000, 65535}, // multi-byte remaining length
		{"x", 3_000_000, 42},
	} {
		p := packets.NewControlPacket(packets.Publish).(*packets.PublishPacket)
		p.TopicName, p.Qos, p.MessageID, p.Payload = tc.topic, 1, tc.id, make([]byte, tc.size)
		var buf bytes.Buffer
		if err := p.Write(&buf); err != nil {
			t.Fatal(err)
		}
		id, ok := publishID(buf.Bytes())
		if !ok || id != tc.id {
			t.Errorf("topic %d bytes, payload %d: id %d ok %v, want %d", len(tc.topic), tc.size, id, ok, tc.id)
		}
	}
	if _, ok := publishID([]byte{0x32, 0x05, 0x00}); ok {
		t.Error("truncated packet parsed")
	}
}

// TestWireDropsStalePublishAndRecordsPubrel drives wireConn as paho would.
func TestWireDropsStalePublishAndRecordsPubrel(t *testing.T) {
	q := newTestQueue(t)
	d := newTestDispatcher(q, &Config{MaxInflight: 10, MaxInflightQoS2: 10, Logger: discard()}, &counters{})
	startPersister(t, d)
	seq := appendRecord(t, q, 2)
	sink := &syncBuf{}
	old := &wireConn{Conn: fakeConn{sink}, d: d, gen: d.dialed()}
	defer old.Close()
	pub := packets.NewControlPacket(packets.Publish).(*packets.PublishPacket)
	pub.TopicName, pub.Qos, pub.MessageID, pub.Payload = "t", 2, 7, []byte("x")
	d.pending = recordAt{seq}.record()
	d.Put("o.7", pub)
	fresh := &wireConn{Conn: fakeConn{sink}, d: d, gen: d.dialed()}
	defer fresh.Close()
	var b bytes.Buffer
	_ = pub.Write(&b)
	if n, err := fresh.Write(b.Bytes()); err != nil || n != b.Len() || sink.Len() != 0 {
		t.Fatalf("a first send meant for an earlier connection was written: n=%d err=%v wrote=%d", n, err, sink.Len())
	}
	if _, err := old.Write(b.Bytes()); err != nil {
		t.Fatal(err)
	}
	// The write waits for the packet identifier to be durable, then leaves.
	waitLen(t, sink, b.Len(), "a first send on its own connection was not written")
	rel := packets.NewControlPacket(packets.Pubrel).(*packets.PubrelPacket)
	rel.MessageID = 7
	var rb bytes.Buffer
	_ = rel.Write(&rb)
	if _, err := fresh.Write(rb.Bytes()); err != nil {
		t.Fatal(err)
	}
	waitLen(t, sink, b.Len()+rb.Len(), "the PUBREL was not written")
	recs, err := q.Read(0, 1, nil)
	if err != nil || len(recs) != 1 || recs[0].Seq != seq || recs[0].PacketID != 7 || recs[0].Phase != phaseReleased {
		t.Fatalf("after PUBREL the record is %+v (err %v), want id 7 released", recs, err)
	}
	if _, ok := d.Get("o.7").(*packets.PubrelPacket); !ok {
		t.Fatalf("resume would send %v, want a PUBREL", d.Get("o.7"))
	}
}

// TestResumeGetsACopy checks the trap the chaos test found: paho's resume
// sets DUP on the packet Get returns, while the original may still wait in
// paho's queue from before the reconnect. The original must keep DUP off so
// that wireConn recognises and drops it, and no copy may follow the PUBREL.
func TestResumeGetsACopy(t *testing.T) {
	q := newTestQueue(t)
	d := newTestDispatcher(q, &Config{MaxInflight: 10, MaxInflightQoS2: 10, Logger: discard()}, &counters{})
	startPersister(t, d)
	seq := appendRecord(t, q, 2)
	gen := d.dialed()
	pub := packets.NewControlPacket(packets.Publish).(*packets.PublishPacket)
	pub.TopicName, pub.Qos, pub.MessageID, pub.Payload = "t", 2, 9, []byte("x")
	d.pending = recordAt{seq}.record()
	d.Put("o.9", pub)
	next := d.dialed()
	got, ok := d.Get("o.9").(*packets.PublishPacket)
	if !ok || got == pub {
		t.Fatalf("Get returned the original packet")
	}
	got.Dup = true // as resume does
	if pub.Dup {
		t.Fatal("resume's DUP reached the original")
	}
	if !stale(d, 9, next, false) || stale(d, 9, next, true) || stale(d, 9, gen, false) {
		t.Fatal("leftover not told apart from the resend")
	}
	if err := d.released(9); err != nil {
		t.Fatal(err)
	}
	if !stale(d, 9, next, true) {
		t.Fatal("a PUBLISH copy after the PUBREL was not dropped")
	}
	acked(d, ptypePubcomp, 9)
	if !stale(d, 9, next, true) || !stale(d, 9, next, false) {
		t.Fatal("a PUBLISH copy after the PUBCOMP was not dropped")
	}
}

func TestPubrecScannerSplitsAnywhere(t *testing.T) {
	var stream bytes.Buffer
	var want []uint16
	for i := 0; i < 50; i++ {
		switch i % 3 {
		case 0:
			p := packets.NewControlPacket(packets.Pubrec).(*packets.PubrecPacket)
			p.MessageID = uint16(1000 + i)
			_ = p.Write(&stream)
			want = append(want, p.MessageID)
		case 1:
			p := packets.NewControlPacket(packets.Publish).(*packets.PublishPacket)
			p.TopicName, p.Qos, p.MessageID, p.Payload = "t/x", 1, 5, make([]byte, 200+i*10)
			_ = p.Write(&stream)
		default:
			p := packets.NewControlPacket(packets.Puback).(*packets.PubackPacket)
			p.MessageID = 5 // a PUBACK is not a PUBREC
			_ = p.Write(&stream)
		}
	}
	all := stream.Bytes()
	for _, chunk := range []int{1, 2, 3, 7, 64, len(all)} {
		var s pubrecScanner
		var got []uint16
		for i := 0; i < len(all); i += chunk {
			got = s.scan(all[i:min(i+chunk, len(all))], got)
		}
		if len(got) != len(want) {
			t.Fatalf("chunk %d: %d PUBRECs, want %d", chunk, len(got), len(want))
		}
		for i := range got {
			if got[i] != want[i] {
				t.Fatalf("chunk %d: id %d = %d, want %d", chunk, i, got[i], want[i])
			}
		}
	}
}

// TestPubrecScannerReadsLengthLikePaho: paho reads at most 4 bytes of
// remaining length and ignores a fourth continuation bit. The scanner must
// frame the stream the same way, and must not fail on a longer length (a
// broken or hostile peer): it used to overflow and index out of range,
// which took the process down from paho's reader goroutine.
func TestPubrecScannerReadsLengthLikePaho(t *testing.T) {
	// A PINGRESP whose length takes 4 bytes, all with the continuation bit
	// (paho: length 0), then a PUBREC for 7.
	stream := []byte{0xd0, 0x80, 0x80, 0x80, 0x80, 0x50, 0x02, 0x00, 0x07}
	r := bytes.NewReader(stream)
	var want []uint16
	for {
		cp, err := packets.ReadPacket(r)
		if err != nil {
			break
		}
		if p, ok := cp.(*packets.PubrecPacket); ok {
			want = append(want, p.MessageID)
		}
	}
	var s pubrecScanner
	if got := s.scan(stream, nil); !slices.Equal(got, want) || len(want) != 1 {
		t.Fatalf("scanner found %v, paho %v", got, want)
	}
	// Ten length bytes: more than an int can hold at 7 bits each.
	var s2 pubrecScanner
	s2.scan([]byte{0x50, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01, 0x02, 0x00, 0x01}, nil)
}

// TestInboundQoS2DedupSurvivesResume: paho's resume deletes stored inbound
// PUBLISH entries ("i.<id>") on every reconnect, and the broker then resends
// that PUBLISH with DUP. The handler must not see it again; only a PUBLISH
// without DUP, or the broker's PUBREL, starts a new message under the id.
func TestInboundQoS2DedupSurvivesResume(t *testing.T) {
	d := newTestDispatcher(newTestQueue(t), &Config{MaxInflight: 10, MaxInflightQoS2: 10, Logger: discard()}, &counters{})
	in := func(dup bool) *packets.PublishPacket {
		p := packets.NewControlPacket(packets.Publish).(*packets.PublishPacket)
		p.TopicName, p.Qos, p.MessageID, p.Dup = "t", 2, 5, dup
		return p
	}
	handled := func() bool { return d.in.has(5) }
	d.Put("i.5", in(false))
	d.in.add(5)            // the handler accepted it
	d.Del("i.5")           // paho's resume on the next connection
	d.Put("i.5", in(true)) // the broker's resend
	if !handled() {
		t.Fatal("a resent QoS 2 message would reach the handler again after a reconnect")
	}
	rel := packets.NewControlPacket(packets.Pubrel).(*packets.PubrelPacket)
	rel.MessageID = 5
	d.Put("i.5", rel)
	if handled() {
		t.Fatal("after the PUBREL the identifier still marks a handled message")
	}
	d.Put("i.5", in(false))
	d.in.add(5)
	d.Put("i.5", in(false)) // a new message under the identifier
	if handled() {
		t.Fatal("a new message (no DUP) was taken for a duplicate")
	}
}

// gatedConn blocks its first Write until gate is closed.
type gatedConn struct {
	fakeConn
	gate  chan struct{}
	first sync.Once
}

func (g *gatedConn) Write(b []byte) (int, error) {
	g.first.Do(func() { <-g.gate })
	return g.fakeConn.Write(b)
}

// TestCloseSendsQueuedDisconnect: paho's DISCONNECT queued behind a write
// in progress leaves before Close closes the connection (the broker would
// otherwise publish the will).
func TestCloseSendsQueuedDisconnect(t *testing.T) {
	q := newTestQueue(t)
	d := newTestDispatcher(q, &Config{MaxInflight: 10, MaxInflightQoS2: 10, Logger: discard()}, &counters{})
	sink := &syncBuf{}
	gc := &gatedConn{fakeConn: fakeConn{sink}, gate: make(chan struct{})}
	c := &wireConn{Conn: gc, d: d, gen: d.dialed()}
	ping := []byte{0xc0, 0x00}       // PINGREQ: blocks in the gated write
	disconnect := []byte{0xe0, 0x00} // DISCONNECT: queued behind it
	go func() { _, _ = c.Write(ping) }()
	for {
		c.out.mu.Lock()
		busy := c.out.busy
		c.out.mu.Unlock()
		if busy {
			break
		}
		time.Sleep(time.Millisecond)
	}
	if _, err := c.Write(disconnect); err != nil {
		t.Fatal(err)
	}
	time.AfterFunc(50*time.Millisecond, func() { close(gc.gate) })
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	sink.mu.Lock()
	got := append([]byte(nil), sink.b.Bytes()...)
	sink.mu.Unlock()
	if !bytes.Equal(got, append(ping, disconnect...)) {
		t.Fatalf("written before Close returned: %x, want PINGREQ then DISCONNECT", got)
	}
}

// countingConn counts Write calls.
type countingConn struct {
	gatedConn
	mu     sync.Mutex
	writes int
}

func (c *countingConn) Write(b []byte) (int, error) {
	c.mu.Lock()
	c.writes++
	c.mu.Unlock()
	return c.gatedConn.Write(b)
}

// TestWriterBatchesReadyPackets: packets paho hands over while a write is
// on its way leave together, in order, in one write.
func TestWriterBatchesReadyPackets(t *testing.T) {
	q := newTestQueue(t)
	d := newTestDispatcher(q, &Config{MaxInflight: 10, MaxInflightQoS2: 10, Logger: discard()}, &counters{})
	sink := &syncBuf{}
	cc := &countingConn{gatedConn: gatedConn{fakeConn: fakeConn{sink}, gate: make(chan struct{})}}
	c := &wireConn{Conn: cc, d: d, gen: d.dialed()}
	defer c.Close()
	var want []byte
	for i := 0; i < 4; i++ {
		p := []byte{0xc0, 0x00} // PINGREQ
		if i > 0 {
			p = []byte{0x40, 0x02, 0x00, byte(i)} // PUBACK i
		}
		if _, err := c.Write(p); err != nil {
			t.Fatal(err)
		}
		want = append(want, p...)
	}
	close(cc.gate)
	waitLen(t, sink, len(want), "queued packets not written")
	sink.mu.Lock()
	got := append([]byte(nil), sink.b.Bytes()...)
	sink.mu.Unlock()
	cc.mu.Lock()
	writes := cc.writes
	cc.mu.Unlock()
	if !bytes.Equal(got, want) || writes > 2 {
		t.Fatalf("wrote %x in %d writes, want %x in at most 2", got, writes, want)
	}
}

// TestSlowLinkWithinWriteTimeout: on a link slow enough that a batch takes
// longer than the write timeout, but where every few KiB move well within
// it, the connection must not break (the timeout measures a lack of
// progress).
func TestSlowLinkWithinWriteTimeout(t *testing.T) {
	a, b := net.Pipe()
	defer b.Close()
	go func() {
		buf := make([]byte, 1024)
		for {
			if _, err := b.Read(buf); err != nil {
				return
			}
			time.Sleep(2 * time.Millisecond) // ~500 KB/s
		}
	}()
	c := &wireConn{Conn: a, writeTimeout: 100 * time.Millisecond}
	defer c.Close()
	pkt := func(n int) []byte { // a QoS 0 PUBLISH with an n-byte payload
		body := append([]byte{0, 1, 't'}, make([]byte, n)...)
		return append([]byte{0x30, byte(len(body)&0x7f) | 0x80, byte(len(body) >> 7)}, body...)
	}
	for i := 0; i < 300; i++ { // 300 KB: ~0.6 s on this link
		if _, err := c.Write(pkt(1000)); err != nil {
			t.Fatalf("write %d: %v", i, err)
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		c.out.mu.Lock()
		err, left := c.out.err, len(c.out.marks)
		busy := c.out.busy
		c.out.mu.Unlock()
		if err != nil {
			t.Fatalf("the connection broke on a slow but moving link: %v", err)
		}
		if left == 0 && !busy {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("queue not drained")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// stale is beforePublish's verdict alone.
func stale(d *dispatcher, id uint16, gen uint64, dup bool) bool {
	drop, _, _, _ := d.beforePublish(id, gen, dup)
	return drop
}
