package ipc

import (
	"encoding/json"
	"fmt"
	"strings"
)

// ProtocolVersion is the version of the client protocol and of the worker
// protocol that this package speaks. A hello carries it in "version".
const ProtocolVersion = 1

// Message types of the client protocol (client <-> supervisor over the unix
// socket). See docs/protocol.md for the fields of each.
const (
	TypeHello        = "hello"         // client→server, first frame; also worker→supervisor
	TypeWelcome      = "welcome"       // server→client, answer to hello
	TypeError        = "error"         // server→client: failed request or refused hello
	TypeSubmit       = "submit"        // client→server: run a task (payload = input)
	TypeAccepted     = "accepted"      // server→client: submit queued
	TypeRejected     = "rejected"      // server→client: submit refused (final)
	TypeRunning      = "running"       // server→client: task started in a worker
	TypeResult       = "result"        // final: success (payload = output); also worker→supervisor
	TypeTaskError    = "task_error"    // final: the task raised; also worker→supervisor
	TypeTimeout      = "timeout"       // final: the task ran longer than timeout_ms
	TypeProcessError = "process_error" // final: the worker process died (oom, killed, crashed)
	TypeCancelled    = "cancelled"     // final: the task was cancelled
	TypeQueueTimeout = "queue_timeout" // final: not started within queue_timeout_ms
	TypeCancel       = "cancel"        // client→server: cancel a submission
	TypeCancelReply  = "cancel_reply"  // server→client: answer to cancel
	TypeStats        = "stats"         // client→server: ask for pool statistics
	TypeStatsReply   = "stats_reply"   // server→client: answer to stats
	TypeStatus       = "status"        // client→server: ask for pool status
	TypeStatusReply  = "status_reply"  // server→client: answer to status
	TypeSetEnv       = "set_env"       // client→server: change a pool's environment
	TypeRecycle      = "recycle"       // client→server: replace a pool's workers
	TypeShutdown     = "shutdown"      // client→server: shut the supervisor down
	TypeOK           = "ok"            // server→client: success answer to set_env, recycle, shutdown
	TypeOutput       = "output"        // server→client: a chunk of an exec command's output (payload), for a submit with stream_output
)

// Message types that only occur in the worker protocol (supervisor <-> worker
// over fd 3). The worker protocol also uses TypeHello, TypeResult and
// TypeTaskError.
const (
	TypeTask    = "task"    // supervisor→worker: run a task (payload = input)
	TypeTrim    = "trim"    // supervisor→worker: release memory
	TypeTrimmed = "trimmed" // worker→supervisor: answer to trim, with rss
	TypeExit    = "exit"    // supervisor→worker: run the finalizer and exit 0
)

// Values of Header.Reason in a rejected message.
const (
	RejectQueueFull   = "queue_full"   // the pool's backlog is full and hold was not set
	RejectDraining    = "draining"     // the supervisor or pool is shutting down
	RejectInvalid     = "invalid"      // a field is missing or out of range
	RejectTooLarge    = "too_large"    // the payload exceeds the pool's input limit
	RejectUnknownPool = "unknown_pool" // no pool of that name
	RejectOverLimit   = "over_limit"   // a value asked for is above the pool's ceiling (timeout, memory, env, argv, tasks per client)
	RejectForbidden   = "forbidden"    // this peer may not do this (run as root, an admin operation)
)

// Values of Header.Reason in a process_error message.
const (
	ProcessOOM     = "oom"     // the cgroup's memory limit was hit
	ProcessKilled  = "killed"  // killed by a signal not sent by cgpool for a timeout/cancel
	ProcessCrashed = "crashed" // exited or died without reporting a result
	ProcessLost    = "lost"    // the supervisor lost the task to an internal error; it may have run in part
	// ProcessOutputLimit: an exec pool's command wrote more than its
	// max_output and was killed.
	ProcessOutputLimit = "output_limit"
	// ProcessNotFound and ProcessNotExecutable: an exec pool's command
	// could not be started because there is no such program (a shell's
	// exit status 127), or it cannot be executed (126).
	ProcessNotFound      = "not_found"
	ProcessNotExecutable = "not_executable"
)

// Values of Header.Stream in an output message.
const (
	StreamStdout = "stdout"
	StreamStderr = "stderr"
)

