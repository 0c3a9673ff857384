package main

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"
)

// Results is everything one run measured; it is written as JSON.
type Results struct {
	Started   time.Time    `json:"started"`
	Seconds   float64      `json:"seconds"`
	Env       Env          `json:"env"`
	Params    Params       `json:"params"`
	Fsync     *Fsync       `json:"fsync,omitempty"`
	Cases     []CaseResult `json:"cases"`
	Drain     *Drain       `json:"drain,omitempty"`
	Reconnect *Reconnect   `json:"reconnect,omitempty"`
	RSS       *RSS         `json:"rss,omitempty"`
	Targets   []Target     `json:"targets"`
}

// Params are the run's parameters.
type Params struct {
	N               int   `json:"n"`
	PayloadBytes    int   `json:"payload_bytes"`
	Goroutines      []int `json:"goroutines"`
	Runs            int   `json:"runs"`
	Backlog         int   `json:"backlog"`
	ReconnectTrials int   `json:"reconnect_trials"`
	RSSMessages     int   `json:"rss_messages"`
	// MaxPayload is Config.MaxPayload of the Holdfast clients (0: default).
	MaxPayload int `json:"max_payload,omitempty"`
	// CaseSeconds is -case-seconds (0: fixed message counts).
	CaseSeconds float64 `json:"case_seconds"`
}

// Target is one of the targets, evaluated.
type Target struct {
	ID     string  `json:"id"`
	What   string  `json:"what"`
	Figure string  `json:"figure"`
	Ratio  float64 `json:"ratio,omitempty"`
	Want   string  `json:"want"`
	Pass   bool    `json:"pass"`
	// Measured is false when the run did not include what the target needs.
	Measured bool `json:"measured"`
	// Hint is the run's own evidence about a miss (CPU or fsync bound).
	Hint string `json:"hint,omitempty"`
}

func (r *Results) find(name string) *CaseResult {
	for i := range r.Cases {
		if r.Cases[i].Name == name {
			return &r.Cases[i]
		}
	}
	return nil
}

// evaluate fills the ratios and the targets.
func (r *Results) evaluate() {
	for i := range r.Cases {
		c := &r.Cases[i]
		if mem := r.find(fmt.Sprintf("paho-mem-q1-g%d", c.Goroutines)); mem != nil && mem.MsgPerSec > 0 {
			c.RatioMem = c.MsgPerSec / mem.MsgPerSec
		}
		if file := r.find(fmt.Sprintf("paho-file-q1-g%d", c.Goroutines)); file != nil && file.MsgPerSec > 0 {
			c.RatioFile = c.MsgPerSec / file.MsgPerSec
		}
	}
	r.Targets = nil
	ratio := func(id, what, caseName, base string, want float64) {
		t := Target{ID: id, What: what, Want: fmt.Sprintf(">= %gx %s", want, base)}
		c, b := r.find(caseName), r.find(base)
		if c != nil && b != nil && b.MsgPerSec > 0 {
			t.Measured = true
			t.Ratio = c.MsgPerSec / b.MsgPerSec
			t.Figure = fmt.Sprintf("%s msg/s vs %s", thousands(c.MsgPerSec), thousands(b.MsgPerSec))
			t.Pass = t.Ratio >= want
			if !t.Pass {
				t.Hint = r.hint(c)
			}
		}
		r.Targets = append(r.Targets, t)
	}
	ratio("T1", "Holdfast QoS 1, default durability, 16 publishers vs bare paho in-memory", "hf-q1-group-g16", "paho-mem-q1-g16", 0.8)
	ratio("T2", "Holdfast QoS 1, default durability, 16 publishers vs bare paho FileStore", "hf-q1-group-g16", "paho-file-q1-g16", 10)
	ratio("T3", "Holdfast QoS 1, default durability, 1 publisher vs bare paho FileStore", "hf-q1-group-g1", "paho-file-q1-g1", 2)

	t := Target{ID: "T4", What: "Drain of the backlog after the broker returns, in order, vs bare paho live QoS 1", Want: ">= 0.8x paho-mem-q1-g1, in order"}
	if d := r.Drain; d != nil {
		t.Measured = true
		base := r.find("paho-mem-q1-g1")
		t.Figure = fmt.Sprintf("%s msg/s (%d msgs)", thousands(d.MsgPerSec), d.Messages)
		if base != nil && base.MsgPerSec > 0 {
			d.RatioMem = d.MsgPerSec / base.MsgPerSec
			t.Ratio = d.RatioMem
			t.Figure += fmt.Sprintf(" vs %s", thousands(base.MsgPerSec))
		}
		t.Figure += fmt.Sprintf("; with a subscriber %s vs paho %s (%.2fx), in order: %v", thousands(d.SubMsgPerSec), thousands(d.RefPerSec), d.RatioRef, d.InOrder)
		t.Pass = d.InOrder && t.Ratio >= 0.8
		if !t.Pass && d.Seconds > 0 {
			t.Hint = fmt.Sprintf("client %.2f + broker %.2f (+ other processes %.2f) cores busy during the drain",
				d.ClientCPU/d.Seconds, d.BrokerCPU/d.Seconds, d.OtherCPU/d.Seconds)
			if !d.InOrder {
				t.Hint += fmt.Sprintf("; subscriber: %d received, %d lost, %d reordered, %d duplicates", d.Received, d.Lost, d.Reordered, d.Duplicates)
			}
		}
	}
	r.Targets = append(r.Targets, t)

	t = Target{ID: "T5", What: "Reconnect to first delivery after the broker returns", Want: "<= backoff interval + 100ms"}
	if rc := r.Reconnect; rc != nil && len(rc.Trials) > 0 {
		t.Measured = true
		t.Pass = rc.Pass
		t.Figure = fmt.Sprintf("worst latency - interval %+.0fms, median overhead %.1fms (%d trials)", rc.WorstOverMs, rc.MedianOverheadMs, len(rc.Trials))
	}
	r.Targets = append(r.Targets, t)

	t = Target{ID: "T6", What: "Peak RSS of the whole process, 1,000,000-message backlog, device profile", Want: "< 64 MiB"}
	if s := r.RSS; s != nil {
		t.Measured = true
		t.Pass = s.Pass
		t.Figure = fmt.Sprintf("%.1f MiB peak (%d msgs; build %.1f, reopen %.1f, drain %.1f MiB)", mib(s.PeakKiB), s.Messages, mib(s.HWMBuildKiB), mib(s.HWMReopenKiB), mib(s.HWMDrainKiB))
		if s.Messages < 1_000_000 {
			t.Figure += " [backlog below 1,000,000: not the target's size]"
			t.Pass = false
		}
	}
	r.Targets = append(r.Targets, t)
}

