package pool

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/cgpool/cgpool/cgroup"
	"github.com/cgpool/cgpool/ipc"
	"github.com/cgpool/cgpool/oomwatch"
	"github.com/cgpool/cgpool/spawn"
	"github.com/prometheus/procfs"
	"golang.org/x/sys/unix"
)

// teardownTimeout bounds the wait for a killed slot to empty.
const teardownTimeout = 10 * time.Second

// slot is one worker slot: a cgroup subtree w-<n> with the pool's limits
// and the leaf w-<n>/worker, run by one goroutine.
type slot struct {
	p    *Pool
	wake chan struct{}

	// Guarded by p.mu.
	state      string      // starting, idle, busy, retiring
	waitW      *workerProc // set while idle and waiting on this worker's socket (wake with wakeLocked)
	task       *Task
	taskStart  time.Time // when task started here: its run time for the Observer (kept off Task, which a backlog holds by the million)
	alive      bool
	pid        int
	name       string
	num        int // 1, 2, ...: the lowest no other live slot holds (ExecIO.SlotEnv)
	leafPath   string
	groupRef   *cgroup.Group
	tasksDone  int64
	startErr   string // why the last start failed, until one succeeds
	inStarting bool   // counted in p.starting
	// firstWait: one of the pool's first workers (start_workers above
	// MinWorkers) that has not run a task yet: it waits for its first
	// without an idle deadline, as Deadpool's first max_workers workers
	// retire only as they finish a task with nothing queued.
	firstWait bool
	// owner is whose tasks the slot's worker runs (worker pools): set by
	// its first task, cleared with each new worker. A worker never runs a
	// task of another owner: one client's code, loaded into a worker, must
	// never run beside another client's tasks.
	owner *owner
	// killed, if not nil, is closed when the slot's running task is
	// killed (exec tasks: it aborts the delivery of their output).
	killed chan struct{}
	// stop disarms the timeout of the worker task the slot runs; set by
	// whoever starts the task (the slot goroutine, or a submitter that
	// hands the task to the slot's waiting worker), used by the slot
	// goroutine. A slot's, not a Task's: a queued task has no timer.
	stop func() bool

	// Owned by the slot goroutine.
	incarnation
	failures int
}

func (s *slot) run() {
	p := s.p
	defer p.wg.Done()
	defer s.exit()
	defer s.recoverPanic()
	for {
		if s.group == nil {
			if !s.start() {
				return
			}
		}
		t, restart, pre := s.next()
		switch {
		case restart:
			s.teardown(true)
		case t == nil:
			return
		case p.cfg.Kind == KindExec:
			s.runExec(t)
		default:
			s.runWorkerTask(t, pre)
		}
	}
}

// start sets the slot up (group, leaf, and for worker pools the worker),
// retrying with a back-off. It returns false if the pool is stopping.
func (s *slot) start() bool {
	p := s.p
	p.mu.Lock()
	s.state = "starting"
	if !s.inStarting { // startSlotLocked counted a new slot already
		s.inStarting = true
		p.starting++
	}
	p.mu.Unlock()
	defer func() {
		p.mu.Lock()
		s.inStarting = false
		p.starting--
		p.mu.Unlock()
	}()
	for {
		err := s.setup()
		if err == nil {
			s.failures = 0
			p.mu.Lock()
			s.startErr = ""
			p.mu.Unlock()
			return true
		}
		s.teardown(false)
		s.failures++
		backoff := min(50*time.Millisecond<<min(s.failures, 7), 5*time.Second)
		p.log.Error("worker failed to start", "err", err, "attempt", s.failures, "retry_in", backoff)
		p.mu.Lock()
		p.stats.WorkerStartFailures++
		p.stats.LastStartError = err.Error()
		s.startErr = err.Error()
		p.mu.Unlock()
		p.failNextQueued(err)
		t := time.NewTimer(backoff)
		select {
		case <-p.stopCh:
			t.Stop()
			return false
		case <-t.C:
		}
	}
}

// incarnation is one worker's resources: its slot group w-<n>, the leaf
// w-<n>/worker, the files kept open on them, and (worker pools) the worker
// process. A slot holds one at a time; spares wait in Pool.spares.
type incarnation struct {
	name    string
	gen     int // the pool's recycle generation when it started
	group   *cgroup.Group
	leaf    *cgroup.Group
	leafDir *os.File
	// Kept open for the check after every task: reopening cgroupfs files
	// cost a third of the supervisor's CPU on the no-op round trip.
	leafProcs, slotStat *os.File
	slotEvents          *os.File // the slot group's cgroup.events (populated)
	memEvents           *os.File // its memory.events; nil without the memory controller
	w                   *workerProc
	env                 []string          // the environment this worker (or exec slot) started with
	envVars             map[string]string // the pool's variables in env
	// baseline is the slot's OOM counters before its next task. A fresh
	// group's are read once; they change only by an OOM kill, after which
	// a worker slot is replaced and an exec slot re-reads them.
	baseline oomwatch.Counters
	initErr  string // the worker's initializer error, from its hello
	// usage holds the slot group's usage files open; usageBase is their
	// reading after the last task (or the start), which the next task's
	// usage is counted from; peaksReset says memory.peak was reset then.
	usage      *cgroup.UsageFiles
	usageBase  cgroup.UsageSample
	peaksReset bool
}

