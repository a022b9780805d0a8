package pool_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cgpool/cgpool/cgroup"
	"github.com/cgpool/cgpool/internal/kerneltest"
	"github.com/cgpool/cgpool/oomwatch"
	"github.com/cgpool/cgpool/pool"
	"golang.org/x/sys/unix"
)

func intp(n int) *int { return &n }

// newPool starts a supervisor with one worker pool running this test
// binary as its worker program, and shuts it down when the test ends.
func newPool(t *testing.T, mod func(*pool.Config)) (*pool.Supervisor, *pool.Pool) {
	t.Helper()
	return newPoolOn(t, kerneltest.NewRoot(t), mod)
}

// testConfig is a one-worker pool named "test" whose worker program is
// this test binary (see TestMain), changed by mod.
func testConfig(mod func(*pool.Config)) pool.Config {
	exe, _ := os.Executable()
	cfg := pool.Config{Name: "test", Kind: pool.KindWorker, Command: []string{exe}, MaxWorkers: 1, AllowRoot: true,
		Env: map[string]string{"CGPOOL_TEST_WORKER": "1"}}
	if mod != nil {
		mod(&cfg)
	}
	return cfg
}

func newPoolOn(t testing.TB, r *cgroup.Root, mod func(*pool.Config)) (*pool.Supervisor, *pool.Pool) {
	t.Helper()
	s, err := pool.NewSupervisor(r, []pool.Config{testConfig(mod)}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := s.Shutdown(ctx, pool.ShutdownOptions{Wait: true, CancelFutures: true}); err != nil {
			t.Errorf("shutdown: %v", err)
		}
	})
	p, err := s.Pool("test")
	if err != nil {
		t.Fatal(err)
	}
	return s, p
}

// future collects a task's events.
type future struct {
	running chan pool.Event
	done    chan *pool.Outcome
}

func newFuture() *future {
	return &future{running: make(chan pool.Event, 1), done: make(chan *pool.Outcome, 1)}
}

func (f *future) notify(e pool.Event) {
	if e.Running {
		f.running <- e
		return
	}
	f.done <- e.Outcome
}

func (f *future) wait(t *testing.T, d time.Duration) *pool.Outcome {
	t.Helper()
	select {
	case o := <-f.done:
		return o
	case <-time.After(d):
		t.Fatalf("no outcome within %v", d)
		return nil
	}
}

func submit(t *testing.T, p *pool.Pool, spec pool.Spec) *future {
	t.Helper()
	f := newFuture()
	if _, err := p.Submit(context.Background(), spec, f.notify); err != nil {
		t.Fatalf("Submit(%q): %v", spec.Payload, err)
	}
	return f
}

func run(t *testing.T, p *pool.Pool, payload string) *pool.Outcome {
	t.Helper()
	return submit(t, p, pool.Spec{Payload: []byte(payload)}).wait(t, 30*time.Second)
}

func TestResultAndTaskError(t *testing.T) {
	_, p := newPool(t, nil)
	if o := run(t, p, "echo:hi"); o.Kind != pool.Result || string(o.Payload) != "hi" || o.Pid == 0 || o.Leaf == "" {
		t.Errorf("echo: %+v", o)
	}
	if o := run(t, p, "fail:boom"); o.Kind != pool.TaskError || o.Message != "boom" {
		t.Errorf("fail: %+v", o)
	}
}

