package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync/atomic"

	"github.com/holdfast-mqtt/holdfast/outbox"
)

// withSnapshot opens the directory read-only, runs fn, and closes it.
func (c *cli) withSnapshot(fn func(*outbox.Snapshot) error) (err error) {
	s, err := c.snapshot()
	if err != nil {
		return err
	}
	defer func() {
		if cerr := s.Close(); err == nil && cerr != nil {
			err = fmt.Errorf("closing: %w", cerr)
		}
	}()
	return fn(s)
}

func (c *cli) stats(args []string) error {
	fs := c.flags("stats")
	if _, err := c.parse(fs, args, 0); err != nil {
		return err
	}
	return c.withSnapshot(func(s *outbox.Snapshot) error {
		now := c.now()
		st, err := s.Stats(now)
		if err != nil {
			return err
		}
		if c.json {
			return c.writeJSON(statsOut(c.dir, st, now))
		}
		c.printStats(st, now)
		return nil
	})
}

func (c *cli) list(args []string) error {
	fs := c.flags("list")
	payload := fs.Bool("payload", false, "include the payload (text when printable, else hex)")
	asHex := fs.Bool("hex", false, "payloads in hex")
	after := fs.Uint64("after", 0, "list records after this `seq`")
	limit := fs.Int("limit", 0, "list at most `n` records (0: all)")
	if _, err := c.parse(fs, args, 0); err != nil {
		return err
	}
	w := bufio.NewWriter(c.out)
	enc := newEncoder(w)
	corrupt, n := 0, 0
	err := c.withSnapshot(func(s *outbox.Snapshot) error {
		now := c.now()
		if !c.json {
			fmt.Fprintln(w, listHeader)
		}
		return s.Records(*after, func(r *outbox.SnapshotRecord) error {
			if *limit > 0 && n == *limit {
				return errStop
			}
			n++
			if r.Err != nil {
				corrupt++
			}
			if c.json {
				return enc.Encode(recordOut(r, now, *payload))
			}
			fmt.Fprintln(w, listLine(r, now, *payload, *asHex))
			return nil
		})
	})
	if errors.Is(err, errStop) {
		err = nil
	}
	if ferr := w.Flush(); err == nil {
		err = ferr
	}
	if err == nil && corrupt > 0 {
		fmt.Fprintf(c.errw, "holdfast-outbox list: %d undecodable record(s); run verify\n", corrupt)
		return fmt.Errorf("%w: %w", errReported, outbox.ErrCorrupt)
	}
	return err
}

var errStop = errors.New("stop")

func (c *cli) dump(args []string) error {
	fs := c.flags("dump")
	asHex := fs.Bool("hex", false, "payload as a hex dump even when it is text")
	pos, err := c.parse(fs, args, 1)
	if err != nil {
		return err
	}
	seq, err := strconv.ParseUint(pos[0], 10, 64)
	if err != nil || seq == 0 {
		return fmt.Errorf("%w: dump SEQ: %q is not a sequence number", errUsage, pos[0])
	}
	return c.withSnapshot(func(s *outbox.Snapshot) error {
		r, err := s.Get(seq)
		if errors.Is(err, outbox.ErrNotFound) {
			return fmt.Errorf("record %d is not in the outbox (acknowledged, dropped, expired, or never appended)", seq)
		}
		if err != nil {
			return err
		}
		now := c.now()
		if c.json {
			if err := c.writeJSON(recordOut(r, now, true)); err != nil {
				return err
			}
		} else {
			c.printRecord(r, now, *asHex)
		}
		if r.Err != nil {
			return fmt.Errorf("%w: %w", errReported, r.Err)
		}
		return nil
	})
}

func (c *cli) export(args []string) error {
	fs := c.flags("export")
	after := fs.Uint64("after", 0, "export records after this `seq`")
	if _, err := c.parse(fs, args, 0); err != nil {
		return err
	}
	w := bufio.NewWriter(c.out)
	enc := newEncoder(w)
	var bad []error
	err := c.withSnapshot(func(s *outbox.Snapshot) error {
		now := c.now()
		return s.Records(*after, func(r *outbox.SnapshotRecord) error {
			if r.Err != nil {
				bad = append(bad, r.Err)
				return nil
			}
			return enc.Encode(recordOut(r, now, true))
		})
	})
	if ferr := w.Flush(); err == nil {
		err = ferr
	}
	if err == nil && len(bad) > 0 {
		for _, e := range bad {
			fmt.Fprintf(c.errw, "holdfast-outbox export: skipped: %v\n", e)
		}
		fmt.Fprintf(c.errw, "holdfast-outbox export: %d undecodable record(s) not exported; run verify\n", len(bad))
		return fmt.Errorf("%w: %w", errReported, outbox.ErrCorrupt)
	}
	return err
}

