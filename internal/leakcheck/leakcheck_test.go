package leakcheck

import (
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestMain(m *testing.M) {
	// The package checks itself: every test below stops what it starts.
	os.Exit(Run(m))
}

// leak starts a goroutine blocked in parked until stop is called.
func leak(t *testing.T) (stop func()) {
	t.Helper()
	ch := make(chan struct{})
	started := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		close(started)
		parked(ch)
	}()
	<-started
	var once sync.Once
	stop = func() { once.Do(func() { close(ch); wg.Wait() }) }
	t.Cleanup(stop)
	return stop
}

// parked is the function at the top of the leaked goroutine's stack (it is
// not inlined: it blocks).
//
//go:noinline
func parked(ch chan struct{}) { <-ch }

const parkedName = "github.com/holdfast-mqtt/holdfast/internal/leakcheck.parked"

func TestFindReportsALeakedGoroutine(t *testing.T) {
	base := IgnoreCurrent()
	leak(t)
	start := time.Now()
	err := Find(base, Timeout(200*time.Millisecond))
	if err == nil {
		t.Fatal("Find reported nothing while a goroutine was left running")
	}
	if took := time.Since(start); took < 200*time.Millisecond {
		t.Errorf("Find gave up after %v, before its timeout", took)
	}
	for _, want := range []string{"1 goroutine(s) still running", parkedName, "leakcheck_test.go", "[chan receive"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("report lacks %q:\n%v", want, err)
		}
	}
}

func TestVerifyNoneFailsTheTest(t *testing.T) {
	base := IgnoreCurrent()
	leak(t)
	rec := &recorder{TB: t}
	VerifyNone(rec, base, Timeout(0))
	if !strings.Contains(rec.msg, parkedName) {
		t.Fatalf("VerifyNone reported %q", rec.msg)
	}
}

func TestRunFailsPassingTestsThatLeak(t *testing.T) {
	var report strings.Builder
	stderr = &report
	defer func() { stderr = os.Stderr }()
	stop := func() {}
	m := fakeM(func() int { stop = leak(t); return 0 })
	if code := Run(m, Timeout(50*time.Millisecond)); code != 1 {
		t.Errorf("Run = %d with a goroutine left, want 1", code)
	}
	if !strings.Contains(report.String(), parkedName) {
		t.Errorf("Run's report lacks the goroutine:\n%s", report.String())
	}
	stop()
	if code := Run(fakeM(func() int { return 3 })); code != 3 {
		t.Errorf("Run = %d for failed tests, want their code 3", code)
	}
	if code := Run(fakeM(func() int { return 0 })); code != 0 {
		t.Errorf("Run = %d for clean tests, want 0", code)
	}
}

func TestWaitsForGoroutinesWindingDown(t *testing.T) {
	base := IgnoreCurrent()
	stop := leak(t)
	time.AfterFunc(50*time.Millisecond, stop)
	if err := Find(base, Timeout(5*time.Second)); err != nil {
		t.Fatalf("a goroutine that ends within the timeout was reported: %v", err)
	}
}

func TestIgnoreOptions(t *testing.T) {
	base := IgnoreCurrent()
	leak(t)
	for name, o := range map[string]Option{
		"top": IgnoreTopFunction(parkedName),
		"any": IgnoreAnyFunction("github.com/holdfast-mqtt/holdfast/internal/leakcheck.leak.func1"),
	} {
		if err := Find(base, o, Timeout(0)); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	if err := Find(base, IgnoreTopFunction("runtime.gopark"), Timeout(0)); err == nil {
		t.Error("an option for another function ignored the goroutine")
	}
}

func TestParse(t *testing.T) {
	const text = `goroutine 7 [select, 2 minutes, locked to thread]:
example.com/p.(*T).loop(0xc000010000)
	/src/p/t.go:10 +0x1d
example.com/p.New.func1()
	/src/p/t.go:5 +0x25
created by example.com/p.New in goroutine 1
	/src/p/t.go:4 +0x9a

goroutine 8 [chan receive]:
main.main()
	/src/main.go:3 +0x1
`
	gs := goroutines([]byte(text))
	if len(gs) != 2 {
		t.Fatalf("%d goroutines", len(gs))
	}
	g := gs[0]
	if g.id != 7 || g.state != "select" || g.top != "example.com/p.(*T).loop" || !g.has("example.com/p.New.func1") || g.has("example.com/p.New") {
		t.Errorf("parsed %+v", g)
	}
	if gs[1].id != 8 || gs[1].state != "chan receive" || gs[1].top != "main.main" {
		t.Errorf("parsed %+v", gs[1])
	}
}

type fakeM func() int

func (f fakeM) Run() int { return f() }

// recorder captures a VerifyNone failure instead of failing the test.
type recorder struct {
	testing.TB
	msg string
}

func (r *recorder) Helper()           {}
func (r *recorder) Error(args ...any) { r.msg += fmt.Sprint(args...) }
