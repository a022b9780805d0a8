//go:build soak

package main

// The chaos soak of issue 11: a real cgpool serve driven for a fixed time
// by several clients with a mix of tasks (every per-task option with every
// way a task can end), while a chaos loop kills and stops workers, cuts
// clients off, cancels tasks and restarts the daemon. After every phase an
// invariant checker looks at what the clients saw, at the daemon's
// statistics and at what is left on the machine. In the VM (where the
// memory and pids controllers exist) it runs the OOM and fork-bomb tasks
// too:
//
//	scripts/vm-test.sh -tags soak -run '^TestSoak$' ./cmd/cgpool   # 5 minutes
//	CGPOOL_SOAK=2m go test -tags soak -run '^TestSoak$' -v ./cmd/cgpool
//
// It ends with one summary line and fails on any lost task (no terminal
// outcome), a task that ended twice or for the wrong reason, a leak, or
// statistics that do not add up.

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
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
	"github.com/cgpool/cgpool/ipc"
	"github.com/cgpool/cgpool/pool"
	"github.com/cgpool/cgpool/worker"
)

// soakMarker is set in every task's environment: after a phase no process
// may have it (tasks and what they started must all be gone).
const soakMarker = "CGPOOL_SOAK_TASK"

func init() {
	if os.Getenv("CGPOOL_SOAK_WORKER") == "1" {
		os.Exit(soakWorker())
	}
}