func (c *cli) verify(args []string) error {
	fs := c.flags("verify")
	if _, err := c.parse(fs, args, 0); err != nil {
		return err
	}
	err := c.withSnapshot(func(s *outbox.Snapshot) error {
		st, err := s.Stats(c.now())
		if err != nil {
			return err
		}
		verr := s.Verify()
		var ve *outbox.VerifyError
		if verr != nil && !errors.As(verr, &ve) {
			return verr
		}
		if c.json {
			if err := c.writeJSON(verifyOut(c.dir, st, ve)); err != nil {
				return err
			}
		} else {
			c.printVerify(st, ve)
		}
		if ve != nil {
			return fmt.Errorf("%w: %w", errReported, ve)
		}
		return nil
	})
	if errors.Is(err, outbox.ErrCorrupt) && !errors.Is(err, errReported) {
		// Badger's files themselves cannot be read.
		ve := &outbox.VerifyError{Dir: c.dir, Problems: []error{err}}
		if c.json {
			if jerr := c.writeJSON(verifyOut(c.dir, outbox.SnapshotStats{}, ve)); jerr != nil {
				return jerr
			}
		} else {
			fmt.Fprintf(c.out, "FAILED: %s cannot be read: %v\nNothing was changed.\n", c.dir, err)
		}
		return fmt.Errorf("%w: %w", errReported, ve)
	}
	return err
}

// purge removes the expired queued records through outbox.Open, after a
// read-only verification (see the package doc).
func (c *cli) purge(args []string) error {
	fs := c.flags("purge-expired")
	if _, err := c.parse(fs, args, 0); err != nil {
		return err
	}
	key, err := c.key()
	if err != nil {
		return err
	}
	var st outbox.SnapshotStats
	err = c.withSnapshot(func(s *outbox.Snapshot) error {
		if err := s.Verify(); err != nil {
			return fmt.Errorf("%w; purge-expired changes nothing in a damaged outbox (see verify)", err)
		}
		st, err = s.Stats(c.now())
		return err
	})
	if err != nil {
		return err
	}
	if st.Expired == 0 {
		return c.purged(0, st.Len)
	}
	var n atomic.Int64
	q, err := outbox.Open(c.dir, outbox.Options{
		EncryptionKey: key,
		OnDrop: func(_ uint64, reason error) {
			if errors.Is(reason, outbox.ErrExpired) {
				n.Add(1)
			}
		},
	})
	if err != nil {
		return err
	}
	var buf []outbox.Record
	var after uint64
	for {
		buf, err = q.Read(after, 256, buf[:0])
		if err != nil || len(buf) == 0 {
			break
		}
		after = buf[len(buf)-1].Seq
	}
	left := q.Stats().Len
	if cerr := q.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	return c.purged(int(n.Load()), left)
}

// rotateKey changes the encryption key of a closed outbox (outbox.RotateKey).
func (c *cli) rotateKey(args []string) error {
	fs := c.flags("rotate-key")
	fs.StringVar(&c.newKeyFile, "new-key-file", "", "`file` holding the new key (16, 24 or 32 bytes, raw or hex; required)")
	if _, err := c.parse(fs, args, 0); err != nil {
		return err
	}
	if c.keyFile == "" || c.newKeyFile == "" {
		return fmt.Errorf("%w: rotate-key needs -key-file (the current key) and -new-key-file", errUsage)
	}
	oldKey, err := c.key()
	if err != nil {
		return err
	}
	newKey, err := readKey(c.newKeyFile)
	if err != nil {
		return err
	}
	if err := outbox.RotateKey(c.dir, oldKey, newKey); err != nil {
		return err
	}
	if c.json {
		return c.writeJSON(map[string]bool{"rotated": true})
	}
	fmt.Fprintf(c.out, "key rotated; %s now opens with the key in %s only\n", c.dir, c.newKeyFile)
	return nil
}

func (c *cli) purged(n, left int) error {
	if c.json {
		return c.writeJSON(map[string]int{"removed": n, "left": left})
	}
	if n == 0 {
		fmt.Fprintf(c.out, "no expired records (%d left); nothing changed\n", left)
		return nil
	}
	fmt.Fprintf(c.out, "removed %d expired record(s); %d left\n", n, left)
	return nil
}

func (c *cli) writeJSON(v any) error {
	enc := json.NewEncoder(c.out)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
