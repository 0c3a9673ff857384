package testbroker

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// Environment variables read by this package.
const (
	// EnvRequireMosquitto, when "1" (or "true"), makes a missing mosquitto a
	// test failure instead of a skip.
	EnvRequireMosquitto = "HOLDFAST_REQUIRE_MOSQUITTO"
	// EnvMosquitto names the mosquitto binary to use instead of searching for it.
	EnvMosquitto = "HOLDFAST_MOSQUITTO"
)

// sbinDirs are searched after PATH: Debian installs mosquitto in /usr/sbin,
// which is not on every user's PATH.
var sbinDirs = []string{"/usr/sbin", "/usr/local/sbin", "/opt/homebrew/sbin", "/opt/homebrew/bin"}

// MosquittoPath returns the path of the mosquitto binary and whether it was
// found: $HOLDFAST_MOSQUITTO if set (found only if it is executable), else the
// first "mosquitto" on PATH or in the usual sbin directories.
func MosquittoPath() (string, bool) {
	if p := os.Getenv(EnvMosquitto); p != "" {
		return p, isExecutable(p)
	}
	return findTool("mosquitto", "")
}

// mosquittoPasswdPath finds mosquitto_passwd, preferring the directory of the
// mosquitto binary in use.
func mosquittoPasswdPath(mosquitto string) (string, bool) {
	return findTool("mosquitto_passwd", filepath.Dir(mosquitto))
}

func findTool(name, preferDir string) (string, bool) {
	if preferDir != "" {
		if p := filepath.Join(preferDir, name); isExecutable(p) {
			return p, true
		}
	}
	if p, err := exec.LookPath(name); err == nil {
		return p, true
	}
	for _, dir := range append(sbinDirs, "/usr/bin", "/usr/local/bin") {
		if p := filepath.Join(dir, name); isExecutable(p) {
			return p, true
		}
	}
	return "", false
}

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
