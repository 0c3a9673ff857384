package e2e

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/holdfast-mqtt/holdfast/internal/faultproxy"
)

// Report is the summary of one chaos run, logged and written as JSON to
// $HOLDFAST_E2E_REPORT under the test's name.
type Report struct {
	Test     string    `json:"test"`
	Child    string    `json:"child"` // package of the publisher
	Time     time.Time `json:"time"`
	Seed     uint64    `json:"seed"`
	Chaos    string    `json:"chaos_phase"` // planned length
	Rate     int       `json:"rate_per_lane"`
	Size     int       `json:"size"`
	Elapsed  string    `json:"elapsed"`  // the whole test
	Complete bool      `json:"complete"` // every accepted number arrived before the wait ended

	// Faults executed (kills are per lane, in Lanes).
	Cuts       int `json:"cuts"`
	Outages    int `json:"outages"`
	Blackholes int `json:"blackholes"`
	Restarts   int `json:"broker_restarts"`
	Kills      int `json:"kills"` // all lanes

	Proxy      faultproxy.Stats `json:"proxy"`
	Subscriber SubscriberStats  `json:"subscriber"`
	Lanes      []LaneResult     `json:"lanes"`
	Runs       map[string][]Run `json:"runs"`
	Events     []Event          `json:"events"` // as executed, At measured
	Problems   []string         `json:"problems,omitempty"`
	LogDir     string           `json:"log_dir"`
}

// summary is a few lines for t.Logf.
func (r *Report) summary() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s with %s: seed %d, chaos %s, %s in all\n", r.Test, r.Child, r.Seed, r.Chaos, r.Elapsed)
	fmt.Fprintf(&b, "faults: %d cuts, %d outages, %d black holes, %d broker restarts, %d publisher SIGKILLs; proxy reset %d connections\n",
		r.Cuts, r.Outages, r.Blackholes, r.Restarts, r.Kills, r.Proxy.Cuts)
	fmt.Fprintf(&b, "%-4s %-3s %5s %6s %9s %9s %9s %6s %9s %10s %9s %10s %10s\n",
		"lane", "qos", "runs", "kills", "accepted", "received", "delivered", "lost", "reordered", "duplicates", "(allowed)", "unexpected", "unaccepted")
	for _, l := range r.Lanes {
		fmt.Fprintf(&b, "%-4s %-3d %5d %6d %9d %9d %9d %6d %9d %10d %9d %10d %10d\n",
			l.Lane, l.QoS, l.Runs, l.Kills, l.Accepted, l.Received, l.Delivered, l.Lost, l.Reordered,
			l.Duplicates, l.AllowedDuplicates, l.UnexpectedDuplicates, l.Unaccepted)
	}
	for _, l := range r.Lanes {
		if l.LateResends > 0 {
			fmt.Fprintf(&b, "lane %s: the broker's log shows %d QoS 2 resends after a completed exchange on the same connection\n", l.Lane, l.LateResends)
		}
		if l.LostBeforeExtraRun != nil {
			fmt.Fprintf(&b, "lane %s: %d lost once the final run had drained; %d still lost after an extra run on the same store\n", l.Lane, *l.LostBeforeExtraRun, l.Lost)
		}
	}
	fmt.Fprintf(&b, "subscriber: %d QoS 2 redeliveries skipped, %d connections lost", r.Subscriber.SkippedRedeliveries, r.Subscriber.ConnectionsLost)
	return b.String()
}

// reportMu serialises writes to the report file.
var reportMu sync.Mutex

// writeReport stores r in the JSON object in $HOLDFAST_E2E_REPORT, under
// its test name, keeping the entries of other tests.
func writeReport(t testing.TB, r *Report) {
	t.Helper()
	path := os.Getenv(EnvReport)
	if path == "" {
		return
	}
	reportMu.Lock()
	defer reportMu.Unlock()
	all := map[string]json.RawMessage{}
	if data, err := os.ReadFile(path); err == nil {
		if err := json.Unmarshal(data, &all); err != nil {
			t.Logf("e2e: %s is not a report object (%v): overwriting it", path, err)
			all = map[string]json.RawMessage{}
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("e2e: read report: %v", err)
		return
	}
	entry, err := json.Marshal(r)
	if err != nil {
		t.Errorf("e2e: encode report: %v", err)
		return
	}
	all[r.Test] = entry
	data, err := json.MarshalIndent(all, "", "  ")
	if err != nil {
		t.Errorf("e2e: encode report: %v", err)
		return
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Errorf("e2e: %v", err)
		return
	}
	if err := os.WriteFile(path, append(data, '\n'), 0o644); err != nil {
		t.Errorf("e2e: write report: %v", err)
		return
	}
	t.Logf("report written to %s", path)
}

// writeArrivals writes a lane's arrivals and runs to files in dir, for a
// post-mortem.
func writeArrivals(dir, lane string, runs []Run, arrivals []Arrival, t0 time.Time) error {
	var b strings.Builder
	b.WriteString("# seq qos dup packet-id at(s since chaos start)\n")
	for _, a := range arrivals {
		fmt.Fprintf(&b, "%d %d %t %d %.3f\n", a.Seq, a.QoS, a.Dup, a.ID, a.At.Sub(t0).Seconds())
	}
	if err := os.WriteFile(filepath.Join(dir, lane+"-arrivals.txt"), []byte(b.String()), 0o644); err != nil {
		return err
	}
	b.Reset()
	for _, r := range runs {
		fmt.Fprintf(&b, "run %d start %d count %d printed %d end %s (%s) began %.3fs ended %.3fs\n",
			r.Index, r.Start, r.Count, len(r.Accepted), r.End, r.ExitErr, r.Began.Sub(t0).Seconds(), r.Ended.Sub(t0).Seconds())
	}
	return os.WriteFile(filepath.Join(dir, lane+"-runs.txt"), []byte(b.String()), 0o644)
}
