package testbroker

import (
	"fmt"
	"net"
	"testing"
	"time"
)

// pollInterval is how often Eventually evaluates its condition.
const pollInterval = 10 * time.Millisecond

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func FreePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("testbroker: find a free port: %v", err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// Eventually evaluates cond every 10ms until it returns true, and fails the
// test if timeout passes first. msgAndArgs, if given, describe the condition:
// a format string and its arguments.
func Eventually(t testing.TB, timeout time.Duration, cond func() bool, msgAndArgs ...any) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(pollInterval)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %v: %s", timeout, describe(msgAndArgs))
			return
		}
		<-tick.C
	}
}

func describe(msgAndArgs []any) string {
	switch {
	case len(msgAndArgs) == 0:
		return "(no description)"
	case len(msgAndArgs) == 1:
		return fmt.Sprint(msgAndArgs[0])
	default:
		if format, ok := msgAndArgs[0].(string); ok {
			return fmt.Sprintf(format, msgAndArgs[1:]...)
		}
		return fmt.Sprint(msgAndArgs...)
	}
}
