//go:build !linux

package mosquitto

import "syscall"

// sysProcAttr returns nil: only Linux can tie the broker's life to this
// process's; elsewhere only Close stops it.
func sysProcAttr() *syscall.SysProcAttr { return nil }
