package pool_test

import (
	"errors"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cgpool/cgpool/cgroup"
	"github.com/cgpool/cgpool/oomwatch"
	"github.com/cgpool/cgpool/pool"
	"golang.org/x/sys/unix"
)

// Reduced mode (no writable cgroup v2): slots are process groups. These
// tests need no cgroup at all, so they run on every host.

// TestReducedWorkerPool: a worker pool without cgroups answers, reports
// its missing guarantees, classifies an outside SIGKILL as killed (never
// oom) and kills a timed-out worker.
func TestReducedWorkerPool(t *testing.T) {
	_, p := newPoolOn(t, cgroup.NewReducedRoot(nil), nil)
	o := run(t, p, "echo:hi")
	if o.Kind != pool.Result || string(o.Payload) != "hi" || o.Pid == 0 || o.Leaf != "" {
		t.Fatalf("echo: %+v, want a result with a pid and no cgroup leaf", o)
	}
	if m := p.Stats().MissingGuarantees; len(m) != len(cgroup.ReducedMissing) {
		t.Errorf("stats missing_guarantees = %q, want %q", m, cgroup.ReducedMissing)
	}
	if m := p.Status().MissingGuarantees; len(m) == 0 {
		t.Error("status (cgpool ps) does not say which guarantees are missing")
	}

	f := submit(t, p, pool.Spec{Payload: []byte("sleep:60000")})
	ev := <-f.running
	if err := unix.Kill(ev.Pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	o = f.wait(t, 10*time.Second)
	if o.Kind != pool.ProcessError || o.Reason != oomwatch.Killed || o.Signal != int(syscall.SIGKILL) {
		t.Errorf("worker SIGKILLed from outside: %+v, want process error killed (no OOM classification here)", o)
	}

	f = submit(t, p, pool.Spec{Payload: []byte("sleep:60000"), Timeout: 300 * time.Millisecond})
	ev = <-f.running
	o = f.wait(t, 10*time.Second)
	if o.Kind != pool.TimedOut || !strings.Contains(o.Message, "process group") {
		t.Errorf("timeout: %+v, want timed out, its process group killed", o)
	}
	if pidAlive(ev.Pid) {
		t.Errorf("timed-out worker %d still alive", ev.Pid)
	}
	if o := run(t, p, "echo:again"); o.Kind != pool.Result {
		t.Errorf("task after a timeout: %+v", o)
	}
}

func reducedExecPool(t *testing.T, mod func(*pool.Config)) *pool.Pool {
	t.Helper()
	cfg := pool.Config{Name: "test", Kind: pool.KindExec, MaxWorkers: 1, AllowRoot: true}
	if mod != nil {
		mod(&cfg)
	}
	s, err := pool.NewSupervisor(cgroup.NewReducedRoot(nil), []pool.Config{cfg}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Shutdown(t.Context(), pool.ShutdownOptions{Wait: true, CancelFutures: true}) })
	p, err := s.Pool("test")
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// childPid reads the pid a command printed on its first line.
func childPid(t *testing.T, o *pool.Outcome) int {
	t.Helper()
	line, _, _ := strings.Cut(string(o.Stdout), "\n")
	pid, err := strconv.Atoi(strings.TrimSpace(line))
	if err != nil {
		t.Fatalf("no child pid in the command's output %q (%+v)", o.Stdout, o)
	}
	return pid
}

// TestReducedExecTimeoutKillsProcessGroup: a timeout kills the command's
// whole process group, a background child included, before the outcome
// is told; a child left behind by a command that exits is killed too.
func TestReducedExecTimeoutKillsProcessGroup(t *testing.T) {
	p := reducedExecPool(t, nil)
	o := submit(t, p, pool.Spec{Argv: []string{"sh", "-c", "sleep 300 & echo $!; wait"}, Timeout: 300 * time.Millisecond}).wait(t, 10*time.Second)
	if o.Kind != pool.TimedOut || o.Reason != oomwatch.Timeout {
		t.Fatalf("outcome %+v, want timeout", o)
	}
	if pid := childPid(t, o); pidAlive(pid) {
		t.Errorf("the timed-out command's child %d is still alive", pid)
	}

	o = submit(t, p, pool.Spec{Argv: []string{"sh", "-c", "sleep 300 & echo $!"}}).wait(t, 10*time.Second)
	if o.Kind != pool.Result || o.ExitCode != 0 {
		t.Fatalf("outcome %+v, want a result", o)
	}
	if pid := childPid(t, o); pidAlive(pid) {
		t.Errorf("the child %d a finished command left behind is still alive", pid)
	}
	if n := p.Stats().LeftoverProcessesKilled; n != 1 {
		t.Errorf("leftover_processes_killed = %d, want 1", n)
	}
	o = submit(t, p, pool.Spec{Argv: []string{"sh", "-c", "exit 3"}}).wait(t, 10*time.Second)
	if o.Kind != pool.Result || o.ExitCode != 3 || o.MemoryPeak <= 0 {
		t.Errorf("outcome %+v, want a result with exit code 3 and a peak from procfs/wait4", o)
	}
}

// TestReducedRefusesLimits: in reduced mode no limit is pretended: a
// pool with memory_max and a task with its own memory limit are refused,
// saying why.
func TestReducedRefusesLimits(t *testing.T) {
	_, err := pool.NewSupervisor(cgroup.NewReducedRoot(nil), []pool.Config{{Name: "m", Kind: pool.KindExec, MaxWorkers: 1, MemoryMax: 64 << 20, AllowRoot: true}}, nil)
	if !errors.Is(err, cgroup.ErrControllerUnavailable) || !strings.Contains(err.Error(), "reduced mode") {
		t.Errorf("pool with memory_max in reduced mode: %v, want a refusal naming reduced mode", err)
	}
	p := reducedExecPool(t, nil)
	_, err = p.Submit(t.Context(), pool.Spec{Argv: []string{"true"}, MemoryMax: 64 << 20}, func(pool.Event) {})
	if err == nil || !strings.Contains(err.Error(), "reduced mode") {
		t.Errorf("task with a memory limit in reduced mode: %v, want a refusal naming reduced mode", err)
	}
}
