package outbox

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/holdfast-mqtt/holdfast/outbox/internal/benchdata"
)

var benchReopenN = flag.Int("outbox.reopen", 1_000_000, "records in the outbox BenchmarkReopen opens")

const benchPayloadLen = benchdata.PayloadLen

func benchRecord() *Record {
	return &Record{Topic: "bench/telemetry", QoS: 1, Payload: benchdata.Payload()}
}

// BenchmarkAppend: one op is one Append; with 16 appenders they run
// concurrently (RunParallel, 16 goroutines).
func BenchmarkAppend(b *testing.B) {
	for _, mode := range []Durability{GroupCommit, SyncEach, NoSync} {
		for _, workers := range []int{1, 16} {
			b.Run(fmt.Sprintf("%s/%d", mode, workers), func(b *testing.B) {
				q, err := Open(b.TempDir(), Options{Durability: mode})
				if err != nil {
					b.Fatal(err)
				}
				defer q.Close()
				ctx := context.Background()
				b.SetBytes(benchPayloadLen)
				b.ResetTimer()
				if workers == 1 {
					for i := 0; i < b.N; i++ {
						if _, err := q.Append(ctx, benchRecord()); err != nil {
							b.Fatal(err)
						}
					}
				} else {
					b.SetParallelism((workers + 1) / 2) // x GOMAXPROCS(2) = 16 goroutines
					b.RunParallel(func(pb *testing.PB) {
						for pb.Next() {
							if _, err := q.Append(ctx, benchRecord()); err != nil {
								b.Error(err)
								return
							}
						}
					})
				}
				b.StopTimer()
				b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "appends/s")
			})
		}
	}
}

// fill appends n records with 16 appenders (NoSync unless told).
func fill(tb testing.TB, q Queue, n int) {
	tb.Helper()
	var wg sync.WaitGroup
	per := (n + 15) / 16
	for w := 0; w < 16; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < per && w*per+i < n; i++ {
				if _, err := q.Append(context.Background(), benchRecord()); err != nil {
					tb.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
}

// BenchmarkDrain: one op is one record read from the head and removed, in
// batches of 256 as a dispatcher would.
func BenchmarkDrain(b *testing.B) {
	for _, prof := range []Profile{ProfileDevice, ProfileServer} {
		b.Run(prof.String(), func(b *testing.B) {
			q, err := Open(b.TempDir(), Options{Durability: NoSync, Profile: prof})
			if err != nil {
				b.Fatal(err)
			}
			defer q.Close()
			fill(b, q, b.N)
			b.ResetTimer()
			var buf []Record
			seqs := make([]uint64, 0, 256)
			n := 0
			for n < b.N {
				buf, err = q.Read(0, 256, buf[:0])
				if err != nil {
					b.Fatal(err)
				}
				if len(buf) == 0 {
					b.Fatalf("drained %d of %d", n, b.N)
				}
				seqs = seqs[:0]
				for _, r := range buf {
					seqs = append(seqs, r.Seq)
				}
				if err := q.Remove(seqs...); err != nil {
					b.Fatal(err)
				}
				n += len(buf)
			}
			b.StopTimer()
			b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "records/s")
		})
	}
}

// BenchmarkReopen: one op opens an outbox holding -outbox.reopen records
// (1,000,000 by default) and reads its Stats; Close is outside the timer.
// The outbox is filled once per profile (no-sync, 16 appenders), outside
// the timer, and reused across the benchmark's rounds.
func BenchmarkReopen(b *testing.B) {
	root, err := os.MkdirTemp("", "outbox-bench-reopen-")
	if err != nil {
		b.Fatal(err)
	}
	defer os.RemoveAll(root)
	for _, prof := range []Profile{ProfileDevice, ProfileServer} {
		dir := filepath.Join(root, prof.String())
		filled := false
		b.Run(prof.String(), func(b *testing.B) {
			if !filled {
				q, err := Open(dir, Options{Durability: NoSync, Profile: prof})
				if err != nil {
					b.Fatal(err)
				}
				start := time.Now()
				fill(b, q, *benchReopenN)
				if err := q.Close(); err != nil {
					b.Fatal(err)
				}
				filled = true
				b.Logf("filled %d records in %v", *benchReopenN, time.Since(start))
				b.ResetTimer()
			}
			for i := 0; i < b.N; i++ {
				q, err := Open(dir, Options{Profile: prof})
				if err != nil {
					b.Fatal(err)
				}
				if st := q.Stats(); st.Len != *benchReopenN {
					b.Fatalf("reopened with %d records", st.Len)
				}
				b.StopTimer()
				if err := q.Close(); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
			}
			b.StopTimer()
			b.ReportMetric(b.Elapsed().Seconds()/float64(b.N), "s/reopen")
		})
	}
}

// BenchmarkJournalOrSyncedBadger weighs the commit journal against synced
// Badger transactions: one appender pipelining AppendAsync (group commits
// of hundreds of records), and 16 synchronous appenders. One op is one
// record.
func BenchmarkJournalOrSyncedBadger(b *testing.B) {
	for _, store := range []struct {
		name      string
		noJournal bool
	}{{"journal", false}, {"badger-synced", true}} {
		b.Run(store.name+"/async-1", func(b *testing.B) {
			q, err := Open(b.TempDir(), Options{noJournal: store.noJournal})
			if err != nil {
				b.Fatal(err)
			}
			defer q.Close()
			var wg sync.WaitGroup
			b.SetBytes(benchPayloadLen)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				wg.Add(1)
				if err := q.AppendAsync(context.Background(), benchRecord(), func(uint64, error) { wg.Done() }); err != nil {
					b.Fatal(err)
				}
			}
			wg.Wait()
			b.StopTimer()
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "appends/s")
		})
		b.Run(store.name+"/sync-16", func(b *testing.B) {
			q, err := Open(b.TempDir(), Options{noJournal: store.noJournal})
			if err != nil {
				b.Fatal(err)
			}
			defer q.Close()
			b.SetBytes(benchPayloadLen)
			b.SetParallelism(8) // x GOMAXPROCS(2) = 16 goroutines
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if _, err := q.Append(context.Background(), benchRecord()); err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.StopTimer()
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "appends/s")
		})
	}
}
