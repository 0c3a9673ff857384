package main

import (
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/holdfast-mqtt/holdfast/outbox"
)

func newEncoder(w io.Writer) *json.Encoder {
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	return enc
}

// printable reports whether b reads as text: valid UTF-8 with no control
// characters but tab and newline.
func printable(b []byte) bool {
	if !utf8.Valid(b) {
		return false
	}
	for _, r := range string(b) {
		if !unicode.IsPrint(r) && r != '\t' && r != '\n' && r != '\r' {
			return false
		}
	}
	return true
}

// inline renders a payload on one line: quoted text, or hex:... .
func inline(b []byte, asHex bool) string {
	if !asHex && printable(b) {
		return strconv.Quote(string(b))
	}
	return "hex:" + hex.EncodeToString(b)
}

// age renders a duration for people: whole seconds, or milliseconds below one.
func age(d time.Duration) string {
	if d > -time.Second && d < time.Second {
		return d.Round(time.Millisecond).String()
	}
	return d.Round(time.Second).String()
}

func state(r *outbox.SnapshotRecord, now time.Time) string {
	switch {
	case r.Err != nil:
		return "corrupt"
	case r.Phase != outbox.PhaseQueued:
		return fmt.Sprintf("%s id=%d", r.Phase, r.PacketID)
	case !r.Expires.IsZero() && !now.Before(r.Expires):
		return "queued,expired"
	}
	return "queued"
}

const listHeader = "SEQ        QOS SIZE     AGE        STATE            TOPIC"

func listLine(r *outbox.SnapshotRecord, now time.Time, payload, asHex bool) string {
	if r.Err != nil {
		return fmt.Sprintf("%-10d %-3s %-8d %-10s %-16s (%v)", r.Seq, "-", r.Size, "-", state(r, now), errors.Unwrap(r.Err))
	}
	line := fmt.Sprintf("%-10d %-3d %-8d %-10s %-16s %s", r.Seq, r.QoS, r.Size, age(now.Sub(r.Enqueued)), state(r, now), r.Topic)
	if payload {
		line += " " + inline(r.Payload, asHex)
	}
	return line
}

// recordJSON is one record in list -json, dump -json and export.
type recordJSON struct {
	Seq       uint64     `json:"seq"`
	Topic     string     `json:"topic,omitempty"`
	QoS       byte       `json:"qos"`
	Retained  bool       `json:"retained,omitempty"`
	Size      uint32     `json:"size"`
	Enqueued  *time.Time `json:"enqueued,omitempty"`
	AgeSecs   float64    `json:"age_seconds,omitempty"`
	Expires   *time.Time `json:"expires,omitempty"`
	Expired   bool       `json:"expired,omitempty"`
	Phase     string     `json:"phase"`
	PacketID  uint16     `json:"packet_id,omitempty"`
	InJournal bool       `json:"in_journal,omitempty"`
	Payload   []byte     `json:"payload,omitempty"` // base64
	Error     string     `json:"error,omitempty"`
}

func recordOut(r *outbox.SnapshotRecord, now time.Time, payload bool) recordJSON {
	out := recordJSON{Seq: r.Seq, Size: r.Size, Phase: r.Phase.String(), PacketID: r.PacketID, InJournal: r.InJournal}
	if r.Err != nil {
		out.Error = r.Err.Error()
		return out
	}
	out.Topic, out.QoS, out.Retained = r.Topic, r.QoS, r.Retained
	enq := r.Enqueued.UTC()
	out.Enqueued, out.AgeSecs = &enq, now.Sub(r.Enqueued).Seconds()
	if !r.Expires.IsZero() {
		exp := r.Expires.UTC()
		out.Expires = &exp
		out.Expired = r.Phase == outbox.PhaseQueued && !now.Before(r.Expires)
	}
	if payload {
		out.Payload = r.Payload
		if out.Payload == nil {
			out.Payload = []byte{}
		}
	}
	return out
}

