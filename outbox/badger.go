package outbox

import (
	"cmp"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/badger/v4/skl"
)

// Badger is the durable Queue, stored in a Badger v4 directory. Open it with
// Open; Close it to flush removals and release the directory.
//
// It owns two goroutines besides Badger's own: the committer, which writes
// every append, state change and batch of removals (one journal frame and
// one sync per batch; see journal.go) and runs checkpoints, and the
// maintainer, which runs value-log garbage collection and keeps file
// permissions owner-only.
type Badger struct {
	core
	dir string
	db  *badger.DB
	// jr is the commit log in front of Badger (see journal.go); nil with
	// NoSync or an EncryptionKey, where Badger itself syncs (or does not).
	jr *journal
	// maxJournalBatch bounds the bytes of records in one frame.
	maxJournalBatch int64
	// With the journal, records appended since the last checkpoint are only
	// there: mem says where each one's value is. Records with seq <= spilled
	// are in Badger (spilled is MaxUint64 without a journal). Guarded by
	// core.mu; written by the committer only.
	mem     map[uint64]jref
	spilled uint64
	// maybeSpilled (committer only) >= spilled: records up to it may be in
	// Badger, because a checkpoint that failed after committing some of
	// its transactions left them there.
	maybeSpilled uint64
	// The last statfs (committer only; see freeSpace).
	free, freeUsed int64
	freeAt         time.Time
	freeOK         bool
	// writeBack (committer only, journal mode): appends stay in the journal
	// until a checkpoint; false while a backlog builds up (chooseMode).
	writeBack bool
	// closeErr: the final checkpoint's error, for Close (committer only
	// until it exits).
	closeErr error
	// keepJournal (tests): Close leaves the journal's frames in place, as
	// a power loss before the last checkpoint would.
	keepJournal bool
	checkpoints atomic.Int64 // tests

	reqs   chan *writeReq // to the committer
	kick   chan struct{}  // removals are pending (capacity 1)
	gcKick chan struct{}  // enough was removed to try value-log GC (capacity 1)
	trim   chan struct{}  // enough was written or read to trim mapped pages (capacity 1)
	quit   chan struct{}  // closed by Close after every op ended
	wg     sync.WaitGroup // committer and maintainer

	// One transaction stays within half of Badger's limits (bytes as
	// Badger estimates them, and entries); requests per batch are bounded too.
	maxBatchBytes   int64
	maxBatchEntries int
	maxBatchCount   int
	vThreshold      int64
	vlogFileSize    int64

	// Guarded by core.mu:
	delq         []delItem           // removals not yet written
	stateKeys    map[uint64]struct{} // seqs that may have a state key on disk
	removedBytes int64               // since the last GC kick

	// Owned by the committer goroutine (set by Open before it starts).
	nextSeq uint64
	metaSeq uint64 // the next sequence as Badger has it (journal mode)

	// trimOn: the device profile pages out mapped files every trimEvery
	// bytes written or read (trimBytes counts them).
	trimOn    atomic.Bool
	trimBytes atomic.Int64
}

// writeReq is one append or state change waiting for the committer.
type writeReq struct {
	state bool
	// append
	value    []byte
	size     uint32
	enq, exp time.Time
	// state (and the seq an append got)
	seq      uint64
	packetID uint16
	phase    Phase

	jpos     int64  // append: where its value is in the journal
	skip     bool   // state: nothing to write (record gone, or already queued)
	delState bool   // state: PhaseQueued, delete the stored state
	marker   []byte // append: Record.Marker (nil: none)
	err      error
	done     chan struct{}               // closed when complete; nil for AppendAsync
	cb       func(seq uint64, err error) // AppendAsync: called when complete
}

// delItem is one pending deletion.
type delItem struct {
	seq        uint64
	size       uint32 // 0: no record key (orphan state only)
	state      bool   // delete the state key too
	quarantine bool   // move the value to the quarantine key
	raw        []byte
}

// deleteFlushCount pending removals are written without waiting for RemoveDelay.
const deleteFlushCount = 512

