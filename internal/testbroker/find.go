package testbroker

import (
	"os"
	"testing"

	"github.com/holdfast-mqtt/holdfast/internal/mosquitto"
)

// Environment variables read by this package.
const (
	// EnvRequireMosquitto, when "1" (or "true"), makes a missing mosquitto a
	// test failure instead of a skip.
	EnvRequireMosquitto = "HOLDFAST_REQUIRE_MOSQUITTO"
	// EnvMosquitto names the mosquitto binary to use instead of searching for it.
	EnvMosquitto = mosquitto.EnvBinary
)

// MosquittoPath returns the path of the mosquitto binary and whether it was
// found: $HOLDFAST_MOSQUITTO if set (found only if it is executable), else the
// first "mosquitto" on PATH or in the usual sbin directories.
func MosquittoPath() (string, bool) { return mosquitto.Path() }

func isExecutable(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.Mode().IsRegular() && fi.Mode().Perm()&0o111 != 0
}

// requireMosquitto reports whether the environment demands a real mosquitto.
func requireMosquitto() bool {
	v := os.Getenv(EnvRequireMosquitto)
	return v == "1" || v == "true"
}

// missing skips the test, or fails it when EnvRequireMosquitto is set. It
// does not return.
func missing(t testing.TB, what string) {
	t.Helper()
	if requireMosquitto() {
		t.Fatalf("testbroker: %s not found, and %s=1 requires it (install the Debian package mosquitto or set %s)",
			what, EnvRequireMosquitto, EnvMosquitto)
	}
	t.Skipf("testbroker: %s not found: skipping (install the Debian package mosquitto; set %s=1 to fail instead)",
		what, EnvRequireMosquitto)
}