func (c *cli) printRecord(r *outbox.SnapshotRecord, now time.Time, asHex bool) {
	w := c.out
	fmt.Fprintf(w, "seq       %d\n", r.Seq)
	if r.Err != nil {
		fmt.Fprintf(w, "size      %d bytes encoded\nstate     %s (packet id %d)\nerror     %v\n", r.Size, r.Phase, r.PacketID, r.Err)
		return
	}
	fmt.Fprintf(w, "topic     %s\n", r.Topic)
	fmt.Fprintf(w, "qos       %d\n", r.QoS)
	fmt.Fprintf(w, "retained  %t\n", r.Retained)
	fmt.Fprintf(w, "size      %d bytes encoded\n", r.Size)
	fmt.Fprintf(w, "enqueued  %s (%s ago)\n", r.Enqueued.UTC().Format(time.RFC3339Nano), age(now.Sub(r.Enqueued)))
	switch {
	case r.Expires.IsZero():
		fmt.Fprintf(w, "expires   never\n")
	case now.Before(r.Expires):
		fmt.Fprintf(w, "expires   %s (in %s)\n", r.Expires.UTC().Format(time.RFC3339Nano), age(r.Expires.Sub(now)))
	default:
		fmt.Fprintf(w, "expires   %s (%s ago)\n", r.Expires.UTC().Format(time.RFC3339Nano), age(now.Sub(r.Expires)))
	}
	fmt.Fprintf(w, "state     %s\n", state(r, now))
	where := "Badger"
	if r.InJournal {
		where = "journal (appended since the last checkpoint; the next Open moves it to Badger)"
	}
	fmt.Fprintf(w, "stored    %s\n", where)
	if !asHex && printable(r.Payload) {
		fmt.Fprintf(w, "payload   %d bytes, text:\n%s\n", len(r.Payload), r.Payload)
		return
	}
	fmt.Fprintf(w, "payload   %d bytes, hex:\n%s", len(r.Payload), hex.Dump(r.Payload))
}

// statsJSON is stats -json.
type statsJSON struct {
	Dir           string      `json:"dir"`
	Records       int         `json:"records"`
	Bytes         int64       `json:"bytes"`
	Oldest        *time.Time  `json:"oldest,omitempty"`
	OldestAgeSecs float64     `json:"oldest_age_seconds"`
	InFlight      int         `json:"in_flight"`
	Queued        int         `json:"queued"`
	Sent          int         `json:"sent"`
	Released      int         `json:"released"`
	Expired       int         `json:"expired"`
	Corrupt       int         `json:"corrupt"`
	Quarantined   int         `json:"quarantined"`
	FirstSeq      uint64      `json:"first_seq"`
	LastSeq       uint64      `json:"last_seq"`
	InJournal     int         `json:"in_journal"`
	JournalFrames int         `json:"journal_frames"`
	JournalDamage int         `json:"journal_damage"`
	ClosedCleanly bool        `json:"closed_cleanly"`
	ResumePoint   *resumeJSON `json:"resume_point,omitempty"`
}

type resumeJSON struct {
	Seq    uint64 `json:"seq"`
	Marker []byte `json:"marker"` // base64
}

func statsOut(dir string, st outbox.SnapshotStats, now time.Time) statsJSON {
	out := statsJSON{
		Dir: dir, Records: st.Len, Bytes: st.Bytes, InFlight: st.InFlight(),
		Queued: st.Queued, Sent: st.Sent, Released: st.Released, Expired: st.Expired,
		Corrupt: st.Corrupt, Quarantined: st.Quarantined, FirstSeq: st.FirstSeq, LastSeq: st.LastSeq,
		InJournal: st.InJournal, JournalFrames: st.JournalFrames, JournalDamage: st.JournalDamage,
		ClosedCleanly: !st.Copied,
	}
	if !st.Oldest.IsZero() {
		o := st.Oldest.UTC()
		out.Oldest, out.OldestAgeSecs = &o, now.Sub(st.Oldest).Seconds()
	}
	if st.ResumeSeq != 0 {
		out.ResumePoint = &resumeJSON{Seq: st.ResumeSeq, Marker: st.ResumeMarker}
	}
	return out
}

