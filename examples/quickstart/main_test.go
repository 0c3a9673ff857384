package main

import (
	"bytes"
	"io"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/holdfast-mqtt/holdfast/internal/leakcheck"
)

func TestMain(m *testing.M) {
	os.Exit(leakcheck.Run(m))
}

// TestQuickStart runs the program's main path against the embedded broker:
// both readings come back through the subscription, in order, and the
// client closes with nothing left.
func TestQuickStart(t *testing.T) {
	out := captureStdout(t, func() {
		if err := run(t.Context(), "", t.TempDir(), 3*time.Second); err != nil {
			t.Fatal(err)
		}
	})
	want := "site/1/temp: 21.5\nsite/1/temp: 21.6\nclosed: every reading acknowledged\n"
	if out != want {
		t.Fatalf("stdout:\n%s\nwant:\n%s", out, want)
	}
}

// TestREADMEQuickStart checks that the README's quick start is this
// program's quickStart, character for character: the README's first Go
// block after the heading "## Quick start" against the source between the
// markers in main.go.
func TestREADMEQuickStart(t *testing.T) {
	src, err := os.ReadFile("main.go")
	if err != nil {
		t.Fatal(err)
	}
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	code := between(t, string(src), "// README quick start: begin\n", "\n// README quick start: end")
	section := between(t, string(readme), "\n## Quick start\n", "\n## ")
	block := between(t, section, "```go\n", "```\n")
	if strings.TrimSpace(block) != strings.TrimSpace(code) {
		t.Errorf("README.md's quick start differs from examples/quickstart/main.go between its markers; copy the code into the README.\nREADME:\n%s\nmain.go:\n%s", block, code)
	}
}

// between returns the text of s after the first begin and before the next end.
func between(t *testing.T, s, begin, end string) string {
	t.Helper()
	i := strings.Index(s, begin)
	if i < 0 {
		t.Fatalf("%q not found", begin)
	}
	s = s[i+len(begin):]
	j := strings.Index(s, end)
	if j < 0 {
		t.Fatalf("%q not found after %q", end, begin)
	}
	return s[:j]
}

// captureStdout returns what f wrote to os.Stdout.
func captureStdout(t *testing.T, f func()) string {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	saved := os.Stdout
	os.Stdout = w
	var buf bytes.Buffer
	done := make(chan struct{})
	go func() { _, _ = io.Copy(&buf, r); close(done) }()
	func() {
		// Restored however f ends (t.Fatal included).
		defer func() { os.Stdout = saved; w.Close() }()
		f()
	}()
	<-done
	r.Close()
	return buf.String()
}
