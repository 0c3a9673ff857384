package outbox

import (
	"fmt"
	"log/slog"
	"time"
)

// Durability says when Append and SetState return relative to the disk.
type Durability uint8

const (
	// GroupCommit (the default): a call returns only after an fsync that
	// covers it; concurrent calls share one fsync. Durable across power loss
	// and fast under concurrency.
	GroupCommit Durability = iota
	// SyncEach: every call gets an fsync of its own before it returns.
	// Durable, and slow under concurrency; mostly a baseline.
	SyncEach
	// NoSync: a call returns once the record is in the operating system's
	// page cache. It survives a crash of this process but NOT a power loss
	// or kernel crash: records accepted in the last seconds may vanish.
	NoSync
)

// String returns the mode name.
func (d Durability) String() string {
	switch d {
	case GroupCommit:
		return "group-commit"
	case SyncEach:
		return "sync-each"
	case NoSync:
		return "no-sync"
	}
	return fmt.Sprintf("Durability(%d)", uint8(d))
}

// Profile selects how the Badger store trades memory for throughput.
type Profile uint8

const (
	// ProfileDevice (the default): small memtables and caches, small value-log
	// files, two compactors. The whole process stays small (tens of MiB) with
	// a backlog of millions of records.
	ProfileDevice Profile = iota
	// ProfileServer: large memtables (32 MiB), value-log files and caches,
	// four compactors, no paging out, for throughput. Expect a few hundred
	// MiB of RSS under a heavy write load.
	ProfileServer
)

// String returns the profile name.
func (p Profile) String() string {
	switch p {
	case ProfileDevice:
		return "device"
	case ProfileServer:
		return "server"
	}
	return fmt.Sprintf("Profile(%d)", uint8(p))
}

// Overflow is what Append does when a limit is reached.
type Overflow uint8

const (
	// OverflowReject (the default): Append returns ErrFull.
	OverflowReject Overflow = iota
	// OverflowBlock: Append waits until there is room, or its ctx ends.
	OverflowBlock
	// OverflowDropOldest: the oldest PhaseQueued records are dropped (and
	// reported through Options.OnDrop with ErrDropped) until the new one
	// fits. In-flight records are never dropped; when only they are left,
	// Append returns ErrFull.
	OverflowDropOldest
)

// String returns the policy name.
func (o Overflow) String() string {
	switch o {
	case OverflowReject:
		return "reject"
	case OverflowBlock:
		return "block"
	case OverflowDropOldest:
		return "drop-oldest"
	}
	return fmt.Sprintf("Overflow(%d)", uint8(o))
}

// DefaultMaxRecordBytes is the default for Options.MaxRecordBytes.
const DefaultMaxRecordBytes = 4 << 20

// maxRecordBytesCap bounds Options.MaxRecordBytes (MQTT's own limit is 256 MiB).
const maxRecordBytesCap = 256 << 20