// TestWorkerKilledFromOutside: acceptance 1.
func TestWorkerKilledFromOutside(t *testing.T) {
	for _, sig := range []syscall.Signal{syscall.SIGKILL, syscall.SIGTERM} {
		t.Run(sig.String(), func(t *testing.T) {
			_, p := newPool(t, func(c *pool.Config) {
				c.MaxWorkers = 2
				if sig == syscall.SIGKILL {
					c.SpareWorkers = 1 // the replacement comes from the spare
				}
			})
			// Two workers busy: one is the victim, the other must be unharmed.
			victim := submit(t, p, pool.Spec{Payload: []byte("sleep:60000")})
			other := submit(t, p, pool.Spec{Payload: []byte("sleep:300")})
			ev := <-victim.running
			<-other.running
			created := p.Stats().WorkerProcessesCreated
			if err := unix.Kill(ev.Pid, sig); err != nil {
				t.Fatal(err)
			}
			o := victim.wait(t, 10*time.Second)
			if o.Kind != pool.ProcessError || o.Reason != oomwatch.Killed || o.Signal != int(sig) || o.Pid != ev.Pid {
				t.Errorf("victim outcome %+v, want process error killed by %d with pid %d", o, sig, ev.Pid)
			}
			if o := other.wait(t, 10*time.Second); o.Kind != pool.Result {
				t.Errorf("the other in-flight task: %+v", o)
			}
			if o := run(t, p, "echo:next"); o.Kind != pool.Result {
				t.Errorf("next task: %+v", o)
			}
			if got := p.Stats().WorkerProcessesCreated; got != created+1 {
				t.Errorf("worker_processes_created = %d, want %d", got, created+1)
			}
		})
	}
	t.Run("idle", func(t *testing.T) {
		_, p := newPool(t, nil)
		pid, _ := strconv.Atoi(string(run(t, p, "pid").Payload))
		created := p.Stats().WorkerProcessesCreated
		if err := unix.Kill(pid, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(10 * time.Second)
		for p.Stats().WorkerProcessesCreated != created+1 {
			if time.Now().After(deadline) {
				t.Fatal("the killed idle worker was not replaced within 10s")
			}
			time.Sleep(time.Millisecond) // polling the replacement with a deadline
		}
		o := run(t, p, "pid")
		if o.Kind != pool.Result || string(o.Payload) == strconv.Itoa(pid) {
			t.Errorf("task after an idle worker was killed: %+v", o)
		}
		st := p.Stats()
		if st.TasksFailed != 0 {
			t.Errorf("tasks_failed = %d after an idle worker died", st.TasksFailed)
		}
	})
	// An idle slot waits on its worker's socket. Here a child of the
	// worker keeps a copy of that socket open, so the socket does not end
	// when the worker dies: the slot must see the death all the same.
	t.Run("idle, socket held open", func(t *testing.T) {
		_, p := newPool(t, func(c *pool.Config) { c.Env["CGPOOL_TEST_HOLD_SOCKET"] = "1" })
		deadline := time.Now().Add(10 * time.Second)
		var pid int
		for pid == 0 {
			if ws := p.Status().Workers; len(ws) == 1 && ws[0].State == "idle" {
				pid = ws[0].Pid
			} else if time.Now().After(deadline) {
				t.Fatalf("no idle worker within 10s: %+v", p.Status())
			} else {
				time.Sleep(time.Millisecond) // polling the start with a deadline
			}
		}
		created := p.Stats().WorkerProcessesCreated
		if err := unix.Kill(pid, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		for p.Stats().WorkerProcessesCreated != created+1 {
			if time.Now().After(deadline) {
				t.Fatal("a killed idle worker whose socket stayed open was not replaced within 10s")
			}
			time.Sleep(time.Millisecond) // polling the replacement with a deadline
		}
		if o := run(t, p, "echo:next"); o.Kind != pool.Result {
			t.Errorf("task after the idle worker was killed: %+v", o)
		}
	})
}

func pidAlive(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	s := string(b)
	i := len(s) - 1
	for i > 0 && s[i] != ')' {
		i--
	}
	return i+2 < len(s) && s[i+2] != 'Z'
}

// TestTimeoutKillsTree: acceptance 3 and 4.
func TestTimeoutKillsTree(t *testing.T) {
	_, p := newPool(t, nil)
	pidFile := filepath.Join(t.TempDir(), "daemon.pid")
	for _, tc := range []struct{ name, payload string }{{"daemon", "daemon:" + pidFile}, {"spin", "spin"}} {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			f := submit(t, p, pool.Spec{Payload: []byte(tc.payload), Timeout: 500 * time.Millisecond})
			ev := <-f.running
			o := f.wait(t, 10*time.Second)
			took := time.Since(start)
			if o.Kind != pool.TimedOut {
				t.Fatalf("outcome %+v, want timeout", o)
			}
			if took > 1500*time.Millisecond {
				t.Errorf("timeout reported after %v, want within timeout + 1s", took)
			}
			pids := []int{ev.Pid}
			if b, err := os.ReadFile(pidFile); err == nil && tc.name == "daemon" {
				n, _ := strconv.Atoi(string(b))
				pids = append(pids, n)
			} else if tc.name == "daemon" {
				t.Fatalf("the daemon never wrote its pid: %v", err)
			}
			for _, pid := range pids {
				if pidAlive(pid) {
					t.Errorf("pid %d of the timed-out task's tree is still alive", pid)
				}
			}
		})
	}
	if st := p.Stats(); st.TasksFailed != 2 || st.FailuresByReason["timeout"] != 2 {
		t.Errorf("tasks_failed = %d, failures %v; want each timeout counted once", st.TasksFailed, st.FailuresByReason)
	}
}

