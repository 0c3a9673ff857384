//go:build !unix

package outbox

import "fmt"

// lockShared: Badger's read-only mode, and so Snapshot, needs Unix.
func lockShared(dir string) (func(), error) {
	return nil, fmt.Errorf("%w: OpenSnapshot needs a Unix system", ErrInvalidOptions)
}

// lockExclusive: RotateKey needs Unix to lock the directory as Badger does.
func lockExclusive(dir string) (func(), error) {
	return nil, fmt.Errorf("%w: RotateKey needs a Unix system", ErrInvalidOptions)
}

// processAlive cannot tell here: a recorded pid is taken as alive.
func processAlive(pid int) bool { return true }
