package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/holdfast-mqtt/holdfast/internal/leakcheck"

	"github.com/holdfast-mqtt/holdfast/outbox"
)

// The in-use and crash tests re-execute this test binary as a child that
// opens an outbox (see child).
const (
	childEnv     = "HOLDFAST_OUTBOX_TOOL_CHILD" // hold | crash | tool
	childDirEnv  = "HOLDFAST_OUTBOX_TOOL_DIR"
	childArgsEnv = "HOLDFAST_OUTBOX_TOOL_ARGS" // tool: the command line, JSON
)

func TestMain(m *testing.M) {
	switch mode := os.Getenv(childEnv); mode {
	case "":
	case "tool":
		var args []string
		if err := json.Unmarshal([]byte(os.Getenv(childArgsEnv)), &args); err != nil {
			os.Exit(100)
		}
		os.Exit(run(args, os.Stdout, os.Stderr, time.Now))
	default:
		child(mode, os.Getenv(childDirEnv))
	}
	os.Exit(leakcheck.Run(m))
}

// toolProcess runs the command line in a child process: where badger.Open
// fails late it leaves goroutines behind (harmless in a command that then
// exits, but not in this test process).
func toolProcess(t *testing.T, args ...string) result {
	t.Helper()
	js, _ := json.Marshal(args)
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"=tool", childArgsEnv+"="+string(js))
	var out, errw bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errw
	err := cmd.Run()
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatal(err)
	}
	return result{cmd.ProcessState.ExitCode(), out.String(), errw.String()}
}

// child opens the outbox in dir and appends 20 records, one commit (one
// journal frame) each. hold: prints "ready" and keeps it open until stdin
// closes. crash: exits without closing, as a killed process would.
func child(mode, dir string) {
	q, err := outbox.Open(dir, outbox.Options{})
	if err != nil {
		fmt.Fprintln(os.Stderr, "open:", err)
		os.Exit(3)
	}
	for i := 1; i <= 20; i++ {
		if _, err := q.Append(context.Background(), &outbox.Record{Topic: "crash", QoS: 1, Payload: []byte(payloadOf(i))}); err != nil {
			fmt.Fprintln(os.Stderr, "append:", err)
			os.Exit(4)
		}
	}
	if err := q.SetState(context.Background(), 2, 77, outbox.PhaseSent); err != nil {
		fmt.Fprintln(os.Stderr, "state:", err)
		os.Exit(5)
	}
	fmt.Println("ready")
	if mode == "crash" {
		os.Exit(0)
	}
	_, _ = io.Copy(io.Discard, os.Stdin)
	_ = q.Close()
	os.Exit(0)
}

// payloadOf is record i's payload: over 64 bytes, so that Badger keeps it
// in the value log, and unique, so that a test can find it on disk.
func payloadOf(i int) string {
	return fmt.Sprintf("payload-%03d:%s", i, strings.Repeat("x", 80))
}

// startChild runs child in mode on dir and waits for its "ready".
func startChild(t *testing.T, mode, dir string) (*exec.Cmd, io.WriteCloser) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"="+mode, childDirEnv+"="+dir)
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil || line != "ready\n" {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		t.Fatalf("child %s: %q, %v", mode, line, err)
	}
	return cmd, stdin
}

// fixture describes what fill put in an outbox.
type fixture struct {
	expires time.Time // of the expiring records
}

