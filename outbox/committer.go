package outbox

import (
	"encoding/binary"
	"fmt"
	"time"
)

// committer is the only goroutine that writes to the journal and to Badger
// (value-log GC aside). It takes every request waiting and commits them as
// one batch: one journal frame and one fdatasync (see write), so one sync
// covers the whole batch; without a journal, one Badger transaction with
// SyncWrites. Sequences are assigned here, in batch order, so assignment
// order is commit order is read order. SyncEach takes one request per
// batch. Pending removals ride along with every batch, or go alone after
// RemoveDelay (or at once past deleteFlushCount). Checkpoints run here too.
func (b *Badger) committer() {
	defer b.wg.Done()
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	timerSet := false
	batch := make([]*writeReq, 0, 64)
	lastBatch := 0               // requests in the previous commit
	var lastCommit time.Duration // how long it took
	for {
		flush := false
		select {
		case r := <-b.reqs:
			batch = append(batch, r)
			if b.opts.Durability != SyncEach {
				var size batchSize
				batch, size = b.gather(batch, b.sizeOf(batch))
				batch = b.linger(batch, size, lastBatch, lastCommit)
			}
		case <-b.kick:
			b.mu.Lock()
			n := len(b.delq)
			b.mu.Unlock()
			switch {
			case n >= deleteFlushCount:
				flush = true
			case n > 0 && !timerSet:
				timer.Reset(b.opts.RemoveDelay)
				timerSet = true
			}
		case <-timer.C:
			timerSet = false
			flush = true
		case <-b.quit:
			// Close waited for every op: no request can arrive. Write what
			// is left of the removals, with a few retries.
			timer.Stop()
			for fails := 0; fails < 3 && b.pendingDeletes() > 0; {
				before := b.pendingDeletes()
				b.commit(nil)
				if b.pendingDeletes() >= before {
					fails++
				}
			}
			if n := b.pendingDeletes(); n > 0 {
				b.opts.Logger.Error("outbox: removals not written at close; they will reappear", "count", n)
			}
			if b.jr != nil && !b.keepJournal {
				if err := b.checkpoint(); err != nil {
					b.opts.Logger.Error("outbox: checkpoint at close failed; the journal will be replayed at the next Open", "err", err)
					b.closeErr = fmt.Errorf("checkpoint at close (the records are safe in the journal): %w", err)
				}
			}
			return
		}
		if len(batch) > 0 || flush {
			start := time.Now()
			b.commit(batch)
			if len(batch) > 0 {
				lastCommit = time.Since(start)
				lastBatch = len(batch)
			}
			clear(batch)
			batch = batch[:0]
		}
		if n := b.pendingDeletes(); n >= deleteFlushCount {
			b.kickCommitter() // more than one transaction's worth: keep going
		} else if n > 0 && !timerSet {
			timer.Reset(b.opts.RemoveDelay)
			timerSet = true
		}
	}
}

func (b *Badger) pendingDeletes() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.delq)
}

// freeSpace returns the free bytes of the outbox's file system, from a
// statfs at most every 100 ms or 1 MiB of appends (less what was appended
// since) while well above the reserve: one statfs per batch was 2% of the
// CPU of a lone publisher.
// Committer only.
func (b *Badger) freeSpace(adding int64) (int64, bool) {
	// Near the reserve every batch looks again (space may have been freed).
	if b.freeOK && time.Since(b.freeAt) < 100*time.Millisecond && b.freeUsed+adding < 1<<20 &&
		b.free-b.freeUsed-adding > b.opts.DiskReserve+4<<20 {
		b.freeUsed += adding
		return b.free - b.freeUsed, true
	}
	b.free, b.freeOK = diskFree(b.dir)
	b.freeAt, b.freeUsed = time.Now(), 0
	return b.free, b.freeOK
}

// batchSize is what the batch limits count of a batch.
type batchSize struct {
	n          int
	bytes, raw int64 // Badger's estimate; record bytes (journal)
}

func (b *Badger) sizeOf(batch []*writeReq) batchSize {
	s := batchSize{}
	for _, r := range batch {
		b.grow(&s, r)
	}
	return s
}

func (b *Badger) grow(s *batchSize, r *writeReq) {
	s.n++
	s.bytes += b.estimate(r)
	s.raw += int64(len(r.value))
}

// hasRoom reports whether any request still fits in a batch of size s: one
// Badger transaction (half its limits) and one journal frame.
func (b *Badger) hasRoom(s batchSize) bool {
	return s.n < min(b.maxBatchCount, b.maxBatchEntries-1) &&
		s.bytes+b.vThreshold+recordKeyLen+2 <= b.maxBatchBytes &&
		s.raw <= b.maxJournalBatch-int64(b.opts.MaxRecordBytes)
}

