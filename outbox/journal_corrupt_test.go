package outbox

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// journalLayout walks the frames of the current generation of the journal
// in dir, as they lie before any damage: their offsets and lengths, and the
// record sequences each one sets.
type frameInfo struct {
	off, n int64 // n: header and payload
	seqs   []uint64
}

func journalLayout(t *testing.T, dir string) []frameInfo {
	t.Helper()
	f, err := os.Open(filepath.Join(dir, journalName))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	j := &journal{f: f, size: fi.Size()}
	gen, ok := j.readHeader()
	if !ok {
		t.Fatal("journal header unreadable")
	}
	var out []frameInfo
	for off := int64(journalHdrSize); ; {
		_, p, ok := j.readFrame(off, gen)
		if !ok {
			return out
		}
		ops, err := decodeFrame(p)
		if err != nil {
			t.Fatal(err)
		}
		fr := frameInfo{off: off, n: frameHdrSize + int64(len(p))}
		for _, op := range ops {
			if seq, _, ok := parseRecordKey(op.key); ok && !op.del {
				fr.seqs = append(fr.seqs, seq)
			}
		}
		out = append(out, fr)
		off += fr.n
	}
}

// leaveInJournal appends n records, one frame each, and closes the queue
// the way a crash leaves it: every record only in the journal's frames.
func leaveInJournal(t *testing.T, dir string, n int) []frameInfo {
	t.Helper()
	q, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= n; i++ {
		if _, err := q.Append(context.Background(), &Record{Topic: "t", QoS: 1, Payload: []byte(fmt.Sprint(i))}); err != nil {
			t.Fatal(err)
		}
	}
	q.keepJournal = true
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
	frames := journalLayout(t, dir)
	if len(frames) != n {
		t.Fatalf("%d frames for %d appends one at a time", len(frames), n)
	}
	return frames
}

