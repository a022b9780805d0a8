package pool_test

import (
	"context"
	"math/rand/v2"
	"os"
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

// TestOOMAmongSmallTasks: 10 tasks over memory_max shuffled among 100 small
// ones on one worker: exactly the 10 fail with reason oom, the 100
// succeed, and the supervisor (this process) is untouched (acceptance 2).
func TestOOMAmongSmallTasks(t *testing.T) {
	r := kerneltest.NewRoot(t)
	kerneltest.RequireControllers(t, r, "memory")
	_, p := newPoolOn(t, r, func(c *pool.Config) { c.MemoryMax = 64 << 20 })
	payloads := make([]string, 0, 110)
	for range 10 {
		payloads = append(payloads, "alloc:200")
	}
	for range 100 {
		payloads = append(payloads, "alloc:1")
	}
	rng := rand.New(rand.NewPCG(1, 2))
	rng.Shuffle(len(payloads), func(i, j int) { payloads[i], payloads[j] = payloads[j], payloads[i] })
	var fs []*future
	for _, pl := range payloads {
		fs = append(fs, submit(t, p, pool.Spec{Payload: []byte(pl)}))
	}
	oom, ok := 0, 0
	for i, f := range fs {
		o := f.wait(t, 2*time.Minute)
		switch {
		case o.Kind == pool.ProcessError && o.Reason == oomwatch.OOM:
			oom++
			if payloads[i] != "alloc:200" {
				t.Errorf("task %d (%s) classified oom", i, payloads[i])
			}
		case o.Kind == pool.Result:
			ok++
		default:
			t.Errorf("task %d (%s): %+v", i, payloads[i], o)
		}
		if o.Pid == os.Getpid() {
			t.Fatalf("task %d ran in the supervisor", i)
		}
	}
	if oom != 10 || ok != 100 {
		t.Errorf("%d oom and %d ok, want 10 and 100", oom, ok)
	}
	if st := p.Stats(); st.FailuresByReason["oom"] != 10 {
		t.Errorf("failures by reason %v, want oom 10", st.FailuresByReason)
	}
}

// TestTaskMemoryLimitEveryEnd: a task with its own memory limit may end in
// every way a task can end (answer, task error, timeout, OOM, hard cancel,
// crash, outside kill), in worker and exec pools; the supervisor (this
// process) survives each, the next task runs, and it runs under the pool's
// own limit again. Before the fix, the deferred restore of the pool's
// memory.max dereferenced a slot group that the teardown had already
// released, and the slot goroutine panicked (issue 9).
func TestTaskMemoryLimitEveryEnd(t *testing.T) {
	const poolMax, taskMax = 256 << 20, 128 << 20
	mnt, err := cgroup.FindMount()
	if err != nil {
		t.Fatal(err)
	}
	type end struct {
		name    string
		payload string   // worker pools
		argv    []string // exec pools
		timeout time.Duration
		cancel  bool // hard-cancel once running
		kill    bool // SIGKILL the pid once running
		want    func(*pool.Outcome) bool
	}
	kind := func(k pool.OutcomeKind) func(*pool.Outcome) bool {
		return func(o *pool.Outcome) bool { return o.Kind == k }
	}
	reason := func(r oomwatch.Reason) func(*pool.Outcome) bool {
		return func(o *pool.Outcome) bool { return o.Kind == pool.ProcessError && o.Reason == r }
	}
	sh := func(script string) []string { return []string{"/bin/sh", "-c", script} }
	ends := []end{
		{name: "result", payload: "echo:x", argv: sh("true"), want: kind(pool.Result)},
		{name: "task_error", payload: "fail:x", want: kind(pool.TaskError)},
		{name: "timeout", payload: "sleep:30000", argv: sh("sleep 30"), timeout: 500 * time.Millisecond, want: kind(pool.TimedOut)},
		{name: "oom", payload: "alloc:200", argv: []string{os.Args[0], "-test.run=^$"}, want: reason(oomwatch.OOM)},
		{name: "cancel", payload: "sleep:30000", argv: sh("sleep 30"), cancel: true, want: kind(pool.Cancelled)},
		{name: "crash", payload: "exit:3", want: reason(oomwatch.Crashed)},
		{name: "killed", payload: "sleep:30000", argv: sh("sleep 30"), kill: true, want: reason(oomwatch.Killed)},
	}
	for _, k := range []pool.Kind{pool.KindWorker, pool.KindExec} {
		t.Run(string(k), func(t *testing.T) {
			r := kerneltest.NewRoot(t)
			kerneltest.RequireControllers(t, r, "memory")
			_, p := newPoolOn(t, r, func(c *pool.Config) {
				c.Kind, c.MemoryMax = k, poolMax
				if k == pool.KindExec {
					c.Command = nil
				}
			})
			for _, e := range ends {
				spec := pool.Spec{Payload: []byte(e.payload), Timeout: e.timeout, MemoryMax: taskMax}
				if k == pool.KindExec {
					if e.argv == nil {
						continue
					}
					spec = pool.Spec{Argv: e.argv, Timeout: e.timeout, MemoryMax: taskMax}
					if e.name == "oom" {
						spec.Env = map[string]string{"CGPOOL_TEST_WORKER": "", kerneltest.HelperEnv: "alloc", "CGPOOL_TEST_ARGS": "200"}
					}
				}
				f := newFuture()
				task, err := p.Submit(context.Background(), spec, f.notify)
				if err != nil {
					t.Fatalf("%s: %v", e.name, err)
				}
				if e.cancel || e.kill {
					ev := <-f.running
					if e.cancel {
						p.Cancel(task.ID(), true)
					} else if err := unix.Kill(ev.Pid, unix.SIGKILL); err != nil {
						t.Fatal(err)
					}
				}
				o := f.wait(t, time.Minute)
				if !e.want(o) {
					t.Errorf("%s: outcome %+v", e.name, o)
				}
				// Every end of a task that ran says what it cost (issue 14).
				if u := o.Usage; u == nil || u.Wall <= 0 || u.MemoryPeakScope == "" || u.MemoryPeak <= 0 {
					t.Errorf("%s: usage %+v, want wall time and memory peak", e.name, u)
				}
				// The supervisor lives on, and the next task runs under the
				// pool's limit.
				next := pool.Spec{Payload: []byte("memmax")}
				if k == pool.KindExec {
					next = pool.Spec{Argv: sh(`cat "$MNT$(sed -n 's/^0:://p' /proc/self/cgroup)/../memory.max"`), Env: map[string]string{"MNT": mnt.Point}}
				}
				o = submit(t, p, next).wait(t, time.Minute)
				got := string(o.Payload)
				if k == pool.KindExec {
					got = strings.TrimSpace(string(o.Stdout))
				}
				if o.Kind != pool.Result || got != strconv.Itoa(poolMax) {
					t.Errorf("after %s: the next task saw memory.max %q (%+v), want %d", e.name, got, o, poolMax)
				}
			}
			if n := p.Stats().SlotPanics; n != 0 {
				t.Errorf("%d slot goroutines panicked", n)
			}
		})
	}
}
