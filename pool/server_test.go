package pool_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cgpool/cgpool/internal/kerneltest"
	"github.com/cgpool/cgpool/ipc"
	"github.com/cgpool/cgpool/oomwatch"
	"github.com/cgpool/cgpool/pool"
	"golang.org/x/sys/unix"
)

// startServer runs a supervisor with one worker pool behind a socket.
func startServer(t *testing.T, mod func(*pool.Config)) (sock string, p *pool.Pool) {
	t.Helper()
	return startServerTB(t, mod)
}

func startServerTB(t testing.TB, mod func(*pool.Config)) (sock string, p *pool.Pool) {
	t.Helper()
	s, p := newPoolOn(t, kerneltest.NewRoot(t), mod)
	dir, err := os.MkdirTemp("", "cgpool-sock")
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(dir, 0o700)
	sock = filepath.Join(dir, "s.sock")
	ln, err := ipc.Listen(sock, ipc.ListenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	srv := pool.NewServer(s, ln, pool.ServerOptions{})
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ctx) }()
	t.Cleanup(func() {
		sctx, scancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer scancel()
		if err := s.Shutdown(sctx, pool.ShutdownOptions{Wait: true, CancelFutures: true}); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		cancel()
		if err := <-served; err != nil {
			t.Errorf("Serve: %v", err)
		}
		if _, err := os.Stat(sock); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("socket file left behind: %v", err)
		}
		os.RemoveAll(dir)
	})
	return sock, p
}

type testClient struct {
	c    *ipc.Conn
	next uint64
}

func connect(t *testing.T, sock string) *testClient {
	t.Helper()
	nc, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	c := ipc.NewConn(nc)
	t.Cleanup(func() { c.Close() })
	if _, err := ipc.ClientHello(c, "test"); err != nil {
		t.Fatal(err)
	}
	return &testClient{c: c}
}

func (tc *testClient) submit(t *testing.T, h ipc.Header, payload string) uint64 {
	t.Helper()
	tc.next++
	h.Type, h.ID = ipc.TypeSubmit, tc.next
	if err := tc.c.Write(&h, []byte(payload)); err != nil {
		t.Fatal(err)
	}
	return tc.next
}

// finals reads frames until n final messages arrived and returns them by id,
// in arrival order.
func (tc *testClient) finals(t *testing.T, n int, onFinal func(ipc.Header)) map[uint64]ipc.Header {
	t.Helper()
	out := map[uint64]ipc.Header{}
	for len(out) < n {
		h, _, err := tc.c.Read()
		if err != nil {
			t.Fatalf("read after %d finals: %v", len(out), err)
		}
		if ipc.IsFinal(h.Type) {
			out[h.ID] = h
			if onFinal != nil {
				onFinal(h)
			}
		}
	}
	return out
}

// TestFairness: one client floods 1,000 tasks at priority 1; a second
// client's 10 tasks at the same priority do not wait for the flood
// (acceptance 11).
func TestFairness(t *testing.T) {
	sock, _ := startServer(t, nil)
	a, b := connect(t, sock), connect(t, sock)
	// A reads on its own goroutine, as any real client does, and reports
	// how many of its tasks have finished.
	aDone := make(chan int, 1000)
	go func() {
		defer close(aDone)
		n := 0
		for n < 1000 {
			h, _, err := a.c.Read()
			if err != nil {
				return
			}
			if ipc.IsFinal(h.Type) {
				n++
				aDone <- n
			}
		}
	}()
	for range 1000 {
		a.submit(t, ipc.Header{Priority: 1}, "echo:a")
	}
	if n, ok := <-aDone; !ok || n < 1 {
		t.Fatal("the flood did not start")
	}
	latest := 0
	aNow := func() int { // how many of A's tasks have finished by now
		for {
			select {
			case n, ok := <-aDone:
				if !ok {
					t.Fatal("A's connection ended")
				}
				latest = n
				continue
			default:
			}
			return latest
		}
	}
	for range 10 {
		b.submit(t, ipc.Header{Priority: 1}, "echo:b")
	}
	// Fairness counts from when B's tasks are in the queue: how many of
	// A's ran before B's were accepted depends only on how fast the
	// machine is.
	accepted, finals, queued := 0, 0, 0
	for finals < 10 {
		h, _, err := b.c.Read()
		if err != nil {
			t.Fatal(err)
		}
		if h.Type == ipc.TypeAccepted {
			if accepted++; accepted == 10 {
				queued = aNow()
			}
		}
		if ipc.IsFinal(h.Type) {
			finals++
		}
	}
	done := aNow()
	if done >= 1000 {
		t.Fatal("the flood finished before the second client's ten tasks did")
	}
	// Round-robin between the two clients: B's ten run within about ten
	// of A's, plus what was running and what A's reader had not read yet;
	// without it they would wait for the rest of the flood (900 and more).
	if ran := done - queued; ran > 100 {
		t.Errorf("%d of the flood's tasks finished while the second client's 10 waited in the queue", ran)
	}
	t.Logf("B's 10 tasks queued when %d of A's 1000 had finished, done when %d had", queued, done)
}

