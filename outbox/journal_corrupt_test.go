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
