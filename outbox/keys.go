package outbox

import "encoding/binary"

// Badger key layout. Sequence numbers are big-endian so that key order is
// sequence order.
//
//	'r' seq(8) size(4)  record; value: encodeRecord; size is the value's length,
//	                    so Open rebuilds the index from keys alone
//	's' seq(8)          in-flight state; value: encodeState
//	'q' seq(8)          quarantined record (raw bytes as found)
//	"m/nextseq"         next sequence to assign (uint64), so sequences never go back
//	"m/marker"          resume point: seq(8) and the marker of the last record appended with one
const (
	prefixRecord     = 'r'
	prefixState      = 's'
	prefixQuarantine = 'q'
	recordKeyLen     = 13
)

var (
	metaNextSeqKey = []byte("m/nextseq")
	metaMarkerKey  = []byte("m/marker")
)

func encodeMarker(seq uint64, marker []byte) []byte {
	return append(binary.BigEndian.AppendUint64(make([]byte, 0, 8+len(marker)), seq), marker...)
}

func recordKey(seq uint64, size uint32) []byte {
	k := make([]byte, recordKeyLen)
	k[0] = prefixRecord
	binary.BigEndian.PutUint64(k[1:], seq)
	binary.BigEndian.PutUint32(k[9:], size)
	return k
}

// recordSeek is the smallest key of record seq.
func recordSeek(seq uint64) []byte {
	k := make([]byte, 9)
	k[0] = prefixRecord
	binary.BigEndian.PutUint64(k[1:], seq)
	return k
}

func parseRecordKey(k []byte) (seq uint64, size uint32, ok bool) {
	if len(k) != recordKeyLen || k[0] != prefixRecord {
		return 0, 0, false
	}
	return binary.BigEndian.Uint64(k[1:]), binary.BigEndian.Uint32(k[9:]), true
}

func seqKey(prefix byte, seq uint64) []byte {
	k := make([]byte, 9)
	k[0] = prefix
	binary.BigEndian.PutUint64(k[1:], seq)
	return k
}

func parseSeqKey(prefix byte, k []byte) (uint64, bool) {
	if len(k) != 9 || k[0] != prefix {
		return 0, false
	}
	return binary.BigEndian.Uint64(k[1:]), true
}