// TestDisconnectAndGarbage: a client that disconnects with tasks queued
// has them cancelled (never run); a client sending a malformed frame is
// disconnected and the others keep working (acceptance 12).
func TestDisconnectAndGarbage(t *testing.T) {
	sock, p := startServer(t, nil)
	keeper := connect(t, sock)
	busy := keeper.submit(t, ipc.Header{}, "sleep:300")
	leaver := connect(t, sock)
	for range 5 {
		leaver.submit(t, ipc.Header{}, "echo:never")
	}
	// Wait until the five are queued, then go away.
	deadline := time.Now().Add(10 * time.Second)
	for p.Stats().TasksQueued < 5 {
		if time.Now().After(deadline) {
			t.Fatalf("queued = %d, want 5", p.Stats().TasksQueued)
		}
		time.Sleep(time.Millisecond) // polling the pool's queue with a deadline
	}
	leaver.c.Close()
	deadline = time.Now().Add(10 * time.Second)
	for p.Stats().TasksCancelled < 5 {
		if time.Now().After(deadline) {
			t.Fatalf("cancelled = %d after the client left, want 5", p.Stats().TasksCancelled)
		}
		time.Sleep(time.Millisecond) // polling with a deadline
	}

	// Garbage: a frame announcing a header larger than the limit.
	nc, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	gc := ipc.NewConn(nc)
	if _, err := ipc.ClientHello(gc, "garbage"); err != nil {
		t.Fatal(err)
	}
	nc.Write([]byte{0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, '{'})
	nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		h, _, err := gc.Read()
		if err != nil {
			if !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, ipc.ErrClosed) {
				var ne net.Error
				if errors.As(err, &ne) && ne.Timeout() {
					t.Fatal("the garbage client was not disconnected")
				}
			}
			break
		}
		if h.Type == ipc.TypeError && h.Code != ipc.CodeProtocol {
			t.Errorf("error frame code %q, want protocol", h.Code)
		}
	}
	next := keeper.submit(t, ipc.Header{}, "echo:still-here")
	got := keeper.finals(t, 2, nil)
	if got[busy].Type != ipc.TypeResult || got[next].Type != ipc.TypeResult {
		t.Errorf("the other client's tasks: %+v", got)
	}
	if st := p.Stats(); st.TasksLaunched != 2 {
		t.Errorf("tasks_launched = %d, want 2 (the leaver's tasks must never run)", st.TasksLaunched)
	}
}