// Open opens (creating if needed) the outbox in dir. The directory is
// created with mode 0700; Badger's files in it are kept at 0600. An
// existing directory that group or others can reach is reported (a Warn
// log, Stats.LoosePermissions) and tightened to 0700, or refused with
// ErrPermissions when Options.RequirePrivate is set.
//
// Errors: ErrInvalidOptions, ErrPermissions (RequirePrivate and a
// directory open to others), ErrLocked (another process or Queue uses
// dir), ErrBadKey (EncryptionKey does not match), ErrDiskFull, ErrCorrupt
// (anything else that keeps the directory from being read).
func Open(dir string, opts Options) (*Badger, error) {
	o, err := opts.normalize()
	if err != nil {
		return nil, err
	}
	bo := badgerOptions(dir, o)
	if int64(o.MaxRecordBytes) > bo.ValueLogFileSize {
		return nil, fmt.Errorf("%w: MaxRecordBytes %d above the %s profile's value-log file size %d",
			ErrInvalidOptions, o.MaxRecordBytes, o.Profile, bo.ValueLogFileSize)
	}
	loose, err := prepareDir(dir, o)
	if err != nil {
		return nil, err
	}
	if err := checkKey(dir, o.EncryptionKey); err != nil {
		return nil, err
	}
	db, err := openBadger(bo)
	if err != nil {
		return nil, classifyOpenErr(dir, err)
	}
	jr, damaged, err := openJournalFor(db, dir, o)
	if err != nil {
		_ = db.Close()
		if isNoSpace(err) {
			return nil, fmt.Errorf("%w: %s: %v", ErrDiskFull, dir, err)
		}
		return nil, fmt.Errorf("%w: %s: journal: %v", ErrCorrupt, dir, err)
	}
	b := &Badger{
		dir:             dir,
		db:              db,
		jr:              jr,
		maxJournalBatch: math.MaxInt64,
		reqs:            make(chan *writeReq, 1024),
		kick:            make(chan struct{}, 1),
		gcKick:          make(chan struct{}, 1),
		trim:            make(chan struct{}, 1),
		quit:            make(chan struct{}),
		stateKeys:       make(map[uint64]struct{}),
		maxBatchBytes:   (15 * bo.MemTableSize / 100) / 2,
		maxBatchEntries: int((15*bo.MemTableSize/100)/int64(skl.MaxNodeSize)) / 2,
		maxBatchCount:   1000,
		vThreshold:      bo.ValueThreshold,
		vlogFileSize:    bo.ValueLogFileSize,
		nextSeq:         1,
	}
	b.spilled, b.maybeSpilled = math.MaxUint64, math.MaxUint64
	if jr != nil {
		b.maxJournalBatch = (jr.size - journalHdrSize) / 2
		b.mem = make(map[uint64]jref)
	}
	b.init(o, b)
	b.corruptJournal = uint64(damaged)
	b.loosePerms = uint64(loose)
	b.trimOn.Store(o.Profile == ProfileDevice)
	if err := b.load(); err != nil {
		if jr != nil {
			_ = jr.close()
		}
		_ = db.Close()
		return nil, fmt.Errorf("%w: %s: %v", ErrCorrupt, dir, err)
	}
	if jr != nil {
		// replayed and checkpointed: all in Badger
		b.spilled, b.maybeSpilled = b.lastSeq, b.lastSeq
		b.writeBack = true
	}
	fixPerms(dir, o.Logger)
	if b.trimOn.Load() {
		trimMappings(dir)
	}
	b.wg.Add(2)
	go b.committer()
	go b.maintain()
	b.mu.Lock()
	if len(b.delq) > 0 {
		b.kickCommitter()
	}
	if b.idx.n > 0 {
		b.armLocked(time.Now()) // expire what expired while closed
	}
	b.mu.Unlock()
	return b, nil
}

// checkKey verifies the encryption key against the directory's key registry
// before badger.Open, which leaks goroutines when it fails that late.
func checkKey(dir string, key []byte) error {
	kr, err := badger.OpenKeyRegistry(badger.KeyRegistryOptions{Dir: dir, ReadOnly: true, EncryptionKey: key})
	if err != nil {
		return classifyOpenErr(dir, err)
	}
	return kr.Close()
}

// openBadger opens Badger, turning a panic into an error.
func openBadger(bo badger.Options) (db *badger.DB, err error) {
	defer func() {
		if p := recover(); p != nil {
			db, err = nil, fmt.Errorf("badger panicked: %v", p)
		}
	}()
	return badger.Open(bo)
}

