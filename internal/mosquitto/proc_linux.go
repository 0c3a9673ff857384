package mosquitto

import "syscall"

// sysProcAttr asks the kernel to kill the broker if this process dies
// without calling Close (a panic, a test timeout, SIGKILL), so that no
// broker outlives its owner. (Linux sends the signal when the OS thread that
// started the child exits; the Go runtime keeps its threads, so in practice
// that is when this process exits.)
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