// soakWorker is the worker program of the soak's worker pool.
func soakWorker() int {
	err := worker.Serve(func(_ context.Context, t *worker.Task) ([]byte, error) {
		op, arg, _ := strings.Cut(string(t.Payload), ":")
		switch op {
		case "echo":
			return []byte(arg), nil
		case "env":
			return []byte(os.Getenv(arg)), nil
		case "fail":
			return nil, fmt.Errorf("%s", arg)
		case "sleep":
			ms, _ := strconv.Atoi(arg)
			time.Sleep(time.Duration(ms) * time.Millisecond)
			return []byte("slept"), nil
		case "alloc":
			mib, _ := strconv.Atoi(arg)
			var keep [][]byte
			for range mib {
				b := make([]byte, 1<<20)
				for j := 0; j < len(b); j += 4096 {
					b[j] = 1
				}
				keep = append(keep, b)
			}
			return []byte(strconv.Itoa(len(keep))), nil
		case "daemon":
			cmd := exec.Command("/bin/sh", "-c", "setsid sleep 1000 >/dev/null 2>&1 &")
			if err := cmd.Run(); err != nil {
				return nil, err
			}
			return []byte("detached"), nil
		case "exit":
			n, _ := strconv.Atoi(arg)
			os.Exit(n)
		}
		return nil, fmt.Errorf("unknown op %q", op)
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

// A soak task: what was asked, what was expected, what happened.
type soakTask struct {
	id       uint64
	kind     string
	pool     string
	h        ipc.Header
	payload  string
	expect   []string // acceptable outcomes, e.g. "result", "timeout", "process_error/oom"
	check    func(ipc.Header, []byte) string
	accepted bool
	pid      int
	finals   []string
	detail   string
	epoch    int // the daemon run it was sent to
	// cutWhileLive: the chaos closed its connection while it was live.
	cutWhileLive bool
	finalAt      time.Time // when its (first) end arrived
}

func outcomeOf(h ipc.Header) string {
	if h.Type == ipc.TypeProcessError || h.Type == ipc.TypeRejected {
		return h.Type + "/" + h.Reason
	}
	return h.Type
}

// soakKinds builds the task mix. full: the memory and pids controllers are
// there (the OOM and fork-bomb tasks run).
func soakKinds(full bool, exe string) []func(r *rand.Rand) soakTask {
	sh := func(script string) []string { return []string{"/bin/sh", "-c", script} }
	kinds := []func(r *rand.Rand) soakTask{
		func(r *rand.Rand) soakTask {
			v := strconv.Itoa(r.IntN(1e6))
			return soakTask{kind: "exec-ok", pool: "exec", h: ipc.Header{Argv: sh("echo $SOAK_V"), Env: map[string]string{"SOAK_V": v}},
				expect: []string{ipc.TypeResult},
				check: func(h ipc.Header, p []byte) string {
					if h.ExitCode != 0 || strings.TrimSpace(string(p[:h.StdoutLen])) != v {
						return fmt.Sprintf("exit %d stdout %q, want 0 and %q", h.ExitCode, p[:h.StdoutLen], v)
					}
					return ""
				}}
		},
		func(r *rand.Rand) soakTask {
			return soakTask{kind: "exec-exit", pool: "exec", h: ipc.Header{Argv: sh("exit 3")}, expect: []string{ipc.TypeResult},
				check: func(h ipc.Header, _ []byte) string {
					if h.ExitCode != 3 {
						return fmt.Sprintf("exit %d, want 3", h.ExitCode)
					}
					return ""
				}}
		},
		func(r *rand.Rand) soakTask {
			return soakTask{kind: "exec-timeout", pool: "exec", h: ipc.Header{Argv: sh("sleep 30"), TimeoutMS: 200 + int64(r.IntN(300))}, expect: []string{ipc.TypeTimeout}}
		},
		func(r *rand.Rand) soakTask {
			return soakTask{kind: "exec-daemon", pool: "exec", h: ipc.Header{Argv: sh("setsid sleep 1000 >/dev/null 2>&1 & echo started")}, expect: []string{ipc.TypeResult}}
		},
		func(r *rand.Rand) soakTask {
			const n = 5_000_000
			return soakTask{kind: "exec-5mb", pool: "exec", h: ipc.Header{Argv: sh(fmt.Sprintf("head -c %d /dev/zero", n))}, expect: []string{ipc.TypeResult},
				check: func(h ipc.Header, p []byte) string {
					// Whole, or cut at the pool's limit and said so: never cut silently.
					if got := h.StdoutLen; got != n && !(h.StdoutTruncated && got > 0) {
						return fmt.Sprintf("stdout %d bytes, truncated %v; want %d, or truncated and said so", got, h.StdoutTruncated, n)
					}
					return ""
				}}
		},
		func(r *rand.Rand) soakTask {
			v := strconv.Itoa(r.IntN(1e6))
			return soakTask{kind: "work-ok", pool: "work", payload: "echo:" + v, expect: []string{ipc.TypeResult},
				check: func(_ ipc.Header, p []byte) string {
					if string(p) != v {
						return fmt.Sprintf("answer %q, want %q", p, v)
					}
					return ""
				}}
		},
		func(r *rand.Rand) soakTask {
			v := strconv.Itoa(r.IntN(1e6))
			return soakTask{kind: "work-env", pool: "work", payload: "env:SOAK_V", h: ipc.Header{Env: map[string]string{"SOAK_V": v}}, expect: []string{ipc.TypeResult},
				check: func(_ ipc.Header, p []byte) string {
					if string(p) != v {
						return fmt.Sprintf("env answer %q, want %q", p, v)
					}
					return ""
				}}
		},
		func(r *rand.Rand) soakTask {
			return soakTask{kind: "work-raise", pool: "work", payload: "fail:boom", expect: []string{ipc.TypeTaskError}}
		},
		func(r *rand.Rand) soakTask {
			return soakTask{kind: "work-crash", pool: "work", payload: "exit:3", expect: []string{ipc.TypeProcessError + "/" + ipc.ProcessCrashed}}
		},
		func(r *rand.Rand) soakTask {
			return soakTask{kind: "work-timeout", pool: "work", payload: "sleep:30000", h: ipc.Header{TimeoutMS: 200 + int64(r.IntN(300))}, expect: []string{ipc.TypeTimeout}}
		},
		func(r *rand.Rand) soakTask {
			return soakTask{kind: "work-daemon", pool: "work", payload: "daemon:", expect: []string{ipc.TypeResult}}
		},
	}
	if full {
		kinds = append(kinds,
			func(r *rand.Rand) soakTask {
				// Past memory.max the kernel first reclaims, the worker's own
				// program text included, and under emulation with other
				// tasks at it that can outlast the task's deadline before the
				// OOM killer comes: a timeout is then the right outcome too
				// (the task ran past its limit). Any other end is wrong.
				return soakTask{kind: "work-oom", pool: "work", payload: "alloc:200", h: ipc.Header{MemoryMax: 64 << 20}, expect: []string{ipc.TypeProcessError + "/" + ipc.ProcessOOM, ipc.TypeTimeout}}
			},
			func(r *rand.Rand) soakTask {
				// The test binary's alloc helper: 200 MiB touched, under 32.
				return soakTask{kind: "exec-oom", pool: "exec", h: ipc.Header{Argv: []string{exe}, MemoryMax: 32 << 20,
					Env: map[string]string{"CGPOOL_TEST_MAIN": "", kerneltest.HelperEnv: "alloc", "CGPOOL_TEST_ARGS": "200"}},
					expect: []string{ipc.TypeProcessError + "/" + ipc.ProcessOOM, ipc.TypeTimeout}} // see work-oom
			},
			func(r *rand.Rand) soakTask {
				// pids.max holds it; the shell may give up when it cannot fork
				// its sleep (a result), or be killed at its timeout.
				return soakTask{kind: "exec-forkbomb", pool: "exec", h: ipc.Header{Argv: sh("b() { b | b & }; b; sleep 30"), TimeoutMS: 1000}, expect: []string{ipc.TypeTimeout, ipc.TypeResult}}
			},
		)
	}
	return kinds
}

// soakDaemon is one run of cgpool serve.
type soakDaemon struct {
	cmd   *exec.Cmd
	pid   int
	epoch int
}

type soak struct {
	t      *testing.T
	sock   string
	config string
	full   bool
	mnt    cgroup.MountInfo

	mu      sync.Mutex
	d       *soakDaemon
	epoch   int // daemon runs so far
	tasks   []*soakTask
	killed  map[int]bool // worker pids the chaos SIGKILLed
	stopped map[int]bool // worker pids the chaos SIGSTOPped
	// faults injected, by kind
	faults map[string]int
	// inFlight tasks of a connection or daemon that the chaos ended:
	// their end is "lost" (the connection closed) or a shutdown's.
	clients []*soakClient
	// restartAt is when the chaos signalled the daemon of each run it
	// ended: a task of that run that ended after it may end as the
	// shutdown (or the kill) makes it.
	restartAt  map[int]time.Time
	restarting bool // clients pause meanwhile
}

func (s *soak) startDaemon() {
	s.t.Helper()
	ctx := context.Background()
	cmd := cgpool(ctx, "serve", "--config", s.config, "--ready", "--log-level", "error")
	cmd.Env = append(cmd.Env, "CGPOOL_SOAK_WORKER=")
	startReady(s.t, cmd, s.sock)
	s.mu.Lock()
	s.epoch++
	s.d = &soakDaemon{cmd: cmd, pid: cmd.Process.Pid, epoch: s.epoch}
	s.mu.Unlock()
}

// soakClient is one client connection speaking the protocol itself, so that
// it sees every frame: a second final, or none, is a violation it can tell.
type soakClient struct {
	s    *soak
	mu   sync.Mutex
	conn *ipc.Conn
	live map[uint64]*soakTask
	next uint64
	done chan struct{} // closed when the reader ends
	cut  bool          // the chaos closed it
	dead bool          // the reader has ended: nothing more can be live
}

func (s *soak) dial() (*soakClient, error) {
	nc, err := net.Dial("unix", s.sock)
	if err != nil {
		return nil, err
	}
	c := ipc.NewConn(nc)
	if _, err := ipc.ClientHello(c, "soak"); err != nil {
		c.Close()
		return nil, err
	}
	sc := &soakClient{s: s, conn: c, live: map[uint64]*soakTask{}, done: make(chan struct{})}
	go sc.read()
	return sc, nil
}

func (c *soakClient) read() {
	defer close(c.done)
	for {
		h, p, err := c.conn.Read()
		if err != nil {
			c.mu.Lock()
			// The connection ended: what was live ends "disconnected"
			// (allowed where the chaos cut it or restarted the daemon).
			why := "disconnected"
			if !c.cut {
				why = "disconnected-uncut"
			}
			for _, t := range c.live {
				t.finals = append(t.finals, why)
				t.finalAt = time.Now()
			}
			c.live = map[uint64]*soakTask{}
			c.dead = true
			c.mu.Unlock()
			return
		}
		c.mu.Lock()
		t := c.live[h.ID]
		switch {
		case t == nil:
			if h.Type != ipc.TypeCancelReply && h.Type != ipc.TypeOK && h.Type != ipc.TypeError {
				c.s.t.Errorf("a %s frame for id %d, which is not live", h.Type, h.ID)
			}
		case h.Type == ipc.TypeAccepted:
			if t.accepted {
				c.s.t.Errorf("task %d (%s) accepted twice", t.id, t.kind)
			}
			t.accepted = true
		case h.Type == ipc.TypeRunning:
			t.pid = h.PID
		case h.Type == ipc.TypeCancelReply:
		case ipc.IsFinal(h.Type):
			t.finals = append(t.finals, outcomeOf(h))
			if t.finalAt.IsZero() {
				t.finalAt = time.Now()
			}
			if t.check != nil && h.Type == ipc.TypeResult {
				t.detail = t.check(h, p)
			}
			if h.Type != ipc.TypeRejected && !t.accepted {
				c.s.t.Errorf("task %d (%s) ended %s without accepted", t.id, t.kind, h.Type)
			}
			delete(c.live, h.ID)
		}
		c.mu.Unlock()
	}
}

func (c *soakClient) submit(t *soakTask) error {
	c.mu.Lock()
	if c.dead || c.cut {
		c.mu.Unlock()
		return net.ErrClosed // not sent: it is no task of the soak
	}
	c.next++
	t.id = c.next
	t.h.Type, t.h.ID, t.h.Pool = ipc.TypeSubmit, t.id, t.pool
	if t.h.Env == nil {
		t.h.Env = map[string]string{}
	}
	t.h.Env[soakMarker] = "1"
	c.live[t.id] = t
	c.mu.Unlock()
	c.s.mu.Lock()
	t.epoch = c.s.d.epoch
	c.s.mu.Unlock()
	return c.conn.Write(&t.h, []byte(t.payload))
}

func (c *soakClient) inFlight() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.live)
}

// TestSoak: the chaos soak. Duration: CGPOOL_SOAK (default 5m in the VM,
// 1m elsewhere), in phases of a fifth of it.
func TestSoak(t *testing.T) {
	requireCgroups(t)
	total := time.Minute
	if kerneltest.InVM() {
		total = 5 * time.Minute
	}
	if v := os.Getenv("CGPOOL_SOAK"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			t.Fatal(err)
		}
		total = d
	}
	mnt, err := cgroup.FindMount()
	if err != nil {
		t.Fatal(err)
	}
	ctrls, _ := os.ReadFile(filepath.Join(mnt.Point, "cgroup.controllers"))
	full := strings.Contains(string(ctrls), "memory") && strings.Contains(string(ctrls), "pids")
	if kerneltest.InVM() && !full {
		t.Fatalf("the VM has no memory or pids controller: %q", ctrls)
	}
	dir := shortTempDir(t, "cgpool-soak")
	exe := kerneltest.PublicExecutable(t)
	sock := filepath.Join(dir, "s.sock")
	cfg := map[string]any{
		"socket": sock,
		"pools": []map[string]any{
			{"name": "exec", "kind": "exec", "max_workers": 3, "max_backlog": 200, "allow_root": true, "default_timeout": "20s", "max_timeout": "30s"},
			{"name": "work", "kind": "worker", "command": []string{exe}, "max_workers": 3, "spare_workers": 1, "max_backlog": 200, "allow_root": true,
				"env": map[string]string{"CGPOOL_SOAK_WORKER": "1", "CGPOOL_TEST_MAIN": ""}, "default_timeout": "20s", "max_timeout": "30s", "max_tasks_per_child": 50},
		},
	}
	if full {
		for _, p := range cfg["pools"].([]map[string]any) {
			p["memory_max"] = "256M"
			p["pids_max"] = 64
		}
	}
	b, _ := json.Marshal(cfg)
	s := &soak{t: t, sock: sock, config: filepath.Join(dir, "soak.json"), full: full, mnt: mnt,
		killed: map[int]bool{}, stopped: map[int]bool{}, faults: map[string]int{}, restartAt: map[int]time.Time{}}
	if err := os.WriteFile(s.config, b, 0o600); err != nil {
		t.Fatal(err)
	}
	s.startDaemon()
	t.Cleanup(func() { s.stopDaemon(syscall.SIGTERM) })
	phases := 5
	phase := total / time.Duration(phases)
	kinds := soakKinds(full, exe)
	start := time.Now()
	for i := range phases {
		s.runPhase(i, phase, kinds)
		if t.Failed() {
			break
		}
	}
	s.stopDaemon(syscall.SIGTERM)
	s.checkNothingLeft("after the last shutdown", 0)
	s.summary(time.Since(start))
}

