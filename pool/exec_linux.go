package pool

import (
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/cgpool/cgpool/oomwatch"
	"github.com/cgpool/cgpool/spawn"
)

// drainGrace bounds how long the pool waits, once a command has ended
// and its slot is empty, for more of its output: every writer in the
// slot is dead by then, so a pipe that neither has data nor ends is held
// by a process outside the slot (one the command passed its stdout to,
// or one that left the cgroup as root). It also bounds, after a kill, how
// long a slow reader of the output may take for what is buffered.
const drainGrace = 250 * time.Millisecond

// drainMax bounds what is read once the slot is empty: at most what the
// pipe can buffer (1 MiB at most by default, fs.pipe-max-size), and so
// not an endless stream from a process outside the slot.
const drainMax = 1 << 20

// outputPipe reads one of a command's output streams to its end, or to
// the end the drain rules set, and delivers it.
type outputPipe struct {
	f        *os.File
	stream   Stream
	deliver  OutputFunc
	abort    <-chan struct{}
	total    *atomic.Int64 // both streams, for MaxOutput
	max      int64         // 0: none
	over     func()        // called once when total passes max
	draining atomic.Bool   // the slot is empty: bound each read
	read     int64         // bytes read
	drained  int64         // bytes read while draining
	cut      bool          // delivery stopped (limit, error)
}

// startDrain bounds the reads from now on (see drainGrace); it also
// interrupts a read that waits.
func (o *outputPipe) startDrain() {
	o.draining.Store(true)
	o.f.SetReadDeadline(time.Now().Add(drainGrace))
}

// readBufs are the pipe readers' buffers: two a command, and garbage
// per command was a fifth of cgpool run's own time over many short ones.
var readBufs = sync.Pool{New: func() any { return new([32 << 10]byte) }}

func (o *outputPipe) run(wg *sync.WaitGroup) {
	defer wg.Done()
	b := readBufs.Get().(*[32 << 10]byte)
	defer readBufs.Put(b)
	buf := b[:]
	for {
		if o.draining.Load() {
			if o.drained >= drainMax {
				return
			}
			o.f.SetReadDeadline(time.Now().Add(drainGrace))
		}
		n, err := o.f.Read(buf)
		if n > 0 {
			o.read += int64(n)
			if o.draining.Load() {
				o.drained += int64(n)
			}
			chunk := buf[:n]
			if o.max > 0 {
				t := o.total.Add(int64(n))
				if t > o.max {
					keep := int64(n) - (t - o.max)
					chunk = chunk[:max(keep, 0)]
					o.over()
				}
			}
			if len(chunk) > 0 && !o.cut {
				if o.deliver(o.stream, chunk, o.abort) != nil {
					o.cut = true
				}
			}
			if len(chunk) < n {
				o.cut = true
			}
		}
		if err != nil {
			return // EOF, the drain's deadline, or closed
		}
	}
}

// capture is the OutputFunc of a task without one: it keeps at most limit
// bytes of each stream for the outcome.
type capture struct {
	mu        sync.Mutex
	buf       [3][]byte
	truncated [3]bool
	limit     int64
}

func (c *capture) deliver(s Stream, p []byte, _ <-chan struct{}) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	room := int(c.limit) - len(c.buf[s])
	if len(p) > room {
		c.truncated[s] = true
		p = p[:max(room, 0)]
	}
	c.buf[s] = append(c.buf[s], p...)
	return nil
}

