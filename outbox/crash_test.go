package outbox

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// The crash test re-executes this test binary as a child that appends as
// fast as it can and prints each sequence once its Append returned; the
// parent SIGKILLs it at random points, reopens the outbox and checks that
// every printed record is there, in order, and nothing else is.
const (
	crashChildEnv   = "HOLDFAST_OUTBOX_CRASH_CHILD"
	crashDirEnv     = "HOLDFAST_OUTBOX_CRASH_DIR"
	crashModeEnv    = "HOLDFAST_OUTBOX_CRASH_MODE"
	crashRunEnv     = "HOLDFAST_OUTBOX_CRASH_RUN"
	crashKeyEnv     = "HOLDFAST_OUTBOX_CRASH_KEY" // set: encrypted (no journal)
	crashWorkers    = 4
	crashKills      = 20
	crashPayloadPad = 100
)

func crashChild() {
	mode, _ := strconv.Atoi(os.Getenv(crashModeEnv))
	run := os.Getenv(crashRunEnv)
	// A small journal, so that kills also land in and around checkpoints.
	o := Options{Durability: Durability(mode), MaxRecordBytes: 4096, journalBytes: 32 << 10}
	if os.Getenv(crashKeyEnv) != "" {
		o.EncryptionKey = crashKey
	}
	q, err := Open(os.Getenv(crashDirEnv), o)
	if err != nil {
		fmt.Fprintln(os.Stderr, "open:", err)
		os.Exit(3)
	}
	var out sync.Mutex
	write := func(s string) {
		out.Lock()
		defer out.Unlock()
		_, _ = os.Stdout.WriteString(s)
	}
	write("ready\n")
	pad := strings.Repeat("p", crashPayloadPad)
	for g := 0; g < crashWorkers; g++ {
		go func() {
			for i := 0; ; i++ {
				p := fmt.Sprintf("%s:%d:%d:%s", run, g, i, pad)
				seq, err := q.Append(context.Background(), &Record{Topic: "crash", QoS: 1, Payload: []byte(p)})
				if err != nil {
					fmt.Fprintln(os.Stderr, "append:", err)
					os.Exit(4)
				}
				if g == 0 {
					// Goroutine 0's records leave again at once: frames
					// mix removals with appends, and checkpoints move
					// fewer records than were appended.
					if err := q.Remove(seq); err != nil {
						fmt.Fprintln(os.Stderr, "remove:", err)
						os.Exit(5)
					}
					continue
				}
				write(fmt.Sprintf("%d %s\n", seq, p[:len(p)-crashPayloadPad-1]))
			}
		}()
	}
	select {}
}

func TestCrashDurability(t *testing.T) {
	if testing.Short() {
		t.Skip("crash test skipped in -short mode")
	}
	// NoSync promises to survive a crash of the process (not a power
	// loss): a SIGKILL must not lose its records either.
	for _, mode := range []Durability{GroupCommit, SyncEach, NoSync} {
		t.Run(mode.String(), func(t *testing.T) {
			t.Parallel()
			crashLoop(t, mode, nil)
		})
	}
	// With a key there is no journal: synced Badger transactions.
	t.Run("group-commit-encrypted", func(t *testing.T) {
		t.Parallel()
		crashLoop(t, GroupCommit, crashKey)
	})
}

var crashKey = bytes.Repeat([]byte{9}, 32)

type printed struct {
	seq uint64
	key string // run:goroutine:i
}