// runPhase drives clients and chaos for d, then waits for every task's
// end and checks the invariants.
func (s *soak) runPhase(n int, d time.Duration, kinds []func(*rand.Rand) soakTask) {
	const clients, inFlight = 4, 12
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for ci := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(n), uint64(ci)))
			var c *soakClient
			for {
				select {
				case <-stop:
					if c != nil {
						s.drain(c)
					}
					return
				default:
				}
				if c == nil || isClosed(c.done) {
					if c != nil {
						s.drain(c)
					}
					var err error
					if c, err = s.dial(); err != nil {
						time.Sleep(20 * time.Millisecond) // the daemon restarts: dial again
						c = nil
						continue
					}
					s.mu.Lock()
					s.clients = append(s.clients, c)
					s.mu.Unlock()
				}
				s.mu.Lock()
				restarting := s.restarting
				s.mu.Unlock()
				if restarting || c.inFlight() >= inFlight {
					time.Sleep(5 * time.Millisecond)
					continue
				}
				task := kinds[r.IntN(len(kinds))](r)
				// Per-task options on top of the kind's own.
				if r.IntN(3) == 0 {
					task.h.Priority = r.IntN(4)
				}
				if r.IntN(5) == 0 {
					task.h.QueueTimeoutMS = 100 + int64(r.IntN(400))
					task.expect = append(task.expect, ipc.TypeQueueTimeout)
				}
				if task.h.TimeoutMS == 0 && r.IntN(3) == 0 {
					task.h.TimeoutMS = 15_000 // generous: not reached
				}
				if task.h.MemoryMax == 0 && s.full && r.IntN(3) == 0 {
					task.h.MemoryMax = 128 << 20
				}
				s.mu.Lock()
				s.tasks = append(s.tasks, &task)
				s.mu.Unlock()
				if err := c.submit(&task); err != nil {
					continue // the connection went: its reader marks the task
				}
				if r.IntN(50) == 0 {
					time.Sleep(20 * time.Millisecond) // now and then a pause: queues fill and drain
				}
			}
		}()
	}
	chaosDone := make(chan struct{})
	go func() {
		defer close(chaosDone)
		r := rand.New(rand.NewPCG(uint64(n), 99))
		restartAt := time.Now().Add(d / 2)
		for {
			select {
			case <-stop:
				return
			case <-time.After(time.Duration(300+r.IntN(700)) * time.Millisecond):
			}
			if time.Now().After(restartAt) {
				restartAt = time.Now().Add(time.Hour)
				sig := syscall.SIGTERM
				if n%2 == 1 {
					sig = syscall.SIGKILL
				}
				s.restartDaemon(sig)
				continue
			}
			switch r.IntN(4) {
			case 0:
				s.chaosSignal(r, syscall.SIGKILL)
			case 1:
				s.chaosSignal(r, syscall.SIGSTOP)
			case 2:
				s.chaosCut(r)
			case 3:
				s.chaosCancel(r)
			}
		}
	}()
	time.Sleep(d) // the phase runs for its time: this is the soak's clock, not a wait for an event
	close(stop)
	<-chaosDone
	wg.Wait()
	// Every task that was sent has exactly one end now (drain waited).
	s.checkTasks(n)
	s.checkStats(n)
	s.mu.Lock()
	epoch := s.d.epoch
	s.mu.Unlock()
	s.checkNothingLeft(fmt.Sprintf("after phase %d", n+1), epoch)
}

