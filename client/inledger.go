package client

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
)

// The inbound QoS 2 ledger: the packet identifiers of inbound QoS 2
// messages that a handler accepted and whose PUBREL has not arrived. Until
// the broker has the PUBREC it resends the PUBLISH (with DUP) on every new
// connection, a new process's included; an identifier in the ledger means
// "already handled: acknowledge, do not handle again".
//
// Two writes must be durable before a packet leaves:
//   - the identifier's entry, before its PUBREC (receiver.ack waits for it):
//     otherwise a process killed after the PUBREC was lost would handle the
//     resent PUBLISH again;
//   - its removal at the PUBREL, before the PUBCOMP (wireConn's writer waits
//     for it): once the broker has the PUBCOMP it may reuse the identifier
//     for a new message, which a stale entry would swallow after a restart.
//
// With a durable outbox the ledger is a file of fixed size next to it
// (inLedgerFile): a header, then one bit per identifier. A change rewrites
// the bytes it touched in place and one fsync makes a batch of changes
// durable (group commit: whoever waits first writes everything pending,
// the others wait for that write). Without an outbox directory it lives in
// memory and lasts the process.

const (
	inLedgerFile   = "holdfast-inbound-qos2"
	inLedgerMagic  = "HFIQ2\x00\x00\x01"
	inLedgerBitmap = 65536 / 8
	inLedgerSize   = len(inLedgerMagic) + inLedgerBitmap
)

type inLedger struct {
	f    *os.File // nil: in memory only
	sync bool     // fsync every batch (Durability other than NoSync)

	mu       sync.Mutex // guards every field below
	cond     *sync.Cond // broadcast when a flush ends
	bits     [inLedgerBitmap]byte
	dirty    []int                  // bitmap bytes changed since the last flush began
	all      bool                   // the whole bitmap changed (clear)
	cur      *stateBatch            // the batch pending changes belong to; nil if none
	at       map[uint16]*stateBatch // the batch of each identifier's last change, until durable
	flushing bool
	closed   bool
}

func newMemLedger() *inLedger {
	l := &inLedger{at: map[uint16]*stateBatch{}}
	l.cond = sync.NewCond(&l.mu)
	return l
}

// openInLedger opens (or creates) the ledger file in dir. A file of the
// wrong size or header is logged and started empty: duplicates become
// possible after a crash, nothing is lost.
func openInLedger(dir string, fsync bool, log *slog.Logger) (*inLedger, error) {
	l := newMemLedger()
	l.sync = fsync
	path := filepath.Join(dir, inLedgerFile)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("holdfast: inbound QoS 2 ledger: %w", err)
	}
	buf := make([]byte, inLedgerSize+1)
	n, err := f.ReadAt(buf, 0)
	if err != nil && !errors.Is(err, io.EOF) {
		_ = f.Close()
		return nil, fmt.Errorf("holdfast: inbound QoS 2 ledger: %w", err)
	}
	if n == inLedgerSize && bytes.Equal(buf[:len(inLedgerMagic)], []byte(inLedgerMagic)) {
		copy(l.bits[:], buf[len(inLedgerMagic):inLedgerSize])
		l.f = f
		return l, nil
	}
	if n != 0 {
		log.Error("holdfast: inbound QoS 2 ledger unreadable; starting it empty (messages handled before may be handled again)",
			"path", path, "size", n)
	}
	fresh := make([]byte, inLedgerSize)
	copy(fresh, inLedgerMagic)
	err = f.Truncate(0)
	if err == nil {
		_, err = f.WriteAt(fresh, 0)
	}
	if err == nil {
		err = f.Sync()
	}
	if err == nil {
		err = syncDir(dir)
	}
	if err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("holdfast: inbound QoS 2 ledger: %w", err)
	}
	l.f = f
	return l, nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// has reports whether id is in the ledger (durable or not yet).
func (l *inLedger) has(id uint16) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.bits[id/8]&(1<<(id%8)) != 0
}

// add puts id in the ledger and returns the batch that makes it durable
// (nil when nothing needs writing).
func (l *inLedger) add(id uint16) *stateBatch { return l.set(id, true) }

// remove takes id out of the ledger and returns the batch that makes it
// durable, or that of an earlier change of id still being written (nil
// when nothing is pending).
func (l *inLedger) remove(id uint16) *stateBatch { return l.set(id, false) }

