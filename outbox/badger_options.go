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
// hundreds of MiB; the device profile keeps Badger to a few MiB of heap,
// with records in the value log so that the LSM tree (which is memory-mapped
// and whose pages count in the process's RSS) holds only keys and pointers.
func badgerOptions(dir string, o Options) badger.Options {
	bo := badger.DefaultOptions(dir).
		WithLogger(slogBadger{o.Logger}).
		WithSyncWrites(o.Durability != NoSync).
		WithMetricsEnabled(false).
		WithDetectConflicts(false).
		WithNumGoroutines(1).
		WithNumVersionsToKeep(1).
		WithEncryptionKey(o.EncryptionKey).
		WithEncryptionKeyRotationDuration(o.EncryptionKeyRotation)
	switch o.Profile {
	case ProfileServer:
		bo = bo.
			WithMemTableSize(64 << 20).
			WithNumMemtables(3).
			WithBaseTableSize(8 << 20).
			WithBaseLevelSize(64 << 20).
			WithNumLevelZeroTables(5).
			WithNumLevelZeroTablesStall(15).
			WithNumCompactors(4).
			WithBlockCacheSize(64 << 20).
			WithIndexCacheSize(0).
			WithValueLogFileSize(256 << 20).
			WithValueThreshold(serverValueThreshold).
			WithCompression(options.Snappy)
	default:
		bo = bo.
			WithMemTableSize(4 << 20).
			WithNumMemtables(1).
			WithBaseTableSize(2 << 20).
			WithBaseLevelSize(8 << 20).
			WithNumLevelZeroTables(3).
			WithNumLevelZeroTablesStall(8).
			WithNumCompactors(2).
			WithBlockCacheSize(1 << 20).
			WithIndexCacheSize(0).
			WithValueLogFileSize(16 << 20).
			WithValueThreshold(64).
			WithCompression(options.None)
	}
	if len(o.EncryptionKey) > 0 {
		// Encrypted tables keep their decrypted indexes in this cache
		// (Badger panics without it).
		bo = bo.WithIndexCacheSize(2 << 20)
		if o.Profile == ProfileServer {
			bo = bo.WithIndexCacheSize(32 << 20)
		}
	}
	return bo
}

// serverValueThreshold: values below it are kept in the LSM tree.
var serverValueThreshold int64 = 64

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
		return fmt.Errorf("%w: %s: %v", ErrLocked, dir, err)
	case isNoSpace(err):
		return fmt.Errorf("%w: %s: %v", ErrDiskFull, dir, err)
	}
	return fmt.Errorf("%w: %s: %v", ErrCorrupt, dir, err)
}

// classifyWriteErr maps an error from a Badger write.
func classifyWriteErr(err error) error {
	if isNoSpace(err) {
		return fmt.Errorf("%w: %v", ErrDiskFull, err)
	}
	if errors.Is(err, badger.ErrDBClosed) {
		return ErrClosed
	}
	return fmt.Errorf("%w: %v", ErrStorage, err)
}
