package cgroup_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cgpool/cgpool/cgroup"
	"github.com/cgpool/cgpool/internal/kerneltest"
	"github.com/cgpool/cgpool/spawn"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// startSh starts /bin/sh -c script inside g, with stdout to a pipe.
func startSh(t *testing.T, g *cgroup.Group, script string) *kerneltest.Child {
	t.Helper()
	sh, err := findSh()
	if err != nil {
		kerneltest.Skipf(t, "no shell: %v", err)
	}
	return kerneltest.StartProgram(t, g, sh, "-c", script)
}

func findSh() (string, error) {
	for _, p := range []string{"/bin/sh", "/usr/bin/sh"} {
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	return "", errors.New("no /bin/sh")
}

// waitFor polls cond every millisecond until it holds or the deadline
// passes; it fails the test with the last state seen.
func waitFor(t *testing.T, d time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		ok, state := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not reached within %v; last state: %s", what, d, state)
		}
		time.Sleep(time.Millisecond) // polling a /proc or cgroupfs state with a deadline
	}
}

func alive(pid int) bool {
	if err := unix.Kill(pid, 0); errors.Is(err, unix.ESRCH) {
		return false
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	// A zombie waiting for its reaper is not a process that runs.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || s[i+2] != 'Z'
}

// TestTakeOverMovesSupervisor: a supervisor started in a root moves itself
// into <root>/supervisor (acceptance 1, second half).
func TestTakeOverMovesSupervisor(t *testing.T) {
	r := kerneltest.NewRoot(t)
	sub, err := r.Mkdir("sup-root")
	if err != nil {
		t.Fatal(err)
	}
	c := kerneltest.Start(t, sub, "supervise", sub.Path())
	got := c.Line(t)
	if want := "0::" + sub.CgroupPath() + "/supervisor"; "0::"+got != want {
		t.Errorf("supervisor's cgroup = %q, want %q", "0::"+got, want)
	}
	if l := c.Line(t); l != "ready" {
		t.Fatalf("helper said %q, want ready", l)
	}
	procs, err := sub.Child(cgroup.SupervisorName).Procs()
	if err != nil || !slices.Contains(procs, c.Pid()) {
		t.Errorf("supervisor group procs = %v, %v; want it to hold %d", procs, err, c.Pid())
	}
}

// TestSweepAfterCrash: a supervisor SIGKILLed and started again on the same
// root removes the groups of the earlier run and kills their processes; a
// cgroup beside the root, or one inside it that we did not create, is left
// alone (acceptance 6).
func TestSweepAfterCrash(t *testing.T) {
	r := kerneltest.NewRoot(t)
	sub, err := r.Mkdir("sup-root")
	if err != nil {
		t.Fatal(err)
	}
	beside := filepath.Join(r.Path(), "not-ours")
	inside := filepath.Join(sub.Path(), "not-ours-either")
	for _, d := range []string{beside, inside} {
		if err := os.Mkdir(d, 0o755); err != nil { // no user.cgpool mark
			t.Fatal(err)
		}
	}
	first := kerneltest.Start(t, sub, "supervise", sub.Path())
	first.Line(t)
	first.Line(t) // ready
	pool := sub.Child("pool")
	var workers []int
	for _, w := range []string{"w-1", "w-2"} {
		var procs []int
		waitFor(t, 10*time.Second, w+" holds a worker and its exec'd child", func() (bool, string) {
			var err error
			procs, err = pool.Child(w).Procs()
			// The child must have exec'd: until then it shares its parent's
			// memory (vfork) and dies with it.
			return err == nil && len(procs) == 2 && slices.ContainsFunc(procs, execdSleeper), fmtInts(procs)
		})
		workers = append(workers, procs...)
	}
	if err := first.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := first.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	for _, w := range []string{"w-1", "w-2"} {
		if pop, err := pool.Child(w).Populated(); err != nil || !pop {
			t.Fatalf("%s populated = %v, %v after the supervisor died; the test needs survivors", w, pop, err)
		}
	}

	// Restarted as systemd's DelegateSubgroup= would: in <root>/supervisor
	// (the root itself has controllers enabled now, so no process may
	// start there: CLONE_INTO_CGROUP fails with EBUSY).
	second := kerneltest.Start(t, sub.Child(cgroup.SupervisorName), "supervise", sub.Path(), "sweep-only")
	second.Line(t)
	if l := second.Line(t); l != "ready" {
		t.Fatalf("second supervisor said %q", l)
	}
	waitFor(t, 5*time.Second, "old workers gone", func() (bool, string) {
		var live []int
		for _, pid := range workers {
			if alive(pid) {
				live = append(live, pid)
			}
		}
		return len(live) == 0, "alive: " + fmtInts(live)
	})
	if _, err := os.Stat(pool.Path()); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the earlier run's pool group %s is still there (stat: %v)", pool.Path(), err)
	}
	for _, d := range []string{beside, inside} {
		if _, err := os.Stat(d); err != nil {
			t.Errorf("a cgroup we did not create was touched: %v", err)
		}
		if err := os.Remove(d); err != nil {
			t.Errorf("remove test's own %s: %v", d, err)
		}
	}
}

