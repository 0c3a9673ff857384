package outbox

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// snapshot copies the Badger files of dir (not the journal) to a new
// directory: what a disk holds after a checkpoint.
func snapshot(t *testing.T, dir string) string {
	t.Helper()
	to := t.TempDir()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if !e.Type().IsRegular() || e.Name() == journalName {
			continue
		}
		copyFile(t, filepath.Join(dir, e.Name()), filepath.Join(to, e.Name()))
	}
	return to
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	in, err := os.Open(from)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.OpenFile(to, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
}

// restore replaces the Badger files of dir with those of snap, keeping the
// journal: Badger lost every write since the snapshot, the journal none.
func restore(t *testing.T, snap, dir string) {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if e.Name() != journalName {
			if err := os.RemoveAll(filepath.Join(dir, e.Name())); err != nil {
				t.Fatal(err)
			}
		}
	}
	ents, err = os.ReadDir(snap)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		copyFile(t, filepath.Join(snap, e.Name()), filepath.Join(dir, e.Name()))
	}
}

// TestJournalReplaysWhatBadgerLost simulates a power loss: Badger's files
// go back to the last checkpoint, the journal keeps its synced frames.
// Appends, state changes and removals made after the checkpoint must all be
// back after Open, and nothing removed may return.
func TestJournalReplaysWhatBadgerLost(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	o := Options{RemoveDelay: 1}
	q, err := Open(dir, o)
	if err != nil {
		t.Fatal(err)
	}
	if q.jr == nil {
		t.Fatal("GroupCommit without a key does not use the journal")
	}
	for i := 0; i < 100; i++ {
		if _, err := q.Append(ctx, &Record{Topic: "before", QoS: 1, Payload: []byte(fmt.Sprint(i))}); err != nil {
			t.Fatal(err)
		}
	}
	if err := q.Close(); err != nil { // checkpoint
		t.Fatal(err)
	}
	snap := snapshot(t, dir)

	q, err = Open(dir, o)
	if err != nil {
		t.Fatal(err)
	}
	var seqs []uint64
	for i := 0; i < 300; i++ {
		seq, err := q.Append(ctx, &Record{Topic: "after", QoS: 2, Payload: bytes.Repeat([]byte{byte(i)}, 200)})
		if err != nil {
			t.Fatal(err)
		}
		seqs = append(seqs, seq)
	}
	// Remove the first 50 of the earlier records and 10 of the new ones;
	// put two new ones in flight.
	for seq := uint64(1); seq <= 50; seq++ {
		if err := q.Remove(seq); err != nil {
			t.Fatal(err)
		}
	}
	if err := q.Remove(seqs[:10]...); err != nil {
		t.Fatal(err)
	}
	if err := q.SetState(ctx, seqs[10], 7, PhaseReleased); err != nil {
		t.Fatal(err)
	}
	if err := q.SetState(ctx, seqs[11], 8, PhaseSent); err != nil {
		t.Fatal(err)
	}
	want := q.Stats()
	q.keepJournal = true
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}

	restore(t, snap, dir)
	q = openT(t, dir, o)
	got := q.Stats()
	if got.Len != want.Len || got.LastSeq != want.LastSeq || got.InFlight != 2 {
		t.Fatalf("after replay: %d records, last seq %d, %d in flight; want %d, %d, 2", got.Len, got.LastSeq, got.InFlight, want.Len, want.LastSeq)
	}
	recs, err := q.Read(0, 1000, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 50+290 {
		t.Fatalf("read %d records, want 340", len(recs))
	}
	for i, r := range recs {
		switch {
		case i < 50:
			if r.Seq != uint64(51+i) || r.Topic != "before" || string(r.Payload) != fmt.Sprint(50+i) {
				t.Fatalf("record %d: seq %d %q %q", i, r.Seq, r.Topic, r.Payload)
			}
		default:
			k := i - 50 + 10
			if r.Seq != seqs[k] || r.Topic != "after" || !bytes.Equal(r.Payload, bytes.Repeat([]byte{byte(k)}, 200)) {
				t.Fatalf("record %d: seq %d %q, want seq %d", i, r.Seq, r.Topic, seqs[k])
			}
		}
	}
	if recs[50].PacketID != 7 || recs[50].Phase != PhaseReleased || recs[51].PacketID != 8 || recs[51].Phase != PhaseSent {
		t.Fatalf("states: %+v %+v", recs[50], recs[51])
	}
	// Sequences continue after the replayed ones.
	seq, err := q.Append(ctx, &Record{Topic: "next", QoS: 1})
	if err != nil || seq != want.LastSeq+1 {
		t.Fatalf("next append got seq %d (%v), want %d", seq, err, want.LastSeq+1)
	}
}