// Values of Header.Mode in a cancel message.
const (
	CancelSoft = "soft" // cancel only if still queued (the default when mode is absent)
	CancelHard = "hard" // also kill the process if the task is running
)

// Values of Header.State in a cancel_reply message.
const (
	StateQueued  = "queued"  // the submission was queued (or held)
	StateRunning = "running" // the task was running
	StateDone    = "done"    // the submission had already finished
	StateUnknown = "unknown" // no submission with that id on this connection
)

// Values of Header.Code in an error message. CodeVersion is the only one the
// handshake uses; the others are recommended for request errors.
const (
	CodeVersion     = "version"      // hello missing or protocol version unsupported
	CodeInvalid     = "invalid"      // a request field is missing or out of range
	CodeUnknownPool = "unknown_pool" // no pool of that name
	CodeProtocol    = "protocol"     // unknown message type or message out of sequence
	CodeInternal    = "internal"     // the server failed
	CodeForbidden   = "forbidden"    // the peer may not make this request (an admin operation)
	CodeBusy        = "busy"         // the server refuses the connection: too many (handshake, caps)
)

// Header is the JSON header of every frame of both protocols. It is one flat
// struct: each message uses the fields listed for it in docs/protocol.md and
// leaves the others at their zero value, which is omitted on the wire. A
// receiver treats an absent field as its zero value and ignores JSON members
// it does not know.
//
// A Header is a plain value: it is not safe for concurrent mutation, but
// [Conn.Write] only reads it. Maps and slices in a Header returned by
// [Conn.Read] are freshly allocated and owned by the caller.
type Header struct {
	// Type is the message type (a Type* constant); required.
	Type string `json:"type"`
	// ID is the client-chosen id of a submission or request, echoed in every
	// message about it; also the task id in the worker protocol. Ids are
	// non-zero (0 means "none" and is omitted).
	ID uint64 `json:"id,omitempty"`

	// Version is the protocol version (hello, welcome).
	Version int `json:"version,omitempty"`
	// Client is a free-text client name (hello).
	Client string `json:"client,omitempty"`
	// Server is a free-text server name and version (welcome).
	Server string `json:"server,omitempty"`
	// Pools lists the pool names the server serves (welcome).
	Pools []string `json:"pools,omitempty"`
	// PID is a process id: the worker running the task (running and final
	// messages), or the worker itself (worker hello).
	PID int `json:"pid,omitempty"`
	// Leaf is the cgroup leaf (worker cgroup name) the task runs in.
	Leaf string `json:"leaf,omitempty"`
	// InitError is set in a worker hello when the worker's initializer
	// failed.
	InitError string `json:"init_error,omitempty"`

	// Pool names a pool (submit, stats, status, set_env, recycle).
	Pool string `json:"pool,omitempty"`
	// Priority orders queued tasks: lower runs first; >= 0 (submit).
	Priority int `json:"priority,omitempty"`
	// TimeoutMS is the run-time limit in milliseconds, 0 = pool default
	// (submit, task, timeout).
	TimeoutMS int64 `json:"timeout_ms,omitempty"`
	// QueueTimeoutMS is the longest time the task may wait before it starts,
	// in milliseconds, 0 = no limit (submit).
	QueueTimeoutMS int64 `json:"queue_timeout_ms,omitempty"`
	// MemoryMax is the memory limit in bytes for the task's cgroup, 0 = pool
	// default (submit).
	MemoryMax int64 `json:"memory_max,omitempty"`
	// Env holds environment variables: additions (submit, task) or the new
	// set (set_env).
	Env map[string]string `json:"env,omitempty"`
	// Argv is the command line for exec pools (submit).
	Argv []string `json:"argv,omitempty"`
	// Cwd is the working directory of an exec pool's command: an absolute
	// path, "" for the daemon's own (submit). The command runs there as
	// the user the pool runs it as, who needs search permission on it.
	Cwd string `json:"cwd,omitempty"`

	// Affinity names the program a task belongs to (submit, worker pools):
	// a worker runs tasks of one (peer uid, affinity) pair only, so that one
	// client's code is never loaded into a worker that then serves another.
	// At most MaxAffinity printable ASCII bytes.
	Affinity string `json:"affinity,omitempty"`
	// StreamOutput asks for an exec command's stdout and stderr in output
	// messages as they are written, before the final result, instead of
	// in the result's payload cut at the pool's output limit (submit).
	StreamOutput bool `json:"stream_output,omitempty"`
	// MaxOutput bounds an exec command's stdout and stderr together, in
	// bytes: past it the command is killed and ends as process_error
	// output_limit; 0 = no bound (submit).
	MaxOutput int64 `json:"max_output,omitempty"`
	// Hold asks the server to delay acceptance while the backlog is full
	// instead of rejecting with queue_full (submit).
	Hold bool `json:"hold,omitempty"`

	// Reason is a machine-readable reason: a Reject* constant (rejected) or
	// a Process* constant (process_error).
	Reason string `json:"reason,omitempty"`
	// Code is a machine-readable error code, a Code* constant (error).
	Code string `json:"code,omitempty"`
	// Message is human-readable text (error, rejected, task_error,
	// process_error, cancelled).
	Message string `json:"message,omitempty"`
	// Traceback is the task's formatted traceback (task_error).
	Traceback string `json:"traceback,omitempty"`

	// ExitCode is a process exit status (result of exec pools,
	// process_error).
	ExitCode int `json:"exit_code,omitempty"`
	// Signal is the signal that killed the process (process_error).
	Signal int `json:"signal,omitempty"`
	// MemoryPeak is the cgroup's peak memory use in bytes (process_error).
	MemoryPeak int64 `json:"memory_peak,omitempty"`
	// StdoutLen is the number of payload bytes that are stdout; the rest is
	// stderr (result of exec pools).
	StdoutLen int64 `json:"stdout_len,omitempty"`
	// StdoutTruncated reports that stdout was cut to the pool's limit.
	StdoutTruncated bool `json:"stdout_truncated,omitempty"`
	// StderrTruncated reports that stderr was cut to the pool's limit.
	StderrTruncated bool `json:"stderr_truncated,omitempty"`
	// Stream names the stream of an output message: StreamStdout or
	// StreamStderr (output).
	Stream string `json:"stream,omitempty"`
	// RSS is the worker's resident set size in bytes after trimming
	// (trimmed).
	RSS int64 `json:"rss,omitempty"`

	// Mode is the cancel mode, CancelSoft or CancelHard (cancel).
	Mode string `json:"mode,omitempty"`
	// OK reports whether the cancel took effect (cancel_reply).
	OK bool `json:"ok,omitempty"`
	// State is the submission's state when the cancel arrived, a State*
	// constant (cancel_reply).
	State string `json:"state,omitempty"`

	// Stats is the server-defined statistics document (stats_reply).
	Stats json.RawMessage `json:"stats,omitempty"`
	// Status is the server-defined status document (status_reply).
	Status json.RawMessage `json:"status,omitempty"`

	// Replace makes set_env replace the pool's extra environment instead of
	// adding to it (set_env).
	Replace bool `json:"replace,omitempty"`
	// Wait makes shutdown answer only once all running tasks have finished
	// (shutdown).
	Wait bool `json:"wait,omitempty"`
	// CancelFutures makes shutdown cancel every queued task (shutdown).
	CancelFutures bool `json:"cancel_futures,omitempty"`
	// DeadlineMS bounds a shutdown: tasks still running after it are killed
	// (hard-cancelled); 0 = no deadline (shutdown).
	DeadlineMS int64 `json:"deadline_ms,omitempty"`
}

