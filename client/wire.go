package client

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync/atomic"
	"time"

	"github.com/holdfast-mqtt/holdfast/outbox"
)

// wireConn is the connection paho reads and writes. paho writes every
// packet with one Write call, so each Write is one whole MQTT packet.
// It observes what paho never reports to its Store: the PUBREC of an
// outbound QoS 2 message is recorded durably as it is read, before paho can
// answer it with a PUBREL, so that after a reconnect or a restart the
// exchange resumes with the PUBREL instead of a PUBLISH the broker would
// take for a new message; and a QoS 2 PUBLISH leaves only once its packet
// identifier is durable. Writes that must wait for durability queue, in
// order, behind a writer goroutine, so that paho's single writer goroutine
// is not blocked and the states of a window of messages share one commit.
type wireConn struct {
	net.Conn
	d   *dispatcher
	gen uint64 // connection generation (dispatcher.dialed)

	// Reads go through a buffer so that every PUBREC in a chunk read from
	// the network is recorded in one commit before paho sees any of them.
	rbuf []byte
	r, w int
	rerr error
	scan pubrecScanner
	ids  []uint16

	broken atomic.Pointer[error] // set by breakConn

	writeTimeout time.Duration
	out          outQueue // see wirewrite.go
}

// errBroken is the read error paho sees after breakConn. paho ignores an
// error that says the connection was closed locally (it then never reports
// the loss), so the read must fail with an error of our own.
var errBroken = errors.New("holdfast: connection dropped to resend in order")

// breakConn makes the connection fail as a loss: paho reports it, and the
// next connection's resume sends everything in flight again, in order.
func (c *wireConn) breakConn() { c.breakWith(errBroken) }

// breakWith is breakConn reporting why (the first cause wins). A cause that
// says the connection was closed locally is replaced by errBroken, which
// paho does not ignore.
func (c *wireConn) breakWith(cause error) {
	err := cause
	if strings.Contains(err.Error(), "use of closed network connection") {
		err = errBroken
	}
	c.broken.CompareAndSwap(nil, &err)
	_ = c.Conn.Close()
}

const (
	ptypePublish = 3
	ptypePubrel  = 6
	readBufSize  = 32 << 10
)

func (c *wireConn) Read(p []byte) (int, error) {
	if c.r == c.w {
		if c.rerr != nil {
			return 0, c.rerr
		}
		if c.rbuf == nil {
			c.rbuf = make([]byte, readBufSize)
		}
		n, err := c.Conn.Read(c.rbuf)
		if b := c.broken.Load(); b != nil {
			n, err = 0, *b
		}
		c.r, c.w, c.rerr = 0, n, err
		if n > 0 {
			c.ids = c.scan.scan(c.rbuf[:n], c.ids[:0])
			if c.scan.connack {
				c.scan.connack = false
				if c.scan.connackRC == 0 && !c.scan.sessionSet {
					c.d.sessionGone()
					// No inbound identifier is in use either. Written before
					// paho sees the CONNACK: a stale entry would swallow a new
					// message under its identifier after a restart.
					if perr := c.d.in.wait(c.d.in.clear()); perr != nil {
						c.r, c.w, c.rerr = 0, 0, perr
						return 0, perr
					}
				}
			}
			if len(c.scan.acks) > 0 {
				c.d.acksRead(c.scan.acks)
				c.scan.acks = c.scan.acks[:0]
			}
			if len(c.ids) > 0 {
				if perr := c.d.pubrecs(c.ids); perr != nil {
					// Not durable: paho must not answer these PUBRECs. The
					// connection fails; the resume resends the PUBLISHes,
					// which the broker still holds and so deduplicates.
					c.r, c.w, c.rerr = 0, 0, fmt.Errorf("holdfast: recording PUBREC: %w", perr)
				}
			}
		}
		if c.r == c.w {
			return 0, c.rerr
		}
	}
	n := copy(p, c.rbuf[c.r:c.w])
	c.r += n
	return n, nil
}

func (c *wireConn) Write(b []byte) (int, error) {
	var w waitFor
	if len(b) >= 4 && b[0]>>4 == ptypePubrel && b[1] == 2 {
		id := binary.BigEndian.Uint16(b[2:4])
		w.batch, w.seq, w.ok = c.d.releasing(id)
		w.id, w.phase, w.pubrel = id, outbox.PhaseReleased, true
	} else if len(b) >= 4 && b[0]>>4 == ptypePubcomp && b[1] == 2 {
		// The end of an inbound QoS 2 exchange: the identifier's removal
		// from the ledger must be durable first (inledger.go).
		if batch := c.d.in.pending(binary.BigEndian.Uint16(b[2:4])); batch != nil {
			w = waitFor{batch: batch, ok: true, inbound: true}
		}
	} else if len(b) > 0 && b[0]>>4 == ptypePublish && b[0]&0x06 != 0 {
		dup := b[0]&0x08 != 0
		if id, ok := publishID(b); ok {
			drop, batch, seq, phase := c.d.beforePublish(id, c.gen, dup)
			if drop {
				// See dispatcher.beforePublish. paho cannot tell a dropped
				// write from a sent one; the message is resent in order.
				c.d.stats.suppressed.Add(1)
				return len(b), nil
			}
			w = waitFor{batch: batch, seq: seq, id: id, phase: phase, ok: true}
		}
		if dup {
			c.d.stats.resent.Add(1)
		}
	}
	return c.write(b, w)
}

// publishID returns the packet identifier of a QoS 1/2 PUBLISH packet.
func publishID(b []byte) (uint16, bool) {
	i := 1
	for ; i < len(b) && i < 5; i++ { // remaining length: 1 to 4 bytes
		if b[i]&0x80 == 0 {
			break
		}
	}
	i++
	if i+2 > len(b) {
		return 0, false
	}
	i += 2 + int(binary.BigEndian.Uint16(b[i:]))
	if i+2 > len(b) {
		return 0, false
	}
	return binary.BigEndian.Uint16(b[i:]), true
}
