package outbox

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/dgraph-io/badger/v4"
)

// RotateKey changes the encryption key of the closed, encrypted outbox in
// dir from oldKey to newKey. Afterwards Open (and OpenSnapshot) accept
// newKey only; every record, in-flight state and the resume point are as
// they were.
//
// Badger encrypts records with data keys, and keeps the data keys in its
// key registry (the KEYREGISTRY file) encrypted with Options.EncryptionKey.
// RotateKey re-encrypts the key registry under newKey: it writes a new
// registry beside the old one, syncs it, renames it over the old one and
// syncs the directory, so a crash leaves the directory readable with
// exactly one of the two keys. The records themselves are not rewritten
// (see the package doc's Caveats).
//
// Both keys must be 16, 24 or 32 bytes: turning encryption on or off for
// an existing outbox is not supported (create a new outbox and copy the
// records). RotateKey holds the directory's lock while it works, so no
// Open can run meanwhile.
//
// Errors: ErrInvalidOptions (a key of the wrong length, or newKey equal
// to oldKey), an error wrapping fs.ErrNotExist (no outbox in dir),
// ErrLocked (a *LockedError: a process or an open Queue uses dir),
// ErrBadKey (oldKey is not the directory's key, or the directory is not
// encrypted), ErrCorrupt, ErrStorage (the new registry could not be
// written or synced: the outbox opens with one of the two keys, the old
// one unless the failure came after the rename; try both). On any error
// but ErrStorage nothing in dir was changed.
func RotateKey(dir string, oldKey, newKey []byte) error {
	for _, k := range [][]byte{oldKey, newKey} {
		switch len(k) {
		case 16, 24, 32:
		default:
			return fmt.Errorf("%w: RotateKey: keys must be 16, 24 or 32 bytes, got %d", ErrInvalidOptions, len(k))
		}
	}
	if string(oldKey) == string(newKey) {
		return fmt.Errorf("%w: RotateKey: the new key is the old key", ErrInvalidOptions)
	}
	// OpenKeyRegistry in read-only mode takes a missing file for an empty
	// registry; a missing outbox must not pass for one.
	if _, err := os.Stat(filepath.Join(dir, badger.KeyRegistryFileName)); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("outbox: RotateKey: no outbox in %s: %w", dir, err)
		}
		return fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	unlock, err := lockExclusive(dir)
	if err != nil {
		return err
	}
	defer unlock()
	opt := badger.KeyRegistryOptions{Dir: dir, ReadOnly: true, EncryptionKey: oldKey}
	kr, err := badger.OpenKeyRegistry(opt)
	if err != nil {
		return classifyOpenErr(dir, err)
	}
	defer kr.Close()
	opt.EncryptionKey = newKey
	if err := writeKeyRegistry(kr, opt); err != nil {
		return fmt.Errorf("%w: RotateKey: %s: %v", ErrStorage, dir, err)
	}
	fixPerms(dir, slog.New(slog.DiscardHandler))
	return nil
}

// writeKeyRegistry calls badger.WriteKeyRegistry, which panics on some
// failures, turning a panic into an error.
func writeKeyRegistry(kr *badger.KeyRegistry, opt badger.KeyRegistryOptions) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("badger panicked: %v", p)
		}
	}()
	return badger.WriteKeyRegistry(kr, opt)
}
