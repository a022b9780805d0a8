package pool

import (
	"fmt"
	"time"

	"github.com/cgpool/cgpool/oomwatch"
)

// Spec is what a client asks for.
type Spec struct {
	Payload []byte            // worker pools: the task's input
	Argv    []string          // exec pools: the command
	Env     map[string]string // additions, seen by this task only

	Priority     int           // >= 0; lower runs first
	Timeout      time.Duration // from the start on a worker; 0 = the pool's default (none if 0)
	QueueTimeout time.Duration // longest wait before starting; 0 = none
	MemoryMax    int64         // per-task memory.max, at most the pool's; 0 = the pool's

	// Client identifies the submitter for fairness and disconnect policy.
	Client uint64
	// Peer is the user who submitted the task, from its connection's
	// SO_PEERCRED and the account database (LookupIdentity); nil for an
	// in-process caller (cgpool run), which is trusted as the supervisor
	// itself. A root supervisor runs a peer's exec task as the peer (see
	// Config.User), and never gives a worker that served one peer a task of
	// another.
	Peer *Identity
	// Affinity names the program a worker-pool task belongs to: a worker
	// runs the tasks of one (peer, affinity) pair only.
	Affinity string
	// Hold makes Submit wait for room in a full backlog (until its context
	// ends) instead of refusing with ErrQueueFull.
	Hold bool
}

// size is the backlog bytes the task holds while queued.
func (s *Spec) size() int64 {
	return int64(len(s.Payload)) + argvBytes(s.Argv) + envBytes(s.Env) + int64(len(s.Affinity))
}

// OutcomeKind is the kind of a task's one terminal outcome.
type OutcomeKind string

const (
	Result       OutcomeKind = "result"
	TaskError    OutcomeKind = "task_error"
	TimedOut     OutcomeKind = "timeout"
	ProcessError OutcomeKind = "process_error"
	Cancelled    OutcomeKind = "cancelled"
	QueueTimeout OutcomeKind = "queue_timeout"
)

// ReasonLost is the process-error reason of a task that the supervisor
// lost track of through an internal error (a panic in its slot's
// goroutine): it may have run in part. oomwatch's reasons are the others.
const ReasonLost oomwatch.Reason = "lost"

// Outcome is how a task ended. Exactly one is delivered per accepted task.
type Outcome struct {
	Kind OutcomeKind
	Pid  int    // the worker (or exec command) that ran it; 0 if it never ran
	Leaf string // the cgroup it ran in (path inside the hierarchy)

	Payload   []byte // Result: the worker's answer; TaskError: its payload
	Message   string // TaskError, Cancelled, ProcessError: human-readable
	Traceback string // TaskError

	// ProcessError (and exec results killed by a signal).
	Reason     oomwatch.Reason
	Signal     int
	ExitCode   int   // exec Result: the command's exit status
	MemoryPeak int64 // the slot's memory.peak when known

	// Exec results.
	Stdout, Stderr                   []byte
	StdoutTruncated, StderrTruncated bool

	Timeout time.Duration // TimedOut: the limit that passed

	// Usage is what the task cost, read from its slot's cgroup: set on
	// every outcome of a task that started (result, task error, timeout,
	// process error, cancelled while running), nil for one that never
	// started.
	Usage *Usage
}

// PeakScope says what a peak figure of a Usage covers.
type PeakScope string

const (
	// PeakTask: the peak was reached during the task (the slot's counter
	// was reset before it, the slot was fresh, or the task raised the
	// slot's high-water mark): exact for the task.
	PeakTask PeakScope = "task"
	// PeakSlot: the slot's high-water mark since it was created, reached
	// before this task and not raised by it: an upper bound of the task's
	// peak. Seen for the second and later tasks of a reused slot on a
	// kernel that cannot reset the counter (memory.peak before 6.12;
	// pids.peak always).
	PeakSlot PeakScope = "slot"
)

// Usage is the cost of one task, from the counters of its slot's cgroup
// (children, grandchildren and detached daemons included: everything in
// the slot is in the group) taken as a difference over the task. CPU and
// I/O figures are exact for an exec task (the slot is empty before and
// after); for a worker pool they also count what the worker did between
// tasks (idle: next to nothing; a trim), and not what a process the task
// left behind did after the answer. Figures the kernel or the slot's
// controllers do not offer are absent: their Has flag or scope is zero.
type Usage struct {
	Wall      time.Duration // on the worker: exec, spawn to exit; worker pools, start to answer
	CPUUser   time.Duration // cpu.stat user_usec, microsecond resolution
	CPUSystem time.Duration // cpu.stat system_usec

	MemoryPeak      int64     // bytes (memory.peak); valid if MemoryPeakScope != ""
	MemoryPeakScope PeakScope // "" where the memory controller or memory.peak (5.19) is missing
	PidsPeak        int64     // tasks, threads included (pids.peak); valid if PidsPeakScope != ""
	PidsPeakScope   PeakScope // "" where the pids controller or pids.peak (6.1) is missing

	IORead, IOWrite int64 // bytes (io.stat rbytes, wbytes, all devices); valid if HasIO
	HasIO           bool  // the slot has the io controller
}

func (o *Outcome) String() string {
	switch o.Kind {
	case ProcessError:
		return fmt.Sprintf("process error: %s", o.Message)
	case TimedOut:
		return fmt.Sprintf("timed out after %v", o.Timeout)
	case TaskError, Cancelled:
		return fmt.Sprintf("%s: %s", o.Kind, o.Message)
	}
	return string(o.Kind)
}

// Event is reported to a task's observer: first Running (unless the task
// never starts), then exactly one Done.
type Event struct {
	Running bool
	Pid     int
	Leaf    string
	Outcome *Outcome // set on Done
}

type taskState uint8

const (
	queued taskState = iota
	running
	done
)

// Task is an accepted submission. Its fields are guarded by its pool's
// mutex. A queued task is most of what a backlog costs: keep it small.
type Task struct {
	id     uint64
	pool   *Pool
	spec   Spec
	notify func(Event)
	slot   *slot
	// stop disarms the task's timeout; set by whoever starts the task.
	stop  func() bool
	state taskState
	// kill is why we killed the task's group (killReason tells it as
	// oomwatch does), or 0.
	kill killKind
}

// killKind is why the supervisor killed a task's group.
type killKind uint8

const (
	notKilled killKind = iota
	killedTimeout
	killedCancel
)

func (k killKind) reason() oomwatch.Reason {
	switch k {
	case killedTimeout:
		return oomwatch.Timeout
	case killedCancel:
		return oomwatch.Cancel
	}
	return oomwatch.None
}

// ID returns the pool-wide id of the task.
func (t *Task) ID() uint64 { return t.id }
