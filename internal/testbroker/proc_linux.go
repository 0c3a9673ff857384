package testbroker

import "syscall"

// sysProcAttr asks the kernel to kill the broker if the test binary dies
// without running its cleanups (e.g. a panic or a timeout), so that no broker
// outlives its test. (Linux sends the signal when the OS thread that started
// the child exits; the Go runtime keeps its threads, so in practice that is
// when the test binary exits.)
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
