package outbox

import (
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/dgraph-io/badger/v4"
)

// maintain runs value-log garbage collection every GCInterval and after
// enough removals, and keeps file permissions owner-only.
func (b *Badger) maintain() {
	defer b.wg.Done()
	t := time.NewTimer(b.opts.GCInterval)
	defer t.Stop()
	var held func() // see runGC
	defer func() {
		if held != nil {
			// Closing: one more try, then let go (Badger cannot close
			// with an iterator open).
			if err := syncFiles(b.dir); err != nil {
				b.opts.Logger.Error("outbox: sync of values moved by value-log GC failed at close", "err", err)
			}
			held()
		}
	}()
	for {
		select {
		case <-b.quit:
			return
		case <-b.trim:
			if !trimMappings(b.dir) {
				b.trimOn.Store(false)
			}
			continue
		case <-t.C:
		case <-b.gcKick:
		}
		held = b.runGC(held)
		if b.trimOn.Load() {
			trimMappings(b.dir)
		}
		fixPerms(b.dir, b.opts.Logger)
		t.Reset(b.opts.GCInterval)
	}
}

// runGC rewrites value-log files that are mostly garbage, a few per round.
//
// Badger writes the values a collection moves without syncing them
// (SyncWrites is off with the journal) and then deletes the old file, unless
// an iterator is open. So a collection holds one, and lets go of it only
// once the directory was synced; if that sync fails, runGC returns the
// release (held) and the next round syncs again before collecting more.
func (b *Badger) runGC(held func()) func() {
	if held != nil {
		if err := syncFiles(b.dir); err != nil {
			b.opts.Logger.Error("outbox: sync of values moved by value-log GC failed; collection paused", "err", err)
			return held
		}
		held()
	}
	if b.opts.DiskReserve > 0 {
		// A rewrite needs room before it frees any.
		if free, ok := diskFree(b.dir); ok && free < b.opts.DiskReserve/2 {
			b.opts.Logger.Warn("outbox: value-log GC skipped, disk nearly full", "free", free)
			return nil
		}
	}
	release := func() {}
	if b.jr != nil && !b.jr.nosync {
		txn := b.db.NewTransaction(false)
		it := txn.NewIterator(badger.IteratorOptions{Prefix: metaNextSeqKey})
		release = func() {
			it.Close() // Badger deletes the rewritten files now
			txn.Discard()
		}
	}
	moved := false
rounds:
	for i := 0; i < 8; i++ {
		select {
		case <-b.quit:
			break rounds
		default:
		}
		if err := b.db.RunValueLogGC(0.5); err != nil {
			break // ErrNoRewrite: nothing worth rewriting; ErrRejected: busy
		}
		moved = true
	}
	if moved && b.jr != nil && !b.jr.nosync {
		if err := syncFiles(b.dir); err != nil {
			b.opts.Logger.Error("outbox: sync of values moved by value-log GC failed; collection paused", "err", err)
			return release
		}
	}
	release()
	return nil
}

// fixPerms sets every file under dir that others could read to 0600, and
// directories to 0700. Badger creates some files 0666 (less umask); the
// directory itself is 0700, so they are unreachable by others even before
// this runs.
func fixPerms(dir string, log *slog.Logger) {
	_ = filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		info, err := d.Info()
		if err != nil || info.Mode().Perm()&0o077 == 0 {
			return nil
		}
		mode := os.FileMode(0o600)
		if d.IsDir() {
			mode = 0o700
		}
		if err := os.Chmod(path, mode); err != nil && !os.IsNotExist(err) {
			log.Warn("outbox: cannot restrict permissions", "path", path, "err", err)
		}
		return nil
	})
}
