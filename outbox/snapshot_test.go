package outbox_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/holdfast-mqtt/holdfast/outbox"
)

// Open's ErrLocked names the holder's pid (here: this process).
func TestOpenLockedNamesPID(t *testing.T) {
	dir := t.TempDir()
	q, err := outbox.Open(dir, outbox.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	_, err = outbox.Open(dir, outbox.Options{})
	var le *outbox.LockedError
	if !errors.Is(err, outbox.ErrLocked) || !errors.As(err, &le) || le.PID != os.Getpid() {
		t.Fatalf("second Open: %v", err)
	}
	if _, err := outbox.OpenSnapshot(dir, outbox.SnapshotOptions{}); !errors.As(err, &le) || le.PID != os.Getpid() {
		t.Fatalf("OpenSnapshot: %v", err)
	}
}

// A Snapshot's shared lock keeps Open out until Close, and reads the
// same records Open then finds.
func TestSnapshotMatchesOpen(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "q")
	ctx := context.Background()
	q, err := outbox.Open(dir, outbox.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 50; i++ {
		if _, err := q.Append(ctx, &outbox.Record{Topic: "t", QoS: 1, Payload: []byte(fmt.Sprint(i))}); err != nil {
			t.Fatal(err)
		}
	}
	_ = q.SetState(ctx, 7, 9, outbox.PhaseSent)
	_ = q.Remove(1, 2, 30)
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
	s, err := outbox.OpenSnapshot(dir, outbox.SnapshotOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := outbox.Open(dir, outbox.Options{}); !errors.Is(err, outbox.ErrLocked) {
		t.Fatalf("Open during a snapshot: %v", err)
	}
	var got []outbox.Record
	if err := s.Records(0, func(r *outbox.SnapshotRecord) error {
		if r.Err != nil {
			return r.Err
		}
		got = append(got, r.Record)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := s.Verify(); err != nil {
		t.Fatal(err)
	}
	st, err := s.Stats(time.Now())
	if err != nil || st.Len != 47 || st.Sent != 1 || st.LastSeq != 50 || st.Copied {
		t.Fatalf("stats %+v, %v", st, err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	q, err = outbox.Open(dir, outbox.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	want, err := q.Read(0, 100, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(want) {
		t.Fatalf("snapshot %d records, Open %d", len(got), len(want))
	}
	for i := range want {
		g, w := got[i], want[i]
		if g.Seq != w.Seq || g.Topic != w.Topic || string(g.Payload) != string(w.Payload) ||
			g.Phase != w.Phase || g.PacketID != w.PacketID || !g.Enqueued.Equal(w.Enqueued) {
			t.Fatalf("record %d: snapshot %+v, Open %+v", i, g, w)
		}
	}
}

func ExampleOpenSnapshot() {
	dir, _ := os.MkdirTemp("", "outbox-example")
	defer os.RemoveAll(dir)
	q, _ := outbox.Open(dir, outbox.Options{})
	for _, p := range []string{"one", "two", "three"} {
		_, _ = q.Append(context.Background(), &outbox.Record{Topic: "demo", QoS: 1, Payload: []byte(p)})
	}
	_ = q.SetState(context.Background(), 1, 42, outbox.PhaseSent)
	_ = q.Close()

	// Read it without changing a byte, as holdfast-outbox does.
	s, err := outbox.OpenSnapshot(dir, outbox.SnapshotOptions{})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer s.Close()
	_ = s.Records(0, func(r *outbox.SnapshotRecord) error {
		fmt.Println(r.Seq, r.Topic, string(r.Payload), r.Phase)
		return nil
	})
	st, _ := s.Stats(time.Now())
	fmt.Println(st.Len, "records,", st.InFlight(), "in flight; verify:", s.Verify())
	// Output:
	// 1 demo one sent
	// 2 demo two queued
	// 3 demo three queued
	// 3 records, 1 in flight; verify: <nil>
}
