package client

import "encoding/binary"

// pubrecScanner follows the inbound byte stream packet by packet and
// collects the packet identifiers of PUBREC packets. It keeps its state
// across reads, so packets may be split anywhere. Along the way it notes
// the other packets the client must see before paho acts on them: the
// CONNACK (whether the broker kept the session) and the acknowledgements
// of outbound packets (PUBACK, PUBCOMP, SUBACK, UNSUBACK), so that paho's
// Store deletion of "o.<id>" can be told apart by kind.
type pubrecScanner struct {
	state   int  // scanHeader, scanLength, scanBody
	ptype   byte // type of the packet being read
	remain  int  // bytes of the body still to come
	mult    int  // remaining-length multiplier
	lenN    int  // remaining-length bytes read
	idBuf   [2]byte
	idBytes int // body bytes collected (the first two)

	// acks are the acknowledgements completed since the caller last
	// cleared it, in stream order.
	acks []ackRead
	// connack is set when a CONNACK completed; the caller clears it.
	connack    bool
	sessionSet bool // CONNACK flags: session present
	connackRC  byte // CONNACK return code
}

// ackRead is one acknowledgement of an outbound packet read from the wire.
type ackRead struct {
	ptype byte
	id    uint16
}

const (
	scanHeader = iota
	scanLength
	scanBody
	ptypeConnack  = 2
	ptypePuback   = 4
	ptypePubrec   = 5
	ptypePubcomp  = 7
	ptypeSuback   = 9
	ptypeUnsuback = 11
)

// wantsID reports whether the first two body bytes of a packet type matter.
func wantsID(ptype byte) bool {
	switch ptype {
	case ptypeConnack, ptypePuback, ptypePubrec, ptypePubcomp, ptypeSuback, ptypeUnsuback:
		return true
	}
	return false
}

// scan consumes b and appends the identifiers of the PUBRECs completed in
// it to ids.
func (s *pubrecScanner) scan(b []byte, ids []uint16) []uint16 {
	for i := 0; i < len(b); {
		switch s.state {
		case scanHeader:
			s.ptype = b[i] >> 4
			s.remain, s.mult, s.idBytes, s.lenN = 0, 1, 0, 0
			s.state = scanLength
			i++
		case scanLength:
			c := b[i]
			i++
			s.lenN++
			s.remain += int(c&0x7f) * s.mult
			s.mult *= 128
			if c&0x80 == 0 || s.lenN == 4 {
				// A fifth length byte is malformed; paho fails the
				// connection on it, and the count stays bounded here.
				s.state = scanBody
				if s.remain == 0 {
					s.state = scanHeader
				}
			}
		case scanBody:
			n := min(s.remain, len(b)-i)
			if wantsID(s.ptype) {
				for k := 0; k < n && s.idBytes < 2; k++ {
					s.idBuf[s.idBytes] = b[i+k]
					s.idBytes++
				}
			}
			i += n
			s.remain -= n
			if s.remain == 0 {
				if s.idBytes == 2 {
					ids = s.complete(ids)
				}
				s.state = scanHeader
			}
		}
	}
	return ids
}

// complete records a packet whose first two body bytes were collected.
func (s *pubrecScanner) complete(ids []uint16) []uint16 {
	id := binary.BigEndian.Uint16(s.idBuf[:])
	switch s.ptype {
	case ptypePubrec:
		ids = append(ids, id)
	case ptypeConnack:
		s.connack, s.sessionSet, s.connackRC = true, s.idBuf[0]&1 != 0, s.idBuf[1]
	case ptypePuback, ptypePubcomp, ptypeSuback, ptypeUnsuback:
		s.acks = append(s.acks, ackRead{s.ptype, id})
	}
	return ids
}
