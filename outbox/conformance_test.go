package outbox

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"
)

// impl is one implementation under the conformance suite.
type impl struct {
	name       string
	persistent bool // survives Close and reopen on the same dir
	open       func(t testing.TB, dir string, o Options) (Queue, error)
}

var impls = []impl{
	{
		name: "memory",
		open: func(_ testing.TB, _ string, o Options) (Queue, error) {
			if err := CheckOptions(o); err != nil {
				return nil, err
			}
			return NewMemory(o), nil
		},
	},
	{
		name:       "badger",
		persistent: true,
		open: func(_ testing.TB, dir string, o Options) (Queue, error) {
			return Open(dir, o)
		},
	},
	{
		// With a key there is no journal: every batch is a synced Badger
		// transaction (the other commit path).
		name:       "badger-encrypted",
		persistent: true,
		open: func(_ testing.TB, dir string, o Options) (Queue, error) {
			if o.EncryptionKey == nil {
				o.EncryptionKey = bytes.Repeat([]byte{7}, 32)
			}
			return Open(dir, o)
		},
	},
	{
		name:       "badger-server",
		persistent: true,
		open: func(_ testing.TB, dir string, o Options) (Queue, error) {
			o.Profile = ProfileServer
			return Open(dir, o)
		},
	},
}

func TestConformance(t *testing.T) {
	for _, im := range impls {
		t.Run(im.name, func(t *testing.T) {
			t.Parallel()
			for _, tc := range conformanceCases {
				if tc.persistent && !im.persistent {
					continue
				}
				t.Run(tc.name, func(t *testing.T) {
					t.Parallel()
					tc.run(t, newHarness(t, im))
				})
			}
		})
	}
}

// harness opens queues of one implementation in one directory and checks
// invariants when the test ends.
type harness struct {
	t   *testing.T
	im  impl
	dir string
	q   Queue
}

func newHarness(t *testing.T, im impl) *harness {
	return &harness{t: t, im: im, dir: t.TempDir()}
}

func (h *harness) open(o Options) Queue {
	h.t.Helper()
	q, err := h.im.open(h.t, h.dir, o)
	if err != nil {
		h.t.Fatalf("open: %v", err)
	}
	h.q = q
	h.t.Cleanup(func() {
		checkInvariants(h.t, q)
		if err := q.Close(); err != nil {
			h.t.Errorf("close: %v", err)
		}
	})
	return q
}

// checkInvariants: Stats agree with what Read returns.
func checkInvariants(t *testing.T, q Queue) {
	t.Helper()
	recs, err := q.Read(0, 1<<30, nil)
	if errors.Is(err, ErrClosed) {
		return
	}
	if err != nil {
		t.Errorf("invariant read: %v", err)
		return
	}
	st := q.Stats()
	if st.Len != len(recs) {
		t.Errorf("invariant: Stats.Len %d, Read returned %d", st.Len, len(recs))
	}
	var bytes int64
	for i, r := range recs {
		bytes += int64(encodedSize(&r))
		if i > 0 && r.Seq <= recs[i-1].Seq {
			t.Errorf("invariant: order %d after %d", r.Seq, recs[i-1].Seq)
		}
	}
	if st.Bytes != bytes {
		t.Errorf("invariant: Stats.Bytes %d, records sum to %d", st.Bytes, bytes)
	}
}

type conformanceCase struct {
	name       string
	persistent bool
	run        func(t *testing.T, h *harness)
}

func rec(topic string, payload string) *Record {
	return &Record{Topic: topic, QoS: 1, Payload: []byte(payload)}
}

func mustAppend(t testing.TB, q Queue, r *Record) uint64 {
	t.Helper()
	seq, err := q.Append(context.Background(), r)
	if err != nil {
		t.Fatalf("append: %v", err)
	}
	return seq
}

func readAll(t testing.TB, q Queue) []Record {
	t.Helper()
	recs, err := q.Read(0, 1<<30, nil)
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	return recs
}

func seqsOf(recs []Record) []uint64 {
	out := make([]uint64, len(recs))
	for i, r := range recs {
		out[i] = r.Seq
	}
	return out
}

func equalSeqs(a, b []uint64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// dropLog collects OnDrop reports.
type dropLog struct {
	mu    sync.Mutex
	seqs  []uint64
	whys  []error
	count map[string]int
}

func (d *dropLog) onDrop(seq uint64, why error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.seqs = append(d.seqs, seq)
	d.whys = append(d.whys, why)
}

func (d *dropLog) snapshot() ([]uint64, []error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]uint64(nil), d.seqs...), append([]error(nil), d.whys...)
}

