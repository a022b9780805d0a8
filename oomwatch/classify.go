package oomwatch

import (
	"fmt"
	"syscall"
)

// Reason is why a task ended other than by an answer from its worker.
type Reason string

// The reasons, in the order Classify tests them.
const (
	None    Reason = ""        // the worker answered; nothing went wrong at the process level
	OOM     Reason = "oom"     // an OOM kill was counted in the worker's group during the task
	Timeout Reason = "timeout" // we killed the group because the task's deadline passed
	Cancel  Reason = "cancel"  // we killed the group because the task was cancelled
	Killed  Reason = "killed"  // the worker died of a signal we did not send
	Crashed Reason = "crashed" // the worker exited on its own mid-task
)

// Facts are what the supervisor recorded about one task's worker.
type Facts struct {
	// Counters of the worker's group when the task started and after the
	// worker was reaped (read before the group was removed).
	Before, After Counters
	// SupervisorKill is Timeout or Cancel when we wrote cgroup.kill for
	// this task, else None.
	SupervisorKill Reason
	// Exited is true when the worker process ended during the task.
	Exited   bool
	Signal   syscall.Signal // the signal that ended the worker, or 0
	ExitCode int            // its exit status when Signal is 0
}

// Verdict is Classify's answer.
type Verdict struct {
	Reason   Reason
	Signal   syscall.Signal // Killed: the signal; OOM: usually SIGKILL
	ExitCode int            // Crashed: the exit status
}

func (v Verdict) String() string {
	switch v.Reason {
	case None:
		return "ok"
	case Killed:
		return fmt.Sprintf("killed by signal %d (%s)", int(v.Signal), v.Signal)
	case Crashed:
		return fmt.Sprintf("crashed with exit code %d", v.ExitCode)
	default:
		return string(v.Reason)
	}
}

// Classify decides why a task ended, in this order: OOM (oom_kill or
// oom_group_kill rose during the task), Timeout or Cancel (we wrote
// cgroup.kill), Killed (a signal we did not send), Crashed (an exit
// status), None (the worker did not end). It never returns OOM unless a
// counter rose.
func Classify(f Facts) Verdict {
	switch {
	case f.After.OOMKill > f.Before.OOMKill || f.After.OOMGroupKill > f.Before.OOMGroupKill:
		return Verdict{Reason: OOM, Signal: f.Signal}
	case f.SupervisorKill == Timeout || f.SupervisorKill == Cancel:
		return Verdict{Reason: f.SupervisorKill, Signal: f.Signal}
	case !f.Exited:
		return Verdict{Reason: None}
	case f.Signal != 0:
		return Verdict{Reason: Killed, Signal: f.Signal}
	default:
		return Verdict{Reason: Crashed, ExitCode: f.ExitCode}
	}
}