// TestPriorityOrder: acceptance 5.
func TestPriorityOrder(t *testing.T) {
	_, p := newPool(t, nil)
	busy := submit(t, p, pool.Spec{Payload: []byte("sleep:300")})
	<-busy.running
	var mu sync.Mutex
	var order []string
	var fs []*future
	for i, prio := range []int{5, 1, 3, 0, 1} {
		f := newFuture()
		name := strconv.Itoa(prio) + "/" + strconv.Itoa(i)
		notify := func(e pool.Event) {
			if e.Running {
				mu.Lock()
				order = append(order, name)
				mu.Unlock()
			}
			f.notify(e)
		}
		if _, err := p.Submit(context.Background(), pool.Spec{Payload: []byte("echo:x"), Priority: prio}, notify); err != nil {
			t.Fatal(err)
		}
		fs = append(fs, f)
	}
	for _, f := range fs {
		f.wait(t, 10*time.Second)
	}
	want := []string{"0/3", "1/1", "1/4", "3/2", "5/0"}
	if !slices.Equal(order, want) {
		t.Errorf("start order %v, want %v", order, want)
	}
	if _, err := p.Submit(context.Background(), pool.Spec{Payload: []byte("x"), Priority: -1}, nil); !errors.Is(err, pool.ErrInvalid) {
		t.Errorf("negative priority: %v, want ErrInvalid", err)
	}
}

// TestMaxTasksPerChild: acceptance 7.
func TestMaxTasksPerChild(t *testing.T) {
	for _, tc := range []struct{ max, want int }{{1, 10}, {100, 1}} {
		t.Run(strconv.Itoa(tc.max), func(t *testing.T) {
			_, p := newPool(t, func(c *pool.Config) { c.MaxTasksPerChild = tc.max })
			pids := map[string]bool{}
			for range 10 {
				pids[string(run(t, p, "pid").Payload)] = true
			}
			if len(pids) != tc.want {
				t.Errorf("%d distinct pids, want %d", len(pids), tc.want)
			}
		})
	}
}

// TestEnvironment: acceptance 9, with and without a spare worker (a spare
// started before a change must not serve after the recycle).
func TestEnvironment(t *testing.T) {
	for _, spares := range []int{0, 1} {
		t.Run("spares="+strconv.Itoa(spares), func(t *testing.T) { testEnvironment(t, spares) })
	}
}

func testEnvironment(t *testing.T, spares int) {
	_, p := newPool(t, func(c *pool.Config) { c.Env["COLOR"] = "red"; c.SpareWorkers = spares })
	if got := string(run(t, p, "env:COLOR").Payload); got != "red" {
		t.Fatalf("COLOR = %q, want red", got)
	}
	o := submit(t, p, pool.Spec{Payload: []byte("env:EXTRA"), Env: map[string]string{"EXTRA": "only-me"}}).wait(t, 10*time.Second)
	if string(o.Payload) != "only-me" {
		t.Errorf("per-task EXTRA = %q", o.Payload)
	}
	if got := string(run(t, p, "env:EXTRA").Payload); got != "" {
		t.Errorf("EXTRA leaked into the next task: %q", got)
	}
	for i := range 50 {
		color := "c" + strconv.Itoa(i)
		p.SetEnv(map[string]string{"COLOR": color}, false)
		if i == 0 {
			if got := string(run(t, p, "env:COLOR").Payload); got != "red" {
				t.Fatalf("before recycle COLOR = %q, want the running worker's red", got)
			}
		}
		p.Recycle()
		if got := string(run(t, p, "env:COLOR").Payload); got != color {
			t.Fatalf("round %d: after recycle COLOR = %q, want %q", i, got, color)
		}
	}
}