// TestJournalCheckpointsWhenFull writes more than the journal holds: the
// committer checkpoints and goes on, and a replay after the last checkpoint
// restores what came after it.
func TestJournalCheckpointsWhenFull(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	q, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	payload := bytes.Repeat([]byte("x"), 4000)
	n := int(q.jr.size/4000) + 500 // past the end of the journal
	for i := 0; i < n; i++ {
		if _, err := q.Append(ctx, &Record{Topic: "t", QoS: 1, Payload: payload}); err != nil {
			t.Fatal(err)
		}
	}
	q.keepJournal = true
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
	if q.checkpoints.Load() == 0 {
		t.Fatalf("no checkpoint after %d appends of 4000 bytes into a %d-byte journal", n, q.jr.size)
	}
	q = openT(t, dir, Options{})
	if s := q.Stats(); s.Len != n || s.LastSeq != uint64(n) {
		t.Fatalf("after reopen: %d records, last %d; want %d", s.Len, s.LastSeq, n)
	}
}

func TestJournalFrames(t *testing.T) {
	dir := t.TempDir()
	j, frames, damage, err := openJournal(dir, journalMinBytes)
	if err != nil || len(frames) != 0 || len(damage) != 0 {
		t.Fatalf("fresh journal: %v, %d frames, damage %v", err, len(frames), damage)
	}
	write := func(j *journal, keys ...string) {
		t.Helper()
		j.begin()
		for _, k := range keys {
			j.set([]byte(k), []byte("v-"+k))
			j.del([]byte("gone-" + k))
		}
		if _, err := j.write(); err != nil {
			t.Fatal(err)
		}
		if err := j.sync(); err != nil {
			t.Fatal(err)
		}
	}
	reopen := func() (*journal, [][]byte) {
		t.Helper()
		if err := j.close(); err != nil {
			t.Fatal(err)
		}
		j2, frames, damage, err := openJournal(dir, journalMinBytes)
		if err != nil {
			t.Fatal(err)
		}
		if len(damage) != 0 {
			t.Fatalf("damage reported: %+v", damage)
		}
		return j2, frames
	}
	write(j, "a")
	write(j, "b", "c")
	third := j.off
	write(j, "d")
	j, frames = reopen()
	if len(frames) != 3 {
		t.Fatalf("%d frames, want 3", len(frames))
	}
	ops, err := decodeFrame(frames[1])
	if err != nil || len(ops) != 4 || string(ops[0].key) != "b" || string(ops[0].value) != "v-b" || !ops[1].del || string(ops[1].key) != "gone-b" {
		t.Fatalf("frame 2 decoded to %+v, %v", ops, err)
	}

	// A torn last frame is not replayed; the ones before it are.
	if _, err := j.f.WriteAt([]byte{0xff}, third+frameHdrSize+2); err != nil {
		t.Fatal(err)
	}
	j, frames = reopen()
	if len(frames) != 2 || j.off != third {
		t.Fatalf("after tearing frame 3: %d frames, next at %d; want 2 at %d", len(frames), j.off, third)
	}

	// After a reset, older frames further on are never replayed.
	if err := j.reset(); err != nil {
		t.Fatal(err)
	}
	write(j, "e")
	j, frames = reopen()
	if len(frames) != 1 {
		t.Fatalf("after reset and one frame: %d frames, want 1", len(frames))
	}
	if ops, _ := decodeFrame(frames[0]); string(ops[0].key) != "e" {
		t.Fatalf("replayed %q, want e", ops[0].key)
	}

	// A torn header: the first frame names the generation.
	if _, err := j.f.WriteAt([]byte{0, 0, 0, 0}, 0); err != nil {
		t.Fatal(err)
	}
	j, frames = reopen()
	if len(frames) != 1 {
		t.Fatalf("with a torn header: %d frames, want 1", len(frames))
	}
	if err := j.close(); err != nil {
		t.Fatal(err)
	}

	if _, err := decodeFrame([]byte{'S', 0, 5, 'a'}); err == nil {
		t.Fatal("a short frame decoded")
	}
}

