package main

import (
	"bytes"
	"fmt"
	"os"
	"testing"

	"github.com/holdfast-mqtt/holdfast/internal/leakcheck"

	"github.com/holdfast-mqtt/holdfast/internal/testbroker"
)

func TestMain(m *testing.M) {
	os.Exit(leakcheck.Run(m))
}

// TestPublishes runs the program against an embedded broker.
func TestPublishes(t *testing.T) {
	b := testbroker.StartMosquitto(t, testbroker.MosquittoOptions{})
	for _, qos := range []int{0, 1, 2} {
		t.Run(fmt.Sprintf("qos%d", qos), func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			args := []string{"-broker", b.URL(), "-client-id", fmt.Sprintf("minholdfast-%d", qos), "-outbox", t.TempDir(), "-qos", fmt.Sprint(qos), "-count", "20"}
			if code := run(args, &stdout, &stderr); code != 0 {
				t.Fatalf("exit %d, stderr:\n%s", code, stderr.String())
			}
			if stdout.String() != "published 20\n" {
				t.Fatalf("stdout %q", stdout.String())
			}
		})
	}
	for _, bad := range [][]string{{"-qos", "3"}, {"-count", "-1"}, {"extra"}, {"-nosuchflag"}} {
		if code := run(bad, &bytes.Buffer{}, &bytes.Buffer{}); code != 2 {
			t.Errorf("run(%q) = %d, want 2", bad, code)
		}
	}
}
