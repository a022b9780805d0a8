package kerneltest

import (
	"os/signal"
	"syscall"
)

// ignoreSignals ignores every signal that can be ignored.
func ignoreSignals() {
	for s := syscall.Signal(1); s <= 64; s++ {
		if s == syscall.SIGKILL || s == syscall.SIGSTOP {
			continue
		}
		signal.Ignore(s)
	}
}
