//go:build linux

package outbox

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// TestDiskFull runs the outbox on a small tmpfs: Append must return
// ErrDiskFull (not crash the process), keep every earlier record, and accept
// appends again once space is freed.
func TestDiskFull(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("disk-full test needs root to mount a tmpfs")
	}
	mnt := t.TempDir()
	if err := syscall.Mount("tmpfs", mnt, "tmpfs", 0, "size=64m,mode=0700"); err != nil {
		t.Skipf("disk-full test cannot mount a tmpfs: %v", err)
	}
	t.Cleanup(func() {
		if err := syscall.Unmount(mnt, syscall.MNT_DETACH); err != nil {
			t.Errorf("unmount %s: %v", mnt, err)
		}
	})
	// The default reserve is what keeps Badger from a SIGBUS; test that one.
	o := Options{}
	norm, _ := o.normalize()
	reserve := norm.DiskReserve
	dir := filepath.Join(mnt, "outbox")
	b, err := Open(dir, o)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	// Leave ~6 MiB above the reserve with a filler file.
	free, ok := diskFree(mnt)
	if !ok {
		t.Fatal("statfs failed")
	}
	filler := filepath.Join(mnt, "filler")
	if err := os.WriteFile(filler, make([]byte, free-reserve-6<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	payload := make([]byte, 4096)
	var seqs []uint64
	var fullErr error
	for i := 0; i < 10000; i++ {
		payload[0] = byte(i)
		seq, err := b.Append(context.Background(), &Record{Topic: "t", QoS: 1, Payload: payload})
		if err != nil {
			fullErr = err
			break
		}
		seqs = append(seqs, seq)
	}
	if !errors.Is(fullErr, ErrDiskFull) {
		t.Fatalf("after %d appends: %v, want ErrDiskFull", len(seqs), fullErr)
	}
	if len(seqs) < 100 {
		t.Fatalf("only %d appends before full", len(seqs))
	}
	if _, err := b.Append(context.Background(), &Record{Topic: "t", Payload: payload}); !errors.Is(err, ErrDiskFull) {
		t.Fatalf("second append when full: %v", err)
	}
	if got := seqsOf(readAll(t, b)); !equalSeqs(got, seqs) {
		t.Fatalf("records after disk full: %d, want %d", len(got), len(seqs))
	}
	if st := b.Stats(); st.Len != len(seqs) || st.Pending != 0 {
		t.Fatalf("stats %+v", st)
	}
	// Free space: appends work again.
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	more := mustAppend(t, b, &Record{Topic: "t", Payload: payload})
	if more <= seqs[len(seqs)-1] {
		t.Fatalf("seq %d after disk full, last before %d", more, seqs[len(seqs)-1])
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	b2, err := Open(dir, o)
	if err != nil {
		t.Fatal(err)
	}
	defer b2.Close()
	if got := readAll(t, b2); len(got) != len(seqs)+1 || got[0].Payload[0] != 0 {
		t.Fatalf("after reopen: %d records, want %d", len(got), len(seqs)+1)
	}
}
