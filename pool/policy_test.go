package pool_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cgpool/cgpool/cgroup"
	"github.com/cgpool/cgpool/internal/kerneltest"
	"github.com/cgpool/cgpool/oomwatch"
	"github.com/cgpool/cgpool/pool"
	"golang.org/x/sys/unix"
)

// waitGone polls until pid no longer runs, failing after d.
func waitGone(t *testing.T, pid int, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	for pidAlive(pid) {
		if time.Now().After(deadline) {
			t.Fatalf("pid %d still alive after %v", pid, d)
		}
		time.Sleep(time.Millisecond) // polling /proc with a deadline
	}
}

// TestLeftoversKilled: a child a task leaves behind is killed before the
// slot runs another task, and the statistics count it.
func TestLeftoversKilled(t *testing.T) {
	_, p := newPool(t, nil)
	o := run(t, p, "leave")
	if o.Kind != pool.Result {
		t.Fatalf("leave: %+v", o)
	}
	left, _ := strconv.Atoi(string(o.Payload))
	if o2 := run(t, p, "pid"); o2.Kind != pool.Result {
		t.Fatalf("next task: %+v", o2)
	}
	waitGone(t, left, 5*time.Second)
	if st := p.Stats(); st.LeftoverProcessesKilled < 1 {
		t.Errorf("leftover_processes_killed = %d, want >= 1", st.LeftoverProcessesKilled)
	}
}

// TestMemoryCeilingAndTrim: a worker at or above max_worker_memory_bytes
// after a task is replaced; above the trim threshold it is asked to give
// memory back.
func TestMemoryCeilingAndTrim(t *testing.T) {
	_, p := newPool(t, func(c *pool.Config) { c.MaxWorkerMemoryBytes = 1 })
	a, b := run(t, p, "pid"), run(t, p, "pid")
	if string(a.Payload) == string(b.Payload) {
		t.Errorf("a worker over max_worker_memory_bytes served again (pid %s)", a.Payload)
	}
	_, q := newPool(t, func(c *pool.Config) { c.TrimThresholdBytes = 1 })
	a, b = run(t, q, "pid"), run(t, q, "pid")
	if string(a.Payload) != string(b.Payload) {
		t.Errorf("trimming replaced the worker: %s then %s", a.Payload, b.Payload)
	}
	// A slot trims after delivering a task's outcome and before taking the
	// next task: once a third task is done, the first two trims are.
	run(t, q, "pid")
	if st := q.Stats(); st.WorkersTrimmed < 2 {
		t.Errorf("workers_trimmed = %d after two tasks over the threshold, want 2", st.WorkersTrimmed)
	}
}

// TestSoftCancelOfRunningTask: an ordinary cancel of a running task says
// no and lets it finish, as concurrent.futures does.
func TestSoftCancelOfRunningTask(t *testing.T) {
	_, p := newPool(t, nil)
	f := newFuture()
	task, err := p.Submit(context.Background(), pool.Spec{Payload: []byte("sleep:200")}, f.notify)
	if err != nil {
		t.Fatal(err)
	}
	<-f.running
	if ok, state := p.Cancel(task.ID(), false); ok || state != "running" {
		t.Errorf("soft cancel of a running task = %v, %q; want false, running", ok, state)
	}
	if o := f.wait(t, 10*time.Second); o.Kind != pool.Result {
		t.Errorf("the task after a refused cancel: %+v", o)
	}
}

// TestInitializerAndStartFailures: a worker whose initializer fails serves
// tasks anyway and is counted; a worker program that cannot start fails
// the queued task with a process error instead of leaving it waiting.
func TestInitializerAndStartFailures(t *testing.T) {
	_, p := newPool(t, func(c *pool.Config) { c.Env["CGPOOL_TEST_INIT_FAIL"] = "no database" })
	if o := run(t, p, "echo:x"); o.Kind != pool.Result {
		t.Errorf("task on a worker whose initializer failed: %+v", o)
	}
	if st := p.Stats(); st.InitializerFailures < 1 {
		t.Errorf("initializer_failures = %d", st.InitializerFailures)
	}
	_, q := newPool(t, func(c *pool.Config) { c.Command = []string{"/nonexistent/worker"}; c.MinWorkers = intp(0) })
	o := run(t, q, "echo:x")
	if o.Kind != pool.ProcessError || o.Reason != oomwatch.Crashed || !strings.Contains(o.Message, "no worker could be started") {
		t.Errorf("task on a pool whose worker cannot start: %+v", o)
	}
	// Every failed start is counted and its error shown, in the stats and
	// in the slot's status, while the slot retries.
	st := q.Stats()
	if st.WorkerStartFailures < 1 || !strings.Contains(st.LastStartError, "/nonexistent/worker") {
		t.Errorf("stats after failed starts: worker_start_failures %d, last_start_error %q", st.WorkerStartFailures, st.LastStartError)
	}
	submit(t, q, pool.Spec{Payload: []byte("echo:y")}) // keeps a slot trying
	deadline := time.Now().Add(10 * time.Second)
	for {
		ws := q.Status().Workers
		if len(ws) > 0 && strings.Contains(ws[0].StartError, "/nonexistent/worker") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no slot shows its start error: %+v", ws)
		}
		time.Sleep(time.Millisecond) // polling the pool's status with a deadline
	}
}

