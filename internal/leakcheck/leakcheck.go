package leakcheck

import (
	"fmt"
	"io"
	"os"
	"strings"
	"testing"
	"time"
)

// stderr receives Run's report (a variable for this package's tests).
var stderr io.Writer = os.Stderr

// DefaultTimeout is how long a check waits for goroutines to wind down.
const DefaultTimeout = 2 * time.Second

// An Option changes what a check ignores or how long it waits.
type Option func(*config)

type config struct {
	ignore  []func(goroutine) bool
	timeout time.Duration
}

// IgnoreTopFunction ignores goroutines with fn (fully qualified, as in a
// stack dump: "example.com/pkg.(*T).loop") at the top of their stack.
func IgnoreTopFunction(fn string) Option {
	return func(c *config) {
		c.ignore = append(c.ignore, func(g goroutine) bool { return g.top == fn })
	}
}

// IgnoreAnyFunction ignores goroutines with fn anywhere on their stack.
func IgnoreAnyFunction(fn string) Option {
	return func(c *config) {
		c.ignore = append(c.ignore, func(g goroutine) bool { return g.has(fn) })
	}
}

// IgnoreCurrent ignores the goroutines that exist when it is called.
func IgnoreCurrent() Option {
	ids := map[int]bool{}
	for _, g := range goroutines(dump(true)) {
		ids[g.id] = true
	}
	return func(c *config) {
		c.ignore = append(c.ignore, func(g goroutine) bool { return ids[g.id] })
	}
}

// Timeout sets how long the check waits for goroutines to end (default
// DefaultTimeout). Zero or less checks once.
func Timeout(d time.Duration) Option {
	return func(c *config) { c.timeout = d }
}

// background reports the goroutines the runtime and the testing package run
// on their own (goleak's default filters).
func background(g goroutine) bool {
	switch g.top {
	case "testing.RunTests", "testing.(*T).Run", "testing.(*T).Parallel", "testing.runFuzzing", "testing.runFuzzTests":
		return strings.HasPrefix(g.state, "chan receive")
	case "os/signal.signal_recv", "os/signal.loop":
		return true
	}
	return g.has("runtime.ensureSigM") || g.has("runtime.ReadTrace") ||
		(g.has("runtime.goexit") && strings.HasPrefix(g.state, "syscall"))
}

// Find returns an error that lists every goroutine other than the caller
// that no option or default filter ignores, once the timeout has passed
// with some left; nil as soon as none is left.
func Find(opts ...Option) error {
	c := config{timeout: DefaultTimeout}
	for _, o := range opts {
		o(&c)
	}
	self := currentID()
	deadline := time.Now().Add(c.timeout)
	pause := time.Millisecond
	for {
		var left []goroutine
		for _, g := range goroutines(dump(true)) {
			if g.id == self || background(g) || ignored(c.ignore, g) {
				continue
			}
			left = append(left, g)
		}
		if len(left) == 0 {
			return nil
		}
		if !time.Now().Before(deadline) {
			var b strings.Builder
			fmt.Fprintf(&b, "leakcheck: %d goroutine(s) still running after %v:\n", len(left), c.timeout)
			for _, g := range left {
				b.WriteString("\n")
				b.WriteString(g.text)
			}
			return fmt.Errorf("%s", b.String())
		}
		time.Sleep(min(pause, time.Until(deadline)))
		pause = min(2*pause, 100*time.Millisecond)
	}
}

func ignored(filters []func(goroutine) bool, g goroutine) bool {
	for _, f := range filters {
		if f(g) {
			return true
		}
	}
	return false
}

// VerifyNone fails t (t.Error) when Find reports goroutines.
func VerifyNone(t testing.TB, opts ...Option) {
	t.Helper()
	if err := Find(opts...); err != nil {
		t.Error(err)
	}
}

// Run runs the tests of m and, when they passed, checks that they left no
// goroutine running that was not running before them. It returns the exit
// code for os.Exit: m's, or 1 when goroutines were left, which it reports
// on stderr.
func Run(m interface{ Run() int }, opts ...Option) int {
	opts = append([]Option{IgnoreCurrent()}, opts...)
	code := m.Run()
	if code != 0 {
		return code
	}
	if err := Find(opts...); err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	return 0
}
