package outbox

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"
)

func openT(t *testing.T, dir string, o Options) *Badger {
	t.Helper()
	b, err := Open(dir, o)
	if err != nil {
		t.Fatalf("open %s: %v", dir, err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b
}

// dirContains reports whether any file under dir holds needle.
func dirContains(t *testing.T, dir string, needle []byte) bool {
	t.Helper()
	found := false
	err := filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if bytes.Contains(data, needle) {
			found = true
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return found
}

func TestEncryptionAtRest(t *testing.T) {
	key := []byte("0123456789abcdef0123456789abcdef")
	marker := []byte("HOLDFAST-SECRET-PAYLOAD-MARKER")
	for _, tc := range []struct {
		name string
		key  []byte
	}{{"plain", nil}, {"aes256", key}, {"aes128", key[:16]}} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			b := openT(t, dir, Options{EncryptionKey: tc.key})
			for i := 0; i < 20; i++ {
				mustAppend(t, b, &Record{Topic: "secret/topic", QoS: 1, Payload: marker})
			}
			if err := b.Close(); err != nil {
				t.Fatal(err)
			}
			// Without a key the marker must be visible on disk (so the check
			// below can fail); with one it must not.
			if got := dirContains(t, dir, marker); got != (tc.key == nil) {
				t.Fatalf("payload in plain text on disk: %v", got)
			}
			b2 := openT(t, dir, Options{EncryptionKey: tc.key})
			recs := readAll(t, b2)
			if len(recs) != 20 || !bytes.Equal(recs[0].Payload, marker) {
				t.Fatalf("round trip: %d records", len(recs))
			}
			if err := b2.Close(); err != nil {
				t.Fatal(err)
			}
			wrong := []byte("ffffffffffffffffffffffffffffffff")
			if tc.key == nil {
				if _, err := Open(dir, Options{EncryptionKey: wrong}); !errors.Is(err, ErrBadKey) {
					t.Fatalf("key for a plain dir: %v", err)
				}
				return
			}
			if _, err := Open(dir, Options{EncryptionKey: wrong[:len(tc.key)]}); !errors.Is(err, ErrBadKey) {
				t.Fatalf("wrong key: %v", err)
			}
			if _, err := Open(dir, Options{}); !errors.Is(err, ErrBadKey) {
				t.Fatalf("no key: %v", err)
			}
			// Refusals leave the directory usable.
			b3 := openT(t, dir, Options{EncryptionKey: tc.key})
			if n := len(readAll(t, b3)); n != 20 {
				t.Fatalf("after refusals: %d records", n)
			}
		})
	}
}

func TestOpenLocked(t *testing.T) {
	dir := t.TempDir()
	b := openT(t, dir, Options{})
	if _, err := Open(dir, Options{}); !errors.Is(err, ErrLocked) {
		t.Fatalf("second open: %v", err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	openT(t, dir, Options{})
}

func TestOpenCorrupt(t *testing.T) {
	t.Run("file", func(t *testing.T) {
		p := filepath.Join(t.TempDir(), "f")
		if err := os.WriteFile(p, []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := Open(p, Options{}); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("open on a file: %v", err)
		}
	})
	t.Run("manifest", func(t *testing.T) {
		dir := t.TempDir()
		b := openT(t, dir, Options{})
		mustAppend(t, b, rec("t", "x"))
		if err := b.Close(); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "MANIFEST"), []byte("this is not a manifest at all"), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := Open(dir, Options{}); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("garbage manifest: %v", err)
		}
	})
	t.Run("nextseq", func(t *testing.T) {
		dir := t.TempDir()
		b := openT(t, dir, Options{})
		mustAppend(t, b, rec("t", "x"))
		// Closed and reopened: the record and the next sequence are in
		// Badger (not only in the journal).
		if err := b.Close(); err != nil {
			t.Fatal(err)
		}
		b = openT(t, dir, Options{})
		if err := b.db.Update(func(txn *badger.Txn) error { return txn.Set(metaNextSeqKey, []byte("bad")) }); err != nil {
			t.Fatal(err)
		}
		if err := b.Close(); err != nil {
			t.Fatal(err)
		}
		if _, err := Open(dir, Options{}); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("bad metadata: %v", err)
		}
	})
}

