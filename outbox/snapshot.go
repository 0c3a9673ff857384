package outbox

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/badger/v4/options"
)

// Snapshot is a read-only view of an outbox directory that no process is
// using: what Open would find there, read without writing a byte. It is
// what the holdfast-outbox tool (outbox/cmd/holdfast-outbox) reads.
//
// Open replays the journal into Badger and checkpoints, which writes; a
// Snapshot reads the journal's frames the same way (the same frames, the
// same damage) and applies them to an in-memory overlay instead. Damage in
// the journal is reported by Verify and never copied aside: Open saves the
// damaged bytes (see JournalCorruptError), a Snapshot writes nothing.
// Badger itself is opened with Options.ReadOnly when the directory was
// closed cleanly (no memtable file left: Badger's read-only mode refuses a
// memtable that would need truncating, and deletes an empty one). After a
// crash, Badger's files (not the journal) are first copied to a temporary
// directory (SnapshotOptions.TempDir) and the copy is opened: that needs
// free space there as large as the directory's Badger files, and the copy
// is removed by Close.
//
// While a Snapshot is open it holds a shared lock on the directory: Open
// there fails with ErrLocked until Close.
type Snapshot struct {
	dir    string
	db     *badger.DB
	tmp    string // the copy of Badger's files ("" when read in place)
	unlock func()

	// The journal's frames, applied in order: ov maps a key to its last
	// operation; ovRecs lists the record keys set there, in key order.
	ov      map[string]ovOp
	ovRecs  []string
	journal snapJournal

	// In-flight states, Badger's overlaid by the journal's.
	states map[uint64]snapState
	// Metadata, as Open would load it.
	metaNext uint64
	markSeq  uint64
	mark     []byte
	metaErrs []error // undecodable metadata (Open would fail)
}

type ovOp struct {
	del   bool
	value []byte
}

type snapState struct {
	packetID uint16
	phase    Phase
	err      error
}

// SnapshotOptions configures OpenSnapshot. The zero value reads an
// unencrypted directory.
type SnapshotOptions struct {
	// EncryptionKey is the key the directory was created with (nil: none).
	// A wrong one gives ErrBadKey.
	EncryptionKey []byte
	// TempDir is where the Badger files of a directory that was not closed
	// cleanly are copied. "": os.TempDir().
	TempDir string
	// Logger receives Badger's logs. nil: discarded.
	Logger *slog.Logger
}

// SnapshotRecord is one record as a Snapshot finds it.
type SnapshotRecord struct {
	// Record holds the decoded record with its in-flight state (PacketID,
	// Phase); Marker is nil. When Err is set only Seq, PacketID and Phase
	// are meaningful.
	Record
	// Size is the record's encoded size (what Options.MaxBytes counts).
	Size uint32
	// InJournal: the journal holds the record (it was appended since the
	// last checkpoint); the next Open replays it into Badger.
	InJournal bool
	// Err is a *CorruptRecordError when the stored value cannot be read or
	// decoded; Read would quarantine the record.
	Err error
}

// SnapshotStats summarises a Snapshot (SnapshotStats reads every record).
type SnapshotStats struct {
	Len      int   // records, readable or not
	Bytes    int64 // sum of their encoded sizes
	Queued   int   // records in PhaseQueued
	Sent     int   // records in PhaseSent
	Released int   // records in PhaseReleased
	// Expired counts PhaseQueued records whose Expires passed at the time
	// given to Stats: what the next Open (or holdfast-outbox purge-expired)
	// removes.
	Expired int
	// Corrupt counts records that cannot be decoded (Verify reports them).
	Corrupt int
	// Quarantined counts records moved aside earlier as undecodable.
	Quarantined int
	// Oldest is the earliest Enqueued of a readable record; zero if none.
	Oldest time.Time
	// FirstSeq and LastSeq: the lowest sequence in the queue (0 when
	// empty) and the highest ever assigned (as Stats.LastSeq).
	FirstSeq, LastSeq uint64
	// InJournal counts records appended since the last checkpoint (the
	// journal holds them).
	InJournal int
	// JournalFrames counts the journal frames Open would replay;
	// JournalDamage the damaged stretches between them, or 1 for a header
	// Open cannot read (Verify reports them).
	JournalFrames, JournalDamage int
	// Copied: the directory was not closed cleanly (the process crashed or
	// was killed), so Badger's files were read from a copy.
	Copied bool
	// ResumeSeq and ResumeMarker are the resume point (see Resumer).
	ResumeSeq    uint64
	ResumeMarker []byte
}