func isClosed(c <-chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

// drain waits (bounded) for a client's tasks to end, then closes it.
func (s *soak) drain(c *soakClient) {
	deadline := time.Now().Add(90 * time.Second)
	for c.inFlight() > 0 && time.Now().Before(deadline) && !isClosed(c.done) {
		time.Sleep(10 * time.Millisecond)
	}
	c.conn.Close()
	<-c.done
}

// busyPids lists the pids running tasks now.
func (s *soak) busyPids() []int {
	var pids []int
	// A status request through a plain connection of its own.
	nc, err := net.Dial("unix", s.sock)
	if err != nil {
		return nil
	}
	conn := ipc.NewConn(nc)
	defer conn.Close()
	if _, err := ipc.ClientHello(conn, "soak-chaos"); err != nil {
		return nil
	}
	if conn.Write(&ipc.Header{Type: ipc.TypeStatus, ID: 1}, nil) != nil {
		return nil
	}
	h, _, err := conn.Read()
	if err != nil || h.Type != ipc.TypeStatusReply {
		return nil
	}
	var all map[string]pool.Status
	if json.Unmarshal(h.Status, &all) != nil {
		return nil
	}
	for _, st := range all {
		for _, w := range st.Workers {
			if w.State == "busy" && w.Pid > 0 {
				pids = append(pids, w.Pid)
			}
		}
	}
	return pids
}

func (s *soak) chaosSignal(r *rand.Rand, sig syscall.Signal) {
	pids := s.busyPids()
	if len(pids) == 0 {
		return
	}
	pid := pids[r.IntN(len(pids))]
	s.mu.Lock()
	if sig == syscall.SIGKILL {
		s.killed[pid] = true
		s.faults["kill-worker"]++
	} else {
		s.stopped[pid] = true
		s.faults["stop-worker"]++
	}
	s.mu.Unlock()
	syscall.Kill(pid, sig)
	if sig == syscall.SIGSTOP {
		time.Sleep(time.Duration(200+r.IntN(600)) * time.Millisecond) // stopped for a while, then resumed
		syscall.Kill(pid, syscall.SIGCONT)
	}
}

func (s *soak) chaosCut(r *rand.Rand) {
	s.mu.Lock()
	var live []*soakClient
	for _, c := range s.clients {
		if !isClosed(c.done) {
			live = append(live, c)
		}
	}
	if len(live) == 0 {
		s.mu.Unlock()
		return
	}
	c := live[r.IntN(len(live))]
	s.faults["cut-client"]++
	s.mu.Unlock()
	c.mu.Lock()
	c.cut = true
	for _, t := range c.live {
		t.cutWhileLive = true
	}
	c.mu.Unlock()
	c.conn.Close()
}

func (s *soak) chaosCancel(r *rand.Rand) {
	s.mu.Lock()
	var live []*soakClient
	for _, c := range s.clients {
		if !isClosed(c.done) {
			live = append(live, c)
		}
	}
	s.mu.Unlock()
	if len(live) == 0 {
		return
	}
	c := live[r.IntN(len(live))]
	c.mu.Lock()
	var ids []uint64
	for id := range c.live {
		ids = append(ids, id)
	}
	if len(ids) == 0 {
		c.mu.Unlock()
		return
	}
	id := ids[r.IntN(len(ids))]
	task := c.live[id]
	task.expect = append(task.expect, ipc.TypeCancelled)
	c.mu.Unlock()
	s.mu.Lock()
	s.faults["cancel"]++
	s.mu.Unlock()
	c.conn.Write(&ipc.Header{Type: ipc.TypeCancel, ID: id, Mode: ipc.CancelHard}, nil)
}

func (s *soak) stopDaemon(sig syscall.Signal) {
	s.mu.Lock()
	d := s.d
	s.mu.Unlock()
	if d == nil || d.cmd.ProcessState != nil {
		return
	}
	d.cmd.Process.Signal(sig)
	done := make(chan struct{})
	go func() { d.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		s.t.Errorf("cgpool serve did not end 60 s after %v", sig)
		d.cmd.Process.Kill()
		<-done
	}
}

// restartDaemon ends the daemon with sig and starts a new one. The tasks
// in flight then end as the shutdown says (SIGTERM: cancelled) or are lost
// with their connection (SIGKILL): the chaos allows both for every task
// in flight.
func (s *soak) restartDaemon(sig syscall.Signal) {
	s.mu.Lock()
	for _, c := range s.clients {
		c.mu.Lock()
		c.cut = true
		c.mu.Unlock()
	}
	s.faults["restart-"+sig.String()]++
	old := s.d
	s.restartAt[old.epoch] = time.Now()
	s.restarting = true
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.restarting = false
		s.mu.Unlock()
	}()
	s.stopDaemon(sig)
	// A SIGKILLed daemon's reaper removes its cgroups and socket; the next
	// one must find nothing of it.
	if sig == syscall.SIGKILL {
		deadline := time.Now().Add(30 * time.Second)
		root := filepath.Join(s.mnt.Point, "cgpool-"+strconv.Itoa(old.pid))
		for time.Now().Before(deadline) {
			if _, err := os.Stat(root); os.IsNotExist(err) {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		if _, err := os.Stat(root); err == nil {
			s.t.Errorf("the killed daemon's cgroup root %s is still there 30 s later", root)
		}
	}
	s.startDaemon()
}

// checkTasks: every task sent ended exactly once, for a reason its kind
// (and the chaos that hit it) allows.
func (s *soak) checkTasks(phase int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, t := range s.tasks {
		if t.id == 0 {
			continue // never sent
		}
		expect := slices.Clone(t.expect)
		expect = append(expect, ipc.TypeRejected+"/"+ipc.RejectQueueFull) // nothing ran: a retry is the client's to decide
		if at, ok := s.restartAt[t.epoch]; ok && !t.finalAt.Before(at) {
			expect = append(expect, ipc.TypeCancelled, "disconnected", ipc.TypeProcessError+"/"+ipc.ProcessKilled, ipc.TypeRejected+"/"+ipc.RejectDraining)
		}
		if s.killed[t.pid] {
			expect = append(expect, ipc.TypeProcessError+"/"+ipc.ProcessKilled)
		}
		if s.stopped[t.pid] {
			expect = append(expect, ipc.TypeTimeout)
		}
		switch {
		case len(t.finals) == 0:
			s.t.Errorf("phase %d: task %d (%s) has no outcome: lost", phase+1, t.id, t.kind)
		case len(t.finals) > 1:
			s.t.Errorf("phase %d: task %d (%s) ended %d times: %v", phase+1, t.id, t.kind, len(t.finals), t.finals)
		case t.finals[0] == "disconnected" && !slices.Contains(expect, "disconnected") && !t.cutWhileLive:
			s.t.Errorf("phase %d: task %d (%s): its connection ended without a cut", phase+1, t.id, t.kind)
		case t.finals[0] == "disconnected":
			// its connection was cut, or its daemon restarted
		case t.finals[0] == "disconnected-uncut":
			s.t.Errorf("phase %d: task %d (%s): its connection ended without a cut or a restart", phase+1, t.id, t.kind)
		case !slices.Contains(expect, t.finals[0]):
			s.t.Errorf("phase %d: task %d (%s, pid %d) ended %s, want one of %v", phase+1, t.id, t.kind, t.pid, t.finals[0], expect)
		case t.detail != "":
			s.t.Errorf("phase %d: task %d (%s): %s", phase+1, t.id, t.kind, t.detail)
		}
	}
}

// checkStats: the daemon's counters add up (its own, since it started).
func (s *soak) checkStats(phase int) {
	nc, err := net.Dial("unix", s.sock)
	if err != nil {
		s.t.Errorf("phase %d: stats: %v", phase+1, err)
		return
	}
	c := ipc.NewConn(nc)
	defer c.Close()
	if _, err := ipc.ClientHello(c, "soak-stats"); err != nil {
		s.t.Errorf("phase %d: stats: %v", phase+1, err)
		return
	}
	c.Write(&ipc.Header{Type: ipc.TypeStats, ID: 1}, nil)
	h, _, err := c.Read()
	if err != nil {
		s.t.Errorf("phase %d: stats: %v", phase+1, err)
		return
	}
	var all map[string]pool.Stats
	json.Unmarshal(h.Stats, &all)
	for name, st := range all {
		var reasons int64
		for _, n := range st.FailuresByReason {
			reasons += n
		}
		switch {
		case st.TasksReceived != st.TasksLaunched+st.TasksNeverStarted+st.TasksQueued:
			s.t.Errorf("phase %d, pool %s: received %d != launched %d + never started %d + queued %d", phase+1, name, st.TasksReceived, st.TasksLaunched, st.TasksNeverStarted, st.TasksQueued)
		case st.TasksFailed != reasons:
			s.t.Errorf("phase %d, pool %s: failed %d != the sum of its reasons %d (%v)", phase+1, name, st.TasksFailed, reasons, st.FailuresByReason)
		case st.TasksSucceeded+st.TasksFailed+st.TasksCancelled != st.TasksReceived-st.TasksQueued-st.TasksRunning:
			s.t.Errorf("phase %d, pool %s: succeeded %d + failed %d + cancelled %d != received %d - queued %d - running %d",
				phase+1, name, st.TasksSucceeded, st.TasksFailed, st.TasksCancelled, st.TasksReceived, st.TasksQueued, st.TasksRunning)
		case st.SlotPanics != 0:
			s.t.Errorf("phase %d, pool %s: %d slot goroutines panicked", phase+1, name, st.SlotPanics)
		}
	}
}

// checkNothingLeft: no task process (nor anything a task started) runs, no
// cgroup is left but the live daemon's slots (each holding its worker
// alone), and the daemon's memory, threads and descriptors are bounded.
func (s *soak) checkNothingLeft(when string, epoch int) {
	deadline := time.Now().Add(30 * time.Second)
	var left []string
	for {
		left = markedProcesses()
		if len(left) == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond) // the last kills' processes may still be dying
	}
	if len(left) > 0 {
		s.t.Errorf("%s: %d task processes still run: %v", when, len(left), left)
		s.mu.Lock()
		s.faults["leaked"] += len(left)
		s.mu.Unlock()
	}
	ents, _ := os.ReadDir(s.mnt.Point)
	s.mu.Lock()
	d := s.d
	s.mu.Unlock()
	for _, e := range ents {
		if !strings.HasPrefix(e.Name(), "cgpool-") || strings.HasPrefix(e.Name(), "cgpool-test-") {
			continue
		}
		if epoch == 0 || e.Name() != "cgpool-"+strconv.Itoa(d.pid) {
			if pid, err := strconv.Atoi(strings.TrimPrefix(e.Name(), "cgpool-")); err == nil && !processGone(pid) {
				continue // another live cgpool's (not ours)
			}
			s.t.Errorf("%s: a cgroup root of a daemon that is gone: %s", when, e.Name())
			s.mu.Lock()
			s.faults["leaked"]++
			s.mu.Unlock()
		}
	}
	if epoch == 0 {
		return
	}
	root := filepath.Join(s.mnt.Point, "cgpool-"+strconv.Itoa(d.pid))
	filepath.WalkDir(root, func(p string, de os.DirEntry, err error) error {
		if err != nil || !de.IsDir() || filepath.Base(p) != "worker" {
			return nil
		}
		b, _ := os.ReadFile(filepath.Join(p, "cgroup.procs"))
		if n := len(strings.Fields(string(b))); n > 1 {
			s.t.Errorf("%s: leaf %s holds %d processes (a worker and what it left)", when, p, n)
			s.mu.Lock()
			s.faults["leaked"]++
			s.mu.Unlock()
		}
		return nil
	})
	st, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", d.pid))
	var rss, threads int64
	for _, line := range strings.Split(string(st), "\n") {
		f := strings.Fields(line)
		if len(f) >= 2 && f[0] == "VmRSS:" {
			rss, _ = strconv.ParseInt(f[1], 10, 64)
		}
		if len(f) >= 2 && f[0] == "Threads:" {
			threads, _ = strconv.ParseInt(f[1], 10, 64)
		}
	}
	fds := fdsOf(d.pid)
	s.t.Logf("%s: daemon pid %d: RSS %d MiB, %d threads, %d fds", when, d.pid, rss>>10, threads, fds)
	if rss > 200<<10 || threads > 64 || fds > 200 {
		s.t.Errorf("%s: the daemon grew: RSS %d KiB, %d threads, %d fds", when, rss, threads, fds)
	}
}

// markedProcesses lists the processes whose environment carries the soak's
// task marker.
func markedProcesses() []string {
	ents, _ := os.ReadDir("/proc")
	var out []string
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		env, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid))
		if err != nil || !strings.Contains(string(env), soakMarker+"=1") {
			continue
		}
		if processGone(pid) {
			continue // a zombie, waiting for its reaper
		}
		cmd, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		out = append(out, fmt.Sprintf("%d:%s", pid, strings.ReplaceAll(string(cmd), "\x00", " ")))
	}
	return out
}

func (s *soak) summary(took time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	outcomes := map[string]int{}
	sent, lost := 0, 0
	for _, t := range s.tasks {
		if t.id == 0 {
			continue
		}
		sent++
		if len(t.finals) == 0 {
			lost++
			continue
		}
		outcomes[t.finals[0]]++
	}
	faults := 0
	for k, n := range s.faults {
		if k != "leaked" {
			faults += n
		}
	}
	keys := slices.Sorted(func(yield func(string) bool) {
		for k := range outcomes {
			if !yield(k) {
				return
			}
		}
	})
	var parts []string
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s %d", k, outcomes[k]))
	}
	var fparts []string
	for _, k := range slices.Sorted(func(yield func(string) bool) {
		for k := range s.faults {
			if !yield(k) {
				return
			}
		}
	}) {
		fparts = append(fparts, fmt.Sprintf("%s %d", k, s.faults[k]))
	}
	line := fmt.Sprintf("soak: %v, %d tasks, %d faults (%s), outcomes: %s; lost = %d, leaked = %d",
		took.Round(time.Second), sent, faults, strings.Join(fparts, ", "), strings.Join(parts, ", "), lost, s.faults["leaked"])
	fmt.Println(line)
	s.t.Log(line)
}
