package client

import (
	"errors"
	"strconv"
	"strings"
	"time"

	"github.com/cgpool/cgpool/ipc"
)

// Sentinel errors. Errors of this package wrap them with context, so test
// for them with errors.Is, never with ==.
var (
	// ErrClosed is wrapped by every error caused by the connection being
	// gone: [Client.Close] was called, the server closed the connection
	// (for example after a shutdown), or reading or writing it failed. It is
	// returned by calls made after that and by the [Future.Wait],
	// [Future.Accepted] and request calls that were still waiting. The
	// error also wraps the cause when there is one (io.EOF, a read or
	// write error, or the *ipc.RemoteError of a connection-level error
	// frame that preceded the close).
	//
	// A submission whose future fails with ErrClosed after [Client.Submit]
	// returned has an unknown fate: its outcome was lost, and the task may
	// or may not have run (or may still be running, depending on the
	// pool's on_disconnect policy). Retry it only if running it twice is
	// acceptable.
	ErrClosed = errors.New("cgpool: connection closed")

	// ErrQueueFull matches (errors.Is) a [*RejectedError] with reason
	// "queue_full": the pool's backlog was full and the task was not
	// submitted with Hold. Nothing ran; retrying later is safe.
	ErrQueueFull = errors.New("cgpool: pool backlog full")
	// ErrDraining matches a [*RejectedError] with reason "draining": the
	// supervisor or pool is shutting down.
	ErrDraining = errors.New("cgpool: pool draining")
	// ErrInvalid matches a [*RejectedError] with reason "invalid" (the
	// server found a field missing or out of range). [Client.Submit] also
	// wraps it (together with ipc.ErrInvalidRequest) when it refuses a
	// Task locally, before sending anything.
	ErrInvalid = errors.New("cgpool: invalid submission")
	// ErrTooLarge matches a [*RejectedError] with reason "too_large": the
	// payload is above the pool's input limit.
	ErrTooLarge = errors.New("cgpool: payload too large for the pool")
	// ErrUnknownPool matches a [*RejectedError] with reason
	// "unknown_pool".
	ErrUnknownPool = errors.New("cgpool: unknown pool")
)

// RejectedError is the outcome of a submission that the server refused
// (message "rejected"). Nothing of it ran, so retrying it is safe. It
// carries no PID or Leaf: a rejected task never started. errors.Is matches
// it against [ErrQueueFull], [ErrDraining], [ErrInvalid], [ErrTooLarge] and
// [ErrUnknownPool] according to Reason.
type RejectedError struct {
	// ID is the submission's id on the connection.
	ID uint64
	// Reason is the machine-readable reason, an ipc.Reject* value:
	// "queue_full", "draining", "invalid", "too_large", "unknown_pool".
	Reason string
	// Message is the server's human-readable detail.
	Message string
}

// Error describes the rejection: the task's id, the reason and the message.
func (e *RejectedError) Error() string {
	return "cgpool: task " + strconv.FormatUint(e.ID, 10) + " rejected (" + e.Reason + ")" + suffix(e.Message)
}

// Is reports whether target is the sentinel that corresponds to e.Reason.
func (e *RejectedError) Is(target error) bool {
	switch target {
	case ErrQueueFull:
		return e.Reason == ipc.RejectQueueFull
	case ErrDraining:
		return e.Reason == ipc.RejectDraining
	case ErrInvalid:
		return e.Reason == ipc.RejectInvalid
	case ErrTooLarge:
		return e.Reason == ipc.RejectTooLarge
	case ErrUnknownPool:
		return e.Reason == ipc.RejectUnknownPool
	}
	return false
}

// TaskError is the outcome "task_error": the task raised an error in a
// worker pool's worker. PID and Leaf identify the worker and cgroup when
// known.
type TaskError struct {
	ID   uint64 // the submission's id on the connection
	PID  int    // the worker's pid, 0 if unknown
	Leaf string // the cgroup the task ran in, "" if unknown
	// Message is the error's text, e.g. "ValueError: bad input".
	Message string
	// Traceback is the formatted traceback, if the worker sent one.
	Traceback string
	// Payload is the worker's opaque error detail (e.g. a pickled
	// exception), owned by the caller.
	Payload []byte
}

// Error describes the outcome, with the task's id, pid and leaf when known.
func (e *TaskError) Error() string {
	return "cgpool: " + describe(e.ID, e.PID, e.Leaf) + " failed" + suffix(e.Message)
}

