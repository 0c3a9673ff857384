package outbox

import (
	"errors"
	"fmt"
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
	// damage holds a *JournalCorruptError for each damaged stretch, or the
	// one error of a journal whose header cannot be read.
	damage []error
}

// readJournal reads the journal, opened read-only, with the scan Open
// replays (journal.scan), and applies its frames to s.ov in order. Each
// damaged stretch scan skipped is recorded as a *JournalCorruptError
// without a saved copy: a Snapshot writes nothing (Verify reports the
// damage; Open copies it aside). A header Open cannot read is recorded as
// an error wrapping ErrCorrupt, and nothing is applied.
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
	j := &journal{f: f, size: fi.Size()}
	frames, damage, err := j.scan()
	if errors.Is(err, errJournalHeader) {
		s.journal.damage = append(s.journal.damage,
			fmt.Errorf("%w: journal %s: %v (Open refuses the directory)", ErrCorrupt, path, err))
		return nil
	}
	if err != nil {
		return fmt.Errorf("%w: %s: %v", ErrCorrupt, path, err)
	}
	s.journal.gen = j.gen
	for _, d := range damage {
		s.journal.damage = append(s.journal.damage, d.corruptError(path, j.gen))
	}
	for _, p := range frames {
		ops, _ := decodeFrame(p) // scan returns only frames that decode
		for _, op := range ops {
			s.ov[string(op.key)] = ovOp{del: op.del, value: op.value}
		}
	}
	s.journal.frames = len(frames)
	for k, op := range s.ov {
		if len(k) > 0 && k[0] == prefixRecord && !op.del {
			s.ovRecs = append(s.ovRecs, k)
		}
	}
	sort.Strings(s.ovRecs)
	return nil
}