// startFailure is the outcome of a command that could not be started:
// not found (127) or not executable (126), as a shell reports them, or
// crashed for any other failure to start.
func startFailure(prog, dir string, err error, leaf string) *Outcome {
	o := &Outcome{Kind: ProcessError, Reason: oomwatch.Crashed, ExitCode: 126, Leaf: leaf,
		Message: fmt.Sprintf("could not start %s: %v", prog, err)}
	switch {
	case errors.Is(err, exec.ErrNotFound), errors.Is(err, fs.ErrNotExist):
		o.Reason, o.ExitCode = NotFound, 127
		o.Message = prog + ": command not found"
	case errors.Is(err, fs.ErrPermission), errors.Is(err, syscall.ENOEXEC), errors.Is(err, syscall.EISDIR):
		var errno syscall.Errno
		why := "permission denied"
		if errors.As(err, &errno) {
			why = errno.Error()
		}
		o.Reason = NotExecutable
		o.Message = fmt.Sprintf("%s: cannot be executed (%s)", prog, why)
		if dir != "" && errors.Is(err, fs.ErrPermission) {
			// The kernel says EACCES for the directory and for the program
			// alike: name both.
			o.Message = fmt.Sprintf("%s: cannot be executed in %s (permission denied: the program, or the directory, for the user the task runs as)", prog, dir)
		}
	}
	return o
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
	eio := t.spec.io()
	if len(t.spec.Env) > 0 || eio.SlotEnv != "" {
		env = slices.Clone(env)
		for _, k := range slices.Sorted(maps.Keys(t.spec.Env)) {
			env = append(env, k+"="+t.spec.Env[k])
		}
		if eio.SlotEnv != "" {
			env = append(env, eio.SlotEnv+"="+strconv.Itoa(s.num))
		}
	}

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
	var stdin, feed *os.File // the command's end and ours
	if eio.Stdin != nil {
		if stdin, feed, err = os.Pipe(); err != nil {
			ro.Close()
			re.Close()
			wo.Close()
			we.Close()
			s.finish(t, &Outcome{Kind: ProcessError, Reason: oomwatch.Crashed, ExitCode: -1, Message: "pipe: " + err.Error(), Leaf: s.leafPath})
			return
		}
	}
	opts := spawn.Options{Path: t.spec.Argv[0], Args: t.spec.Argv, Env: env, Dir: eio.Dir, Cgroup: s.leafDir, ProcessGroupOnly: s.leaf.Reduced(), Stdout: wo, Stderr: we, Credential: p.taskCredential(&t.spec)}
	if stdin != nil {
		opts.Stdin = stdin
	}
	start := time.Now()
	proc, err := spawn.Start(opts)
	wo.Close()
	we.Close()
	if stdin != nil {
		stdin.Close()
	}
	if err != nil {
		ro.Close()
		re.Close()
		if feed != nil {
			feed.Close()
		}
		o := startFailure(t.spec.Argv[0], eio.Dir, err, s.leafPath)
		if !s.leaf.Exists() {
			o.Reason, o.ExitCode = oomwatch.Crashed, 126
			o.Message = "the slot's cgroup was removed from outside as the command started: " + err.Error()
		}
		o.Usage = s.takeUsage(time.Since(start))
		s.finish(t, o)
		return
	}
	s.leaf.Track(proc.Pid()) // reduced mode: its process group is its container
	p.observeSpawn(start)
	// The kill of the task (timeout, cancel, output limit) aborts the
	// delivery of its output after a grace for what is buffered.
	p.mu.Lock()
	killed := make(chan struct{})
	if t.kill != notKilled {
		close(killed)
	} else {
		s.killed = killed
	}
	p.mu.Unlock()
	abort := make(chan struct{})
	done := make(chan struct{})
	go func() {
		select {
		case <-killed:
			tm := time.NewTimer(drainGrace)
			defer tm.Stop()
			select {
			case <-tm.C:
				close(abort)
			case <-done:
			}
		case <-done:
		}
	}()
	deliver := eio.Output
	var capt *capture
	if deliver == nil {
		capt = &capture{limit: p.cfg.OutputLimit}
		deliver = capt.deliver
	}
	var total atomic.Int64
	var overOnce sync.Once
	over := func() {
		overOnce.Do(func() {
			p.mu.Lock()
			p.killTaskLocked(t, killedOutput)
			p.mu.Unlock()
		})
	}
	pipes := []*outputPipe{
		{f: ro, stream: Stdout, deliver: deliver, abort: abort, total: &total, max: eio.MaxOutput, over: over},
		{f: re, stream: Stderr, deliver: deliver, abort: abort, total: &total, max: eio.MaxOutput, over: over},
	}
	if feed != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, _ = feed.Write(eio.Stdin) // EPIPE: the command did not read it all
			feed.Close()                 // its end of input
		}()
	}
	pid := proc.Pid()
	p.mu.Lock()
	s.pid = pid
	p.mu.Unlock()
	t.notify(Event{Running: true, Pid: pid, Leaf: s.leafPath})
	// The output is read from now: "running" goes out before any of it.
	var outWG sync.WaitGroup
	outWG.Add(2)
	for _, op := range pipes {
		go op.run(&outWG)
	}

	// The timeout covers the command and the delivery of its output.
	stop := p.armTimeout(t)
	<-proc.Done() // a deadline or a hard cancel kills the group, and so the command
	wall := time.Since(start)
	e := waitExit(proc, teardownTimeout)
	proc.Close()
	// Nothing outlives its task: kill what the command left in the slot.
	left := false
	if pop, _ := s.populated(); pop {
		left = true
		n := len(s.procs())
		s.emptyGroup()
		if p.killReason(t) == "" {
			p.mu.Lock()
			p.stats.LeftoverProcessesKilled += int64(n)
			p.mu.Unlock()
		}
	}
	// Every writer in the slot is dead: what the pipes still hold comes
	// at once; a pipe that neither has data nor ends is held outside the
	// slot, and is given up after drainGrace (it must not keep the slot).
	for _, op := range pipes {
		op.startDrain()
	}
	outWG.Wait()
	stop()
	close(done)
	ro.Close()
	re.Close()
	if feed != nil {
		feed.Close() // unblocks a write to a reader outside the slot
	}
	wg.Wait()
	kill := p.killReason(t)
	killedGroup := kill != "" || left
	p.mu.Lock()
	s.pid = 0
	s.killed = nil
	p.mu.Unlock()

	base := Outcome{Pid: pid, Leaf: s.leafPath, StdoutBytes: pipes[0].read, StderrBytes: pipes[1].read,
		// The slot is empty now: its counters hold all the command and its
		// descendants did, detached daemons included.
		Usage: s.takeUsage(wall)}
	if capt != nil {
		base.Stdout, base.Stderr = capt.buf[Stdout], capt.buf[Stderr]
		base.StdoutTruncated, base.StderrTruncated = capt.truncated[Stdout], capt.truncated[Stderr]
	}
	var o *Outcome
	if kill == OutputLimit {
		s.baseline = s.oomCounters()
		o = &base
		o.Kind, o.Reason, o.Signal, o.ExitCode = ProcessError, OutputLimit, int(syscall.SIGKILL), -1
		o.Message = fmt.Sprintf("wrote more than its output limit of %d bytes; its cgroup was killed", eio.MaxOutput)
	} else {
		o = s.classify(t, base, before, kill, e)
	}
	if o.Kind == ProcessError && o.Reason == oomwatch.Crashed {
		// A command that exits by itself, whatever its status, has a result.
		o.Kind, o.Reason, o.Message = Result, "", ""
		o.ExitCode = e.Code
	}
	s.finish(t, o)
	if killedGroup {
		// A killed group is never reused: a child cloned into it later can
		// be killed at birth (see cgroup.Group.Kill).
		s.teardown(false)
	}
}
