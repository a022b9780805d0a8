package oomwatch_test

import (
	"context"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"syscall"
	"testing"
	"time"

	"github.com/cgpool/cgpool/cgroup"
	"github.com/cgpool/cgpool/internal/kerneltest"
	"github.com/cgpool/cgpool/oomwatch"
	"golang.org/x/sys/unix"
)

func TestMain(m *testing.M) { kerneltest.Main(m) }

func counters(t *testing.T, g *cgroup.Group) oomwatch.Counters {
	t.Helper()
	c, _, err := oomwatch.Read(g)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// runTask plays a supervisor around one task: it records the counters,
// waits for the worker to end (killing the group through cgroup.kill if
// deadline passes first, as a timeout), re-reads the counters after the
// reap and classifies.
func runTask(t *testing.T, g *cgroup.Group, c *kerneltest.Child, deadline time.Duration, before oomwatch.Counters) oomwatch.Verdict {
	t.Helper()
	f := oomwatch.Facts{Before: before}
	timer := time.NewTimer(deadline)
	defer timer.Stop()
	select {
	case <-c.Done():
	case <-timer.C:
		f.SupervisorKill = oomwatch.Timeout
		if err := g.Kill(); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	e, err := c.Wait(ctx)
	if err != nil {
		t.Fatal(err)
	}
	f.Exited, f.Signal, f.ExitCode = true, e.Signal, e.Code
	f.After = counters(t, g)
	return oomwatch.Classify(f)
}

var zero = int64(0)

// TestOOMClassified: a task that allocates past memory.max (32 MiB, no
// swap) is classified oom, the supervisor is unaffected, and a neighbour
// leaf's task completes (acceptance 2).
func TestOOMClassified(t *testing.T) {
	r := kerneltest.NewRoot(t)
	kerneltest.RequireControllers(t, r, "memory")
	lim := kerneltest.MemoryLimit(32 << 20)
	hog := kerneltest.Leaf(t, &r.Group, "w-1", lim)
	calm := kerneltest.Leaf(t, &r.Group, "w-2", lim)
	hb, cb := counters(t, hog), counters(t, calm)
	h := kerneltest.Start(t, hog, "alloc", "200")
	n := kerneltest.Start(t, calm, "alloc", "4")
	h.Line(t)
	n.Line(t)
	if v := runTask(t, hog, h, 30*time.Second, hb); v.Reason != oomwatch.OOM {
		t.Errorf("allocating 200 MiB under a 32 MiB limit: verdict %v, want oom", v)
	}
	if l := n.Line(t); l != "done" {
		t.Errorf("neighbour said %q, want done", l)
	}
	if v := runTask(t, calm, n, 30*time.Second, cb); v.Reason != oomwatch.Crashed || v.ExitCode != 0 {
		// The helper exits 0 after its task; for the classifier that is a
		// worker that ended on its own, with status 0: not an OOM.
		t.Errorf("neighbour verdict %+v, want crashed with exit code 0 (the helper exits after its task)", v)
	}
	if peak, err := hog.MemoryPeak(); err == nil && peak > 40<<20 {
		t.Errorf("memory.peak = %d, above the 32 MiB limit", peak)
	}
	// The kill stayed in its leaf: the neighbour's counters did not move,
	// and this process (the supervisor here) is still running the test.
	if got := counters(t, calm); got != cb {
		t.Errorf("neighbour's OOM counters went from %+v to %+v", cb, got)
	}
}

// TestExitReasons: killed by a signal from outside, exit 3, and our own
// deadline kill are classified killed, crashed and timeout, never oom
// (acceptance 5).
func TestExitReasons(t *testing.T) {
	r := kerneltest.NewRoot(t)
	var lim *specs.LinuxResources
	if kerneltest.InVM() {
		lim = kerneltest.MemoryLimit(64 << 20)
	}
	for _, tc := range []struct {
		name     string
		mode     []string
		outside  syscall.Signal
		deadline time.Duration
		want     oomwatch.Verdict
	}{
		{"sigkill from outside", []string{"sleep"}, syscall.SIGKILL, time.Minute, oomwatch.Verdict{Reason: oomwatch.Killed, Signal: syscall.SIGKILL}},
		{"sigterm from outside", []string{"sleep"}, syscall.SIGTERM, time.Minute, oomwatch.Verdict{Reason: oomwatch.Killed, Signal: syscall.SIGTERM}},
		{"exit 3", []string{"exit", "3"}, 0, time.Minute, oomwatch.Verdict{Reason: oomwatch.Crashed, ExitCode: 3}},
		{"deadline", []string{"ignore"}, 0, 200 * time.Millisecond, oomwatch.Verdict{Reason: oomwatch.Timeout, Signal: syscall.SIGKILL}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := kerneltest.Leaf(t, &r.Group, "w", lim)
			before := counters(t, g)
			c := kerneltest.Start(t, g, tc.mode[0], tc.mode[1:]...)
			if tc.mode[0] != "exit" {
				c.Line(t)
			}
			if tc.outside != 0 {
				// From outside: a plain kill(2) by pid, as another user of the machine would.
				if err := unix.Kill(c.Pid(), tc.outside); err != nil {
					t.Fatal(err)
				}
			}
			if got := runTask(t, g, c, tc.deadline, before); got != tc.want {
				t.Errorf("verdict %+v, want %+v", got, tc.want)
			}
		})
	}
}

// TestWatcher: one inotify instance reports a group's cgroup.events change
// when its process exits; 200 watches added and closed leave none behind;
// Run returns when its context ends.
func TestWatcher(t *testing.T) {
	r := kerneltest.NewRoot(t)
	w, err := oomwatch.New()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != context.Canceled {
			t.Errorf("Run returned %v, want context.Canceled", err)
		}
	}()

	g := kerneltest.Leaf(t, &r.Group, "w-1", nil)
	c := kerneltest.Start(t, g, "sleep")
	c.Line(t)
	wt, err := w.Add(g.Path())
	if err != nil {
		t.Fatal(err)
	}
	if err := g.Kill(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-wt.C():
	case <-time.After(5 * time.Second):
		t.Fatal("no notification within 5s of killing the group")
	}
	if pop, _ := g.Populated(); pop {
		// The tick may precede the last exit; the state is re-read, never assumed.
		wctx, wcancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer wcancel()
		if err := g.WaitEmpty(wctx); err != nil {
			t.Fatal(err)
		}
	}
	wt.Close()

	for i := range 200 {
		leaf, err := r.Mkdir("loop")
		if err != nil {
			t.Fatalf("iteration %d: %v", i, err)
		}
		wt, err := w.Add(leaf.Path())
		if err != nil {
			t.Fatal(err)
		}
		if i%2 == 0 {
			wt.Close()
		}
		if err := leaf.Remove(); err != nil {
			t.Fatal(err)
		}
		wt.Close()
	}
	if n := w.Len(); n != 0 {
		t.Errorf("Watcher.Len() = %d after closing every watch, want 0", n)
	}
}