// fill creates a closed outbox in dir: records 1..10 (QoS 1, 2 for even
// seqs), 3 sent with packet id 11, 4 released with 12, 9 and 10 expiring
// at f.expires, 6 with the resume marker "file-7:42", and 2 removed.
func fill(t *testing.T, dir string, key []byte) fixture {
	t.Helper()
	ctx := context.Background()
	q, err := outbox.Open(dir, outbox.Options{EncryptionKey: key})
	if err != nil {
		t.Fatal(err)
	}
	f := fixture{expires: time.Now().Add(3 * time.Second)}
	for i := 1; i <= 10; i++ {
		r := &outbox.Record{Topic: fmt.Sprintf("sensors/%d", i%3), QoS: byte(1 + (i+1)%2), Payload: []byte(payloadOf(i))}
		if i == 9 || i == 10 {
			r.Expires = f.expires
		}
		if i == 6 {
			r.Marker = []byte("file-7:42")
		}
		if seq, err := q.Append(ctx, r); err != nil || seq != uint64(i) {
			t.Fatalf("append %d: %d, %v", i, seq, err)
		}
	}
	if err := q.SetState(ctx, 3, 11, outbox.PhaseSent); err != nil {
		t.Fatal(err)
	}
	if err := q.SetState(ctx, 4, 12, outbox.PhaseReleased); err != nil {
		t.Fatal(err)
	}
	if err := q.Remove(2); err != nil {
		t.Fatal(err)
	}
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
	if time.Now().After(f.expires) {
		t.Skip("the machine is too slow: records expired before the outbox closed")
	}
	return f
}

// hashDir returns name -> size, mode and SHA-256 of every file under dir.
func hashDir(t *testing.T, dir string) map[string]string {
	t.Helper()
	m := make(map[string]string)
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, path)
		if d.IsDir() {
			m[rel+"/"] = info.Mode().String()
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		m[rel] = fmt.Sprintf("%d %s %x", len(b), info.Mode(), sha256.Sum256(b))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func assertUnchanged(t *testing.T, dir string, before map[string]string) {
	t.Helper()
	after := hashDir(t, dir)
	for k, v := range before {
		if after[k] != v {
			t.Errorf("%s changed: %q -> %q", k, v, after[k])
		}
	}
	for k := range after {
		if _, ok := before[k]; !ok {
			t.Errorf("%s created", k)
		}
	}
}

type result struct {
	code           int
	stdout, stderr string
}

// tool runs the command line at time now.
func tool(now time.Time, args ...string) result {
	var out, errw bytes.Buffer
	code := run(args, &out, &errw, func() time.Time { return now })
	return result{code, out.String(), errw.String()}
}

func (r result) want(t *testing.T, code int, args ...string) result {
	t.Helper()
	if r.code != code {
		t.Fatalf("holdfast-outbox %s: exit %d, want %d\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), r.code, code, r.stdout, r.stderr)
	}
	return r
}

func TestClosedOutbox(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "outbox")
	f := fill(t, dir, nil)
	later := f.expires.Add(time.Minute) // records 9 and 10 have expired
	before := hashDir(t, dir)
	do := func(code int, args ...string) result {
		t.Helper()
		return tool(later, args...).want(t, code, args...)
	}

	var st statsJSON
	if err := json.Unmarshal([]byte(do(0, "stats", "-dir", dir, "-json").stdout), &st); err != nil {
		t.Fatal(err)
	}
	if st.Records != 9 || st.InFlight != 2 || st.Sent != 1 || st.Released != 1 || st.Queued != 7 ||
		st.Expired != 2 || st.FirstSeq != 1 || st.LastSeq != 10 || !st.ClosedCleanly || st.Corrupt != 0 ||
		st.ResumePoint == nil || st.ResumePoint.Seq != 6 || string(st.ResumePoint.Marker) != "file-7:42" {
		t.Fatalf("stats: %+v", st)
	}
	if st.Oldest == nil || st.OldestAgeSecs < 60 {
		t.Fatalf("oldest: %v, %v s", st.Oldest, st.OldestAgeSecs)
	}
	text := do(0, "stats", "-dir", dir).stdout
	for _, s := range []string{"records        9\n", "in flight      2 (sent 1, released 1)", "expired 2", `seq 6, marker "file-7:42"`, "closed         cleanly"} {
		if !strings.Contains(text, s) {
			t.Errorf("stats lacks %q:\n%s", s, text)
		}
	}

	list := do(0, "list", "-dir", dir, "-payload").stdout
	lines := strings.Split(strings.TrimSpace(list), "\n")
	if len(lines) != 10 || lines[0] != listHeader {
		t.Fatalf("list: %d lines:\n%s", len(lines), list)
	}
	for _, s := range []string{"sent id=11", "released id=12", "queued,expired", `"` + payloadOf(7) + `"`} {
		if !strings.Contains(list, s) {
			t.Errorf("list lacks %q:\n%s", s, list)
		}
	}
	if strings.Contains(list, payloadOf(2)) {
		t.Errorf("list shows removed record 2:\n%s", list)
	}
	if hexList := do(0, "list", "-dir", dir, "-payload", "-hex", "-after", "8", "-limit", "1").stdout; !strings.Contains(hexList, "hex:"+hex.EncodeToString([]byte(payloadOf(9)))) ||
		strings.Count(hexList, "\n") != 2 {
		t.Errorf("list -hex -after 8 -limit 1:\n%s", hexList)
	}

	dump := do(0, "dump", "3", "-dir", dir).stdout
	for _, s := range []string{"seq       3\n", "qos       1\n", "state     sent id=11\n", payloadOf(3)} {
		if !strings.Contains(dump, s) {
			t.Errorf("dump lacks %q:\n%s", s, dump)
		}
	}
	if r := do(1, "dump", "-dir", dir, "2"); !strings.Contains(r.stderr, "record 2 is not in the outbox") {
		t.Errorf("dump 2: %s", r.stderr)
	}

	exp := do(0, "export", "-dir", dir).stdout
	var recs []recordJSON
	for _, line := range strings.Split(strings.TrimSpace(exp), "\n") {
		var r recordJSON
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatalf("export line %q: %v", line, err)
		}
		recs = append(recs, r)
	}
	if len(recs) != 9 || recs[0].Seq != 1 || recs[1].Seq != 3 || recs[1].Phase != "sent" || recs[1].PacketID != 11 ||
		string(recs[8].Payload) != payloadOf(10) || !recs[8].Expired || recs[8].Expires == nil {
		t.Fatalf("export: %+v", recs)
	}
	if !strings.Contains(exp, `"payload":"`) {
		t.Fatalf("export payloads are not base64 strings:\n%s", exp)
	}

	if v := do(0, "verify", "-dir", dir).stdout; !strings.HasPrefix(v, "ok: ") {
		t.Errorf("verify: %s", v)
	}
	assertUnchanged(t, dir, before)

	// purge-expired opens the outbox for real: wait until the records
	// really expired.
	time.Sleep(time.Until(f.expires))
	if r := do(0, "purge-expired", "-dir", dir); r.stdout != "removed 2 expired record(s); 7 left\n" {
		t.Errorf("purge-expired: %q", r.stdout)
	}
	if r := do(0, "purge-expired", "-dir", dir); r.stdout != "no expired records (7 left); nothing changed\n" {
		t.Errorf("purge-expired again: %q", r.stdout)
	}
	st = statsJSON{}
	if err := json.Unmarshal([]byte(do(0, "stats", "-dir", dir, "-json").stdout), &st); err != nil {
		t.Fatal(err)
	}
	if st.Records != 7 || st.Expired != 0 || st.InFlight != 2 || st.LastSeq != 10 {
		t.Fatalf("stats after purge: %+v", st)
	}
}

