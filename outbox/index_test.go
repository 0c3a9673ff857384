package outbox

import (
	"math/rand/v2"
	"slices"
	"testing"
)

// TestIndexAgainstModel drives the index and a map with the same random
// operations and compares them after each one.
func TestIndexAgainstModel(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	var x index
	model := map[uint64]uint32{}
	var live []uint64 // sorted keys of model
	var seq uint64
	first := func() uint64 {
		if len(live) == 0 {
			return 0
		}
		return live[0]
	}
	forget := func(s uint64) {
		if i, ok := slices.BinarySearch(live, s); ok {
			live = slices.Delete(live, i, i+1)
		}
		delete(model, s)
	}
	for op := 0; op < 60000; op++ {
		switch r := rng.IntN(20); {
		case r < 9 || len(model) == 0:
			seq += 1 + uint64(rng.IntN(3)*rng.IntN(2)*1500) // mostly contiguous, some gaps over segments
			size := uint32(1 + rng.IntN(100))
			if rng.IntN(50) == 0 {
				size = bigSize + uint32(rng.IntN(1<<20))
			}
			x.add(seq, size)
			model[seq] = size
			live = append(live, seq)
		case r < 16: // remove the head (acks in order)
			f := first()
			if got := x.remove(f); got != model[f] {
				t.Fatalf("remove head %d: %d, want %d", f, got, model[f])
			}
			forget(f)
		default: // remove anything, live or not
			s := uint64(rng.Int64N(int64(seq) + 2))
			if got := x.remove(s); got != model[s] {
				t.Fatalf("remove %d: %d, want %d", s, got, model[s])
			}
			forget(s)
		}
		if x.n != len(model) || x.first != first() {
			t.Fatalf("op %d: n %d first %d, model %d %d", op, x.n, x.first, len(model), first())
		}
		if op%500 == 0 {
			// Walk with next and compare with the model.
			n := 0
			for s := x.next(0); s != 0; s = x.next(s) {
				if x.size(s) != model[s] || model[s] == 0 {
					t.Fatalf("walk: %d size %d, model %d", s, x.size(s), model[s])
				}
				n++
			}
			if n != len(model) {
				t.Fatalf("walk saw %d of %d", n, len(model))
			}
			if len(x.segs) > int(seq-x.base)/segSize+1 {
				t.Fatalf("segments %d for range %d", len(x.segs), seq-x.base)
			}
		}
	}
	if len(x.big) > len(model) {
		t.Fatalf("big map leaks: %d entries, %d live", len(x.big), len(model))
	}
}

func TestIndexMemoryPerRecord(t *testing.T) {
	var x index
	for s := uint64(1); s <= 1_000_000; s++ {
		x.add(s, 300)
	}
	if got := len(x.segs) * (segSize*2 + 16); got > 2_100_000 {
		t.Fatalf("index of 1,000,000 records holds %d bytes", got)
	}
	for s := uint64(1); s <= 999_999; s++ {
		x.remove(s)
	}
	if len(x.segs) != 1 || x.first != 1_000_000 {
		t.Fatalf("after draining: %d segments, first %d", len(x.segs), x.first)
	}
}
