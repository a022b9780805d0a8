package spawn

import (
	"fmt"
	"os"
	"syscall"
	"time"
)

// Exit says how a child ended.
type Exit struct {
	Code     int            // exit status; -1 when killed by a signal
	Signal   syscall.Signal // the signal that killed it, or 0
	CoreDump bool
	MaxRSS   int64 // the child's own peak RSS in bytes (not its children's)
	UserTime time.Duration
	SysTime  time.Duration
}

// Signaled reports whether the child was killed by a signal.
func (e Exit) Signaled() bool { return e.Signal != 0 }

// String gives "exit status 3" or "signal: killed".
func (e Exit) String() string {
	if e.Signaled() {
		return "signal: " + e.Signal.String()
	}
	return fmt.Sprintf("exit status %d", e.Code)
}

// ExitOf converts an os.ProcessState. A nil state gives the zero Exit.
func ExitOf(ps *os.ProcessState) Exit {
	if ps == nil {
		return Exit{}
	}
	e := Exit{Code: ps.ExitCode(), UserTime: ps.UserTime(), SysTime: ps.SystemTime()}
	if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		e.Signal = ws.Signal()
		e.CoreDump = ws.CoreDump()
	}
	if ru, ok := ps.SysUsage().(*syscall.Rusage); ok && ru != nil {
		e.MaxRSS = ru.Maxrss * 1024
	}
	return e
}