// hint explains a throughput figure with the run's own evidence.
func (r *Results) hint(c *CaseResult) string {
	if c.Seconds <= 0 {
		return ""
	}
	cl, br, ot := c.ClientCPU/c.Seconds, c.BrokerCPU/c.Seconds, c.OtherCPU/c.Seconds
	s := fmt.Sprintf("client %.2f + broker %.2f (+ other processes %.2f) cores of %d busy; %.1f allocs/msg", cl, br, ot, r.Env.CPUs, c.AllocsPerMsg)
	if cl+br+ot >= 0.85*float64(r.Env.CPUs) {
		s = "CPU-bound: " + s
	}
	if r.Fsync != nil && r.Fsync.PerSec > 0 && c.Durability != "" && c.Durability != "nosync" {
		s += fmt.Sprintf("; %.1f msgs per fsync-time (one fsync %.3fms)", c.MsgPerSec/r.Fsync.PerSec, r.Fsync.MedianMs)
	}
	return s
}

func mib(kib int64) float64 { return float64(kib) / 1024 }

// thousands formats v rounded, with commas.
func thousands(v float64) string {
	s := fmt.Sprintf("%.0f", v)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	for i, ch := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(ch)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}

func ratioCell(v float64) string {
	if v == 0 {
		return "-"
	}
	return fmt.Sprintf("%.2fx", v)
}

