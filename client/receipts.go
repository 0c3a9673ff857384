package client

import (
	"context"
	"runtime"
	"sync"
	"weak"
)

// registry owns the receipts of accepted messages and the count of Publish
// calls on their way into the outbox. The dispatcher reports each outcome
// to it (finish); Publish registers each receipt (end) before the
// dispatcher can read its record; Flush and Close wait on it. It calls
// nothing else, so its lock may be taken under the dispatcher's.
type registry struct {
	mu sync.Mutex // guards every field below
	// live holds receipts weakly: a cleanup forgets one the caller dropped,
	// so an ignored receipt costs no memory while its message waits.
	live map[uint64]weak.Pointer[Receipt]
	// pinned holds the receipts whose Done channel was asked for, until
	// complete: a caller may keep only the channel.
	pinned map[uint64]*Receipt
	// early holds outcomes that beat their receipt's registration, which
	// only a Queue without outbox.AsyncAppender allows (lateTrack > 0).
	early     map[uint64]error
	appending int  // Publish calls between the closing check and durability
	lateTrack int  // of those, appends to a Queue without AsyncAppender
	closing   bool // Close began: no new call passes begin
	// changed is closed at the next outcome, registration end or removal;
	// made only when somebody waits, so the hot path allocates nothing.
	changed chan struct{}
}

func newRegistry() *registry {
	return &registry{live: map[uint64]weak.Pointer[Receipt]{}, pinned: map[uint64]*Receipt{}, early: map[uint64]error{}}
}

// begin admits a Publish call, unless Close began (ErrClosed).
func (g *registry) begin(late bool) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closing {
		return ErrClosed
	}
	g.appending++
	if late {
		g.lateTrack++
	}
	return nil
}

// end ends a call admitted by begin, registering r when its message was
// accepted (r.seq set).
func (g *registry) end(r *Receipt, late, accepted bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.appending--
	if late {
		g.lateTrack--
	}
	if accepted {
		g.trackLocked(r)
	}
	if g.appending == 0 {
		g.broadcastLocked()
	}
}

func (g *registry) trackLocked(r *Receipt) {
	if err, ok := g.early[r.seq]; ok {
		delete(g.early, r.seq)
		r.complete(err)
	} else {
		g.live[r.seq] = weak.Make(r)
		runtime.AddCleanup(r, g.forget, r.seq)
		r.mu.Lock()
		asked := r.done != nil
		r.mu.Unlock()
		if asked {
			g.pinned[r.seq] = r
		}
	}
	if g.lateTrack == 0 && len(g.early) > 0 {
		clear(g.early) // outcomes of records whose Publish is long gone
	}
}

// finish completes the receipt of seq (acknowledged: nil; dropped: the
// reason), or keeps the outcome for a receipt not registered yet.
func (g *registry) finish(seq uint64, err error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if w, ok := g.live[seq]; ok {
		delete(g.live, seq)
		delete(g.pinned, seq)
		if r := w.Value(); r != nil {
			r.complete(err)
		}
	} else if g.lateTrack > 0 {
		g.early[seq] = err
	}
	g.broadcastLocked()
}

// pin holds r strongly once its Done channel was asked for.
func (g *registry) pin(r *Receipt) {
	seq := r.Seq()
	if seq == 0 {
		return // PublishAsync, not durable yet: end pins it
	}
	g.mu.Lock()
	if _, ok := g.live[seq]; ok {
		g.pinned[seq] = r
	}
	g.mu.Unlock()
}

func (g *registry) forget(seq uint64) {
	g.mu.Lock()
	if w, ok := g.live[seq]; ok && w.Value() == nil {
		delete(g.live, seq)
	}
	g.mu.Unlock()
}

// watch returns a channel closed at the next change, taken before the
// caller checks its condition, and the calls still appending.
func (g *registry) watch() (<-chan struct{}, int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.changed == nil {
		g.changed = make(chan struct{})
	}
	return g.changed, g.appending
}

// broadcast wakes the waiters of watch.
func (g *registry) broadcast() {
	g.mu.Lock()
	g.broadcastLocked()
	g.mu.Unlock()
}

func (g *registry) broadcastLocked() {
	if g.changed != nil {
		close(g.changed)
		g.changed = nil
	}
}

// shut stops admitting calls (begin returns ErrClosed from now on) and
// waits for those admitted, or for ctx.
func (g *registry) shut(ctx context.Context) {
	g.mu.Lock()
	g.closing = true
	g.mu.Unlock()
	for {
		ch, n := g.watch()
		if n == 0 {
			return
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return
		}
	}
}

// failAll completes every registered receipt with err.
func (g *registry) failAll(err error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	for seq, w := range g.live {
		delete(g.live, seq)
		if r := w.Value(); r != nil {
			r.complete(err)
		}
	}
	clear(g.pinned)
	clear(g.early)
	g.broadcastLocked()
}