// Frame is one header plus its payload, as written by [Conn.WriteBatch].
type Frame struct {
	Header  Header // must have a non-empty Type
	Payload []byte // may be nil; not retained after WriteBatch returns
}

// Err returns a [*RemoteError] built from h if h is an error frame, and nil
// otherwise. It does not block.
func (h *Header) Err() error {
	if h.Type != TypeError {
		return nil
	}
	return &RemoteError{ID: h.ID, Code: h.Code, Message: h.Message}
}

// IsFinal reports whether a server→client message of type t ends a
// submission: rejected, or one of the terminal outcomes (result, task_error,
// timeout, process_error, cancelled, queue_timeout). Exactly one final
// message is sent for every submit.
func IsFinal(t string) bool {
	switch t {
	case TypeRejected, TypeResult, TypeTaskError, TypeTimeout,
		TypeProcessError, TypeCancelled, TypeQueueTimeout:
		return true
	}
	return false
}

// MaxCwd bounds a submit's cwd (Linux's PATH_MAX).
const MaxCwd = 4096

// MaxDurationMS bounds every duration on the wire (timeout_ms,
// queue_timeout_ms, deadline_ms): about 34 years. A larger value would
// overflow a time.Duration, and a deadline past it means "never" anyway:
// a client that wants no limit sends 0.
const MaxDurationMS = 1 << 40