// gather adds the requests already waiting, within the batch limits.
func (b *Badger) gather(batch []*writeReq, s batchSize) ([]*writeReq, batchSize) {
	for b.hasRoom(s) {
		select {
		case r := <-b.reqs:
			batch = append(batch, r)
			b.grow(&s, r)
		default:
			return batch, s
		}
	}
	return batch, s
}

// linger waits briefly for the rest of a batch. When the previous commit
// carried several requests, their callers are likely to come back together;
// committing the first one alone would split them over two syncs. So the
// committer waits until as many requests as last time are here, for at most
// the previous commit's duration (measured with 16 appenders: ~15.5 records
// per commit with the wait, ~8 without, and about 1.7x the appends/s).
// A lone appender (previous batch of one) never waits.
func (b *Badger) linger(batch []*writeReq, s batchSize, target int, lastCommit time.Duration) []*writeReq {
	if target <= 1 || len(batch) >= target || !b.hasRoom(s) {
		return batch
	}
	wait := min(lastCommit, 2*time.Millisecond)
	if wait < 20*time.Microsecond {
		return batch
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	for len(batch) < target && b.hasRoom(s) {
		select {
		case r := <-b.reqs:
			batch = append(batch, r)
			b.grow(&s, r)
			batch, s = b.gather(batch, s)
		case <-t.C:
			return batch
		case <-b.quit:
			return batch
		}
	}
	return batch
}

// estimate mirrors Badger's accounting of an entry against its batch limit.
func (b *Badger) estimate(r *writeReq) int64 {
	if r.state {
		return 9 + stateLen + 2
	}
	if int64(len(r.value)) < b.vThreshold {
		return recordKeyLen + int64(len(r.value)) + 2
	}
	return recordKeyLen + 12 + 2
}

// commit writes one batch of requests plus as many pending removals as fit,
// then completes the requests.
func (b *Badger) commit(batch []*writeReq) {
	if b.jr != nil {
		b.chooseMode()
	}
	var appends, states []*writeReq
	var appendBytes int64
	budget := b.maxBatchBytes
	for _, r := range batch {
		budget -= b.estimate(r)
		if r.state {
			states = append(states, r)
		} else {
			appends = append(appends, r)
			appendBytes += int64(len(r.value))
		}
	}
	// Refuse writes the disk cannot take: Badger writes through memory
	// maps, and a full disk there is SIGBUS, not an error.
	if len(batch) > 0 && b.opts.DiskReserve > 0 {
		if free, ok := b.freeSpace(appendBytes); ok {
			if free < b.opts.DiskReserve+appendBytes {
				err := fmt.Errorf("%w: %d bytes free in %s, reserve %d", ErrDiskFull, free, b.dir, b.opts.DiskReserve)
				b.fail(appends, err)
				appends = nil
			}
			if free < b.opts.DiskReserve/2 {
				err := fmt.Errorf("%w: %d bytes free in %s", ErrDiskFull, free, b.dir)
				b.fail(states, err)
				states = nil
			}
		}
	}

	// Under the lock: decide each state change (a record removed meanwhile
	// gets ErrNotFound) and take as many removals as fit.
	var dels []delItem
	b.mu.Lock()
	for _, r := range states {
		switch {
		case b.idx.size(r.seq) == 0:
			r.skip = true
			r.err = fmt.Errorf("%w: seq %d", ErrNotFound, r.seq)
		case r.phase == PhaseQueued:
			_, r.delState = b.stateKeys[r.seq]
			r.skip = !r.delState // nothing stored: nothing to write
			delete(b.stateKeys, r.seq)
		default:
			b.stateKeys[r.seq] = struct{}{}
		}
	}
	n := 0
	entries := len(batch) + 1 // + next-sequence metadata
	for n < len(b.delq) && budget > 256 && entries+3 <= b.maxBatchEntries {
		budget -= 2 * (recordKeyLen + 2)
		entries += 2
		if b.delq[n].quarantine {
			budget -= int64(len(b.delq[n].raw)) + 11
			entries++
		}
		n++
	}
	if n > 0 {
		dels = append(dels, b.delq[:n]...)
		rest := copy(b.delq, b.delq[n:])
		clear(b.delq[rest:])
		b.delq = b.delq[:rest]
	}
	b.mu.Unlock()

	err := b.write(appends, states, dels)
	if err != nil && len(dels) > 0 && len(appends)+len(states) > 0 {
		// Whatever failed, a removal must not take appends down with it:
		// retry them alone (the removals are retried later).
		b.opts.Logger.Error("outbox: commit failed, retrying without removals", "err", err)
		b.requeue(dels)
		dels = nil
		err = b.write(appends, states, nil)
	}
	b.finish(&result{batch: batch, appends: appends, states: states, dels: dels, appendBytes: appendBytes, err: err, direct: !b.writeBack})
}

// chooseMode switches between write-back (records stay in the journal
// until a checkpoint: the common case, where the broker acknowledges them
// long before) and direct writes (each batch is applied to Badger as well,
// unsynced) while a backlog builds up. A backlog in write-back mode would be
// moved to Badger a journal at a time, in bursts that cost Badger far more
// memory (tables piling up in level 0) than a steady stream of small
// transactions; measured with 1,000,000 records queued while the broker was
// away, device profile: peak RSS ~56 MiB with direct writes, 85-120 MiB in
// write-back. Committer only.
func (b *Badger) chooseMode() {
	b.mu.Lock()
	n, bytes := b.idx.n, b.bytes
	b.mu.Unlock()
	switch {
	case b.writeBack && (n > backlogRecords || bytes > b.jr.size/4):
		// Everything in the journal goes to Badger first, so that from now
		// on all records up to the last one are there.
		if err := b.checkpoint(); err != nil {
			b.opts.Logger.Warn("outbox: checkpoint before direct writes failed; staying in write-back", "err", err)
			return
		}
		b.writeBack = false
	case !b.writeBack && n < backlogRecords/4 && bytes < b.jr.size/16:
		b.writeBack = true
	}
}

// backlogRecords queued make the committer write records to Badger as
// they come (see chooseMode).
const backlogRecords = 4096

// result is a batch after its write.
type result struct {
	batch           []*writeReq
	appends, states []*writeReq
	dels            []delItem
	appendBytes     int64
	err             error
	direct          bool // appends were written to Badger too
}

// finish completes a batch: its effects become visible and its callers
// return.
func (b *Badger) finish(it *result) {
	appends, states, dels, err := it.appends, it.states, it.dels, it.err
	b.mu.Lock()
	if err != nil {
		werr := classifyWriteErr(err)
		b.opts.Logger.Error("outbox: commit failed", "err", err, "appends", len(appends), "states", len(states), "removals", len(dels))
		for _, r := range appends {
			r.err = werr
			b.abortLocked(int64(r.size))
		}
		for _, r := range states {
			if r.err == nil {
				r.err = werr
				// The state key may or may not exist now; deleting it later is safe.
				b.stateKeys[r.seq] = struct{}{}
			}
		}
		b.delq = append(dels, b.delq...) // retried with the next batch
	} else {
		if len(appends) > 0 || len(states) > 0 || len(dels) > 0 {
			b.commits++
		}
		for i := len(appends) - 1; i >= 0; i-- {
			if r := appends[i]; r.marker != nil {
				b.markSeq, b.mark = r.seq, r.marker
				break
			}
		}
		for _, r := range appends {
			switch {
			case b.jr == nil:
			case it.direct:
				// In Badger already, and so is everything before it (the
				// switch to direct writes checkpointed).
				b.spilled = r.seq
				b.maybeSpilled = max(b.maybeSpilled, r.seq)
			default:
				b.mem[r.seq] = jref{r.jpos, uint32(len(r.value))}
			}
			b.committedLocked(r.seq, r.size, r.enq, r.exp)
			if r.cb != nil {
				// The caller learns its sequence as the record becomes
				// visible, atomically (see AsyncAppender).
				r.cb(r.seq, nil)
				r.cb = nil
			}
		}
		for _, r := range states {
			if r.err == nil {
				b.setStateLocked(r.seq, r.packetID, r.phase)
			}
		}
	}
	b.mu.Unlock()
	for _, r := range it.batch {
		if r.done != nil {
			close(r.done)
		}
		if r.cb != nil { // failed
			r.cb(0, r.err)
		}
	}
	if err == nil && len(appends) > 0 {
		b.notify()
		b.count(it.appendBytes)
	}
}

// write assigns sequences to the appends and commits one batch. Sequences
// of a failed batch are not reused.
//
// Without a journal, everything goes into one synced Badger transaction.
// With one, the batch is one journal frame (fdatasync'd unless it holds
// only removals); appends, and changes to records appended since the last
// checkpoint, live only there (Badger.mem) until the next checkpoint
// writes what is still queued to Badger. Changes to older records go to
// Badger too, unsynced: the frame covers them.
func (b *Badger) write(appends, states []*writeReq, dels []delItem) error {
	jr := b.jr
	if need := 0; jr != nil {
		if need = frameBound(appends, states, dels); !jr.fits(need) {
			if err := b.checkpoint(); err != nil {
				return err
			}
			if !jr.fits(need) {
				// The batch limits keep a frame within half the journal.
				return fmt.Errorf("batch of %d bytes larger than the journal", need)
			}
		}
	}
	txn := b.db.NewTransaction(true)
	defer txn.Discard()
	var err error
	if jr != nil {
		jr.begin()
	}
	// Changes to records that may be in Badger go there too.
	disk := func(seq uint64) bool { return jr == nil || seq <= b.maybeSpilled }
	toBadger := 0
	set := func(k, v []byte, disk bool) int {
		if disk {
			if err == nil {
				err = txn.Set(k, v)
			}
			toBadger++
		}
		if jr != nil {
			return jr.set(k, v)
		}
		return 0
	}
	del := func(k []byte, disk bool) {
		if disk {
			if err == nil {
				err = txn.Delete(k)
			}
			toBadger++
		}
		if jr != nil {
			jr.del(k)
		}
	}
	writes := 0
	for _, r := range appends {
		r.seq = b.nextSeq
		b.nextSeq++
		r.jpos = int64(set(recordKey(r.seq, r.size), r.value, jr == nil || !b.writeBack))
		writes++
	}
	if len(appends) > 0 {
		set(metaNextSeqKey, binary.BigEndian.AppendUint64(nil, b.nextSeq), jr == nil || !b.writeBack)
	}
	for i := len(appends) - 1; i >= 0; i-- {
		if r := appends[i]; r.marker != nil {
			set(metaMarkerKey, encodeMarker(r.seq, r.marker), jr == nil || !b.writeBack)
			break
		}
	}
	synced := len(appends) > 0
	for _, r := range states {
		switch {
		case r.skip:
		case r.delState:
			del(seqKey(prefixState, r.seq), disk(r.seq))
			writes++
			synced = true
		default:
			set(seqKey(prefixState, r.seq), encodeState(r.packetID, r.phase), disk(r.seq))
			writes++
			synced = true
		}
	}
	for _, d := range dels {
		if d.size != 0 {
			del(recordKey(d.seq, d.size), disk(d.seq))
			if d.quarantine {
				set(seqKey(prefixQuarantine, d.seq), d.raw, true)
			}
		}
		if d.state {
			del(seqKey(prefixState, d.seq), disk(d.seq))
		}
		writes++
	}
	if err != nil || writes == 0 {
		return err
	}
	if jr == nil {
		return txn.Commit()
	}
	// Journal first: once the frame is synced the batch survives a power
	// loss whatever happens to Badger's unsynced writes. A frame of
	// removals alone is not synced: losing one only makes records
	// reappear, and the next sync covers it.
	off, err := jr.write()
	if err == nil && synced {
		err = jr.sync()
	}
	if err != nil {
		return err
	}
	for _, r := range appends {
		r.jpos += off
	}
	if toBadger == 0 {
		return nil
	}
	if err := txn.Commit(); err != nil {
		// The frame is journaled but not applied; a replay would apply it
		// after the caller was told it failed. A checkpoint discards it.
		if cerr := b.checkpoint(); cerr != nil {
			b.opts.Logger.Error("outbox: checkpoint after a failed commit failed", "err", cerr)
		}
		return err
	}
	return nil
}

// frameBound is at least the size of the frame write makes of a batch.
func frameBound(appends, states []*writeReq, dels []delItem) int {
	n := setOpLen(len(metaNextSeqKey), 8)
	for _, r := range appends {
		n += setOpLen(recordKeyLen, len(r.value))
		if r.marker != nil {
			n += setOpLen(len(metaMarkerKey), 8+len(r.marker))
		}
	}
	n += len(states) * setOpLen(9, stateLen)
	for _, d := range dels {
		n += delOpLen(recordKeyLen) + delOpLen(9) + setOpLen(9, len(d.raw))
	}
	return n
}

// requeue puts removals back at the front of the queue.
func (b *Badger) requeue(dels []delItem) {
	b.mu.Lock()
	b.delq = append(dels, b.delq...)
	b.mu.Unlock()
}

// fail completes requests with err before anything was written.
func (b *Badger) fail(reqs []*writeReq, err error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, r := range reqs {
		r.err = err
		if !r.state {
			b.abortLocked(int64(r.size))
		}
	}
}
