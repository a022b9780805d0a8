package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/cgpool/cgpool/ipc"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// testTimeout bounds every wait of these tests; nothing sleeps.
const testTimeout = 10 * time.Second

var testPools = []string{"default", "exec"}

// ---------------------------------------------------------------------------
// Fake server

type serverMode int

const (
	scripted serverMode = iota // handshake, then hand the conn to the test
	echo                       // handshake, then answer everything itself
	refuse                     // answer the hello with error{code:"version"}
	silent                     // accept and never answer
)

type fakeServer struct {
	mode    serverMode
	path    string
	ln      *ipc.Listener
	hellos  chan ipc.Header  // hellos received (scripted, echo)
	conns   chan *serverConn // handshaken connections (scripted) or raw (silent)
	mu      sync.Mutex
	stopped bool
	open    []*ipc.Conn
	wg      sync.WaitGroup
}

// startServer listens on a fresh socket (in a private directory with a
// short path: sun_path is 108 bytes) and stops on test cleanup, closing
// every connection and joining its goroutines.
func startServer(tb testing.TB, mode serverMode) *fakeServer {
	tb.Helper()
	dir, err := os.MkdirTemp("", "cgpc")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { os.RemoveAll(dir) })
	path := filepath.Join(dir, "s.sock")
	ln, err := ipc.Listen(path, ipc.ListenOptions{})
	if err != nil {
		tb.Fatal(err)
	}
	s := &fakeServer{
		mode:   mode,
		path:   path,
		ln:     ln,
		hellos: make(chan ipc.Header, 64),
		conns:  make(chan *serverConn, 64),
	}
	s.wg.Add(1)
	go s.acceptLoop()
	tb.Cleanup(s.stop)
	return s
}

