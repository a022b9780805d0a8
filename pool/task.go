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
	// IO is an exec command's working directory, standard input and
	// output handling; nil: the supervisor's directory, /dev/null, and
	// the output kept in the outcome up to the pool's OutputLimit.
	IO *ExecIO

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

// ExecIO is what an exec command takes and gives beyond its argv and
// environment. It sits behind a pointer in Spec because most tasks have
// none, and a queued task is most of what a backlog costs.
type ExecIO struct {
	// Dir is the working directory, absolute; "" is the supervisor's. The
	// command enters it as the user it runs as (Go's os/exec changes
	// directory after the credential is set), so the kernel checks that
	// user's access.
	Dir string
	// Output, when set, takes the command's stdout and stderr as they are
	// read, instead of the outcome's bounded Stdout and Stderr: nothing
	// is cut, and nothing piles up in the supervisor.
	Output OutputFunc
	// MaxOutput bounds stdout and stderr together, in bytes: a command
	// that writes more is killed, its outcome a ProcessError with reason
	// OutputLimit (exactly MaxOutput bytes are delivered). 0: no bound
	// with Output; without Output, each stream is cut at the pool's
	// OutputLimit and flagged as truncated.
	MaxOutput int64
	// Stdin is the standard input (nil: /dev/null). The pool writes it
	// from a goroutine of its own and closes the pipe after it, or when
	// the command has ended.
	Stdin []byte
	// SlotEnv, if set, names an environment variable the command gets,
	// set to its slot's number: 1 to MaxWorkers, different for the
	// commands that run at once, and the same for the commands one slot
	// runs one after another (GNU parallel's PARALLEL_JOBSLOT, which
	// cgpool run sets this way so that it can queue commands ahead of
	// the slots that will run them).
	SlotEnv string
}

// io is the task's ExecIO, the zero one if it has none.
func (s *Spec) io() *ExecIO {
	if s.IO == nil {
		return &noIO
	}
	return s.IO
}

var noIO ExecIO // read only

// Stream names an exec command's output stream.
type Stream int

const (
	Stdout Stream = 1
	Stderr Stream = 2
)

// OutputFunc takes a chunk of an exec command's output. The pool calls it
// from one goroutine per stream, in order, with p valid only during the
// call. It may block: the command then blocks on its full pipe
// (backpressure), and the task's timeout still runs, for the command and
// for the delivery of its output. It must return soon once abort is
// closed: the task was killed (timeout, cancel, output limit) and what is
// still buffered is dropped after a short grace. An error makes the pool
// drop the rest of that stream (the command goes on).
type OutputFunc func(s Stream, p []byte, abort <-chan struct{}) error

// OutputLimit is the reason of a ProcessError for an exec command killed
// because it wrote more than its ExecIO.MaxOutput.
const OutputLimit oomwatch.Reason = "output_limit"

// Reasons of a ProcessError for an exec command that could not be
// started, with the exit status a shell gives for the same (bash(1),
// EXIT STATUS).
const (
	NotFound      oomwatch.Reason = "not_found"      // no such program (exit status 127)
	NotExecutable oomwatch.Reason = "not_executable" // found, but it cannot be executed (126)
)

// size is the backlog bytes the task holds while queued.
func (s *Spec) size() int64 {
	return int64(len(s.Payload)) + argvBytes(s.Argv) + envBytes(s.Env) + int64(len(s.Affinity)) + int64(len(s.io().Dir)) + int64(len(s.io().Stdin))
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

	// Exec results. Stdout and Stderr hold the output unless the task
	// had an Output (then they are nil); the byte counts are all the
	// command wrote to each, delivered or not.
	Stdout, Stderr                   []byte
	StdoutTruncated, StderrTruncated bool
	StdoutBytes, StderrBytes         int64

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
	state  taskState
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
	killedOutput // an exec command wrote more than its ExecIO.MaxOutput
)

func (k killKind) reason() oomwatch.Reason {
	switch k {
	case killedTimeout:
		return oomwatch.Timeout
	case killedCancel:
		return oomwatch.Cancel
	case killedOutput:
		return OutputLimit
	}
	return oomwatch.None
}

// ID returns the pool-wide id of the task.
func (t *Task) ID() uint64 { return t.id }
