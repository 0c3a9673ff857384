package outbox

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"math"
	"time"
)

// Stored record value, format version 1 (all integers big-endian):
//
//	[0]     version (1)
//	[1]     flags: bit 0 retained, bit 1 expires present; other bits zero
//	[2]     QoS (0..2)
//	[3:11]  Enqueued, Unix nanoseconds (int64)
//	[11:19] Expires, Unix nanoseconds, only when flag bit 1 is set
//	uvarint topic length (at most 65,535), topic bytes
//	payload bytes (everything up to the checksum)
//	last 4  CRC-32C of all preceding bytes
//
// Seq lives in the key, in-flight state (PacketID, Phase) in its own small
// value (encodeState), so that SetState never rewrites a payload.
const (
	recordVersion1 = 1

	flagRetained = 1 << 0
	flagExpires  = 1 << 1
	knownFlags   = flagRetained | flagExpires

	maxTopicLen = math.MaxUint16
	crcLen      = 4
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

var (
	errShort    = errors.New("too short")
	errVersion  = errors.New("unknown format version")
	errChecksum = errors.New("checksum mismatch")
	errFlags    = errors.New("unknown flags")
	errQoS      = errors.New("QoS above 2")
	errTopicLen = errors.New("bad topic length")
)

// minTime and maxTime bound the times a record can carry (int64 Unix nanoseconds).
var (
	minTime = time.Unix(0, math.MinInt64)
	maxTime = time.Unix(0, math.MaxInt64)
)

func timeInRange(t time.Time) bool { return !t.Before(minTime) && !t.After(maxTime) }

// encodedSize returns the size encodeRecord will produce.
func encodedSize(r *Record) int {
	n := 3 + 8 + uvarintLen(uint64(len(r.Topic))) + len(r.Topic) + len(r.Payload) + crcLen
	if !r.Expires.IsZero() {
		n += 8
	}
	return n
}

func uvarintLen(x uint64) int {
	n := 1
	for x >= 0x80 {
		x >>= 7
		n++
	}
	return n
}

// checkRecord validates what encodeRecord needs.
func checkRecord(r *Record) error {
	if r.QoS > 2 {
		return fmt.Errorf("%w: QoS %d", ErrInvalidRecord, r.QoS)
	}
	if len(r.Marker) > MaxMarker {
		return fmt.Errorf("%w: marker of %d bytes (max %d)", ErrInvalidRecord, len(r.Marker), MaxMarker)
	}
	if len(r.Topic) > maxTopicLen {
		return fmt.Errorf("%w: topic of %d bytes", ErrInvalidRecord, len(r.Topic))
	}
	if !timeInRange(r.Enqueued) || (!r.Expires.IsZero() && !timeInRange(r.Expires)) {
		return fmt.Errorf("%w: Enqueued or Expires outside years 1678-2262", ErrInvalidRecord)
	}
	return nil
}

// appendRecord appends the encoding of r (Seq, PacketID and Phase excluded)
// to dst. r must have passed checkRecord.
func appendRecord(dst []byte, r *Record) []byte {
	start := len(dst)
	var flags byte
	if r.Retained {
		flags |= flagRetained
	}
	if !r.Expires.IsZero() {
		flags |= flagExpires
	}
	dst = append(dst, recordVersion1, flags, r.QoS)
	dst = binary.BigEndian.AppendUint64(dst, uint64(r.Enqueued.UnixNano()))
	if flags&flagExpires != 0 {
		dst = binary.BigEndian.AppendUint64(dst, uint64(r.Expires.UnixNano()))
	}
	dst = binary.AppendUvarint(dst, uint64(len(r.Topic)))
	dst = append(dst, r.Topic...)
	dst = append(dst, r.Payload...)
	return appendCRCFrom(dst, start)
}

// appendCRC appends the checksum of all of b.
func appendCRC(b []byte) []byte { return appendCRCFrom(b, 0) }

func appendCRCFrom(b []byte, start int) []byte {
	return binary.BigEndian.AppendUint32(b, crc32.Checksum(b[start:], castagnoli))
}

// decodeRecord decodes b into r (Seq, PacketID and Phase untouched). The
// payload and topic are copied; b may be reused afterwards.
func decodeRecord(b []byte, r *Record) error {
	if len(b) < 3+8+1+crcLen {
		return errShort
	}
	if b[0] != recordVersion1 {
		return fmt.Errorf("%w %d", errVersion, b[0])
	}
	body, sum := b[:len(b)-crcLen], binary.BigEndian.Uint32(b[len(b)-crcLen:])
	if crc32.Checksum(body, castagnoli) != sum {
		return errChecksum
	}
	flags, qos := body[1], body[2]
	if flags&^knownFlags != 0 {
		return errFlags
	}
	if qos > 2 {
		return errQoS
	}
	enq := int64(binary.BigEndian.Uint64(body[3:11]))
	rest := body[11:]
	var exp int64
	if flags&flagExpires != 0 {
		if len(rest) < 8 {
			return errShort
		}
		exp = int64(binary.BigEndian.Uint64(rest))
		rest = rest[8:]
	}
	tlen, n := binary.Uvarint(rest)
	if n <= 0 || tlen > maxTopicLen || tlen > uint64(len(rest)-n) {
		return errTopicLen
	}
	rest = rest[n:]
	r.QoS = qos
	r.Retained = flags&flagRetained != 0
	r.Enqueued = time.Unix(0, enq)
	r.Expires = time.Time{}
	if flags&flagExpires != 0 {
		r.Expires = time.Unix(0, exp)
	}
	r.Topic = string(rest[:tlen])
	r.Payload = append([]byte(nil), rest[tlen:]...)
	return nil
}

// decodeTimes decodes only Enqueued and Expires (zero when absent) from a
// stored value, verifying the checksum.
func decodeTimes(b []byte) (enq, exp time.Time, err error) {
	var r Record
	if err := decodeRecord(b, &r); err != nil {
		return enq, exp, err
	}
	return r.Enqueued, r.Expires, nil
}

// In-flight state value, version 1: [version=1][phase][packetID uint16][CRC-32C uint32].
const stateLen = 8

func encodeState(packetID uint16, phase Phase) []byte {
	b := make([]byte, 4, stateLen)
	b[0], b[1] = 1, byte(phase)
	binary.BigEndian.PutUint16(b[2:], packetID)
	return binary.BigEndian.AppendUint32(b, crc32.Checksum(b, castagnoli))
}

func decodeState(b []byte) (packetID uint16, phase Phase, err error) {
	if len(b) != stateLen {
		return 0, 0, errShort
	}
	if b[0] != 1 {
		return 0, 0, fmt.Errorf("%w %d", errVersion, b[0])
	}
	if crc32.Checksum(b[:4], castagnoli) != binary.BigEndian.Uint32(b[4:]) {
		return 0, 0, errChecksum
	}
	phase = Phase(b[1])
	if !phase.valid() {
		return 0, 0, fmt.Errorf("bad phase %d", b[1])
	}
	return binary.BigEndian.Uint16(b[2:]), phase, nil
}