func TestUsage(t *testing.T) {
	now := time.Now()
	for _, args := range [][]string{
		{},
		{"frobnicate"},
		{"stats"},
		{"stats", "-dir", t.TempDir(), "extra"},
		{"dump", "-dir", t.TempDir()},
		{"dump", "-dir", t.TempDir(), "x"},
		{"list", "-bogus"},
	} {
		tool(now, args...).want(t, exitUsage, args...)
	}
	tool(now, "help").want(t, exitOK, "help")
	if r := tool(now, "stats", "-dir", filepath.Join(t.TempDir(), "none")).want(t, exitError); !strings.Contains(r.stderr, "no such file") {
		t.Errorf("missing directory: %s", r.stderr)
	}
	if r := tool(now, "stats", "-dir", t.TempDir()).want(t, exitError); !strings.Contains(r.stderr, "holds no outbox") {
		t.Errorf("empty directory: %s", r.stderr)
	}
}

func TestInUse(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "outbox")
	cmd, stdin := startChild(t, "hold", dir)
	defer func() {
		_ = stdin.Close()
		if err := cmd.Wait(); err != nil {
			t.Errorf("child: %v", err)
		}
	}()
	before := hashDir(t, dir)
	want := fmt.Sprintf("in use by process %d", cmd.Process.Pid)
	for _, args := range [][]string{
		{"stats", "-dir", dir},
		{"verify", "-dir", dir},
		{"list", "-dir", dir},
		{"purge-expired", "-dir", dir},
	} {
		r := tool(time.Now(), args...).want(t, exitInUse, args...)
		if !strings.Contains(r.stderr, want) || r.stdout != "" {
			t.Errorf("%s: stderr %q (want %q), stdout %q", args[0], r.stderr, want, r.stdout)
		}
	}
	var le *outbox.LockedError
	if _, err := outbox.OpenSnapshot(dir, outbox.SnapshotOptions{}); !errors.As(err, &le) || le.PID != cmd.Process.Pid || !errors.Is(err, outbox.ErrLocked) {
		t.Errorf("OpenSnapshot: %v", err)
	}
	assertUnchanged(t, dir, before)
}

