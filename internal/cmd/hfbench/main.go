package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"regexp"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/holdfast-mqtt/holdfast/internal/mosquitto"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// config holds the parsed flags.
type config struct {
	n, size         int
	goroutines      []int
	runs            int
	only            *regexp.Regexp
	backlog         int
	reconnectTrials int
	rssN            int
	dir             string
	jsonPath        string
	svgPath         string
	cpuProfile      string
	memProfile      string
	verbose         bool
	child           string // internal: "rss" runs the RSS child
	childDir        string
	childBroker     string
	childN          int
	childGoroutines int
	childMemProfile string
	rssDrain        bool
	rssMemLimit     string
	render          string
	maxPayload      int
	cpuProfileDir   string
	caseSeconds     float64
}

func parseFlags(args []string, stderr io.Writer) (*config, error) {
	c := &config{}
	fs := flag.NewFlagSet("hfbench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.IntVar(&c.n, "n", 50_000, "messages per fast case (slow cases use a fraction, see the package doc)")
	fs.IntVar(&c.size, "size", 256, "payload bytes")
	gs := fs.String("goroutines", "1,16", "publishing goroutines per case, comma-separated")
	fs.Float64Var(&c.caseSeconds, "case-seconds", 2.5, "size each case to last about this long at the warm-up's rate, within [500, its count] (0: fixed counts)")
	fs.IntVar(&c.runs, "runs", 1, "repeat each throughput case this many times and report the median")
	only := fs.String("run", "", "only run cases whose name matches this regular expression (also drain, reconnect, rss, fsync)")
	fs.IntVar(&c.backlog, "backlog", 100_000, "messages in the drain case's backlog")
	fs.IntVar(&c.reconnectTrials, "reconnect-trials", 5, "trials of the reconnect-to-first-delivery case")
	fs.IntVar(&c.rssN, "rss-n", 1_000_000, "messages in the RSS child's backlog")
	fs.StringVar(&c.dir, "dir", "", "directory for outboxes and stores (default: a new temp directory, removed at the end)")
	fs.StringVar(&c.jsonPath, "json", "docs/bench/results.json", "write results as JSON here (empty: do not)")
	fs.StringVar(&c.svgPath, "svg", "docs/bench/chart.svg", "write the chart here (empty: do not)")
	fs.StringVar(&c.cpuProfile, "cpuprofile", "", "write a CPU profile of the run here")
	fs.StringVar(&c.cpuProfileDir, "cpuprofile-dir", "", "write a CPU profile of each measured interval (and nothing else) to DIR/CASE.pprof")
	fs.StringVar(&c.memProfile, "memprofile", "", "write a heap profile at the end of the run here")
	fs.BoolVar(&c.verbose, "v", false, "progress on stderr")
	fs.IntVar(&c.maxPayload, "max-payload", 0, "Config.MaxPayload of every Holdfast client (0: the client's default)")
	fs.StringVar(&c.render, "render", "", "measure nothing: print the table of this results JSON and write -svg from it")
	fs.StringVar(&c.child, "child", "", "internal: run as the RSS child")
	fs.StringVar(&c.childDir, "child-dir", "", "internal: RSS child's outbox")
	fs.StringVar(&c.childBroker, "child-broker", "", "internal: RSS child's (unreachable) broker")
	fs.IntVar(&c.childN, "child-n", 0, "internal: RSS child's message count")
	fs.IntVar(&c.childGoroutines, "rss-goroutines", 128, "publishing goroutines of the RSS child")
	fs.BoolVar(&c.rssDrain, "rss-drain", false, "the RSS child also drains its backlog to the broker (about a minute for 1,000,000)")
	fs.StringVar(&c.rssMemLimit, "rss-gomemlimit", "", "run the RSS child with this GOMEMLIMIT (for example 40MiB; default: none)")
	fs.StringVar(&c.childMemProfile, "rss-memprofile", "", "the RSS child writes heap profiles PREFIX-build.pprof and PREFIX-reopen.pprof")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	for _, s := range strings.Split(*gs, ",") {
		g, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || g < 1 {
			return nil, fmt.Errorf("-goroutines: %q is not a positive number", s)
		}
		c.goroutines = append(c.goroutines, g)
	}
	var err error
	if c.only, err = regexp.Compile(*only); err != nil {
		return nil, fmt.Errorf("-run: %w", err)
	}
	switch {
	case c.n < 100:
		return nil, errors.New("-n must be at least 100")
	case c.size < 8:
		return nil, errors.New("-size must be at least 8 (the sequence number)")
	case c.runs < 1 || c.backlog < 1 || c.reconnectTrials < 0 || c.rssN < 0:
		return nil, errors.New("-runs and -backlog must be positive, -reconnect-trials and -rss-n not negative")
	}
	return c, nil
}

func run(args []string, stdout, stderr io.Writer) int {
	cfg, err := parseFlags(args, stderr)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		fmt.Fprintln(stderr, "hfbench:", err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if cfg.render != "" {
		if err := render(cfg, stdout); err != nil {
			fmt.Fprintln(stderr, "hfbench:", err)
			return 1
		}
		return 0
	}
	if cfg.child == "rss" {
		if err := rssChild(ctx, cfg, stdout); err != nil {
			fmt.Fprintln(stderr, "hfbench rss child:", err)
			return 1
		}
		return 0
	}
	if err := bench(ctx, cfg, stdout, stderr); err != nil {
		fmt.Fprintln(stderr, "hfbench:", err)
		return 1
	}
	return 0
}

// env is what every case shares.
type env struct {
	cfg     *config
	broker  *mosquitto.Broker
	dir     string // work directory
	seq     int    // client identifier counter
	logf    func(format string, args ...any)
	payload []byte // template payload, -size bytes
}

// caseDir returns a fresh directory for one case's store.
func (e *env) caseDir(name string) string {
	e.seq++
	return filepath.Join(e.dir, fmt.Sprintf("%03d-%s", e.seq, name))
}

// clientID returns a fresh client identifier (a new broker session).
func (e *env) clientID(name string) string {
	e.seq++
	id := fmt.Sprintf("hfb%d-%s", e.seq, name)
	if len(id) > 23 {
		id = id[:23]
	}
	return id
}

func bench(ctx context.Context, cfg *config, stdout, stderr io.Writer) error {
	started := time.Now()
	logf := func(string, ...any) {}
	if cfg.verbose {
		logf = func(format string, args ...any) {
			fmt.Fprintf(stderr, "%s hfbench: %s\n", time.Now().Format("15:04:05.000"), fmt.Sprintf(format, args...))
		}
	}
	dir := cfg.dir
	if dir == "" {
		d, err := os.MkdirTemp("", "hfbench-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(d)
		dir = d
	} else if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}

	// Persistence on (saved only when it stops): the drain case stops the
	// broker, and its subscriber's session must survive.
	broker, err := mosquitto.Start(mosquitto.Options{Dir: filepath.Join(dir, "mosquitto"), Quiet: true})
	if err != nil {
		return err
	}
	defer broker.Close()
	e := &env{cfg: cfg, broker: broker, dir: dir, logf: logf, payload: make([]byte, cfg.size)}
	for i := range e.payload {
		e.payload[i] = byte('a' + i%26)
	}
	res := &Results{Started: started, Env: environment(broker, dir), Params: Params{
		N: cfg.n, PayloadBytes: cfg.size, Goroutines: cfg.goroutines, Runs: cfg.runs,
		Backlog: cfg.backlog, ReconnectTrials: cfg.reconnectTrials, RSSMessages: cfg.rssN, MaxPayload: cfg.maxPayload,
		CaseSeconds: cfg.caseSeconds,
	}}
	logf("mosquitto %s on %s, work dir %s, load average %s", res.Env.Mosquitto, broker.Addr(), dir, res.Env.LoadStart)
	mach0, _ := machineCPU()
	self0, brk0 := selfCPU(), procCPU(broker.Pid())

	if cfg.cpuProfileDir != "" {
		if err := os.MkdirAll(cfg.cpuProfileDir, 0o755); err != nil {
			return err
		}
	}
	if cfg.cpuProfile != "" {
		f, err := os.Create(cfg.cpuProfile)
		if err != nil {
			return err
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer func() {
			pprof.StopCPUProfile()
			_ = f.Close()
		}()
	}

	if cfg.only.MatchString("fsync") {
		fs, err := measureFsync(dir, cfg.size, 500)
		if err != nil {
			return err
		}
		res.Fsync = &fs
		logf("fsync: median %.3f ms, p99 %.3f ms", fs.MedianMs, fs.P99Ms)
	}
	for _, spec := range throughputCases(cfg) {
		if !cfg.only.MatchString(spec.Name) {
			continue
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		r, err := runCase(ctx, e, spec)
		if err != nil {
			return fmt.Errorf("%s: %w", spec.Name, err)
		}
		logf("%-22s %8d msgs %10.0f msg/s  cpu client %.2f broker %.2f s  %.1f allocs/msg", r.Name, r.Messages, r.MsgPerSec, r.ClientCPU, r.BrokerCPU, r.AllocsPerMsg)
		res.Cases = append(res.Cases, r)
	}
	if cfg.only.MatchString("drain") {
		d, err := runDrain(ctx, e)
		if err != nil {
			return fmt.Errorf("drain: %w", err)
		}
		res.Drain = d
		for _, r := range d.Reference {
			res.Cases = append(res.Cases, r)
		}
	}
	if cfg.only.MatchString("reconnect") && cfg.reconnectTrials > 0 {
		r, err := runReconnect(ctx, e)
		if err != nil {
			return fmt.Errorf("reconnect: %w", err)
		}
		res.Reconnect = r
	}
	if cfg.only.MatchString("rss") && cfg.rssN > 0 {
		r, err := runRSS(ctx, e)
		if err != nil {
			return fmt.Errorf("rss: %w", err)
		}
		res.RSS = r
	}
	if cfg.memProfile != "" {
		f, err := os.Create(cfg.memProfile)
		if err != nil {
			return err
		}
		runtime.GC()
		if err := pprof.WriteHeapProfile(f); err != nil {
			return err
		}
		_ = f.Close()
	}

	res.Seconds = time.Since(started).Seconds()
	res.Env.LoadEnd = loadAvg()
	if mach, _ := machineCPU(); res.Seconds > 0 {
		res.Env.OtherCores = max(0, (mach-mach0)-(selfCPU()-self0)-childCPU()-(procCPU(broker.Pid())-brk0)) / res.Seconds
	}
	res.evaluate()
	res.writeTable(stdout)
	if cfg.jsonPath != "" {
		if err := res.writeJSON(cfg.jsonPath); err != nil {
			return err
		}
	}
	if cfg.svgPath != "" {
		if err := writeFileAtomic(cfg.svgPath, []byte(res.chart())); err != nil {
			return err
		}
	}
	return nil
}

// render prints the table of an earlier run's JSON and writes its chart.
func render(cfg *config, stdout io.Writer) error {
	b, err := os.ReadFile(cfg.render)
	if err != nil {
		return err
	}
	var res Results
	if err := json.Unmarshal(b, &res); err != nil {
		return fmt.Errorf("%s: %w", cfg.render, err)
	}
	res.evaluate()
	res.writeTable(stdout)
	if cfg.svgPath != "" {
		return writeFileAtomic(cfg.svgPath, []byte(res.chart()))
	}
	return nil
}

// writeFileAtomic writes data to path through a temporary file.
func writeFileAtomic(path string, data []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