// InFlight is the number of records handed to the network (Sent+Released).
func (s SnapshotStats) InFlight() int { return s.Sent + s.Released }

// VerifyError is returned by Snapshot.Verify: everything in the directory
// that Open or Read could not use. Problems holds *CorruptRecordError
// (records and in-flight states), *JournalCorruptError (damage in the
// journal, as Open reports it to Options.OnCorrupt, with Saved empty), and
// errors wrapping ErrCorrupt for metadata and for a journal header Open
// cannot read. errors.Is(err, ErrCorrupt) holds, and errors.As
// finds each problem's type.
type VerifyError struct {
	Dir      string
	Records  int // records read
	Problems []error
}

// Error implements error.
func (e *VerifyError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "outbox: %s failed verification: %d problem(s)", e.Dir, len(e.Problems))
	for i, p := range e.Problems {
		if i == 3 {
			fmt.Fprintf(&b, "; and %d more", len(e.Problems)-i)
			break
		}
		b.WriteString("; ")
		b.WriteString(p.Error())
	}
	return b.String()
}

// Unwrap returns ErrCorrupt and every problem.
func (e *VerifyError) Unwrap() []error { return append([]error{ErrCorrupt}, e.Problems...) }

// LockedError is the ErrLocked of Open and OpenSnapshot: another process,
// or another Queue in this process, uses the directory. PID is that
// process's (Badger records it in the directory's LOCK file), or 0 when
// unknown. errors.Is(err, ErrLocked) holds.
type LockedError struct {
	Dir string
	PID int
	Err error // the underlying error
}

// Error implements error.
func (e *LockedError) Error() string {
	holder := "by another process (pid unknown)"
	switch {
	case e.PID == os.Getpid():
		holder = fmt.Sprintf("by this process (pid %d)", e.PID)
	case e.PID > 0:
		holder = fmt.Sprintf("by process %d", e.PID)
	}
	return fmt.Sprintf("%v: %s is in use %s", ErrLocked, e.Dir, holder)
}

// Unwrap returns ErrLocked and the underlying error.
func (e *LockedError) Unwrap() []error { return []error{ErrLocked, e.Err} }

func lockedError(dir string, err error) error {
	return &LockedError{Dir: dir, PID: lockHolder(dir), Err: err}
}

// badgerLockFile is where Badger writes the pid of the process that opened
// a directory read-write (and removes it at Close).
const badgerLockFile = "LOCK"

// lockHolder returns the pid recorded in dir's LOCK file if that process
// is alive, else 0.
func lockHolder(dir string) int {
	b, err := os.ReadFile(filepath.Join(dir, badgerLockFile))
	if err != nil {
		return 0
	}
	var pid int
	if _, err := fmt.Sscanf(strings.TrimSpace(string(b)), "%d", &pid); err != nil || pid <= 0 {
		return 0
	}
	if !processAlive(pid) {
		return 0
	}
	return pid
}

// OpenSnapshot opens a read-only view of the outbox in dir. Nothing in dir
// is written, created or removed.
//
// Errors: an error wrapping fs.ErrNotExist (no outbox there), ErrLocked
// (a *LockedError: a process uses dir), ErrBadKey, ErrInvalidOptions (a
// key of the wrong length), ErrCorrupt (Badger's files cannot be read).
func OpenSnapshot(dir string, o SnapshotOptions) (*Snapshot, error) {
	opts, err := Options{EncryptionKey: o.EncryptionKey, Logger: o.Logger}.normalize()
	if err != nil {
		return nil, err
	}
	fi, err := os.Stat(dir)
	if err != nil {
		return nil, fmt.Errorf("outbox: %w", err)
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("%w: %s is not a directory", ErrCorrupt, dir)
	}
	if _, err := os.Stat(filepath.Join(dir, "MANIFEST")); errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("outbox: %s holds no outbox (no Badger MANIFEST): %w", dir, fs.ErrNotExist)
	}
	unlock, err := lockShared(dir)
	if err != nil {
		return nil, err
	}
	s := &Snapshot{dir: dir, unlock: unlock, ov: make(map[string]ovOp), states: make(map[uint64]snapState)}
	if err := s.open(opts, o.TempDir); err != nil {
		_ = s.Close()
		return nil, err
	}
	return s, nil
}

