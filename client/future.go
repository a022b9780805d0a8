package client

import (
	"context"
	"io"
	"sync"
	"time"

	"github.com/cgpool/cgpool/ipc"
)

// Task describes one submission (message "submit"). The zero value of
// every optional field means "the pool's default" or "none".
type Task struct {
	// Pool is the name of the pool to run on (one of [Client.Pools]).
	Pool string
	// Payload is the task's input for worker pools, passed unchanged to the
	// worker. Exec pools take no payload (leave it nil). Submit does not
	// retain it: the caller may reuse it once Submit returns.
	Payload []byte
	// Argv is the command line for exec pools (required there, forbidden
	// in worker pools). A non-empty Argv also makes the [Result] carry
	// Stdout and Stderr.
	Argv []string
	// Dir is the working directory of an exec pool's command: an absolute
	// path as the supervisor sees the file system; "" means the
	// supervisor's own. The command runs there as the user the pool runs
	// it as, who needs permission to enter it.
	Dir string
	// Env adds environment variables for this task only. Names must be
	// non-empty and contain neither '=' nor NUL.
	Env map[string]string
	// Priority orders queued tasks, >= 0; lower runs first.
	Priority int
	// Timeout is the run-time limit, counted from the start on a worker; 0
	// means the pool's default. It is sent in milliseconds, rounded up.
	Timeout time.Duration
	// QueueTimeout is the longest the task may wait in the queue before it
	// starts, counted from acceptance; 0 means no limit. Sent in
	// milliseconds, rounded up.
	QueueTimeout time.Duration
	// MemoryMax is the memory limit in bytes for the task's cgroup, at most
	// the pool's; 0 means the pool's.
	MemoryMax int64
	// Stdout and Stderr, if set (exec pools), receive the command's output
	// as it is written, in output messages before the result (the submit
	// asks for stream_output): nothing is cut at the pool's output limit,
	// and the Result's Stdout and Stderr stay empty. They are written from
	// the goroutine that reads the connection, so a writer that blocks
	// holds every Future of this Client, and then, through the server, the
	// command itself (backpressure; its timeout still runs). Set both or
	// neither; a nil one drops its stream.
	Stdout, Stderr io.Writer
	// MaxOutput bounds an exec command's stdout and stderr together, in
	// bytes: past it the command is killed and the Future ends with a
	// *ProcessError of reason "output_limit". 0: no bound.
	MaxOutput int64
	// Hold asks the server, when the pool's backlog is full, to withhold
	// acceptance until there is room instead of rejecting the task with
	// queue_full.
	Hold bool
}

// Result is the outcome "result": the task succeeded. For exec pools that
// means the command ran to an exit, whatever its ExitCode: a non-zero exit
// status is not an error.
type Result struct {
	// Payload is the whole payload of the result message: the worker's
	// output for worker pools, stdout followed by stderr for exec pools.
	Payload []byte
	// ExitCode is the command's exit status (exec pools).
	ExitCode int
	// Stdout and Stderr are the command's output (exec pools), split from
	// Payload by the server's stdout_len; they share Payload's memory. Both
	// are nil for worker pools.
	Stdout, Stderr []byte
	// StdoutTruncated and StderrTruncated report that the output was cut
	// to the pool's output limit (exec pools without Task.Stdout/Stderr).
	StdoutTruncated, StderrTruncated bool
	// WriteErr is the first error of Task.Stdout or Task.Stderr; the rest
	// of that stream was dropped.
	WriteErr error
	// PID is the worker (or command) that ran the task, 0 if unknown.
	PID int
	// Leaf is the cgroup the task ran in, "" if unknown.
	Leaf string
}

// Future is the handle of one submission, returned by [Client.Submit]. All
// its methods are safe for concurrent use. A Future needs no cleanup: it
// is forgotten by the Client once its outcome has arrived (or the
// connection is gone), whether or not anyone waits for it.
type Future struct {
	c            *Client
	id           uint64
	exec         bool
	timeout      time.Duration
	queueTimeout time.Duration

	stdout, stderr io.Writer // Task.Stdout, Task.Stderr
	writeErr       error     // guarded by the read role: only the reader writes output

	accepted chan struct{} // closed when acceptance is decided
	done     chan struct{} // closed when the outcome is known

	mu         sync.Mutex
	pid        int
	leaf       string
	running    bool
	isAccepted bool  // accepted is closed
	finished   bool  // done is closed (or about to be)
	watched    bool  // counted in Client.watched until finished
	acceptErr  error // valid once accepted is closed
	res        *Result
	err        error // valid once done is closed
}