// TestProtocolOutcomes: the running message carries pid and leaf; a
// rejected submit, a queue timeout and a hard cancel give their typed
// final messages.
func TestProtocolOutcomes(t *testing.T) {
	sock, _ := startServer(t, func(c *pool.Config) { c.MaxBacklog = 2 })
	c := connect(t, sock)
	long := c.submit(t, ipc.Header{}, "sleep:5000")
	for {
		h, _, err := c.c.Read()
		if err != nil {
			t.Fatal(err)
		}
		if h.Type == ipc.TypeRunning {
			if h.ID != long || h.PID == 0 || h.Leaf == "" {
				t.Errorf("running %+v", h)
			}
			break
		}
	}
	qt := c.submit(t, ipc.Header{QueueTimeoutMS: 50}, "echo:late")
	x := c.submit(t, ipc.Header{}, "echo:x")
	full := c.submit(t, ipc.Header{}, "echo:full")
	bad := c.submit(t, ipc.Header{Pool: "nope"}, "echo:x")
	got := c.finals(t, 3, nil)
	c.c.Write(&ipc.Header{Type: ipc.TypeCancel, ID: long, Mode: ipc.CancelHard}, nil)
	for id, h := range c.finals(t, 2, nil) {
		got[id] = h
	}
	if got[x].Type != ipc.TypeResult {
		t.Errorf("the task after the cancelled one: %+v", got[x])
	}
	for id, want := range map[uint64]string{long: ipc.TypeCancelled, qt: ipc.TypeQueueTimeout, full: ipc.TypeRejected, bad: ipc.TypeRejected} {
		if got[id].Type != want {
			t.Errorf("id %d: %+v, want %s", id, got[id], want)
		}
	}
	if got[full].Reason != ipc.RejectQueueFull || got[bad].Reason != ipc.RejectUnknownPool {
		t.Errorf("reject reasons %q, %q", got[full].Reason, got[bad].Reason)
	}
}

// TestHeldSubmitsKeepArrivalOrder: held submissions enter the backlog in
// the order they arrived, and a held one can be cancelled.
func TestHeldSubmitsKeepArrivalOrder(t *testing.T) {
	sock, _ := startServer(t, func(c *pool.Config) { c.MaxBacklog = 1 })
	c := connect(t, sock)
	first := c.submit(t, ipc.Header{Hold: true}, "sleep:300")
	var ids []uint64
	for range 20 {
		ids = append(ids, c.submit(t, ipc.Header{Hold: true}, "echo:x"))
	}
	cancelled := ids[10]
	c.c.Write(&ipc.Header{Type: ipc.TypeCancel, ID: cancelled}, nil)
	var order []uint64
	finals := 0
	for finals < 21 {
		h, _, err := c.c.Read()
		if err != nil {
			t.Fatal(err)
		}
		switch {
		case h.Type == ipc.TypeRunning:
			order = append(order, h.ID)
		case ipc.IsFinal(h.Type):
			finals++
			if h.ID == cancelled && h.Type != ipc.TypeCancelled {
				t.Errorf("the cancelled held submission ended with %s", h.Type)
			}
		}
	}
	want := []uint64{first}
	for _, id := range ids {
		if id != cancelled {
			want = append(want, id)
		}
	}
	if fmt.Sprint(order) != fmt.Sprint(want) {
		t.Errorf("start order %v, want arrival order %v", order, want)
	}
}

// TestStartedTaskFrames: a task that starts at once still gets "accepted"
// and "running" (with its pid and leaf) before its final message. A short
// one gets them in the same write as its result; a long one gets them
// while it runs, long before it ends.
func TestStartedTaskFrames(t *testing.T) {
	sock, _ := startServer(t, nil)
	c := connect(t, sock)
	for _, payload := range []string{"echo:x", "sleep:1500"} {
		start := time.Now()
		id := c.submit(t, ipc.Header{}, payload)
		var types []string
		var runningAt time.Duration
		for {
			h, _, err := c.c.Read()
			if err != nil {
				t.Fatal(err)
			}
			if h.ID != id {
				t.Fatalf("%s: frame for id %d", payload, h.ID)
			}
			types = append(types, h.Type)
			if h.Type == ipc.TypeRunning {
				runningAt = time.Since(start)
				if h.PID == 0 || h.Leaf == "" {
					t.Errorf("%s: running without pid or leaf: %+v", payload, h)
				}
			}
			if ipc.IsFinal(h.Type) {
				break
			}
		}
		if want := []string{ipc.TypeAccepted, ipc.TypeRunning, ipc.TypeResult}; !slices.Equal(types, want) {
			t.Errorf("%s: frames %q, want %q", payload, types, want)
		}
		// lazyGrace is 5 ms; a second leaves room for a loaded machine
		// and is still well short of the task's 1.5 s.
		if payload == "sleep:1500" && runningAt > time.Second {
			t.Errorf("running came %v after the submission of a 1.5 s task", runningAt)
		}
	}
}