func (c *cli) printStats(st outbox.SnapshotStats, now time.Time) {
	w := c.out
	row := func(k, f string, a ...any) { fmt.Fprintf(w, "%-14s "+f+"\n", append([]any{k}, a...)...) }
	row("directory", "%s", c.dir)
	if st.Copied {
		row("closed", "no: its process crashed or was killed (read from a copy; the next Open replays the journal)")
	} else {
		row("closed", "cleanly")
	}
	row("records", "%d", st.Len)
	row("bytes", "%d (%s)", st.Bytes, sizeStr(st.Bytes))
	if st.Oldest.IsZero() {
		row("oldest", "-")
	} else {
		row("oldest", "%s (%s ago)", st.Oldest.UTC().Format(time.RFC3339), age(now.Sub(st.Oldest)))
	}
	row("in flight", "%d (sent %d, released %d)", st.InFlight(), st.Sent, st.Released)
	row("queued", "%d (expired %d)", st.Queued, st.Expired)
	row("sequences", "first %d, last %d", st.FirstSeq, st.LastSeq)
	if st.ResumeSeq == 0 {
		row("resume point", "none")
	} else {
		row("resume point", "seq %d, marker %s", st.ResumeSeq, inline(st.ResumeMarker, false))
	}
	row("journal", "%d frame(s) to replay, %d record(s) since the last checkpoint", st.JournalFrames, st.InJournal)
	var bad []string
	if st.Corrupt > 0 {
		bad = append(bad, fmt.Sprintf("%d undecodable record(s)", st.Corrupt))
	}
	if st.JournalDamage > 0 {
		bad = append(bad, fmt.Sprintf("%d damaged journal stretch(es)", st.JournalDamage))
	}
	if len(bad) > 0 {
		row("damage", "%s: run verify", strings.Join(bad, ", "))
	} else {
		row("damage", "none seen")
	}
	if st.Quarantined > 0 {
		row("quarantined", "%d record(s) set aside earlier as undecodable", st.Quarantined)
	}
}

func sizeStr(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}

// verifyJSON is verify -json.
type verifyJSON struct {
	Dir           string        `json:"dir"`
	OK            bool          `json:"ok"`
	Records       int           `json:"records"`
	JournalFrames int           `json:"journal_frames"`
	Problems      []problemJSON `json:"problems,omitempty"`
}

type problemJSON struct {
	Kind   string `json:"kind"` // record, journal, other
	Seq    uint64 `json:"seq,omitempty"`
	Offset int64  `json:"offset,omitempty"`
	Length int64  `json:"length,omitempty"`
	Error  string `json:"error"`
}

func problemOut(p error) problemJSON {
	var re *outbox.CorruptRecordError
	var je *outbox.JournalCorruptError
	switch {
	case errors.As(p, &re):
		return problemJSON{Kind: "record", Seq: re.Seq, Error: p.Error()}
	case errors.As(p, &je):
		return problemJSON{Kind: "journal", Offset: je.Offset, Length: je.Length, Error: p.Error()}
	}
	return problemJSON{Kind: "other", Error: p.Error()}
}

func verifyOut(dir string, st outbox.SnapshotStats, ve *outbox.VerifyError) verifyJSON {
	out := verifyJSON{Dir: dir, OK: ve == nil, Records: st.Len, JournalFrames: st.JournalFrames}
	if ve != nil {
		for _, p := range ve.Problems {
			out.Problems = append(out.Problems, problemOut(p))
		}
	}
	return out
}

func (c *cli) printVerify(st outbox.SnapshotStats, ve *outbox.VerifyError) {
	if ve == nil {
		fmt.Fprintf(c.out, "ok: %s: %d record(s) read, %d journal frame(s), no damage\n", c.dir, st.Len, st.JournalFrames)
		return
	}
	fmt.Fprintf(c.out, "FAILED: %s: %d problem(s) in %d record(s) and %d journal frame(s):\n",
		c.dir, len(ve.Problems), st.Len, st.JournalFrames)
	for _, p := range ve.Problems {
		fmt.Fprintf(c.out, "  %s\n", p)
	}
	fmt.Fprintln(c.out, "Nothing was changed.")
}
