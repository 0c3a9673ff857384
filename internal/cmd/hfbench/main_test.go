package main

import (
	"bytes"
	"encoding/json"
	"encoding/xml"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/holdfast-mqtt/holdfast/internal/leakcheck"
	"github.com/holdfast-mqtt/holdfast/internal/mosquitto"
)

// TestMain also serves as the RSS child: runRSS starts os.Executable(),
// which under `go test` is this test binary.
func TestMain(m *testing.M) {
	if len(os.Args) > 2 && os.Args[1] == "-child" {
		os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
	}
	os.Exit(leakcheck.Run(m))
}

func TestFlags(t *testing.T) {
	cfg, err := parseFlags([]string{"-n", "1000", "-goroutines", "1, 4", "-run", "hf-q1"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.n != 1000 || len(cfg.goroutines) != 2 || cfg.goroutines[1] != 4 || !cfg.only.MatchString("hf-q1-group-g4") {
		t.Fatalf("parsed %+v", cfg)
	}
	for _, bad := range [][]string{{"-n", "10"}, {"-goroutines", "0"}, {"-run", "("}, {"-size", "4"}, {"extra"}} {
		if _, err := parseFlags(bad, io.Discard); err == nil {
			t.Errorf("parseFlags(%q) accepted", bad)
		}
	}
}

func TestCasesCoverTheIssue(t *testing.T) {
	cfg, _ := parseFlags(nil, io.Discard)
	names := map[string]caseSpec{}
	for _, c := range throughputCases(cfg) {
		names[c.Name] = c
	}
	for _, want := range []string{
		"paho-mem-q1-g1", "paho-file-q1-g1", "paho-mem-q0-g1", "paho-mem-q1-g16", "paho-file-q1-g16",
		"hf-q1-group-g1", "hf-q1-each-g1", "hf-q1-nosync-g1", "hf-q2-group-g16", "hf-q2-each-g16", "hf-q2-nosync-g16",
		"hf-q1-group-async-g1", "hf-q2-group-async-g1", "hf-adapter-q1-group-g1",
	} {
		if _, ok := names[want]; !ok {
			t.Errorf("no case %s", want)
		}
	}
	if len(names) != 2*(3+6)+3 {
		t.Errorf("%d cases, want 21", len(names))
	}
	if c := names["hf-q1-group-async-g1"]; !c.Async || c.Goroutines != 1 {
		t.Errorf("async case %+v", c)
	}
	if c := names["paho-file-q1-g1"]; c.Messages != cfg.n/5 {
		t.Errorf("paho-file messages %d", c.Messages)
	}
}

// fakeResults is a complete set of figures where T1 misses and the rest pass.
func fakeResults() *Results {
	r := &Results{Env: Env{CPUs: 2, Mosquitto: "2.0.11"}, Params: Params{PayloadBytes: 256, Goroutines: []int{1, 16}}}
	add := func(name, impl, dur string, qos, g int, rate float64) {
		r.Cases = append(r.Cases, CaseResult{Name: name, Impl: impl, Durability: dur, QoS: qos, Goroutines: g,
			Messages: 1000, MsgPerSec: rate, Seconds: 1000 / rate, ClientCPU: 0.5, BrokerCPU: 0.2})
	}
	add("paho-mem-q1-g1", implPahoMem, "", 1, 1, 10000)
	add("paho-file-q1-g1", implPahoFile, "", 1, 1, 1000)
	add("hf-q1-group-g1", implHoldfast, "group", 1, 1, 2500)
	add("paho-mem-q1-g16", implPahoMem, "", 1, 16, 20000)
	add("paho-file-q1-g16", implPahoFile, "", 1, 16, 1000)
	add("hf-q1-group-g16", implHoldfast, "group", 1, 16, 12000)
	r.Drain = &Drain{Messages: 100, MsgPerSec: 9000, Seconds: 1, InOrder: true, Received: 100, SubMsgPerSec: 5000, RefPerSec: 6000, RatioRef: 5.0 / 6}
	r.Reconnect = &Reconnect{Pass: true, Trials: []ReconnectTrial{{IntervalMs: 500, LatencyMs: 300, Pass: true}}}
	r.RSS = &RSS{Messages: 1_000_000, PeakKiB: 50 << 10, Pass: true}
	r.Fsync = &Fsync{MedianMs: 0.5, PerSec: 2000}
	return r
}

func TestEvaluate(t *testing.T) {
	r := fakeResults()
	r.evaluate()
	got := map[string]Target{}
	for _, tg := range r.Targets {
		got[tg.ID] = tg
	}
	if len(got) != 6 {
		t.Fatalf("%d targets", len(got))
	}
	if tg := got["T1"]; !tg.Measured || tg.Pass || tg.Ratio != 0.6 || tg.Hint == "" {
		t.Errorf("T1 = %+v, want a measured miss at 0.60x with a hint", tg)
	}
	if tg := got["T2"]; !tg.Pass || tg.Ratio != 12 {
		t.Errorf("T2 = %+v", tg)
	}
	if tg := got["T3"]; !tg.Pass || tg.Ratio != 2.5 {
		t.Errorf("T3 = %+v", tg)
	}
	if tg := got["T4"]; !tg.Pass || tg.Ratio != 0.9 {
		t.Errorf("T4 = %+v", tg)
	}
	if tg := got["T5"]; !tg.Pass || !got["T6"].Pass {
		t.Errorf("T5 = %+v, T6 = %+v", tg, got["T6"])
	}
	if c := r.find("hf-q1-group-g16"); c.RatioMem != 0.6 || c.RatioFile != 12 {
		t.Errorf("case ratios %+v", c)
	}

	// Out of order is a miss whatever the rate.
	r.Drain.InOrder = false
	r.evaluate()
	if r.Targets[3].Pass {
		t.Error("T4 passes with messages out of order")
	}
	// A smaller backlog than the target's is not a pass.
	r.RSS.Messages = 1000
	r.evaluate()
	if r.Targets[5].Pass {
		t.Error("T6 passes with a backlog below 1,000,000")
	}
}

func TestTableAndChart(t *testing.T) {
	r := fakeResults()
	r.evaluate()
	var out bytes.Buffer
	r.writeTable(&out)
	for _, want := range []string{"hf-q1-group-g16", "0.60x", "12.00x", "MISS", "pass", "T1 miss:"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, out.String())
		}
	}
	svg := r.chart()
	if err := xml.Unmarshal([]byte(svg), new(struct{ XMLName xml.Name })); err != nil {
		t.Fatalf("chart is not well-formed XML: %v", err)
	}
	for _, want := range []string{"<svg", "hf-q1-group-g16", "T1: 0.8x paho-mem", "MISS", "hf drain + subscriber"} {
		if !strings.Contains(svg, want) {
			t.Errorf("chart lacks %q", want)
		}
	}
}