func (l *inLedger) set(id uint16, on bool) *stateBatch {
	l.mu.Lock()
	defer l.mu.Unlock()
	i, bit := int(id/8), byte(1)<<(id%8)
	if (l.bits[i]&bit != 0) == on {
		return l.pendingLocked(id)
	}
	l.bits[i] ^= bit
	if l.f == nil || l.closed {
		return nil
	}
	l.dirty = append(l.dirty, i)
	b := l.batchLocked()
	l.at[id] = b
	return b
}

// clear empties the ledger (the broker holds no session, so no identifier
// is in use) and returns the batch that makes it durable.
func (l *inLedger) clear() *stateBatch {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.bits == [inLedgerBitmap]byte{} {
		return nil
	}
	l.bits = [inLedgerBitmap]byte{}
	if l.f == nil || l.closed {
		return nil
	}
	l.all = true
	b := l.batchLocked()
	for id := range l.at {
		l.at[id] = b
	}
	return b
}

func (l *inLedger) batchLocked() *stateBatch {
	if l.cur == nil {
		l.cur = &stateBatch{done: make(chan struct{})}
	}
	return l.cur
}

// pending returns the batch of id's last change while it is not durable.
func (l *inLedger) pending(id uint16) *stateBatch {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.pendingLocked(id)
}

func (l *inLedger) pendingLocked(id uint16) *stateBatch {
	b := l.at[id]
	if b != nil && b.isDone() && b.err == nil {
		delete(l.at, id)
		return nil
	}
	return b
}

// wait returns once b is durable, writing it (and whatever else is
// pending) unless another caller already is. A failed batch's changes are
// pending again: a later wait retries them.
func (l *inLedger) wait(b *stateBatch) error {
	if b == nil {
		return nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	for !b.isDone() {
		if l.flushing {
			l.cond.Wait()
			continue
		}
		l.flushLocked()
	}
	return b.err
}

// flushLocked writes the pending changes in one batch. Called with l.mu
// held; it releases it while writing.
func (l *inLedger) flushLocked() {
	b := l.cur
	if b == nil {
		return
	}
	dirty, all := l.dirty, l.all
	l.cur, l.dirty, l.all = nil, nil, false
	if l.f == nil { // closed after a failed write
		b.err = fmt.Errorf("holdfast: inbound QoS 2 ledger: %w", ErrClosed)
		close(b.done)
		l.cond.Broadcast()
		return
	}
	// The values are taken now: a later change goes in a later batch, and
	// batches are written one at a time, in order.
	var snapshot []byte
	var writes []byteWrite
	if all {
		snapshot = append([]byte(nil), l.bits[:]...)
	} else {
		writes = make([]byteWrite, len(dirty))
		for k, i := range dirty {
			writes[k] = byteWrite{i, l.bits[i]}
		}
	}
	l.flushing = true
	l.mu.Unlock()
	err := l.write(snapshot, writes)
	l.mu.Lock()
	l.flushing = false
	if err != nil {
		// Pending again, in a new batch, which the identifiers that pointed
		// at the failed one now point at.
		l.dirty = append(l.dirty, dirty...)
		l.all = l.all || all
		nb := l.batchLocked()
		for id, ab := range l.at {
			if ab == b {
				l.at[id] = nb
			}
		}
		b.err = fmt.Errorf("holdfast: writing the inbound QoS 2 ledger: %w", err)
	}
	close(b.done)
	l.cond.Broadcast()
}

// byteWrite is one bitmap byte to write: its index and value.
type byteWrite struct {
	i int
	v byte
}

// write rewrites the bitmap (snapshot) or some of its bytes, then syncs.
func (l *inLedger) write(snapshot []byte, writes []byteWrite) error {
	off := int64(len(inLedgerMagic))
	if snapshot != nil {
		if _, err := l.f.WriteAt(snapshot, off); err != nil {
			return err
		}
	}
	for _, w := range writes {
		if _, err := l.f.WriteAt([]byte{w.v}, off+int64(w.i)); err != nil {
			return err
		}
	}
	if l.sync {
		return fdatasync(l.f)
	}
	return nil
}

// close writes what is pending and closes the file.
func (l *inLedger) close() error {
	l.mu.Lock()
	for l.flushing {
		l.cond.Wait()
	}
	var err error
	if b := l.cur; b != nil {
		l.flushLocked()
		err = b.err
	}
	l.closed = true
	f := l.f
	l.f = nil
	l.mu.Unlock()
	if f == nil {
		return err
	}
	return errors.Join(err, f.Close())
}