// prepareDir creates dir (0700) if needed, or checks an existing one: if
// others can reach it (group or other bits set), the paths they can reach
// are logged at Warn and counted (the count is returned), then restricted
// to the owner; with o.RequirePrivate Open fails instead (ErrPermissions)
// and nothing is changed.
func prepareDir(dir string, o Options) (int, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		if isNoSpace(err) {
			return 0, fmt.Errorf("%w: %v", ErrDiskFull, err)
		}
		return 0, fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	fi, err := os.Stat(dir)
	if err != nil {
		return 0, fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	if !fi.IsDir() {
		return 0, fmt.Errorf("%w: %s is not a directory", ErrCorrupt, dir)
	}
	loose := loosePaths(dir)
	if len(loose) == 0 {
		return 0, nil
	}
	if o.RequirePrivate {
		return 0, fmt.Errorf("%w: %s is mode %04o: %d paths in it are open to group or others (RequirePrivate)",
			ErrPermissions, dir, fi.Mode().Perm(), len(loose))
	}
	o.Logger.Warn("outbox: directory open to group or others; restricting it to the owner",
		"dir", dir, "mode", fmt.Sprintf("%04o", fi.Mode().Perm()), "paths", len(loose), "first", loose[0])
	if err := os.Chmod(dir, 0o700); err != nil {
		return 0, fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	fixPerms(dir, o.Logger)
	return len(loose), nil
}

// loosePaths lists the paths under dir that someone other than the owner
// can reach: dir itself when its group or other bits are set, and then
// every file and directory in it that has such bits. A file with such bits
// inside an owner-only directory is unreachable and not listed (Badger
// creates some files that way; fixPerms restricts them).
func loosePaths(dir string) []string {
	fi, err := os.Stat(dir)
	if err != nil || fi.Mode().Perm()&0o077 == 0 {
		return nil
	}
	var loose []string
	_ = filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		if info, err := d.Info(); err == nil && info.Mode().Perm()&0o077 != 0 {
			loose = append(loose, path)
		}
		return nil
	})
	return loose
}

// load rebuilds the in-memory state from the store: the index from record
// keys alone (values are not read), in-flight states, and the next sequence.
func (b *Badger) load() error {
	var metaNext uint64
	var badStates []uint64
	err := b.db.View(func(txn *badger.Txn) error {
		item, err := txn.Get(metaNextSeqKey)
		switch {
		case errors.Is(err, badger.ErrKeyNotFound):
		case err != nil:
			return err
		default:
			if err := item.Value(func(v []byte) error {
				if len(v) != 8 {
					return fmt.Errorf("bad next-sequence value of %d bytes", len(v))
				}
				metaNext = binary.BigEndian.Uint64(v)
				return nil
			}); err != nil {
				return err
			}
		}
		if item, err := txn.Get(metaMarkerKey); err == nil {
			if err := item.Value(func(v []byte) error {
				if len(v) < 8 {
					return fmt.Errorf("bad resume point of %d bytes", len(v))
				}
				b.markSeq, b.mark = binary.BigEndian.Uint64(v), append([]byte{}, v[8:]...)
				return nil
			}); err != nil {
				return err
			}
		} else if !errors.Is(err, badger.ErrKeyNotFound) {
			return err
		}
		if err := b.loadIndex(metaNext); err != nil {
			return err
		}
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte{prefixState}, PrefetchValues: true, PrefetchSize: 64})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			seq, ok := parseSeqKey(prefixState, it.Item().Key())
			if !ok {
				continue
			}
			var pid uint16
			var ph Phase
			err := it.Item().Value(func(v []byte) (err error) {
				pid, ph, err = decodeState(v)
				return err
			})
			switch {
			case err != nil:
				b.opts.Logger.Warn("outbox: dropping unreadable in-flight state", "seq", seq, "err", err)
				badStates = append(badStates, seq)
			case b.idx.size(seq) == 0:
				badStates = append(badStates, seq) // orphan
			default:
				b.stateKeys[seq] = struct{}{}
				if ph != PhaseQueued {
					b.states[seq] = inflight{pid, ph}
				}
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	for _, seq := range badStates {
		b.delq = append(b.delq, delItem{seq: seq, state: true})
	}
	next := max(metaNext, b.idx.last+1, 1)
	b.nextSeq = next
	b.metaSeq = metaNext
	b.lastSeq = next - 1
	return nil
}

// loadIndex rebuilds the index from the record keys. The span from the head
// to the next sequence is split into segment-aligned ranges scanned in
// parallel, each into its own index; they are joined in order.
func (b *Badger) loadIndex(metaNext uint64) error {
	var head uint64
	err := b.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte{prefixRecord}})
		defer it.Close()
		it.Rewind()
		if it.Valid() {
			head, _, _ = parseRecordKey(it.Item().Key())
		}
		return nil
	})
	if err != nil || head == 0 {
		return err
	}
	lo := head &^ (segSize - 1)
	parts := 1
	if metaNext > lo && metaNext-lo >= b.opts.parallelLoad {
		parts = min(runtime.GOMAXPROCS(0), 4)
	}
	step := (max(metaNext, lo+1) - lo + uint64(parts) - 1) / uint64(parts)
	step = (step + segSize - 1) &^ (segSize - 1)
	idxs := make([]index, parts)
	sizes := make([]int64, parts)
	errs := make([]error, parts)
	var wg sync.WaitGroup
	for i := 0; i < parts; i++ {
		from, to := lo+uint64(i)*step, lo+uint64(i+1)*step
		if i == parts-1 {
			to = math.MaxUint64 // anything above the metadata, too
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			idxs[i], sizes[i], errs[i] = b.scanRange(from, to)
		}()
	}
	wg.Wait()
	for i := range idxs {
		if errs[i] != nil {
			return errs[i]
		}
		b.idx.concat(&idxs[i])
		b.bytes += sizes[i]
	}
	return nil
}