// TestStartFailureBesideHealthyWorker: a slot that cannot start fails no
// queued task while a healthy worker of the pool runs: the task waits for
// a worker (on the old main it failed at the first failed start).
func TestStartFailureBesideHealthyWorker(t *testing.T) {
	dir := t.TempDir()
	broken := filepath.Join(dir, "broken")
	_, p := newPool(t, func(c *pool.Config) {
		c.MaxWorkers, c.MinWorkers = 2, intp(1)
		c.Env["CGPOOL_TEST_FAIL_IF"] = broken
	})
	if o := run(t, p, "echo:warm"); o.Kind != pool.Result {
		t.Fatalf("the healthy worker: %+v", o)
	}
	if err := os.WriteFile(broken, nil, 0o600); err != nil { // new workers fail from now on
		t.Fatal(err)
	}
	gate := filepath.Join(dir, "gate")
	if err := unix.Mkfifo(gate, 0o600); err != nil {
		t.Fatal(err)
	}
	busy := submit(t, p, pool.Spec{Payload: []byte("gate:" + gate)})
	<-busy.running
	waiting := submit(t, p, pool.Spec{Payload: []byte("echo:waits")}) // a second slot starts for it, and fails
	deadline := time.Now().Add(30 * time.Second)
	for p.Stats().WorkerStartFailures < 1 {
		if time.Now().After(deadline) {
			t.Fatalf("the second slot did not fail to start: %+v", p.Stats())
		}
		time.Sleep(time.Millisecond) // polling the pool's counters with a deadline
	}
	f, _ := os.OpenFile(gate, os.O_WRONLY, 0)
	f.Write([]byte{1})
	f.Close()
	if o := busy.wait(t, 30*time.Second); o.Kind != pool.Result {
		t.Errorf("the task on the healthy worker: %+v", o)
	}
	if o := waiting.wait(t, 30*time.Second); o.Kind != pool.Result {
		t.Errorf("a task queued while a slot failed to start, beside a healthy worker: %+v, want it run by the healthy one", o)
	}
}

// TestExecPool: an exec pool returns exit status and bounded output,
// and kills what a command leaves behind.
func TestExecPool(t *testing.T) {
	_, p := newPool(t, func(c *pool.Config) { c.Kind, c.Command, c.OutputLimit = pool.KindExec, nil, 8 })
	o := submit(t, p, pool.Spec{Argv: []string{"sh", "-c", "echo 0123456789; echo err >&2; exit 4"}}).wait(t, 10*time.Second)
	if o.Kind != pool.Result || o.ExitCode != 4 || string(o.Stdout) != "01234567" || !o.StdoutTruncated || string(o.Stderr) != "err\n" {
		t.Errorf("exec outcome %+v (stdout %q, stderr %q)", o, o.Stdout, o.Stderr)
	}
	o = submit(t, p, pool.Spec{Argv: []string{"sh", "-c", "setsid sleep 100 & echo $!"}}).wait(t, 10*time.Second)
	left, _ := strconv.Atoi(strings.TrimSpace(string(o.Stdout)))
	if o.Kind != pool.Result || left == 0 {
		t.Fatalf("exec with a leftover: %+v", o)
	}
	waitGone(t, left, 5*time.Second)
	if st := p.Stats(); st.LeftoverProcessesKilled < 1 {
		t.Errorf("leftover_processes_killed = %d", st.LeftoverProcessesKilled)
	}
	if _, err := p.Submit(context.Background(), pool.Spec{Payload: []byte("x")}, nil); !errors.Is(err, pool.ErrInvalid) {
		t.Errorf("exec task without argv: %v, want ErrInvalid", err)
	}
}

