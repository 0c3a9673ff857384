// Package outbox is Holdfast's durable, ordered queue: where an accepted
// message lives until the broker acknowledges it. It knows nothing of MQTT
// sessions or of the network; the client appends records, reads them in
// order, records their in-flight state, and removes them when acknowledged.
//
// Two implementations share one contract, Queue, and one conformance test
// suite: Badger (Open), stored in a Badger v4 directory, and Memory
// (NewMemory), for ephemeral use and tests.
//
//	q, err := outbox.Open("/var/lib/app/outbox", outbox.Options{MaxRecords: 1_000_000})
//	seq, err := q.Append(ctx, &outbox.Record{Topic: "t", QoS: 1, Payload: p})
//	recs, err := q.Read(0, 100, nil)          // from the head, in order
//	err = q.SetState(ctx, seq, 7, outbox.PhaseSent)
//	err = q.Remove(seq)                      // acknowledged
//
// # Storage
//
// Records are keyed by big-endian sequence (plus their encoded size), so key
// order is queue order and Open rebuilds its index from keys alone. A record's
// value is a versioned, checksummed binary encoding; in-flight state
// (PacketID, Phase) is a separate small value, so SetState never rewrites a
// payload. A metadata key keeps the next sequence, so sequences never go back,
// even after the queue was emptied. In memory the queue keeps an index of
// about 2 bytes per record (2 MiB per million), the in-flight states, and
// counters; payloads stay on disk.
//
// One committer goroutine performs every write. It takes all appends and
// state changes waiting, assigns sequences in that order, and commits them
// as one batch with one sync (group commit); removals ride along, or go alone
// in batches after Options.RemoveDelay.
//
// A batch is one frame of a journal (holdfast.journal in the directory): a
// preallocated file, so that an fdatasync of it commits no file-system
// metadata (0.17 ms here, against 0.4-0.7 ms for a synced Badger commit,
// which msyncs two sparse memory-mapped files). A record stays only in the
// journal until a checkpoint; a message acknowledged before then never
// reaches Badger. A checkpoint runs when the journal is full (4 MiB in the
// device profile, 32 MiB in the server one, more for large MaxRecordBytes)
// and at Close: it writes the records still queued to Badger in large
// transactions, fsyncs Badger's files, and starts the journal over. Open
// replays the journal into Badger, so nothing the journal holds is lost to
// a crash at any point (a torn last frame, the normal end after a crash, is
// dropped: its batch was never acknowledged). Badger itself runs without
// synced writes; value-log garbage collection syncs the values it moves
// before Badger deletes their old file. With an EncryptionKey there is no
// journal (it would hold records in the clear): every batch is a synced
// Badger transaction.
//
// The device profile keeps records in Badger's value log, tables and
// memtables small, and pages out the memory-mapped files it is not using
// (Linux, MADV_PAGEOUT), so a process holding a million records stays in
// tens of MiB. The server profile uses large memtables and caches.
// Value-log garbage collection runs on its own, periodically and after
// enough removals.
//
// # Inspection
//
// OpenSnapshot reads a directory that no process uses without writing to
// it: the journal's frames are applied in memory instead of replayed into
// Badger, and Badger is opened read-only (or, after a crash, from a copy).
// Snapshot.Verify reports every undecodable record and damaged journal
// frame. The holdfast-outbox command (outbox/cmd/holdfast-outbox) is built
// on it.
//
// # Keys and permissions
//
// With Options.EncryptionKey, Badger encrypts records with data keys (a new
// one every Options.EncryptionKeyRotation) and keeps the data keys in its
// key registry, the KEYREGISTRY file, encrypted with EncryptionKey.
// RotateKey changes EncryptionKey on a closed outbox: it re-encrypts the
// key registry under the new key (written beside the old one, synced,
// renamed over it, the directory synced), so a crash leaves it readable
// with exactly one of the two keys. Records, in-flight states and the
// resume point are untouched. The procedure:
//
//  1. Stop the process that uses the outbox (RotateKey returns ErrLocked
//     while it runs).
//  2. Optionally back the directory up, or check it with holdfast-outbox
//     verify -key-file OLD.
//  3. Call RotateKey(dir, oldKey, newKey), or run holdfast-outbox
//     rotate-key -dir DIR -key-file OLD -new-key-file NEW.
//  4. Install the new key where the application reads it, then start it.
//  5. Destroy the old key, and any copy of the old KEYREGISTRY file
//     (backups): the old key opens those.
//
// If the process is started with the old key after step 3, Open fails with
// ErrBadKey and changes nothing: start it with the new one. Turning
// encryption on or off for an existing outbox is not supported (RotateKey
// takes two keys): drain it, or copy its records into a new outbox.
//
// Open checks that the directory is private: one whose mode lets group or
// others in (any of 0077) is reported, with the files in it that have such
// bits, as a Warn log and in Stats.LoosePermissions, then restricted to
// the owner (0700, files 0600). With Options.RequirePrivate, Open refuses
// it instead (ErrPermissions) and changes nothing.
//
// # Guarantees
//
//   - Append returns a sequence only once the record is as durable as
//     Options.Durability says: GroupCommit and SyncEach after an fsync
//     (survives power loss), NoSync once in the page cache (survives a crash
//     of the process only). A crash test SIGKILLs writers in every mode,
//     with a small journal so that kills land around checkpoints, and a
//     test replays the journal over Badger files rolled back to the last
//     checkpoint (what a power loss may leave).
//   - Sequences are strictly increasing in commit order, never reused, and
//     Read returns records in that order. Read never returns a record while a
//     lower sequence is still being committed, so a reader advancing a
//     cursor misses nothing.
//   - A record leaves the queue only by Remove, by OverflowDropOldest, by
//     expiry (PhaseQueued records only) or by quarantine (undecodable); each
//     of the last three is counted in Stats and reported to Options.OnDrop
//     with its sequence. In-flight records (PhaseSent, PhaseReleased) are
//     never dropped or expired.
//   - Limits (MaxRecords, MaxBytes) hold at all times, appends in progress
//     included.
//   - A full disk returns ErrDiskFull and loses nothing already stored.
//   - The directory is created 0700 and Badger's files in it are kept 0600;
//     with EncryptionKey, records are AES-encrypted at rest.
//
// # Caveats
//
//   - Removals are written in batches, and a batch of removals alone is not
//     synced: a record removed just before a crash of the process (within
//     RemoveDelay), or before a power loss (until the next synced commit or
//     the kernel's write-back), can reappear after restart. Consumers get
//     at-least-once, never loss.
//   - If the disk fails a write or an fdatasync of the journal, the queue
//     refuses every later write (ErrStorage) until it is reopened; the
//     failed batch may still be replayed at the next Open, so a caller told
//     that an Append failed can find the record delivered anyway.
//   - Expiry is found by Read (every record it passes) and by a sweep from
//     the head (a timer, Open, and appends at a limit). With DefaultTTL, or
//     any non-decreasing Expires, that finds every expired record promptly; a
//     record whose Expires is earlier than that of a queued record ahead of it
//     waits until Read reaches it or the records ahead leave.
//   - ctx bounds only the wait for room (OverflowBlock) and the hand-off to
//     the committer; once handed over, a call waits for its commit (one
//     sync), so that its result is never in doubt.
//   - Stats.Oldest may cost one record lookup after the head changed.
//   - Badger writes through memory maps; a full disk under a memory map kills
//     the process (SIGBUS) rather than returning an error. Options.DiskReserve
//     keeps free space for Badger and refuses appends below it; setting it
//     negative removes that protection.
//   - Badger files are created 0666 less umask and tightened to 0600 shortly
//     after (at Open, Close and each maintenance round); the 0700 directory
//     keeps them private meanwhile.
//   - A directory must always be opened with its current key (the one it
//     was created with, or the last given to RotateKey); losing the key
//     loses the records.
//   - RotateKey re-encrypts the data keys, not the records: a copy of the
//     old KEYREGISTRY file with the old key still decrypts the records
//     written before the rotation (and after it, until the next data key,
//     Options.EncryptionKeyRotation). Records are written under fresh data
//     keys as the queue turns over; an outbox that must not be readable
//     with a leaked key is drained into a new one instead.
//   - Damage to the journal file itself (the disk, or something else
//     writing to it) loses the records of the damaged frames: they cannot
//     be recovered, and show as a gap in sequences. Open replays every
//     valid frame after the damage, copies the damaged bytes to
//     holdfast.journal.damaged-<generation>-<offset> in the directory, logs
//     it at Error, counts it in Stats.CorruptJournal and passes a
//     *JournalCorruptError (ErrCorrupt) to Options.OnCorrupt; Open still
//     succeeds. Treat it as a storage fault: check the disk, alert, and if
//     the application must know which messages were lost, compare what it
//     had accepted with what the queue holds. Delete the .damaged file once
//     inspected. After a power loss, the same report can come from a frame
//     whose sync had not returned (nothing acknowledged was lost then).
//     OpenSnapshot reads the journal with the same code, so
//     holdfast-outbox verify reports the same damage before an Open does;
//     being read-only, it copies nothing aside (Open saves the bytes).
//     To tell damage from a torn tail, Open reads the journal to its end
//     (about 10 ms for the server profile's 32 MiB when cached).
//   - Memory holds everything in process memory and loses it at exit.
package outbox