// scanRange indexes the record keys with from <= seq < to.
func (b *Badger) scanRange(from, to uint64) (x index, bytes int64, err error) {
	err = b.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte{prefixRecord}})
		defer it.Close()
		for it.Seek(recordSeek(from)); it.Valid(); it.Next() {
			seq, size, ok := parseRecordKey(it.Item().Key())
			if ok && seq >= to {
				break
			}
			if !ok || size == 0 || seq <= x.last {
				b.opts.Logger.Warn("outbox: ignoring malformed record key", "key", fmt.Sprintf("%x", it.Item().Key()))
				continue
			}
			x.add(seq, size)
			bytes += int64(size)
			if x.n%(1<<16) == 0 && b.trimOn.Load() {
				trimMappings(b.dir) // the scan touches every table page
			}
		}
		return nil
	})
	return x, bytes, err
}

// Append implements Queue.Append. Errors: ErrClosed, ErrFull, ErrTooLarge,
// ErrInvalidRecord, ErrDiskFull, ErrStorage, ctx.Err() (OverflowBlock).
func (b *Badger) Append(ctx context.Context, r *Record) (uint64, error) {
	rec := *r
	size, err := b.prepare(&rec, time.Now())
	if err != nil {
		return 0, err
	}
	if err := b.admit(ctx, int64(size)); err != nil {
		return 0, err
	}
	req := &writeReq{
		value:  appendRecord(make([]byte, 0, size), &rec),
		size:   uint32(size),
		enq:    rec.Enqueued,
		exp:    rec.Expires,
		marker: cloneMarker(rec.Marker),
		done:   make(chan struct{}),
	}
	// The reservation holds an op, so the committer runs until this returns.
	b.reqs <- req
	<-req.done
	if req.err != nil {
		return 0, req.err
	}
	r.Seq = req.seq
	return req.seq, nil
}

// AppendAsync implements AsyncAppender. Errors (returned, done is then
// not called): ErrClosed, ErrFull, ErrTooLarge, ErrInvalidRecord, ctx.Err()
// (OverflowBlock). Errors given to done: ErrDiskFull, ErrStorage.
func (b *Badger) AppendAsync(ctx context.Context, r *Record, done func(seq uint64, err error)) error {
	rec := *r
	size, err := b.prepare(&rec, time.Now())
	if err != nil {
		return err
	}
	if err := b.admit(ctx, int64(size)); err != nil {
		return err
	}
	// The reservation holds an op until the committer completes it.
	b.reqs <- &writeReq{
		value:  appendRecord(make([]byte, 0, size), &rec),
		size:   uint32(size),
		enq:    rec.Enqueued,
		exp:    rec.Expires,
		marker: cloneMarker(rec.Marker),
		cb:     done,
	}
	return nil
}

// SetState implements Queue.SetState. Errors: ErrClosed, ErrNotFound,
// ErrInvalidRecord, ErrDiskFull, ErrStorage, ctx.Err().
func (b *Badger) SetState(ctx context.Context, seq uint64, packetID uint16, phase Phase) error {
	return b.SetStates(ctx, []StateUpdate{{Seq: seq, PacketID: packetID, Phase: phase}})
}