func overwrite(t *testing.T, dir string, off int64, b []byte) {
	t.Helper()
	f, err := os.OpenFile(filepath.Join(dir, journalName), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

// errorsWith counts the Error records whose message contains msg.
func (h *captureHandler) errorsWith(msg string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := 0
	for _, r := range h.recs {
		if r.Level == slog.LevelError && strings.Contains(r.Message, msg) {
			n++
		}
	}
	return n
}

// damagedFiles lists the copies of damaged journal bytes in dir.
func damagedFiles(t *testing.T, dir string) []string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(dir, journalName+".damaged-*"))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// TestJournalCorruptFrameKeepsLaterRecords: 145 records left in the journal
// by a crash, then 16 bytes overwritten in the middle of its frames. Every
// record in a valid frame after the damage must still be there after Open;
// only the records of the damaged frames are missing, and the damage is
// reported: OnCorrupt, Stats, an Error log, and the bytes copied aside.
// Damage to the last frame only is a torn tail, and stays silent.
func TestJournalCorruptFrameKeepsLaterRecords(t *testing.T) {
	const n = 145
	junk := bytes.Repeat([]byte{0xa5}, 16)
	cases := []struct {
		name       string
		at         func(fr []frameInfo) int64 // where the 16 bytes go
		first, end int                        // damaged frames [first, end); end == n: a torn tail
	}{
		{"payload", func(fr []frameInfo) int64 { return fr[72].off + frameHdrSize + 2 }, 72, 73},
		{"header", func(fr []frameInfo) int64 { return fr[72].off }, 72, 73},
		{"across two frames", func(fr []frameInfo) int64 { return fr[73].off - 8 }, 72, 74},
		{"first frame", func(fr []frameInfo) int64 { return fr[0].off + 4 }, 0, 1},
		{"torn tail", func(fr []frameInfo) int64 { return fr[n-1].off + frameHdrSize }, n - 1, n},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			frames := leaveInJournal(t, dir, n)
			at := tc.at(frames)
			overwrite(t, dir, at, junk)
			lost := map[uint64]bool{}
			for _, fr := range frames {
				if fr.off < at+int64(len(junk)) && at < fr.off+fr.n {
					for _, s := range fr.seqs {
						lost[s] = true
					}
				}
			}
			torn := tc.end == n
			var wantOff, wantLen int64
			var wantBytes []byte
			if !torn {
				wantOff = frames[tc.first].off
				wantLen = frames[tc.end].off - wantOff
				raw, err := os.ReadFile(filepath.Join(dir, journalName))
				if err != nil {
					t.Fatal(err)
				}
				wantBytes = raw[wantOff : wantOff+wantLen]
			}

			var reported []error
			h := &captureHandler{}
			q := openT(t, dir, Options{Logger: slog.New(h), OnCorrupt: func(err error) { reported = append(reported, err) }})
			recs := readAll(t, q)
			if len(recs) != n-len(lost) {
				t.Errorf("%d records after the damage, want %d (%d lost with the damaged frames)", len(recs), n-len(lost), len(lost))
			}
			want := uint64(1)
			for _, r := range recs {
				for lost[want] {
					want++
				}
				if r.Seq != want || string(r.Payload) != fmt.Sprint(want) {
					t.Fatalf("record seq %d payload %q, want seq %d", r.Seq, r.Payload, want)
				}
				want++
			}
			s := q.Stats()
			if torn {
				if len(reported) != 0 || s.CorruptJournal != 0 || h.errorsWith("journal") != 0 || len(damagedFiles(t, dir)) != 0 {
					t.Fatalf("a torn tail reported as damage: %v, Stats.CorruptJournal %d", reported, s.CorruptJournal)
				}
				if s.LastSeq != n-1 {
					t.Errorf("last seq %d, want %d", s.LastSeq, n-1)
				}
				return
			}
			if s.LastSeq != n {
				t.Errorf("last seq %d, want %d", s.LastSeq, n)
			}
			if s.CorruptJournal != 1 {
				t.Errorf("Stats.CorruptJournal %d, want 1", s.CorruptJournal)
			}
			if h.errorsWith("journal damaged") != 1 {
				t.Errorf("damage not logged at Error")
			}
			if len(reported) != 1 {
				t.Fatalf("OnCorrupt got %v, want one report", reported)
			}
			var je *JournalCorruptError
			if !errors.Is(reported[0], ErrCorrupt) || !errors.As(reported[0], &je) {
				t.Fatalf("reported %T %v; want a *JournalCorruptError matching ErrCorrupt", reported[0], reported[0])
			}
			if je.Offset != wantOff || je.Length != wantLen || je.FramesAfter != n-tc.end {
				t.Errorf("reported offset %d, %d bytes, %d frames after; want %d, %d, %d", je.Offset, je.Length, je.FramesAfter, wantOff, wantLen, n-tc.end)
			}
			if !strings.Contains(je.Error(), "lost") {
				t.Errorf("message does not say records were lost: %s", je)
			}
			if files := damagedFiles(t, dir); len(files) != 1 || files[0] != je.Saved {
				t.Fatalf("damaged copies %v, reported %q", files, je.Saved)
			}
			if got, err := os.ReadFile(je.Saved); err != nil || !bytes.Equal(got, wantBytes) {
				t.Errorf("saved %d bytes (%v), want the %d damaged ones", len(got), err, len(wantBytes))
			}

			// The replay was checkpointed: the next Open is clean, and
			// sequences go on after the highest one replayed.
			seq, err := q.Append(context.Background(), &Record{Topic: "t", QoS: 1, Payload: []byte("next")})
			if err != nil || seq != n+1 {
				t.Fatalf("append after replay: seq %d (%v), want %d", seq, err, n+1)
			}
			if err := q.Close(); err != nil {
				t.Fatal(err)
			}
			reported = nil
			q = openT(t, dir, Options{OnCorrupt: func(err error) { reported = append(reported, err) }})
			if len(reported) != 0 || q.Stats().CorruptJournal != 0 || len(readAll(t, q)) != n-len(lost)+1 {
				t.Fatalf("second open: reports %v, %d records", reported, len(readAll(t, q)))
			}
		})
	}
}