func newFuture(c *Client, id uint64, t *Task) *Future {
	return &Future{
		c:            c,
		id:           id,
		exec:         len(t.Argv) > 0,
		stdout:       t.Stdout,
		stderr:       t.Stderr,
		timeout:      t.Timeout,
		queueTimeout: t.QueueTimeout,
		accepted:     make(chan struct{}),
		done:         make(chan struct{}),
	}
}

// ID returns the submission's id on the connection (the "id" of its
// messages). It does not block.
func (f *Future) ID() uint64 { return f.id }

// PID returns the pid of the worker (or exec command) running the task: 0
// until the "running" message has arrived (and for tasks that never
// started). It keeps its value after the task ends. It does not block.
func (f *Future) PID() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.watchLocked()
	return f.pid
}

// Leaf returns the cgroup the task runs in, "" until the "running" message
// has arrived. It keeps its value after the task ends. It does not block.
func (f *Future) Leaf() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.watchLocked()
	return f.leaf
}

// Running reports whether the task is running now: the "running" message
// has arrived and the outcome has not. It does not block.
func (f *Future) Running() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.watchLocked()
	return f.running
}

// Done returns a channel that is closed once the outcome is known (a final
// message arrived or the connection is gone); [Future.Wait] then returns at
// once.
func (f *Future) Done() <-chan struct{} {
	f.mu.Lock()
	f.watchLocked()
	f.mu.Unlock()
	return f.done
}

// watchLocked makes the Client read for this Future even when nobody
// waits for it: its PID, Running state or Done channel is being looked at.
// f.mu is held (lock order: f.mu, then c.mu).
func (f *Future) watchLocked() {
	if f.watched || f.finished {
		return
	}
	f.watched = true
	f.c.mu.Lock()
	f.c.watchLocked()
	f.c.mu.Unlock()
}

// Wait blocks until the submission's outcome is known or ctx ends. Ending
// ctx only stops the wait: it does not cancel the task (use
// [Future.Cancel]), and Wait may be called again.
//
// It returns the *Result and nil for the outcome "result", and otherwise a
// nil Result and one of: *RejectedError, *TaskError, *TimeoutError,
// *ProcessError, *CancelledError, *QueueTimeoutError (use errors.As); an
// *ipc.RemoteError if the server answered the submission with an error
// frame (a protocol violation on its part); an error wrapping [ErrClosed]
// if the connection went away first (the task may or may not have run); or
// ctx.Err(). Every caller gets the same *Result; treat it as read-only.
func (f *Future) Wait(ctx context.Context) (*Result, error) {
	if err := f.c.await(ctx, f.done); err != nil {
		select {
		case <-f.done:
		default:
			return nil, err
		}
	}
	return f.res, f.err
}

// Accepted blocks until the server has decided whether to take the
// submission or ctx ends. It returns nil once the submission was accepted
// (the "accepted" message, or any later message that implies it); the
// *RejectedError if it was rejected; the *CancelledError if it was
// cancelled while held (submitted with Hold and never accepted); an error
// wrapping [ErrClosed] if the connection went away first; or ctx.Err().
// Ending ctx does not cancel the task.
func (f *Future) Accepted(ctx context.Context) error {
	if err := f.c.await(ctx, f.accepted); err != nil {
		select {
		case <-f.accepted:
		default:
			return err
		}
	}
	return f.acceptErr
}

// Cancel asks the server to cancel the submission and blocks until its
// "cancel_reply" arrives or ctx ends. With hard false (mode "soft") only a
// task that has not started yet is cancelled; with hard true a running
// task's cgroup is killed as well. It returns the reply's ok: true if this
// cancel ends the submission, which then completes with a
// *CancelledError (Wait still has to be used to see it; the two messages
// can arrive in either order). false means the task is running (soft
// mode) or already done.
//
// If the outcome is already known, Cancel returns false and nil without
// sending anything. Errors: ctx.Err() (the cancel may still take effect:
// it was sent), an error wrapping [ErrClosed], or an *ipc.RemoteError if
// the server answered with an error frame.
func (f *Future) Cancel(ctx context.Context, hard bool) (bool, error) {
	select {
	case <-f.done:
		return false, nil
	default:
	}
	if err := ctx.Err(); err != nil {
		return false, err
	}
	mode := ipc.CancelSoft
	if hard {
		mode = ipc.CancelHard
	}
	h, err := f.c.cancel(ctx, f.id, mode)
	if err != nil {
		return false, err
	}
	return h.OK, nil
}