// TestSlowClientDoesNotStallWorkers: a client that does not read while
// its results pile up, far beyond the socket buffer, costs the pool
// nothing: every task still runs, another client's task runs meanwhile,
// and the slow client gets all its results, in order, once it reads.
func TestSlowClientDoesNotStallWorkers(t *testing.T) {
	sock, p := startServer(t, func(c *pool.Config) { c.MaxBacklog = -1 })
	slow, other := connect(t, sock), connect(t, sock)
	gate := filepath.Join(t.TempDir(), "gate")
	if err := unix.Mkfifo(gate, 0o600); err != nil {
		t.Fatal(err)
	}
	const n = 200
	slow.submit(t, ipc.Header{}, "fifo:"+gate) // holds the only worker
	for range n {
		slow.submit(t, ipc.Header{}, "big:32768") // 200 x 32 KiB: many socket buffers
	}
	poll := func(what string, done func(pool.Stats) bool) {
		deadline := time.Now().Add(60 * time.Second)
		for !done(p.Stats()) {
			if time.Now().After(deadline) {
				t.Fatalf("%s: %+v", what, p.Stats())
			}
			time.Sleep(time.Millisecond) // polling the pool's counters with a deadline
		}
	}
	poll("the submissions did not all arrive", func(s pool.Stats) bool { return s.TasksReceived == n+1 })
	f, err := os.OpenFile(gate, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.Close() // the gate opens: the worker reads end of file
	poll("the tasks of a client that does not read did not all run", func(s pool.Stats) bool { return s.TasksSucceeded == n+1 })
	other.submit(t, ipc.Header{}, "echo:other")
	if got := other.finals(t, 1, nil); got[1].Type != ipc.TypeResult {
		t.Fatalf("the other client's task: %+v", got[1])
	}
	var ids []uint64
	for len(ids) < n+1 {
		h, payload, err := slow.c.Read()
		if err != nil {
			t.Fatal(err)
		}
		if ipc.IsFinal(h.Type) {
			if h.Type != ipc.TypeResult || (len(ids) > 0 && len(payload) != 32768) {
				t.Fatalf("result %d: %+v with %d bytes", len(ids)+1, h, len(payload))
			}
			ids = append(ids, h.ID)
		}
	}
	if !slices.IsSorted(ids) {
		t.Errorf("results out of order: %v", ids)
	}
}

// TestStreamedExecOutput: a submit with stream_output gets the command's
// output in output frames, in order, after "running" and before the
// result, which carries none of it.
func TestStreamedExecOutput(t *testing.T) {
	sock, _ := startServer(t, func(c *pool.Config) { c.Kind, c.Command = pool.KindExec, nil })
	tc := connect(t, sock)
	id := tc.submit(t, ipc.Header{Argv: []string{"sh", "-c", "yes out | head -c 3000000; echo err >&2; exit 4"}, StreamOutput: true}, "")
	var order []string
	var stdout, stderr int
	for {
		h, payload, err := tc.c.Read()
		if err != nil {
			t.Fatal(err)
		}
		if h.ID != id {
			continue
		}
		if len(order) == 0 || order[len(order)-1] != h.Type {
			order = append(order, h.Type)
		}
		if h.Type == ipc.TypeOutput {
			if h.Stream == ipc.StreamStdout {
				stdout += len(payload)
			} else {
				stderr += len(payload)
			}
		}
		if ipc.IsFinal(h.Type) {
			if h.Type != ipc.TypeResult || h.ExitCode != 4 || len(payload) != 0 || h.StdoutTruncated {
				t.Fatalf("final %+v with %d bytes", h, len(payload))
			}
			break
		}
	}
	if want := []string{ipc.TypeAccepted, ipc.TypeRunning, ipc.TypeOutput, ipc.TypeResult}; !slices.Equal(order, want) {
		t.Errorf("frames %q, want %q", order, want)
	}
	if stdout != 3_000_000 || stderr != 4 {
		t.Errorf("output %d + %d bytes, want 3000000 + 4 (no cut at the pool's output limit)", stdout, stderr)
	}
}

// TestStreamedOutputBackpressure: a client that takes none of its output
// costs the daemon a bounded outbox: the command stalls on its full pipe,
// the task's timeout still ends it, and the client then gets the
// timeout; the daemon does not disconnect it for the output it held back.
func TestStreamedOutputBackpressure(t *testing.T) {
	sock, p := startServer(t, func(c *pool.Config) { c.Kind, c.Command = pool.KindExec, nil })
	tc := connect(t, sock)
	id := tc.submit(t, ipc.Header{Argv: []string{"sh", "-c", "exec cat /dev/zero"}, StreamOutput: true, TimeoutMS: 3000}, "")
	start := time.Now()
	deadline := time.Now().Add(30 * time.Second)
	for p.Stats().TasksFailed == 0 { // the task ends by its timeout while we read nothing
		if time.Now().After(deadline) {
			t.Fatalf("no timeout while the client reads nothing: %+v", p.Stats())
		}
		time.Sleep(10 * time.Millisecond) // polling the pool's counters with a deadline
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("the 3 s timeout took %v with a client that reads nothing", d)
	}
	var got int64
	for {
		h, payload, err := tc.c.Read()
		if err != nil {
			t.Fatalf("read after %d bytes of output: %v (disconnected?)", got, err)
		}
		got += int64(len(payload))
		if h.ID == id && ipc.IsFinal(h.Type) {
			if h.Type != ipc.TypeTimeout {
				t.Errorf("final %+v, want the timeout", h)
			}
			break
		}
	}
	// The daemon held back its output at 1 MiB queued (outputRoom), and
	// the sockets buffer a few hundred KiB more: nothing near the 64 MiB
	// outbox bound past which it would disconnect the client.
	if bound := int64(1<<20 + 4<<20); got > bound {
		t.Errorf("%d bytes of output were queued for a client that read nothing (bound %d)", got, bound)
	}
	t.Logf("%d bytes of output queued while the client read nothing", got)
}

// TestExecIOOnlyForExecPools: a worker pool's task has no working
// directory and no output of its own: cwd and max_output are refused with
// why, not ignored; stream_output is ignored there (the answer is the
// output) and the task runs.
func TestExecIOOnlyForExecPools(t *testing.T) {
	sock, _ := startServer(t, nil)
	tc := connect(t, sock)
	cwd := tc.submit(t, ipc.Header{Cwd: "/"}, "echo")
	maxOut := tc.submit(t, ipc.Header{MaxOutput: 10}, "echo")
	stream := tc.submit(t, ipc.Header{StreamOutput: true}, "echo")
	got := tc.finals(t, 3, nil)
	for id, want := range map[uint64]string{cwd: "no working directory of its own", maxOut: "max_output are for exec pools"} {
		if h := got[id]; h.Type != ipc.TypeRejected || h.Reason != ipc.RejectInvalid || !strings.Contains(h.Message, want) {
			t.Errorf("submit %d: %+v, want rejected invalid saying %q", id, h, want)
		}
	}
	if h := got[stream]; h.Type != ipc.TypeResult {
		t.Errorf("stream_output in a worker pool: %+v, want its result", h)
	}
}

// TestWireReasons: every process-error reason the pool can give has its
// name on the wire (a reason without one would read "crashed").
func TestWireReasons(t *testing.T) {
	for _, tc := range []struct {
		r    oomwatch.Reason
		want string
	}{{oomwatch.OOM, ipc.ProcessOOM}, {oomwatch.Killed, ipc.ProcessKilled}, {oomwatch.Crashed, ipc.ProcessCrashed}, {pool.ReasonLost, ipc.ProcessLost},
		{pool.OutputLimit, ipc.ProcessOutputLimit}, {pool.NotFound, ipc.ProcessNotFound}, {pool.NotExecutable, ipc.ProcessNotExecutable}} {
		h, _ := pool.OutcomeFrame(1, &pool.Outcome{Kind: pool.ProcessError, Reason: tc.r})
		if h.Reason != tc.want {
			t.Errorf("reason %q goes out as %q, want %q", tc.r, h.Reason, tc.want)
		}
	}
}