func TestThousands(t *testing.T) {
	for v, want := range map[float64]string{0: "0", 999: "999", 1000: "1,000", 1234567.4: "1,234,567", -4200: "-4,200"} {
		if got := thousands(v); got != want {
			t.Errorf("thousands(%v) = %q, want %q", v, got, want)
		}
	}
}

// TestSmokeRun runs the whole benchmark with tiny counts against a real
// Mosquitto: every case runs, the backlog arrives in order, and the JSON
// and the chart are written.
func TestSmokeRun(t *testing.T) {
	if _, ok := mosquitto.Path(); !ok {
		if v := os.Getenv("HOLDFAST_REQUIRE_MOSQUITTO"); v == "1" || v == "true" {
			t.Fatal("mosquitto not found and HOLDFAST_REQUIRE_MOSQUITTO=1")
		}
		t.Skip("mosquitto not installed")
	}
	if testing.Short() {
		t.Skip("-short")
	}
	dir := t.TempDir()
	jsonPath, svgPath := filepath.Join(dir, "r.json"), filepath.Join(dir, "c.svg")
	var stdout, stderr bytes.Buffer
	code := run([]string{"-n", "200", "-backlog", "500", "-reconnect-trials", "1", "-rss-n", "2000", "-rss-goroutines", "16",
		"-dir", filepath.Join(dir, "work"), "-json", jsonPath, "-svg", svgPath}, &stdout, &stderr)
	if code != 0 {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout.String(), stderr.String())
	}
	var r Results
	b, err := os.ReadFile(jsonPath)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatal(err)
	}
	if len(r.Cases) != 22 { // 21 throughput cases + the drain's reference
		t.Errorf("%d cases in the JSON", len(r.Cases))
	}
	for _, c := range r.Cases {
		if c.MsgPerSec <= 0 {
			t.Errorf("case %s: %v msg/s", c.Name, c.MsgPerSec)
		}
	}
	if r.Drain == nil || !r.Drain.InOrder || r.Drain.Received != 500 {
		t.Errorf("drain: %+v", r.Drain)
	}
	if r.Reconnect == nil || len(r.Reconnect.Trials) != 1 {
		t.Errorf("reconnect: %+v", r.Reconnect)
	}
	if r.RSS == nil || r.RSS.Queued != 2000 || r.RSS.PeakKiB <= 0 {
		t.Errorf("rss: %+v", r.RSS)
	}
	if r.Fsync == nil || r.Fsync.MedianMs <= 0 {
		t.Errorf("fsync: %+v", r.Fsync)
	}
	if len(r.Targets) != 6 {
		t.Errorf("%d targets", len(r.Targets))
	}
	if fi, err := os.Stat(svgPath); err != nil || fi.Size() == 0 {
		t.Errorf("chart: %v", err)
	}
	if !strings.Contains(stdout.String(), "targets (ratios measured in this run)") {
		t.Errorf("no table:\n%s", stdout.String())
	}
}