// SetStates implements StateBatcher: the updates are handed to the
// committer together, so they share one commit (and one fsync) where they
// fit in one batch. Each update is checked and written as by SetState; the
// first error is returned, and the updates that could be written are.
func (b *Badger) SetStates(ctx context.Context, updates []StateUpdate) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	var first error
	reqs := make([]writeReq, 0, len(updates))
	b.mu.Lock()
	for _, u := range updates {
		if err := b.checkLiveLocked(u.Seq, u.Phase); err != nil {
			if first == nil {
				first = err
			}
			continue
		}
		reqs = append(reqs, writeReq{state: true, seq: u.Seq, packetID: u.PacketID, phase: u.Phase, done: make(chan struct{})})
	}
	if len(reqs) == 0 {
		b.mu.Unlock()
		return first
	}
	b.ops.Add(1)
	b.mu.Unlock()
	defer b.ops.Done()
	sent := 0
	for i := range reqs {
		select {
		case b.reqs <- &reqs[i]:
			sent++
		case <-ctx.Done():
			if first == nil {
				first = ctx.Err()
			}
		}
		if sent < i+1 {
			break
		}
	}
	for i := range reqs[:sent] {
		<-reqs[i].done // bounded: one commit each at most
		if err := reqs[i].err; err != nil && first == nil {
			first = err
		}
	}
	return first
}

// Remove implements Queue.Remove. Errors: ErrClosed.
func (b *Badger) Remove(seqs ...uint64) error { return b.remove(seqs) }

// Stats implements Queue.Stats.
func (b *Badger) Stats() Stats { return b.stats() }

// Read implements Queue.Read. Errors: ErrClosed.
//
// Records up to b.spilled are read from Badger, the newer ones from the
// journal; a record a checkpoint moved meanwhile is looked up in Badger.
func (b *Badger) Read(after uint64, max int, buf []Record) ([]Record, error) {
	if err := b.begin(); err != nil {
		return buf, err
	}
	defer b.end()
	if max <= 0 {
		return buf, nil
	}
	from, to, ok := b.readRange(after)
	if !ok {
		return buf, nil
	}
	b.mu.Lock()
	spilled := b.spilled
	b.mu.Unlock()
	want := max
	cands := make([]cand, 0, min(want, 256))
	flush := func() {
		before := len(buf)
		buf, _ = b.accept(cands, buf, time.Now())
		want -= len(buf) - before
		cands = cands[:0]
	}
	push := func(cd cand) {
		cands = append(cands, cd)
		b.count(int64(cd.size))
		if len(cands) >= want || len(cands) == cap(cands) {
			flush()
		}
	}
	if from <= spilled {
		txn := b.db.NewTransaction(false)
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte{prefixRecord}})
		for it.Seek(recordSeek(from)); it.Valid() && want > 0; it.Next() {
			item := it.Item()
			seq, size, ok := parseRecordKey(item.Key())
			if !ok {
				continue
			}
			if seq > to || seq > spilled {
				break
			}
			var cd cand
			// Decoded inside: v is valid only there. push runs outside, as
			// it may call OnDrop.
			if err := item.Value(func(v []byte) error { cd = makeCand(seq, size, v); return nil }); err != nil {
				cd = cand{seq: seq, size: size, err: err}
			}
			push(cd)
		}
		it.Close()
		txn.Discard()
	}
	var err error
	if want > 0 && to > spilled {
		err = b.readNew(spilled, from, to, &want, push)
	}
	if len(cands) > 0 {
		flush()
	}
	return buf, err
}

// readNew reads the live records in [from, to] above spilled (the
// checkpoint Read started from), in order, until want is 0.
func (b *Badger) readNew(spilled, from, to uint64, want *int, push func(cand)) error {
	type ref struct {
		seq  uint64
		size uint32
	}
	var refs []ref
	var v []byte
	after := max(spilled, from-1)
	for *want > 0 {
		refs = refs[:0]
		b.mu.Lock()
		for seq := b.idx.next(after); seq != 0 && seq <= to && len(refs) < min(*want, 256); seq = b.idx.next(seq) {
			refs = append(refs, ref{seq, b.idx.size(seq)})
		}
		b.mu.Unlock()
		if len(refs) == 0 {
			return nil
		}
		for _, r := range refs {
			if *want <= 0 {
				return nil
			}
			after = r.seq
			var ok bool
			var err error
			if v, ok, err = b.readJournal(r.seq, v); err != nil {
				return err // stop before the record: nothing after it may be returned
			} else if ok {
				push(makeCand(r.seq, r.size, v))
				continue
			}
			// Moved to Badger by a checkpoint, or removed.
			var cd cand
			err = b.db.View(func(txn *badger.Txn) error {
				item, err := txn.Get(recordKey(r.seq, r.size))
				if err != nil {
					return err
				}
				return item.Value(func(v []byte) error { cd = makeCand(r.seq, r.size, v); return nil })
			})
			switch {
			case errors.Is(err, badger.ErrKeyNotFound):
				continue
			case err != nil:
				cd = cand{seq: r.seq, size: r.size, err: err}
			}
			push(cd)
		}
	}
	return nil
}