// output writes one output message to the Task's writer. Called by the
// goroutine that holds the read role, so writes are in order.
func (f *Future) output(h *ipc.Header, payload []byte) {
	w := f.stdout
	if h.Stream == ipc.StreamStderr {
		w = f.stderr
	}
	if w == nil || f.writeErr != nil {
		return
	}
	if _, err := w.Write(payload); err != nil {
		f.writeErr = err
	}
}

// handle applies one server message about this submission. Called by the
// goroutine that holds the read role.
func (f *Future) handle(h *ipc.Header, payload []byte) {
	switch h.Type {
	case ipc.TypeAccepted:
		f.mu.Lock()
		f.acceptLocked(nil)
		f.mu.Unlock()
		return
	case ipc.TypeRunning:
		f.mu.Lock()
		if !f.finished {
			f.pid, f.leaf = h.PID, h.Leaf
			f.running = true
			f.acceptLocked(nil)
		}
		f.mu.Unlock()
		return
	}

	f.mu.Lock()
	if f.finished {
		f.mu.Unlock()
		return
	}
	// A final message may repeat (or first report) pid and leaf.
	if h.PID != 0 {
		f.pid = h.PID
	}
	if h.Leaf != "" {
		f.leaf = h.Leaf
	}
	pid, leaf := f.pid, f.leaf
	var (
		res       *Result
		err       error
		acceptErr error
	)
	switch h.Type {
	case ipc.TypeResult:
		res = f.result(h, payload, pid, leaf)
		res.WriteErr = f.writeErr
	case ipc.TypeRejected:
		err = &RejectedError{ID: f.id, Reason: h.Reason, Message: h.Message}
		acceptErr = err
	case ipc.TypeTaskError:
		err = &TaskError{ID: f.id, PID: pid, Leaf: leaf, Message: h.Message, Traceback: h.Traceback, Payload: payload}
	case ipc.TypeTimeout:
		d := time.Duration(h.TimeoutMS) * time.Millisecond
		if d == 0 {
			d = f.timeout
		}
		err = &TimeoutError{ID: f.id, PID: pid, Leaf: leaf, Timeout: d}
	case ipc.TypeProcessError:
		err = &ProcessError{ID: f.id, PID: pid, Leaf: leaf, Reason: h.Reason, Signal: h.Signal,
			ExitCode: h.ExitCode, MemoryPeak: h.MemoryPeak, Message: h.Message}
	case ipc.TypeCancelled:
		err = &CancelledError{ID: f.id, PID: pid, Leaf: leaf, Message: h.Message}
		acceptErr = err // only used if it was never accepted (held)
	case ipc.TypeQueueTimeout:
		err = &QueueTimeoutError{ID: f.id, PID: pid, Leaf: leaf, QueueTimeout: f.queueTimeout}
	case ipc.TypeError:
		err = h.Err()
		acceptErr = err
	default:
		f.mu.Unlock()
		return
	}
	f.finishLocked(res, err, acceptErr)
	f.mu.Unlock()
}

// result builds the Result of a "result" message.
func (f *Future) result(h *ipc.Header, payload []byte, pid int, leaf string) *Result {
	r := &Result{
		Payload:         payload,
		ExitCode:        h.ExitCode,
		StdoutTruncated: h.StdoutTruncated,
		StderrTruncated: h.StderrTruncated,
		PID:             pid,
		Leaf:            leaf,
	}
	if f.exec || h.StdoutLen != 0 || h.StdoutTruncated || h.StderrTruncated {
		n := int(min(max(h.StdoutLen, 0), int64(len(payload))))
		r.Stdout = payload[:n:n]
		r.Stderr = payload[n:]
	}
	return r
}

// acceptLocked decides acceptance (first decision wins). f.mu is held.
func (f *Future) acceptLocked(err error) {
	if f.isAccepted {
		return
	}
	f.isAccepted = true
	f.acceptErr = err
	close(f.accepted)
}

// finishLocked records the outcome and wakes waiters; acceptErr is what
// Accepted reports if acceptance was still undecided. f.mu is held.
func (f *Future) finishLocked(res *Result, err, acceptErr error) {
	if f.finished {
		return
	}
	f.finished = true
	f.running = false
	f.res, f.err = res, err
	f.acceptLocked(acceptErr)
	close(f.done)
	if f.watched {
		f.c.mu.Lock()
		f.c.watched--
		f.c.mu.Unlock()
	}
}

// fail ends the future with err (the connection is gone).
func (f *Future) fail(err error) {
	f.mu.Lock()
	f.finishLocked(nil, err, err)
	f.mu.Unlock()
}