// prepare makes a fresh incarnation: a slot group with the pool's limits,
// its leaf, and for worker pools a started worker that said hello. On
// error nothing of it is left.
func (p *Pool) prepare() (*incarnation, error) {
	p.mu.Lock()
	p.nextSeq++
	inc := &incarnation{name: "w-" + strconv.Itoa(p.nextSeq), gen: p.recycleGen, envVars: maps.Clone(p.env)}
	inc.env = p.envLocked(inc.name)
	p.mu.Unlock()
	if err := inc.build(p); err != nil {
		inc.release(p, false)
		return nil, err
	}
	return inc, nil
}

func (inc *incarnation) build(p *Pool) error {
	g, err := p.group.Mkdir(inc.name)
	if errors.Is(err, os.ErrNotExist) && !p.group.Exists() {
		// The pool's group was removed from outside (every slot in it had
		// to be empty): make it again, or no slot could ever start.
		p.log.Warn("the pool's cgroup was removed from outside; making it again", "path", p.group.Path())
		if err = p.group.Recreate(); err == nil {
			err = p.group.EnableControllers(p.ctrl...)
		}
		if err == nil {
			g, err = p.group.Mkdir(inc.name)
		}
	}
	if err != nil {
		return err
	}
	inc.group = g
	if err := g.SetLimits(p.limits); err != nil {
		return err
	}
	// Controllers for the slot's children, so that a nested cgpool can
	// subdivide the slot (the slot itself holds no process).
	if err := g.EnableControllers(p.ctrl...); err != nil {
		return err
	}
	if inc.leaf, err = g.Mkdir("worker"); err != nil {
		return err
	}
	if !g.Reduced() { // reduced mode: process groups, no directory to clone into or read
		if inc.leafDir, err = inc.leaf.Open(); err != nil {
			return err
		}
		if inc.leafProcs, err = os.Open(filepath.Join(inc.leaf.Path(), "cgroup.procs")); err != nil {
			return err
		}
		if inc.slotStat, err = os.Open(filepath.Join(g.Path(), "cgroup.stat")); err != nil {
			return err
		}
		if inc.slotEvents, err = os.Open(filepath.Join(g.Path(), "cgroup.events")); err != nil {
			return err
		}
	}
	if inc.baseline, _, err = oomwatch.Read(g); err != nil {
		return err
	}
	if !g.Reduced() {
		inc.memEvents, _ = os.Open(filepath.Join(g.Path(), "memory.events")) // absent without the memory controller
	}
	if !g.Reduced() { // reduced mode: no cgroup counters (outcomes carry no usage)
		if inc.usage, err = g.OpenUsage(); err != nil {
			return err
		}
	}
	if p.cfg.Kind == KindWorker {
		start := time.Now()
		w, hello, err := startWorker(inc.leaf, inc.leafDir, p.cfg.Command, inc.env, p.workerCredential())
		if err != nil {
			return err
		}
		p.observeSpawn(start)
		inc.w, inc.initErr = w, hello.InitError
	}
	// The worker's start (its imports, its initializer) is no task's.
	inc.markUsage()
	return nil
}

// markUsage reads the slot's usage counters as the base of the next
// task's, and resets memory.peak where the kernel allows.
func (inc *incarnation) markUsage() {
	if inc.usage == nil {
		return
	}
	if s, err := inc.usage.Read(); err == nil {
		inc.usageBase = s
	}
	inc.peaksReset = inc.usage.ResetPeaks()
}

// takeUsage returns what the slot's group used since the last mark and
// marks again; wall is the task's time on the worker (0: finish fills
// it in). It is a few preads of files kept open. nil if the slot's
// counters cannot be read (its group is gone).
func (inc *incarnation) takeUsage(wall time.Duration) *Usage {
	if inc.usage == nil {
		return nil
	}
	now, err := inc.usage.Read()
	if err != nil {
		return nil
	}
	b := inc.usageBase
	sub := func(a, b uint64) uint64 { // counters only grow; guard anyway
		if a < b {
			return 0
		}
		return a - b
	}
	u := &Usage{
		Wall:      wall,
		CPUUser:   time.Duration(sub(now.CPU.UserUsec, b.CPU.UserUsec)) * time.Microsecond,
		CPUSystem: time.Duration(sub(now.CPU.SystemUsec, b.CPU.SystemUsec)) * time.Microsecond,
	}
	scope := func(reset bool, now, before int64) PeakScope {
		if reset || now > before {
			return PeakTask
		}
		return PeakSlot
	}
	if now.HasMemory {
		u.MemoryPeak, u.MemoryPeakScope = now.MemoryPeak, scope(inc.peaksReset, now.MemoryPeak, b.MemoryPeak)
	}
	if now.HasPids {
		u.PidsPeak, u.PidsPeakScope = now.PidsPeak, scope(false, now.PidsPeak, b.PidsPeak)
	}
	if now.HasIO {
		u.HasIO = true
		u.IORead = int64(sub(now.IO.ReadBytes, b.IO.ReadBytes))
		u.IOWrite = int64(sub(now.IO.WriteBytes, b.IO.WriteBytes))
	}
	inc.usageBase = now
	inc.peaksReset = inc.usage.ResetPeaks()
	return u
}