// makeCand decodes a stored record; an undecodable one keeps its bytes for
// quarantine.
func makeCand(seq uint64, size uint32, v []byte) cand {
	cd := cand{seq: seq, size: size}
	if err := decodeRecord(v, &cd.rec); err != nil {
		cd.err = err
		cd.raw = append([]byte(nil), v...)
	}
	return cd
}

// readJournal returns the value of record seq if it lives in the journal.
// The journal's bytes are reused after a checkpoint, so the value counts
// only if the record is still there after reading it. An error is a read
// that failed for a record that was there.
func (b *Badger) readJournal(seq uint64, buf []byte) ([]byte, bool, error) {
	if b.jr == nil {
		return nil, false, nil
	}
	b.mu.Lock()
	ref, ok := b.mem[seq]
	b.mu.Unlock()
	if !ok {
		return nil, false, nil
	}
	v, err := b.jr.read(ref, buf)
	b.mu.Lock()
	now, ok := b.mem[seq]
	b.mu.Unlock()
	if !ok || now != ref {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("%w: journal read of record %d: %v", ErrStorage, seq, err)
	}
	return v, true, nil
}

// Close implements Queue. It waits for running calls, writes pending
// removals, stops its goroutines and closes Badger (which flushes its
// memtable). A second Close returns nil.
func (b *Badger) Close() error {
	if !b.shut() {
		return nil
	}
	// Teardown order: no op is running (shut waited), so the committer can
	// drain removals and exit; then the maintainer; Badger last.
	close(b.quit)
	b.wg.Wait()
	err := b.db.Close()
	if b.closeErr != nil && err == nil {
		err = b.closeErr
	}
	if b.jr != nil {
		// The committer checkpointed before it stopped; Badger's Close
		// wrote more (its memtable as a table, the value log's end) without
		// syncing all of it.
		if err == nil && !b.keepJournal && !b.jr.nosync {
			err = syncFiles(b.dir)
		}
		if cerr := b.jr.close(); err == nil {
			err = cerr
		}
	}
	fixPerms(b.dir, b.opts.Logger)
	if err != nil {
		return classifyWriteErr(err)
	}
	return nil
}

// useJournal: every mode commits through the journal, except with
// encryption (the journal would hold records in the clear).
func useJournal(o Options) bool { return len(o.EncryptionKey) == 0 && !o.noJournal }

// journalSize is the journal's preallocated size: room for any record twice
// over, at least 4 MiB (device) or 32 MiB (server) so that checkpoints are
// rare (one per that many bytes of appends, states and removals).
func journalSize(o Options) int64 {
	size := int64(4 << 20)
	if o.Profile == ProfileServer {
		size = 32 << 20
	}
	if o.journalBytes > 0 {
		return max(o.journalBytes, 2*int64(o.MaxRecordBytes)+journalHdrSize)
	}
	return max(size, 2*int64(o.MaxRecordBytes)+journalMinBytes)
}

// openJournalFor opens the journal when o uses one. A journal left by an
// earlier Open with other options is replayed all the same, then removed.
// It returns how many damaged stretches it found (see reportDamage).
func openJournalFor(db *badger.DB, dir string, o Options) (*journal, int, error) {
	size := journalSize(o)
	if !useJournal(o) {
		if _, err := os.Stat(filepath.Join(dir, journalName)); err != nil {
			return nil, 0, nil // none
		}
		size = 0
	}
	jr, frames, damage, err := openJournal(dir, size)
	if err != nil {
		return nil, 0, err
	}
	jr.nosync = o.Durability == NoSync
	// Before the replay: its checkpoint lets the next frames overwrite
	// the damaged bytes.
	reportDamage(dir, jr, damage, o)
	if err := replayJournal(db, dir, jr, frames); err != nil {
		_ = jr.close()
		return nil, len(damage), fmt.Errorf("replay: %w", err)
	}
	if useJournal(o) {
		return jr, len(damage), nil
	}
	if err := jr.close(); err != nil {
		return nil, len(damage), err
	}
	if err := os.Remove(filepath.Join(dir, journalName)); err != nil {
		return nil, len(damage), err
	}
	return nil, len(damage), syncDir(dir)
}

