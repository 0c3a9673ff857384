//go:build !unix

package main

import "os/exec"

// setProcessGroup does nothing here: a Ctrl-C may reach the children too,
// which then stop cleanly.
func setProcessGroup(*exec.Cmd) {}