func (s *fakeServer) stop() {
	s.ln.Close()
	s.mu.Lock()
	s.stopped = true
	for _, c := range s.open {
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
}

func (s *fakeServer) acceptLoop() {
	defer s.wg.Done()
	for {
		nc, err := s.ln.Accept()
		if err != nil {
			return
		}
		c := ipc.NewConn(nc)
		s.mu.Lock()
		if s.stopped {
			s.mu.Unlock()
			c.Close()
			return
		}
		s.open = append(s.open, c)
		s.mu.Unlock()
		sc := &serverConn{nc: nc, c: c}
		switch s.mode {
		case silent:
			s.conns <- sc
			continue
		case refuse:
			c.Read()
			c.Write(&ipc.Header{Type: ipc.TypeError, Code: ipc.CodeVersion, Message: "go away"}, nil)
			c.Close()
			continue
		}
		hello, err := ipc.ServerHello(c, ipc.Header{Server: "fake/1", Pools: testPools})
		if err != nil {
			c.Close()
			continue
		}
		s.hellos <- hello
		if s.mode == echo {
			s.wg.Add(1)
			go s.serveEcho(c)
		} else {
			s.conns <- sc
		}
	}
}

// serveEcho answers submit with accepted, running and a result echoing the
// payload (one batch), stats with an empty document, cancel with "done".
func (s *fakeServer) serveEcho(c *ipc.Conn) {
	defer s.wg.Done()
	for {
		h, p, err := c.Read()
		if err != nil {
			return
		}
		switch h.Type {
		case ipc.TypeSubmit:
			pid := 1000 + int(h.ID%7)
			leaf := "w-" + strconv.Itoa(int(h.ID%7))
			err = c.WriteBatch([]ipc.Frame{
				{Header: ipc.Header{Type: ipc.TypeAccepted, ID: h.ID}},
				{Header: ipc.Header{Type: ipc.TypeRunning, ID: h.ID, PID: pid, Leaf: leaf}},
				{Header: ipc.Header{Type: ipc.TypeResult, ID: h.ID, PID: pid, Leaf: leaf}, Payload: p},
			})
		case ipc.TypeStats:
			err = c.Write(&ipc.Header{Type: ipc.TypeStatsReply, ID: h.ID, Stats: json.RawMessage(`{}`)}, nil)
		case ipc.TypeCancel:
			err = c.Write(&ipc.Header{Type: ipc.TypeCancelReply, ID: h.ID, State: ipc.StateDone}, nil)
		default:
			err = c.Write(&ipc.Header{Type: ipc.TypeError, ID: h.ID, Code: ipc.CodeProtocol}, nil)
		}
		if err != nil {
			return
		}
	}
}

// accept returns the next connection handed over by the accept loop.
func (s *fakeServer) accept(t *testing.T) *serverConn {
	t.Helper()
	select {
	case sc := <-s.conns:
		return sc
	case <-time.After(testTimeout):
		t.Fatal("fake server: no connection")
		return nil
	}
}

func (s *fakeServer) hello(t *testing.T) ipc.Header {
	t.Helper()
	select {
	case h := <-s.hellos:
		return h
	case <-time.After(testTimeout):
		t.Fatal("fake server: no hello")
		return ipc.Header{}
	}
}

// serverConn is the server end of one connection, driven by a test.
type serverConn struct {
	nc *net.UnixConn
	c  *ipc.Conn
}

func (s *serverConn) read(t *testing.T) (ipc.Header, []byte) {
	t.Helper()
	s.nc.SetReadDeadline(time.Now().Add(testTimeout))
	h, p, err := s.c.Read()
	if err != nil {
		t.Fatalf("fake server: read: %v", err)
	}
	return h, p
}

func (s *serverConn) expect(t *testing.T, typ string) (ipc.Header, []byte) {
	t.Helper()
	h, p := s.read(t)
	if h.Type != typ {
		t.Fatalf("fake server: got %q (%+v), want %q", h.Type, h, typ)
	}
	return h, p
}

func (s *serverConn) send(t *testing.T, h ipc.Header, payload []byte) {
	t.Helper()
	s.nc.SetWriteDeadline(time.Now().Add(testTimeout))
	if err := s.c.Write(&h, payload); err != nil {
		t.Fatalf("fake server: write %s: %v", h.Type, err)
	}
}

// ---------------------------------------------------------------------------
// Helpers

func testCtx(tb testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	tb.Cleanup(cancel)
	return ctx
}

func dial(tb testing.TB, path string, opts ...Option) *Client {
	tb.Helper()
	c, err := Dial(testCtx(tb), path, opts...)
	if err != nil {
		tb.Fatalf("Dial: %v", err)
	}
	tb.Cleanup(func() { c.Close() })
	return c
}

// setup starts a scripted server and returns a connected client and the
// server's end of its connection.
func setup(t *testing.T, opts ...Option) (*Client, *serverConn) {
	t.Helper()
	srv := startServer(t, scripted)
	c := dial(t, srv.path, opts...)
	return c, srv.accept(t)
}

type outcome[T any] struct {
	v   T
	err error
}

// async runs fn in a goroutine; the returned channel gets its results.
func async[T any](fn func() (T, error)) <-chan outcome[T] {
	ch := make(chan outcome[T], 1)
	go func() {
		v, err := fn()
		ch <- outcome[T]{v, err}
	}()
	return ch
}

func recv[T any](t *testing.T, ch <-chan outcome[T]) outcome[T] {
	t.Helper()
	select {
	case o := <-ch:
		return o
	case <-time.After(testTimeout):
		t.Fatal("call did not return")
		return outcome[T]{}
	}
}

// barrier does a stats round trip. The reader handles frames in order, so
// once it returns every frame the server sent before has been dispatched;
// and the server's next frame being the stats proves the client sent
// nothing else meanwhile.
func barrier(t *testing.T, c *Client, sc *serverConn) {
	t.Helper()
	ch := async(func() (json.RawMessage, error) { return c.Stats(testCtx(t), "barrier") })
	h, _ := sc.expect(t, ipc.TypeStats)
	sc.send(t, ipc.Header{Type: ipc.TypeStatsReply, ID: h.ID, Stats: json.RawMessage(`{}`)}, nil)
	if o := recv(t, ch); o.err != nil {
		t.Fatalf("barrier: %v", o.err)
	}
}

func submit(t *testing.T, c *Client, task Task) *Future {
	t.Helper()
	f, err := c.Submit(testCtx(t), task)
	if err != nil {
		t.Fatalf("Submit: %v", err)
	}
	return f
}

func wait(t *testing.T, f *Future) (*Result, error) {
	t.Helper()
	return f.Wait(testCtx(t))
}

// ---------------------------------------------------------------------------
// Tests

func TestHandshake(t *testing.T) {
	srv := startServer(t, scripted)
	c := dial(t, srv.path, WithClientName("test/1"))
	h := srv.hello(t)
	if h.Client != "test/1" || h.Version != ipc.ProtocolVersion {
		t.Fatalf("hello: %+v", h)
	}
	if !slices.Equal(c.Pools(), testPools) || c.Server() != "fake/1" {
		t.Fatalf("Pools %v, Server %q", c.Pools(), c.Server())
	}
	c.Pools()[0] = "changed"
	if c.Pools()[0] != "default" {
		t.Fatal("Pools must return a copy")
	}

	dial(t, srv.path)
	if h := srv.hello(t); h.Client != DefaultClientName || DefaultClientName != "cgpool-go" {
		t.Fatalf("default client name: %+v", h)
	}
}

func TestDialVersionRefused(t *testing.T) {
	srv := startServer(t, refuse)
	c, err := Dial(testCtx(t), srv.path)
	var ve *ipc.VersionError
	if !errors.As(err, &ve) || ve.Message != "go away" {
		t.Fatalf("Dial = %v, %v; want *ipc.VersionError", c, err)
	}
}

func TestDialNoServer(t *testing.T) {
	_, err := Dial(testCtx(t), filepath.Join(t.TempDir(), "none.sock"))
	if err == nil {
		t.Fatal("Dial of a missing socket succeeded")
	}
}

func TestDialContextCancelledDuringHandshake(t *testing.T) {
	srv := startServer(t, silent)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ch := async(func() (*Client, error) { return Dial(ctx, srv.path) })
	srv.accept(t) // connected; the server never answers the hello
	cancel()
	o := recv(t, ch)
	if !errors.Is(o.err, context.Canceled) || o.v != nil {
		t.Fatalf("Dial = %v, %v; want context.Canceled", o.v, o.err)
	}
}

func TestSubmitLifecycle(t *testing.T) {
	c, sc := setup(t)
	task := Task{
		Pool:         "default",
		Payload:      []byte("input"),
		Env:          map[string]string{"A": "1"},
		Priority:     3,
		Timeout:      1500 * time.Microsecond, // rounds up to 2 ms, never to 0
		QueueTimeout: 5 * time.Second,
		MemoryMax:    1 << 20,
		Hold:         true,
	}
	f := submit(t, c, task)
	if f.ID() != 1 {
		t.Fatalf("first id %d, want 1", f.ID())
	}
	h, p := sc.expect(t, ipc.TypeSubmit)
	if h.ID != 1 || h.Pool != "default" || h.Priority != 3 || h.TimeoutMS != 2 || h.QueueTimeoutMS != 5000 ||
		h.MemoryMax != 1<<20 || !h.Hold || h.Env["A"] != "1" || len(h.Argv) != 0 || string(p) != "input" {
		t.Fatalf("submit frame: %+v %q", h, p)
	}
	select {
	case <-f.Done():
		t.Fatal("done before any answer")
	default:
	}
	if f.PID() != 0 || f.Leaf() != "" || f.Running() {
		t.Fatal("pid/leaf/running before the running message")
	}

	sc.send(t, ipc.Header{Type: ipc.TypeAccepted, ID: h.ID}, nil)
	if err := f.Accepted(testCtx(t)); err != nil {
		t.Fatalf("Accepted: %v", err)
	}
	if f.PID() != 0 || f.Running() {
		t.Fatal("accepted is not running")
	}

	sc.send(t, ipc.Header{Type: ipc.TypeRunning, ID: h.ID, PID: 4242, Leaf: "w-1"}, nil)
	barrier(t, c, sc)
	if f.PID() != 4242 || f.Leaf() != "w-1" || !f.Running() {
		t.Fatalf("after running: pid %d leaf %q running %v", f.PID(), f.Leaf(), f.Running())
	}

	sc.send(t, ipc.Header{Type: ipc.TypeResult, ID: h.ID, PID: 4242, Leaf: "w-1"}, []byte("output"))
	res, err := wait(t, f)
	if err != nil {
		t.Fatalf("Wait: %v", err)
	}
	if string(res.Payload) != "output" || res.PID != 4242 || res.Leaf != "w-1" || res.Stdout != nil || res.Stderr != nil {
		t.Fatalf("result: %+v", res)
	}
	select {
	case <-f.Done():
	default:
		t.Fatal("Done not closed after Wait returned")
	}
	if f.Running() || f.PID() != 4242 {
		t.Fatal("after the outcome: not running, pid kept")
	}
	// Ids come from one counter shared with requests (the barrier took 2).
	if f2 := submit(t, c, Task{Pool: "default"}); f2.ID() != 3 {
		t.Fatalf("next id %d, want 3", f2.ID())
	}
}

func TestOutcomes(t *testing.T) {
	c, sc := setup(t)
	cases := []struct {
		name    string
		task    Task
		running bool // send running{pid 77, leaf w-7} first
		final   ipc.Header
		payload []byte
		check   func(t *testing.T, err error)
	}{
		{
			name: "task_error", running: true,
			final:   ipc.Header{Type: ipc.TypeTaskError, Message: "ValueError: bad", Traceback: "Traceback..."},
			payload: []byte("pickled"),
			check: func(t *testing.T, err error) {
				var e *TaskError
				if !errors.As(err, &e) || e.Message != "ValueError: bad" || e.Traceback != "Traceback..." ||
					string(e.Payload) != "pickled" || e.PID != 77 || e.Leaf != "w-7" {
					t.Fatalf("%#v", err)
				}
			},
		},
		{
			name: "timeout", running: true,
			final: ipc.Header{Type: ipc.TypeTimeout, TimeoutMS: 1500},
			check: func(t *testing.T, err error) {
				var e *TimeoutError
				if !errors.As(err, &e) || e.Timeout != 1500*time.Millisecond || e.PID != 77 || e.Leaf != "w-7" {
					t.Fatalf("%#v", err)
				}
			},
		},
		{
			name: "timeout without timeout_ms", running: true, task: Task{Timeout: 2 * time.Second},
			final: ipc.Header{Type: ipc.TypeTimeout},
			check: func(t *testing.T, err error) {
				var e *TimeoutError
				if !errors.As(err, &e) || e.Timeout != 2*time.Second {
					t.Fatalf("%#v", err)
				}
			},
		},
		{
			name: "process_error oom", running: true,
			final: ipc.Header{Type: ipc.TypeProcessError, Reason: ipc.ProcessOOM, Signal: 9, MemoryPeak: 1 << 20, Message: "oom-kill"},
			check: func(t *testing.T, err error) {
				var e *ProcessError
				if !errors.As(err, &e) || !e.OOM() || e.Signal != 9 || e.MemoryPeak != 1<<20 || e.Message != "oom-kill" ||
					e.PID != 77 || e.Leaf != "w-7" {
					t.Fatalf("%#v", err)
				}
			},
		},
		{
			name: "process_error crashed", running: true,
			final: ipc.Header{Type: ipc.TypeProcessError, Reason: ipc.ProcessCrashed, ExitCode: 3},
			check: func(t *testing.T, err error) {
				var e *ProcessError
				if !errors.As(err, &e) || e.OOM() || e.Reason != ipc.ProcessCrashed || e.ExitCode != 3 || e.PID != 77 {
					t.Fatalf("%#v", err)
				}
			},
		},
		{
			name: "cancelled", running: true,
			final: ipc.Header{Type: ipc.TypeCancelled, Message: "hard cancel"},
			check: func(t *testing.T, err error) {
				var e *CancelledError
				if !errors.As(err, &e) || e.Message != "hard cancel" || e.PID != 77 || e.Leaf != "w-7" {
					t.Fatalf("%#v", err)
				}
			},
		},
		{
			name: "queue_timeout", task: Task{QueueTimeout: time.Second},
			final: ipc.Header{Type: ipc.TypeQueueTimeout},
			check: func(t *testing.T, err error) {
				var e *QueueTimeoutError
				if !errors.As(err, &e) || e.QueueTimeout != time.Second || e.PID != 0 || e.Leaf != "" {
					t.Fatalf("%#v", err)
				}
			},
		},
		{
			name:  "pid and leaf from the final message only",
			final: ipc.Header{Type: ipc.TypeProcessError, Reason: ipc.ProcessKilled, Signal: 15, PID: 88, Leaf: "w-8"},
			check: func(t *testing.T, err error) {
				var e *ProcessError
				if !errors.As(err, &e) || e.Reason != ipc.ProcessKilled || e.PID != 88 || e.Leaf != "w-8" {
					t.Fatalf("%#v", err)
				}
			},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tc.task.Pool = "default"
			f := submit(t, c, tc.task)
			h, _ := sc.expect(t, ipc.TypeSubmit)
			sc.send(t, ipc.Header{Type: ipc.TypeAccepted, ID: h.ID}, nil)
			if tc.running {
				sc.send(t, ipc.Header{Type: ipc.TypeRunning, ID: h.ID, PID: 77, Leaf: "w-7"}, nil)
			}
			final := tc.final
			final.ID = h.ID
			sc.send(t, final, tc.payload)
			res, err := wait(t, f)
			if res != nil || err == nil {
				t.Fatalf("Wait = %+v, %v; want an error", res, err)
			}
			if err.Error() == "" {
				t.Fatal("empty error text")
			}
			tc.check(t, err)
			if err := f.Accepted(testCtx(t)); err != nil {
				t.Fatalf("Accepted after an accepted task: %v", err)
			}
			if f.Running() {
				t.Fatal("running after the outcome")
			}
		})
	}
}