// reportDamage copies each damaged stretch of the journal to a file of its
// own in dir, logs it at Error and passes it to Options.OnCorrupt as a
// *JournalCorruptError. A copy that fails is logged and reported without a
// file: the report matters more than the bytes, which no longer pass their
// checksum anyway.
func reportDamage(dir string, jr *journal, damage []journalDamage, o Options) {
	for _, d := range damage {
		e := d.corruptError(filepath.Join(dir, journalName), jr.gen)
		saved, err := saveDamage(dir, jr, d)
		if err != nil {
			o.Logger.Error("outbox: cannot copy the damaged journal bytes aside", "offset", d.off, "err", err)
		} else {
			e.Saved = saved
		}
		o.Logger.Error("outbox: journal damaged; the records of the damaged frames are lost",
			"offset", d.off, "bytes", d.n, "generation", jr.gen, "frames_after", d.after, "saved", e.Saved)
		if o.OnCorrupt != nil {
			o.OnCorrupt(e)
		}
	}
}

// saveDamage writes the damaged bytes d of the journal to
// holdfast.journal.damaged-<generation>-<offset> in dir, synced, and
// returns its path.
func saveDamage(dir string, jr *journal, d journalDamage) (string, error) {
	path := filepath.Join(dir, fmt.Sprintf("%s.damaged-%d-%d", journalName, jr.gen, d.off))
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return "", err
	}
	_, err = io.Copy(f, io.NewSectionReader(jr.f, d.off, d.n))
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = syncDir(dir)
	}
	if err != nil {
		_ = os.Remove(path)
		return "", err
	}
	return path, nil
}

// replayJournal applies the journal's frames to Badger in order, one
// transaction each, then checkpoints. Frames are sets and deletes of whole
// keys, so applying one that Badger already holds changes nothing.
func replayJournal(db *badger.DB, dir string, jr *journal, frames [][]byte) error {
	if len(frames) == 0 {
		// Still a new generation: frames of the current one may lie further
		// on, written but never synced before a power loss (the first of
		// them torn); the next frames must not line up with them.
		return jr.reset()
	}
	for i, p := range frames {
		ops, err := decodeFrame(p)
		if err != nil {
			return fmt.Errorf("frame %d: %w", i, err)
		}
		txn := db.NewTransaction(true)
		apply := func(op journalOp) error {
			if op.del {
				return txn.Delete(op.key)
			}
			return txn.Set(op.key, op.value)
		}
		for _, op := range ops {
			err = apply(op)
			if errors.Is(err, badger.ErrTxnTooBig) {
				// A frame fits one transaction as written; split it anyway
				// rather than fail an Open.
				if err = txn.Commit(); err != nil {
					break
				}
				txn = db.NewTransaction(true)
				err = apply(op)
			}
			if err != nil {
				break
			}
		}
		if err == nil {
			err = txn.Commit()
		}
		txn.Discard()
		if err != nil {
			return fmt.Errorf("frame %d: %w", i, err)
		}
	}
	if err := syncFiles(dir); err != nil {
		return err
	}
	return jr.reset()
}

