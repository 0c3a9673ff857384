package outbox

import (
	"context"
	"fmt"
	"sync"
	"time"
)

// backend is what core needs from a store. peek is called without core.mu;
// forget and quarantine with core.mu held.
type backend interface {
	// peek returns Enqueued and Expires of a live record.
	peek(seq uint64, size uint32) (enq, exp time.Time, err error)
	// forget deletes a record that left the queue (removed, dropped,
	// expired); the store may delete it later, but must not return it.
	forget(seq uint64, size uint32)
	// quarantine moves an undecodable record aside; raw may be nil.
	quarantine(seq uint64, size uint32, raw []byte)
}

// inflight is the in-flight state of a record that is not PhaseQueued.
type inflight struct {
	packetID uint16
	phase    Phase
}

// drop is one report for Options.OnDrop.
type drop struct {
	seq    uint64
	reason error
}

// core holds what both implementations share: the index of live records,
// in-flight states, limits and overflow, expiry, counters, Wake and the
// bookkeeping of Close. Storage is the backend's.
type core struct {
	opts Options
	be   backend

	// ops counts calls that use the store (Append, Read, SetState, Stats
	// peeks, expiry sweeps); Close waits for them before closing the store.
	ops sync.WaitGroup

	wake chan struct{} // capacity 1, never closed

	mu sync.Mutex // guards everything below
	// idx: committed records not removed.
	idx index
	// states: PacketID/Phase of live records whose phase is not PhaseQueued,
	// durable or (Claim) only claimed: {0, PhaseSent} until SetState.
	states map[uint64]inflight
	// pendingN, pendingBytes: admitted appends not yet committed.
	pendingN     int
	pendingBytes int64
	bytes        int64 // sum of sizes in idx
	lastSeq      uint64
	// markSeq, mark: the resume point (Resumer), as committed.
	markSeq uint64
	mark    []byte
	// oldest is the Enqueued of record oldestSeq; valid while oldestSeq == idx.first.
	oldest    time.Time
	oldestSeq uint64
	// Counters for Stats.
	appended, removed, dropped, expired, corrupt, commits uint64
	corruptJournal                                        uint64 // damaged stretches Open found in the journal
	loosePerms                                            uint64 // paths Open found open to group or others

	closed bool
	// room is closed (and replaced) when space frees, for OverflowBlock waiters.
	room        chan struct{}
	roomWaiters int
	// expiry timer, armed for the earliest known expiry of a queued record.
	expiryTimer *time.Timer
	expiryAt    time.Time
}

func (c *core) init(opts Options, be backend) {
	c.opts = opts
	c.be = be
	c.wake = make(chan struct{}, 1)
	c.states = make(map[uint64]inflight)
	c.room = make(chan struct{})
}

// begin registers a call that uses the store; ErrClosed after Close.
func (c *core) begin() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return ErrClosed
	}
	c.ops.Add(1)
	return nil
}

func (c *core) end() { c.ops.Done() }

// shut marks the queue closed, wakes blocked appends, stops the expiry
// timer, then waits for running calls. It reports whether this call closed it.
func (c *core) shut() bool {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return false
	}
	c.closed = true
	c.freedLocked()
	if c.expiryTimer != nil {
		c.expiryTimer.Stop()
	}
	c.mu.Unlock()
	c.ops.Wait()
	return true
}

func (c *core) notify() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// Wake returns the change-notification channel (capacity 1).
func (c *core) Wake() <-chan struct{} { return c.wake }

// freedLocked wakes appends waiting for room.
func (c *core) freedLocked() {
	if c.roomWaiters > 0 || c.closed {
		close(c.room)
		c.room = make(chan struct{})
		c.roomWaiters = 0
	}
}

func (c *core) report(drops []drop) {
	if c.opts.OnDrop == nil {
		return
	}
	for _, d := range drops {
		c.opts.OnDrop(d.seq, d.reason)
	}
}

