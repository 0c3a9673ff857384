package main

import (
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/holdfast-mqtt/holdfast/outbox"
)

// Exit codes (see the package doc).
const (
	exitOK      = 0
	exitError   = 1
	exitUsage   = 2
	exitCorrupt = 3
	exitInUse   = 4
	exitBadKey  = 5
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr, time.Now))
}

const usage = `usage: holdfast-outbox COMMAND -dir DIR [-key-file FILE] [-json] [flags]

commands:
  stats          depth, bytes, oldest age, in flight, last sequence, resume point
  list           one line per record (-payload, -hex, -after SEQ, -limit N)
  dump SEQ       one record in full (-hex)
  export         every record as a JSON line, payload base64 (-after SEQ)
  purge-expired  remove expired queued records, report how many
  verify         check every record and the journal; exit 3 on damage
  rotate-key     re-encrypt under -new-key-file (outbox closed; -key-file: the current key)

Every command but purge-expired and rotate-key leaves the directory unchanged.
"holdfast-outbox COMMAND -h" lists a command's flags.
Exit codes: 0 ok, 1 error, 2 usage, 3 damage, 4 in use, 5 wrong key.
`

// errUsage marks errors in the command line.
var errUsage = errors.New("usage")

// cli is one invocation.
type cli struct {
	out, errw io.Writer
	now       func() time.Time

	// Common flags.
	dir, keyFile, tmp string
	newKeyFile        string // rotate-key
	json              bool
}

// run executes the command line args (without the program name) and
// returns the exit code.
func run(args []string, stdout, stderr io.Writer, now func() time.Time) int {
	c := &cli{out: stdout, errw: stderr, now: now}
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "-help" || args[0] == "--help" {
		fmt.Fprint(stderr, usage)
		if len(args) == 0 {
			return exitUsage
		}
		return exitOK
	}
	cmds := map[string]func([]string) error{
		"stats":         c.stats,
		"list":          c.list,
		"dump":          c.dump,
		"export":        c.export,
		"purge-expired": c.purge,
		"verify":        c.verify,
		"rotate-key":    c.rotateKey,
	}
	cmd, ok := cmds[args[0]]
	if !ok {
		fmt.Fprintf(stderr, "holdfast-outbox: unknown command %q\n\n%s", args[0], usage)
		return exitUsage
	}
	err := cmd(args[1:])
	if errors.Is(err, flag.ErrHelp) {
		return exitOK
	}
	if err != nil {
		if !errors.Is(err, errReported) {
			fmt.Fprintf(stderr, "holdfast-outbox %s: %s\n", args[0], describe(err))
		}
		return exitCode(err)
	}
	return exitOK
}

// errReported wraps an error whose details the command already printed.
var errReported = errors.New("reported")

// exitCode maps an error to the documented exit code.
func exitCode(err error) int {
	switch {
	case err == nil:
		return exitOK
	case errors.Is(err, errUsage):
		return exitUsage
	case errors.Is(err, outbox.ErrLocked):
		return exitInUse
	case errors.Is(err, outbox.ErrBadKey):
		return exitBadKey
	case errors.Is(err, outbox.ErrCorrupt):
		return exitCorrupt
	}
	return exitError
}

// describe adds what to do to the errors an operator meets most.
func describe(err error) string {
	var le *outbox.LockedError
	switch {
	case errors.As(err, &le) && le.PID > 0:
		return fmt.Sprintf("%v; stop process %d (or close its outbox) first", err, le.PID)
	case errors.Is(err, outbox.ErrLocked):
		return fmt.Sprintf("%v; stop the process using it first", err)
	case errors.Is(err, outbox.ErrBadKey):
		return fmt.Sprintf("%v (give the key the outbox was created with: -key-file)", err)
	}
	return err.Error()
}

// flags returns a flag set with the common flags; the caller adds its own.
func (c *cli) flags(name string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(c.errw)
	fs.StringVar(&c.dir, "dir", "", "the outbox `directory` (required)")
	fs.StringVar(&c.keyFile, "key-file", "", "`file` holding the encryption key (16, 24 or 32 bytes, raw or hex)")
	fs.BoolVar(&c.json, "json", false, "machine-readable output")
	fs.StringVar(&c.tmp, "tmp", "", "`directory` for the copy of an outbox that was not closed cleanly (default: system temp)")
	return fs
}

// parse parses args, letting flags and positional arguments mix
// ("dump 42 -dir d" and "dump -dir d 42"), and checks -dir.
func (c *cli) parse(fs *flag.FlagSet, args []string, positional int) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, err
			}
			return nil, fmt.Errorf("%w: %v", errUsage, err)
		}
		args = fs.Args()
		if len(args) == 0 {
			break
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
	if len(pos) != positional {
		return nil, fmt.Errorf("%w: %s takes %d argument(s), got %q", errUsage, fs.Name(), positional, strings.Join(pos, " "))
	}
	if c.dir == "" {
		return nil, fmt.Errorf("%w: -dir is required", errUsage)
	}
	return pos, nil
}

// key reads -key-file: the key's bytes as they are (16, 24 or 32 of them),
// or hex text (whitespace around it ignored). nil without -key-file.
func (c *cli) key() ([]byte, error) { return readKey(c.keyFile) }

// readKey reads a key file as -key-file does; nil for "".
func readKey(path string) ([]byte, error) {
	if path == "" {
		return nil, nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%w: key file: %v", errUsage, err)
	}
	switch len(b) {
	case 16, 24, 32:
		return b, nil
	}
	k, err := hex.DecodeString(strings.TrimSpace(string(b)))
	if err == nil {
		switch len(k) {
		case 16, 24, 32:
			return k, nil
		}
	}
	return nil, fmt.Errorf("%w: key file %s: want a key of 16, 24 or 32 bytes, as they are or in hex; found %d bytes",
		errUsage, path, len(b))
}

// snapshot opens the directory read-only.
func (c *cli) snapshot() (*outbox.Snapshot, error) {
	key, err := c.key()
	if err != nil {
		return nil, err
	}
	return outbox.OpenSnapshot(c.dir, outbox.SnapshotOptions{EncryptionKey: key, TempDir: c.tmp})
}
