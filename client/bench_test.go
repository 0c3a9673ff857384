package client_test

import (
	"context"
	"encoding/binary"
	"fmt"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/holdfast-mqtt/holdfast/client"
	"github.com/holdfast-mqtt/holdfast/internal/testbroker"
	"github.com/holdfast-mqtt/holdfast/outbox"
	"github.com/holdfast-mqtt/holdfast/reconnect"
)

// Benchmarks of the client's hot paths, for benchstat comparisons across
// commits:
//
//	go test -run '^$' -bench . -benchmem -count 10 ./client/ > new.txt
//	benchstat old.txt new.txt
//
// BenchmarkPublish is the append path alone (the broker is benchUnreachable, so
// nothing is dispatched); BenchmarkRoundTrip is publish, dispatch and
// acknowledgement end to end against a real broker. The ack path in
// isolation is BenchmarkAck in bench_internal_test.go. The comparison with
// bare paho on one Mosquitto is internal/cmd/hfbench.

// benchPayload is the payload size of the benchmarks (the figures
// are for 256-byte payloads).
const benchPayload = 256

// benchUnreachable is a broker URL nothing listens on: port 1 on loopback is
// refused at once, so the client stays disconnected and backs off.
const benchUnreachable = "tcp://127.0.0.1:1"

// reconnectRarely keeps attempts to the benchUnreachable broker rare.
var reconnectRarely = reconnect.Policy{InitialInterval: time.Second, MaxInterval: 10 * time.Second}

var benchDurabilities = []struct {
	name string
	d    outbox.Durability
}{
	{"group", outbox.GroupCommit},
	{"each", outbox.SyncEach},
	{"nosync", outbox.NoSync},
}

// benchClient creates a client closed by b.Cleanup. An empty outboxDir means
// the in-memory outbox.
func benchClient(b *testing.B, broker, outboxDir string, d outbox.Durability) *client.Client {
	b.Helper()
	c, err := client.New(client.Config{
		Brokers:    []string{broker},
		ClientID:   fmt.Sprintf("bench-%d", time.Now().UnixNano()%1e9),
		OutboxDir:  outboxDir,
		Durability: d,
		// An in-memory outbox still keeps the session, like a durable one.
		PersistentSession: outboxDir == "",
		Backoff:           reconnectRarely,
	})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
		defer cancel()
		_ = c.Close(ctx) // ErrNotDrained when the broker is benchUnreachable
	})
	return c
}

// publishers runs fn on n goroutines (b.RunParallel with parallelism n /
// GOMAXPROCS, at least one per P) and splits b.N among them.
func publishers(b *testing.B, n int, fn func(i uint64) error) {
	b.Helper()
	if n <= 1 {
		for i := range b.N {
			if err := fn(uint64(i)); err != nil {
				b.Fatal(err)
			}
		}
		return
	}
	b.SetParallelism(max(1, n/runtime.GOMAXPROCS(0)))
	var seq atomic.Uint64
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := fn(seq.Add(1)); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// payloadFor returns a fresh payload carrying i: Publish copies it into the
// outbox, so the caller could reuse it, but an application builds one per
// message.
func payloadFor(i uint64) []byte {
	p := make([]byte, benchPayload)
	binary.BigEndian.PutUint64(p, i)
	return p
}

// BenchmarkPublish measures Publish alone (QoS 1, 256 bytes): validation,
// the outbox append with its durability, and the receipt. The broker is
// benchUnreachable, so no dispatch competes. ns/op is per message.
func BenchmarkPublish(b *testing.B) {
	for _, dur := range benchDurabilities {
		for _, g := range []int{1, 16} {
			b.Run(fmt.Sprintf("outbox=%s/publishers=%d", dur.name, g), func(b *testing.B) {
				c := benchClient(b, benchUnreachable, b.TempDir(), dur.d)
				benchPublish(b, c, g)
			})
		}
	}
	for _, g := range []int{1, 16} {
		b.Run(fmt.Sprintf("outbox=memory/publishers=%d", g), func(b *testing.B) {
			c := benchClient(b, benchUnreachable, "", 0)
			benchPublish(b, c, g)
		})
	}
}

func benchPublish(b *testing.B, c *client.Client, g int) {
	ctx := context.Background()
	b.ReportAllocs()
	b.SetBytes(benchPayload)
	b.ResetTimer()
	publishers(b, g, func(i uint64) error {
		_, err := c.Publish(ctx, "bench/publish", payloadFor(i), client.QoS1)
		return err
	})
}

// BenchmarkRoundTrip measures the whole path: b.N messages published from
// 16 goroutines, dispatched in order within the in-flight window and
// acknowledged by the broker (Flush returns when the outbox is empty).
// ns/op is per message. The broker is Mosquitto: the cases skip without it
// (or fail with HOLDFAST_REQUIRE_MOSQUITTO=1).
func BenchmarkRoundTrip(b *testing.B) {
	cases := []struct {
		outbox string
		d      outbox.Durability
		qos    byte
	}{
		{"memory", 0, 1},
		{"nosync", outbox.NoSync, 1},
		{"group", outbox.GroupCommit, 1},
		{"nosync", outbox.NoSync, 2},
	}
	for _, tc := range cases {
		b.Run(fmt.Sprintf("broker=mosquitto/outbox=%s/qos=%d", tc.outbox, tc.qos), func(b *testing.B) {
			url := testbroker.StartMosquitto(b, testbroker.MosquittoOptions{NoPersistence: true}).URL()
			dir := ""
			if tc.outbox != "memory" {
				dir = b.TempDir()
			}
			c := benchClient(b, url, dir, tc.d)
			ctx := context.Background()
			actx, cancel := context.WithTimeout(ctx, 10*time.Second)
			defer cancel()
			if err := c.AwaitConnected(actx); err != nil {
				b.Fatal(err)
			}
			opts := client.PublishOptions{QoS: tc.qos}
			b.ReportAllocs()
			b.SetBytes(benchPayload)
			b.ResetTimer()
			publishers(b, 16, func(i uint64) error {
				_, err := c.Publish(ctx, "bench/roundtrip", payloadFor(i), opts)
				return err
			})
			fctx, fcancel := context.WithTimeout(ctx, 5*time.Minute)
			defer fcancel()
			if err := c.Flush(fctx); err != nil {
				b.Fatalf("Flush: %v (%+v)", err, c.Stats())
			}
			b.StopTimer()
			if st := c.Stats(); st.Acked < uint64(b.N) {
				b.Fatalf("acked %d of %d", st.Acked, b.N)
			}
		})
	}
}