func TestRejected(t *testing.T) {
	c, sc := setup(t)
	sentinels := map[string]error{
		ipc.RejectQueueFull:   ErrQueueFull,
		ipc.RejectDraining:    ErrDraining,
		ipc.RejectInvalid:     ErrInvalid,
		ipc.RejectTooLarge:    ErrTooLarge,
		ipc.RejectUnknownPool: ErrUnknownPool,
	}
	for reason, want := range sentinels {
		f := submit(t, c, Task{Pool: "default"})
		h, _ := sc.expect(t, ipc.TypeSubmit)
		sc.send(t, ipc.Header{Type: ipc.TypeRejected, ID: h.ID, Reason: reason, Message: "sorry"}, nil)
		_, err := wait(t, f)
		var re *RejectedError
		if !errors.As(err, &re) || re.Reason != reason || re.Message != "sorry" || re.ID != h.ID {
			t.Fatalf("%s: %v", reason, err)
		}
		for _, s := range sentinels {
			if got := errors.Is(err, s); got != (s == want) {
				t.Fatalf("%s: errors.Is(err, %v) = %v", reason, s, got)
			}
		}
		if aerr := f.Accepted(testCtx(t)); aerr != err {
			t.Fatalf("%s: Accepted = %v, want the rejection", reason, aerr)
		}
	}
}

