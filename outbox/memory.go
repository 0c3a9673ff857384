package outbox

import (
	"context"
	"time"
)

// Memory is the in-memory Queue: the same contract as Badger, with nothing
// on disk. It suits ephemeral use and tests. Durability, Profile,
// EncryptionKey, DiskReserve, RemoveDelay and GCInterval do not apply.
// It starts no goroutine of its own (an expiry timer runs its callback on
// the runtime's timer goroutine while armed).
type Memory struct {
	core
	// recs holds the encoded records, guarded by core.mu.
	recs    map[uint64][]byte
	nextSeq uint64 // guarded by core.mu
}

// NewMemory returns an empty in-memory queue. It panics on options that
// would make Open return ErrInvalidOptions; use CheckOptions first when they
// come from outside.
func NewMemory(opts Options) *Memory {
	o, err := opts.normalize()
	if err != nil {
		panic(err)
	}
	m := &Memory{recs: make(map[uint64][]byte), nextSeq: 1}
	m.init(o, m)
	return m
}

// CheckOptions reports whether opts are valid (nil) or an error wrapping
// ErrInvalidOptions.
func CheckOptions(opts Options) error {
	_, err := opts.normalize()
	return err
}

// Append implements Queue.Append. Errors: ErrClosed, ErrFull, ErrTooLarge,
// ErrInvalidRecord, ctx.Err() (OverflowBlock).
func (m *Memory) Append(ctx context.Context, r *Record) (uint64, error) {
	var seq uint64
	if err := m.AppendAsync(ctx, r, func(s uint64, _ error) { seq = s }); err != nil {
		return 0, err
	}
	r.Seq = seq
	return seq, nil
}

// AppendAsync implements AsyncAppender: a memory record is committed at
// once, so done is called before AppendAsync returns.
func (m *Memory) AppendAsync(ctx context.Context, r *Record, done func(seq uint64, err error)) error {
	rec := *r
	size, err := m.prepare(&rec, time.Now())
	if err != nil {
		return err
	}
	if err := m.admit(ctx, int64(size)); err != nil {
		return err
	}
	enc := appendRecord(make([]byte, 0, size), &rec)
	m.mu.Lock()
	seq := m.nextSeq
	m.nextSeq++
	m.recs[seq] = enc
	m.committedLocked(seq, uint32(size), rec.Enqueued, rec.Expires)
	if rec.Marker != nil {
		m.markSeq, m.mark = seq, cloneMarker(rec.Marker)
	}
	if done != nil {
		done(seq, nil) // atomically with the record's visibility
	}
	m.mu.Unlock()
	m.notify()
	return nil
}

// Read implements Queue.Read. Errors: ErrClosed.
func (m *Memory) Read(after uint64, max int, buf []Record) ([]Record, error) {
	if err := m.begin(); err != nil {
		return buf, err
	}
	defer m.end()
	for max > 0 {
		var cands []cand
		m.mu.Lock()
		seq := after
		for len(cands) < max {
			seq = m.idx.next(seq)
			if seq == 0 || seq > m.lastSeq {
				break
			}
			cands = append(cands, cand{seq: seq, size: m.idx.size(seq), raw: m.recs[seq]})
		}
		m.mu.Unlock()
		if len(cands) == 0 {
			break
		}
		for i := range cands {
			cands[i].err = decodeRecord(cands[i].raw, &cands[i].rec)
		}
		before := len(buf)
		buf, _ = m.accept(cands, buf, time.Now())
		max -= len(buf) - before
		after = cands[len(cands)-1].seq
	}
	return buf, nil
}

// SetState implements Queue.SetState. Errors: ErrClosed, ErrNotFound,
// ErrInvalidRecord, ctx.Err().
func (m *Memory) SetState(ctx context.Context, seq uint64, packetID uint16, phase Phase) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.checkLiveLocked(seq, phase); err != nil {
		return err
	}
	m.setStateLocked(seq, packetID, phase)
	return nil
}

// SetStates implements StateBatcher.
func (m *Memory) SetStates(ctx context.Context, updates []StateUpdate) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	var first error
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, u := range updates {
		if err := m.checkLiveLocked(u.Seq, u.Phase); err != nil {
			if first == nil {
				first = err
			}
			continue
		}
		m.setStateLocked(u.Seq, u.PacketID, u.Phase)
	}
	return first
}

// Remove implements Queue.Remove. Errors: ErrClosed.
func (m *Memory) Remove(seqs ...uint64) error { return m.remove(seqs) }

// Stats implements Queue.Stats.
func (m *Memory) Stats() Stats { return m.stats() }

// Close implements Queue.
func (m *Memory) Close() error {
	m.shut()
	return nil
}

// peek implements backend.
func (m *Memory) peek(seq uint64, _ uint32) (enq, exp time.Time, err error) {
	m.mu.Lock()
	raw := m.recs[seq]
	m.mu.Unlock()
	return decodeTimes(raw)
}

// forget implements backend.
func (m *Memory) forget(seq uint64, _ uint32) { delete(m.recs, seq) }

// quarantine implements backend.
func (m *Memory) quarantine(seq uint64, _ uint32, _ []byte) { delete(m.recs, seq) }
