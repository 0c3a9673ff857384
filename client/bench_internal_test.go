package client

import (
	"bytes"
	"context"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.mqtt.golang/packets"

	"github.com/holdfast-mqtt/holdfast/outbox"
)

// Benchmarks of the dispatcher's per-message work in isolation (no
// network, no paho): the Store calls paho makes for every QoS 1/2 message
// (Put before the write, Del on the acknowledgement, which removes the
// record from the outbox), the QoS 2 exchange with its durable states, the
// wire filter every packet passes, and the outbox reads that feed the
// dispatcher. See bench_test.go for the end-to-end benchmarks.

const benchRecordPayload = 256

// benchQueue opens a queue holding n QoS qos records; kind is "memory" or
// "badger" (default durability). The records are appended without fsync,
// from 16 goroutines, before the benchmark's clock starts.
func benchQueue(b *testing.B, kind string, n int, qos byte) (outbox.Queue, []outbox.Record) {
	b.Helper()
	var q outbox.Queue
	var dir string
	switch kind {
	case "memory":
		q = outbox.NewMemory(outbox.Options{})
	case "badger":
		dir = b.TempDir()
		bq, err := outbox.Open(dir, outbox.Options{Durability: outbox.NoSync})
		if err != nil {
			b.Fatal(err)
		}
		q = bq
	default:
		b.Fatalf("unknown queue %q", kind)
	}
	recs := make([]outbox.Record, n)
	payload := make([]byte, benchRecordPayload)
	var wg sync.WaitGroup
	const g = 16
	errs := make(chan error, g)
	for w := range g {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < n; i += g {
				r := outbox.Record{Topic: "bench/ack", QoS: qos, Payload: payload}
				if _, err := q.Append(context.Background(), &r); err != nil {
					errs <- err
					return
				}
				recs[i] = r
			}
		}()
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		b.Fatal(err)
	}
	if kind == "badger" {
		// Reopen with the default durability: removals and states are
		// then written as a client writes them.
		if err := q.Close(); err != nil {
			b.Fatal(err)
		}
		bq, err := outbox.Open(dir, outbox.Options{})
		if err != nil {
			b.Fatal(err)
		}
		q = bq
	}
	b.Cleanup(func() { _ = q.Close() })
	return q, recs
}

func benchDispatcher(q outbox.Queue) *dispatcher {
	cfg := Config{MaxInflight: 65535, MaxInflightQoS2: 65535, Logger: slog.New(slog.DiscardHandler)}
	return newTestDispatcher(q, &cfg, &counters{})
}

// storeKeys are paho's Store keys "o.1" .. "o.65535", made once.
var storeKeys = func() []string {
	k := make([]string, 65536)
	for i := 1; i < len(k); i++ {
		k[i] = "o." + strconv.Itoa(i)
	}
	return k
}()

func benchPublishPacket(qos byte) *packets.PublishPacket {
	p := packets.NewControlPacket(packets.Publish).(*packets.PublishPacket)
	p.TopicName, p.Qos, p.Payload = "bench/ack", qos, make([]byte, benchRecordPayload)
	return p
}

// BenchmarkAck is one QoS 1 message's Store traffic: Put("o.<id>") as paho
// sends it, then Del("o.<id>") as its PUBACK arrives, which retires the
// flight, completes nothing (no receipt is held) and removes the record
// from the outbox. ns/op is per message.
func BenchmarkAck(b *testing.B) {
	for _, kind := range []string{"memory", "badger"} {
		b.Run("outbox="+kind, func(b *testing.B) {
			q, recs := benchQueue(b, kind, b.N, 1)
			d := benchDispatcher(q)
			pkt := benchPublishPacket(1)
			b.ReportAllocs()
			b.ResetTimer()
			for i := range b.N {
				key := storeKeys[i%65535+1]
				d.mu.Lock()
				d.pending = &recs[i]
				d.mu.Unlock()
				d.Put(key, pkt)
				acked(d, ptypePuback, uint16(i%65535+1))
			}
			b.StopTimer()
			if got := d.stats.acked.Load(); got != uint64(b.N) {
				b.Fatalf("acked %d of %d", got, b.N)
			}
		})
	}
}