func TestInvalidOptions(t *testing.T) {
	for _, o := range []Options{
		{EncryptionKey: []byte("short")},
		{MaxRecords: -1},
		{MaxBytes: -1},
		{DefaultTTL: -1},
		{Durability: 9},
		{Profile: 9},
		{Overflow: 9},
		{MaxRecordBytes: 300 << 20},
		{MaxRecordBytes: 20 << 20}, // above the device profile's value-log file
	} {
		if _, err := Open(t.TempDir(), o); !errors.Is(err, ErrInvalidOptions) {
			t.Errorf("Open(%+v): %v", o, err)
		}
	}
	if err := CheckOptions(Options{MaxRecords: -1}); !errors.Is(err, ErrInvalidOptions) {
		t.Fatalf("CheckOptions: %v", err)
	}
	defer func() {
		if p := recover(); p == nil {
			t.Fatal("NewMemory accepted invalid options")
		}
	}()
	NewMemory(Options{MaxRecords: -1})
}

func TestPermissions(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "outbox")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	b := openT(t, dir, Options{})
	for i := 0; i < 10; i++ {
		mustAppend(t, b, rec("t", "x"))
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	n := 0
	err := filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		want := os.FileMode(0o600)
		if d.IsDir() {
			want = 0o700
		}
		if fi.Mode().Perm() != want {
			t.Errorf("%s: mode %v, want %v", path, fi.Mode().Perm(), want)
		}
		n++
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if n < 3 {
		t.Fatalf("only %d entries checked", n)
	}
	// A new directory is created owner-only.
	fresh := filepath.Join(t.TempDir(), "a", "b")
	b2 := openT(t, fresh, Options{})
	_ = b2.Close()
	if fi, err := os.Stat(fresh); err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("new dir mode %v %v", fi.Mode().Perm(), err)
	}
}

func TestQuarantineCorruptRecord(t *testing.T) {
	dir := t.TempDir()
	var log dropLog
	b := openT(t, dir, Options{OnDrop: log.onDrop})
	for i := 0; i < 5; i++ {
		mustAppend(t, b, rec("t", "payload"))
	}
	if err := b.SetState(context.Background(), 3, 33, PhaseSent); err != nil {
		t.Fatal(err)
	}
	// Closed and reopened, so that the records are in Badger.
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	b = openT(t, dir, Options{OnDrop: log.onDrop})
	// Flip one byte of record 3 in the store: its checksum no longer matches.
	size := b.idx.size(3)
	var raw []byte
	err := b.db.Update(func(txn *badger.Txn) error {
		item, err := txn.Get(recordKey(3, size))
		if err != nil {
			return err
		}
		raw, err = item.ValueCopy(nil)
		if err != nil {
			return err
		}
		raw[len(raw)/2] ^= 0xff
		return txn.Set(recordKey(3, size), raw)
	})
	if err != nil {
		t.Fatal(err)
	}
	got := seqsOf(readAll(t, b))
	if !equalSeqs(got, []uint64{1, 2, 4, 5}) {
		t.Fatalf("read %v", got)
	}
	seqs, whys := log.snapshot()
	var cre *CorruptRecordError
	if !equalSeqs(seqs, []uint64{3}) || !errors.As(whys[0], &cre) || cre.Seq != 3 || !errors.Is(whys[0], ErrCorrupt) {
		t.Fatalf("reports %v %v", seqs, whys)
	}
	if st := b.Stats(); st.Corrupt != 1 || st.Len != 4 || st.InFlight != 0 {
		t.Fatalf("stats %+v", st)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	b2 := openT(t, dir, Options{})
	if got := seqsOf(readAll(t, b2)); !equalSeqs(got, []uint64{1, 2, 4, 5}) {
		t.Fatalf("after reopen %v", got)
	}
	err = b2.db.View(func(txn *badger.Txn) error {
		item, err := txn.Get(seqKey(prefixQuarantine, 3))
		if err != nil {
			return err
		}
		kept, err := item.ValueCopy(nil)
		if err == nil && !bytes.Equal(kept, raw) {
			t.Errorf("quarantined bytes differ")
		}
		if _, err := txn.Get(seqKey(prefixState, 3)); !errors.Is(err, badger.ErrKeyNotFound) {
			t.Errorf("state of quarantined record kept: %v", err)
		}
		return err
	})
	if err != nil {
		t.Fatalf("quarantine key: %v", err)
	}
}

func TestRemovalsDurableAtClose(t *testing.T) {
	dir := t.TempDir()
	b := openT(t, dir, Options{RemoveDelay: 1 << 40}) // only Close writes them
	var seqs []uint64
	for i := 0; i < 2000; i++ {
		seqs = append(seqs, mustAppend(t, b, rec("t", "x")))
	}
	if err := b.Remove(seqs[:1500]...); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	b2 := openT(t, dir, Options{})
	if got := readAll(t, b2); len(got) != 500 || got[0].Seq != seqs[1500] {
		t.Fatalf("after reopen: %d records", len(got))
	}
}

func TestRemovalsWrittenInBackground(t *testing.T) {
	dir := t.TempDir()
	b := openT(t, dir, Options{})
	for i := 0; i < 10; i++ {
		mustAppend(t, b, rec("t", "x"))
	}
	_ = b.Remove(1, 2, 3)
	eventually(t, 5*time.Second, func() bool { return b.pendingDeletes() == 0 }, "removals not flushed")
	err := b.db.View(func(txn *badger.Txn) error {
		_, err := txn.Get(recordKey(1, b.idx.size(4)))
		return err
	})
	if !errors.Is(err, badger.ErrKeyNotFound) {
		t.Fatalf("record 1 still stored: %v", err)
	}
}

func TestBadgerLogsThroughSlog(t *testing.T) {
	h := &captureHandler{}
	b := openT(t, t.TempDir(), Options{Logger: slog.New(h)})
	mustAppend(t, b, rec("t", "x"))
	_ = b.Close()
	if !h.sawComponent("badger") {
		t.Fatal("no badger log reached the slog handler")
	}
}

type captureHandler struct {
	mu   sync.Mutex
	recs []slog.Record
}

func (h *captureHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *captureHandler) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.recs = append(h.recs, r.Clone())
	return nil
}
func (h *captureHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *captureHandler) WithGroup(string) slog.Handler      { return h }
func (h *captureHandler) sawComponent(c string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, r := range h.recs {
		found := false
		r.Attrs(func(a slog.Attr) bool {
			if a.Key == "component" && a.Value.String() == c && !strings.Contains(r.Message, "%!") {
				found = true
			}
			return !found
		})
		if found {
			return true
		}
	}
	return false
}

