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