func TestRejectedQueueFull(t *testing.T) {
	c, sc := setup(t)
	f := submit(t, c, Task{Pool: "default"})
	h, _ := sc.expect(t, ipc.TypeSubmit)
	sc.send(t, ipc.Header{Type: ipc.TypeRejected, ID: h.ID, Reason: ipc.RejectQueueFull}, nil)
	if err := f.Accepted(testCtx(t)); !errors.Is(err, ErrQueueFull) {
		t.Fatalf("Accepted = %v, want ErrQueueFull", err)
	}
	if _, err := wait(t, f); !errors.Is(err, ErrQueueFull) || errors.Is(err, ErrDraining) {
		t.Fatalf("Wait = %v, want ErrQueueFull", err)
	}
}

func TestExecResult(t *testing.T) {
	c, sc := setup(t)
	f := submit(t, c, Task{Pool: "exec", Argv: []string{"/bin/sh", "-c", "echo hello; echo err >&2; exit 3"}})
	h, p := sc.expect(t, ipc.TypeSubmit)
	if !slices.Equal(h.Argv, []string{"/bin/sh", "-c", "echo hello; echo err >&2; exit 3"}) || len(p) != 0 {
		t.Fatalf("submit: %+v %q", h, p)
	}
	sc.send(t, ipc.Header{Type: ipc.TypeResult, ID: h.ID, PID: 9, Leaf: "w-0", ExitCode: 3, StdoutLen: 6,
		StderrTruncated: true}, []byte("hello\nerr\n"))
	res, err := wait(t, f)
	if err != nil {
		t.Fatalf("Wait: %v (a non-zero exit is not an error)", err)
	}
	if string(res.Stdout) != "hello\n" || string(res.Stderr) != "err\n" || res.ExitCode != 3 ||
		res.StdoutTruncated || !res.StderrTruncated || string(res.Payload) != "hello\nerr\n" || res.PID != 9 {
		t.Fatalf("result: %+v", res)
	}
	_ = append(res.Stdout, 'X') // must not clobber Stderr
	if string(res.Stderr) != "err\n" {
		t.Fatal("Stdout and Stderr overlap")
	}

	// stdout_len absent (= 0): everything is stderr.
	f = submit(t, c, Task{Pool: "exec", Argv: []string{"false"}})
	h, _ = sc.expect(t, ipc.TypeSubmit)
	sc.send(t, ipc.Header{Type: ipc.TypeResult, ID: h.ID}, []byte("only stderr"))
	res, err = wait(t, f)
	if err != nil || len(res.Stdout) != 0 || string(res.Stderr) != "only stderr" || res.ExitCode != 0 {
		t.Fatalf("Wait = %+v, %v", res, err)
	}
}

// TestExecStreamedOutput: with Task.Stdout/Stderr the submit asks for
// stream_output, output messages reach the writers in order before the
// result, and a failing writer is reported in the Result.
func TestExecStreamedOutput(t *testing.T) {
	c, sc := setup(t)
	var so, se bytes.Buffer
	f := submit(t, c, Task{Pool: "exec", Argv: []string{"x"}, Stdout: &so, Stderr: &se, MaxOutput: 1000})
	h, _ := sc.expect(t, ipc.TypeSubmit)
	if !h.StreamOutput || h.MaxOutput != 1000 {
		t.Fatalf("submit: stream_output %v, max_output %d", h.StreamOutput, h.MaxOutput)
	}
	sc.send(t, ipc.Header{Type: ipc.TypeAccepted, ID: h.ID}, nil)
	for i, chunk := range []string{"one ", "err1 ", "two\n", "err2\n"} {
		stream := ipc.StreamStdout
		if i%2 == 1 {
			stream = ipc.StreamStderr
		}
		sc.send(t, ipc.Header{Type: ipc.TypeOutput, ID: h.ID, Stream: stream}, []byte(chunk))
	}
	sc.send(t, ipc.Header{Type: ipc.TypeResult, ID: h.ID, ExitCode: 2}, nil)
	res, err := wait(t, f)
	if err != nil || res.ExitCode != 2 || so.String() != "one two\n" || se.String() != "err1 err2\n" || len(res.Stdout) != 0 || res.WriteErr != nil {
		t.Fatalf("Wait = %+v, %v; stdout %q stderr %q", res, err, so.String(), se.String())
	}

	f = submit(t, c, Task{Pool: "exec", Argv: []string{"x"}, Stdout: failWriter{}})
	h, _ = sc.expect(t, ipc.TypeSubmit)
	sc.send(t, ipc.Header{Type: ipc.TypeOutput, ID: h.ID, Stream: ipc.StreamStdout}, []byte("lost"))
	sc.send(t, ipc.Header{Type: ipc.TypeResult, ID: h.ID}, nil)
	if res, err := wait(t, f); err != nil || res.WriteErr == nil {
		t.Fatalf("Wait = %+v, %v; want the writer's error in WriteErr", res, err)
	}
}

type failWriter struct{}

func (failWriter) Write([]byte) (int, error) { return 0, errors.New("disk full") }

