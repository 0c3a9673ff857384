package client

import "encoding/binary"

// pubrecScanner follows the inbound byte stream packet by packet and
// collects the packet identifiers of PUBREC packets. It keeps its state
// across reads, so packets may be split anywhere.
type pubrecScanner struct {
	state   int  // scanHeader, scanLength, scanBody
	ptype   byte // type of the packet being read
	remain  int  // bytes of the body still to come
	mult    int  // remaining-length multiplier
	idBuf   [2]byte
	idBytes int // PUBREC body bytes collected
}

const (
	scanHeader = iota
	scanLength
	scanBody
	ptypePubrec = 5

	maxLengthMult = 1 << 28 // mult after the 4 bytes a remaining length may take
)

// scan consumes b and appends the identifiers of the PUBRECs completed in
// it to ids.
func (s *pubrecScanner) scan(b []byte, ids []uint16) []uint16 {
	for i := 0; i < len(b); {
		switch s.state {
		case scanHeader:
			s.ptype = b[i] >> 4
			s.remain, s.mult, s.idBytes = 0, 1, 0
			s.state = scanLength
			i++
		case scanLength:
			c := b[i]
			i++
			s.remain += int(c&0x7f) * s.mult
			s.mult *= 128
			// The length ends after 4 bytes even with a continuation bit,
			// as in paho's reader: the scanner must frame packets exactly
			// as paho does, and a longer length would overflow remain.
			if c&0x80 == 0 || s.mult == maxLengthMult {
				s.state = scanBody
				if s.remain == 0 {
					s.state = scanHeader
				}
			}
		case scanBody:
			n := min(s.remain, len(b)-i)
			if s.ptype == ptypePubrec {
				for k := 0; k < n && s.idBytes < 2; k++ {
					s.idBuf[s.idBytes] = b[i+k]
					s.idBytes++
				}
			}
			i += n
			s.remain -= n
			if s.remain == 0 {
				if s.ptype == ptypePubrec && s.idBytes == 2 {
					ids = append(ids, binary.BigEndian.Uint16(s.idBuf[:]))
				}
				s.state = scanHeader
			}
		}
	}
	return ids
}