// TimeoutError is the outcome "timeout": the task ran longer than its time
// limit and its cgroup was killed.
type TimeoutError struct {
	ID   uint64 // the submission's id on the connection
	PID  int    // the process that ran it, 0 if unknown
	Leaf string // the cgroup the task ran in, "" if unknown
	// Timeout is the limit that passed, as reported by the server (or, if
	// the server did not say, the Task's Timeout).
	Timeout time.Duration
}

// Error describes the outcome, with the task's id, pid and leaf when known.
func (e *TimeoutError) Error() string {
	return "cgpool: " + describe(e.ID, e.PID, e.Leaf) + " timed out after " + e.Timeout.String()
}

// ProcessError is the outcome "process_error": the process running the task
// died without producing an outcome.
type ProcessError struct {
	ID   uint64 // the submission's id on the connection
	PID  int    // the process that died, 0 if unknown
	Leaf string // the cgroup the task ran in, "" if unknown
	// Reason is an ipc.Process* value: "oom" (the cgroup's memory limit was
	// hit), "killed" (killed by a signal cgpool did not send for a timeout
	// or cancel) or "crashed" (died or exited without answering, or failed
	// to start).
	Reason string
	// Signal is the signal that killed the process, 0 if none.
	Signal int
	// ExitCode is the process's exit status, if it exited.
	ExitCode int
	// MemoryPeak is the cgroup's peak memory use in bytes, 0 if unknown.
	MemoryPeak int64
	// Message is the server's human-readable detail.
	Message string
}

// OOM reports whether the process was killed because its cgroup hit its
// memory limit.
func (e *ProcessError) OOM() bool { return e.Reason == ipc.ProcessOOM }

// Error describes the outcome, with the task's id, pid and leaf when known.
func (e *ProcessError) Error() string {
	var b strings.Builder
	b.WriteString("cgpool: ")
	b.WriteString(describe(e.ID, e.PID, e.Leaf))
	b.WriteString(": process ")
	b.WriteString(e.Reason)
	if e.Signal != 0 {
		b.WriteString(", signal " + strconv.Itoa(e.Signal))
	}
	if e.ExitCode != 0 {
		b.WriteString(", exit code " + strconv.Itoa(e.ExitCode))
	}
	if e.MemoryPeak != 0 {
		b.WriteString(", memory peak " + strconv.FormatInt(e.MemoryPeak, 10) + " bytes")
	}
	b.WriteString(suffix(e.Message))
	return b.String()
}

// CancelledError is the outcome "cancelled": the task was cancelled by
// [Future.Cancel], by a shutdown, or by the pool's disconnect policy.
type CancelledError struct {
	ID   uint64 // the submission's id on the connection
	PID  int    // the process that ran it, 0 if it never started
	Leaf string // the cgroup it ran in, "" if it never started
	// Message says why, e.g. "cancelled before it started".
	Message string
}

// Error describes the outcome, with the task's id, pid and leaf when known.
func (e *CancelledError) Error() string {
	return "cgpool: " + describe(e.ID, e.PID, e.Leaf) + " cancelled" + suffix(e.Message)
}

// QueueTimeoutError is the outcome "queue_timeout": the task did not start
// within its QueueTimeout (counted from acceptance). It never ran, so PID
// and Leaf are normally unknown; they are filled in if the server sent
// them.
type QueueTimeoutError struct {
	ID   uint64 // the submission's id on the connection
	PID  int    // 0 unless the server reported one
	Leaf string // "" unless the server reported one
	// QueueTimeout is the Task's QueueTimeout.
	QueueTimeout time.Duration
}

// Error describes the outcome, with the task's id, pid and leaf when known.
func (e *QueueTimeoutError) Error() string {
	s := "cgpool: " + describe(e.ID, e.PID, e.Leaf) + " did not start in time"
	if e.QueueTimeout > 0 {
		s += " (queue timeout " + e.QueueTimeout.String() + ")"
	}
	return s
}

func describe(id uint64, pid int, leaf string) string {
	s := "task " + strconv.FormatUint(id, 10)
	switch {
	case pid != 0 && leaf != "":
		s += " (pid " + strconv.Itoa(pid) + ", leaf " + leaf + ")"
	case pid != 0:
		s += " (pid " + strconv.Itoa(pid) + ")"
	case leaf != "":
		s += " (leaf " + leaf + ")"
	}
	return s
}

func suffix(msg string) string {
	if msg == "" {
		return ""
	}
	return ": " + msg
}
