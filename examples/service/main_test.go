package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/holdfast-mqtt/holdfast/examples/internal/embedbroker"
	"github.com/holdfast-mqtt/holdfast/internal/leakcheck"
	"github.com/holdfast-mqtt/holdfast/internal/testsub"
)

// envChild makes the test binary run the program's main instead of the
// tests: TestStopsOnSIGTERM runs it as a child process.
const envChild = "HOLDFAST_SERVICE_TEST_MAIN"

func TestMain(m *testing.M) {
	if os.Getenv(envChild) == "1" {
		main()
		return
	}
	os.Exit(leakcheck.Run(m))
}

// bound is how long a test waits for something that takes well under a
// second on an idle machine.
const bound = 30 * time.Second

// instance is one service running in this process.
type instance struct {
	out    *lines
	cancel context.CancelFunc
	code   chan int
}

func start(t *testing.T, args ...string) *instance {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	in := &instance{out: newLines(), cancel: cancel, code: make(chan int, 1)}
	var stderr lines
	go func() { in.code <- run(ctx, args, in.out, &stderr) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-in.code:
		case <-time.After(bound):
			t.Errorf("instance %v still running after its context ended", args)
		}
	})
	return in
}

// stop cancels the instance's context, as SIGTERM does, and returns its exit
// status.
func (in *instance) stop(t *testing.T) int {
	t.Helper()
	in.cancel()
	select {
	case code := <-in.code:
		in.code <- code // for the cleanup
		return code
	case <-time.After(bound):
		t.Fatalf("still running %v after the stop", bound)
		return -1
	}
}