// TestStatistics: acceptance 10 and 8.
func TestStatistics(t *testing.T) {
	_, p := newPool(t, func(c *pool.Config) {
		c.MaxWorkers, c.MinWorkers, c.IdleDelay = 10, intp(5), 300*time.Millisecond
	})
	var fs []*future
	for i := range 100 {
		payload := "sleep:20"
		if i%2 == 1 {
			payload = "fail:odd"
		}
		fs = append(fs, submit(t, p, pool.Spec{Payload: []byte(payload)}))
	}
	for _, f := range fs {
		f.wait(t, 60*time.Second)
	}
	var st pool.Stats
	deadline := time.Now().Add(10 * time.Second)
	for {
		st = p.Stats()
		if st.WorkerProcessesStillAlive == 5 && st.WorkerProcessesIdle == 5 || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond) // polling the scale-down with a deadline
	}
	if st.TasksReceived != 100 || st.TasksLaunched != 100 || st.TasksFailed != 50 || st.MaxWorkersBusyConcurrently > 10 ||
		st.WorkerProcessesStillAlive != 5 || st.WorkerProcessesIdle != 5 || st.WorkerProcessesBusy != 0 {
		t.Errorf("stats %+v", st)
	}
	// Another burst grows back to 10. Its tasks wait at a gate until all
	// ten run, however long the five new workers take to start.
	gate := filepath.Join(t.TempDir(), "gate")
	if err := unix.Mkfifo(gate, 0o600); err != nil {
		t.Fatal(err)
	}
	g, err := os.OpenFile(gate, os.O_RDWR, 0) // a writer from the start: the tasks' opens do not block
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	fs = fs[:0]
	for range 10 {
		fs = append(fs, submit(t, p, pool.Spec{Payload: []byte("gate:" + gate)}))
	}
	for _, f := range fs {
		select {
		case <-f.running:
		case <-time.After(60 * time.Second):
			t.Fatalf("not all 10 tasks of the second burst run: %+v", p.Stats())
		}
	}
	if st := p.Stats(); st.WorkerProcessesBusy != 10 {
		t.Errorf("busy = %d during the second burst, want 10", st.WorkerProcessesBusy)
	}
	if _, err := g.Write(make([]byte, 10)); err != nil {
		t.Fatal(err)
	}
	for _, f := range fs {
		if o := f.wait(t, 10*time.Second); o.Kind != pool.Result {
			t.Errorf("second burst: %+v", o)
		}
	}
}

func TestScaleToZero(t *testing.T) {
	_, p := newPool(t, func(c *pool.Config) { c.MaxWorkers, c.MinWorkers, c.IdleDelay = 2, intp(0), 100*time.Millisecond })
	run(t, p, "echo:a")
	deadline := time.Now().Add(10 * time.Second)
	for p.Stats().WorkerProcessesStillAlive != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("still %d workers after the idle delay", p.Stats().WorkerProcessesStillAlive)
		}
		time.Sleep(10 * time.Millisecond) // polling the scale-down with a deadline
	}
	if o := run(t, p, "echo:b"); o.Kind != pool.Result {
		t.Errorf("after scaling to zero: %+v", o)
	}
}

// TestFreshWorkerGetsCurrentEnvironment: a replacement worker that has not
// run a task yet takes the environment current when its first task
// starts, whatever the timing of its start.
func TestFreshWorkerGetsCurrentEnvironment(t *testing.T) {
	for _, spares := range []int{0, 1} {
		t.Run("spares="+strconv.Itoa(spares), func(t *testing.T) {
			_, p := newPool(t, func(c *pool.Config) { c.MaxTasksPerChild = 1; c.SpareWorkers = spares; c.Env["PROP"] = "0" })
			for i := range 20 {
				// Let the replacement of the last task's worker start first,
				// so that the change comes after it: the case to get right.
				deadline := time.Now().Add(10 * time.Second)
				for p.Stats().WorkerProcessesCreated < int64(i+1) {
					if time.Now().After(deadline) {
						t.Fatalf("round %d: no replacement worker within 10s", i)
					}
					time.Sleep(time.Millisecond) // polling the replacement with a deadline
				}
				want := strconv.Itoa(i)
				p.SetEnv(map[string]string{"PROP": want}, false)
				if got := string(run(t, p, "env:PROP").Payload); got != want {
					t.Fatalf("round %d: PROP = %q, want %q", i, got, want)
				}
			}
		})
	}
}

