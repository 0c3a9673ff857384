//go:build !linux

package testbroker

import "syscall"

// sysProcAttr returns nil: only Linux can tie the broker's life to the test
// binary's; elsewhere t.Cleanup alone stops it.
func sysProcAttr() *syscall.SysProcAttr { return nil }
