package client

import (
	"context"
	"sync"

	"github.com/holdfast-mqtt/holdfast/outbox"
)

// The QoS 2 state of a message (its packet identifier once handed to paho,
// and its PUBREC) must be durable before the packet that depends on it
// leaves: the PUBLISH, and the PUBREL. Writing it from paho's goroutines
// one record at a time would cost an fsync per message on paho's critical
// path. The persister batches: Put and the reader enqueue updates, one
// goroutine writes each batch in one group commit, and the writer of a
// packet waits only for the batch holding its own update.

// stateBatch is the durability of one batch of updates.
type stateBatch struct {
	done chan struct{} // closed once written
	err  error         // set before done is closed
}

func (b *stateBatch) isDone() bool {
	select {
	case <-b.done:
		return true
	default:
		return false
	}
}

func (b *stateBatch) wait() error {
	<-b.done
	return b.err
}

type persister struct {
	q    outbox.Queue
	kick chan struct{} // capacity 1

	mu      sync.Mutex // guards pending, current and stopped
	pending []outbox.StateUpdate
	current *stateBatch // the batch pending updates will belong to
	stopped bool        // run has returned: enqueue writes by itself
}

func newPersister(q outbox.Queue) *persister {
	return &persister{q: q, kick: make(chan struct{}, 1)}
}

// enqueue adds an update and returns the batch that will make it durable.
func (p *persister) enqueue(u outbox.StateUpdate) *stateBatch {
	p.mu.Lock()
	if p.stopped {
		p.mu.Unlock()
		b := &stateBatch{done: make(chan struct{})}
		b.err = writeStates(p.q, []outbox.StateUpdate{u})
		close(b.done)
		return b
	}
	p.pending = append(p.pending, u)
	if p.current == nil {
		p.current = &stateBatch{done: make(chan struct{})}
	}
	b := p.current
	p.mu.Unlock()
	select {
	case p.kick <- struct{}{}:
	default:
	}
	return b
}

// run writes batches until ctx ends, then writes what is left.
func (p *persister) run(ctx context.Context) {
	for {
		select {
		case <-p.kick:
			p.flush()
		case <-ctx.Done():
			p.mu.Lock()
			p.stopped = true
			p.mu.Unlock()
			p.flush()
			return
		}
	}
}

func (p *persister) flush() {
	p.mu.Lock()
	batch, b := p.pending, p.current
	p.pending, p.current = nil, nil
	p.mu.Unlock()
	if b == nil {
		return
	}
	b.err = writeStates(p.q, batch)
	close(b.done)
}

// writeStates makes a batch durable in one group commit.
func writeStates(q outbox.Queue, batch []outbox.StateUpdate) error {
	if sb, ok := q.(outbox.StateBatcher); ok {
		return sb.SetStates(context.Background(), batch)
	}
	// Concurrent calls share the queue's group commit.
	errs := make([]error, len(batch))
	var wg sync.WaitGroup
	for i, u := range batch {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = q.SetState(context.Background(), u.Seq, u.PacketID, u.Phase)
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}
