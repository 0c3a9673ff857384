package outbox

import (
	"context"
	"fmt"
	"time"
)

// Record is one message in the outbox: what a publish needs, plus the
// in-flight state a client must persist to resume after a restart.
type Record struct {
	// Seq is assigned by Append: strictly increasing in append order, never
	// reused, and never going backwards across restarts (even after the
	// queue was emptied). Append ignores the value passed in.
	Seq uint64
	// Topic is stored as given; at most 65,535 bytes.
	Topic string
	// QoS is 0, 1 or 2.
	QoS byte
	// Retained is the retain flag.
	Retained bool
	// Payload is copied by Append; Read returns fresh copies.
	Payload []byte
	// Enqueued is set to the current time by Append when zero.
	Enqueued time.Time
	// Expires, when zero, is set by Append to Enqueued+Options.DefaultTTL if
	// DefaultTTL > 0, else the record never expires. Only PhaseQueued records
	// expire.
	Expires time.Time
	// Marker is the application's position for this record (a source
	// offset, a file name and line...), at most MaxMarker bytes. It is not
	// stored with the record: the queue keeps the marker of the last record
	// appended with one, in the same commit, and ResumePoint returns it even
	// after that record was removed (see Resumer). Read returns nil.
	Marker []byte
	// PacketID is in-flight state written by SetState (Append ignores it).
	PacketID uint16
	// Phase is in-flight state written by SetState (Append ignores it and
	// stores PhaseQueued).
	Phase Phase
}

// Phase is the in-flight state of a record.
type Phase uint8

const (
	// PhaseQueued: never handed to the network. The only phase that expires
	// or that OverflowDropOldest drops.
	PhaseQueued Phase = 0
	// PhaseSent: handed to the network with Record.PacketID.
	PhaseSent Phase = 1
	// PhaseReleased: QoS 2 PUBREC received; PUBREL is due with Record.PacketID.
	PhaseReleased Phase = 2
)

// String returns the phase name.
func (p Phase) String() string {
	switch p {
	case PhaseQueued:
		return "queued"
	case PhaseSent:
		return "sent"
	case PhaseReleased:
		return "released"
	}
	return fmt.Sprintf("Phase(%d)", uint8(p))
}

func (p Phase) valid() bool { return p <= PhaseReleased }

// Stats is a snapshot of a Queue. Taking it costs O(1): counters only, plus
// one record lookup for Oldest when the head changed since the last call.
type Stats struct {
	Len      int       // records in the queue (committed, not removed)
	Bytes    int64     // sum of the encoded sizes of those records (what MaxBytes limits)
	InFlight int       // records whose Phase is not PhaseQueued
	Oldest   time.Time // Enqueued of the head record; zero when empty
	LastSeq  uint64    // highest sequence ever committed (survives restarts)
	Pending  int       // appends accepted by the limits but not yet committed

	// Counters since Open/NewMemory.
	Appended uint64 // records appended
	Removed  uint64 // records removed by Remove
	Dropped  uint64 // records dropped by OverflowDropOldest
	Expired  uint64 // PhaseQueued records that expired
	Corrupt  uint64 // records quarantined because they could not be read
	// CorruptJournal counts the damaged stretches of the journal that Open
	// skipped (each one frame or more; the records in them are lost), each
	// reported to Options.OnCorrupt as a *JournalCorruptError. A torn last
	// frame after a crash is not damage and is not counted. Memory: 0.
	CorruptJournal uint64
	// LoosePermissions counts the paths that Open found open to group or
	// others: the outbox directory, when its group or other bits were set,
	// and the files and directories in it with such bits. Open logged a
	// warning and restricted them to the owner (Options.RequirePrivate
	// refuses instead). 0 when the directory was private. Memory: 0.
	LoosePermissions uint64
	// Commits counts store transactions (Badger: each one group of
	// appends, state changes and removals, with one sync unless NoSync;
	// while nothing is removed, Appended/Commits is the mean group-commit
	// batch). Memory: 0.
	Commits uint64
}