// prepare validates r, fills Enqueued and Expires, and checks its size.
func (c *core) prepare(r *Record, now time.Time) (int, error) {
	if r.Enqueued.IsZero() {
		r.Enqueued = now
	}
	if r.Expires.IsZero() && c.opts.DefaultTTL > 0 {
		r.Expires = r.Enqueued.Add(c.opts.DefaultTTL)
	}
	if err := checkRecord(r); err != nil {
		return 0, err
	}
	size := encodedSize(r)
	if size > c.opts.MaxRecordBytes || (c.opts.MaxBytes > 0 && int64(size) > c.opts.MaxBytes) {
		return 0, fmt.Errorf("%w: %d bytes encoded", ErrTooLarge, size)
	}
	return size, nil
}

func (c *core) fitsLocked(size int64) bool { return c.fitsAfterLocked(size, 0, 0) }

// fitsAfterLocked: would a record of size fit once n records of freed bytes left?
func (c *core) fitsAfterLocked(size int64, n int, freed int64) bool {
	if c.opts.MaxRecords > 0 && c.idx.n-n+c.pendingN+1 > c.opts.MaxRecords {
		return false
	}
	if c.opts.MaxBytes > 0 && c.bytes-freed+c.pendingBytes+size > c.opts.MaxBytes {
		return false
	}
	return true
}

// admit reserves room for one record of size bytes, applying the overflow
// policy; on success the caller holds an op (begin) and a reservation it
// must pass to committed or abort.
func (c *core) admit(ctx context.Context, size int64) error {
	swept := false
	for {
		c.mu.Lock()
		if c.closed {
			c.mu.Unlock()
			return ErrClosed
		}
		if c.fitsLocked(size) {
			c.reserveLocked(size)
			c.mu.Unlock()
			return nil
		}
		if !swept && c.idx.n > 0 {
			// Expired records make room before any policy applies.
			swept = true
			c.ops.Add(1)
			c.mu.Unlock()
			c.sweep(256)
			c.ops.Done()
			continue
		}
		switch c.opts.Overflow {
		case OverflowDropOldest:
			// Pick the victims first: drop nothing unless dropping makes room.
			var victims []uint64
			var n int
			var freed int64
			for seq := uint64(0); !c.fitsAfterLocked(size, n, freed); {
				if seq = c.firstQueuedLocked(seq); seq == 0 {
					break
				}
				victims = append(victims, seq)
				n++
				freed += int64(c.idx.size(seq))
			}
			if !c.fitsAfterLocked(size, n, freed) {
				c.mu.Unlock()
				return fmt.Errorf("%w: not enough queued records to drop (the rest is in flight)", ErrFull)
			}
			drops := make([]drop, 0, len(victims))
			for _, seq := range victims {
				c.leaveLocked(seq)
				c.dropped++
				drops = append(drops, drop{seq, fmt.Errorf("%w: record %d", ErrDropped, seq)})
			}
			c.reserveLocked(size)
			c.mu.Unlock()
			c.notify()
			c.report(drops)
			return nil
		case OverflowBlock:
			room := c.room
			c.roomWaiters++
			c.mu.Unlock()
			select {
			case <-room:
			case <-ctx.Done():
				return ctx.Err()
			}
		default:
			c.mu.Unlock()
			return fmt.Errorf("%w: limits MaxRecords %d, MaxBytes %d", ErrFull, c.opts.MaxRecords, c.opts.MaxBytes)
		}
	}
}

func (c *core) reserveLocked(size int64) {
	c.pendingN++
	c.pendingBytes += size
	c.ops.Add(1)
}

// abortLocked releases a reservation whose append failed.
func (c *core) abortLocked(size int64) {
	c.pendingN--
	c.pendingBytes -= size
	c.freedLocked()
	c.ops.Done()
}

// committedLocked turns a reservation into a live record.
func (c *core) committedLocked(seq uint64, size uint32, enq, exp time.Time) {
	c.idx.add(seq, size)
	c.bytes += int64(size)
	c.pendingN--
	c.pendingBytes -= int64(size)
	c.appended++
	c.lastSeq = seq
	if c.idx.first == seq {
		c.oldest, c.oldestSeq = enq, seq
	}
	if !exp.IsZero() {
		c.armLocked(exp)
	}
	c.ops.Done()
}

