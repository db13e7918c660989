package adapter_test

import (
	"os/exec"
	"syscall"
)

// dieWithParent makes the kernel kill redis-server when the test process dies, even by a panic that
// skips every cleanup.
func dieWithParent(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