func TestInUseByThisProcess(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "outbox")
	q, err := outbox.Open(dir, outbox.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	r := tool(time.Now(), "stats", "-dir", dir).want(t, exitInUse)
	if !strings.Contains(r.stderr, fmt.Sprintf("by this process (pid %d)", os.Getpid())) {
		t.Errorf("stderr: %s", r.stderr)
	}
}

func TestEncrypted(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "outbox")
	key := bytes.Repeat([]byte{0x5a}, 32)
	f := fill(t, dir, key)
	before := hashDir(t, dir)
	keys := t.TempDir()
	raw, hexKey, wrong := filepath.Join(keys, "raw"), filepath.Join(keys, "hex"), filepath.Join(keys, "wrong")
	for name, b := range map[string][]byte{
		raw:    key,
		hexKey: []byte(hex.EncodeToString(key) + "\n"),
		wrong:  bytes.Repeat([]byte{0xa5}, 32),
	} {
		if err := os.WriteFile(name, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	later := f.expires.Add(time.Minute)
	for _, kf := range []string{raw, hexKey} {
		var st statsJSON
		r := tool(later, "stats", "-dir", dir, "-key-file", kf, "-json").want(t, exitOK)
		if err := json.Unmarshal([]byte(r.stdout), &st); err != nil || st.Records != 9 || st.InFlight != 2 || st.Expired != 2 {
			t.Fatalf("stats with %s: %+v, %v", filepath.Base(kf), st, err)
		}
		tool(later, "verify", "-dir", dir, "-key-file", kf).want(t, exitOK)
		if d := tool(later, "dump", "-dir", dir, "-key-file", kf, "7").want(t, exitOK); !strings.Contains(d.stdout, payloadOf(7)) {
			t.Errorf("dump: %s", d.stdout)
		}
	}
	for _, args := range [][]string{
		{"stats", "-dir", dir, "-key-file", wrong},
		{"stats", "-dir", dir},
		{"purge-expired", "-dir", dir, "-key-file", wrong},
	} {
		r := tool(later, args...).want(t, exitBadKey, args...)
		if !strings.Contains(r.stderr, outbox.ErrBadKey.Error()) {
			t.Errorf("%v: %s", args, r.stderr)
		}
	}
	assertUnchanged(t, dir, before)
	// An unencrypted outbox with a key is refused the same way.
	plain := filepath.Join(t.TempDir(), "plain")
	fill(t, plain, nil)
	tool(later, "stats", "-dir", plain, "-key-file", raw).want(t, exitBadKey)
}

// TestCrashed reads an outbox whose process died without Close: its
// records are only in the journal, and Badger must be read from a copy.
func TestCrashed(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "outbox")
	cmd, _ := startChild(t, "crash", dir)
	if err := cmd.Wait(); err != nil {
		t.Fatal(err)
	}
	before := hashDir(t, dir)
	tmp := t.TempDir()
	var st statsJSON
	r := tool(time.Now(), "stats", "-dir", dir, "-json", "-tmp", tmp).want(t, exitOK)
	if err := json.Unmarshal([]byte(r.stdout), &st); err != nil {
		t.Fatal(err)
	}
	if st.Records != 20 || st.ClosedCleanly || st.JournalFrames < 20 || st.InJournal != 20 || st.Sent != 1 || st.LastSeq != 20 {
		t.Fatalf("stats: %+v", st)
	}
	tool(time.Now(), "verify", "-dir", dir, "-tmp", tmp).want(t, exitOK)
	if d := tool(time.Now(), "dump", "-dir", dir, "20").want(t, exitOK); !strings.Contains(d.stdout, "stored    journal") {
		t.Errorf("dump 20: %s", d.stdout)
	}
	assertUnchanged(t, dir, before)
	if ents, _ := os.ReadDir(tmp); len(ents) != 0 {
		t.Errorf("the copy was left in %s: %v", tmp, ents)
	}
}