// TestJournalReplayedUnderOtherOptions: a journal left by a GroupCommit
// Open is replayed by a NoSync Open, which goes on with it unsynced.
func TestJournalReplayedUnderOtherOptions(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	q, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
	snap := snapshot(t, dir)
	q, err = Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 10; i++ {
		if _, err := q.Append(ctx, &Record{Topic: "t", QoS: 1}); err != nil {
			t.Fatal(err)
		}
	}
	q.keepJournal = true
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
	restore(t, snap, dir)
	q = openT(t, dir, Options{Durability: NoSync})
	if q.jr == nil || !q.jr.nosync {
		t.Fatal("NoSync did not open an unsynced journal")
	}
	if s := q.Stats(); s.Len != 10 {
		t.Fatalf("%d records after replay, want 10", s.Len)
	}
}

// TestJournalReadsAcrossCheckpoints reads, checks and removes records while
// they are appended, across several checkpoints: each record is read once,
// in order, with its own payload, whether it was in the journal, moved to
// Badger meanwhile, or already there.
func TestJournalReadsAcrossCheckpoints(t *testing.T) {
	ctx := context.Background()
	q := openT(t, t.TempDir(), Options{})
	const n = 4000
	payload := func(i int) []byte { return bytes.Repeat([]byte{byte(i), byte(i >> 8)}, 4000) }
	errc := make(chan error, 1)
	go func() {
		for i := 1; i <= n; i++ {
			if _, err := q.Append(ctx, &Record{Topic: "t", QoS: 1, Payload: payload(i)}); err != nil {
				errc <- err
				return
			}
		}
		errc <- nil
	}()
	var cursor uint64
	var got int
	for got < n {
		recs, err := q.Read(cursor, 64, nil)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range recs {
			got++
			if r.Seq != uint64(got) || !bytes.Equal(r.Payload, payload(got)) {
				t.Fatalf("record %d: seq %d, payload %x...", got, r.Seq, r.Payload[:4])
			}
			cursor = r.Seq
			// Leave every tenth in place for a while: a checkpoint moves it.
			if got%10 != 0 {
				if err := q.Remove(r.Seq); err != nil {
					t.Fatal(err)
				}
			}
		}
		if len(recs) == 0 {
			select {
			case err := <-errc:
				if err != nil {
					t.Fatal(err)
				}
				errc <- nil
			case <-q.Wake():
			}
		}
	}
	// The ones left behind are still readable from the head.
	recs, err := q.Read(0, n, nil)
	if err != nil || len(recs) != n/10 {
		t.Fatalf("from the head: %d records (%v), want %d", len(recs), err, n/10)
	}
	for i, r := range recs {
		if r.Seq != uint64(10*(i+1)) || !bytes.Equal(r.Payload, payload(10*(i+1))) {
			t.Fatalf("left record %d: seq %d", i, r.Seq)
		}
	}
	if c := q.checkpoints.Load(); c < 2 {
		t.Fatalf("%d checkpoints while appending %d records of 8000 bytes into a %d-byte journal; want >= 2", c, n, q.jr.size)
	}
}