func TestCancel(t *testing.T) {
	c, sc := setup(t)

	// Hard cancel of a running task: cancelled, then the reply.
	f := submit(t, c, Task{Pool: "default"})
	h, _ := sc.expect(t, ipc.TypeSubmit)
	sc.send(t, ipc.Header{Type: ipc.TypeAccepted, ID: h.ID}, nil)
	sc.send(t, ipc.Header{Type: ipc.TypeRunning, ID: h.ID, PID: 5, Leaf: "w-5"}, nil)
	ch := async(func() (bool, error) { return f.Cancel(testCtx(t), true) })
	m, _ := sc.expect(t, ipc.TypeCancel)
	if m.ID != f.ID() || m.Mode != ipc.CancelHard {
		t.Fatalf("cancel frame: %+v", m)
	}
	sc.send(t, ipc.Header{Type: ipc.TypeCancelled, ID: h.ID, PID: 5, Leaf: "w-5", Message: "killed by cancel"}, nil)
	sc.send(t, ipc.Header{Type: ipc.TypeCancelReply, ID: h.ID, OK: true, State: ipc.StateRunning}, nil)
	if o := recv(t, ch); !o.v || o.err != nil {
		t.Fatalf("Cancel = %v, %v; want true", o.v, o.err)
	}
	var ce *CancelledError
	if _, err := wait(t, f); !errors.As(err, &ce) || ce.PID != 5 || ce.Leaf != "w-5" {
		t.Fatalf("Wait = %v, want *CancelledError", err)
	}

	// Cancel of a finished future sends nothing.
	if ok, err := f.Cancel(testCtx(t), true); ok || err != nil {
		t.Fatalf("Cancel after the outcome = %v, %v", ok, err)
	}
	barrier(t, c, sc)

	// Soft cancel of a running task: reply first, not ok; the task goes on.
	f = submit(t, c, Task{Pool: "default"})
	h, _ = sc.expect(t, ipc.TypeSubmit)
	sc.send(t, ipc.Header{Type: ipc.TypeRunning, ID: h.ID, PID: 6}, nil)
	ch = async(func() (bool, error) { return f.Cancel(testCtx(t), false) })
	if m, _ := sc.expect(t, ipc.TypeCancel); m.Mode != ipc.CancelSoft || m.ID != h.ID {
		t.Fatalf("cancel frame: %+v", m)
	}
	sc.send(t, ipc.Header{Type: ipc.TypeCancelReply, ID: h.ID, State: ipc.StateRunning}, nil)
	if o := recv(t, ch); o.v || o.err != nil {
		t.Fatalf("soft Cancel = %v, %v; want false", o.v, o.err)
	}
	sc.send(t, ipc.Header{Type: ipc.TypeResult, ID: h.ID}, []byte("ok"))
	if res, err := wait(t, f); err != nil || string(res.Payload) != "ok" {
		t.Fatalf("Wait = %v, %v", res, err)
	}

	// A held submission cancelled before acceptance: Accepted reports it.
	f = submit(t, c, Task{Pool: "default", Hold: true})
	h, _ = sc.expect(t, ipc.TypeSubmit)
	ch = async(func() (bool, error) { return f.Cancel(testCtx(t), false) })
	sc.expect(t, ipc.TypeCancel)
	sc.send(t, ipc.Header{Type: ipc.TypeCancelReply, ID: h.ID, OK: true, State: ipc.StateQueued}, nil)
	sc.send(t, ipc.Header{Type: ipc.TypeCancelled, ID: h.ID, Message: "cancelled before it started"}, nil)
	if o := recv(t, ch); !o.v || o.err != nil {
		t.Fatalf("Cancel = %v, %v", o.v, o.err)
	}
	if err := f.Accepted(testCtx(t)); !errors.As(err, &ce) || ce.PID != 0 {
		t.Fatalf("Accepted = %v, want *CancelledError", err)
	}

	// A cancel answered by an error frame.
	f = submit(t, c, Task{Pool: "default"})
	h, _ = sc.expect(t, ipc.TypeSubmit)
	ch = async(func() (bool, error) { return f.Cancel(testCtx(t), false) })
	sc.expect(t, ipc.TypeCancel)
	sc.send(t, ipc.Header{Type: ipc.TypeError, ID: h.ID, Code: ipc.CodeInternal, Message: "boom"}, nil)
	var re *ipc.RemoteError
	if o := recv(t, ch); !errors.As(o.err, &re) || re.Code != ipc.CodeInternal {
		t.Fatalf("Cancel = %v, %v; want *ipc.RemoteError", o.v, o.err)
	}
	select {
	case <-f.Done():
		t.Fatal("an error answering the cancel must not end the submission")
	default:
	}
}

func TestCancelAbandonedKeepsOrder(t *testing.T) {
	c, sc := setup(t)
	f := submit(t, c, Task{Pool: "default"})
	h, _ := sc.expect(t, ipc.TypeSubmit)

	// The first Cancel gives up before its reply arrives.
	ctx, cancel := context.WithCancel(context.Background())
	first := async(func() (bool, error) { return f.Cancel(ctx, false) })
	sc.expect(t, ipc.TypeCancel)
	cancel()
	if o := recv(t, first); !errors.Is(o.err, context.Canceled) {
		t.Fatalf("abandoned Cancel = %v, %v", o.v, o.err)
	}
	second := async(func() (bool, error) { return f.Cancel(testCtx(t), true) })
	sc.expect(t, ipc.TypeCancel)
	// The first reply belongs to the abandoned cancel, the second to ours.
	sc.send(t, ipc.Header{Type: ipc.TypeCancelReply, ID: h.ID, State: ipc.StateRunning}, nil)
	sc.send(t, ipc.Header{Type: ipc.TypeCancelReply, ID: h.ID, OK: true, State: ipc.StateRunning}, nil)
	if o := recv(t, second); !o.v || o.err != nil {
		t.Fatalf("second Cancel = %v, %v; want true", o.v, o.err)
	}
}