var conformanceCases = []conformanceCase{
	{name: "AppendReadRoundTrip", run: func(t *testing.T, h *harness) {
		q := h.open(Options{})
		enq := time.Unix(1700000000, 123456789)
		in := &Record{Topic: "a/b", QoS: 2, Retained: true, Payload: []byte("hello"), Enqueued: enq, Expires: time.Unix(4000000000, 1), PacketID: 9, Phase: PhaseSent}
		seq := mustAppend(t, q, in)
		if seq != 1 || in.Seq != 1 {
			t.Fatalf("first seq %d (r.Seq %d), want 1", seq, in.Seq)
		}
		in.Payload[0] = 'X' // Append stored a copy
		recs := readAll(t, q)
		if len(recs) != 1 {
			t.Fatalf("read %d records", len(recs))
		}
		r := recs[0]
		if r.Seq != 1 || r.Topic != "a/b" || r.QoS != 2 || !r.Retained || string(r.Payload) != "hello" ||
			!r.Enqueued.Equal(enq) || !r.Expires.Equal(time.Unix(4000000000, 1)) || r.PacketID != 0 || r.Phase != PhaseQueued {
			t.Fatalf("read back %+v", r)
		}
		// Enqueued defaults to now; empty payload and topic are fine.
		before := time.Now()
		mustAppend(t, q, &Record{})
		recs = readAll(t, q)
		if got := recs[1].Enqueued; got.Before(before.Add(-time.Millisecond)) || got.After(time.Now()) {
			t.Fatalf("default Enqueued %v", got)
		}
		if !recs[1].Expires.IsZero() {
			t.Fatalf("Expires %v without TTL", recs[1].Expires)
		}
	}},
	{name: "InvalidRecord", run: func(t *testing.T, h *harness) {
		q := h.open(Options{MaxRecordBytes: 1000})
		if _, err := q.Append(context.Background(), &Record{QoS: 3}); !errors.Is(err, ErrInvalidRecord) {
			t.Fatalf("QoS 3: %v", err)
		}
		if _, err := q.Append(context.Background(), &Record{Topic: string(make([]byte, 70000))}); !errors.Is(err, ErrInvalidRecord) {
			t.Fatalf("long topic: %v", err)
		}
		if _, err := q.Append(context.Background(), &Record{Payload: make([]byte, 1000)}); !errors.Is(err, ErrTooLarge) {
			t.Fatalf("over MaxRecordBytes: %v", err)
		}
		if st := q.Stats(); st.Len != 0 || st.Pending != 0 {
			t.Fatalf("stats after refusals %+v", st)
		}
	}},
	{name: "ConcurrentAppendOrder", run: func(t *testing.T, h *harness) {
		q := h.open(Options{})
		const workers, per = 8, 50
		var mu sync.Mutex
		bySeq := map[uint64]string{}
		var wg sync.WaitGroup
		for w := 0; w < workers; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; i < per; i++ {
					p := fmt.Sprintf("w%d-%d", w, i)
					seq, err := q.Append(context.Background(), rec("t", p))
					if err != nil {
						t.Error(err)
						return
					}
					mu.Lock()
					if _, dup := bySeq[seq]; dup {
						t.Errorf("seq %d assigned twice", seq)
					}
					bySeq[seq] = p
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
		recs := readAll(t, q)
		if len(recs) != workers*per {
			t.Fatalf("read %d, want %d", len(recs), workers*per)
		}
		lastPerWorker := map[byte]int{}
		for i, r := range recs {
			if i > 0 && r.Seq <= recs[i-1].Seq {
				t.Fatalf("not in order at %d", i)
			}
			if bySeq[r.Seq] != string(r.Payload) {
				t.Fatalf("seq %d holds %q, Append returned it for %q", r.Seq, r.Payload, bySeq[r.Seq])
			}
			var w, n int
			fmt.Sscanf(string(r.Payload), "w%d-%d", &w, &n)
			if prev, ok := lastPerWorker[byte(w)]; ok && n <= prev {
				t.Fatalf("worker %d: %d after %d", w, n, prev)
			}
			lastPerWorker[byte(w)] = n
		}
		if st := q.Stats(); st.Len != workers*per || st.LastSeq != recs[len(recs)-1].Seq || st.Appended != workers*per {
			t.Fatalf("stats %+v", st)
		}
	}},
	{name: "ReaderNeverSeesGaps", run: func(t *testing.T, h *harness) {
		q := h.open(Options{})
		const workers, per = 6, 60
		var wg sync.WaitGroup
		var mu sync.Mutex
		var appended []uint64
		for w := 0; w < workers; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; i < per; i++ {
					seq, err := q.Append(context.Background(), rec("t", "x"))
					if err != nil {
						t.Error(err)
						return
					}
					mu.Lock()
					appended = append(appended, seq)
					mu.Unlock()
				}
			}()
		}
		done := make(chan struct{})
		go func() { wg.Wait(); close(done) }()
		// A reader that only ever moves its cursor forward must see everything.
		var seen []uint64
		var cursor uint64
		var buf []Record
		finished := false
		for !finished {
			select {
			case <-done:
				finished = true
			case <-q.Wake():
			case <-time.After(100 * time.Millisecond):
			}
			for {
				var err error
				buf, err = q.Read(cursor, 7, buf[:0])
				if err != nil {
					t.Fatal(err)
				}
				if len(buf) == 0 {
					break
				}
				for _, r := range buf {
					seen = append(seen, r.Seq)
				}
				cursor = buf[len(buf)-1].Seq
			}
		}
		if len(seen) != workers*per {
			t.Fatalf("cursor reader saw %d of %d records: a gap was skipped", len(seen), len(appended))
		}
	}},
	{name: "CursorPaging", run: func(t *testing.T, h *harness) {
		q := h.open(Options{})
		for i := 0; i < 25; i++ {
			mustAppend(t, q, rec("t", fmt.Sprint(i)))
		}
		var got []uint64
		var cursor uint64
		for {
			page, err := q.Read(cursor, 4, nil)
			if err != nil {
				t.Fatal(err)
			}
			if len(page) == 0 {
				break
			}
			if len(page) > 4 {
				t.Fatalf("page of %d > max 4", len(page))
			}
			for _, r := range page {
				if r.Seq <= cursor {
					t.Fatalf("seq %d not after cursor %d", r.Seq, cursor)
				}
				got = append(got, r.Seq)
			}
			cursor = page[len(page)-1].Seq
		}
		if len(got) != 25 {
			t.Fatalf("paged %d records", len(got))
		}
		// Read appends to buf.
		buf := []Record{{Topic: "keep"}}
		buf, _ = q.Read(20, 100, buf)
		if len(buf) != 6 || buf[0].Topic != "keep" || buf[1].Seq != 21 {
			t.Fatalf("append to buf: %d records, first %+v", len(buf), buf[0])
		}
		if recs, _ := q.Read(25, 10, nil); len(recs) != 0 {
			t.Fatalf("read past end returned %d", len(recs))
		}
		if recs, _ := q.Read(0, 0, nil); len(recs) != 0 {
			t.Fatalf("max 0 returned %d", len(recs))
		}
	}},
	{name: "Remove", run: func(t *testing.T, h *harness) {
		q := h.open(Options{})
		for i := 0; i < 10; i++ {
			mustAppend(t, q, rec("t", "0123456789"))
		}
		full := q.Stats()
		size := full.Bytes / 10
		drain(q)
		if err := q.Remove(1, 5, 10, 99, 5); err != nil {
			t.Fatal(err)
		}
		st := q.Stats()
		if st.Len != 7 || st.Bytes != 7*size || st.Removed != 3 {
			t.Fatalf("after remove: %+v", st)
		}
		select {
		case <-q.Wake():
		default:
			t.Fatal("no wake after Remove")
		}
		if got := seqsOf(readAll(t, q)); !equalSeqs(got, []uint64{2, 3, 4, 6, 7, 8, 9}) {
			t.Fatalf("read %v", got)
		}
		if recs, _ := q.Read(4, 1, nil); len(recs) != 1 || recs[0].Seq != 6 {
			t.Fatalf("read after 4: %v", seqsOf(recs))
		}
		// Removing nothing new does not wake.
		drain(q)
		_ = q.Remove(1, 5)
		select {
		case <-q.Wake():
			t.Fatal("wake after a Remove that changed nothing")
		default:
		}
		if st := q.Stats(); st.Oldest.IsZero() {
			t.Fatal("Oldest zero with records queued")
		}
		_ = q.Remove(2, 3, 4, 6, 7, 8, 9)
		if st := q.Stats(); st.Len != 0 || st.Bytes != 0 || !st.Oldest.IsZero() || st.LastSeq != 10 {
			t.Fatalf("empty: %+v", st)
		}
		if seq := mustAppend(t, q, rec("t", "x")); seq != 11 {
			t.Fatalf("seq after emptying %d, want 11", seq)
		}
	}},
	{name: "Oldest", run: func(t *testing.T, h *harness) {
		q := h.open(Options{})
		t0 := time.Unix(1800000000, 0)
		for i := 0; i < 3; i++ {
			mustAppend(t, q, &Record{Topic: "t", Enqueued: t0.Add(time.Duration(i) * time.Second)})
		}
		if o := q.Stats().Oldest; !o.Equal(t0) {
			t.Fatalf("Oldest %v, want %v", o, t0)
		}
		_ = q.Remove(1)
		if o := q.Stats().Oldest; !o.Equal(t0.Add(time.Second)) {
			t.Fatalf("Oldest after removing head %v", o)
		}
		_ = q.Remove(3)
		if o := q.Stats().Oldest; !o.Equal(t0.Add(time.Second)) {
			t.Fatalf("Oldest after removing tail %v", o)
		}
	}},
	{name: "WakeOnAppend", run: func(t *testing.T, h *harness) {
		q := h.open(Options{})
		drain(q)
		got := make(chan struct{})
		go func() {
			<-q.Wake()
			close(got)
		}()
		mustAppend(t, q, rec("t", "x"))
		select {
		case <-got:
		case <-time.After(5 * time.Second):
			t.Fatal("no wake after Append")
		}
		if cap(q.Wake()) != 1 {
			t.Fatalf("Wake capacity %d", cap(q.Wake()))
		}
	}},
	{name: "SetStatesBatch", run: func(t *testing.T, h *harness) {
		q := h.open(Options{})
		var seqs []uint64
		for i := 0; i < 5; i++ {
			seqs = append(seqs, mustAppend(t, q, rec("t", "x")))
		}
		_ = q.Remove(seqs[4])
		sb := q.(StateBatcher)
		err := sb.SetStates(context.Background(), []StateUpdate{
			{Seq: seqs[0], PacketID: 10, Phase: PhaseSent},
			{Seq: seqs[1], PacketID: 11, Phase: PhaseReleased},
			{Seq: seqs[4], PacketID: 14, Phase: PhaseSent}, // removed: ErrNotFound, the rest still written
			{Seq: seqs[2], PacketID: 12, Phase: PhaseSent},
		})
		if !errors.Is(err, ErrNotFound) {
			t.Fatalf("SetStates with a removed record: %v, want ErrNotFound", err)
		}
		recs := readAll(t, q)
		want := map[uint64][2]int{seqs[0]: {10, int(PhaseSent)}, seqs[1]: {11, int(PhaseReleased)}, seqs[2]: {12, int(PhaseSent)}, seqs[3]: {0, int(PhaseQueued)}}
		if len(recs) != 4 {
			t.Fatalf("%d records", len(recs))
		}
		for _, r := range recs {
			if w := want[r.Seq]; int(r.PacketID) != w[0] || int(r.Phase) != w[1] {
				t.Errorf("seq %d: id %d phase %v, want %v", r.Seq, r.PacketID, r.Phase, w)
			}
		}
	}},
	{name: "SetState", run: func(t *testing.T, h *harness) {
		q := h.open(Options{})
		ctx := context.Background()
		for i := 0; i < 3; i++ {
			mustAppend(t, q, rec("t", "x"))
		}
		if err := q.SetState(ctx, 2, 77, PhaseSent); err != nil {
			t.Fatal(err)
		}
		if err := q.SetState(ctx, 3, 78, PhaseReleased); err != nil {
			t.Fatal(err)
		}
		recs := readAll(t, q)
		if recs[0].Phase != PhaseQueued || recs[1].PacketID != 77 || recs[1].Phase != PhaseSent || recs[2].PacketID != 78 || recs[2].Phase != PhaseReleased {
			t.Fatalf("states %+v", recs)
		}
		if st := q.Stats(); st.InFlight != 2 {
			t.Fatalf("InFlight %d", st.InFlight)
		}
		if err := q.SetState(ctx, 3, 0, PhaseQueued); err != nil {
			t.Fatal(err)
		}
		if recs := readAll(t, q); recs[2].Phase != PhaseQueued || recs[2].PacketID != 0 {
			t.Fatalf("reset: %+v", recs[2])
		}
		if err := q.SetState(ctx, 99, 1, PhaseSent); !errors.Is(err, ErrNotFound) {
			t.Fatalf("unknown seq: %v", err)
		}
		_ = q.Remove(2)
		if err := q.SetState(ctx, 2, 1, PhaseSent); !errors.Is(err, ErrNotFound) {
			t.Fatalf("removed seq: %v", err)
		}
		if err := q.SetState(ctx, 1, 1, Phase(9)); !errors.Is(err, ErrInvalidRecord) {
			t.Fatalf("bad phase: %v", err)
		}
		cctx, cancel := context.WithCancel(ctx)
		cancel()
		if err := q.SetState(cctx, 1, 1, PhaseSent); !errors.Is(err, context.Canceled) {
			t.Fatalf("cancelled ctx: %v", err)
		}
		if st := q.Stats(); st.InFlight != 0 {
			t.Fatalf("InFlight after removals %d", st.InFlight)
		}
	}},
	{name: "ConcurrentSetStateAndRemove", run: func(t *testing.T, h *harness) {
		q := h.open(Options{})
		const n = 200
		for i := 0; i < n; i++ {
			mustAppend(t, q, rec("t", "x"))
		}
		var wg sync.WaitGroup
		for i := uint64(1); i <= n; i++ {
			wg.Add(2)
			go func() {
				defer wg.Done()
				err := q.SetState(context.Background(), i, uint16(i), PhaseSent)
				if err != nil && !errors.Is(err, ErrNotFound) {
					t.Error(err)
				}
			}()
			go func() {
				defer wg.Done()
				if i%2 == 0 {
					_ = q.Remove(i)
				}
			}()
		}
		wg.Wait()
		recs := readAll(t, q)
		if len(recs) != n/2 {
			t.Fatalf("%d left", len(recs))
		}
		for _, r := range recs {
			if r.Seq%2 == 0 || r.Phase != PhaseSent || r.PacketID != uint16(r.Seq) {
				t.Fatalf("record %+v", r)
			}
		}
		if st := q.Stats(); st.InFlight != n/2 {
			t.Fatalf("InFlight %d", st.InFlight)
		}
	}},
	{name: "MaxRecordsReject", run: func(t *testing.T, h *harness) {
		q := h.open(Options{MaxRecords: 3})
		for i := 0; i < 3; i++ {
			mustAppend(t, q, rec("t", "x"))
		}
		if _, err := q.Append(context.Background(), rec("t", "x")); !errors.Is(err, ErrFull) {
			t.Fatalf("4th append: %v", err)
		}
		_ = q.Remove(2)
		mustAppend(t, q, rec("t", "x"))
		if st := q.Stats(); st.Len != 3 || st.Dropped != 0 {
			t.Fatalf("stats %+v", st)
		}
	}},
	{name: "MaxBytesReject", run: func(t *testing.T, h *harness) {
		one := int64(encodedSize(rec("t", "0123456789")))
		q := h.open(Options{MaxBytes: 4*one - 5})
		for i := 0; i < 3; i++ {
			mustAppend(t, q, rec("t", "0123456789"))
		}
		if _, err := q.Append(context.Background(), rec("t", "0123456789")); !errors.Is(err, ErrFull) {
			t.Fatalf("over MaxBytes: %v", err)
		}
		// Smaller records still fit.
		mustAppend(t, q, rec("t", ""))
		if _, err := q.Append(context.Background(), rec("t", string(make([]byte, 4*one)))); !errors.Is(err, ErrTooLarge) {
			t.Fatalf("record over MaxBytes: %v", err)
		}
	}},
	{name: "OverflowBlock", run: func(t *testing.T, h *harness) {
		q := h.open(Options{MaxRecords: 2, Overflow: OverflowBlock})
		mustAppend(t, q, rec("t", "1"))
		mustAppend(t, q, rec("t", "2"))
		res := make(chan error, 1)
		go func() {
			_, err := q.Append(context.Background(), rec("t", "3"))
			res <- err
		}()
		select {
		case err := <-res:
			t.Fatalf("append returned %v while full", err)
		case <-time.After(50 * time.Millisecond):
		}
		_ = q.Remove(1)
		select {
		case err := <-res:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("blocked append not released by Remove")
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
		defer cancel()
		if _, err := q.Append(ctx, rec("t", "4")); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("ctx: %v", err)
		}
		// Close releases a blocked append with ErrClosed.
		go func() {
			_, err := q.Append(context.Background(), rec("t", "5"))
			res <- err
		}()
		time.Sleep(20 * time.Millisecond) // let it block; the result is checked either way
		if err := q.Close(); err != nil {
			t.Fatal(err)
		}
		select {
		case err := <-res:
			if !errors.Is(err, ErrClosed) {
				t.Fatalf("blocked append at close: %v", err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("Close did not release a blocked append")
		}
	}},
	{name: "OverflowDropOldest", run: func(t *testing.T, h *harness) {
		var log dropLog
		q := h.open(Options{MaxRecords: 3, Overflow: OverflowDropOldest, OnDrop: log.onDrop})
		for i := 0; i < 3; i++ {
			mustAppend(t, q, rec("t", fmt.Sprint(i)))
		}
		// 1 is in flight: the oldest queued is 2.
		if err := q.SetState(context.Background(), 1, 5, PhaseSent); err != nil {
			t.Fatal(err)
		}
		mustAppend(t, q, rec("t", "3"))
		if got := seqsOf(readAll(t, q)); !equalSeqs(got, []uint64{1, 3, 4}) {
			t.Fatalf("after drop: %v", got)
		}
		seqs, whys := log.snapshot()
		if !equalSeqs(seqs, []uint64{2}) || !errors.Is(whys[0], ErrDropped) {
			t.Fatalf("reports %v %v", seqs, whys)
		}
		if st := q.Stats(); st.Dropped != 1 || st.Len != 3 {
			t.Fatalf("stats %+v", st)
		}
		// Everything in flight: nothing may be dropped.
		for _, s := range []uint64{3, 4} {
			if err := q.SetState(context.Background(), s, uint16(s), PhaseSent); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := q.Append(context.Background(), rec("t", "x")); !errors.Is(err, ErrFull) {
			t.Fatalf("all in flight: %v", err)
		}
		if got := seqsOf(readAll(t, q)); !equalSeqs(got, []uint64{1, 3, 4}) {
			t.Fatalf("in-flight records touched: %v", got)
		}
	}},
	{name: "DropOldestBytes", run: func(t *testing.T, h *harness) {
		var log dropLog
		one := int64(encodedSize(rec("t", "0123456789")))
		q := h.open(Options{MaxBytes: 4 * one, Overflow: OverflowDropOldest, OnDrop: log.onDrop})
		for i := 0; i < 4; i++ {
			mustAppend(t, q, rec("t", "0123456789"))
		}
		// A record twice as big needs two drops.
		mustAppend(t, q, rec("t", "0123456789"+string(make([]byte, one))))
		if seqs, _ := log.snapshot(); !equalSeqs(seqs, []uint64{1, 2}) {
			t.Fatalf("dropped %v", seqs)
		}
		if st := q.Stats(); st.Bytes > 4*one || st.Dropped != 2 {
			t.Fatalf("stats %+v", st)
		}
		// When dropping every queued record would not make room, nothing is dropped.
		left := seqsOf(readAll(t, q))
		for _, s := range left[1:] {
			if err := q.SetState(context.Background(), s, 1, PhaseSent); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := q.Append(context.Background(), rec("t", string(make([]byte, 3*one)))); !errors.Is(err, ErrFull) {
			t.Fatalf("append that drops cannot fit: %v", err)
		}
		if got := seqsOf(readAll(t, q)); !equalSeqs(got, left) {
			t.Fatalf("dropped in vain: %v, had %v", got, left)
		}
	}},
	{name: "TTLOnRead", run: func(t *testing.T, h *harness) {
		var log dropLog
		q := h.open(Options{OnDrop: log.onDrop})
		past := time.Now().Add(-time.Minute)
		mustAppend(t, q, rec("t", "live"))
		mustAppend(t, q, &Record{Topic: "t", Enqueued: past.Add(-time.Hour), Expires: past})
		mustAppend(t, q, &Record{Topic: "t", Expires: past}) // Enqueued now, already expired
		mustAppend(t, q, &Record{Topic: "t", Expires: time.Now().Add(time.Hour)})
		mustAppend(t, q, &Record{Topic: "t", Expires: past})
		if err := q.SetState(context.Background(), 5, 1, PhaseSent); err != nil {
			t.Fatal(err) // in flight: never expires
		}
		got := seqsOf(readAll(t, q))
		if !equalSeqs(got, []uint64{1, 4, 5}) {
			t.Fatalf("read %v", got)
		}
		seqs, whys := log.snapshot()
		if len(seqs) != 2 || seqs[0]+seqs[1] != 5 {
			t.Fatalf("expired %v", seqs)
		}
		for _, w := range whys {
			if !errors.Is(w, ErrExpired) {
				t.Fatalf("reason %v", w)
			}
		}
		if st := q.Stats(); st.Expired != 2 || st.Len != 3 {
			t.Fatalf("stats %+v", st)
		}
	}},
	{name: "TTLSweepWithoutReader", run: func(t *testing.T, h *harness) {
		var log dropLog
		q := h.open(Options{DefaultTTL: 80 * time.Millisecond, OnDrop: log.onDrop})
		for i := 0; i < 5; i++ {
			mustAppend(t, q, rec("t", "x"))
		}
		if err := q.SetState(context.Background(), 3, 1, PhaseSent); err != nil {
			t.Fatal(err)
		}
		eventually(t, 5*time.Second, func() bool { return q.Stats().Expired == 4 }, "expired %d", q.Stats().Expired)
		if st := q.Stats(); st.Len != 1 {
			t.Fatalf("stats %+v", st)
		}
		if got := seqsOf(readAll(t, q)); !equalSeqs(got, []uint64{3}) {
			t.Fatalf("left %v", got)
		}
		if seqs, _ := log.snapshot(); len(seqs) != 4 {
			t.Fatalf("reports %v", seqs)
		}
	}},
	{name: "ExpiredMakeRoomBeforeOverflow", run: func(t *testing.T, h *harness) {
		var log dropLog
		q := h.open(Options{MaxRecords: 2, OnDrop: log.onDrop})
		mustAppend(t, q, &Record{Topic: "t", Expires: time.Now().Add(-time.Second)})
		mustAppend(t, q, rec("t", "x"))
		// Full, but the head expired: reject must not happen.
		mustAppend(t, q, rec("t", "y"))
		if st := q.Stats(); st.Expired != 1 || st.Len != 2 {
			t.Fatalf("stats %+v", st)
		}
	}},
	{name: "AppendAsyncKeepsCallOrder", run: func(t *testing.T, h *harness) {
		q := h.open(Options{})
		aa, ok := q.(AsyncAppender)
		if !ok {
			t.Fatalf("%T does not implement AsyncAppender", q)
		}
		const n = 500
		var mu sync.Mutex
		got := map[string]uint64{}
		calls := 0
		var wg sync.WaitGroup
		for i := range n {
			p := fmt.Sprint(i)
			if i%7 == 3 {
				// Synchronous appends in between keep their place.
				got[p] = mustAppend(t, q, rec("t", p))
				continue
			}
			wg.Add(1)
			err := aa.AppendAsync(context.Background(), rec("t", p), func(seq uint64, err error) {
				defer wg.Done()
				mu.Lock()
				defer mu.Unlock()
				calls++
				if err != nil {
					t.Errorf("record %s: %v", p, err)
				}
				got[p] = seq
			})
			if err != nil {
				t.Fatal(err)
			}
		}
		wg.Wait()
		mu.Lock()
		defer mu.Unlock()
		if calls != n-(n+3)/7 {
			t.Fatalf("%d callbacks", calls)
		}
		// done runs before the record is visible; it becomes so at once.
		eventually(t, 5*time.Second, func() bool { return q.Stats().Len == n }, "len %d", q.Stats().Len)
		recs := readAll(t, q)
		if len(recs) != n {
			t.Fatalf("%d records, want %d", len(recs), n)
		}
		for i, r := range recs {
			if string(r.Payload) != fmt.Sprint(i) || got[string(r.Payload)] != r.Seq {
				t.Fatalf("position %d holds %q (seq %d, reported %d): call order lost", i, r.Payload, r.Seq, got[string(r.Payload)])
			}
		}
		if err := aa.AppendAsync(context.Background(), &Record{QoS: 3}, func(uint64, error) { t.Error("done called for a refused record") }); !errors.Is(err, ErrInvalidRecord) {
			t.Fatalf("invalid record: %v", err)
		}
	}},
	{name: "ResumePoint", run: func(t *testing.T, h *harness) {
		q := h.open(Options{})
		rp := q.(Resumer)
		if seq, m := rp.ResumePoint(); seq != 0 || m != nil {
			t.Fatalf("empty queue: resume point %d %q", seq, m)
		}
		a := mustAppend(t, q, &Record{Topic: "t", Marker: []byte("offset-1")})
		mustAppend(t, q, &Record{Topic: "t"}) // no marker: the point stays
		var async uint64
		done := make(chan struct{})
		if err := q.(AsyncAppender).AppendAsync(context.Background(), &Record{Topic: "t", Marker: []byte("offset-3")}, func(s uint64, err error) {
			async = s
			close(done)
		}); err != nil {
			t.Fatal(err)
		}
		<-done
		eventually(t, 5*time.Second, func() bool { s, _ := rp.ResumePoint(); return s == async }, "resume point after the async append")
		if _, err := q.Append(context.Background(), &Record{Topic: "t", Marker: make([]byte, MaxMarker+1)}); !errors.Is(err, ErrInvalidRecord) {
			t.Fatalf("marker over MaxMarker: %v", err)
		}
		// The point outlives the record's removal, and (durable queues) a reopen.
		if err := q.Remove(seqsOf(readAll(t, q))...); err != nil {
			t.Fatal(err)
		}
		if seq, m := rp.ResumePoint(); seq != async || string(m) != "offset-3" {
			t.Fatalf("after removal: %d %q, want %d offset-3 (the first was %d)", seq, m, async, a)
		}
		if !h.im.persistent {
			return
		}
		if err := q.Close(); err != nil {
			t.Fatal(err)
		}
		q2 := h.open(Options{})
		if seq, m := q2.(Resumer).ResumePoint(); seq != async || string(m) != "offset-3" {
			t.Fatalf("after reopen: %d %q, want %d offset-3", seq, m, async)
		}
	}},
	{name: "ClaimedNeitherExpiresNorDrops", run: func(t *testing.T, h *harness) {
		log := &dropLog{}
		q := h.open(Options{MaxRecords: 3, Overflow: OverflowDropOldest, OnDrop: log.onDrop})
		soon := time.Now().Add(3 * time.Second) // room for the appends and claims on a slow machine
		a := mustAppend(t, q, &Record{Topic: "t", QoS: 1, Expires: soon})
		b := mustAppend(t, q, &Record{Topic: "t", QoS: 1, Expires: soon})
		c := mustAppend(t, q, &Record{Topic: "t", QoS: 1})
		if err := q.Claim(a); err != nil {
			t.Fatalf("Claim(%d): %v", a, err)
		}
		if err := q.Claim(a); err != nil {
			t.Fatalf("Claim twice: %v", err)
		}
		// Past both expiries, full: expired b makes room; claimed a stays.
		time.Sleep(time.Until(soon) + 10*time.Millisecond)
		d := mustAppend(t, q, &Record{Topic: "t", QoS: 1})
		// Full again: drop-oldest passes over claimed a and drops c.
		e := mustAppend(t, q, &Record{Topic: "t", QoS: 1})
		recs := readAll(t, q)
		if got := seqsOf(recs); !equalSeqs(got, []uint64{a, d, e}) {
			t.Fatalf("live records %v; claimed %d must stay, expired %d and oldest unclaimed %d must go", got, a, b, c)
		}
		if recs[0].Seq != a || recs[0].Phase != PhaseSent || recs[0].PacketID != 0 {
			t.Fatalf("claimed record reads as %+v", recs[0])
		}
		seqs, _ := log.snapshot()
		for _, s := range seqs {
			if s == a {
				t.Fatalf("claimed record %d reported dropped", a)
			}
		}
		if err := q.Claim(b); !errors.Is(err, ErrNotFound) {
			t.Fatalf("Claim of an expired record: %v, want ErrNotFound", err)
		}
		// A durable state replaces the claim; the record still cannot expire.
		if err := q.SetState(context.Background(), a, 7, PhaseReleased); err != nil {
			t.Fatal(err)
		}
		if st := q.Stats(); st.InFlight != 1 {
			t.Fatalf("InFlight %d, want 1", st.InFlight)
		}
		if err := q.Remove(a); err != nil {
			t.Fatal(err)
		}
		if err := q.Claim(a); !errors.Is(err, ErrNotFound) {
			t.Fatalf("Claim after Remove: %v", err)
		}
	}},
	{name: "Close", run: func(t *testing.T, h *harness) {
		q := h.open(Options{})
		mustAppend(t, q, rec("t", "x"))
		if err := q.Close(); err != nil {
			t.Fatal(err)
		}
		if err := q.Close(); err != nil {
			t.Fatalf("second close: %v", err)
		}
		ctx := context.Background()
		if _, err := q.Append(ctx, rec("t", "x")); !errors.Is(err, ErrClosed) {
			t.Fatalf("append: %v", err)
		}
		if _, err := q.Read(0, 10, nil); !errors.Is(err, ErrClosed) {
			t.Fatalf("read: %v", err)
		}
		if err := q.SetState(ctx, 1, 1, PhaseSent); !errors.Is(err, ErrClosed) {
			t.Fatalf("setstate: %v", err)
		}
		if err := q.Remove(1); !errors.Is(err, ErrClosed) {
			t.Fatalf("remove: %v", err)
		}
		_ = q.Stats()
	}},
	{name: "CloseWithConcurrentUse", run: func(t *testing.T, h *harness) {
		q := h.open(Options{})
		var wg sync.WaitGroup
		for w := 0; w < 4; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					seq, err := q.Append(context.Background(), rec("t", "x"))
					if errors.Is(err, ErrClosed) {
						return
					}
					if err != nil {
						t.Error(err)
						return
					}
					_ = q.Remove(seq)
					if _, err := q.Read(0, 5, nil); errors.Is(err, ErrClosed) {
						return
					}
				}
			}()
		}
		time.Sleep(30 * time.Millisecond)
		if err := q.Close(); err != nil {
			t.Fatal(err)
		}
		wg.Wait()
	}},
	{name: "Reopen", persistent: true, run: func(t *testing.T, h *harness) {
		q, err := h.im.open(t, h.dir, Options{})
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; i < 50; i++ {
			mustAppend(t, q, &Record{Topic: fmt.Sprintf("t/%d", i), QoS: byte(i % 3), Retained: i%2 == 0, Payload: []byte(fmt.Sprint(i))})
		}
		_ = q.SetState(context.Background(), 7, 700, PhaseSent)
		_ = q.SetState(context.Background(), 8, 800, PhaseReleased)
		_ = q.SetState(context.Background(), 9, 900, PhaseSent)
		_ = q.SetState(context.Background(), 9, 0, PhaseQueued)
		_ = q.Remove(1, 2, 3, 10, 50)
		_ = q.SetState(context.Background(), 10, 1, PhaseSent) // removed: ErrNotFound
		want := readAll(t, q)
		wantStats := q.Stats()
		if err := q.Close(); err != nil {
			t.Fatal(err)
		}
		q2 := h.open(Options{})
		got := readAll(t, q2)
		if len(got) != len(want) {
			t.Fatalf("reopen: %d records, want %d", len(got), len(want))
		}
		for i := range want {
			w, g := want[i], got[i]
			if w.Seq != g.Seq || w.Topic != g.Topic || w.QoS != g.QoS || w.Retained != g.Retained || string(w.Payload) != string(g.Payload) ||
				!w.Enqueued.Equal(g.Enqueued) || w.PacketID != g.PacketID || w.Phase != g.Phase {
				t.Fatalf("record %d: got %+v want %+v", i, g, w)
			}
		}
		st := q2.Stats()
		if st.Len != wantStats.Len || st.Bytes != wantStats.Bytes || st.LastSeq != 50 || st.InFlight != 2 || !st.Oldest.Equal(wantStats.Oldest) {
			t.Fatalf("stats after reopen %+v, before %+v", st, wantStats)
		}
		// Sequences continue after the highest ever assigned, even when emptied.
		_ = q2.Remove(seqsOf(got)...)
		if err := q2.Close(); err != nil {
			t.Fatal(err)
		}
		q3 := h.open(Options{})
		if n := len(readAll(t, q3)); n != 0 {
			t.Fatalf("%d records after removing all", n)
		}
		if seq := mustAppend(t, q3, rec("t", "x")); seq != 51 {
			t.Fatalf("seq after reopen of empty queue %d, want 51", seq)
		}
	}},
	{name: "ReopenExpiresWhatExpiredWhileClosed", persistent: true, run: func(t *testing.T, h *harness) {
		q, err := h.im.open(t, h.dir, Options{})
		if err != nil {
			t.Fatal(err)
		}
		exp := time.Now().Add(100 * time.Millisecond)
		mustAppend(t, q, &Record{Topic: "t", Expires: exp})
		mustAppend(t, q, &Record{Topic: "t"})
		if err := q.Close(); err != nil {
			t.Fatal(err)
		}
		// The first queue may have expired it itself when the machine is
		// slow; otherwise the reopened one must.
		before := q.Stats().Expired
		time.Sleep(time.Until(exp) + 10*time.Millisecond) // let the TTL pass while closed
		var log dropLog
		q2 := h.open(Options{OnDrop: log.onDrop})
		eventually(t, 5*time.Second, func() bool { return before+q2.Stats().Expired == 1 }, "not expired after reopen")
		if seqs, _ := log.snapshot(); before == 0 && !equalSeqs(seqs, []uint64{1}) {
			t.Fatalf("reports %v", seqs)
		}
		if got := seqsOf(readAll(t, q2)); !equalSeqs(got, []uint64{2}) {
			t.Fatalf("left %v", got)
		}
	}},
}

// drain empties a Wake channel.
func drain(q Queue) {
	select {
	case <-q.Wake():
	default:
	}
}