// TestJournalUndecodableFrame: a frame whose checksum holds but whose
// operations do not decode is a bad frame like any other: damage when a
// valid frame follows (Open and a Snapshot both report it), and a torn
// tail when it is the last.
func TestJournalUndecodableFrame(t *testing.T) {
	dir := t.TempDir()
	j, _, _, err := openJournal(dir, journalMinBytes)
	if err != nil {
		t.Fatal(err)
	}
	frame := func(ops ...[]byte) int64 {
		t.Helper()
		j.begin()
		for _, op := range ops {
			j.buf = append(j.buf, op...)
		}
		off, err := j.write()
		if err != nil {
			t.Fatal(err)
		}
		return off
	}
	ok := []byte{opDelete, 0, 1, 'k'}
	frame(ok)
	bad := frame([]byte{'X', 0, 0})
	next := frame(ok)
	last := frame([]byte{opSet, 0, 9})
	if err := j.close(); err != nil {
		t.Fatal(err)
	}
	file, err := os.ReadFile(filepath.Join(dir, journalName))
	if err != nil {
		t.Fatal(err)
	}
	j, frames, damage, err := openJournal(dir, journalMinBytes)
	if err != nil {
		t.Fatal(err)
	}
	defer j.close()
	if len(frames) != 2 || len(damage) != 1 || damage[0] != (journalDamage{off: bad, n: next - bad, after: 1}) || j.off != last {
		t.Fatalf("%d frames, damage %+v, next frame at %d; want 2, one at %d, %d", len(frames), damage, j.off, bad, last)
	}
	checkSnapshotJournal(t, dir, file, frames, damage)
}

// FuzzJournalReplay overwrites bytes anywhere in the frame area of a journal
// of a few frames and replays it. Replay must not fail or panic; the frames
// and damaged stretches it returns must tile the file from the first frame
// in order; every frame before the first changed byte comes back as it was,
// and so does every frame left untouched after it (damage loses only the
// frames it hit); a touched frame with untouched ones after it is reported
// as damage, and without any, nothing is (a torn tail). A Snapshot, which
// reads the journal with the same scan, must apply exactly those frames and
// report exactly that damage, without writing to the file.
func FuzzJournalReplay(f *testing.F) {
	dir := f.TempDir()
	j, _, _, err := openJournal(dir, journalHdrSize+2048)
	if err != nil {
		f.Fatal(err)
	}
	type frame struct {
		off     int64
		payload []byte
	}
	var orig []frame
	for i := 0; i < 8; i++ {
		j.begin()
		j.set([]byte(fmt.Sprintf("key-%d", i)), bytes.Repeat([]byte{byte('a' + i)}, 10+17*i))
		if i%3 == 0 {
			j.del([]byte(fmt.Sprintf("gone-%d", i)))
		}
		p := append([]byte(nil), j.buf[frameHdrSize:]...)
		off, err := j.write()
		if err != nil {
			f.Fatal(err)
		}
		orig = append(orig, frame{off, p})
	}
	if err := j.close(); err != nil {
		f.Fatal(err)
	}
	pristine, err := os.ReadFile(filepath.Join(dir, journalName))
	if err != nil {
		f.Fatal(err)
	}
	work := f.TempDir()
	area := int64(len(pristine) - journalHdrSize)
	rel := func(fr frame) uint32 { return uint32(fr.off - journalHdrSize) }
	f.Add(rel(orig[3])+frameHdrSize+3, bytes.Repeat([]byte{0xa5}, 16))  // one payload
	f.Add(rel(orig[3]), bytes.Repeat([]byte{0xa5}, 16))                 // one header
	f.Add(rel(orig[4])-8, bytes.Repeat([]byte{0}, 16))                  // across two frames
	f.Add(rel(orig[0])+8, []byte{0xff, 0xff, 0xff, 0xff})               // first frame's length
	f.Add(rel(orig[7])+frameHdrSize, []byte{1})                         // torn tail
	f.Add(rel(orig[7])+300, []byte("junk after the last frame"))        // zero area
	f.Add(rel(orig[2])+frameHdrSize, pristine[orig[5].off:orig[6].off]) // a copy of frame 5 inside frame 2
	f.Add(uint32(0), bytes.Repeat([]byte{0x5a}, 2048))                  // everything
	f.Fuzz(func(t *testing.T, at uint32, junk []byte) {
		file := append([]byte(nil), pristine...)
		start := journalHdrSize + int64(at)%area
		copy(file[start:], junk)
		first := int64(-1) // first changed byte
		for i := range file {
			if file[i] != pristine[i] {
				first = int64(i)
				break
			}
		}
		touched := func(fr frame) bool {
			end := fr.off + frameHdrSize + int64(len(fr.payload))
			return !bytes.Equal(file[fr.off:end], pristine[fr.off:end])
		}
		// One input at a time per process: the same file each time.
		if err := os.WriteFile(filepath.Join(work, journalName), file, 0o600); err != nil {
			t.Fatal(err)
		}
		j, frames, damage, err := openJournal(work, int64(len(file)))
		if err != nil {
			t.Fatalf("replay failed: %v", err)
		}
		defer j.close()

		// Frames and damage tile the file from the first frame to j.off,
		// each damage followed by the frames it counts.
		pos, di := int64(journalHdrSize), 0
		after := make([]int, len(damage))
		for i, p := range frames {
			if di < len(damage) && damage[di].off == pos {
				if damage[di].n <= 0 {
					t.Fatalf("empty damage %+v", damage[di])
				}
				pos += damage[di].n
				di++
			}
			end := pos + frameHdrSize + int64(len(p))
			if end > int64(len(file)) || !bytes.Equal(file[pos+frameHdrSize:end], p) {
				t.Fatalf("frame %d is not at %d", i, pos)
			}
			if di > 0 {
				after[di-1]++
			}
			pos = end
		}
		if di != len(damage) || pos != j.off {
			t.Fatalf("%d of %d damaged stretches placed, frames end at %d, next frame at %d", di, len(damage), pos, j.off)
		}
		for i, d := range damage {
			if d.after != after[i] {
				t.Fatalf("damage %+v counts %d frames after it, %d follow", d, d.after, after[i])
			}
		}

		// Untouched frames all come back, in order; those before the first
		// change as the prefix. Damage is reported if and only if frames
		// follow it: untouched ones, or frames the junk itself holds.
		k, untouched := 0, 0
		hit, laterUntouched := false, false
		for i, fr := range orig {
			if touched(fr) {
				hit = true
				continue
			}
			untouched++
			laterUntouched = laterUntouched || hit
			if fr.off < first || first < 0 {
				if k != i || k >= len(frames) || !bytes.Equal(frames[k], fr.payload) {
					t.Fatalf("frame at %d, before the first change at %d, not replayed in place", fr.off, first)
				}
			}
			for k < len(frames) && !bytes.Equal(frames[k], fr.payload) {
				k++
			}
			if k == len(frames) {
				t.Fatalf("untouched frame at %d lost (first change at %d, damage %+v)", fr.off, first, damage)
			}
			k++
		}
		if laterUntouched && len(damage) == 0 {
			t.Fatal("damage in the middle not reported")
		}
		if !laterUntouched && len(frames) == untouched && len(damage) != 0 {
			t.Fatalf("a torn tail reported as damage: %+v", damage)
		}

		checkSnapshotJournal(t, work, file, frames, damage)
	})
}