func fmtInts(v []int) string {
	s := make([]string, len(v))
	for i, n := range v {
		s[i] = strconv.Itoa(n)
	}
	return "[" + strings.Join(s, " ") + "]"
}

// TestKillEmptiesTree: one kill empties a leaf holding a shell with
// background children, a setsid grandchild and a double-forked daemon
// (acceptance 3).
func TestKillEmptiesTree(t *testing.T) {
	r := kerneltest.NewRoot(t)
	leaf := kerneltest.Leaf(t, &r.Group, "tree", nil)
	c := startSh(t, leaf, `sleep 1000 & sleep 1000 & setsid sleep 1000 & (sh -c 'sleep 1000 &' &); (setsid sh -c 'sleep 1000 & exit 0' &); echo ready; wait`)
	if l := c.Line(t); l != "ready" {
		t.Fatalf("shell said %q", l)
	}
	var pids []int
	waitFor(t, 5*time.Second, "six processes in the leaf", func() (bool, string) {
		var err error
		pids, err = leaf.Procs()
		return err == nil && len(pids) == 6, fmtInts(pids)
	})
	start := time.Now()
	if err := leaf.Kill(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if err := leaf.WaitEmpty(ctx); err != nil {
		t.Fatalf("WaitEmpty after Kill: %v", err)
	}
	t.Logf("kill to populated 0: %v", time.Since(start))
	waitFor(t, time.Second, "every pid of the tree gone", func() (bool, string) {
		var live []int
		for _, pid := range pids {
			if alive(pid) {
				live = append(live, pid)
			}
		}
		return len(live) == 0, fmtInts(live)
	})
}

// countProcs counts user-space processes: kernel threads (an empty
// cmdline) come and go on their own and are not what a fork bomb leaves.
func countProcs(t *testing.T) int {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range ents {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		if b, err := os.ReadFile("/proc/" + e.Name() + "/cmdline"); err == nil && len(b) > 0 {
			n++
		}
	}
	return n
}

// TestForkBombContained: a fork bomb in a leaf with pids.max 64 hits the
// limit, one kill empties the leaf, and the process count returns to where
// it was (acceptance 4).
func TestForkBombContained(t *testing.T) {
	r := kerneltest.NewRoot(t)
	kerneltest.RequireControllers(t, r, "pids")
	before := countProcs(t)
	pids64 := int64(64)
	leaf := kerneltest.Leaf(t, &r.Group, "bomb", &specs.LinuxResources{Pids: &specs.LinuxPids{Limit: &pids64}})
	c := startSh(t, leaf, `echo ready; b() { b & b & }; b 2>/dev/null; sleep 1000`)
	c.Line(t)
	waitFor(t, 20*time.Second, "pids.events max > 0", func() (bool, string) {
		s, err := leaf.ReadFile("pids.events")
		m, _ := cgroup.ParseFlatKeyed(s)
		return err == nil && m["max"] > 0, s
	})
	cur, _ := leaf.PidsCurrent()
	if cur > 64 {
		t.Errorf("pids.current = %d, above pids.max 64", cur)
	}
	if err := leaf.Kill(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := leaf.WaitEmpty(ctx); err != nil {
		t.Fatal(err)
	}
	ctx2, cancel2 := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel2()
	if _, err := c.Wait(ctx2); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "process count back", func() (bool, string) {
		n := countProcs(t)
		return n <= before, strconv.Itoa(n) + " > " + strconv.Itoa(before)
	})
}

// TestLimits: where a controller is offered the limit lands in its file;
// where it is not (the hybrid build hosts), the limit is refused with an
// error that says so, and nothing is faked.
func TestLimits(t *testing.T) {
	r := kerneltest.NewRoot(t)
	g, err := r.Mkdir("limits")
	if err != nil {
		t.Fatal(err)
	}
	defer g.Remove()
	mem, pids, quota, period := int64(32<<20), int64(64), int64(50000), uint64(100000)
	l := &specs.LinuxResources{
		Memory:  &specs.LinuxMemory{Limit: &mem, Swap: &mem},
		Pids:    &specs.LinuxPids{Limit: &pids},
		CPU:     &specs.LinuxCPU{Quota: &quota, Period: &period},
		Unified: map[string]string{"memory.high": "31457280", "memory.oom.group": "1", "cpu.weight": "50"},
	}
	err = g.SetLimits(l)
	have := r.Controllers()
	if !slices.Contains(have, "memory") || !slices.Contains(have, "pids") || !slices.Contains(have, "cpu") {
		if !errors.Is(err, cgroup.ErrControllerUnavailable) {
			t.Fatalf("SetLimits without controllers %q = %v, want ErrControllerUnavailable", have, err)
		}
		if !strings.Contains(err.Error(), "controller is not enabled") {
			t.Errorf("refusal %q does not say why", err)
		}
		if kerneltest.InVM() {
			t.Fatalf("controllers missing in the VM: %q", have)
		}
		return
	}
	if err != nil {
		t.Fatal(err)
	}
	for file, want := range map[string]string{
		"memory.max": "33554432", "memory.high": "31457280", "memory.swap.max": "0",
		"memory.oom.group": "1", "pids.max": "64", "cpu.weight": "50", "cpu.max": "50000 100000",
	} {
		got, err := g.ReadFile(file)
		if err != nil || strings.TrimSpace(got) != want {
			t.Errorf("%s = %q, %v; want %q", file, got, err, want)
		}
	}
}

func countFDs(t *testing.T) int {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// TestLeafLoopLeavesNothing: 200 leaves created, filled, killed and
// removed leave no cgroup, fd or goroutine behind (acceptance 7).
func TestLeafLoopLeavesNothing(t *testing.T) {
	r := kerneltest.NewRoot(t)
	sleep, err := execLook("sleep")
	if err != nil {
		kerneltest.Skipf(t, "%v", err)
	}
	fds, gor := countFDs(t), runtime.NumGoroutine()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for i := range 200 {
		g, err := r.Mkdir("w-" + strconv.Itoa(i))
		if err != nil {
			t.Fatal(err)
		}
		d, err := g.Open()
		if err != nil {
			t.Fatal(err)
		}
		p, err := spawn.Start(spawn.Options{Path: sleep, Args: []string{"sleep", "1000"}, Cgroup: d})
		d.Close()
		if err != nil {
			t.Fatal(err)
		}
		if err := g.Kill(); err != nil {
			t.Fatal(err)
		}
		if _, err := p.Wait(ctx); err != nil {
			t.Fatal(err)
		}
		p.Close()
		if err := g.WaitEmpty(ctx); err != nil {
			t.Fatal(err)
		}
		if err := g.Remove(); err != nil {
			t.Fatal(err)
		}
	}
	ents, _ := os.ReadDir(r.Path())
	for _, e := range ents {
		if e.IsDir() {
			t.Errorf("left behind: %s", e.Name())
		}
	}
	if n := countFDs(t); n != fds {
		t.Errorf("open fds = %d after the loop, %d before", n, fds)
	}
	waitFor(t, 5*time.Second, "goroutines back", func() (bool, string) {
		n := runtime.NumGoroutine()
		return n <= gor, strconv.Itoa(n) + " goroutines, " + strconv.Itoa(gor) + " before"
	})
}

func execLook(name string) (string, error) {
	for _, d := range []string{"/bin", "/usr/bin"} {
		p := filepath.Join(d, name)
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	return "", errors.New(name + " not found in /bin or /usr/bin")
}

// TestKilledGroupIsNotReusable records a kernel behaviour cgpool designs
// around: whether a child cloned into a group after a cgroup.kill of it
// (or of its parent) survives. On the 6.18 build hosts it is killed at
// birth, so pool slots are replaced after every kill; the test fails only
// if spawning into a fresh group fails.
func TestKilledGroupIsNotReusable(t *testing.T) {
	r := kerneltest.NewRoot(t)
	slot := kerneltest.Leaf(t, &r.Group, "w", nil)
	leaf, err := slot.Mkdir("worker")
	if err != nil {
		t.Fatal(err)
	}
	run := func() spawn.Exit {
		t.Helper()
		d, err := leaf.Open()
		if err != nil {
			t.Fatal(err)
		}
		defer d.Close()
		sh, err := findSh()
		if err != nil {
			kerneltest.Skipf(t, "%v", err)
		}
		p, err := spawn.Start(spawn.Options{Path: sh, Args: []string{"sh", "-c", "exit 0"}, Cgroup: d})
		if err != nil {
			t.Fatal(err)
		}
		defer p.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		e, err := p.Wait(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return e
	}
	if e := run(); e.Code != 0 || e.Signaled() {
		t.Fatalf("a child in a fresh group: %v, want exit status 0", e)
	}
	if err := slot.Kill(); err != nil {
		t.Fatal(err)
	}
	t.Logf("a child cloned into a group after its parent was killed: %v (cgpool never does this)", run())
}

// execdSleeper reports whether pid runs the "sleep" helper (it has exec'd).
func execdSleeper(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/environ")
	return err == nil && strings.Contains(string(b), kerneltest.HelperEnv+"=sleep\x00")
}