func TestRequests(t *testing.T) {
	c, sc := setup(t)
	ctx := testCtx(t)

	stats := async(func() (json.RawMessage, error) { return c.Stats(ctx, "default") })
	h, _ := sc.expect(t, ipc.TypeStats)
	if h.Pool != "default" || h.ID != 1 {
		t.Fatalf("stats frame: %+v", h)
	}
	sc.send(t, ipc.Header{Type: ipc.TypeStatsReply, ID: h.ID, Stats: json.RawMessage(`{"tasks_received":3}`)}, nil)
	o := recv(t, stats)
	var doc struct {
		TasksReceived int `json:"tasks_received"`
	}
	if o.err != nil || json.Unmarshal(o.v, &doc) != nil || doc.TasksReceived != 3 {
		t.Fatalf("Stats = %s, %v", o.v, o.err)
	}

	status := async(func() (json.RawMessage, error) { return c.Status(ctx, "") })
	h, _ = sc.expect(t, ipc.TypeStatus)
	if h.Pool != "" || h.ID != 2 {
		t.Fatalf("status frame: %+v", h)
	}
	sc.send(t, ipc.Header{Type: ipc.TypeStatusReply, ID: h.ID, Status: json.RawMessage(`{"default":{"workers":[]}}`)}, nil)
	if o := recv(t, status); o.err != nil || string(o.v) != `{"default":{"workers":[]}}` {
		t.Fatalf("Status = %s, %v", o.v, o.err)
	}

	setEnv := async(func() (struct{}, error) {
		return struct{}{}, c.SetEnv(ctx, "default", map[string]string{"X": "1", "Y": ""}, true)
	})
	h, _ = sc.expect(t, ipc.TypeSetEnv)
	if h.Pool != "default" || !h.Replace || len(h.Env) != 2 || h.Env["X"] != "1" {
		t.Fatalf("set_env frame: %+v", h)
	}
	sc.send(t, ipc.Header{Type: ipc.TypeOK, ID: h.ID}, nil)
	if o := recv(t, setEnv); o.err != nil {
		t.Fatalf("SetEnv: %v", o.err)
	}

	recycle := async(func() (struct{}, error) { return struct{}{}, c.Recycle(ctx, "default") })
	h, _ = sc.expect(t, ipc.TypeRecycle)
	sc.send(t, ipc.Header{Type: ipc.TypeOK, ID: h.ID}, nil)
	if o := recv(t, recycle); o.err != nil || h.Pool != "default" {
		t.Fatalf("Recycle: %v (%+v)", o.err, h)
	}

	// Errors come back as *ipc.RemoteError.
	bad := async(func() (json.RawMessage, error) { return c.Stats(ctx, "nope") })
	h, _ = sc.expect(t, ipc.TypeStats)
	sc.send(t, ipc.Header{Type: ipc.TypeError, ID: h.ID, Code: ipc.CodeUnknownPool, Message: "no pool nope"}, nil)
	var re *ipc.RemoteError
	if o := recv(t, bad); !errors.As(o.err, &re) || re.Code != ipc.CodeUnknownPool || re.ID != h.ID {
		t.Fatalf("Stats(nope) = %s, %v", o.v, o.err)
	}
	setEnvBad := async(func() (struct{}, error) { return struct{}{}, c.SetEnv(ctx, "nope", nil, false) })
	h, _ = sc.expect(t, ipc.TypeSetEnv)
	sc.send(t, ipc.Header{Type: ipc.TypeError, ID: h.ID, Code: ipc.CodeUnknownPool}, nil)
	if o := recv(t, setEnvBad); !errors.As(o.err, &re) {
		t.Fatalf("SetEnv(nope) = %v", o.err)
	}

	// A bad variable name is refused locally.
	if err := c.SetEnv(ctx, "default", map[string]string{"A=B": "x"}, false); !errors.Is(err, ErrInvalid) {
		t.Fatalf("SetEnv(A=B) = %v, want ErrInvalid", err)
	}

	// A request whose ctx ends is abandoned; its late reply is ignored.
	rctx, cancel := context.WithCancel(ctx)
	late := async(func() (json.RawMessage, error) { return c.Stats(rctx, "default") })
	lh, _ := sc.expect(t, ipc.TypeStats)
	cancel()
	if o := recv(t, late); !errors.Is(o.err, context.Canceled) {
		t.Fatalf("abandoned Stats = %v", o.err)
	}
	sc.send(t, ipc.Header{Type: ipc.TypeStatsReply, ID: lh.ID, Stats: json.RawMessage(`{"late":1}`)}, nil)

	shutdown := async(func() (struct{}, error) { return struct{}{}, c.Shutdown(ctx, true, true, 1500*time.Millisecond) })
	h, _ = sc.expect(t, ipc.TypeShutdown)
	if !h.Wait || !h.CancelFutures || h.DeadlineMS != 1500 {
		t.Fatalf("shutdown frame: %+v", h)
	}
	sc.send(t, ipc.Header{Type: ipc.TypeOK, ID: h.ID}, nil)
	if o := recv(t, shutdown); o.err != nil {
		t.Fatalf("Shutdown: %v", o.err)
	}
	shutdown = async(func() (struct{}, error) { return struct{}{}, c.Shutdown(ctx, false, false, 0) })
	h, _ = sc.expect(t, ipc.TypeShutdown)
	if h.Wait || h.CancelFutures || h.DeadlineMS != 0 {
		t.Fatalf("shutdown frame: %+v", h)
	}
	sc.send(t, ipc.Header{Type: ipc.TypeOK, ID: h.ID}, nil)
	if o := recv(t, shutdown); o.err != nil {
		t.Fatalf("Shutdown: %v", o.err)
	}
}

