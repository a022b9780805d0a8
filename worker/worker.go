package worker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime/debug"
	"syscall"

	"github.com/cgpool/cgpool/ipc"
	"github.com/prometheus/procfs"
)

// Task is one unit of work. Payload is owned by the handler.
type Task struct {
	ID      uint64
	Payload []byte
	// Env holds the task's environment additions; Serve has set them in the
	// process environment for the duration of the call.
	Env map[string]string
}

// Handler runs one task and returns its result, or an error that the client
// receives as a task error (its text is the message).
type Handler func(ctx context.Context, t *Task) ([]byte, error)

// Options are the worker's hooks.
type Options struct {
	// Init runs once before the first task. If it fails, the worker still
	// serves tasks; the error is reported to the supervisor, which logs and
	// counts it (the policy Deadpool follows for initializers).
	Init func() error
	// Final runs when the supervisor asks the worker to exit gracefully.
	Final func()
	// FD is the protocol socket; 0 means 3.
	FD int
}

// Serve runs the worker protocol on fd 3 with default options. It blocks
// until the supervisor says exit (nil) or the socket fails (the error).
func Serve(h Handler) error { return ServeWith(h, Options{}) }

// ServeWith is Serve with hooks.
func ServeWith(h Handler, o Options) error {
	fd := o.FD
	if fd == 0 {
		fd = 3
	}
	f := os.NewFile(uintptr(fd), "cgpool-worker")
	if f == nil {
		return fmt.Errorf("worker: fd %d is not open: start this program from cgpool", fd)
	}
	// Programs a task starts must not inherit the socket: one that outlived
	// the worker would keep it open, and the supervisor would not see the
	// worker's end on it.
	syscall.CloseOnExec(fd)
	return serve(ipc.NewConn(f), h, o)
}

func serve(c *ipc.Conn, h Handler, o Options) error {
	defer c.Close()
	hello := ipc.Header{Type: ipc.TypeHello, PID: os.Getpid(), Version: ipc.ProtocolVersion}
	if o.Init != nil {
		if err := o.Init(); err != nil {
			hello.InitError = err.Error()
		}
	}
	if err := c.Write(&hello, nil); err != nil {
		return fmt.Errorf("worker: hello: %w", err)
	}
	ctx := context.Background()
	for {
		m, payload, err := c.Read()
		if errors.Is(err, io.EOF) {
			return nil // the supervisor went away
		}
		if err != nil {
			return fmt.Errorf("worker: read: %w", err)
		}
		switch m.Type {
		case ipc.TypeTask:
			reply := run(ctx, h, &Task{ID: m.ID, Payload: payload, Env: m.Env})
			if err := c.Write(&reply.h, reply.payload); err != nil {
				return fmt.Errorf("worker: reply to task %d: %w", m.ID, err)
			}
		case ipc.TypeTrim:
			debug.FreeOSMemory()
			if err := c.Write(&ipc.Header{Type: ipc.TypeTrimmed, RSS: rss()}, nil); err != nil {
				return err
			}
		case ipc.TypeExit:
			if o.Final != nil {
				o.Final()
			}
			return nil
		default:
			return fmt.Errorf("worker: unexpected message %q", m.Type)
		}
	}
}

type frame struct {
	h       ipc.Header
	payload []byte
}

// run calls the handler with the task's environment in place, and turns a
// panic into a task error, so that one bad task does not cost the worker.
func run(ctx context.Context, h Handler, t *Task) (out frame) {
	restore := setEnv(t.Env)
	defer restore()
	defer func() {
		if r := recover(); r != nil {
			out = frame{h: ipc.Header{Type: ipc.TypeTaskError, ID: t.ID, Message: fmt.Sprintf("panic: %v", r), Traceback: string(debug.Stack())}}
		}
	}()
	res, err := h(ctx, t)
	if err != nil {
		return frame{h: ipc.Header{Type: ipc.TypeTaskError, ID: t.ID, Message: err.Error()}}
	}
	return frame{h: ipc.Header{Type: ipc.TypeResult, ID: t.ID}, payload: res}
}

func setEnv(env map[string]string) func() {
	if len(env) == 0 {
		return func() {}
	}
	type old struct {
		v  string
		ok bool
	}
	saved := make(map[string]old, len(env))
	for k, v := range env {
		ov, ok := os.LookupEnv(k)
		saved[k] = old{ov, ok}
		os.Setenv(k, v)
	}
	return func() {
		for k, o := range saved {
			if o.ok {
				os.Setenv(k, o.v)
			} else {
				os.Unsetenv(k)
			}
		}
	}
}

// rss is the process's resident set size in bytes (VmRSS), 0 if unknown.
func rss() int64 {
	p, err := procfs.Self()
	if err != nil {
		return 0
	}
	st, err := p.NewStatus()
	if err != nil {
		return 0
	}
	return int64(st.VmRSS)
}
