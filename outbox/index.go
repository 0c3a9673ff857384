package outbox

// index is the in-memory map of live records: which sequences are in the
// queue and the encoded size of each. It costs about 2 bytes per record
// (1,000,000 records: ~2 MiB), never holds payloads, and gives O(1) add,
// remove and lookup, and amortised O(1) head tracking. Not safe for
// concurrent use (core.mu guards it).
type index struct {
	base  uint64            // first seq covered by segs[0]; a multiple of segSize
	segs  []*segment        // segs[i] covers [base+i*segSize, base+(i+1)*segSize); nil when empty
	big   map[uint64]uint32 // sizes >= bigSize
	n     int               // live records
	first uint64            // lowest live seq; 0 when n == 0 (seqs start at 1)
	last  uint64            // highest seq ever added
}

const (
	segShift = 10
	segSize  = 1 << segShift
	bigSize  = 0xFFFF // sizes at or above it live in index.big
)

type segment struct {
	sizes [segSize]uint16 // 0: not live; bigSize: see index.big
	live  int
}

// add records seq with size (> 0). seq must be above every seq added before.
func (x *index) add(seq uint64, size uint32) {
	if seq <= x.last || size == 0 {
		panic("outbox: index.add out of order")
	}
	x.last = seq
	if len(x.segs) == 0 {
		x.base = seq &^ (segSize - 1)
	}
	i := int((seq - x.base) >> segShift)
	for len(x.segs) <= i {
		x.segs = append(x.segs, nil)
	}
	s := x.segs[i]
	if s == nil {
		s = new(segment)
		x.segs[i] = s
	}
	slot := seq & (segSize - 1)
	if size >= bigSize {
		if x.big == nil {
			x.big = make(map[uint64]uint32)
		}
		x.big[seq] = size
		s.sizes[slot] = bigSize
	} else {
		s.sizes[slot] = uint16(size)
	}
	s.live++
	x.n++
	if x.first == 0 {
		x.first = seq
	}
}

func (x *index) seg(seq uint64) *segment {
	if seq < x.base {
		return nil
	}
	i := (seq - x.base) >> segShift
	if i >= uint64(len(x.segs)) {
		return nil
	}
	return x.segs[i]
}

// size returns the size of a live seq, or 0.
func (x *index) size(seq uint64) uint32 {
	s := x.seg(seq)
	if s == nil {
		return 0
	}
	v := s.sizes[seq&(segSize-1)]
	if v == bigSize {
		return x.big[seq]
	}
	return uint32(v)
}

// remove deletes seq and returns its size, or 0 when it was not live.
func (x *index) remove(seq uint64) uint32 {
	s := x.seg(seq)
	if s == nil {
		return 0
	}
	slot := seq & (segSize - 1)
	v := s.sizes[slot]
	if v == 0 {
		return 0
	}
	size := uint32(v)
	if v == bigSize {
		size = x.big[seq]
		delete(x.big, seq)
	}
	s.sizes[slot] = 0
	s.live--
	x.n--
	if s.live == 0 {
		x.segs[(seq-x.base)>>segShift] = nil
	}
	// Drop empty segments at the front.
	for len(x.segs) > 0 && x.segs[0] == nil {
		x.segs[0] = nil
		x.segs = x.segs[1:]
		x.base += segSize
	}
	if len(x.segs) == 0 {
		x.segs = nil // release the backing array
	}
	if seq == x.first {
		x.first = x.next(seq)
	}
	return size
}

// next returns the lowest live seq above after, or 0.
func (x *index) next(after uint64) uint64 {
	seq := after + 1
	if seq < x.base {
		seq = x.base
	}
	for i := (seq - x.base) >> segShift; i < uint64(len(x.segs)); i++ {
		s := x.segs[i]
		if s == nil || s.live == 0 {
			seq = x.base + (i+1)<<segShift
			continue
		}
		for slot := seq & (segSize - 1); slot < segSize; slot++ {
			if s.sizes[slot] != 0 {
				return x.base + i<<segShift + slot
			}
		}
		seq = x.base + (i+1)<<segShift
	}
	return 0
}

// concat appends y, whose seqs all lie in segments after x's.
func (x *index) concat(y *index) {
	if y.n == 0 {
		return
	}
	if x.n == 0 {
		*x = *y
		return
	}
	end := x.base + uint64(len(x.segs))<<segShift
	if y.base < end || y.first <= x.last {
		panic("outbox: index.concat overlaps")
	}
	for ; end < y.base; end += segSize {
		x.segs = append(x.segs, nil)
	}
	x.segs = append(x.segs, y.segs...)
	for k, v := range y.big {
		if x.big == nil {
			x.big = make(map[uint64]uint32)
		}
		x.big[k] = v
	}
	x.n += y.n
	x.last = y.last
}
