// Package check is `cgpool check`, the self-test a user runs on a new host.
// It reports what the host offers cgpool (the cgroup v2 mount and the root
// it would use, delegation, controllers, cgroup.kill, CLONE_INTO_CGROUP,
// pidfd, memory.events, systemd) and then runs the task × pool matrix of
// the research notes (check-matrix.md): every task row against an exec
// pool, a Go worker pool and, where python3 and the cgpool Python package
// are there, a Python worker pool, each once to completion and once stuck
// until its timeout. Each cell is judged by four checks:
//
//	W  the task's result is what it should be
//	K  after it ended, nothing it started is alive (the slot's cgroup
//	   holds only its worker, and no process carries the cell's marker
//	   outside the pool's cgroups), within 2 s + slack of the outcome:
//	   worker pools tell the outcome first and then kill the slot, and
//	   the report notes how long that took
//	T  the stuck form is reported as a timeout within timeout + slack,
//	   and every process ever seen in its slot is gone within slack
//	E  after the pool's shutdown its cgroups are gone and no process
//	   carries the cell's marker
//
// slack (Options.Slack, 1 s unless raised for a slow machine) bounds how
// late the evidence may come; E allows 1 s + slack.
//
// A row whose controller is missing (oom needs memory, fork_bomb pids) is
// reported as not available, with the reason, and fails the check only if
// the configuration asks for that limit.
//
// The evidence is the kernel's: cgroup.procs and cgroup.events of the
// slots, pidfds of every process seen, and an environment marker found by
// a scan of /proc. The check runs its pools in-process (an embedded
// supervisor, as `cgpool run` does) below the root the caller gives it, and
// removes everything it made. It is not safe to run two checks on one root
// at once; Run is safe to call from one goroutine.
package check