// leaveLocked removes a live record from the queue (not the counters).
func (c *core) leaveLocked(seq uint64) uint32 {
	size := c.idx.remove(seq)
	if size == 0 {
		return 0
	}
	c.bytes -= int64(size)
	delete(c.states, seq)
	c.be.forget(seq, size)
	c.freedLocked()
	return size
}

// firstQueuedLocked returns the lowest live PhaseQueued seq above after, or 0.
func (c *core) firstQueuedLocked(after uint64) uint64 {
	seq := after
	if seq < c.idx.first {
		if c.idx.first == 0 {
			return 0
		}
		seq = c.idx.first - 1
	}
	for {
		seq = c.idx.next(seq)
		if seq == 0 {
			return 0
		}
		if _, busy := c.states[seq]; !busy {
			return seq
		}
	}
}

func (c *core) remove(seqs []uint64) error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return ErrClosed
	}
	changed := false
	for _, seq := range seqs {
		if c.leaveLocked(seq) != 0 {
			c.removed++
			changed = true
		}
	}
	c.mu.Unlock()
	if changed {
		c.notify()
	}
	return nil
}

// ResumePoint implements Resumer.
func (c *core) ResumePoint() (uint64, []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.markSeq, cloneMarker(c.mark)
}

// Claim implements Queue.Claim.
func (c *core) Claim(seq uint64) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return ErrClosed
	}
	if c.idx.size(seq) == 0 {
		return fmt.Errorf("%w: seq %d", ErrNotFound, seq)
	}
	if _, ok := c.states[seq]; !ok {
		c.states[seq] = inflight{phase: PhaseSent}
	}
	return nil
}

// checkLiveLocked is SetState's precondition.
func (c *core) checkLiveLocked(seq uint64, phase Phase) error {
	if c.closed {
		return ErrClosed
	}
	if !phase.valid() {
		return fmt.Errorf("%w: phase %d", ErrInvalidRecord, phase)
	}
	if c.idx.size(seq) == 0 {
		return fmt.Errorf("%w: seq %d", ErrNotFound, seq)
	}
	return nil
}

// setStateLocked applies a committed state to a live record.
func (c *core) setStateLocked(seq uint64, packetID uint16, phase Phase) {
	if c.idx.size(seq) == 0 {
		return
	}
	if phase == PhaseQueued {
		delete(c.states, seq)
		return
	}
	c.states[seq] = inflight{packetID, phase}
}

// cand is a record read from the store, before core filters it.
type cand struct {
	seq  uint64
	size uint32
	rec  Record
	err  error  // decode error: quarantine
	raw  []byte // stored bytes, kept for quarantine
}

// accept filters candidates under the lock: records removed meanwhile are
// skipped, expired queued ones expire, corrupt ones are quarantined, the rest
// get their in-flight state and are appended to out.
func (c *core) accept(cands []cand, out []Record, now time.Time) ([]Record, []drop) {
	var drops []drop
	c.mu.Lock()
	for i := range cands {
		cd := &cands[i]
		size := c.idx.size(cd.seq)
		if size == 0 {
			continue
		}
		if cd.err != nil {
			c.idx.remove(cd.seq)
			c.bytes -= int64(size)
			delete(c.states, cd.seq)
			c.be.quarantine(cd.seq, size, cd.raw)
			c.freedLocked()
			c.corrupt++
			drops = append(drops, drop{cd.seq, &CorruptRecordError{Seq: cd.seq, Err: cd.err}})
			continue
		}
		st, busy := c.states[cd.seq]
		if !busy && !cd.rec.Expires.IsZero() && !now.Before(cd.rec.Expires) {
			c.leaveLocked(cd.seq)
			c.expired++
			drops = append(drops, drop{cd.seq, fmt.Errorf("%w: record %d at %s", ErrExpired, cd.seq, cd.rec.Expires.UTC().Format(time.RFC3339Nano))})
			continue
		}
		if cd.seq == c.idx.first && c.oldestSeq != cd.seq {
			c.oldest, c.oldestSeq = cd.rec.Enqueued, cd.seq
		}
		cd.rec.Seq = cd.seq
		cd.rec.PacketID, cd.rec.Phase = st.packetID, st.phase
		out = append(out, cd.rec)
	}
	c.mu.Unlock()
	if len(drops) > 0 {
		c.notify()
		c.report(drops)
	}
	return out, drops
}