func (s *Snapshot) open(o Options, tempDir string) error {
	if err := checkKey(s.dir, o.EncryptionKey); err != nil {
		return err
	}
	ents, err := os.ReadDir(s.dir)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	clean := true
	for _, e := range ents {
		if strings.HasSuffix(e.Name(), ".mem") {
			clean = false // a memtable left by a crash
		}
	}
	var db *badger.DB
	if clean {
		db, err = openBadger(snapshotOptions(s.dir, o).WithReadOnly(true))
		if errors.Is(err, badger.ErrTruncateNeeded) {
			clean = false // read-only mode cannot open it as it is
		}
	}
	if !clean {
		if s.tmp, err = copyBadgerFiles(s.dir, tempDir); err != nil {
			return err
		}
		db, err = openBadger(snapshotOptions(s.tmp, o))
	}
	if err != nil {
		// badger.Open can return a half-open DB with its error: never
		// Close that one (Open does not either).
		return classifyOpenErr(s.dir, err)
	}
	s.db = db
	if err := s.readJournal(); err != nil {
		return err
	}
	return s.loadMeta()
}

// snapshotOptions: the device profile's (small memory), verifying every
// checksum Badger keeps, and no compaction at Close.
func snapshotOptions(dir string, o Options) badger.Options {
	return badgerOptions(dir, o).
		WithChecksumVerificationMode(options.OnTableAndBlockRead).
		WithVerifyValueChecksum(true).
		WithCompactL0OnClose(false)
}

// copyBadgerFiles copies dir's regular files, except the journal and the
// LOCK file, to a new directory under tempDir.
func copyBadgerFiles(dir, tempDir string) (string, error) {
	tmp, err := os.MkdirTemp(tempDir, "holdfast-outbox-")
	if err != nil {
		return "", fmt.Errorf("outbox: copying %s to read it: %w", dir, err)
	}
	ents, err := os.ReadDir(dir)
	if err == nil {
		for _, e := range ents {
			if !e.Type().IsRegular() || e.Name() == journalName || e.Name() == badgerLockFile {
				continue
			}
			if err = snapCopyFile(filepath.Join(dir, e.Name()), filepath.Join(tmp, e.Name())); err != nil {
				break
			}
		}
	}
	if err != nil {
		_ = os.RemoveAll(tmp)
		return "", fmt.Errorf("outbox: copying %s to %s to read it (it was not closed cleanly): %w", dir, tempDir, err)
	}
	return tmp, nil
}

