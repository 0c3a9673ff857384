package client

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/holdfast-mqtt/holdfast/outbox"
	"github.com/holdfast-mqtt/holdfast/reconnect"
)

const phaseReleased = outbox.PhaseReleased

func discard() *slog.Logger { return slog.New(slog.DiscardHandler) }

func newTestQueue(t *testing.T) outbox.Queue {
	t.Helper()
	q, err := outbox.Open(t.TempDir(), outbox.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = q.Close() })
	return q
}

func appendRecord(t *testing.T, q outbox.Queue, qos byte) uint64 {
	t.Helper()
	seq, err := q.Append(context.Background(), &outbox.Record{Topic: "t", QoS: qos, Payload: []byte("x")})
	if err != nil {
		t.Fatal(err)
	}
	return seq
}

type recordAt struct{ seq uint64 }

func (r recordAt) record() *outbox.Record { return &outbox.Record{Seq: r.seq, QoS: 2} }

type fakeConn struct{ w io.Writer }

func (f fakeConn) Write(b []byte) (int, error)     { return f.w.Write(b) }
func (fakeConn) Read([]byte) (int, error)          { return 0, io.EOF }
func (fakeConn) Close() error                      { return nil }
func (fakeConn) LocalAddr() net.Addr               { return nil }
func (fakeConn) RemoteAddr() net.Addr              { return nil }
func (fakeConn) SetDeadline(t time.Time) error     { return nil }
func (fakeConn) SetReadDeadline(t time.Time) error { return nil }
func (fakeConn) SetWriteDeadline(time.Time) error  { return nil }

func startPersister(t *testing.T, d *dispatcher) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); d.persist.run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
}

func backoffFast() reconnect.Policy {
	return reconnect.Policy{InitialInterval: 10 * time.Millisecond, MaxInterval: 100 * time.Millisecond}
}

// syncBuf is a bytes.Buffer safe for a writer goroutine and a test.
type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Len()
}

// waitLen waits (bounded) until s holds n bytes.
func waitLen(t *testing.T, s *syncBuf, n int, msg string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for s.Len() < n && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if s.Len() != n {
		t.Fatalf("%s: %d bytes written, want %d", msg, s.Len(), n)
	}
}

// released is what wireConn does around a PUBREL write (releasing, then
// pubrelWritten once durable), in one call for tests and benchmarks.
func (d *dispatcher) released(id uint16) error {
	b, seq, ok := d.releasing(id)
	if !ok {
		return nil
	}
	if err := d.durable(b, seq, id, outbox.PhaseReleased); err != nil {
		return err
	}
	d.pubrelWritten(id)
	return nil
}

// newTestDispatcher is a dispatcher on q, as New builds it.
func newTestDispatcher(q outbox.Queue, cfg *Config, st *counters) *dispatcher {
	d := newDispatcher(cfg, st)
	d.attach(q)
	return d
}

// acked is what paho does on an acknowledgement of an outbound packet:
// the wire reader records its kind, then paho deletes "o.<id>".
func acked(d *dispatcher, ptype byte, id uint16) {
	d.acksRead([]ackRead{{ptype, id}})
	d.Del("o." + strconv.Itoa(int(id)))
}