// checkSnapshotJournal reads the journal in dir as a Snapshot does and
// checks that it applies frames, in order, and reports damage as
// *JournalCorruptErrors with no saved copy, leaving the file as file.
func checkSnapshotJournal(t *testing.T, dir string, file []byte, frames [][]byte, damage []journalDamage) {
	t.Helper()
	s := &Snapshot{dir: dir, ov: make(map[string]ovOp)}
	if err := s.readJournal(); err != nil {
		t.Fatalf("snapshot: %v", err)
	}
	if s.journal.frames != len(frames) || len(s.journal.damage) != len(damage) {
		t.Fatalf("snapshot: %d frames, damage %v; replay: %d frames, damage %+v", s.journal.frames, s.journal.damage, len(frames), damage)
	}
	for i, d := range damage {
		var je *JournalCorruptError
		if !errors.As(s.journal.damage[i], &je) || je.Offset != d.off || je.Length != d.n || je.FramesAfter != d.after || je.Saved != "" {
			t.Fatalf("snapshot reports %v; replay found %+v", s.journal.damage[i], d)
		}
	}
	want := make(map[string]ovOp)
	for _, p := range frames {
		ops, err := decodeFrame(p)
		if err != nil {
			t.Fatalf("replayed a frame that does not decode: %v", err)
		}
		for _, op := range ops {
			want[string(op.key)] = ovOp{del: op.del, value: op.value}
		}
	}
	if len(s.ov) != len(want) {
		t.Fatalf("snapshot overlay holds %d keys, replay %d", len(s.ov), len(want))
	}
	for k, w := range want {
		if g, ok := s.ov[k]; !ok || g.del != w.del || !bytes.Equal(g.value, w.value) {
			t.Fatalf("snapshot overlay %q: %+v, replay %+v", k, g, w)
		}
	}
	if got, err := os.ReadFile(filepath.Join(dir, journalName)); err != nil || !bytes.Equal(got, file) {
		t.Fatalf("the snapshot changed the journal (%v)", err)
	}
}