// release stops the worker (gracefully if asked and possible) and destroys
// the group: nothing that ran in it survives. It leaves inc empty.
func (inc *incarnation) release(p *Pool, graceful bool) {
	var killed time.Time
	if inc.w != nil {
		if graceful {
			inc.w.askExit()
		}
		if inc.group != nil {
			killed = time.Now()
			_ = inc.group.Kill()
		}
		inc.w.kill()
	}
	for _, f := range []*os.File{inc.leafDir, inc.leafProcs, inc.slotStat, inc.slotEvents, inc.memEvents} {
		if f != nil {
			f.Close()
		}
	}
	if inc.usage != nil {
		inc.usage.Close()
	}
	if inc.group != nil {
		ctx, cancel := context.WithTimeout(context.Background(), teardownTimeout)
		if err := inc.group.Destroy(ctx, teardownTimeout); err != nil {
			p.log.Error("could not remove a worker slot", "slot", inc.group.Path(), "err", err)
		} else {
			p.observeEmptied(killed)
		}
		cancel()
	}
	*inc = incarnation{}
}

// setup gives the slot an incarnation: a waiting spare when one matches
// the pool's current environment and generation, else a fresh one.
func (s *slot) setup() error {
	p := s.p
	inc := p.takeSpare()
	if inc == nil {
		var err error
		if inc, err = p.prepare(); err != nil {
			return err
		}
	}
	p.refillSpares()
	s.incarnation = *inc
	pid := 0
	if s.w != nil {
		// An idle slot waits on its worker's socket, which ends when the
		// worker dies, unless a child of the worker still holds it: the
		// worker's pidfd wakes the slot then.
		w := s.w
		go func() {
			<-w.proc.Done()
			p.mu.Lock()
			if s.waitW == w {
				s.wakeLocked()
			}
			p.mu.Unlock()
		}()
		pid = s.w.pid()
		if s.initErr != "" {
			p.log.Warn("worker initializer failed; the worker serves tasks anyway", "pid", pid, "err", s.initErr)
		}
	}
	p.mu.Lock()
	if s.initErr != "" {
		p.stats.InitializerFailures++
	}
	p.stats.WorkerProcessesCreated++
	s.name, s.leafPath, s.groupRef, s.pid, s.alive = inc.name, s.leaf.CgroupPath(), s.group, pid, true
	s.tasksDone, s.owner = 0, nil
	p.mu.Unlock()
	return nil
}

// takeSpare returns a prepared worker whose environment and generation
// are current, or nil. A stale or dead spare is released.
func (p *Pool) takeSpare() *incarnation {
	select {
	case inc := <-p.spares:
		p.mu.Lock()
		ok := inc.gen == p.recycleGen && maps.Equal(inc.envVars, p.env)
		p.mu.Unlock()
		if ok && (inc.w == nil || !inc.w.exited()) {
			return inc
		}
		inc.release(p, true)
	default:
	}
	return nil
}

// refillSpares starts preparing spares until SpareWorkers wait or are on
// their way. Each preparer is a goroutine of the pool's WaitGroup.
func (p *Pool) refillSpares() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for !p.stopping && p.cfg.Kind == KindWorker && len(p.spares)+p.preparing < p.cfg.SpareWorkers {
		p.preparing++
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			inc, err := p.prepare()
			p.mu.Lock()
			p.preparing--
			stopping := p.stopping
			p.mu.Unlock()
			if err != nil {
				p.log.Warn("could not prepare a spare worker", "err", err)
				return
			}
			if !stopping {
				select {
				case p.spares <- inc:
					return
				default:
				}
			}
			inc.release(p, true)
		}()
	}
}

// releaseSpares ends the spares that wait (at shutdown, after every
// preparer has finished).
func (p *Pool) releaseSpares() {
	for {
		select {
		case inc := <-p.spares:
			inc.release(p, true)
		default:
			return
		}
	}
}

// envLocked builds a worker's environment: the supervisor's base, the
// pool's variables, and where the slot is (for a nested cgpool).
func (p *Pool) envLocked(name string) []string {
	env := slices.Clone(p.base)
	for _, k := range slices.Sorted(maps.Keys(p.env)) {
		env = append(env, k+"="+p.env[k])
	}
	env = append(env, "CGPOOL_POOL="+p.cfg.Name)
	if p.group.Reduced() {
		return env // no slot cgroup for a nested cgpool to subdivide
	}
	return append(env, "CGPOOL_SLOT_CGROUP="+filepath.Join(p.group.Path(), name))
}

// workerCredential is who a worker pool's workers run as: the pool's fixed
// user, or (allow_root, checked by normalize) root with root's own groups;
// nil for a supervisor that is not root, whose workers run as itself.
func (p *Pool) workerCredential() *syscall.Credential {
	switch {
	case p.cfg.fixed != nil:
		return p.cfg.fixed.credential()
	case p.euid == 0:
		id := rootIdentity()
		return id.credential()
	}
	return nil
}

// taskCredential is who an exec task runs as (see Config.User): the
// pool's fixed user; else, in a root supervisor, the peer that submitted
// it (a task of an in-process caller, such as cgpool run, runs as root
// with root's groups); nil for a supervisor that is not root.
func (p *Pool) taskCredential(s *Spec) *syscall.Credential {
	switch {
	case p.cfg.fixed != nil:
		return p.cfg.fixed.credential()
	case p.euid != 0:
		return nil
	case s.Peer != nil:
		return s.Peer.credential() // root only with allow_root: checked by validate
	}
	id := rootIdentity()
	return id.credential()
}