// TestSharedGroupDeadLetterAndMetrics runs two instances in one group
// against the embedded broker: the orders are shared between them, each is
// handled once, its result published, the poison ones dead-lettered; both
// metrics endpoints serve the named series in the Prometheus text format;
// and both stop cleanly.
func TestSharedGroupDeadLetterAndMetrics(t *testing.T) {
	b, err := embedbroker.Start("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	const orders, poisonEvery = 30, 7 // poison: 7, 14, 21, 28
	sub, err := testsub.Start(testsub.Options{Broker: b.URL(), ClientID: "service-test-sub", QoS: 1,
		Topics: []string{"test/results/#", "test/dead/#"}})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()

	common := []string{"-broker", b.URL(), "-group", "g", "-filter", "test/orders/+", "-results", "test/results",
		"-dead-letter", "test/dead", "-listen", "127.0.0.1:0", "-retries", "1", "-poison-every", fmt.Sprint(poisonEvery)}
	second := start(t, append(common, "-client-id", "svc-b", "-demo", "0")...)
	second.out.waitFor(t, "service: subscribed to $share/g/test/orders/+ as svc-b")
	first := start(t, append(common, "-client-id", "svc-a", "-demo", fmt.Sprint(orders))...)
	first.out.waitFor(t, "service: subscribed to $share/g/test/orders/+ as svc-a")

	// Every order's result or dead letter arrives, once.
	deadline := time.Now().Add(bound)
	for {
		missing := 0
		for n := 1; n <= orders; n++ {
			topic := fmt.Sprintf("test/results/%d", n)
			if n%poisonEvery == 0 {
				topic = fmt.Sprintf("test/dead/%d", n)
			}
			switch c := sub.Count(topic); {
			case c == 0:
				missing++
			case c > 1:
				t.Errorf("%s arrived %d times", topic, c)
			}
		}
		if missing == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d orders without a result or dead letter after %v\nsvc-a:\n%s\nsvc-b:\n%s", missing, bound, first.out, second.out)
		}
		select {
		case <-sub.Changed():
		case <-time.After(100 * time.Millisecond):
		}
	}
	for n := poisonEvery; n <= orders; n += poisonEvery {
		want := fmt.Sprintf("poison %d (cannot process a poison order)", n)
		if a := sub.Arrivals(fmt.Sprintf("test/dead/%d", n)); string(a[0].Payload) != want {
			t.Errorf("dead letter %q, want %q", a[0].Payload, want)
		}
	}

	// The handlers print after their publish returned (and was measured):
	// wait for every line, then for the counters, which move when a
	// handler's work has ended.
	lineDeadline := time.Now().Add(bound)
	for first.out.count("handled ")+second.out.count("handled ") < orders-orders/poisonEvery ||
		first.out.count("dead-lettered ")+second.out.count("dead-lettered ") < orders/poisonEvery {
		if time.Now().After(lineDeadline) {
			t.Fatalf("not every order reported within %v\nsvc-a:\n%s\nsvc-b:\n%s", bound, first.out, second.out)
		}
		time.Sleep(10 * time.Millisecond)
	}
	var fams [2]map[string]*dto.MetricFamily
	for scrapeDeadline := time.Now().Add(bound); ; {
		fams[0], fams[1] = scrape(t, first.out.metricsURL(t)), scrape(t, second.out.metricsURL(t))
		received := value(fams[0], mReceived) + value(fams[1], mReceived)
		deadLettered := value(fams[0], mDeadLettered) + value(fams[1], mDeadLettered)
		if received >= orders && deadLettered == orders/poisonEvery {
			break
		}
		if time.Now().After(scrapeDeadline) {
			t.Fatalf("received %v (want at least %d), dead-lettered %v (want %d)", received, orders, deadLettered, orders/poisonEvery)
		}
		time.Sleep(20 * time.Millisecond)
	}

	// The group shared the work, and each instance's metrics say what it did.
	for i, in := range []*instance{first, second} {
		handled, dead := in.out.count("handled "), in.out.count("dead-lettered ")
		t.Logf("instance %d: %d handled, %d dead-lettered, commit latency: %d samples, %.6fs in all",
			i+1, handled, dead, fams[i][mCommit].Metric[0].GetHistogram().GetSampleCount(), fams[i][mCommit].Metric[0].GetHistogram().GetSampleSum())
		if handled == 0 {
			t.Errorf("an instance handled no order: the subscription is not shared\n%s", in.out)
		}
		f := fams[i]
		for _, name := range []string{mOutboxMessages, mOutboxBytes, mOutboxOldest, mInflight, mAcknowledged, mDropped,
			mExpired, mReconnects, mState, mReceived, mRefusals, mDeadLettered, mCommit} {
			if f[name] == nil || len(f[name].Metric) == 0 {
				t.Errorf("no series %s", name)
			}
		}
		if t.Failed() {
			t.FailNow()
		}
		if v := stateValue(f, "Connected"); v != 1 {
			t.Errorf(`%s{state="Connected"} = %v, want 1`, mState, v)
		}
		// Every result and dead letter went through publish, and so through
		// the histogram.
		if h := f[mCommit].Metric[0].GetHistogram(); h.GetSampleCount() != uint64(handled+dead) {
			t.Errorf("%s has %d samples, want %d handled + %d dead-lettered", mCommit, h.GetSampleCount(), handled, dead)
		}
		if v := value(f, mDeadLettered); v != float64(dead) {
			t.Errorf("%s = %v, and %d dead-lettered lines", mDeadLettered, v, dead)
		}
		if v := value(f, mRefusals); v != float64(2*dead) { // -retries 1: two refusals each
			t.Errorf("%s = %v, want %d", mRefusals, v, 2*dead)
		}
		if v := value(f, mDropped) + value(f, mExpired); v != 0 {
			t.Errorf("%v results dropped or expired", v)
		}
	}

	for _, in := range []*instance{first, second} {
		if code := in.stop(t); code != 0 {
			t.Errorf("exit %d\n%s", code, in.out)
		}
		in.out.waitFor(t, "service: stopped: received ")
	}
}

