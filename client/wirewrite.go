package client

import (
	"fmt"
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
	// inbound: batch is the inbound QoS 2 ledger's (a PUBCOMP), not the
	// outbox's.
	inbound bool
}

func (w waitFor) ready() bool { return w.batch == nil || w.batch.isDone() }

// outQueue holds the packets paho handed over, in paho's order, for the
// connection's writer goroutine. Write copies the packet and returns at
// once, so paho's writer goes on with the next packet while the last ones
// are on their way: the writer sends every packet that is ready in one
// write (measured: one write syscall per packet was 7.6 us of the client's
// 41.6 us per message). A packet that waits for durability holds back every
// later one.
type outQueue struct {
	mu    sync.Mutex // guards the fields below
	cond  *sync.Cond // signals changes of buf, marks, busy, closed
	buf   []byte     // the queued packets, back to back
	marks []mark     // one per queued packet
	busy  bool       // the writer holds packets it took from the queue
	// disconnect: paho handed over a DISCONNECT (its last packet on a
	// connection), so Close lets the queue drain first.
	disconnect bool
	err        error // the first write error: every later Write fails with it
	closed     bool
}

// mark ends one queued packet in outQueue.buf.
type mark struct {
	end int
	w   waitFor
}

// maxQueuedWrites packets or maxQueuedBytes bound what paho may hand over
// ahead of the network: past them, Write blocks like a slow socket would.
// The byte bound is small so that a PINGREQ never waits long behind data
// (paho times the ping from its Write) and so that a write error drops
// little (queued QoS 0 messages count as sent).
const (
	maxQueuedWrites = 4096
	maxQueuedBytes  = 64 << 10
)

// writeChunk bytes at most go in one write with one deadline: the write
// timeout measures a lack of progress, not the time a batch takes (with
// the default 10 s, a link must move 4 KiB in 10 s; batching 256-byte
// messages still saves 15 of 16 writes).
const writeChunk = 4 << 10

// flushAtClose bounds how long Close waits for a queued DISCONNECT to leave.
const flushAtClose = 2 * time.Second

const ptypeDisconnect = 14

func (c *wireConn) write(b []byte, w waitFor) (int, error) {
	o := &c.out
	o.mu.Lock()
	if o.cond == nil {
		o.cond = sync.NewCond(&o.mu)
		go c.writer()
	}
	for (len(o.marks) >= maxQueuedWrites || (len(o.marks) > 0 && len(o.buf)+len(b) > maxQueuedBytes)) && o.err == nil && !o.closed {
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
	o.buf = append(o.buf, b...)
	o.marks = append(o.marks, mark{end: len(o.buf), w: w})
	o.disconnect = o.disconnect || (len(b) > 0 && b[0]>>4 == ptypeDisconnect)
	o.cond.Broadcast()
	o.mu.Unlock()
	return len(b), nil
}

// writer writes queued packets in order, each once its state is durable,
// as many per write as are ready. It ends when the connection is closed.
func (c *wireConn) writer() {
	o := &c.out
	var out []byte // the bytes of one write (the queue's previous buffer)
	var ws []mark  // their packets
	o.mu.Lock()
	defer o.mu.Unlock()
	for {
		for !o.closed && len(o.marks) == 0 {
			o.cond.Wait()
		}
		if o.closed {
			return
		}
		// The first packet may have to wait for its state; the ones after
		// it go along only if they need not wait.
		n := 1
		for n < len(o.marks) && o.marks[n].w.ready() {
			n++
		}
		// The taken packets leave in the queue's buffer itself; what stays
		// (if anything) moves to the other buffer.
		end := o.marks[n-1].end
		full := o.buf
		o.buf = append(out[:0], full[end:]...)
		out = full[:end]
		ws = append(ws[:0], o.marks[:n]...)
		rest := copy(o.marks, o.marks[n:])
		clear(o.marks[rest:])
		o.marks = o.marks[:rest]
		for i := range o.marks {
			o.marks[i].end -= end
		}
		o.busy = true
		o.mu.Unlock()
		err := c.writeBatch(out, ws)
		o.mu.Lock()
		o.busy = false
		o.cond.Broadcast()
		if cap(out) > 4*maxQueuedBytes {
			out = nil // do not keep a large packet's buffer for the connection's life
		}
		if err != nil && o.err == nil {
			o.err = err
			o.buf, o.marks = nil, nil
			// paho learns of it through the reader, as a lost connection.
			go c.breakWith(fmt.Errorf("holdfast: write: %w", err))
		}
	}
}

// writeBatch waits for the states the packets need and writes them, with
// the write timeout for each chunk of writeChunk bytes.
func (c *wireConn) writeBatch(b []byte, ws []mark) error {
	for _, m := range ws {
		if m.w.inbound {
			if err := c.d.in.wait(m.w.batch); err != nil {
				return err
			}
		} else if m.w.ok && m.w.batch != nil {
			if err := c.d.durable(m.w.batch, m.w.seq, m.w.id, m.w.phase); err != nil {
				return err
			}
		}
	}
	for len(b) > 0 {
		n := min(len(b), writeChunk)
		if c.writeTimeout > 0 {
			_ = c.Conn.SetWriteDeadline(time.Now().Add(c.writeTimeout))
		}
		if _, err := c.Conn.Write(b[:n]); err != nil {
			return err
		}
		b = b[n:]
	}
	for _, m := range ws {
		if m.w.pubrel {
			c.d.pubrelWritten(m.w.id)
		}
	}
	return nil
}

// SetWriteDeadline is a no-op: writes happen later, on the writer
// goroutine, and each write sets its own deadline (Config.WriteTimeout).
func (c *wireConn) SetWriteDeadline(time.Time) error { return nil }

// Close stops the writer. When paho handed over a DISCONNECT (its clean
// disconnect), the queue drains first, for at most flushAtClose: dropped,
// the broker would take the closed connection for a failure and publish
// the will. Otherwise anything queued is dropped with the connection
// (paho's resume sends what matters again).
func (c *wireConn) Close() error {
	o := &c.out
	o.mu.Lock()
	if o.cond != nil && o.err == nil && o.disconnect {
		expired := false
		t := time.AfterFunc(flushAtClose, func() {
			o.mu.Lock()
			expired = true
			o.cond.Broadcast()
			o.mu.Unlock()
		})
		for (len(o.marks) > 0 || o.busy) && o.err == nil && !expired && !o.closed {
			o.cond.Wait()
		}
		t.Stop()
	}
	o.closed = true
	o.buf, o.marks = nil, nil
	if o.cond != nil {
		o.cond.Broadcast()
	}
	o.mu.Unlock()
	return c.Conn.Close()
}