func crashLoop(t *testing.T, mode Durability, key []byte) {
	dir := t.TempDir()
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), uint64(mode)))
	var all []printed // every sequence any child printed
	lastMax := uint64(0)
	total := 0
	for run := 0; run < crashKills; run++ {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), crashChildEnv+"=1", crashDirEnv+"="+dir,
			fmt.Sprintf("%s=%d", crashModeEnv, mode), fmt.Sprintf("%s=%d", crashRunEnv, run))
		if key != nil {
			cmd.Env = append(cmd.Env, crashKeyEnv+"=1")
		}
		var stderr strings.Builder
		cmd.Stderr = &stderr
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		lines := make(chan string, 1024)
		go func() {
			defer close(lines)
			sc := bufio.NewScanner(stdout)
			for sc.Scan() {
				lines <- sc.Text()
			}
		}()
		select {
		case l, ok := <-lines:
			if !ok || l != "ready" {
				_ = cmd.Process.Kill()
				_ = cmd.Wait()
				t.Fatalf("run %d: child did not start: %q %s", run, l, stderr.String())
			}
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
			t.Fatalf("run %d: child not ready", run)
		}
		// Kill at a random point: sometimes at once, mostly while appending.
		delay := time.Duration(20+rng.IntN(130)) * time.Millisecond
		if run%5 == 0 {
			delay = time.Duration(rng.IntN(3)) * time.Millisecond
		}
		timer := time.NewTimer(delay)
		var got []printed
	collect:
		for {
			select {
			case l, ok := <-lines:
				if !ok {
					t.Fatalf("run %d: child exited early: %s", run, stderr.String())
				}
				got = append(got, parsePrinted(t, l))
			case <-timer.C:
				break collect
			}
		}
		if err := cmd.Process.Kill(); err != nil {
			t.Fatal(err)
		}
		for l := range lines { // what the child printed before it died
			got = append(got, parsePrinted(t, l))
		}
		_ = cmd.Wait()
		if stderr.Len() > 0 {
			t.Fatalf("run %d: child stderr: %s", run, stderr.String())
		}
		for _, p := range got {
			if p.seq <= lastMax {
				t.Fatalf("run %d: seq %d not above previous runs' %d", run, p.seq, lastMax)
			}
		}
		all = append(all, got...)
		total += len(got)
		lastMax = verifyCrashDir(t, dir, all, run, key)
	}
	t.Logf("%s (encrypted %v): %d kills, %d acknowledged appends, all present", mode, key != nil, crashKills, total)
}

func parsePrinted(t *testing.T, l string) printed {
	t.Helper()
	f := strings.Fields(l)
	if len(f) != 2 {
		t.Fatalf("bad child line %q", l)
	}
	seq, err := strconv.ParseUint(f[0], 10, 64)
	if err != nil {
		t.Fatalf("bad child line %q", l)
	}
	return printed{seq, f[1]}
}

// verifyCrashDir reopens dir and checks it against everything printed so
// far; it returns the highest sequence stored.
func verifyCrashDir(t *testing.T, dir string, all []printed, run int, key []byte) uint64 {
	t.Helper()
	// A SIGKILL leaves at most a torn last frame: never damage.
	q, err := Open(dir, Options{EncryptionKey: key, OnCorrupt: func(err error) {
		t.Errorf("run %d: reopen after kill reported damage: %v", run, err)
	}})
	if err != nil {
		t.Fatalf("run %d: reopen after kill: %v", run, err)
	}
	defer q.Close()
	recs := readAll(t, q)
	bySeq := make(map[uint64]string, len(recs))
	// Per run and goroutine, the stored indexes must be 0..k without holes,
	// in sequence order: nothing lost, nothing reordered, nothing invented.
	next := map[string]int{}
	var prev uint64
	for _, r := range recs {
		if r.Seq <= prev {
			t.Fatalf("run %d: seq %d after %d", run, r.Seq, prev)
		}
		prev = r.Seq
		p := string(r.Payload)
		parts := strings.SplitN(p, ":", 4)
		if len(parts) != 4 || parts[3] != strings.Repeat("p", crashPayloadPad) || r.Topic != "crash" {
			t.Fatalf("run %d: record %d holds something no child wrote: %q", run, r.Seq, p)
		}
		i, _ := strconv.Atoi(parts[2])
		rg := parts[0] + ":" + parts[1]
		if parts[1] == "0" {
			// Removed by the child: may have come back (a removal lost
			// in the crash), never out of order.
			if i < next[rg] {
				t.Fatalf("run %d: record %d is %s #%d, after #%d", run, r.Seq, rg, i, next[rg]-1)
			}
		} else if i != next[rg] {
			t.Fatalf("run %d: record %d is %s #%d, expected #%d", run, r.Seq, rg, i, next[rg])
		}
		next[rg] = i + 1
		bySeq[r.Seq] = strings.Join(parts[:3], ":")
	}
	for _, p := range all {
		if got, ok := bySeq[p.seq]; !ok || got != p.key {
			t.Fatalf("run %d: acknowledged seq %d (%s) lost after SIGKILL (found %q)", run, p.seq, p.key, got)
		}
	}
	return q.Stats().LastSeq
}