// failNextQueued fails the task a worker would take next, because no
// worker could be started for it and no other worker of the pool runs: a
// broken worker program must never leave tasks waiting for ever. While a
// healthy worker runs, the queue is left to it.
func (p *Pool) failNextQueued(cause error) {
	p.mu.Lock()
	for s := range p.slots {
		if s.alive {
			p.mu.Unlock()
			return
		}
	}
	it, ok := p.queue.Pop()
	if !ok {
		p.mu.Unlock()
		return
	}
	t := it.Value
	o := &Outcome{Kind: ProcessError, Reason: oomwatch.Crashed, ExitCode: -1, Message: "no worker could be started: " + cause.Error()}
	p.endLocked(t, o)
	p.signalRoomLocked()
	p.mu.Unlock()
	t.notify(Event{Outcome: o})
}

// read is the result of one read of the worker's socket.
type read struct {
	m   msg
	err error
}

// next takes the next task. It blocks while idle. restart means the worker
// must be replaced first (recycled, or died while idle); a nil task without
// restart means the slot must exit (idle above MinWorkers, or stopping).
// A task that a submitter started on this slot's worker while it waited
// (startInlineLocked) comes with pre, the first read of the worker's
// socket: its answer, or how the socket ended.
func (s *slot) next() (t *Task, restart bool, pre *read) {
	p := s.p
	p.mu.Lock()
	defer p.mu.Unlock()
	// The slot is idle from now on, however often it is woken meanwhile
	// (a wake-up that finds the task taken by another slot does not make
	// it less idle): its idle deadline is counted from here, once.
	idleSince := time.Now()
	var idleT *time.Timer // one timer for all the waits
	defer func() {
		if idleT != nil {
			idleT.Stop()
		}
	}()
	for {
		if p.cfg.Kind == KindWorker && s.gen < p.recycleGen {
			p.stats.WorkersRetired++
			return nil, true, nil
		}
		if p.cfg.Kind == KindWorker && p.queue.Len() > 0 && s.envOutdatedLocked() {
			// A worker that has not run a task yet starts, as far as any
			// task can tell, with its first one: give it the environment
			// current now, not the one of when it was prepared (as
			// Deadpool, which starts a replacement when a task needs it).
			return nil, true, nil
		}
		if s.w != nil && s.w.dead() {
			p.log.Warn("idle worker died; replacing it (no task was running)", "pid", s.pid)
			return nil, true, nil
		}
		if it, ok := p.queue.Peek(); ok {
			if !s.fitsLocked(it.Value) {
				p.stats.WorkersRetired++
				p.log.Debug("replacing a worker before it runs a task of another owner", "pid", s.pid, "owner", *s.owner)
				return nil, true, nil
			}
			p.queue.Pop()
			s.takeLocked(it.Value)
			return it.Value, false, nil
		}
		if p.stopping {
			return nil, false, nil
		}
		s.state = "idle"
		p.idle = append(p.idle, s)
		var idleAt time.Time
		if len(p.slots) > *p.cfg.MinWorkers && !s.firstWait {
			idleAt = idleSince.Add(p.cfg.IdleDelay)
		}
		if s.w != nil {
			t, restart, pre, retire := s.waitOnWorkerLocked(idleAt)
			if t != nil || restart {
				return t, restart, pre
			}
			if retire {
				return nil, false, nil
			}
			continue
		}
		var idleC <-chan time.Time
		if !idleAt.IsZero() {
			if idleT == nil {
				idleT = time.NewTimer(time.Until(idleAt))
			} else {
				idleT.Reset(time.Until(idleAt))
			}
			idleC = idleT.C
		}
		p.mu.Unlock()
		var idled bool
		select {
		case <-s.wake:
		case <-p.stopCh:
		case <-idleC:
			idled = true
		}
		p.mu.Lock()
		if i := slices.Index(p.idle, s); i >= 0 {
			p.idle = slices.Delete(p.idle, i, i+1)
		}
		if idled && s.retireIdleLocked() {
			return nil, false, nil
		}
	}
}

// waitOnWorkerLocked waits, idle, on the worker's socket: for the answer to
// a task a submitter started here meanwhile (t, with the read as pre), the
// worker's death (restart), the idle deadline (retire, if the slot is above
// MinWorkers and nothing is queued) or a wakeLocked (all false: look
// again). The socket's read deadline is the idle timer and the wake-up;
// it is set and cleared only under p.mu, so it never cuts into an answer.
func (s *slot) waitOnWorkerLocked(idleAt time.Time) (t *Task, restart bool, pre *read, retire bool) {
	p := s.p
	s.w.nc.SetReadDeadline(idleAt)
	s.waitW = s.w
	p.mu.Unlock()
	var r read
	r.m.h, r.m.payload, r.err = s.w.conn.Read()
	p.mu.Lock()
	s.waitW = nil
	if i := slices.Index(p.idle, s); i >= 0 {
		p.idle = slices.Delete(p.idle, i, i+1)
	}
	if s.task != nil {
		return s.task, false, &r, false
	}
	s.w.nc.SetReadDeadline(time.Time{})
	switch {
	case r.err == nil:
		p.log.Warn("idle worker sent an unexpected message", "pid", s.pid, "type", r.m.h.Type)
	case errors.Is(r.err, os.ErrDeadlineExceeded):
		if !idleAt.IsZero() && !time.Now().Before(idleAt) && s.retireIdleLocked() {
			return nil, false, nil, true
		}
	default: // the socket ended: the worker died (or closed it: it is replaced all the same)
		p.mu.Unlock()
		e := waitExit(s.w.proc, time.Second)
		p.mu.Lock()
		p.log.Warn("idle worker died; replacing it (no task was running)", "pid", s.pid, "exit", e.String())
		return nil, true, nil, false
	}
	return nil, false, nil, false
}

