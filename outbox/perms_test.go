package outbox

import (
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestLoosePermissionsReported(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "outbox")
	q := openT(t, dir, Options{})
	mustAppend(t, q, rec("t", "x"))
	if n := q.Stats().LoosePermissions; n != 0 {
		t.Fatalf("new directory: LoosePermissions %d, want 0", n)
	}
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
	// Reopening a private directory reports nothing, even with RequirePrivate.
	q = openT(t, dir, Options{RequirePrivate: true})
	if n := q.Stats().LoosePermissions; n != 0 {
		t.Fatalf("private directory: LoosePermissions %d, want 0", n)
	}
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}

	// Someone opens it up: the directory and one file.
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	loose := filepath.Join(dir, "KEYREGISTRY")
	if err := os.Chmod(loose, 0o644); err != nil {
		t.Fatal(err)
	}
	before := hashDir(t, dir)

	// RequirePrivate refuses and changes nothing.
	_, err := Open(dir, Options{RequirePrivate: true})
	if !errors.Is(err, ErrPermissions) {
		t.Fatalf("RequirePrivate on a 0755 directory: %v, want ErrPermissions", err)
	}
	if fi, _ := os.Stat(dir); fi.Mode().Perm() != 0o755 {
		t.Fatalf("refused Open changed the mode to %v", fi.Mode().Perm())
	}
	if after := hashDir(t, dir); len(after) != len(before) {
		t.Fatalf("refused Open changed the files: %d before, %d after", len(before), len(after))
	}

	// By default: reported, restricted, opened.
	h := &captureHandler{}
	q = openT(t, dir, Options{Logger: slog.New(h)})
	if n := q.Stats().LoosePermissions; n != 2 {
		t.Fatalf("LoosePermissions %d, want 2 (the directory and KEYREGISTRY)", n)
	}
	if !h.saw(slog.LevelWarn, "open to group or others") {
		t.Fatal("no warning logged for a 0755 directory")
	}
	if n := len(readAll(t, q)); n != 1 {
		t.Fatalf("%d records, want 1", n)
	}
	for _, p := range []string{dir, loose} {
		fi, err := os.Stat(p)
		if err != nil || fi.Mode().Perm()&0o077 != 0 {
			t.Fatalf("%s still mode %v (%v)", p, fi.Mode().Perm(), err)
		}
	}
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
	q = openT(t, dir, Options{RequirePrivate: true})
	if n := q.Stats().LoosePermissions; n != 0 {
		t.Fatalf("after restriction: LoosePermissions %d, want 0", n)
	}
}

// saw reports whether a record at level whose message contains s was logged.
func (h *captureHandler) saw(level slog.Level, s string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, r := range h.recs {
		if r.Level == level && strings.Contains(r.Message, s) {
			return true
		}
	}
	return false
}
