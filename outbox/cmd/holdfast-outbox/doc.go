// Command holdfast-outbox inspects and maintains a Holdfast outbox
// directory (package outbox) while no process uses it.
//
//	go install github.com/holdfast-mqtt/holdfast/outbox/cmd/holdfast-outbox@latest
//
// Usage:
//
//	holdfast-outbox COMMAND -dir DIR [-key-file FILE] [-json] [flags]
//
// Commands:
//
//	stats          depth, bytes, oldest age, in-flight records by phase, expired,
//	               last sequence, the resume point, journal and corruption counts
//	list           one line per record: seq, QoS, size, age, phase and packet id,
//	               topic; -payload adds the payload (text when printable, else
//	               hex; -hex: always hex); -after SEQ, -limit N
//	dump SEQ       one record in full (payload as text or a hex dump)
//	export         every record as a JSON line (payload base64); -after SEQ
//	purge-expired  removes the queued records whose expiry passed, reports how many
//	verify         reads every record, in-flight state and the journal; reports
//	               what Open or Read could not use; changes nothing
//	rotate-key     changes the encryption key (outbox.RotateKey): -key-file is
//	               the current key, -new-key-file the new one (same format)
//
// Flags common to every command:
//
//	-dir DIR        the outbox directory (required)
//	-key-file FILE  the encryption key of an encrypted outbox: a file holding
//	                the key's 16, 24 or 32 bytes as they are, or in hex
//	-json           machine-readable output (JSON; list and export: JSON lines)
//	-tmp DIR        where to copy a directory that was not closed cleanly
//	                (default: the system's temporary directory)
//
// # Read-only
//
// Every command but purge-expired and rotate-key leaves the directory as it found it: not
// a byte written, no file created or removed (outbox.OpenSnapshot). The
// journal is read and its frames applied in memory, where Open would replay
// them into Badger. Badger is opened read-only when the directory was closed
// cleanly; after a crash Badger's read-only mode cannot open it (its
// memtable would need truncating), so its files (not the journal) are copied
// to -tmp first, which needs that much free space there; the copy is removed
// on exit. stats says which way it read.
//
// verify reports damage in the journal as Open would find it (the same
// reader of its frames: a bad frame followed by a valid one is damage, a
// bad last frame a torn tail), as an outbox.JournalCorruptError. It only
// reports: Open is what copies the damaged bytes to
// holdfast.journal.damaged-<generation>-<offset> and replays the rest.
//
// purge-expired first verifies the directory, read-only, and refuses a
// damaged one (exit 3): opening it read-write would replay what can be
// replayed and discard the rest. It then opens the outbox as a client
// would, reads every record (reading removes the expired queued ones, as in
// a running client), and closes it. With nothing expired it writes nothing.
//
// rotate-key rewrites only the key registry (KEYREGISTRY), atomically: after
// it the outbox opens with the new key only. A wrong current key (exit 5)
// or a directory in use (exit 4) changes nothing. See the outbox package
// doc for the whole procedure.
//
// # In use
//
// A directory that a process has open is refused (exit 4), naming that
// process's pid: Badger records it in the directory's LOCK file. The tool
// holds a shared lock while it reads, so the application cannot open the
// outbox meanwhile (its Open fails with outbox.ErrLocked).
//
// # Exit codes
//
//	0  success
//	1  error (no outbox there, I/O error)
//	2  usage (unknown command or flag, missing -dir, malformed key file)
//	3  damage: verify found problems (outbox.VerifyError), list or export met
//	   undecodable records, the directory cannot be read (outbox.ErrCorrupt),
//	   or purge-expired refused a damaged directory
//	4  in use by another process (outbox.ErrLocked)
//	5  wrong encryption key, or none for an encrypted outbox (outbox.ErrBadKey)
package main