func snapCopyFile(from, to string) error {
	in, err := os.Open(from)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(to, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	err = copySparse(out, in)
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	return err
}

// copySparse copies in to out leaving holes where in has blocks of zeros:
// Badger preallocates its value-log and memtable files (a crashed server
// profile directory has a 512 MiB value log that is mostly a hole).
func copySparse(out, in *os.File) error {
	buf := make([]byte, 64<<10)
	var off int64
	for {
		n, err := io.ReadFull(in, buf)
		if n > 0 && !allZero(buf[:n]) {
			if _, werr := out.WriteAt(buf[:n], off); werr != nil {
				return werr
			}
		}
		off += int64(n)
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return out.Truncate(off)
		}
		if err != nil {
			return err
		}
	}
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// Close releases the directory and removes the copy, if any.
func (s *Snapshot) Close() error {
	var err error
	if s.db != nil {
		err = s.db.Close()
		s.db = nil
	}
	if s.tmp != "" {
		if rerr := os.RemoveAll(s.tmp); err == nil {
			err = rerr
		}
		s.tmp = ""
	}
	if s.unlock != nil {
		s.unlock()
		s.unlock = nil
	}
	return err
}

// get returns the value of key as Open would see it: the journal's last
// operation on it, else Badger's. ok is false when absent.
func (s *Snapshot) get(key []byte) (v []byte, ok bool, err error) {
	if op, in := s.ov[string(key)]; in {
		return op.value, !op.del, nil
	}
	err = s.db.View(func(txn *badger.Txn) error {
		item, err := txn.Get(key)
		if err != nil {
			return err
		}
		v, err = item.ValueCopy(nil)
		return err
	})
	if errors.Is(err, badger.ErrKeyNotFound) {
		return nil, false, nil
	}
	return v, err == nil, err
}

// loadMeta reads the next sequence, the resume point and the in-flight
// states.
func (s *Snapshot) loadMeta() error {
	v, ok, err := s.get(metaNextSeqKey)
	switch {
	case err != nil:
		s.metaErrs = append(s.metaErrs, fmt.Errorf("%w: next sequence: %v", ErrCorrupt, err))
	case ok && len(v) != 8:
		s.metaErrs = append(s.metaErrs, fmt.Errorf("%w: next sequence: value of %d bytes", ErrCorrupt, len(v)))
	case ok:
		s.metaNext = binary.BigEndian.Uint64(v)
	}
	v, ok, err = s.get(metaMarkerKey)
	switch {
	case err != nil:
		s.metaErrs = append(s.metaErrs, fmt.Errorf("%w: resume point: %v", ErrCorrupt, err))
	case ok && len(v) < 8:
		s.metaErrs = append(s.metaErrs, fmt.Errorf("%w: resume point: value of %d bytes", ErrCorrupt, len(v)))
	case ok:
		s.markSeq, s.mark = binary.BigEndian.Uint64(v), append([]byte{}, v[8:]...)
	}
	add := func(key, v []byte, err error) {
		seq, ok := parseSeqKey(prefixState, key)
		if !ok {
			return
		}
		var st snapState
		if err == nil {
			st.packetID, st.phase, err = decodeState(v)
		}
		st.err = err
		s.states[seq] = st
	}
	err = s.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte{prefixState}, PrefetchValues: true, PrefetchSize: 64})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			if _, in := s.ov[string(it.Item().Key())]; in {
				continue
			}
			v, err := it.Item().ValueCopy(nil)
			add(it.Item().KeyCopy(nil), v, err)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("%w: %s: %v", ErrCorrupt, s.dir, err)
	}
	for k, op := range s.ov {
		if len(k) > 0 && k[0] == prefixState && !op.del {
			add([]byte(k), op.value, nil)
		}
	}
	return nil
}

// ResumePoint implements Resumer.
func (s *Snapshot) ResumePoint() (uint64, []byte) {
	return s.markSeq, cloneMarker(s.mark)
}

// Records calls fn for every record with Seq > after, in order, until fn
// returns an error (returned). Undecodable records are passed with Err set.
func (s *Snapshot) Records(after uint64, fn func(*SnapshotRecord) error) error {
	_, err := s.walk(after, fn)
	return err
}

// Get returns record seq. Errors: ErrNotFound, or a storage error.
func (s *Snapshot) Get(seq uint64) (*SnapshotRecord, error) {
	var found *SnapshotRecord
	stop := errors.New("stop")
	err := s.Records(seq-1, func(r *SnapshotRecord) error {
		if r.Seq == seq {
			found = r
		}
		return stop
	})
	if err != nil && err != stop {
		return nil, err
	}
	if found == nil || seq == 0 {
		return nil, fmt.Errorf("%w: %d", ErrNotFound, seq)
	}
	return found, nil
}

// walk merges Badger's record keys with the journal's, in order; a key the
// journal touched is the journal's. It returns the number of malformed
// record keys skipped (Open skips them too).
func (s *Snapshot) walk(after uint64, fn func(*SnapshotRecord) error) (malformed int, err error) {
	if after == ^uint64(0) {
		return 0, nil
	}
	from := string(recordSeek(after + 1))
	oi := sort.SearchStrings(s.ovRecs, from)
	txn := s.db.NewTransaction(false)
	defer txn.Discard()
	it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte{prefixRecord}})
	defer it.Close()
	it.Seek([]byte(from))
	for {
		for it.Valid() {
			if _, in := s.ov[string(it.Item().Key())]; !in {
				break
			}
			it.Next()
		}
		var key string
		var v []byte
		var verr error
		inJournal := false
		switch {
		case oi < len(s.ovRecs) && (!it.Valid() || s.ovRecs[oi] < string(it.Item().Key())):
			key, v, inJournal = s.ovRecs[oi], s.ov[s.ovRecs[oi]].value, true
			oi++
		case it.Valid():
			key = string(it.Item().Key())
			v, verr = it.Item().ValueCopy(nil)
			it.Next()
		default:
			return malformed, nil
		}
		seq, size, ok := parseRecordKey([]byte(key))
		if !ok || size == 0 {
			malformed++
			continue
		}
		r := &SnapshotRecord{Size: size, InJournal: inJournal}
		if verr == nil {
			verr = decodeRecord(v, &r.Record)
		}
		if verr == nil && len(v) != int(size) {
			verr = fmt.Errorf("value of %d bytes, its key says %d", len(v), size)
		}
		if verr != nil {
			r.Record = Record{}
			r.Err = &CorruptRecordError{Seq: seq, Err: verr}
		}
		r.Seq = seq
		if st, ok := s.states[seq]; ok && st.err == nil {
			r.PacketID, r.Phase = st.packetID, st.phase
		}
		if err := fn(r); err != nil {
			return malformed, err
		}
	}
}