// writeTable prints the cases and the targets.
func (r *Results) writeTable(w io.Writer) {
	fmt.Fprintf(w, "hfbench: %s/%s, %d CPUs (%s), %s, Mosquitto %s, work dir on %s; %d-byte payloads; commit %s; %s, %.0fs\n",
		r.Env.GOOS, r.Env.GOARCH, r.Env.CPUs, r.Env.CPUModel, r.Env.Go, r.Env.Mosquitto, r.Env.Filesystem, r.Params.PayloadBytes,
		r.Env.Commit, r.Started.UTC().Format(time.RFC3339), r.Seconds)
	fmt.Fprintf(w, "machine load: loadavg %s at the start, %s at the end; other processes kept %.2f cores busy on average (stolen time included)\n",
		r.Env.LoadStart, r.Env.LoadEnd, r.Env.OtherCores)
	if r.Fsync != nil {
		fmt.Fprintf(w, "one fsync (256-byte append): median %.3f ms, p99 %.3f ms (%s/s)\n", r.Fsync.MedianMs, r.Fsync.P99Ms, thousands(r.Fsync.PerSec))
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "case\tmsgs\tmsg/s\tx paho-mem\tx paho-file\tpublish s\ttotal s\tclient cores\tbroker cores\tother cores\tallocs/msg\t")
	for _, c := range r.Cases {
		cl, br, ot := 0.0, 0.0, 0.0
		if c.Seconds > 0 {
			cl, br, ot = c.ClientCPU/c.Seconds, c.BrokerCPU/c.Seconds, c.OtherCPU/c.Seconds
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%.2f\t%.2f\t%.2f\t%.2f\t%.2f\t%.1f\t\n",
			c.Name, c.Messages, thousands(c.MsgPerSec), ratioCell(c.RatioMem), ratioCell(c.RatioFile),
			c.PublishSeconds, c.Seconds, cl, br, ot, c.AllocsPerMsg)
	}
	_ = tw.Flush()
	if d := r.Drain; d != nil {
		fmt.Fprintf(w, "\ndrain: %d-message backlog built in %.2fs (%s msg/s, 16 goroutines, broker down); drained in %.2fs after the connection came up: %s msg/s (%.2fs from the broker's return); again with a subscriber: %s msg/s, %d received, %d lost, %d reordered, %d duplicates\n",
			d.Messages, d.BuildSeconds, thousands(d.BuildPerSec), d.Seconds, thousands(d.MsgPerSec), d.TotalSeconds, thousands(d.SubMsgPerSec), d.Received, d.Lost, d.Reordered, d.Duplicates)
	}
	if rc := r.Reconnect; rc != nil {
		fmt.Fprintln(w, "\nreconnect to first delivery (default backoff, StableAfter 300ms):")
		tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "trial\tinterval ms\tbroker back at ms\tlatency ms\tlatency - interval ms\toverhead ms\tresult\t")
		for i, t := range rc.Trials {
			fmt.Fprintf(tw, "%d\t%.0f\t%.0f\t%.1f\t%+.1f\t%.1f\t%s\t\n", i+1, t.IntervalMs, t.ReturnAtMs, t.LatencyMs, t.LatencyMs-t.IntervalMs, t.OverheadMs, passMiss(t.Pass))
		}
		_ = tw.Flush()
	}
	if s := r.RSS; s != nil {
		fmt.Fprintf(w, "\nrss: %d messages, %s profile, %s durability, %d goroutines: built in %.1fs (%s msg/s), peak %.1f MiB; reopened in %.2fs (%d queued), peak %.1f MiB",
			s.Messages, s.Profile, s.Durability, s.Goroutines, s.BuildSeconds, thousands(s.BuildPerSec), mib(s.HWMBuildKiB), s.ReopenSeconds, s.Queued, mib(s.HWMReopenKiB))
		if s.DrainSeconds > 0 {
			fmt.Fprintf(w, "; drained in %.1fs (%s msg/s), peak %.1f MiB", s.DrainSeconds, thousands(s.DrainPerSec), mib(s.HWMDrainKiB))
		}
		fmt.Fprintf(w, "; after building: RssAnon %.1f MiB, RssFile %.1f MiB (Badger's mapped files), Go heap in use %.1f MiB of %.1f MiB obtained; after reopening: RssAnon %.1f, RssFile %.1f MiB; outbox on disk %.1f MiB",
			mib(s.AnonBuildKiB), mib(s.FileBuildKiB), mib(s.GoHeapInuseKiB), mib(s.GoHeapSysKiB), mib(s.AnonReopenKiB), mib(s.FileReopenKiB), mib(s.DiskKiB))
		fmt.Fprintf(w, "; at the sampled peak: RssAnon %.1f + RssFile %.1f MiB (highest seen: %.1f and %.1f)",
			mib(s.PeakAnonKiB), mib(s.PeakFileKiB), mib(s.MaxAnonKiB), mib(s.MaxFileKiB))
		if s.GoMemLimit != "" {
			fmt.Fprintf(w, "; GOMEMLIMIT=%s", s.GoMemLimit)
		}
		fmt.Fprintln(w)
	}
	fmt.Fprintln(w, "\ntargets (ratios measured in this run):")
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "id\ttarget\tfigure\tratio\twant\tresult")
	for _, t := range r.Targets {
		res := "not measured"
		if t.Measured {
			res = passMiss(t.Pass)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", t.ID, t.What, t.Figure, ratioCell(t.Ratio), t.Want, res)
	}
	_ = tw.Flush()
	for _, t := range r.Targets {
		if t.Measured && !t.Pass && t.Hint != "" {
			fmt.Fprintf(w, "%s miss: %s\n", t.ID, t.Hint)
		}
	}
}

func passMiss(ok bool) string {
	if ok {
		return "pass"
	}
	return "MISS"
}

func (r *Results) writeJSON(path string) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	return writeFileAtomic(path, append(b, '\n'))
}
