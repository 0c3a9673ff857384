package outbox

import (
	"os"
	"testing"
	"time"

	"github.com/holdfast-mqtt/holdfast/internal/leakcheck"
)

func TestMain(m *testing.M) {
	// Child processes of the crash test and the RSS probe re-execute this
	// binary; they never return.
	if os.Getenv(crashChildEnv) != "" {
		crashChild()
	}
	os.Exit(leakcheck.Run(m))
}

// eventually polls cond until it holds or timeout passes.
func eventually(t testing.TB, timeout time.Duration, cond func() bool, msg string, args ...any) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for d := time.Millisecond; ; d = min(2*d, 50*time.Millisecond) {
		if cond() {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %v: "+msg, append([]any{timeout}, args...)...)
		}
		time.Sleep(d)
	}
}