// Stats reads every record and summarises the snapshot; now decides which
// queued records count as expired.
func (s *Snapshot) Stats(now time.Time) (SnapshotStats, error) {
	st := SnapshotStats{
		Copied:        s.tmp != "",
		JournalFrames: s.journal.frames,
		JournalDamage: len(s.journal.damage),
		ResumeSeq:     s.markSeq,
		ResumeMarker:  append([]byte(nil), s.mark...),
	}
	var last uint64
	_, err := s.walk(0, func(r *SnapshotRecord) error {
		st.Len++
		st.Bytes += int64(r.Size)
		if st.FirstSeq == 0 {
			st.FirstSeq = r.Seq
		}
		last = r.Seq
		if r.InJournal {
			st.InJournal++
		}
		switch r.Phase {
		case PhaseSent:
			st.Sent++
		case PhaseReleased:
			st.Released++
		default:
			st.Queued++
		}
		if r.Err != nil {
			st.Corrupt++
			return nil
		}
		if r.Phase == PhaseQueued && !r.Expires.IsZero() && !now.Before(r.Expires) {
			st.Expired++
		}
		if st.Oldest.IsZero() || r.Enqueued.Before(st.Oldest) {
			st.Oldest = r.Enqueued
		}
		return nil
	})
	if err != nil {
		return st, err
	}
	st.LastSeq = max(s.metaNext, last+1, 1) - 1
	st.Quarantined, err = s.countQuarantined()
	return st, err
}

// countQuarantined counts the quarantined records ('q' keys), Badger's
// overlaid by the journal's.
func (s *Snapshot) countQuarantined() (int, error) {
	n := 0
	for k, op := range s.ov {
		if len(k) > 0 && k[0] == prefixQuarantine && !op.del {
			n++
		}
	}
	err := s.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte{prefixQuarantine}})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			if _, in := s.ov[string(it.Item().Key())]; !in {
				n++
			}
		}
		return nil
	})
	return n, err
}

// Verify reads every record, in-flight state and metadata, and checks the
// journal. It returns nil when Open and Read would find everything
// readable, else a *VerifyError listing each problem. Nothing is changed.
func (s *Snapshot) Verify() error {
	ve := &VerifyError{Dir: s.dir}
	ve.Problems = append(ve.Problems, s.journal.damage...)
	ve.Problems = append(ve.Problems, s.metaErrs...)
	var prev uint64
	malformed, err := s.walk(0, func(r *SnapshotRecord) error {
		ve.Records++
		if r.Err != nil {
			ve.Problems = append(ve.Problems, r.Err)
		} else if r.Seq <= prev {
			ve.Problems = append(ve.Problems, &CorruptRecordError{Seq: r.Seq, Err: errors.New("sequence stored twice")})
		}
		prev = r.Seq
		return nil
	})
	if err != nil {
		ve.Problems = append(ve.Problems, fmt.Errorf("%w: reading records: %v", ErrCorrupt, err))
	}
	if malformed > 0 {
		ve.Problems = append(ve.Problems, fmt.Errorf("%w: %d malformed record keys", ErrCorrupt, malformed))
	}
	seqs := make([]uint64, 0, len(s.states))
	for seq := range s.states {
		seqs = append(seqs, seq)
	}
	sort.Slice(seqs, func(i, j int) bool { return seqs[i] < seqs[j] })
	for _, seq := range seqs {
		if err := s.states[seq].err; err != nil {
			ve.Problems = append(ve.Problems, &CorruptRecordError{Seq: seq, Err: fmt.Errorf("in-flight state: %w", err)})
		}
	}
	if len(ve.Problems) == 0 {
		return nil
	}
	return ve
}
