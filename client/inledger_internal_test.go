package client

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/eclipse/paho.mqtt.golang/packets"
)

// TestInLedgerSurvivesReopen: what was written is there after a reopen,
// close writes what is pending, a PUBCOMP's removal is durable once its
// batch is, and an unreadable file starts empty instead of failing.
func TestInLedgerSurvivesReopen(t *testing.T) {
	dir := t.TempDir()
	l, err := openInLedger(dir, true, discard())
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []uint16{1, 5, 700, 65535} {
		if err := l.wait(l.add(id)); err != nil {
			t.Fatal(err)
		}
	}
	if b := l.add(5); b != nil {
		t.Fatal("adding an identifier already durable returned a batch")
	}
	if l.remove(700) == nil || l.pending(700) == nil {
		t.Fatal("a removal not yet written has no pending batch")
	}
	l.remove(1) // written by close
	if err := l.close(); err != nil {
		t.Fatal(err)
	}
	l, err = openInLedger(dir, true, discard())
	if err != nil {
		t.Fatal(err)
	}
	for id, want := range map[uint16]bool{1: false, 5: true, 700: false, 65535: true, 2: false} {
		if l.has(id) != want {
			t.Fatalf("after reopen: has(%d) = %v, want %v", id, !want, want)
		}
	}
	if err := l.wait(l.clear()); err != nil {
		t.Fatal(err)
	}
	if err := l.close(); err != nil {
		t.Fatal(err)
	}
	l, err = openInLedger(dir, true, discard())
	if err != nil {
		t.Fatal(err)
	}
	if l.has(5) || l.has(65535) {
		t.Fatal("clear did not last")
	}
	_ = l.close()

	if err := os.WriteFile(filepath.Join(dir, inLedgerFile), []byte("garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	l, err = openInLedger(dir, true, discard())
	if err != nil {
		t.Fatalf("an unreadable ledger: %v, want a fresh one", err)
	}
	if err := l.wait(l.add(9)); err != nil {
		t.Fatal(err)
	}
	_ = l.close()
	if fi, err := os.Stat(filepath.Join(dir, inLedgerFile)); err != nil || fi.Size() != int64(inLedgerSize) {
		t.Fatalf("ledger file after rewrite: %v %v", fi, err)
	}
}

// BenchmarkInLedger is one inbound QoS 2 exchange's ledger cost: the entry
// written before the PUBREC, its removal before the PUBCOMP.
func BenchmarkInLedger(b *testing.B) {
	l, err := openInLedger(b.TempDir(), true, discard())
	if err != nil {
		b.Fatal(err)
	}
	defer l.close()
	for i := 0; b.Loop(); i++ {
		id := uint16(i%65535 + 1)
		if err := l.wait(l.add(id)); err != nil {
			b.Fatal(err)
		}
		if err := l.wait(l.remove(id)); err != nil {
			b.Fatal(err)
		}
	}
}

// TestPubcompWaitsForTheLedger: when paho answers a PUBREL with a PUBCOMP,
// the identifier's removal from the ledger is on disk before the PUBCOMP
// is on the wire (once the broker has it, it may reuse the identifier).
func TestPubcompWaitsForTheLedger(t *testing.T) {
	dir := t.TempDir()
	d := newTestDispatcher(newTestQueue(t), &Config{MaxInflight: 10, MaxInflightQoS2: 10, Logger: discard()}, &counters{})
	l, err := openInLedger(dir, true, discard())
	if err != nil {
		t.Fatal(err)
	}
	d.in = l
	t.Cleanup(func() { _ = l.close() })
	if err := l.wait(l.add(7)); err != nil { // handled, PUBREC sent
		t.Fatal(err)
	}
	rel := packets.NewControlPacket(packets.Pubrel).(*packets.PubrelPacket)
	rel.MessageID = 7
	d.Put("i.7", rel) // paho read the PUBREL
	sink := &syncBuf{}
	c := &wireConn{Conn: fakeConn{sink}, d: d, gen: d.dialed()}
	defer c.Close()
	if _, err := c.Write([]byte{ptypePubcomp << 4, 2, 0, 7}); err != nil {
		t.Fatal(err)
	}
	waitLen(t, sink, 4, "the PUBCOMP written")
	again, err := openInLedger(dir, true, discard())
	if err != nil {
		t.Fatal(err)
	}
	defer again.close()
	if again.has(7) {
		t.Fatal("the PUBCOMP left before the identifier's removal was on disk")
	}
}
