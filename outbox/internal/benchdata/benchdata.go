// Package benchdata is the payload source of the outbox's benchmarks
// (outbox/bench_test.go and outbox/internal/outboxbench), so that both
// measure the same bytes.
package benchdata

import (
	"math/rand/v2"
	"sync/atomic"
)

// PayloadLen is the size of every payload.
const PayloadLen = 256

// pool is random bytes; each payload is the next window of it, so that
// neither compression nor repetition flatters the figures.
var (
	pool = func() []byte {
		b := make([]byte, 1<<20)
		r := rand.New(rand.NewPCG(7, 7))
		for i := range b {
			b[i] = byte(r.Uint32())
		}
		return b
	}()
	next atomic.Uint64
)

// Payload returns the next PayloadLen-byte window of the pool (shared, not
// to be modified). Safe for concurrent use.
func Payload() []byte {
	off := (next.Add(1) * PayloadLen) % uint64(len(pool))
	return pool[off : off+PayloadLen]
}