// checkpoint writes the records still queued that live only in the
// journal to Badger (with their in-flight states and the next sequence),
// makes Badger's files durable, and discards the journal's frames.
// Committer only.
func (b *Badger) checkpoint() error {
	type spill struct {
		seq   uint64
		size  uint32
		ref   jref
		st    inflight
		hasSt bool
	}
	b.mu.Lock()
	upto := b.lastSeq
	list := make([]spill, 0, len(b.mem))
	for seq, ref := range b.mem {
		size := b.idx.size(seq)
		if size == 0 {
			continue // removed: nothing to keep
		}
		st, has := b.states[seq]
		list = append(list, spill{seq, size, ref, st, has})
	}
	b.mu.Unlock()
	slices.SortFunc(list, func(x, y spill) int { return cmp.Compare(x.seq, y.seq) })
	var need int64
	for _, sp := range list {
		need += int64(sp.ref.n)
	}
	// Badger writes through memory maps: check the room first (a full disk
	// there is SIGBUS). The records stay in the journal meanwhile.
	if b.opts.DiskReserve > 0 {
		if free, ok := diskFree(b.dir); ok && free < b.opts.DiskReserve/2+2*need {
			return fmt.Errorf("%w: %d bytes free in %s, a checkpoint needs %d", ErrDiskFull, free, b.dir, 2*need)
		}
	}
	b.maybeSpilled = max(b.maybeSpilled, upto)

	// Values are read into one chunk per transaction, reused once Badger
	// committed it (a checkpoint moves up to a journal's worth of records;
	// a buffer each would be that much garbage).
	chunk := make([]byte, 0, b.maxBatchBytes)
	txn := b.db.NewTransaction(true)
	defer func() { txn.Discard() }()
	entries := 0
	var moved int64
	flush := func() error {
		err := txn.Commit()
		txn = b.db.NewTransaction(true)
		chunk, entries = chunk[:0], 0
		return err
	}
	for _, sp := range list {
		n := int(sp.ref.n)
		if len(chunk)+n+recordKeyLen > cap(chunk) || entries+3 > b.maxBatchEntries {
			if err := flush(); err != nil {
				return err
			}
		}
		var v []byte
		if n <= cap(chunk)-len(chunk) {
			v = chunk[len(chunk) : len(chunk)+n]
			chunk = chunk[:len(chunk)+n]
		} else {
			v = make([]byte, n) // larger than a chunk: a transaction of its own
		}
		if _, err := b.jr.f.ReadAt(v, sp.ref.off); err != nil {
			return fmt.Errorf("journal read: %w", err)
		}
		if err := txn.Set(recordKey(sp.seq, sp.size), v); err != nil {
			return err
		}
		moved += int64(n)
		entries++
		if sp.hasSt {
			if err := txn.Set(seqKey(prefixState, sp.seq), encodeState(sp.st.packetID, sp.st.phase)); err != nil {
				return err
			}
			entries++
		}
	}
	if b.nextSeq != b.metaSeq {
		if err := txn.Set(metaNextSeqKey, binary.BigEndian.AppendUint64(nil, b.nextSeq)); err != nil {
			return err
		}
	}
	b.mu.Lock()
	markSeq, mark := b.markSeq, b.mark
	b.mu.Unlock()
	if markSeq != 0 {
		// The journal's frames that set it are about to be discarded.
		if err := txn.Set(metaMarkerKey, encodeMarker(markSeq, mark)); err != nil {
			return err
		}
	}
	if err := flush(); err != nil {
		return err
	}
	if !b.jr.nosync {
		if err := syncFiles(b.dir); err != nil {
			return err
		}
	}
	if err := b.jr.reset(); err != nil {
		return err
	}
	b.metaSeq = b.nextSeq
	b.count(moved)
	b.mu.Lock()
	b.spilled = upto
	for seq := range b.mem {
		if seq <= upto {
			delete(b.mem, seq)
		}
	}
	for _, sp := range list {
		if sp.hasSt && b.idx.size(sp.seq) != 0 {
			b.stateKeys[sp.seq] = struct{}{}
		}
	}
	b.mu.Unlock()
	b.checkpoints.Add(1)
	return nil
}

// peek implements backend.
func (b *Badger) peek(seq uint64, size uint32) (enq, exp time.Time, err error) {
	if v, ok, err := b.readJournal(seq, nil); err != nil {
		return enq, exp, err
	} else if ok {
		return decodeTimes(v)
	}
	err = b.db.View(func(txn *badger.Txn) error {
		item, err := txn.Get(recordKey(seq, size))
		if err != nil {
			return err
		}
		return item.Value(func(v []byte) (err error) {
			enq, exp, err = decodeTimes(v)
			return err
		})
	})
	return enq, exp, err
}

// forget implements backend (core.mu held).
func (b *Badger) forget(seq uint64, size uint32) {
	delete(b.mem, seq)
	_, st := b.stateKeys[seq]
	delete(b.stateKeys, seq)
	b.delq = append(b.delq, delItem{seq: seq, size: size, state: st})
	b.removedBytes += int64(size)
	if b.removedBytes >= b.vlogFileSize/2 {
		b.removedBytes = 0
		select {
		case b.gcKick <- struct{}{}:
		default:
		}
	}
	if len(b.delq) == 1 || len(b.delq) == deleteFlushCount {
		b.kickCommitter()
	}
}

// quarantine implements backend (core.mu held).
func (b *Badger) quarantine(seq uint64, size uint32, raw []byte) {
	delete(b.mem, seq)
	_, st := b.stateKeys[seq]
	delete(b.stateKeys, seq)
	b.delq = append(b.delq, delItem{seq: seq, size: size, state: st, quarantine: true, raw: raw})
	b.opts.Logger.Error("outbox: quarantined unreadable record", "seq", seq, "dir", b.dir)
	b.kickCommitter()
}

// count adds written or read bytes towards the next trim of mapped pages.
func (b *Badger) count(n int64) {
	if !b.trimOn.Load() || b.trimBytes.Add(n) < trimEvery {
		return
	}
	b.trimBytes.Store(0)
	select {
	case b.trim <- struct{}{}:
	default:
	}
}

// trimEvery bytes of records written or read, the device profile pages out
// Badger's mapped files (see trimMappings).
const trimEvery = 2 << 20

func (b *Badger) kickCommitter() {
	select {
	case b.kick <- struct{}{}:
	default:
	}
}
