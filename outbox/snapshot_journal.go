package outbox

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
)

// snapJournal is what a Snapshot found in the journal.
type snapJournal struct {
	path   string
	gen    uint64
	frames int // frames applied
	damage []*JournalDamageError
}

// readJournal reads the journal, opened read-only, as Open would replay it
// (see openJournal), and applies its frames to s.ov in order. Where Open
// stops or fails, it records a *JournalDamageError and goes on with the
// next valid frame of the generation, if any; a torn last frame ends the
// journal, as it does for Open.
func (s *Snapshot) readJournal() error {
	path := filepath.Join(s.dir, journalName)
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil // encrypted, or NoSync before the journal: none
	}
	if err != nil {
		return fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	s.journal.path = path
	if fi.Size() < journalHdrSize {
		return nil // never written to: Open starts it afresh
	}
	j := &journal{f: f, size: fi.Size()}
	gen, ok := j.readHeader()
	if !ok {
		g, _, ok := j.readFrame(journalHdrSize, 0)
		switch {
		case ok:
			gen = g // a torn header: the first frame names the generation
		case j.zeroHeader():
			return nil // created, never written to
		default:
			s.journal.damage = append(s.journal.damage, &JournalDamageError{
				Path: path, Length: journalHdrSize,
				Reason: "header unreadable and no whole first frame (Open refuses the directory)",
			})
			return nil
		}
	}
	s.journal.gen = gen
	off := int64(journalHdrSize)
	for {
		_, p, ok := j.readFrame(off, gen)
		if ok {
			if ops, err := decodeFrame(p); err != nil {
				s.journal.damage = append(s.journal.damage, &JournalDamageError{
					Path: path, Generation: gen, Offset: off, Length: frameHdrSize + int64(len(p)),
					Reason: fmt.Sprintf("frame's checksum holds but its operations do not decode (%v)", err),
				})
			} else {
				s.apply(ops)
			}
			off += frameHdrSize + int64(len(p))
			continue
		}
		next, found, err := snapNextFrame(j, off, gen)
		if err != nil {
			return fmt.Errorf("%w: %s: %v", ErrCorrupt, path, err)
		}
		if !found {
			break // a torn tail, or the generation's end
		}
		s.journal.damage = append(s.journal.damage, &JournalDamageError{
			Path: path, Generation: gen, Offset: off, Length: next - off,
			Reason: fmt.Sprintf("no valid frame there, but one follows at offset %d: the frames in between are lost", next),
		})
		off = next
	}
	for k, op := range s.ov {
		if len(k) > 0 && k[0] == prefixRecord && !op.del {
			s.ovRecs = append(s.ovRecs, k)
		}
	}
	sort.Strings(s.ovRecs)
	return nil
}

// apply records one frame's operations in the overlay.
func (s *Snapshot) apply(ops []journalOp) {
	for _, op := range ops {
		s.ov[string(op.key)] = ovOp{del: op.del, value: op.value}
	}
	s.journal.frames++
}

// snapNextFrame finds the first valid frame of generation gen (checksum
// holds, operations decode) after the bad one at off, trying every byte.
func snapNextFrame(j *journal, off int64, gen uint64) (int64, bool, error) {
	if off+1 >= j.size {
		return 0, false, nil
	}
	rest, err := io.ReadAll(io.NewSectionReader(j.f, off+1, j.size-off-1))
	if err != nil {
		return 0, false, err
	}
	pat := binary.BigEndian.AppendUint64(nil, gen)
	for i := 0; ; {
		k := bytes.Index(rest[i:], pat)
		if k < 0 {
			return 0, false, nil
		}
		at := off + 1 + int64(i+k)
		if _, p, ok := j.readFrame(at, gen); ok {
			if _, err := decodeFrame(p); err == nil {
				return at, true, nil
			}
		}
		i += k + 1
	}
}