// Queue is the outbox contract, implemented by *Badger (durable, Open) and
// *Memory (ephemeral, NewMemory). All methods are safe for concurrent use.
type Queue interface {
	// Append assigns r.Seq, stores a copy of r and returns the sequence once
	// the record is as durable as Options.Durability promises; it is then
	// visible to Read. Limits and the overflow policy apply here.
	// Errors: ErrClosed, ErrFull, ErrTooLarge, ErrInvalidRecord,
	// ErrDiskFull, and ctx.Err() while OverflowBlock waits for room (ctx is
	// not consulted once the record is handed to the store).
	Append(ctx context.Context, r *Record) (uint64, error)

	// Read appends to buf, and returns, up to max records with Seq > after in
	// Seq order, in any Phase. It only returns records whose Append has
	// committed, never skipping one still committing. Expired PhaseQueued
	// records are removed and reported (Options.OnDrop, ErrExpired) instead
	// of returned; undecodable records are quarantined and reported
	// (*CorruptRecordError) and skipped. Read never returns a record after
	// Remove of it returned. Errors: ErrClosed, or a storage error.
	Read(after uint64, max int, buf []Record) ([]Record, error)

	// SetState durably records PacketID and Phase of a record, returning
	// once durable per Options.Durability (group-committed with appends).
	// Errors: ErrClosed, ErrNotFound, ErrInvalidRecord (bad phase),
	// ErrDiskFull, ctx.Err() while waiting.
	SetState(ctx context.Context, seq uint64, packetID uint16, phase Phase) error

	// Claim marks a live record as handed to the network: from then on it
	// neither expires nor is dropped by OverflowDropOldest, whatever its
	// recorded Phase, until Remove. A client claims each record just before
	// it gives it to the network, so that a message already on its way is
	// never also reported dropped. The mark lives in memory (SetState makes
	// a state durable); it is lost at Close, and a record that was claimed
	// and never got a durable state is PhaseQueued again after a restart.
	// Claiming a claimed record is a no-op. Errors: ErrNotFound (the record
	// left the queue: removed, dropped or expired), ErrClosed.
	Claim(seq uint64) error

	// Remove deletes records (acknowledged ones). Unknown sequences are
	// ignored. Stats and Read reflect it at once; the store deletes in
	// batches shortly after, and at Close. After a crash a removed record may
	// reappear (at-least-once), rarely. Errors: ErrClosed.
	Remove(seqs ...uint64) error

	// Wake returns a channel (capacity 1) that receives after every Append,
	// Remove, drop or expiry that changed the queue. A reader waits on it
	// instead of polling; one receive may stand for many changes.
	Wake() <-chan struct{}

	// Stats returns a snapshot.
	Stats() Stats

	// Close flushes pending removals, stops every goroutine the queue owns
	// and releases the directory. Idempotent; afterwards every method
	// returns ErrClosed.
	Close() error
}

// StateUpdate is one SetState of a SetStates batch.
type StateUpdate struct {
	Seq      uint64
	PacketID uint16
	Phase    Phase
}

// StateBatcher is implemented by queues that record several in-flight
// states at once, sharing one commit. Both implementations here do; a
// client falls back to concurrent SetState calls for a Queue that does not.
type StateBatcher interface {
	// SetStates records each update as SetState would, and returns the
	// first error (ErrClosed, ErrNotFound, ErrInvalidRecord, ErrDiskFull,
	// ErrStorage, ctx.Err()); the updates that could be written are.
	SetStates(ctx context.Context, updates []StateUpdate) error
}

// AsyncAppender is implemented by queues that take an append without
// waiting for its commit, so that one caller can have many records
// committing at once (group-committed together).
type AsyncAppender interface {
	// AppendAsync validates r, applies the limits and the overflow policy
	// (OverflowBlock waits here, with ctx), hands a copy of r to the store
	// and returns. Records handed over by AppendAsync and Append keep the
	// order of the calls that handed them over (calls from one goroutine,
	// or calls ordered otherwise). done, if not nil, is called exactly once,
	// on the store's goroutine, when the record is as durable as
	// Options.Durability promises (seq, nil) - under the queue's lock, as
	// the record becomes visible to Read and Stats, so a caller registers
	// the sequence before anything can act on the record - or failed (0,
	// ErrDiskFull, ErrStorage). It must be fast and must not call the
	// queue (nor wait for anything that does). When AppendAsync returns an
	// error, done is not called.
	AppendAsync(ctx context.Context, r *Record, done func(seq uint64, err error)) error
}

// MaxMarker is the largest Record.Marker.
const MaxMarker = 1024

// Resumer is implemented by queues that keep a producer's resume point.
type Resumer interface {
	// ResumePoint returns the sequence and the marker of the last record
	// appended with a non-nil Marker, as durable as that record (it
	// survives restarts, and the record's removal); 0 and nil if none.
	// A producer restarted after a crash continues right after it, so it
	// publishes nothing twice and skips nothing that was accepted.
	ResumePoint() (seq uint64, marker []byte)
}

var (
	_ Resumer       = (*Badger)(nil)
	_ Resumer       = (*Memory)(nil)
	_ AsyncAppender = (*Badger)(nil)
	_ AsyncAppender = (*Memory)(nil)
	_ Queue         = (*Badger)(nil)
	_ Queue         = (*Memory)(nil)
	_ StateBatcher  = (*Badger)(nil)
	_ StateBatcher  = (*Memory)(nil)
)
