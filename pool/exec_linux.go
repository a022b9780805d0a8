package pool

import (
	"io"
	"maps"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/cgpool/cgpool/oomwatch"
	"github.com/cgpool/cgpool/spawn"
)

// capture reads a pipe to its end, keeping at most limit bytes.
type capture struct {
	buf       []byte
	truncated bool
}

func (c *capture) fill(r io.Reader, limit int64, wg *sync.WaitGroup) {
	defer wg.Done()
	chunk := make([]byte, 32*1024)
	for {
		n, err := r.Read(chunk)
		if n > 0 {
			room := int(limit) - len(c.buf)
			if n > room {
				c.truncated = true
				n = max(room, 0)
			}
			c.buf = append(c.buf, chunk[:n]...)
		}
		if err != nil {
			return
		}
	}
}

// replaceVanished replaces an exec slot whose cgroup was removed from
// outside (an administrator, a script, a second supervisor): the slot is
// dead, and a command started into it would fail. It reports false if the
// pool is stopping meanwhile.
func (s *slot) replaceVanished() bool {
	p := s.p
	p.log.Warn("a slot's cgroup was removed from outside; replacing the slot", "slot", s.name, "leaf", s.leafPath)
	p.mu.Lock()
	p.stats.WorkersRetired++
	p.mu.Unlock()
	s.teardown(false)
	if !s.start() {
		return false
	}
	p.mu.Lock()
	s.state = "busy"
	p.mu.Unlock()
	return true
}

// runExec runs one command in the slot's leaf and reports its exit status
// and output. Whatever the command leaves running in the slot is killed
// before the slot takes another task.
func (s *slot) runExec(t *Task) {
	p := s.p
	if testHookRunTask != nil {
		testHookRunTask(t)
	}
	if !s.leaf.Exists() && !s.replaceVanished() {
		s.finish(t, &Outcome{Kind: Cancelled, Message: "cancelled by shutdown: its slot's cgroup was removed from outside"})
		return
	}
	before := s.baseline
	restore := s.taskMemory(t)
	defer restore()

	// Each command sees the pool's environment current when it starts.
	p.mu.Lock()
	if !maps.Equal(s.envVars, p.env) {
		s.env, s.envVars = p.envLocked(s.name), maps.Clone(p.env)
	}
	p.mu.Unlock()
	env := s.env
	if len(t.spec.Env) > 0 {
		env = slices.Clone(env)
		for _, k := range slices.Sorted(maps.Keys(t.spec.Env)) {
			env = append(env, k+"="+t.spec.Env[k])
		}
	}

	var out, errOut capture
	var wg sync.WaitGroup
	ro, wo, err := os.Pipe()
	if err != nil {
		s.finish(t, &Outcome{Kind: ProcessError, Reason: oomwatch.Crashed, ExitCode: -1, Message: "pipe: " + err.Error(), Leaf: s.leafPath})
		return
	}
	re, we, err := os.Pipe()
	if err != nil {
		ro.Close()
		wo.Close()
		s.finish(t, &Outcome{Kind: ProcessError, Reason: oomwatch.Crashed, ExitCode: -1, Message: "pipe: " + err.Error(), Leaf: s.leafPath})
		return
	}
	start := time.Now()
	proc, err := spawn.Start(spawn.Options{Path: t.spec.Argv[0], Args: t.spec.Argv, Env: env, Cgroup: s.leafDir, ProcessGroupOnly: s.leaf.Reduced(), Stdout: wo, Stderr: we, Credential: p.taskCredential(&t.spec)})
	wo.Close()
	we.Close()
	if err != nil {
		ro.Close()
		re.Close()
		msg := err.Error()
		if !s.leaf.Exists() {
			msg = "the slot's cgroup was removed from outside as the command started: " + msg
		}
		s.finish(t, &Outcome{Kind: ProcessError, Reason: oomwatch.Crashed, ExitCode: 127, Message: msg, Leaf: s.leafPath})
		return
	}
	s.leaf.Track(proc.Pid()) // reduced mode: its process group is its container
	p.observeSpawn(start)
	wg.Add(2)
	go out.fill(ro, p.cfg.OutputLimit, &wg)
	go errOut.fill(re, p.cfg.OutputLimit, &wg)
	pid := proc.Pid()
	p.mu.Lock()
	s.pid = pid
	p.mu.Unlock()
	t.notify(Event{Running: true, Pid: pid, Leaf: s.leafPath})

	stop := p.armTimeout(t)
	<-proc.Done() // a deadline or a hard cancel kills the group, and so the command
	stop()
	kill := p.killReason(t)
	e := waitExit(proc, teardownTimeout)
	proc.Close()
	// Nothing outlives its task: kill what the command left in the slot.
	killed := kill != ""
	if pop, _ := s.group.Populated(); pop {
		killed = true
		n := len(s.procs())
		s.emptyGroup()
		if kill == "" {
			p.mu.Lock()
			p.stats.LeftoverProcessesKilled += int64(n)
			p.mu.Unlock()
		}
	}
	wg.Wait() // every writer of the pipes is dead now
	ro.Close()
	re.Close()
	p.mu.Lock()
	s.pid = 0
	p.mu.Unlock()

	base := Outcome{Pid: pid, Leaf: s.leafPath, Stdout: out.buf, Stderr: errOut.buf, StdoutTruncated: out.truncated, StderrTruncated: errOut.truncated}
	o := s.classify(t, base, before, kill, e)
	if o.Kind == ProcessError && o.Reason == oomwatch.Crashed {
		// A command that exits by itself, whatever its status, has a result.
		o.Kind, o.Reason, o.Message = Result, "", ""
		o.ExitCode = e.Code
	}
	s.finish(t, o)
	if killed {
		// A killed group is never reused: a child cloned into it later can
		// be killed at birth (see cgroup.Group.Kill).
		s.teardown(false)
	}
}
