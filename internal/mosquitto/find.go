package mosquitto

import (
	"os"
	"os/exec"
	"path/filepath"
)

// EnvBinary names an environment variable holding the path of the
// mosquitto binary to use instead of searching for it.
const EnvBinary = "HOLDFAST_MOSQUITTO"

// sbinDirs are searched after PATH: Debian installs mosquitto in /usr/sbin,
// which is not on every user's PATH.
var sbinDirs = []string{"/usr/sbin", "/usr/local/sbin", "/opt/homebrew/sbin", "/opt/homebrew/bin"}

// Path returns the path of the mosquitto binary and whether it was found:
// $HOLDFAST_MOSQUITTO if set (found only if it is executable), else the
// first "mosquitto" on PATH or in the usual sbin directories.
func Path() (string, bool) {
	if p := os.Getenv(EnvBinary); p != "" {
		return p, isExecutable(p)
	}
	return findTool("mosquitto", "")
}

// passwdPath finds mosquitto_passwd, preferring the directory of the
// mosquitto binary in use.
func passwdPath(mosquitto string) (string, bool) {
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
