package outbox

import (
	"errors"
	"fmt"
)

// Sentinel errors. Every error returned by this package, apart from a
// context's own error, wraps one of them, so callers test with errors.Is.
// Each says what it means and what to do.
var (
	// ErrClosed is returned by every method of a Queue after Close. Nothing was
	// changed. Callers stop using the queue; a new one needs Open or NewMemory.
	ErrClosed = errors.New("outbox: closed")

	// ErrFull is returned by Append when a limit (Options.MaxRecords or
	// Options.MaxBytes) is reached and the overflow policy cannot make room:
	// always with OverflowReject, and with OverflowDropOldest when every
	// record left is in flight. The record was not stored. Callers retry later,
	// drop the record themselves, or raise the limits.
	ErrFull = errors.New("outbox: full")

	// ErrTooLarge is returned by Append when one encoded record is larger than
	// Options.MaxRecordBytes or Options.MaxBytes: it could never fit. The
	// record was not stored; retrying cannot help.
	ErrTooLarge = errors.New("outbox: record too large")

	// ErrInvalidRecord is returned by Append for a record that cannot be
	// stored as given (QoS above 2, a topic longer than 65,535 bytes), and by
	// SetState for an unknown Phase. Nothing was stored; the caller has a bug.
	ErrInvalidRecord = errors.New("outbox: invalid record")

	// ErrNotFound is returned by SetState and Claim for a sequence that is not in the
	// queue: never appended, already removed, dropped or expired. Nothing was
	// stored. A client should not send a record it could not mark.
	ErrNotFound = errors.New("outbox: record not found")

	// ErrInvalidOptions is returned by Open and NewMemory for options that
	// cannot work (negative limits, an encryption key that is not 16, 24 or
	// 32 bytes, unknown enum values). Nothing was opened or created.
	ErrInvalidOptions = errors.New("outbox: invalid options")

	// ErrLocked is returned by Open when another process, or another open
	// Queue in this process, holds the directory. Only one may use a
	// directory at a time. Close the other one, or use another directory.
	ErrLocked = errors.New("outbox: directory locked by another user")

	// ErrCorrupt is returned by Open when the directory exists but cannot be
	// read as an outbox (damaged or foreign files, no permission, a file where
	// the directory should be). Nothing in it was changed. An operator has to
	// look at it; the records in it are not lost by this error.
	// CorruptRecordError, for one undecodable record, and JournalCorruptError,
	// for damage in the journal (passed to Options.OnCorrupt, not returned),
	// also match ErrCorrupt.
	ErrCorrupt = errors.New("outbox: corrupt or unreadable")

	// ErrBadKey is returned by Open when the encryption key does not match the
	// one the directory was created with (or a key is given for an
	// unencrypted directory, or none for an encrypted one). Nothing was
	// changed. Retry with the right key; there is no way around it.
	ErrBadKey = errors.New("outbox: wrong encryption key")

	// ErrPermissions is returned by Open with Options.RequirePrivate when the
	// existing outbox directory is open to group or others (mode bits 0077
	// set): its records, and the key registry of an encrypted outbox, could
	// be read by other users. Nothing was changed. Restrict the directory
	// (chmod -R go-rwx DIR) after checking who could have read it, then
	// Open again. Without RequirePrivate, Open restricts it itself and
	// reports it (Stats.LoosePermissions).
	ErrPermissions = errors.New("outbox: directory open to other users")

	// ErrDiskFull is returned by Append (and, rarely, SetState and Open) when
	// the filesystem holding the outbox has less free space than
	// Options.DiskReserve, or the system reported ENOSPC. The record was not
	// stored and every earlier record is intact. Appends succeed again once
	// space is freed (draining the queue frees space only after the store
	// compacts, so free other files or wait).
	ErrDiskFull = errors.New("outbox: disk full")

	// ErrStorage wraps an unexpected error from the store (an I/O error, a
	// failed sync). The call did not take effect. Log it; if it persists,
	// Close the queue and let an operator look at the disk.
	ErrStorage = errors.New("outbox: storage error")

	// ErrDropped is the reason passed to Options.OnDrop for a record removed by
	// OverflowDropOldest to make room for a newer one.
	ErrDropped = errors.New("outbox: dropped to make room")

	// ErrExpired is the reason passed to Options.OnDrop for a PhaseQueued
	// record whose Expires time passed before it was sent.
	ErrExpired = errors.New("outbox: expired")
)

// CorruptRecordError reports one stored record that could not be read or
// decoded. The record is quarantined (moved aside, kept on disk for
// inspection), counted in Stats.Corrupt, passed to Options.OnDrop and skipped,
// so it never blocks the records after it. errors.Is(err, ErrCorrupt) holds.
type CorruptRecordError struct {
	Seq uint64 // sequence of the record
	Err error  // what failed
}

// Error implements error.
func (e *CorruptRecordError) Error() string {
	return fmt.Sprintf("outbox: record %d corrupt: %v", e.Seq, e.Err)
}

// Unwrap returns ErrCorrupt and the underlying cause.
func (e *CorruptRecordError) Unwrap() []error { return []error{ErrCorrupt, e.Err} }

// JournalCorruptError reports a damaged stretch in the middle of the journal
// (holdfast.journal): bytes that hold no valid frame, followed by a valid
// frame of the same generation. A torn last frame, the normal end after a
// crash, is not reported. The records of the damaged frames cannot be
// recovered: they are missing from the queue, a gap in its sequences. Every
// valid frame after the damage is replayed. errors.Is(err, ErrCorrupt) holds.
//
// Open and a Snapshot find the same damage (one reader of the journal).
// Open copies the damaged bytes to Saved for inspection (delete the file
// when done), logs the error, passes it to Options.OnCorrupt and counts it
// in Stats.CorruptJournal; Open still succeeds. Snapshot.Verify (the
// holdfast-outbox tool's verify) lists it in its *VerifyError with Saved
// empty: a Snapshot is read-only and writes no copy.
//
// The cause is the disk or something that wrote to the file, not the
// outbox; after a power loss it can also be a frame whose sync had not
// returned, followed by the frame written after it (FramesAfter is then 1,
// and nothing acknowledged was lost). Check the storage; a client that must
// know what was lost compares what it had accepted with what it reads.
type JournalCorruptError struct {
	Path        string // the journal file
	Generation  uint64 // the journal generation replayed
	Offset      int64  // where the damage starts in the file
	Length      int64  // damaged bytes skipped (one frame or more)
	FramesAfter int    // valid frames replayed after it, up to the next damage or the end
	Saved       string // Open's copy of the damaged bytes; empty from a Snapshot, or if the copy failed (logged)
}

// Error implements error.
func (e *JournalCorruptError) Error() string {
	s := fmt.Sprintf("outbox: journal %s damaged at offset %d (%d bytes, generation %d): "+
		"the records in the damaged frames are lost (a gap in sequences); %d later frames replayed",
		e.Path, e.Offset, e.Length, e.Generation, e.FramesAfter)
	if e.Saved != "" {
		s += "; damaged bytes saved in " + e.Saved
	}
	return s
}

// Unwrap returns ErrCorrupt.
func (e *JournalCorruptError) Unwrap() error { return ErrCorrupt }