// Options configures a Queue. The zero value is usable: group commit, device
// profile, no limits, no TTL, no encryption, nothing logged.
type Options struct {
	// Durability: GroupCommit (default), SyncEach or NoSync. Memory ignores it.
	Durability Durability

	// noJournal commits every batch as a synced Badger transaction, as an
	// EncryptionKey does: for benchmarks that weigh the journal.
	noJournal bool

	// Profile: ProfileDevice (default) or ProfileServer. Memory ignores it.
	Profile Profile

	// MaxRecords limits the number of records (committed plus being
	// appended). 0: no limit.
	MaxRecords int

	// MaxBytes limits the sum of encoded record sizes (payload + topic +
	// about 30 bytes each). 0: no limit. Not a bound on disk usage, which
	// includes not yet compacted garbage.
	MaxBytes int64

	// MaxRecordBytes limits one encoded record. 0: DefaultMaxRecordBytes
	// (4 MiB). At most 256 MiB. Larger records get ErrTooLarge.
	MaxRecordBytes int

	// DefaultTTL is applied by Append to records whose Expires is zero.
	// 0: such records never expire.
	DefaultTTL time.Duration

	// Overflow: OverflowReject (default), OverflowBlock or
	// OverflowDropOldest. Applies when MaxRecords or MaxBytes is reached.
	Overflow Overflow

	// EncryptionKey enables AES encryption at rest (Badger only): 16, 24 or
	// 32 bytes. nil: no encryption. A directory must always be opened with
	// the key it was created with (ErrBadKey otherwise).
	EncryptionKey []byte

	// EncryptionKeyRotation is how often the data key (encrypted with
	// EncryptionKey) is rotated. 0: 10 days.
	EncryptionKeyRotation time.Duration

	// OnDrop reports every record that left the queue without Remove: reason
	// wraps ErrDropped (OverflowDropOldest), ErrExpired (TTL), or is a
	// *CorruptRecordError. It is called without locks held, from the
	// goroutine that noticed (an Append, a Read, or the expiry timer), so it
	// must be fast and safe for concurrent use. It may call Stats, but not
	// block on the queue. nil: only counted in Stats.
	OnDrop func(seq uint64, reason error)

	// OnCorrupt reports damage that Open found in the middle of the
	// journal (Badger only): a *JournalCorruptError for each damaged
	// stretch, after it was logged at Error, copied aside and counted in
	// Stats.CorruptJournal. The records in the damaged frames are lost (a
	// gap in sequences); every valid frame after them is replayed. It is
	// called from Open, before Open returns (even if Open then fails), so it
	// cannot use the queue; it must be fast. nil: logged and counted only.
	OnCorrupt func(err error)

	// RequirePrivate makes Open fail with ErrPermissions, changing nothing,
	// when the existing outbox directory is open to group or others (any
	// of the mode bits 0077). false (default): Open logs a warning, counts
	// the paths in Stats.LoosePermissions and restricts them to the owner.
	// A directory Open creates is always 0700. Badger only.
	RequirePrivate bool

	// Logger receives the queue's and Badger's logs. nil: discarded.
	Logger *slog.Logger

	// DiskReserve is the free space (bytes) the filesystem must keep: Append
	// returns ErrDiskFull below it. Badger writes through memory maps, and a
	// write into a mapped file on a full disk kills the process (SIGBUS)
	// instead of returning an error, so Badger needs headroom for memtable
	// flushes, compactions and value-log files. 0: 16 MiB (device) or
	// 512 MiB (server). Negative: no check (only for disks that cannot
	// fill).
	DiskReserve int64

	// RemoveDelay is how long a removal may wait in memory before the store
	// deletes it in a batch (removals also ride along with every append
	// commit). Longer means fewer writes, and more records resent after a
	// crash. 0: 20ms.
	RemoveDelay time.Duration

	// GCInterval is how often value-log garbage collection runs on its own
	// (it also runs after enough removals). 0: 1 minute.
	GCInterval time.Duration

	// parallelLoad: Open scans record keys in parallel when the span of
	// sequences is at least this. 0: 131,072. Tests lower it.
	parallelLoad uint64
	// journalBytes (tests): the journal's size instead of the profile's,
	// so that tests reach checkpoints sooner.
	journalBytes int64
}

// normalize copies o, fills defaults and validates.
func (o Options) normalize() (Options, error) {
	if o.Durability > NoSync {
		return o, fmt.Errorf("%w: unknown Durability %d", ErrInvalidOptions, o.Durability)
	}
	if o.Profile > ProfileServer {
		return o, fmt.Errorf("%w: unknown Profile %d", ErrInvalidOptions, o.Profile)
	}
	if o.Overflow > OverflowDropOldest {
		return o, fmt.Errorf("%w: unknown Overflow %d", ErrInvalidOptions, o.Overflow)
	}
	if o.MaxRecords < 0 || o.MaxBytes < 0 || o.MaxRecordBytes < 0 || o.DefaultTTL < 0 ||
		o.EncryptionKeyRotation < 0 || o.RemoveDelay < 0 || o.GCInterval < 0 {
		return o, fmt.Errorf("%w: negative limit or duration", ErrInvalidOptions)
	}
	if o.MaxRecordBytes == 0 {
		o.MaxRecordBytes = DefaultMaxRecordBytes
	}
	if o.MaxRecordBytes > maxRecordBytesCap {
		return o, fmt.Errorf("%w: MaxRecordBytes %d above %d", ErrInvalidOptions, o.MaxRecordBytes, maxRecordBytesCap)
	}
	switch len(o.EncryptionKey) {
	case 0, 16, 24, 32:
	default:
		return o, fmt.Errorf("%w: EncryptionKey must be 16, 24 or 32 bytes, got %d", ErrInvalidOptions, len(o.EncryptionKey))
	}
	if o.EncryptionKey != nil {
		o.EncryptionKey = append([]byte(nil), o.EncryptionKey...)
	}
	if o.EncryptionKeyRotation == 0 {
		o.EncryptionKeyRotation = 10 * 24 * time.Hour
	}
	if o.DiskReserve == 0 {
		o.DiskReserve = 16 << 20
		if o.Profile == ProfileServer {
			o.DiskReserve = 512 << 20
		}
	}
	if o.RemoveDelay == 0 {
		o.RemoveDelay = 20 * time.Millisecond
	}
	if o.GCInterval == 0 {
		o.GCInterval = time.Minute
	}
	if o.parallelLoad == 0 {
		o.parallelLoad = 1 << 17
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return o, nil
}