// readRange returns the first seq worth reading after `after` and the
// committed watermark; ok is false when there is nothing to read.
func (c *core) readRange(after uint64) (from, to uint64, ok bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	from = c.idx.next(after)
	return from, c.lastSeq, from != 0 && from <= c.lastSeq
}

// armLocked makes sure a sweep runs at or before t.
func (c *core) armLocked(t time.Time) {
	if c.closed || (!c.expiryAt.IsZero() && !t.Before(c.expiryAt)) {
		return
	}
	c.expiryAt = t
	d := time.Until(t)
	if c.expiryTimer == nil {
		c.expiryTimer = time.AfterFunc(d, c.onExpiryTimer)
		return
	}
	c.expiryTimer.Reset(d)
}

func (c *core) onExpiryTimer() {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return
	}
	c.expiryAt = time.Time{}
	c.ops.Add(1)
	c.mu.Unlock()
	defer c.ops.Done()
	c.sweep(0)
}

// sweep expires PhaseQueued records from the head of the queue, up to max
// (0: no bound), stopping at the first queued record that has not expired
// and arming the timer for it. Records whose Expires is earlier than that of
// a live queued record ahead of them are found by Read or a later sweep.
// The caller holds an op.
func (c *core) sweep(max int) {
	var drops []drop
	defer func() {
		if len(drops) > 0 {
			c.notify()
			c.report(drops)
		}
	}()
	var after uint64
	for max <= 0 || len(drops) < max {
		now := time.Now()
		c.mu.Lock()
		seq := c.firstQueuedLocked(after)
		size := c.idx.size(seq)
		c.mu.Unlock()
		if seq == 0 {
			return
		}
		_, exp, err := c.be.peek(seq, size)
		if err != nil {
			// Read quarantines it; carry on behind it.
			after = seq
			continue
		}
		if exp.IsZero() {
			return
		}
		c.mu.Lock()
		if now.Before(exp) {
			c.armLocked(exp)
			c.mu.Unlock()
			return
		}
		_, busy := c.states[seq]
		if !busy && c.leaveLocked(seq) != 0 {
			c.expired++
			drops = append(drops, drop{seq, fmt.Errorf("%w: record %d at %s", ErrExpired, seq, exp.UTC().Format(time.RFC3339Nano))})
		}
		c.mu.Unlock()
		after = seq
	}
}

// stats builds a snapshot; the head's enqueue time is looked up when the
// head changed since it was last known.
func (c *core) stats() Stats {
	c.mu.Lock()
	if c.idx.n > 0 && c.oldestSeq != c.idx.first && !c.closed {
		seq := c.idx.first
		size := c.idx.size(seq)
		c.ops.Add(1)
		c.mu.Unlock()
		enq, _, err := c.be.peek(seq, size)
		c.ops.Done()
		c.mu.Lock()
		if err == nil && c.idx.first == seq {
			c.oldest, c.oldestSeq = enq, seq
		}
	}
	s := Stats{
		Len:      c.idx.n,
		Bytes:    c.bytes,
		InFlight: len(c.states),
		LastSeq:  c.lastSeq,
		Pending:  c.pendingN,
		Appended: c.appended,
		Removed:  c.removed,
		Dropped:  c.dropped,
		Expired:  c.expired,
		Corrupt:  c.corrupt,
		Commits:  c.commits,

		CorruptJournal:   c.corruptJournal,
		LoosePermissions: c.loosePerms,
	}
	if c.idx.n > 0 && c.oldestSeq == c.idx.first {
		s.Oldest = c.oldest
	}
	c.mu.Unlock()
	return s
}

// cloneMarker copies a marker, keeping nil (no marker) apart from empty.
func cloneMarker(m []byte) []byte {
	if m == nil {
		return nil
	}
	return append(make([]byte, 0, len(m)), m...)
}