// BenchmarkQoS2Exchange is the durable bookkeeping of QoS 2 messages on
// the Badger outbox with the default durability, a window of 20 at a time
// (Mosquitto's max_inflight_messages): Put enqueues each packet identifier
// for the state persister and the PUBLISH write waits for its batch; the
// PUBRECs, read together, are recorded in one commit (pubrecs) before the
// PUBRELs leave (released); PUBCOMP (Del) removes the records. ns/op is per
// message.
func BenchmarkQoS2Exchange(b *testing.B) {
	const window = 20
	q, recs := benchQueue(b, "badger", b.N, 2)
	d := benchDispatcher(q)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		d.persist.run(ctx)
	}()
	b.Cleanup(func() {
		cancel()
		<-done
	})
	pkt := benchPublishPacket(2)
	ids := make([]uint16, 0, window)
	b.ReportAllocs()
	b.ResetTimer()
	for first := 0; first < b.N; first += window {
		ids = ids[:0]
		for i := first; i < min(first+window, b.N); i++ {
			id := uint16(i%65535 + 1)
			d.mu.Lock()
			d.pending = &recs[i]
			d.mu.Unlock()
			d.Put(storeKeys[id], pkt)
			ids = append(ids, id)
		}
		for _, id := range ids { // the PUBLISH writes
			drop, batch, seq, phase := d.beforePublish(id, d.gen, false)
			if drop {
				b.Fatalf("PUBLISH %d dropped", id)
			}
			if err := d.durable(batch, seq, id, phase); err != nil {
				b.Fatal(err)
			}
		}
		if err := d.pubrecs(ids); err != nil { // the PUBRECs, read together
			b.Fatal(err)
		}
		for _, id := range ids { // the PUBREL writes, then PUBCOMP
			if err := d.released(id); err != nil {
				b.Fatal(err)
			}
			acked(d, ptypePubcomp, id)
		}
	}
	b.StopTimer()
	if got := d.stats.acked.Load(); got != uint64(b.N) {
		b.Fatalf("acked %d of %d", got, b.N)
	}
}

// discardConn is a net.Conn that swallows writes.
type discardConn struct{ net.Conn }

func (discardConn) Write(b []byte) (int, error) { return len(b), nil }

// BenchmarkWireWrite is the wire filter every outgoing QoS 1 PUBLISH passes
// (packet identifier parse and the leftover check under the dispatcher's
// lock), with 512 messages in flight.
func BenchmarkWireWrite(b *testing.B) {
	d := benchDispatcher(outbox.NewMemory(outbox.Options{}))
	const window = 512
	pkts := make([][]byte, window+1)
	for id := 1; id <= window; id++ {
		p := benchPublishPacket(1)
		p.MessageID = uint16(id)
		var buf bytes.Buffer
		if err := p.Write(&buf); err != nil {
			b.Fatal(err)
		}
		pkts[id] = buf.Bytes()
		d.addFlight(&flight{seq: uint64(id), id: uint16(id), qos: 1, phase: outbox.PhaseSent, pkt: p, claimed: true, gen: 1})
	}
	w := &wireConn{Conn: discardConn{}, d: d, gen: 1}
	b.ReportAllocs()
	b.SetBytes(int64(len(pkts[1])))
	b.ResetTimer()
	for i := range b.N {
		if _, err := w.Write(pkts[i%window+1]); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDispatchRead is the dispatcher's read of the next batch from a
// backlog of 100,000 records (as sendOn reads: up to 128 records after the
// cursor). ns/op is per batch; ns/record is reported too.
func BenchmarkDispatchRead(b *testing.B) {
	const backlog, batch = 100_000, 128
	for _, kind := range []string{"memory", "badger"} {
		b.Run("outbox="+kind, func(b *testing.B) {
			q, _ := benchQueue(b, kind, backlog, 1)
			b.ReportAllocs()
			b.ResetTimer()
			var after uint64
			start := time.Now()
			for range b.N {
				recs, err := q.Read(after, batch, nil)
				if err != nil {
					b.Fatal(err)
				}
				if len(recs) < batch {
					after = 0
					continue
				}
				after = recs[len(recs)-1].Seq
			}
			b.ReportMetric(float64(time.Since(start).Nanoseconds())/float64(b.N*batch), "ns/record")
		})
	}
}