// TestJournalFailedCheckpointKeepsRemovals: a checkpoint that committed its
// Badger transactions and then failed (here: the directory sync) leaves
// records in Badger that the queue still counts as journal-only. A removal
// or state reset of such a record must reach Badger too, or it would come
// back after a clean Close and Open.
func TestJournalFailedCheckpointKeepsRemovals(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	o := Options{Profile: ProfileServer, DiskReserve: -1, GCInterval: time.Hour,
		RemoveDelay: time.Millisecond, MaxRecordBytes: 4096, journalBytes: 32 << 10}
	q, err := Open(dir, o)
	if err != nil {
		t.Fatal(err)
	}
	s1, _ := q.Append(ctx, &Record{Topic: "a", QoS: 1, Payload: []byte("one")})
	s2, _ := q.Append(ctx, &Record{Topic: "b", QoS: 1, Payload: []byte("two")})
	if err := q.SetState(ctx, s2, 7, PhaseSent); err != nil {
		t.Fatal(err)
	}
	q.dir = filepath.Join(dir, "nonexistent") // syncFiles fails after the spill committed
	pad := bytes.Repeat([]byte("x"), 1000)
	failed := false
	for i := 0; i < 100 && !failed; i++ {
		if _, err := q.Append(ctx, &Record{Topic: "pad", Payload: pad}); err != nil {
			failed = true
		}
	}
	if !failed {
		t.Fatal("no checkpoint failed")
	}
	q.dir = dir
	if err := q.Remove(s1); err != nil {
		t.Fatal(err)
	}
	if err := q.SetState(ctx, s2, 0, PhaseQueued); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, func() bool { return q.pendingDeletes() == 0 }, "removal written")
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
	q = openT(t, dir, o)
	for _, r := range readAll(t, q) {
		if r.Seq == s1 {
			t.Errorf("record %d, removed before a clean Close, is back", s1)
		}
		if r.Seq == s2 && (r.Phase != PhaseQueued || r.PacketID != 0) {
			t.Errorf("record %d: phase %v packet id %d after a reset to queued", s2, r.Phase, r.PacketID)
		}
	}
}

// TestJournalCreatedButEmpty: a process stopped while the journal was being
// preallocated leaves zeros where the header goes; Open starts it over.
func TestJournalCreatedButEmpty(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, journalName), make([]byte, 64<<10), 0o600); err != nil {
		t.Fatal(err)
	}
	q := openT(t, dir, Options{})
	if _, err := q.Append(context.Background(), &Record{Topic: "t", QoS: 1}); err != nil {
		t.Fatal(err)
	}
	// Garbage that is not all zeros is still refused.
	dir2 := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir2, journalName), bytes.Repeat([]byte{1}, 64<<10), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(dir2, Options{}); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("open with a garbage journal: %v, want ErrCorrupt", err)
	}
}

// TestLingerKeepsBatchLimits: requests gathered while lingering count
// against the journal's batch limit like the others.
func TestLingerKeepsBatchLimits(t *testing.T) {
	b := &Badger{reqs: make(chan *writeReq, 100), maxJournalBatch: 10000, maxBatchCount: 1000,
		maxBatchEntries: 1000, maxBatchBytes: 1 << 20, vThreshold: 64, quit: make(chan struct{})}
	b.opts.MaxRecordBytes = 4096
	for i := 0; i < 20; i++ {
		b.reqs <- &writeReq{value: make([]byte, 4000), size: 4000}
	}
	first := []*writeReq{<-b.reqs}
	batch, s := b.gather(first, b.sizeOf(first))
	batch = b.linger(batch, s, 16, time.Millisecond)
	raw := 0
	for _, r := range batch {
		raw += len(r.value)
	}
	if raw > int(b.maxJournalBatch) || len(batch) < 2 {
		t.Errorf("batch of %d requests, %d bytes; limit %d", len(batch), raw, b.maxJournalBatch)
	}
}