// TestStopsOnSIGTERM runs the program as a child process, lets it handle its
// demo orders, and checks that SIGTERM stops it gracefully with status 0.
func TestStopsOnSIGTERM(t *testing.T) {
	b, err := embedbroker.Start("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, "-broker", b.URL(), "-client-id", "svc-term", "-listen", "127.0.0.1:0", "-demo", "5", "-poison-every", "0")
	cmd.Env = append(os.Environ(), envChild+"=1")
	out := newLines()
	var stderr lines
	cmd.Stdout, cmd.Stderr = out, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{}) // closed once the child has exited
	var waitErr error           // cmd.Wait's result, read after done
	go func() { waitErr = cmd.Wait(); close(done) }()
	defer func() {
		select {
		case <-done:
		default:
			_ = cmd.Process.Kill()
			<-done
		}
	}()
	out.waitFor(t, "service: 5 demo orders published")
	deadline := time.Now().Add(bound)
	for out.count("handled ") < 5 {
		if time.Now().After(deadline) {
			t.Fatalf("5 orders not handled within %v:\n%s%s", bound, out, &stderr)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-done:
		if waitErr != nil {
			t.Fatalf("after SIGTERM: %v\nstdout:\n%s\nstderr:\n%s", waitErr, out, &stderr)
		}
	case <-time.After(bound):
		t.Fatalf("still running %v after SIGTERM", bound)
	}
	for _, want := range []string{"service: stopping", "service: stopped: received 5, results acknowledged 5, dead-lettered 0, results left 0"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("stdout lacks %q:\n%s", want, out)
		}
	}
}

func TestServiceFlags(t *testing.T) {
	for _, args := range [][]string{{"-group", "a/b"}, {"-group", ""}, {"-concurrency", "0"}, {"-demo", "-1"}, {"extra"}, {"-nosuchflag"}} {
		if code := run(t.Context(), args, &bytes.Buffer{}, &bytes.Buffer{}); code != 2 {
			t.Errorf("run(%q) = %d, want 2", args, code)
		}
	}
}

// scrape fetches url and parses it with the Prometheus text-format parser.
func scrape(t *testing.T, url string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		t.Errorf("Content-Type %q, want the text format", ct)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("the text-format parser refused the metrics: %v", err)
	}
	return fams
}

// value returns the value of the family's single counter or gauge.
func value(fams map[string]*dto.MetricFamily, name string) float64 {
	m := fams[name].Metric[0]
	if c := m.GetCounter(); c != nil {
		return c.GetValue()
	}
	return m.GetGauge().GetValue()
}

func stateValue(fams map[string]*dto.MetricFamily, state string) float64 {
	for _, m := range fams[mState].Metric {
		for _, l := range m.Label {
			if l.GetName() == "state" && l.GetValue() == state {
				return m.GetGauge().GetValue()
			}
		}
	}
	return -1
}

// lines collects a program's output and lets a test wait for a line.
type lines struct {
	mu      sync.Mutex // guards b and changed
	b       bytes.Buffer
	changed chan struct{} // closed and replaced at every write
}

func newLines() *lines { return &lines{changed: make(chan struct{})} }

func (l *lines) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.b.Write(p)
	if l.changed != nil {
		close(l.changed)
		l.changed = make(chan struct{})
	}
	return len(p), nil
}

func (l *lines) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// count returns how many lines begin with prefix.
func (l *lines) count(prefix string) int {
	n := 0
	for _, line := range strings.Split(l.String(), "\n") {
		if strings.HasPrefix(line, prefix) {
			n++
		}
	}
	return n
}

// waitFor waits up to bound for a line containing text and returns it.
func (l *lines) waitFor(t *testing.T, text string) string {
	t.Helper()
	timeout := time.After(bound)
	for {
		l.mu.Lock()
		s, ch := l.b.String(), l.changed
		l.mu.Unlock()
		for _, line := range strings.Split(s, "\n") {
			if strings.Contains(line, text) {
				return line
			}
		}
		select {
		case <-ch:
		case <-timeout:
			t.Fatalf("no line with %q within %v:\n%s", text, bound, s)
		}
	}
}

// metricsURL returns the URL the instance printed for its endpoint.
func (l *lines) metricsURL(t *testing.T) string {
	t.Helper()
	line := l.waitFor(t, "service: metrics on ")
	url, ok := strings.CutPrefix(line, "service: metrics on ")
	if !ok {
		t.Fatal(errors.New(line))
	}
	return url
}