// flip changes one byte of file at off.
func flip(t *testing.T, file string, off int64) {
	t.Helper()
	f, err := os.OpenFile(file, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, 1)
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 0xff
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

// findIn returns the file under dir matching glob that contains s, and where.
func findIn(t *testing.T, dir, glob, s string) (string, int64) {
	t.Helper()
	files, _ := filepath.Glob(filepath.Join(dir, glob))
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if i := bytes.Index(b, []byte(s)); i >= 0 {
			return f, int64(i)
		}
	}
	t.Fatalf("%q not found in %s/%s", s, dir, glob)
	return "", 0
}

func TestCorruptRecord(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "outbox")
	f := fill(t, dir, nil)
	file, off := findIn(t, dir, "*.vlog", payloadOf(5))
	flip(t, file, off+20)
	before := hashDir(t, dir)
	now := f.expires.Add(-time.Second)

	r := tool(now, "verify", "-dir", dir).want(t, exitCorrupt)
	if !strings.HasPrefix(r.stdout, "FAILED: ") || !strings.Contains(r.stdout, "record 5") {
		t.Errorf("verify:\n%s", r.stdout)
	}
	var v verifyJSON
	if err := json.Unmarshal([]byte(tool(now, "verify", "-dir", dir, "-json").want(t, exitCorrupt).stdout), &v); err != nil {
		t.Fatal(err)
	}
	if v.OK || len(v.Problems) != 1 || v.Problems[0].Kind != "record" || v.Problems[0].Seq != 5 {
		t.Errorf("verify -json: %+v", v)
	}
	if l := tool(now, "list", "-dir", dir).want(t, exitCorrupt); !strings.Contains(l.stdout, "corrupt") || strings.Count(l.stdout, "\n") != 10 {
		t.Errorf("list:\n%s", l.stdout)
	}
	if e := tool(now, "export", "-dir", dir).want(t, exitCorrupt); strings.Count(e.stdout, "\n") != 8 {
		t.Errorf("export:\n%s", e.stdout)
	}
	tool(now, "dump", "-dir", dir, "5").want(t, exitCorrupt)
	tool(now, "stats", "-dir", dir).want(t, exitOK)
	if p := tool(now, "purge-expired", "-dir", dir).want(t, exitCorrupt); !strings.Contains(p.stderr, "changes nothing in a damaged outbox") {
		t.Errorf("purge-expired: %s", p.stderr)
	}

	s, err := outbox.OpenSnapshot(dir, outbox.SnapshotOptions{})
	if err != nil {
		t.Fatal(err)
	}
	err = s.Verify()
	_ = s.Close()
	var ve *outbox.VerifyError
	var re *outbox.CorruptRecordError
	if !errors.As(err, &ve) || !errors.As(err, &re) || re.Seq != 5 || !errors.Is(err, outbox.ErrCorrupt) {
		t.Errorf("Verify: %v", err)
	}
	assertUnchanged(t, dir, before)
}

