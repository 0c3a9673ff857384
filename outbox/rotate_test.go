package outbox

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

// fillForRotation appends records with markers, sets in-flight states and
// removes one, and returns what Read sees and the resume point.
func fillForRotation(t *testing.T, q *Badger) ([]Record, uint64, []byte) {
	t.Helper()
	ctx := context.Background()
	var seqs []uint64
	for i := 0; i < 20; i++ {
		r := rec("t/rot", string(bytes.Repeat([]byte{byte('a' + i)}, 100+i*50)))
		r.Marker = []byte{byte(i), 'm'}
		seqs = append(seqs, mustAppend(t, q, r))
	}
	if err := q.SetState(ctx, seqs[1], 7, PhaseSent); err != nil {
		t.Fatal(err)
	}
	if err := q.SetState(ctx, seqs[2], 8, PhaseReleased); err != nil {
		t.Fatal(err)
	}
	if err := q.Remove(seqs[0]); err != nil {
		t.Fatal(err)
	}
	seq, marker := q.ResumePoint()
	return readAll(t, q), seq, marker
}

// hashDir returns the SHA-256 of every file under dir, by relative path.
func hashDir(t *testing.T, dir string) map[string][32]byte {
	t.Helper()
	out := map[string][32]byte{}
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, path)
		out[rel] = sha256.Sum256(b)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestRotateKey(t *testing.T) {
	oldKey := bytes.Repeat([]byte{1}, 32)
	newKey := bytes.Repeat([]byte{2}, 16) // another length works too
	dir := filepath.Join(t.TempDir(), "outbox")
	q := openT(t, dir, Options{EncryptionKey: oldKey, Durability: SyncEach})
	want, wantSeq, wantMarker := fillForRotation(t, q)
	if len(want) != 19 || want[0].Phase != PhaseSent || want[1].Phase != PhaseReleased {
		t.Fatalf("setup: %d records, phases %v %v", len(want), want[0].Phase, want[1].Phase)
	}

	// In use: refused.
	if err := RotateKey(dir, oldKey, newKey); !errors.Is(err, ErrLocked) {
		t.Fatalf("RotateKey on an open outbox: %v, want ErrLocked", err)
	}
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
	if err := RotateKey(dir, oldKey, newKey); err != nil {
		t.Fatalf("RotateKey: %v", err)
	}

	// The old key, and no key, are refused, by Open and by a snapshot.
	for _, k := range [][]byte{oldKey, nil} {
		if _, err := Open(dir, Options{EncryptionKey: k}); !errors.Is(err, ErrBadKey) {
			t.Fatalf("Open with key %x after rotation: %v, want ErrBadKey", k, err)
		}
	}
	if s, err := OpenSnapshot(dir, SnapshotOptions{EncryptionKey: oldKey}); !errors.Is(err, ErrBadKey) {
		if s != nil {
			_ = s.Close()
		}
		t.Fatalf("OpenSnapshot with the old key: %v, want ErrBadKey", err)
	}
	// Rotating again from the old key is refused too.
	if err := RotateKey(dir, oldKey, newKey); !errors.Is(err, ErrBadKey) {
		t.Fatalf("second RotateKey from the old key: %v, want ErrBadKey", err)
	}

	q2 := openT(t, dir, Options{EncryptionKey: newKey, Durability: SyncEach})
	got := readAll(t, q2)
	if !reflect.DeepEqual(stripTimes(got), stripTimes(want)) {
		t.Fatalf("records after rotation differ:\n got %+v\nwant %+v", got, want)
	}
	if seq, marker := q2.ResumePoint(); seq != wantSeq || !bytes.Equal(marker, wantMarker) {
		t.Fatalf("resume point %d %q, want %d %q", seq, marker, wantSeq, wantMarker)
	}
	// The queue keeps working under the new key.
	s := mustAppend(t, q2, rec("t/rot", "after"))
	if s <= want[len(want)-1].Seq {
		t.Fatalf("seq %d after rotation not above %d", s, want[len(want)-1].Seq)
	}
	if err := q2.Close(); err != nil {
		t.Fatal(err)
	}
	if err := RotateKey(dir, newKey, oldKey); err != nil {
		t.Fatalf("rotating back: %v", err)
	}
	q3 := openT(t, dir, Options{EncryptionKey: oldKey})
	if n := len(readAll(t, q3)); n != 20 {
		t.Fatalf("%d records after rotating back, want 20", n)
	}
}

// stripTimes drops the monotonic clock readings, which do not survive a
// restart.
func stripTimes(rs []Record) []Record {
	out := make([]Record, len(rs))
	for i, r := range rs {
		r.Enqueued = r.Enqueued.Round(0).UTC()
		r.Expires = r.Expires.Round(0).UTC()
		out[i] = r
	}
	return out
}

func TestRotateKeyRefusals(t *testing.T) {
	key := bytes.Repeat([]byte{3}, 32)
	dir := filepath.Join(t.TempDir(), "outbox")
	q := openT(t, dir, Options{EncryptionKey: key})
	fillForRotation(t, q)
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
	before := hashDir(t, dir)

	wrong := bytes.Repeat([]byte{4}, 32)
	if err := RotateKey(dir, wrong, bytes.Repeat([]byte{5}, 32)); !errors.Is(err, ErrBadKey) {
		t.Fatalf("wrong old key: %v, want ErrBadKey", err)
	}
	for _, tc := range []struct{ old, new []byte }{
		{key, nil},
		{nil, key},
		{key, []byte("short")},
		{key, key},
	} {
		if err := RotateKey(dir, tc.old, tc.new); !errors.Is(err, ErrInvalidOptions) {
			t.Fatalf("RotateKey(%x, %x): %v, want ErrInvalidOptions", tc.old, tc.new, err)
		}
	}
	if after := hashDir(t, dir); !reflect.DeepEqual(before, after) {
		t.Fatalf("a refused RotateKey changed the directory:\nbefore %v\nafter  %v", before, after)
	}
	q2 := openT(t, dir, Options{EncryptionKey: key})
	if n := len(readAll(t, q2)); n != 19 {
		t.Fatalf("%d records, want 19", n)
	}
	_ = q2.Close()

	// An unencrypted outbox cannot be rotated (turning encryption on is
	// not supported).
	plain := filepath.Join(t.TempDir(), "plain")
	p := openT(t, plain, Options{})
	mustAppend(t, p, rec("t", "x"))
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if err := RotateKey(plain, key, wrong); !errors.Is(err, ErrBadKey) {
		t.Fatalf("unencrypted outbox: %v, want ErrBadKey", err)
	}
	// No outbox at all.
	if err := RotateKey(filepath.Join(t.TempDir(), "none"), key, wrong); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("missing outbox: %v, want fs.ErrNotExist", err)
	}
}
