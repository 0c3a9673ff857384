package main

import (
	"bytes"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/holdfast-mqtt/holdfast/examples/internal/embedbroker"
	"github.com/holdfast-mqtt/holdfast/internal/leakcheck"
	"github.com/holdfast-mqtt/holdfast/internal/testsub"
)

func TestMain(m *testing.M) {
	os.Exit(leakcheck.Run(m))
}

// testTTL leaves the readings of boot 1 time to reach boot 2 unexpired on
// a slow machine, and the test time to wait past it.
const testTTL = "10s"

// TestDeviceTwoBoots runs the program against an embedded broker and checks
// what it printed and what a subscriber received: the newest -max-queued
// readings, in order, and nothing that expired or was dropped.
func TestDeviceTwoBoots(t *testing.T) {
	b, err := embedbroker.Start("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	const topic = "test/device/readings"
	sub, err := testsub.Start(testsub.Options{Broker: b.URL(), ClientID: "device-test-sub", Topics: []string{topic}, QoS: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()

	var stdout, stderr bytes.Buffer
	key := strings.Repeat("ab", 32)
	args := []string{"-broker", b.URL(), "-topic", topic, "-client-id", "device-test", "-ttl", testTTL, "-key", key,
		"-stale", "5", "-readings", "30", "-max-queued", "20", "-max-bytes", "4096"}
	if code := run(t.Context(), args, &stdout, &stderr); code != 0 {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout.String(), stderr.String())
	}
	out := stdout.String()
	t.Logf("stdout:\n%s", out)
	for _, want := range []string{
		"profile device, at most 20 messages and 4096 bytes (oldest dropped), TTL 10s, AES-256 at rest with the -key given",
		"boot 1: link down",
		"boot 1: accepted 35, expired 5, dropped 10 (oldest first), queued 20 (",
		"boot 1: power off with 20 queued",
		"no reading in plaintext; a wrong key is refused (outbox.ErrBadKey)",
		"boot 2: link up",
		"20 of 20 queued acknowledged, 0 left; safe to power off",
		"boot 2: power off",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("stdout lacks %q", want)
		}
	}

	// The readings kept are the newest 20 (16..35), delivered in order.
	if !sub.WaitCount(topic, 20, 10*time.Second) {
		t.Fatalf("%d readings arrived, want 20", sub.Count(topic))
	}
	var got []string
	for _, a := range sub.Arrivals(topic) {
		got = append(got, strings.Fields(string(a.Payload))[1])
	}
	var want []string
	for n := 16; n <= 35; n++ {
		want = append(want, fmt.Sprint(n))
	}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("readings received %v, want %v", got, want)
	}
}

// TestDeviceDefaults runs the program as `go run ./examples/device` does
// (its own embedded broker, a random key), with a shorter TTL.
func TestDeviceDefaults(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if code := run(t.Context(), []string{"-ttl", testTTL}, &stdout, &stderr); code != 0 {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout.String(), stderr.String())
	}
	for _, want := range []string{"embedded broker on tcp://", "a random key for this run",
		"boot 1: accepted 60, expired 10, dropped 10", "40 of 40 queued acknowledged", "boot 2: power off"} {
		if !strings.Contains(stdout.String(), want) {
			t.Errorf("stdout lacks %q:\n%s", want, stdout.String())
		}
	}
}

func TestDeviceFlags(t *testing.T) {
	for _, args := range [][]string{{"-key", "abcd"}, {"-key", "zz"}, {"-readings", "0"}, {"-ttl", "0s"}, {"extra"}, {"-nosuchflag"}} {
		var stderr bytes.Buffer
		if code := run(t.Context(), args, &bytes.Buffer{}, &stderr); code != 2 {
			t.Errorf("run(%q) = %d, want 2", args, code)
		}
	}
}