// TestJournalBacklogReplay: with a backlog the committer writes to Badger
// as it goes (chooseMode); a power loss then still loses nothing: what
// Badger may lose since the last checkpoint is in the journal.
func TestJournalBacklogReplay(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	o := Options{RemoveDelay: 1}
	q, err := Open(dir, o)
	if err != nil {
		t.Fatal(err)
	}
	const before, after = backlogRecords + 500, 3000
	appendN := func(from, to int) {
		t.Helper()
		for i := from; i <= to; i++ {
			if _, err := q.Append(ctx, &Record{Topic: "t", QoS: 1, Payload: []byte(fmt.Sprint(i))}); err != nil {
				t.Fatal(err)
			}
		}
	}
	appendN(1, before)
	if err := q.Close(); err != nil { // checkpoint: all in Badger, synced
		t.Fatal(err)
	}
	snap := snapshot(t, dir)
	q, err = Open(dir, o)
	if err != nil {
		t.Fatal(err)
	}
	appendN(before+1, before+after)
	if q.writeBack || q.spilled != before+after {
		t.Fatalf("with a backlog: write-back %v, spilled %d; want direct writes up to %d", q.writeBack, q.spilled, before+after)
	}
	for seq := uint64(1); seq <= 100; seq++ {
		if err := q.Remove(seq); err != nil {
			t.Fatal(err)
		}
	}
	q.keepJournal = true
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
	restore(t, snap, dir)
	q = openT(t, dir, o)
	recs, err := q.Read(0, before+after, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != before+after-100 {
		t.Fatalf("%d records after replay, want %d", len(recs), before+after-100)
	}
	for i, r := range recs {
		if r.Seq != uint64(101+i) || string(r.Payload) != fmt.Sprint(101+i) {
			t.Fatalf("record %d: seq %d payload %q", i, r.Seq, r.Payload)
		}
	}
}

// TestJournalNewGenerationAtEveryOpen: unsynced frames may survive a power
// loss without the one before them (torn). Open reports that as damage and
// replays the later frame; after it, as after an Open that finds no frame
// to replay, a new generation starts, or a new frame of the same size as
// the torn one would make the stale frame after it look valid.
func TestJournalNewGenerationAtEveryOpen(t *testing.T) {
	dir := t.TempDir()
	j, _, _, err := openJournal(dir, journalMinBytes)
	if err != nil {
		t.Fatal(err)
	}
	frame := func(j *journal, key string) {
		t.Helper()
		j.begin()
		j.set([]byte(key), []byte("value"))
		if _, err := j.write(); err != nil {
			t.Fatal(err)
		}
	}
	frame(j, "f1")
	frame(j, "f2") // same size as f1
	// f1 torn, f2 on disk.
	if _, err := j.f.WriteAt([]byte{0xff}, journalHdrSize+frameHdrSize+1); err != nil {
		t.Fatal(err)
	}
	if err := j.close(); err != nil {
		t.Fatal(err)
	}
	j, frames, damage, err := openJournal(dir, journalMinBytes)
	if err != nil || len(frames) != 1 || len(damage) != 1 || damage[0].off != journalHdrSize {
		t.Fatalf("reopen after a torn first frame: %d frames, damage %+v, %v; want f2 after damage at %d", len(frames), damage, err, journalHdrSize)
	}
	if ops, _ := decodeFrame(frames[0]); string(ops[0].key) != "f2" {
		t.Fatalf("replayed %q, want f2", ops[0].key)
	}
	if err := j.reset(); err != nil { // what replayJournal does after applying
		t.Fatal(err)
	}
	frame(j, "g1") // same size as f1, in its place
	if err := j.sync(); err != nil {
		t.Fatal(err)
	}
	if err := j.close(); err != nil {
		t.Fatal(err)
	}
	j, frames, damage, err = openJournal(dir, journalMinBytes)
	if err != nil {
		t.Fatal(err)
	}
	defer j.close()
	if len(frames) != 1 || len(damage) != 0 {
		t.Fatalf("replayed %d frames, damage %+v; want only the new one (a stale frame came back)", len(frames), damage)
	}

	// An Open that finds no frame at all still starts a new generation.
	gen := j.gen
	if err := replayJournal(nil, dir, j, nil); err != nil { // nothing to apply: no Badger needed
		t.Fatal(err)
	}
	if j.gen != gen+1 || j.off != journalHdrSize {
		t.Fatalf("after an empty replay: generation %d, next frame at %d; want %d at %d", j.gen, j.off, gen+1, journalHdrSize)
	}
}
