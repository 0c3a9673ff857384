package client

import (
	"sync"
	"time"

	"github.com/holdfast-mqtt/holdfast/outbox"
)

// waitFor is what one packet's write depends on.
type waitFor struct {
	ok     bool        // the packet carries QoS 2 state (or is a QoS 1 PUBLISH)
	batch  *stateBatch // the state batch that must be durable first; nil if none
	seq    uint64
	id     uint16
	phase  outbox.Phase
	pubrel bool // a PUBREL: lift the ordering barrier once written
}

func (w waitFor) ready() bool { return w.batch == nil || w.batch.isDone() }

// outQueue holds packets paho handed over but that wait for durability.
// Writes leave in paho's order: a packet that waits holds back every later
// one. A packet with nothing to wait for, with nothing queued before it, is
// written at once by paho's goroutine.
type outQueue struct {
	mu   sync.Mutex // guards the fields below
	cond *sync.Cond // signals changes of q, busy, closed
	q    []queuedWrite
	busy bool // a write is in progress (paho's or the writer's)
	// writingDisconnect: the writer's write in progress is a DISCONNECT.
	writingDisconnect bool
	err               error // the first write error: every later Write fails with it
	closed            bool
	started           bool
}

type queuedWrite struct {
	b []byte
	w waitFor
}

// maxQueuedWrites bounds what paho may hand over ahead of the network:
// past it, Write blocks like a slow socket would.
const maxQueuedWrites = 4096

func (c *wireConn) write(b []byte, w waitFor) (int, error) {
	o := &c.out
	o.mu.Lock()
	if o.cond == nil {
		o.cond = sync.NewCond(&o.mu)
	}
	if o.err != nil {
		err := o.err
		o.mu.Unlock()
		return 0, err
	}
	if len(o.q) == 0 && !o.busy && w.ready() {
		o.busy = true
		o.mu.Unlock()
		err := c.writeNow(b, w)
		o.mu.Lock()
		o.busy = false
		if err != nil && o.err == nil {
			o.err = err
		}
		o.cond.Broadcast()
		o.mu.Unlock()
		if err != nil {
			return 0, err
		}
		return len(b), nil
	}
	for len(o.q) >= maxQueuedWrites && o.err == nil && !o.closed {
		o.cond.Wait()
	}
	if o.err != nil || o.closed {
		err := o.err
		o.mu.Unlock()
		if err == nil {
			err = errBroken
		}
		return 0, err
	}
	o.q = append(o.q, queuedWrite{b: append([]byte(nil), b...), w: w})
	if !o.started {
		o.started = true
		go c.writer()
	}
	o.cond.Broadcast()
	o.mu.Unlock()
	return len(b), nil
}

// writer writes queued packets in order, each once its state is durable.
// It ends when the connection is closed.
func (c *wireConn) writer() {
	o := &c.out
	o.mu.Lock()
	defer o.mu.Unlock()
	for {
		for !o.closed && (len(o.q) == 0 || o.busy) {
			o.cond.Wait()
		}
		if o.closed {
			return
		}
		next := o.q[0]
		o.q[0] = queuedWrite{}
		o.q = o.q[1:]
		o.busy = true
		o.writingDisconnect = isDisconnect(next.b)
		o.mu.Unlock()
		err := c.writeNow(next.b, next.w)
		o.mu.Lock()
		o.busy, o.writingDisconnect = false, false
		o.cond.Broadcast()
		if err != nil && o.err == nil {
			o.err = err
			o.q = nil
			// paho learns of it through the reader, as a lost connection.
			go c.breakConn()
		}
	}
}

// writeNow waits for the packet's state and writes it, with the write
// timeout of one packet.
func (c *wireConn) writeNow(b []byte, w waitFor) error {
	if w.ok && w.batch != nil {
		if err := c.d.durable(w.batch, w.seq, w.id, w.phase); err != nil {
			return err
		}
	}
	if c.writeTimeout > 0 {
		_ = c.Conn.SetWriteDeadline(time.Now().Add(c.writeTimeout))
	}
	_, err := c.Conn.Write(b)
	if err != nil {
		return err
	}
	if w.pubrel {
		c.d.pubrelWritten(w.id)
	}
	return nil
}

// SetWriteDeadline is a no-op: writes may happen later, on the writer
// goroutine, and each write sets its own deadline (Config.WriteTimeout).
func (c *wireConn) SetWriteDeadline(time.Time) error { return nil }

// Close stops the writer. A DISCONNECT that waits in the queue (behind QoS 2
// writes waiting for durability) leaves first, with what precedes it, for
// at most flushAtClose: dropped, the broker would take the closed connection
// for a failure and publish the will. Anything else queued is dropped with
// the connection (paho's resume sends what matters again).
func (c *wireConn) Close() error {
	o := &c.out
	o.mu.Lock()
	if o.cond != nil && o.err == nil && o.disconnectPending() {
		expired := false
		t := time.AfterFunc(flushAtClose, func() {
			o.mu.Lock()
			expired = true
			o.cond.Broadcast()
			o.mu.Unlock()
		})
		for (len(o.q) > 0 || o.busy) && o.err == nil && !expired && !o.closed {
			o.cond.Wait()
		}
		t.Stop()
	}
	o.closed = true
	if o.cond != nil {
		o.cond.Broadcast()
	}
	o.mu.Unlock()
	return c.Conn.Close()
}

// flushAtClose bounds how long Close waits for a queued DISCONNECT.
const flushAtClose = 2 * time.Second

const ptypeDisconnect = 14

func isDisconnect(b []byte) bool { return len(b) > 0 && b[0]>>4 == ptypeDisconnect }

// disconnectPending: a DISCONNECT is queued or being written by the writer.
func (o *outQueue) disconnectPending() bool {
	if o.writingDisconnect {
		return true
	}
	for _, w := range o.q {
		if isDisconnect(w.b) {
			return true
		}
	}
	return false
}
