package outbox

import (
	"context"
	"testing"
)

// TestResumePointReplayedFromTheJournal: the resume point of records that
// live only in the journal (a crash before any checkpoint: Badger's own
// files are as at the last checkpoint) comes back with them.
func TestResumePointReplayedFromTheJournal(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	o := Options{RemoveDelay: 1}
	q := openT(t, dir, o)
	if _, err := q.Append(ctx, &Record{Topic: "t", QoS: 1, Marker: []byte("old")}); err != nil {
		t.Fatal(err)
	}
	if err := q.Close(); err != nil { // checkpoint: "old" is in Badger
		t.Fatal(err)
	}
	snap := snapshot(t, dir)
	q = openT(t, dir, o)
	var last uint64
	for i := range 20 {
		seq, err := q.Append(ctx, &Record{Topic: "t", QoS: 1, Marker: []byte{'n', byte(i)}})
		if err != nil {
			t.Fatal(err)
		}
		last = seq
	}
	q.keepJournal = true // as if killed: no checkpoint
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
	restore(t, snap, dir) // Badger as it was before; the journal as written
	q = openT(t, dir, o)
	if seq, m := q.ResumePoint(); seq != last || string(m) != "n\x13" {
		t.Fatalf("after replay: resume point %d %q, want %d %q", seq, m, last, "n\x13")
	}
}

// TestEmptyMarkerIsAMarker: an empty marker is a resume point (a producer
// at offset "" is somewhere), unlike no marker at all.
func TestEmptyMarkerIsAMarker(t *testing.T) {
	q := NewMemory(Options{})
	defer q.Close()
	seq, err := q.Append(context.Background(), &Record{Topic: "t", Marker: []byte{}})
	if err != nil {
		t.Fatal(err)
	}
	if got, m := q.ResumePoint(); got != seq || m == nil || len(m) != 0 {
		t.Fatalf("resume point %d %q (nil %v), want %d and an empty marker", got, m, m == nil, seq)
	}
}
