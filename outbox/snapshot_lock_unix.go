//go:build unix

package outbox

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// lockShared takes a shared lock on dir, as Badger's read-only mode does:
// it fails while a process has dir open read-write (Badger holds an
// exclusive lock on the directory), and keeps one from opening it meanwhile.
func lockShared(dir string) (func(), error) {
	f, err := os.Open(dir)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_SH|unix.LOCK_NB); err != nil {
		_ = f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, lockedError(dir, err)
		}
		return nil, fmt.Errorf("%w: lock %s: %v", ErrCorrupt, dir, err)
	}
	return func() { _ = f.Close() }, nil
}

// lockExclusive takes the exclusive lock on dir that Badger takes when it
// opens dir read-write, so no Open or Snapshot can run while it is held.
func lockExclusive(dir string) (func(), error) {
	f, err := os.Open(dir)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		_ = f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, lockedError(dir, err)
		}
		return nil, fmt.Errorf("%w: lock %s: %v", ErrCorrupt, dir, err)
	}
	return func() { _ = f.Close() }, nil
}

// processAlive reports whether a process with this pid exists.
func processAlive(pid int) bool {
	err := unix.Kill(pid, 0)
	return err == nil || errors.Is(err, unix.EPERM)
}