func TestSubmitRefusedLocally(t *testing.T) {
	c, sc := setup(t, WithMaxPayload(64))
	ctx := testCtx(t)
	for _, task := range []Task{
		{Pool: "default", Priority: -1},
		{Pool: "default", Timeout: -time.Microsecond},
		{Pool: "default", Env: map[string]string{"": "x"}},
		{Pool: "exec", Argv: []string{"a\x00b"}},
	} {
		if f, err := c.Submit(ctx, task); f != nil || !errors.Is(err, ErrInvalid) || !errors.Is(err, ipc.ErrInvalidRequest) {
			t.Fatalf("Submit(%+v) = %v, %v; want ErrInvalid", task, f, err)
		}
	}
	var fe *ipc.FrameError
	if f, err := c.Submit(ctx, Task{Pool: "default", Payload: make([]byte, 65)}); f != nil || !errors.As(err, &fe) {
		t.Fatalf("Submit(too large) = %v, %v; want *ipc.FrameError", f, err)
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if f, err := c.Submit(cctx, Task{Pool: "default"}); f != nil || !errors.Is(err, context.Canceled) {
		t.Fatalf("Submit(cancelled ctx) = %v, %v", f, err)
	}
	barrier(t, c, sc) // nothing was sent, and the connection still works
}

func TestConcurrentSubmits(t *testing.T) {
	srv := startServer(t, echo)
	c := dial(t, srv.path)
	ctx := testCtx(t)
	const goroutines, perG = 8, 125
	var wg sync.WaitGroup
	ids := make(chan uint64, goroutines*perG)
	for g := range goroutines {
		wg.Go(func() {
			futures := make([]*Future, perG)
			payloads := make([][]byte, perG)
			for i := range perG {
				payloads[i] = fmt.Appendf(nil, "g%d-i%d-%s", g, i, bytes.Repeat([]byte{'x'}, i))
				f, err := c.Submit(ctx, Task{Pool: "default", Payload: payloads[i]})
				if err != nil {
					t.Errorf("Submit: %v", err)
					return
				}
				futures[i] = f
				ids <- f.ID()
			}
			for i, f := range futures {
				res, err := f.Wait(ctx)
				if err != nil {
					t.Errorf("Wait %d: %v", f.ID(), err)
					return
				}
				if !bytes.Equal(res.Payload, payloads[i]) || res.PID == 0 || res.PID != f.PID() || res.Leaf == "" {
					t.Errorf("task %d: got %q pid %d, want %q", f.ID(), res.Payload, res.PID, payloads[i])
					return
				}
			}
		})
	}
	wg.Wait()
	close(ids)
	seen := make(map[uint64]bool)
	for id := range ids {
		if id == 0 || seen[id] {
			t.Fatalf("id %d zero or duplicated", id)
		}
		seen[id] = true
	}
	if len(seen) != goroutines*perG && !t.Failed() {
		t.Fatalf("%d ids, want %d", len(seen), goroutines*perG)
	}
	c.mu.Lock()
	left := len(c.futures)
	c.mu.Unlock()
	if left != 0 {
		t.Fatalf("%d futures still registered", left)
	}
}

func TestServerClosesConnection(t *testing.T) {
	c, sc := setup(t)
	f := submit(t, c, Task{Pool: "default"})
	h, _ := sc.expect(t, ipc.TypeSubmit)
	sc.send(t, ipc.Header{Type: ipc.TypeAccepted, ID: h.ID}, nil)
	stats := async(func() (json.RawMessage, error) { return c.Stats(testCtx(t), "") })
	sc.expect(t, ipc.TypeStats)
	sc.send(t, ipc.Header{Type: ipc.TypeError, Code: ipc.CodeProtocol, Message: "you did something"}, nil)
	sc.c.Close()

	_, err := wait(t, f)
	var re *ipc.RemoteError
	if !errors.Is(err, ErrClosed) || !errors.As(err, &re) || re.Code != ipc.CodeProtocol {
		t.Fatalf("Wait = %v; want ErrClosed wrapping the connection-level error", err)
	}
	if o := recv(t, stats); !errors.Is(o.err, ErrClosed) {
		t.Fatalf("pending Stats = %v, want ErrClosed", o.err)
	}
	if _, err := c.Submit(testCtx(t), Task{Pool: "default"}); !errors.Is(err, ErrClosed) {
		t.Fatalf("Submit after the close = %v, want ErrClosed", err)
	}
	if err := c.Recycle(testCtx(t), "default"); !errors.Is(err, ErrClosed) {
		t.Fatalf("Recycle after the close = %v, want ErrClosed", err)
	}
	if err := c.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
}

func TestServerClosesPlainEOF(t *testing.T) {
	c, sc := setup(t)
	f := submit(t, c, Task{Pool: "default"})
	sc.expect(t, ipc.TypeSubmit)
	sc.c.Close()
	if _, err := wait(t, f); !errors.Is(err, ErrClosed) {
		t.Fatalf("Wait = %v; want ErrClosed", err)
	}
	if err := f.Accepted(testCtx(t)); !errors.Is(err, ErrClosed) {
		t.Fatalf("Accepted = %v; want ErrClosed", err)
	}
}

func TestCloseWaitsForReader(t *testing.T) {
	c, sc := setup(t)
	f := submit(t, c, Task{Pool: "default"})
	sc.expect(t, ipc.TypeSubmit)
	stats := async(func() (json.RawMessage, error) { return c.Stats(testCtx(t), "") })
	sc.expect(t, ipc.TypeStats)
	cancelCh := async(func() (bool, error) { return f.Cancel(testCtx(t), false) })
	sc.expect(t, ipc.TypeCancel)

	if err := c.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	select {
	case <-c.bgDone:
	default:
		t.Fatal("Close returned before the background goroutine exited")
	}
	select {
	case <-f.Done():
	default:
		t.Fatal("pending future not done after Close")
	}
	if _, err := f.Wait(testCtx(t)); !errors.Is(err, ErrClosed) {
		t.Fatalf("Wait after Close = %v, want ErrClosed", err)
	}
	if o := recv(t, stats); !errors.Is(o.err, ErrClosed) {
		t.Fatalf("pending Stats = %v, want ErrClosed", o.err)
	}
	if o := recv(t, cancelCh); !errors.Is(o.err, ErrClosed) {
		t.Fatalf("pending Cancel = %v, want ErrClosed", o.err)
	}
	if _, err := c.Submit(testCtx(t), Task{Pool: "default"}); !errors.Is(err, ErrClosed) {
		t.Fatalf("Submit after Close = %v, want ErrClosed", err)
	}
	if err := c.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	// The server sees the connection end.
	sc.nc.SetReadDeadline(time.Now().Add(testTimeout))
	if _, _, err := sc.c.Read(); err != io.EOF {
		t.Fatalf("server read after Close: %v, want EOF", err)
	}
}

func TestWaitContext(t *testing.T) {
	c, sc := setup(t)
	f := submit(t, c, Task{Pool: "default"})
	h, _ := sc.expect(t, ipc.TypeSubmit)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := f.Wait(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("Wait(cancelled) = %v", err)
	}
	if err := f.Accepted(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("Accepted(cancelled) = %v", err)
	}
	// Ending the wait did not cancel anything: the outcome still arrives.
	sc.send(t, ipc.Header{Type: ipc.TypeResult, ID: h.ID}, []byte("late"))
	if res, err := wait(t, f); err != nil || string(res.Payload) != "late" {
		t.Fatalf("Wait = %v, %v", res, err)
	}
}

func TestMillis(t *testing.T) {
	for _, tc := range []struct {
		d    time.Duration
		want int64
	}{
		{0, 0}, {time.Nanosecond, 1}, {time.Millisecond, 1}, {1500 * time.Microsecond, 2},
		{time.Second, 1000}, {-time.Nanosecond, -1}, {-time.Millisecond, -1}, {-1500 * time.Microsecond, -2},
	} {
		if got := millis(tc.d); got != tc.want {
			t.Errorf("millis(%v) = %d, want %d", tc.d, got, tc.want)
		}
	}
}

func TestErrorTexts(t *testing.T) {
	for _, err := range []error{
		&RejectedError{ID: 1, Reason: "queue_full", Message: "backlog 10 full"},
		&TaskError{ID: 2, PID: 3, Leaf: "w-1", Message: "ValueError: x"},
		&TimeoutError{ID: 3, PID: 4, Timeout: time.Second},
		&ProcessError{ID: 4, Leaf: "w-2", Reason: "oom", Signal: 9, MemoryPeak: 100},
		&CancelledError{ID: 5},
		&QueueTimeoutError{ID: 6, QueueTimeout: time.Second},
	} {
		s := err.Error()
		if len(s) < len("cgpool: task 1") || s[:len("cgpool: task ")] != "cgpool: task " {
			t.Errorf("%T: %q", err, s)
		}
	}
}

// ---------------------------------------------------------------------------
// Benchmarks

// BenchmarkRoundTrip measures one Submit + Wait against the echo server
// (accepted, running and result in one batch), one task at a time.
func BenchmarkRoundTrip(b *testing.B) {
	srv := startServer(b, echo)
	c := dial(b, srv.path)
	ctx := testCtx(b)
	payload := []byte("ping")
	b.ReportAllocs()
	for b.Loop() {
		f, err := c.Submit(ctx, Task{Pool: "default", Payload: payload})
		if err != nil {
			b.Fatal(err)
		}
		if _, err := f.Wait(ctx); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkRoundTripParallel is BenchmarkRoundTrip with GOMAXPROCS
// goroutines sharing one Client (pipelined submissions).
func BenchmarkRoundTripParallel(b *testing.B) {
	srv := startServer(b, echo)
	c := dial(b, srv.path)
	ctx := testCtx(b)
	payload := []byte("ping")
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			f, err := c.Submit(ctx, Task{Pool: "default", Payload: payload})
			if err != nil {
				b.Error(err)
				return
			}
			if _, err := f.Wait(ctx); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// TestWaiterReadsItself: with one submission in flight and nobody else
// reading, the goroutine in Wait holds the read role (the answer wakes it
// directly, with no reader goroutine between), and gives it back after.
func TestWaiterReadsItself(t *testing.T) {
	c, sc := setup(t)
	f := submit(t, c, Task{Pool: "default"})
	h, _ := sc.expect(t, ipc.TypeSubmit)
	res := async(func() (*Result, error) { return f.Wait(testCtx(t)) })
	deadline := time.Now().Add(testTimeout)
	for {
		c.mu.Lock()
		role := c.role
		c.mu.Unlock()
		if role == roleWaiter {
			break
		}
		if role == roleBG || time.Now().After(deadline) {
			t.Fatalf("read role %d while one waiter waits, want the waiter's", role)
		}
		time.Sleep(time.Millisecond) // polling the role with a deadline
	}
	sc.send(t, ipc.Header{Type: ipc.TypeResult, ID: h.ID}, []byte("out"))
	if o := recv(t, res); o.err != nil || string(o.v.Payload) != "out" {
		t.Fatalf("Wait = %+v, %v", o.v, o.err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.role != roleNone || len(c.line) != 0 {
		t.Fatalf("after the wait: role %d, %d in line", c.role, len(c.line))
	}
}

// TestWaitInterruptedMidFrame: a waiter that reads and whose context ends
// while a frame is half arrived returns at once; the half frame is kept,
// and the next Wait gets the whole answer.
func TestWaitInterruptedMidFrame(t *testing.T) {
	c, sc := setup(t)
	f := submit(t, c, Task{Pool: "default"})
	h, _ := sc.expect(t, ipc.TypeSubmit)
	var frame bytes.Buffer
	ipc.NewConn(nopRWC{&frame}).Write(&ipc.Header{Type: ipc.TypeResult, ID: h.ID, Message: "whole"}, bytes.Repeat([]byte("r"), 5000))
	raw := frame.Bytes()
	ctx, cancel := context.WithCancel(context.Background())
	res := async(func() (*Result, error) { return f.Wait(ctx) })
	if _, err := sc.nc.Write(raw[:len(raw)/2]); err != nil {
		t.Fatal(err)
	}
	cancel()
	if o := recv(t, res); !errors.Is(o.err, context.Canceled) {
		t.Fatalf("Wait after its context ended = %+v, %v", o.v, o.err)
	}
	if _, err := sc.nc.Write(raw[len(raw)/2:]); err != nil {
		t.Fatal(err)
	}
	r, err := wait(t, f)
	if err != nil || len(r.Payload) != 5000 {
		t.Fatalf("Wait = %+v, %v", r, err)
	}
	barrier(t, c, sc) // the stream is still in sync
}

type nopRWC struct{ io.ReadWriter }

func (nopRWC) Close() error { return nil }

// TestWatchedFutureIsRead: a Future nobody waits for but whose Done
// channel is watched still completes: the background goroutine reads.
func TestWatchedFutureIsRead(t *testing.T) {
	c, sc := setup(t)
	f := submit(t, c, Task{Pool: "default"})
	h, _ := sc.expect(t, ipc.TypeSubmit)
	done := f.Done()
	sc.send(t, ipc.Header{Type: ipc.TypeRunning, ID: h.ID, PID: 77, Leaf: "w-1"}, nil)
	sc.send(t, ipc.Header{Type: ipc.TypeResult, ID: h.ID, PID: 77}, []byte("x"))
	select {
	case <-done:
	case <-time.After(testTimeout):
		t.Fatal("a watched Future was not completed without a waiter")
	}
	if f.PID() != 77 {
		t.Fatalf("pid %d", f.PID())
	}
}

// TestManyInFlightWithoutWaiting: a caller that submits far more than the
// socket buffers hold before it waits for anything does not stall: the
// answers are read meanwhile (the echo server, like cgpool's, stops
// reading a client that does not read its answers).
func TestManyInFlightWithoutWaiting(t *testing.T) {
	srv := startServer(t, echo)
	c := dial(t, srv.path)
	ctx := testCtx(t)
	payload := bytes.Repeat([]byte("p"), 4<<10)
	fs := make([]*Future, 2000) // 8 MiB of answers
	for i := range fs {
		var err error
		if fs[i], err = c.Submit(ctx, Task{Pool: "default", Payload: payload}); err != nil {
			t.Fatalf("Submit %d: %v", i, err)
		}
	}
	for i, f := range fs {
		if res, err := f.Wait(ctx); err != nil || len(res.Payload) != len(payload) {
			t.Fatalf("Wait %d: %v", i, err)
		}
	}
}