// MaxPriority bounds a submit's priority.
const MaxPriority = 1<<31 - 1

// MaxAffinity bounds the length of a submit's affinity.
const MaxAffinity = 256

// ValidateRequest checks the structural rules of a client→server request
// header (submit, cancel, stats, status, set_env, recycle, shutdown): id
// present, numeric fields within their ranges (durations at most
// MaxDurationMS, priorities at most MaxPriority), cancel mode known, environment
// names well formed, no NUL bytes in argv. It does not check anything that
// depends on the server's configuration (pool names, limits). It returns nil
// or an error wrapping [ErrInvalidRequest]; other message types return nil.
// It does not block and does not modify h.
func (h *Header) ValidateRequest() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s: %s", ErrInvalidRequest, h.Type, fmt.Sprintf(format, args...))
	}
	switch h.Type {
	case TypeSubmit, TypeCancel, TypeStats, TypeStatus, TypeSetEnv, TypeRecycle, TypeShutdown:
	default:
		return nil
	}
	if h.ID == 0 {
		return bad("id missing (ids are non-zero)")
	}
	switch h.Type {
	case TypeSubmit:
		switch {
		case h.Priority < 0 || h.Priority > MaxPriority:
			return bad("priority %d is not in 0..%d", h.Priority, MaxPriority)
		case h.TimeoutMS < 0 || h.TimeoutMS > MaxDurationMS:
			return bad("timeout_ms %d is not in 0..%d", h.TimeoutMS, int64(MaxDurationMS))
		case h.QueueTimeoutMS < 0 || h.QueueTimeoutMS > MaxDurationMS:
			return bad("queue_timeout_ms %d is not in 0..%d", h.QueueTimeoutMS, int64(MaxDurationMS))
		case h.MemoryMax < 0:
			return bad("memory_max %d < 0", h.MemoryMax)
		case h.MaxOutput < 0:
			return bad("max_output %d < 0", h.MaxOutput)
		case len(h.Affinity) > MaxAffinity:
			return bad("affinity is %d bytes, more than %d", len(h.Affinity), MaxAffinity)
		}
		for i := 0; i < len(h.Affinity); i++ {
			if c := h.Affinity[i]; c < 0x21 || c > 0x7e {
				return bad("affinity byte %d (%#x) is not printable ASCII", i, c)
			}
		}
		if err := validEnv(h.Env); err != "" {
			return bad("%s", err)
		}
		for i, a := range h.Argv {
			if strings.IndexByte(a, 0) >= 0 {
				return bad("argv[%d] contains a NUL byte", i)
			}
		}
		switch {
		case h.Cwd == "":
		case !strings.HasPrefix(h.Cwd, "/"):
			return bad("cwd %q is not an absolute path", h.Cwd)
		case strings.IndexByte(h.Cwd, 0) >= 0:
			return bad("cwd contains a NUL byte")
		case len(h.Cwd) > MaxCwd:
			return bad("cwd is %d bytes, more than %d", len(h.Cwd), MaxCwd)
		}
	case TypeCancel:
		if h.Mode != "" && h.Mode != CancelSoft && h.Mode != CancelHard {
			return bad("mode %q is neither %q nor %q", h.Mode, CancelSoft, CancelHard)
		}
	case TypeSetEnv:
		if err := validEnv(h.Env); err != "" {
			return bad("%s", err)
		}
	case TypeShutdown:
		if h.DeadlineMS < 0 || h.DeadlineMS > MaxDurationMS {
			return bad("deadline_ms %d is not in 0..%d", h.DeadlineMS, int64(MaxDurationMS))
		}
	}
	return nil
}

func validEnv(env map[string]string) string {
	for k, v := range env {
		switch {
		case k == "":
			return "env has an empty variable name"
		case strings.ContainsAny(k, "=\x00"):
			return fmt.Sprintf("env name %q contains '=' or NUL", k)
		case strings.IndexByte(v, 0) >= 0:
			return fmt.Sprintf("env value of %q contains a NUL byte", k)
		}
	}
	return ""
}