// TestSlotPanicIsContained: a panic in a slot's goroutine (a bug in cgpool)
// ends only that slot's task, with reason lost; the supervisor (this test
// process) lives on, the slot is replaced, and the next task runs.
func TestSlotPanicIsContained(t *testing.T) {
	pool.SetTestHookRunTask(func(payload []byte, argv []string) {
		if string(payload) == "panic" || slices.Contains(argv, "panic") {
			panic("injected by the test")
		}
	})
	t.Cleanup(func() { pool.SetTestHookRunTask(nil) })
	for _, k := range []pool.Kind{pool.KindWorker, pool.KindExec} {
		t.Run(string(k), func(t *testing.T) {
			_, p := newPool(t, func(c *pool.Config) {
				c.Kind = k
				if k == pool.KindExec {
					c.Command = nil
				}
			})
			spec, next := pool.Spec{Payload: []byte("panic")}, pool.Spec{Payload: []byte("echo:after")}
			if k == pool.KindExec {
				spec, next = pool.Spec{Argv: []string{"/bin/echo", "panic"}}, pool.Spec{Argv: []string{"/bin/echo", "after"}}
			}
			o := submit(t, p, spec).wait(t, 30*time.Second)
			if o.Kind != pool.ProcessError || o.Reason != pool.ReasonLost {
				t.Errorf("the task whose slot panicked: %+v, want a process error of reason lost", o)
			}
			o = submit(t, p, next).wait(t, 30*time.Second)
			if o.Kind != pool.Result {
				t.Errorf("the next task: %+v, want a result", o)
			}
			st := p.Stats()
			if n := len(p.Status().Workers); st.SlotPanics != 1 || st.FailuresByReason["lost"] != 1 || n != 1 {
				t.Errorf("after one panic: slot_panics %d, failures %v, %d slots; want 1, lost 1, 1 slot",
					st.SlotPanics, st.FailuresByReason, n)
			}
		})
	}
}

// TestStartWorkers: a pool with start_workers above min_workers starts
// that many; those that have run no task stay (no idle deadline before
// their first); after a task a worker above min_workers retires by its
// idle delay. Deadpool's figures for min 5, max 10 and two bursts of 6:
// created 10, then 11.
func TestStartWorkers(t *testing.T) {
	_, p := newPool(t, func(c *pool.Config) {
		c.MaxWorkers, c.MinWorkers, c.StartWorkers, c.IdleDelay = 10, intp(5), 10, 20*time.Millisecond
	})
	waitStats := func(what string, ok func(pool.Stats) bool) pool.Stats {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for {
			st := p.Stats()
			if ok(st) {
				return st
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: not within 30 s: %+v", what, st)
			}
			time.Sleep(5 * time.Millisecond) // polling the pool's counters with a deadline
		}
	}
	waitStats("10 workers up", func(st pool.Stats) bool { return st.WorkerProcessesIdle == 10 })
	// Ten idle delays: none of the unused five retires.
	time.Sleep(10 * 20 * time.Millisecond)
	if st := p.Stats(); st.WorkerProcessesStillAlive != 10 || st.WorkersRetired != 0 {
		t.Fatalf("unused start workers retired: %+v", st)
	}
	var created []int64
	for range 2 {
		var fs []*future
		for range 6 {
			fs = append(fs, submit(t, p, pool.Spec{Payload: []byte("sleep:100")}))
		}
		for _, f := range fs {
			if o := f.wait(t, 30*time.Second); o.Kind != pool.Result {
				t.Fatalf("burst: %+v", o)
			}
		}
		st := waitStats("back to 5", func(st pool.Stats) bool { return st.WorkerProcessesStillAlive == 5 && st.WorkerProcessesIdle == 5 })
		created = append(created, st.WorkerProcessesCreated)
	}
	if !slices.Equal(created, []int64{10, 11}) {
		t.Errorf("workers created after each burst %v, want [10 11] (Deadpool's)", created)
	}
}

func TestStartWorkersChecked(t *testing.T) {
	cfg := testConfig(func(c *pool.Config) { c.MaxWorkers, c.StartWorkers = 2, 3 })
	_, err := pool.NewSupervisor(kerneltest.NewRoot(t), []pool.Config{cfg}, nil)
	if err == nil || !strings.Contains(err.Error(), "start_workers 3 must be in 0..max_workers (2)") {
		t.Errorf("start_workers above max_workers: %v", err)
	}
}
