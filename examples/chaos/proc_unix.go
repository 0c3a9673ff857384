//go:build unix

package main

import (
	"os/exec"
	"syscall"
)

// setProcessGroup puts a child in a process group of its own, so that a
// Ctrl-C at the terminal reaches this program only, which then stops its
// children itself.
func setProcessGroup(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
}