// A damaged Badger table: the snapshot cannot open it (Badger checks every
// table's checksum), and the tool says so.
func TestCorruptTable(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "outbox")
	fill(t, dir, nil)
	tables, _ := filepath.Glob(filepath.Join(dir, "*.sst"))
	if len(tables) == 0 {
		t.Fatal("no table")
	}
	fi, err := os.Stat(tables[0])
	if err != nil {
		t.Fatal(err)
	}
	flip(t, tables[0], fi.Size()/2)
	before := hashDir(t, dir)
	r := toolProcess(t, "verify", "-dir", dir).want(t, exitCorrupt)
	if !strings.HasPrefix(r.stdout, "FAILED: ") || !strings.Contains(r.stdout, "checksum") {
		t.Errorf("verify:\n%s", r.stdout)
	}
	var v verifyJSON
	if err := json.Unmarshal([]byte(toolProcess(t, "verify", "-dir", dir, "-json").want(t, exitCorrupt).stdout), &v); err != nil || v.OK || len(v.Problems) != 1 {
		t.Errorf("verify -json: %+v, %v", v, err)
	}
	toolProcess(t, "stats", "-dir", dir).want(t, exitCorrupt)
	toolProcess(t, "purge-expired", "-dir", dir).want(t, exitCorrupt)
	assertUnchanged(t, dir, before)
}

func TestCorruptJournal(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "outbox")
	cmd, _ := startChild(t, "crash", dir)
	if err := cmd.Wait(); err != nil {
		t.Fatal(err)
	}
	// Damage the frame holding record 3; the frames after it are whole.
	file, off := findIn(t, dir, "holdfast.journal", payloadOf(3))
	flip(t, file, off+10)
	before := hashDir(t, dir)

	r := tool(time.Now(), "verify", "-dir", dir).want(t, exitCorrupt)
	if !strings.Contains(r.stdout, "journal") || !strings.Contains(r.stdout, "damaged at offset") {
		t.Errorf("verify:\n%s", r.stdout)
	}
	s, err := outbox.OpenSnapshot(dir, outbox.SnapshotOptions{})
	if err != nil {
		t.Fatal(err)
	}
	verr := s.Verify()
	st, _ := s.Stats(time.Now())
	_ = s.Close()
	var je *outbox.JournalCorruptError
	if !errors.As(verr, &je) || je.Offset <= 0 || je.Offset > off || !errors.Is(verr, outbox.ErrCorrupt) {
		t.Fatalf("Verify: %v", verr)
	}
	// What the frames after the damage hold is still there.
	if st.Len != 19 || st.JournalDamage != 1 || st.LastSeq != 20 {
		t.Errorf("stats: %+v", st)
	}
	tool(time.Now(), "purge-expired", "-dir", dir).want(t, exitCorrupt)
	assertUnchanged(t, dir, before)
}

// TestRotateKey changes an outbox's key with rotate-key: the new key reads
// every record, the old one is refused, and a wrong old key changes nothing.
func TestRotateKey(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "outbox")
	key := bytes.Repeat([]byte{0x5a}, 32)
	f := fill(t, dir, key)
	keys := t.TempDir()
	oldKF, newKF, wrong := filepath.Join(keys, "old"), filepath.Join(keys, "new"), filepath.Join(keys, "wrong")
	for name, b := range map[string][]byte{
		oldKF: key,
		newKF: []byte(hex.EncodeToString(bytes.Repeat([]byte{0x3c}, 24)) + "\n"),
		wrong: bytes.Repeat([]byte{0xa5}, 32),
	} {
		if err := os.WriteFile(name, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	later := f.expires.Add(time.Minute)
	before := hashDir(t, dir)
	tool(later, "rotate-key", "-dir", dir, "-key-file", wrong, "-new-key-file", newKF).want(t, exitBadKey)
	tool(later, "rotate-key", "-dir", dir, "-key-file", oldKF).want(t, exitUsage)
	assertUnchanged(t, dir, before)

	tool(later, "rotate-key", "-dir", dir, "-key-file", oldKF, "-new-key-file", newKF).want(t, exitOK)
	tool(later, "stats", "-dir", dir, "-key-file", oldKF).want(t, exitBadKey)
	var st statsJSON
	r := tool(later, "stats", "-dir", dir, "-key-file", newKF, "-json").want(t, exitOK)
	if err := json.Unmarshal([]byte(r.stdout), &st); err != nil || st.Records != 9 || st.InFlight != 2 {
		t.Fatalf("stats after rotation: %+v, %v", st, err)
	}
	tool(later, "verify", "-dir", dir, "-key-file", newKF).want(t, exitOK)
}
