package outbox

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"syscall"

	"github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/badger/v4/options"
)

// badgerOptions maps a profile onto Badger's options. Badger's defaults
// (64 MiB memtables x5, a 256 MiB block cache, 1 GiB value-log files) cost
// hundreds of MiB. Both profiles keep records in the value log, so that the
// LSM tree (memory-mapped; its pages count in the process's RSS) holds only
// keys and pointers; the device profile also keeps Badger's live heap
// around 15 MiB (memtable, table builders) where the defaults take hundreds.
func badgerOptions(dir string, o Options) badger.Options {
	bo := badger.DefaultOptions(dir).
		WithLogger(slogBadger{o.Logger}).
		WithSyncWrites(!useJournal(o) && o.Durability != NoSync).
		WithMetricsEnabled(false).
		WithDetectConflicts(false).
		WithNumGoroutines(1).
		WithNumVersionsToKeep(1).
		WithEncryptionKey(o.EncryptionKey).
		WithEncryptionKeyRotationDuration(o.EncryptionKeyRotation)
	switch o.Profile {
	case ProfileServer:
		bo = bo.
			WithMemTableSize(32 << 20).
			WithNumMemtables(2).
			WithBaseTableSize(8 << 20).
			WithBaseLevelSize(64 << 20).
			WithNumLevelZeroTables(5).
			WithNumLevelZeroTablesStall(15).
			WithNumCompactors(4).
			WithBlockCacheSize(32 << 20).
			WithIndexCacheSize(0).
			WithValueLogFileSize(256 << 20).
			WithValueThreshold(serverValueThreshold).
			WithCompression(options.Snappy)
	default:
		bo = bo.
			WithMemTableSize(1 << 20).
			WithNumMemtables(1).
			WithBaseTableSize(1 << 20).
			WithBaseLevelSize(2 << 20).
			WithNumLevelZeroTables(3).
			WithNumLevelZeroTablesStall(8).
			WithNumCompactors(2).
			WithBlockCacheSize(0). // blocks are read in place from the mapped tables
			WithIndexCacheSize(0).
			WithValueLogFileSize(4 << 20).
			WithValueThreshold(64).
			WithCompression(options.None)
		// 1 MiB tables on every level. Each table build holds about twice
		// the table size plus a 3 MiB index builder, and compactions build
		// several at once: measured peak RSS with 1,000,000 records was
		// ~62 MiB with 1 MiB tables, ~72 MiB with 256 KiB (more builds) and
		// 72-116 MiB with 2 MiB.
		bo.TableSizeMultiplier = 1
	}
	if len(o.EncryptionKey) > 0 && o.Profile == ProfileDevice {
		// Encrypted blocks and indexes are decrypted into these caches
		// (Badger requires them).
		bo = bo.WithBlockCacheSize(1 << 20).WithIndexCacheSize(2 << 20)
	} else if len(o.EncryptionKey) > 0 {
		bo = bo.WithIndexCacheSize(32 << 20)
	}
	return bo
}

// serverValueThreshold: records go to the value log in the server profile
// too. Keeping small records in the LSM tree measured about 20% more appends/s
// (one file synced per commit instead of two), but a backlog then costs
// compactions that rewrite payloads, an Open that scans them (1,000,000
// records: ~280 MiB read, up to 0.7 GiB of RSS), and much more memory; a
// queue that may hold a long backlog is better off with payloads written
// once.
const serverValueThreshold = 64

// slogBadger adapts Badger's logger to slog. Badger's Info chatter (replays,
// compactions) goes to Debug.
type slogBadger struct{ l *slog.Logger }

func (s slogBadger) log(level slog.Level, format string, args []any) {
	if !s.l.Enabled(context.Background(), level) {
		return
	}
	s.l.Log(context.Background(), level, strings.TrimSpace(fmt.Sprintf(format, args...)), "component", "badger")
}

func (s slogBadger) Errorf(f string, a ...any)   { s.log(slog.LevelError, f, a) }
func (s slogBadger) Warningf(f string, a ...any) { s.log(slog.LevelWarn, f, a) }
func (s slogBadger) Infof(f string, a ...any)    { s.log(slog.LevelDebug, f, a) }
func (s slogBadger) Debugf(f string, a ...any)   { s.log(slog.LevelDebug-4, f, a) }

// isNoSpace reports ENOSPC. Badger flattens most error chains into text, so
// the message is checked too.
func isNoSpace(err error) bool {
	return errors.Is(err, syscall.ENOSPC) || (err != nil && strings.Contains(err.Error(), "no space left on device"))
}

// classifyOpenErr maps an error from badger.Open to this package's sentinels.
func classifyOpenErr(dir string, err error) error {
	msg := err.Error()
	switch {
	case errors.Is(err, badger.ErrEncryptionKeyMismatch) || strings.Contains(msg, badger.ErrEncryptionKeyMismatch.Error()):
		return fmt.Errorf("%w: %s: %v", ErrBadKey, dir, err)
	case strings.Contains(msg, "Cannot acquire directory lock") || errors.Is(err, syscall.EWOULDBLOCK):
		return lockedError(dir, err) // names the holder's pid when Badger recorded it
	case isNoSpace(err):
		return fmt.Errorf("%w: %s: %v", ErrDiskFull, dir, err)
	}
	return fmt.Errorf("%w: %s: %v", ErrCorrupt, dir, err)
}

// classifyWriteErr maps an error from a Badger write.
func classifyWriteErr(err error) error {
	if errors.Is(err, ErrDiskFull) || errors.Is(err, ErrStorage) {
		return err
	}
	if isNoSpace(err) {
		return fmt.Errorf("%w: %v", ErrDiskFull, err)
	}
	if errors.Is(err, badger.ErrDBClosed) {
		return ErrClosed
	}
	return fmt.Errorf("%w: %v", ErrStorage, err)
}