// envOutdatedLocked reports whether the slot's worker has not run a task
// yet and was started with an environment the pool has changed since: it
// is replaced before its first task (see next).
func (s *slot) envOutdatedLocked() bool {
	return s.tasksDone == 0 && !maps.Equal(s.envVars, s.p.env)
}

// retireIdleLocked retires the slot after its idle delay if it is above
// MinWorkers and nothing is queued.
func (s *slot) retireIdleLocked() bool {
	p := s.p
	if p.queue.Len() > 0 || len(p.slots) <= *p.cfg.MinWorkers {
		return false
	}
	s.state = "retiring"
	delete(p.slots, s)
	p.stats.WorkersRetired++
	return true
}

// owner is who a worker-pool task belongs to: its peer (none for an
// in-process caller) and its affinity.
type owner struct {
	peer     bool
	uid      uint32
	affinity string
}

func taskOwner(t *Task) owner {
	o := owner{affinity: t.spec.Affinity}
	if t.spec.Peer != nil {
		o.peer, o.uid = true, t.spec.Peer.UID
	}
	return o
}

// fitsLocked reports whether the slot's worker may run t: an exec slot
// runs anything (each command is a new process, as its submitter), a
// worker only its owner's tasks.
func (s *slot) fitsLocked(t *Task) bool {
	return s.p.cfg.Kind != KindWorker || s.owner == nil || *s.owner == taskOwner(t)
}

// takeLocked makes t the slot's running task.
func (s *slot) takeLocked(t *Task) {
	p := s.p
	if p.cfg.Kind == KindWorker && s.owner == nil {
		o := taskOwner(t)
		s.owner = &o
	}
	p.leaveQueueLocked(t)
	s.firstWait = false
	t.state, t.slot = running, s
	s.task, s.state, s.taskStart = t, "busy", time.Now()
	p.stats.TasksLaunched++
	busy := int64(0)
	for o := range p.slots {
		if o.state == "busy" {
			busy++
		}
	}
	p.stats.MaxWorkersBusyConcurrently = max(p.stats.MaxWorkersBusyConcurrently, busy)
	p.signalRoomLocked()
}