// TestParallelLoad reopens a queue with holes (removed head, removed ranges,
// a big record) through the parallel scan and compares it with what was there.
func TestParallelLoad(t *testing.T) {
	dir := t.TempDir()
	o := Options{Durability: NoSync, parallelLoad: 2048}
	b := openT(t, dir, o)
	fill(t, b, 12000)
	mustAppend(t, b, &Record{Topic: "big", Payload: make([]byte, 70000)})
	var gone []uint64
	for s := uint64(1); s <= 12001; s++ {
		if s < 1500 || (s > 4000 && s < 6100) || s%7 == 0 {
			gone = append(gone, s)
		}
	}
	_ = b.Remove(gone...)
	want := seqsOf(readAll(t, b))
	wantStats := b.Stats()
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	b2 := openT(t, dir, o)
	if got := seqsOf(readAll(t, b2)); !equalSeqs(got, want) {
		t.Fatalf("reopened %d records, want %d", len(got), len(want))
	}
	if st := b2.Stats(); st.Len != wantStats.Len || st.Bytes != wantStats.Bytes || st.LastSeq != wantStats.LastSeq {
		t.Fatalf("stats %+v, want %+v", st, wantStats)
	}
}

func TestLargestRecord(t *testing.T) {
	for _, im := range impls {
		t.Run(im.name, func(t *testing.T) {
			q, err := im.open(t, t.TempDir(), Options{})
			if err != nil {
				t.Fatal(err)
			}
			defer q.Close()
			r := &Record{Topic: "big"}
			r.Payload = make([]byte, DefaultMaxRecordBytes-encodedSize(r))
			for i := range r.Payload {
				r.Payload[i] = byte(i)
			}
			seq := mustAppend(t, q, r)
			big := &Record{Topic: "big", Payload: make([]byte, len(r.Payload)+1)}
			if _, err := q.Append(context.Background(), big); !errors.Is(err, ErrTooLarge) {
				t.Fatalf("one byte over: %v", err)
			}
			recs := readAll(t, q)
			if len(recs) != 1 || recs[0].Seq != seq || !bytes.Equal(recs[0].Payload, r.Payload) {
				t.Fatalf("read back %d records", len(recs))
			}
		})
	}
}
