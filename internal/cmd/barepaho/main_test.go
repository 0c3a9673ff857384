package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/holdfast-mqtt/holdfast/internal/leakcheck"
	"github.com/holdfast-mqtt/holdfast/internal/testbroker"
)

func TestMain(m *testing.M) {
	os.Exit(leakcheck.Run(m))
}

func TestFlags(t *testing.T) {
	var stderr bytes.Buffer
	cfg, err := parseFlags([]string{"-outbox", "/x/y", "-qos", "2", "-start", "7", "-count", "0", "-keepalive", "2s"}, &stderr)
	if err != nil {
		t.Fatalf("parseFlags: %v", err)
	}
	if cfg.store != "/x/y" || cfg.qos != 2 || cfg.start != 7 || cfg.count != 0 || cfg.keepalive != 2*time.Second {
		t.Errorf("parsed %+v", cfg)
	}
	for _, bad := range [][]string{{"-qos", "3"}, {"-size", "-1"}, {"-keepalive", "100ms"}, {"extra"}, {"-nosuchflag"}} {
		if code := run(bad, &bytes.Buffer{}, &bytes.Buffer{}); code != 2 {
			t.Errorf("run(%q) = %d, want 2", bad, code)
		}
	}
}

// TestPublishesAndDrains runs the program against Mosquitto and
// checks its output and what a subscriber received.
func TestPublishesAndDrains(t *testing.T) {
	b := testbroker.StartMosquitto(t, testbroker.MosquittoOptions{})
	for _, qos := range []int{1, 2} {
		t.Run(fmt.Sprintf("qos%d", qos), func(t *testing.T) {
			topic := fmt.Sprintf("barepaho/test/%d", qos)
			got := subscribe(t, b.URL(), topic)

			var stdout, stderr bytes.Buffer
			args := []string{"-broker", b.URL(), "-client-id", topic, "-store", filepath.Join(t.TempDir(), "store"),
				"-topic", topic, "-qos", fmt.Sprint(qos), "-start", "5", "-count", "20", "-rate", "0", "-size", "32", "-keepalive", "2s"}
			if code := run(args, &stdout, &stderr); code != 0 {
				t.Fatalf("exit %d, stderr:\n%s", code, stderr.String())
			}
			var want strings.Builder
			for n := 5; n < 25; n++ {
				fmt.Fprintf(&want, "accepted %d\n", n)
			}
			want.WriteString("drained\n")
			if stdout.String() != want.String() {
				t.Errorf("stdout:\n%s\nwant:\n%s", stdout.String(), want.String())
			}
			// Bare paho does not promise that every message arrives: a publish
			// stored while ConnectRetry is still connecting can be left in the
			// store when the program exits (its token completed when resume()
			// re-queued it). So the test checks what the program itself does:
			// the output above, well-formed payloads, and that messages arrive.
			testbroker.Eventually(t, 5*time.Second, func() bool { return len(got()) > 0 }, "a message received")
			seen := map[int]bool{}
			for _, p := range got() {
				var n int
				if _, err := fmt.Sscanf(p, "%d ", &n); err != nil || len(p) != 32 || n < 5 || n > 24 {
					t.Errorf("bad payload %q", p)
				}
				seen[n] = true
			}
			var missing []int
			for n := 5; n < 25; n++ {
				if !seen[n] {
					missing = append(missing, n)
				}
			}
			if len(missing) > 0 {
				t.Logf("not (yet) delivered by paho: %v", missing)
			}
			t.Logf("arrival order: %q", got())
		})
	}
}

// subscribe connects a subscriber to topic and returns a function reporting
// the payloads received so far.
func subscribe(t *testing.T, url, topic string) func() []string {
	t.Helper()
	var (
		mu  sync.Mutex
		got []string
	)
	c := mqtt.NewClient(mqtt.NewClientOptions().AddBroker(url).SetClientID("sub-" + topic))
	if tok := c.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("subscriber connect: %v", tok.Error())
	}
	t.Cleanup(func() { c.Disconnect(100) })
	tok := c.Subscribe(topic, 2, func(_ mqtt.Client, m mqtt.Message) {
		mu.Lock()
		got = append(got, string(m.Payload()))
		mu.Unlock()
	})
	if !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("subscribe: %v", tok.Error())
	}
	return func() []string {
		mu.Lock()
		defer mu.Unlock()
		return append([]string(nil), got...)
	}
}