// wakeLocked ends an idle slot's wait, so that it looks at the pool again.
// Every wake-up of a slot that waits on its worker's socket happens here,
// under p.mu, and only while it waits: a task given to the slot meanwhile
// (startInlineLocked clears waitW) is never cut short by one.
func (s *slot) wakeLocked() {
	if s.waitW != nil {
		s.waitW.nc.SetReadDeadline(time.Unix(1, 0)) // in the past: the pending read returns
		return
	}
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// exit ends the slot goroutine: the worker is asked to exit, the slot's
// group is destroyed and the slot forgotten. A pool that is not stopping
// starts what the queue and MinWorkers still need (a slot that exits
// after a panic is replaced so).
func (s *slot) exit() {
	s.teardown(true)
	p := s.p
	p.mu.Lock()
	delete(p.slots, s)
	if i := slices.Index(p.idle, s); i >= 0 {
		p.idle = slices.Delete(p.idle, i, i+1)
	}
	if !p.stopping {
		for len(p.slots) < *p.cfg.MinWorkers {
			p.startSlotLocked()
		}
		p.dispatchLocked()
	}
	p.mu.Unlock()
}

// recoverPanic keeps a bug in one slot's goroutine from taking the
// supervisor, and every other pool and task, down with it: the panic is
// logged with its stack and counted, the slot's task (if one runs) ends
// with a process error of reason lost, and the slot is torn down (exit,
// deferred before this) and replaced.
func (s *slot) recoverPanic() {
	v := recover()
	if v == nil {
		return
	}
	p := s.p
	p.log.Error("a worker slot's goroutine panicked: its task is reported lost, the slot is torn down and replaced; this is a bug in cgpool",
		"slot", s.name, "panic", v, "stack", string(debug.Stack()))
	// What the lost task used so far, from the slot goroutine's own files
	// (used only if a task was running); a second panic here must not
	// escape this recover.
	u := func() (u *Usage) {
		defer func() {
			if recover() != nil {
				u = nil
			}
		}()
		return s.takeUsage(0)
	}()
	p.mu.Lock()
	p.stats.SlotPanics++
	t := s.task
	s.task = nil
	var o *Outcome
	if t != nil && t.state == running {
		o = &Outcome{Kind: ProcessError, Reason: ReasonLost, Pid: s.pid, Leaf: s.leafPath, ExitCode: -1,
			Message: fmt.Sprintf("the supervisor lost this task to an internal error (%v); it may have run in part", v), Usage: u}
		if u != nil && u.Wall == 0 {
			u.Wall = time.Since(s.taskStart)
		}
		p.endLocked(t, o)
	}
	p.mu.Unlock()
	if o != nil {
		if s.stop != nil {
			s.stop()
		}
		t.notify(Event{Outcome: o})
	}
}

// testHookRunTask, when set (by tests only), is called by a slot goroutine
// as it starts each task.
var testHookRunTask func(*Task)

// teardown stops the worker (gracefully if asked and possible) and
// destroys the slot's group: nothing that ran in it survives.
func (s *slot) teardown(graceful bool) {
	p := s.p
	p.mu.Lock()
	s.alive, s.pid, s.state = false, 0, "starting"
	p.mu.Unlock()
	s.incarnation.release(p, graceful)
}

// finish records a task's outcome and delivers it.
func (s *slot) finish(t *Task, o *Outcome) {
	p := s.p
	p.mu.Lock()
	p.endLocked(t, o)
	run := time.Since(s.taskStart)
	if o.Usage != nil && o.Usage.Wall == 0 {
		o.Usage.Wall = run
	}
	s.task = nil
	s.tasksDone++
	if s.state == "busy" {
		s.state = "idle"
	}
	p.mu.Unlock()
	obs := p.observer()
	obs.TaskEnded(p.cfg.Name, o.Kind, string(o.Reason), run)
	if uo, ok := obs.(UsageObserver); ok && o.Usage != nil {
		uo.TaskUsage(p.cfg.Name, o.Usage)
	}
	t.notify(Event{Outcome: o})
}

// taskMemory applies a task's own memory limit to the slot and returns
// the function that restores the pool's. The restore is for a slot that
// keeps its group after the task; a slot torn down meanwhile (a timeout,
// an OOM kill, a crash, a retirement) has no group left to restore, and
// the restore does nothing.
func (s *slot) taskMemory(t *Task) (restore func()) {
	if t.spec.MemoryMax <= 0 {
		return func() {}
	}
	g := s.group
	if err := g.WriteFile("memory.max", strconv.FormatInt(t.spec.MemoryMax, 10)); err != nil {
		s.p.log.Error("could not set a task's memory limit", "err", err)
	}
	return func() {
		if s.group != g {
			return // torn down: the group went with the task
		}
		v := "max"
		if s.p.cfg.MemoryMax > 0 {
			v = strconv.FormatInt(s.p.cfg.MemoryMax, 10)
		}
		if err := g.WriteFile("memory.max", v); err != nil {
			s.p.log.Error("could not restore the pool's memory limit on a slot", "slot", g.Path(), "err", err)
		}
	}
}

// waitKilled waits for the process after a kill; a process that does not
// die within the bound (D state) is reported and left to the slot's
// teardown.
func waitExit(proc *spawn.Process, d time.Duration) spawn.Exit {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	e, err := proc.Wait(ctx)
	if err != nil {
		return spawn.Exit{Code: -1, Signal: syscall.SIGKILL}
	}
	return e
}

// runWorkerTask sends a task to the worker and waits for its answer, its
// death, its deadline or a hard cancel. The slot goroutine reads the
// worker's socket itself (no reader goroutine between them: that hop
// doubled the worker leg of a no-op round trip); a deadline or a hard
// cancel kills the slot's group (killTaskLocked), the worker dies, and the
// read ends.
func (s *slot) runWorkerTask(t *Task, pre *read) {
	p := s.p
	if testHookRunTask != nil {
		testHookRunTask(t)
	}
	w := s.w
	pid := w.pid()
	before := s.baseline
	var err error
	if pre == nil { // the slot starts the task (else a submitter did)
		restore := s.taskMemory(t)
		defer restore()
		s.stop = p.armTimeout(t)
		h := taskHeader(t)
		err = w.conn.Write(&h, t.spec.Payload)
		// Told after the worker has the task, so that the bookkeeping
		// overlaps the work; the outcome still follows it on the client's
		// connection.
		t.notify(Event{Running: true, Pid: pid, Leaf: s.leafPath})
	}
	defer s.stop()
	var reply *msg
	for err == nil {
		var m msg
		if pre != nil {
			m, err = pre.m, pre.err
			pre = nil
			if errors.Is(err, os.ErrDeadlineExceeded) {
				// The idle deadline passed (or a wake-up came) just before
				// the task was given: its answer is still to come.
				err = nil
				continue
			}
		} else {
			m.h, m.payload, err = w.conn.Read()
		}
		if err != nil {
			break // the socket ended: the worker is dying (or broke the protocol)
		}
		if m.h.ID == t.id && (m.h.Type == ipc.TypeResult || m.h.Type == ipc.TypeTaskError) {
			reply = &m
			break
		}
		p.log.Warn("worker sent an unexpected message", "pid", pid, "type", m.h.Type, "id", m.h.ID)
	}
	base := Outcome{Pid: pid, Leaf: s.leafPath}
	if reply != nil {
		o := base
		if reply.h.Type == ipc.TypeResult {
			o.Kind, o.Payload = Result, reply.payload
		} else {
			o.Kind, o.Message, o.Traceback, o.Payload = TaskError, reply.h.Message, reply.h.Traceback, reply.payload
		}
		// Counted before the outcome goes out, so that writing it is the
		// last thing the slot does before it waits again: the client's
		// wake-up then finds this CPU free.
		left := s.leftovers()
		o.Usage = s.takeUsage(0)
		s.finish(t, &o)
		s.afterTask(left)
		return
	}
	if p.killReason(t) == "" {
		// The socket ended without a kill of ours: give the process a
		// moment to be reaped, then make sure.
		select {
		case <-w.proc.Done():
		case <-time.After(time.Second):
			_ = s.group.Kill()
		}
	}
	e := waitExit(w.proc, teardownTimeout)
	// Nothing outlives its task, by the time its outcome is told: what the
	// worker started (a detached daemon) may still be dying of the kill.
	s.emptyGroup()
	base.Usage = s.takeUsage(0)
	o := s.classify(t, base, before, p.killReason(t), e)
	s.finish(t, o)
	s.teardown(false)
}

// emptyGroup kills whatever is still in the slot's group and waits until
// it is gone (for at most teardownTimeout; a process stuck in the kernel
// is logged and left to the teardown).
func (s *slot) emptyGroup() {
	if pop, err := s.populated(); err != nil || !pop {
		return
	}
	killed := time.Now()
	_ = s.group.Kill()
	ctx, cancel := context.WithTimeout(context.Background(), teardownTimeout)
	defer cancel()
	if err := s.group.WaitEmpty(ctx); err != nil {
		s.p.log.Error("a task's processes did not die", "slot", s.group.Path(), "err", err)
	} else {
		s.p.observeEmptied(killed)
	}
}

// taskHeader is the worker-protocol frame header that starts t.
func taskHeader(t *Task) ipc.Header {
	return ipc.Header{Type: ipc.TypeTask, ID: t.id, Env: t.spec.Env, TimeoutMS: t.spec.Timeout.Milliseconds()}
}

// killReason returns why we killed a task's group, or "".
func (p *Pool) killReason(t *Task) oomwatch.Reason {
	p.mu.Lock()
	defer p.mu.Unlock()
	return t.kill.reason()
}

// killTaskLocked kills a running task's slot group, once, recording why.
// The slot cannot finish the task while p.mu is held, so the kill always
// hits the group the task runs in.
func (p *Pool) killTaskLocked(t *Task, why killKind) {
	if t.state != running || t.kill != notKilled {
		return
	}
	t.kill = why
	if t.slot.killed != nil {
		close(t.slot.killed)
		t.slot.killed = nil
	}
	if err := t.slot.group.Kill(); err != nil {
		p.log.Error("cgroup.kill failed", "slot", t.slot.group.Path(), "err", err)
	}
}

// armTimeout kills the task's group when its timeout passes; the returned
// function disarms it.
func (p *Pool) armTimeout(t *Task) (stop func() bool) {
	if t.spec.Timeout <= 0 {
		return func() bool { return false }
	}
	return time.AfterFunc(t.spec.Timeout, func() {
		p.mu.Lock()
		p.killTaskLocked(t, killedTimeout)
		p.mu.Unlock()
	}).Stop
}

// classify turns the facts of a worker or command that ended mid-task into
// an outcome; exec says a clean exit is a result.
func (s *slot) classify(t *Task, base Outcome, before oomwatch.Counters, kill oomwatch.Reason, e spawn.Exit) *Outcome {
	after := s.oomCounters()
	s.baseline = after
	v := oomwatch.Classify(oomwatch.Facts{Before: before, After: after, SupervisorKill: kill, Exited: true, Signal: e.Signal, ExitCode: e.Code})
	o := base
	switch {
	case s.usage != nil:
		// takeUsage read memory.peak a moment ago through a file kept
		// open (no memory controller: no memory.peak to read at all).
		if base.Usage != nil && base.Usage.MemoryPeakScope != "" {
			o.MemoryPeak = base.Usage.MemoryPeak
		}
	default:
		o.MemoryPeak, _ = s.group.MemoryPeak()
	}
	if s.group.Reduced() {
		// No memory.peak: the highest sum of VmHWM the slot's processes
		// were seen with, or the process's own peak RSS from wait4.
		o.MemoryPeak = max(o.MemoryPeak, e.MaxRSS)
	}
	container := "cgroup"
	if s.group.Reduced() {
		container = "process group"
	}
	o.Signal, o.ExitCode, o.Reason = int(v.Signal), v.ExitCode, v.Reason
	what := "worker"
	if s.p.cfg.Kind == KindExec {
		what = "command"
	}
	switch v.Reason {
	case oomwatch.OOM:
		o.Kind = ProcessError
		o.Message = fmt.Sprintf("%s pid %d was OOM-killed: its cgroup %s reached memory.max (peak %d bytes)", what, base.Pid, base.Leaf, o.MemoryPeak)
	case oomwatch.Timeout:
		o.Kind, o.Timeout = TimedOut, t.spec.Timeout
		o.Message = fmt.Sprintf("timed out after %v; the task's %s was killed", t.spec.Timeout, container)
	case oomwatch.Cancel:
		o.Kind, o.Message = Cancelled, "cancelled while running; the task's "+container+" was killed"
	case oomwatch.Killed:
		o.Kind = ProcessError
		o.Message = fmt.Sprintf("%s pid %d was killed by signal %d (%s)", what, base.Pid, int(v.Signal), v.Signal)
	default:
		o.Kind = ProcessError
		o.Reason = oomwatch.Crashed
		o.Message = fmt.Sprintf("%s pid %d exited with code %d before answering", what, base.Pid, v.ExitCode)
	}
	return &o
}

// afterTask applies the per-worker policies after an answered task:
// leftovers (left, counted by the caller before the outcome went out),
// max_tasks_per_child, memory ceiling, trim.
func (s *slot) afterTask(left int) {
	p := s.p
	if n := left; n > 0 {
		p.log.Info("killing what a task left behind in its worker's cgroup", "slot", s.group.Path(), "processes", n)
		p.mu.Lock()
		p.stats.LeftoverProcessesKilled += int64(n)
		p.stats.WorkersRetired++
		p.mu.Unlock()
		s.teardown(false)
		return
	}
	p.mu.Lock()
	done := s.tasksDone
	p.mu.Unlock()
	if p.cfg.MaxTasksPerChild > 0 && done >= int64(p.cfg.MaxTasksPerChild) {
		s.retire()
		return
	}
	if p.cfg.MaxWorkerMemoryBytes <= 0 && p.cfg.TrimThresholdBytes <= 0 {
		return
	}
	mem := s.memory()
	if p.cfg.MaxWorkerMemoryBytes > 0 && mem >= p.cfg.MaxWorkerMemoryBytes {
		p.log.Info("retiring a worker over max_worker_memory_bytes", "pid", s.w.pid(), "memory", mem)
		s.retire()
		return
	}
	if p.cfg.TrimThresholdBytes > 0 && mem >= p.cfg.TrimThresholdBytes {
		s.trim()
		s.markUsage() // the trim is no task's
	}
}

func (s *slot) retire() {
	p := s.p
	p.mu.Lock()
	p.stats.WorkersRetired++
	p.mu.Unlock()
	s.teardown(true)
}

// trim asks the worker to give memory back and waits briefly for its
// answer.
func (s *slot) trim() {
	if err := s.w.conn.Write(&ipc.Header{Type: ipc.TypeTrim}, nil); err != nil {
		return
	}
	p := s.p
	p.mu.Lock()
	p.stats.WorkersTrimmed++
	p.mu.Unlock()
	s.w.nc.SetReadDeadline(time.Now().Add(time.Second))
	defer s.w.nc.SetReadDeadline(time.Time{})
	for {
		h, _, err := s.w.conn.Read()
		if err != nil || h.Type == ipc.TypeTrimmed {
			return // a worker too slow to answer is left as it is
		}
	}
}

// memory is the slot's memory use, children included: memory.current,
// or where the memory controller is missing, the sum of the RSS of every
// process in the slot.
func (s *slot) memory() int64 {
	if v, err := s.group.MemoryCurrent(); err == nil {
		return v
	}
	var sum int64
	for _, pid := range s.procs() {
		if pr, err := procfs.NewProc(pid); err == nil {
			if st, err := pr.NewStatus(); err == nil {
				sum += int64(st.VmRSS)
			}
		}
	}
	return sum
}

// procs lists every process in the slot's subtree.
func (s *slot) procs() []int {
	pids, _ := s.group.SubtreeProcs() // a best effort: it sizes a count and a log line
	return pids
}

// leftovers counts processes in the slot other than the worker. The fast
// path is two preads: the leaf holds exactly the worker, and the slot has
// no group but the leaf.
func (s *slot) leftovers() int {
	if s.group.Reduced() {
		return s.leftoversSlow()
	}
	if procs, err := preadFile(s.leafProcs); err == nil {
		f := strings.Fields(procs)
		if len(f) == 1 && (s.w == nil || f[0] == strconv.Itoa(s.w.pid())) {
			if stat, err := preadFile(s.slotStat); err == nil {
				m, _ := cgroup.ParseFlatKeyed(stat)
				if m["nr_descendants"] <= 1 {
					return 0
				}
			}
		}
	}
	return s.leftoversSlow()
}

// oomCounters reads the slot's OOM kill counters: a pread of its
// memory.events, kept open; none without the memory controller (in
// reduced mode, oomwatch's stand-in).
func (s *slot) oomCounters() oomwatch.Counters {
	if s.group.Reduced() {
		c, _, _ := oomwatch.Read(s.group)
		return c
	}
	if s.memEvents == nil {
		return oomwatch.Counters{}
	}
	text, err := preadFile(s.memEvents)
	if err != nil {
		return oomwatch.Counters{}
	}
	ev, err := cgroup.ParseMemoryEvents(text)
	if err != nil {
		return oomwatch.Counters{}
	}
	return oomwatch.CountersOf(ev)
}

// preadFile reads a short cgroupfs file kept open, whole, in one pread
// (cgroupfs returns a short file whole, and os.File.ReadAt would read
// again to see the end).
func preadFile(f *os.File) (string, error) {
	var buf [512]byte
	n, err := unix.Pread(int(f.Fd()), buf[:], 0)
	if err != nil {
		return "", err
	}
	if n == len(buf) {
		return "", fmt.Errorf("%s: longer than %d bytes", f.Name(), len(buf))
	}
	return string(buf[:n]), nil
}

// populated reports whether a process is left in the slot: one pread of
// its cgroup.events, kept open (opening it per task was a seventh of
// cgpool run's own time over short commands).
func (s *slot) populated() (bool, error) {
	if s.slotEvents == nil {
		return s.group.Populated()
	}
	text, err := preadFile(s.slotEvents)
	if err != nil {
		return false, err
	}
	ev, err := cgroup.ParseEvents(text)
	return ev.Populated, err
}

// leftoversSlow counts, from the slot's process list, its processes other
// than the worker.
func (s *slot) leftoversSlow() int {
	n := 0
	for _, pid := range s.procs() {
		if s.w == nil || pid != s.w.pid() {
			n++
		}
	}
	return n
}