// TestWorkersRunAsConfiguredUser: with uid and gid set, the pool's workers
// run as that user and group (here nobody/nogroup, 65534).
func TestWorkersRunAsConfiguredUser(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("starting workers as another user needs root")
	}
	// The worker program must be readable by that user.
	exe := kerneltest.PublicExecutable(t)
	id := uint32(65534)
	_, p := newPool(t, func(c *pool.Config) { c.Command, c.UID, c.GID = []string{exe}, &id, &id })
	if o := run(t, p, "ids"); o.Kind != pool.Result || string(o.Payload) != "65534:65534" {
		t.Fatalf("worker ids: %+v", o)
	}
}

// TestExecStartFailures: a command that cannot be started is told as a
// shell tells it: not found (127) or not executable (126), each a reason
// of its own in the statistics.
func TestExecStartFailures(t *testing.T) {
	_, p := newPool(t, func(c *pool.Config) { c.Kind, c.Command = pool.KindExec, nil })
	noexec := filepath.Join(t.TempDir(), "script")
	if err := os.WriteFile(noexec, []byte("#!/bin/sh\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		argv   []string
		reason oomwatch.Reason
		code   int
	}{
		{[]string{"/nonexistent/cmd"}, pool.NotFound, 127},
		{[]string{"no-such-command-on-path"}, pool.NotFound, 127},
		{[]string{noexec}, pool.NotExecutable, 126},
		{[]string{"/"}, pool.NotExecutable, 126},
	} {
		o := submit(t, p, pool.Spec{Argv: tc.argv}).wait(t, 10*time.Second)
		if o.Kind != pool.ProcessError || o.Reason != tc.reason || o.ExitCode != tc.code || !strings.HasPrefix(o.Message, tc.argv[0]+": ") {
			t.Errorf("%q: %v reason %q exit %d message %q; want process_error %q, exit %d", tc.argv, o.Kind, o.Reason, o.ExitCode, o.Message, tc.reason, tc.code)
		}
	}
	if st := p.Stats(); st.FailuresByReason["not_found"] != 2 || st.FailuresByReason["not_executable"] != 2 {
		t.Errorf("failures_by_reason %v", st.FailuresByReason)
	}
}

// TestExecStdin: ExecIO.Stdin is the command's standard input; a command
// that does not read it all still ends.
func TestExecStdin(t *testing.T) {
	_, p := newPool(t, func(c *pool.Config) { c.Kind, c.Command = pool.KindExec, nil })
	o := submit(t, p, pool.Spec{Argv: []string{"wc", "-c"}, IO: &pool.ExecIO{Stdin: bytes.Repeat([]byte("x"), 1<<20)}}).wait(t, 10*time.Second)
	if o.Kind != pool.Result || strings.TrimSpace(string(o.Stdout)) != "1048576" {
		t.Errorf("wc -c of 1 MiB of stdin: %v %q", o.Kind, o.Stdout)
	}
	o = submit(t, p, pool.Spec{Argv: []string{"true"}, IO: &pool.ExecIO{Stdin: bytes.Repeat([]byte("x"), 4<<20)}}).wait(t, 10*time.Second)
	if o.Kind != pool.Result || o.ExitCode != 0 {
		t.Errorf("true with unread stdin: %+v", o)
	}
}

// TestVanishedSlotReplaced: an exec slot whose cgroup was removed from
// outside (its slot, or the whole pool's group) is replaced, and the next
// tasks run (on the old main the slot failed every task given to it with
// "fork/exec ...: no such file or directory").
func TestVanishedSlotReplaced(t *testing.T) {
	m, err := cgroup.FindMount()
	if err != nil {
		t.Fatal(err)
	}
	for _, what := range []string{"slot", "pool"} {
		t.Run(what, func(t *testing.T) {
			_, p := newPool(t, func(c *pool.Config) { c.Kind, c.Command = pool.KindExec, nil })
			if o := submit(t, p, pool.Spec{Argv: []string{"/bin/true"}}).wait(t, 10*time.Second); o.Kind != pool.Result {
				t.Fatalf("first task: %+v", o)
			}
			leaf := m.HostPath(p.Status().Workers[0].Leaf)
			dirs := []string{leaf, filepath.Dir(leaf)}
			if what == "pool" {
				dirs = append(dirs, filepath.Dir(filepath.Dir(leaf)))
			}
			for _, d := range dirs {
				if err := os.Remove(d); err != nil {
					t.Fatal(err)
				}
			}
			for i := range 5 {
				o := submit(t, p, pool.Spec{Argv: []string{"/bin/echo", "ok"}}).wait(t, 30*time.Second)
				if o.Kind != pool.Result || strings.TrimSpace(string(o.Stdout)) != "ok" {
					t.Errorf("task %d after the %s's cgroup vanished: %+v", i, what, o)
				}
			}
		})
	}
}
