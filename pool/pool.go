package pool

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/cgpool/cgpool/cgroup"
	"github.com/cgpool/cgpool/ipc"
	"github.com/cgpool/cgpool/sched"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// Pool is one named pool of worker slots.
type Pool struct {
	cfg    Config
	group  *cgroup.Group
	ctrl   []string // controllers offered to slots
	limits *specs.LinuxResources
	log    *slog.Logger
	base   []string // the environment every worker or command starts from
	euid   uint32   // the supervisor's effective uid

	mu         sync.Mutex
	queue      *sched.Queue[*Task]
	slots      map[*slot]struct{}
	idle       []*slot
	starting   int
	nextID     uint64
	nextSeq    int
	env        map[string]string
	recycleGen int
	draining   bool
	stopping   bool
	stopCh     chan struct{}     // closed when stopping
	room       chan struct{}     // closed and replaced when the backlog has room again
	spares     chan *incarnation // prepared workers waiting for a slot
	preparing  int               // spares being prepared
	expiry     *time.Timer
	deadline   *time.Timer // shutdown deadline
	stats      Stats
	// Admission: the bytes of the queued tasks (payloads, argv, env), and
	// each peer uid's tasks queued or running.
	queuedBytes int64
	inflight    map[uint32]int
	// Returning memory after bursts (memory.go).
	scavengeAt  int
	returning   bool
	returnAgain time.Duration // a request that came while returning: its delay (> 0)

	wg sync.WaitGroup // slot goroutines
}

// newPool creates the pool's group below parent and starts MinWorkers
// slots. ctrl are the controllers the root enabled.
func newPool(parent *cgroup.Group, ctrl []string, cfg Config, base []string, log *slog.Logger) (*Pool, error) {
	cfg, err := cfg.normalize()
	if err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	lim := cfg.Resources(ctrl)
	for _, c := range cgroup.Controllers(lim) {
		if parent.Reduced() {
			return nil, fmt.Errorf("pool %s: its limits need the %s controller, and cgpool runs in reduced mode here (no writable cgroup v2: process groups instead of cgroups), where no limit can be enforced: %w",
				cfg.Name, c, cgroup.ErrControllerUnavailable)
		}
		if !slices.Contains(ctrl, c) {
			return nil, fmt.Errorf("pool %s: its limits need the %s controller, which cgroup v2 does not offer here (controllers: %q); on a hybrid cgroup v1/v2 host like this one, run on a pure cgroup v2 host or in the VM (scripts/vm-test.sh): %w",
				cfg.Name, c, ctrl, cgroup.ErrControllerUnavailable)
		}
	}
	g, err := parent.Mkdir(cfg.Name)
	if err != nil {
		return nil, fmt.Errorf("pool %s: %w", cfg.Name, err)
	}
	if err := g.EnableControllers(ctrl...); err != nil {
		_ = g.Remove()
		return nil, fmt.Errorf("pool %s: %w", cfg.Name, err)
	}
	p := &Pool{
		cfg: cfg, group: g, ctrl: ctrl, limits: lim, log: log.With("pool", cfg.Name), base: base, euid: uint32(os.Geteuid()),
		queue: sched.New[*Task](cfg.MaxBacklog), slots: map[*slot]struct{}{}, inflight: map[uint32]int{}, scavengeAt: scavengeMin,
		spares: make(chan *incarnation, max(cfg.SpareWorkers, 0)),
		env:    maps.Clone(cfg.Env), stopCh: make(chan struct{}), room: make(chan struct{}),
	}
	if p.env == nil {
		p.env = map[string]string{}
	}
	p.stats.MaxWorkers, p.stats.MinWorkers = cfg.MaxWorkers, *cfg.MinWorkers
	p.mu.Lock()
	// With start_workers above min_workers, none of the first workers has
	// an idle deadline before its first task (see slot.firstWait).
	for range max(cfg.StartWorkers, *cfg.MinWorkers) {
		p.startSlotLocked().firstWait = cfg.StartWorkers > *cfg.MinWorkers
	}
	p.mu.Unlock()
	p.refillSpares()
	return p, nil
}

// Name returns the pool's name.
func (p *Pool) Name() string { return p.cfg.Name }

// Config returns the pool's settings with defaults filled in.
func (p *Pool) Config() Config { return p.cfg }

// Submit validates spec and queues it. notify receives the task's events
// (Running, then one Done) from the pool's goroutines; it must not block
// for long and must not call back into the pool synchronously. Submit
// blocks only when the backlog is full and spec.Hold is set, until there is
// room or ctx ends. Errors: a *RejectError (errors.Is with ErrQueueFull,
// ErrDraining, ErrInvalid), or ctx.Err() while holding.
func (p *Pool) Submit(ctx context.Context, spec Spec, notify func(Event)) (*Task, error) {
	if err := p.validate(&spec); err != nil {
		p.mu.Lock()
		p.stats.TasksRejected++
		p.mu.Unlock()
		return nil, err
	}
	if notify == nil {
		notify = func(Event) {}
	}
	p.mu.Lock()
	t, start, err := p.submitLocked(ctx, spec, notify)
	p.mu.Unlock()
	if start != nil {
		start()
	}
	return t, err
}

// submitLocked is Submit with p.mu held (it is released while holding for
// room). start, if not nil, must be called after unlocking: the task was
// given to an idle worker at once (startInlineLocked).
func (p *Pool) submitLocked(ctx context.Context, spec Spec, notify func(Event)) (_ *Task, start func(), _ error) {
	for {
		if p.draining {
			p.stats.TasksRejected++
			return nil, nil, errDraining
		}
		if spec.Peer != nil && p.cfg.MaxTasksPerClient > 0 && p.inflight[spec.Peer.UID] >= p.cfg.MaxTasksPerClient {
			p.stats.TasksRejected++
			return nil, nil, reject(ipc.RejectOverLimit, ErrOverLimit, fmt.Sprintf("uid %d has %d tasks queued or running in pool %s, its max_tasks_per_client", spec.Peer.UID, p.inflight[spec.Peer.UID], p.cfg.Name))
		}
		size := spec.size()
		var err error
		if p.queuedBytes+size > p.cfg.MaxQueuedBytes && p.queue.Len() > 0 {
			err = sched.ErrFull // the backlog's bytes are full: as good as its count
		}
		p.nextID++
		t := &Task{id: p.nextID, pool: p, spec: spec, notify: notify}
		it := sched.Item[*Task]{ID: t.id, Priority: spec.Priority, Client: spec.Client, Value: t}
		if spec.QueueTimeout > 0 {
			it.Deadline = time.Now().Add(spec.QueueTimeout)
		}
		if err == nil {
			err = p.queue.Push(it)
		}
		if errors.Is(err, sched.ErrFull) {
			if !spec.Hold {
				p.stats.TasksRejected++
				return nil, nil, errFull(p.queue.Len(), p.queuedBytes)
			}
			room := p.room
			p.mu.Unlock()
			select {
			case <-room:
				p.mu.Lock()
				continue
			case <-ctx.Done():
				p.mu.Lock()
				return nil, nil, ctx.Err()
			}
		}
		if err != nil {
			p.stats.TasksRejected++
			return nil, nil, errInvalid("%v", err)
		}
		p.queuedBytes += size
		p.queueGrewLocked()
		if spec.Peer != nil {
			p.inflight[spec.Peer.UID]++
		}
		p.stats.TasksReceived++
		start = p.startInlineLocked(t)
		if start == nil {
			p.dispatchLocked()
			if !it.Deadline.IsZero() {
				p.armExpiryLocked()
			}
		}
		return t, start, nil
	}
}

// inlineMaxPayload bounds the payload of a task that a submitter sends to
// an idle worker itself: a frame this small fits in the worker socket's
// send buffer, so the submitter never waits for the worker.
const inlineMaxPayload = 64 << 10

// startInlineLocked starts the task just queued, if it is alone in the
// queue, on an idle worker that waits on its socket: the submitting
// goroutine sends the task to the worker itself (the returned function,
// called after unlocking), and the slot goroutine wakes only for the
// answer. Waking the slot to send it would cost a thread wake-up, which on
// small VMs is most of a no-op round trip. It returns nil, and leaves the
// task to dispatchLocked, when no slot or the task does not qualify (a
// per-task memory limit is written by the slot, as is a large payload).
func (p *Pool) startInlineLocked(t *Task) func() {
	// Alone in the queue, t is what the next Pop returns.
	if p.cfg.Kind != KindWorker || p.stopping || len(p.idle) == 0 || p.queue.Len() != 1 ||
		t.spec.MemoryMax > 0 || len(t.spec.Payload) > inlineMaxPayload {
		return nil
	}
	i := p.pickIdleLocked(t)
	if i < 0 {
		return nil
	}
	s := p.idle[i]
	if s.waitW == nil || s.gen < p.recycleGen || s.envOutdatedLocked() || !s.fitsLocked(t) || s.waitW.exited() {
		return nil
	}
	w := s.waitW
	p.queue.Pop()
	p.idle = slices.Delete(p.idle, i, i+1)
	s.takeLocked(t)
	s.waitW = nil // no wake-up may cut into the answer now
	w.nc.SetReadDeadline(time.Time{})
	s.stop = p.armTimeout(t)
	pid, leaf := w.pid(), s.leafPath
	return func() {
		// Running goes first: the answer, which the slot goroutine
		// reports, cannot come before the task is sent.
		t.notify(Event{Running: true, Pid: pid, Leaf: leaf})
		h := taskHeader(t)
		ok, err := w.conn.TryWrite(&h, t.spec.Payload)
		if err == nil && !ok {
			err = w.conn.Write(&h, t.spec.Payload)
		}
		if err != nil {
			// The worker is gone or going: the slot reads the end of its
			// socket and reports the task.
			p.log.Debug("could not send a task to its worker", "pid", pid, "err", err)
		}
	}
}

// validate checks a submission against the pool's kind and ceilings, and
// fills the default timeout. A value above a ceiling is refused
// (over_limit), never clamped.
func (p *Pool) validate(s *Spec) error {
	c := &p.cfg
	switch {
	case s.Priority < 0:
		return errInvalid("priority %d: must be >= 0", s.Priority)
	case s.Timeout < 0 || s.QueueTimeout < 0:
		return errInvalid("negative timeout")
	case s.MemoryMax < 0:
		return errInvalid("negative memory limit")
	case c.Kind == KindExec && len(s.Argv) == 0:
		return errInvalid("pool %s runs commands: the task needs an argv", c.Name)
	case c.Kind == KindExec && len(s.Payload) > 0:
		return errInvalid("pool %s runs commands: a task carries an argv and no payload (%d bytes sent)", c.Name, len(s.Payload))
	case c.Kind == KindWorker && len(s.Argv) != 0:
		return errInvalid("pool %s runs a worker program: a task carries a payload, not an argv", c.Name)
	case c.Kind == KindWorker && s.io().Dir != "":
		return errInvalid("pool %s runs a worker program: a task has no working directory of its own", c.Name)
	case c.Kind == KindWorker && s.IO != nil:
		return errInvalid("pool %s runs a worker program: a task's output is its worker's answer, and its input the payload (standard input, streamed output and max_output are for exec pools)", c.Name)
	case s.io().MaxOutput < 0:
		return errInvalid("max_output %d < 0", s.io().MaxOutput)
	case c.MaxTimeout > 0 && s.Timeout > c.MaxTimeout:
		return overLimit("timeout %v is above pool %s's max_timeout %v", s.Timeout, c.Name, c.MaxTimeout)
	case int64(len(s.Payload)) > c.MaxPayloadBytes:
		return reject(ipc.RejectTooLarge, ErrOverLimit, fmt.Sprintf("payload of %d bytes is above pool %s's max_payload_bytes %d", len(s.Payload), c.Name, c.MaxPayloadBytes))
	}
	if n := envBytes(s.Env); n > c.MaxEnvBytes {
		return overLimit("environment additions of %d bytes are above pool %s's max_env_bytes %d", n, c.Name, c.MaxEnvBytes)
	}
	if n := argvBytes(s.Argv); n > c.MaxArgvBytes {
		return overLimit("argv of %d bytes is above pool %s's max_argv_bytes %d", n, c.Name, c.MaxArgvBytes)
	}
	if c.Kind == KindExec && c.fixed == nil && p.euid == 0 && s.Peer != nil && s.Peer.UID == 0 && !c.AllowRoot {
		return reject(ipc.RejectForbidden, ErrForbidden, fmt.Sprintf("pool %s runs each command as the user who submits it, and runs none as root unless its configuration says allow_root = true", c.Name))
	}
	if dir := s.io().Dir; dir != "" {
		if !filepath.IsAbs(dir) {
			return errInvalid("working directory %q is not an absolute path", dir)
		}
		if st, err := os.Stat(dir); err != nil || !st.IsDir() {
			return errInvalid("working directory %s: not a directory the supervisor can see (it may run in a mount namespace of its own, as a systemd service with PrivateTmp= does)", dir)
		}
	}
	if s.MemoryMax > 0 {
		if p.group.Reduced() {
			return errInvalid("memory limit %d: refused, cgpool runs in reduced mode here (no writable cgroup v2: process groups instead of cgroups) and cannot enforce a memory limit", s.MemoryMax)
		}
		if !slices.Contains(p.ctrl, "memory") {
			return errInvalid("memory limit %d: the memory controller is not available to cgroup v2 here (controllers: %q); use a pure cgroup v2 host or the VM (scripts/vm-test.sh)", s.MemoryMax, p.ctrl)
		}
		if c.MemoryMax > 0 && s.MemoryMax > c.MemoryMax {
			return overLimit("memory limit %d is above pool %s's memory_max %d", s.MemoryMax, c.Name, c.MemoryMax)
		}
	}
	if s.Timeout == 0 {
		s.Timeout = c.DefaultTimeout
		if s.Timeout == 0 {
			s.Timeout = c.MaxTimeout // none asked, no default: the ceiling still holds
		}
	}
	return nil
}

func envBytes(env map[string]string) int64 {
	var n int64
	for k, v := range env {
		n += int64(len(k) + len(v) + 2) // "K=V\0"
	}
	return n
}

func argvBytes(argv []string) int64 {
	var n int64
	for _, a := range argv {
		n += int64(len(a) + 1)
	}
	return n
}

// dispatchLocked wakes idle slots for queued tasks and starts new slots
// while there is more work than hands, up to MaxWorkers.
func (p *Pool) dispatchLocked() {
	n := p.queue.Len()
	if it, ok := p.queue.Peek(); ok && len(p.idle) > 0 {
		// The next task goes to a worker that may run it as it is, if one
		// is idle (see slot.owner), rather than to one that must be
		// replaced first; if none is idle but one of its owner's has just
		// finished a task (and is on its way back), that one takes it.
		if i := p.pickIdleLocked(it.Value); i >= 0 {
			s := p.idle[i]
			p.idle = slices.Delete(p.idle, i, i+1)
			s.wakeLocked()
			n--
		} else if p.ownerReturningLocked(it.Value) {
			n--
		}
	}
	for n > 0 && len(p.idle) > 0 {
		s := p.idle[len(p.idle)-1]
		p.idle = p.idle[:len(p.idle)-1]
		s.wakeLocked()
		n--
	}
	for n > p.starting && len(p.slots) < p.cfg.MaxWorkers && !p.stopping {
		p.startSlotLocked()
		n--
	}
}

// pickIdleLocked returns the index in p.idle of the slot that should run
// t: the most recently idle one whose worker serves t's owner, else the
// most recently idle unbound one, else the most recently idle one; -1 if
// no idle slot fits t (an exec pool's always do).
func (p *Pool) pickIdleLocked(t *Task) int {
	last := len(p.idle) - 1
	if p.cfg.Kind != KindWorker {
		return last
	}
	want := taskOwner(t)
	unbound := -1
	for i := last; i >= 0; i-- {
		switch o := p.idle[i].owner; {
		case o != nil && *o == want:
			return i
		case o == nil && unbound < 0:
			unbound = i
		}
	}
	return unbound
}

// ownerReturningLocked reports whether a slot that serves t's owner has
// just finished its task and is on its way back to the queue: it takes t
// in a moment, and no idle worker of another owner needs to be replaced
// for t. (A slot still busy does not count: t would wait for its task.)
func (p *Pool) ownerReturningLocked(t *Task) bool {
	want := taskOwner(t)
	for s := range p.slots {
		if s.alive && s.task == nil && s.owner != nil && *s.owner == want && !slices.Contains(p.idle, s) {
			return true
		}
	}
	return false
}

func (p *Pool) startSlotLocked() *slot {
	s := &slot{p: p, wake: make(chan struct{}, 1), state: "starting", inStarting: true, num: p.freeSlotNumLocked()}
	p.slots[s] = struct{}{}
	p.starting++
	p.wg.Add(1)
	go s.run()
	return s
}

// freeSlotNumLocked is the lowest slot number (from 1) no live slot
// holds: a slot that ends gives its number to the next one started.
func (p *Pool) freeSlotNumLocked() int {
	used := make(map[int]bool, len(p.slots))
	for s := range p.slots {
		used[s.num] = true
	}
	n := 1
	for used[n] {
		n++
	}
	return n
}

// signalRoomLocked tells held submitters that the backlog has room.
func (p *Pool) signalRoomLocked() {
	close(p.room)
	p.room = make(chan struct{})
}

// armExpiryLocked arms the one timer for the earliest queue deadline.
func (p *Pool) armExpiryLocked() {
	dl, ok := p.queue.NextDeadline()
	if !ok {
		return
	}
	d := max(0, time.Until(dl))
	if p.expiry == nil {
		p.expiry = time.AfterFunc(d, p.expire)
	} else {
		p.expiry.Reset(d)
	}
}

// expire fails the tasks whose queue deadline passed.
func (p *Pool) expire() {
	p.mu.Lock()
	outs := p.dequeuedLocked(p.queue.Expire(time.Now()), QueueTimeout)
	p.armExpiryLocked()
	p.mu.Unlock()
	for _, t := range outs {
		t.notify(Event{Outcome: &Outcome{Kind: QueueTimeout, Message: fmt.Sprintf("not started within %v", t.spec.QueueTimeout)}})
	}
}

// dequeuedLocked ends tasks just taken out of the queue with an outcome of
// kind (counted now) and returns them; the caller notifies them after
// unlocking.
func (p *Pool) dequeuedLocked(items []sched.Item[*Task], kind OutcomeKind) []*Task {
	out := make([]*Task, 0, len(items))
	for _, it := range items {
		t := it.Value
		p.endLocked(t, &Outcome{Kind: kind})
		out = append(out, t)
	}
	if len(items) > 0 {
		p.signalRoomLocked()
	}
	return out
}

// endLocked ends a task with its one terminal outcome: it leaves the
// pool's books (its id, its queued bytes, its peer's tasks in flight) and
// is counted. The caller notifies it after unlocking.
func (p *Pool) endLocked(t *Task, o *Outcome) {
	if t.state == done { // one terminal outcome per task, always: a bug if not
		p.log.Error("a task was ended twice; the second outcome is dropped from the statistics", "task", t.id, "outcome", o.Kind)
		return
	}
	if t.state == queued {
		p.leaveQueueLocked(t)
		p.stats.TasksNeverStarted++
	}
	t.state = done
	if t.spec.Peer != nil {
		if p.inflight[t.spec.Peer.UID]--; p.inflight[t.spec.Peer.UID] <= 0 {
			delete(p.inflight, t.spec.Peer.UID)
		}
	}
	p.countLocked(o)
}

// leaveQueueLocked gives back the backlog bytes of a task that leaves the
// queue (to start, or to end).
func (p *Pool) leaveQueueLocked(t *Task) {
	p.queuedBytes -= t.spec.size()
	p.queueShrankLocked()
}

// countLocked updates the statistics for a terminal outcome. Anything but
// a result or a cancellation counts in tasks_failed; an exec command's
// non-zero exit is a result.
func (p *Pool) countLocked(o *Outcome) {
	switch {
	case o.Kind == Result:
		p.stats.TasksSucceeded++
	case o.Kind == Cancelled:
		p.stats.TasksCancelled++
	default:
		p.stats.TasksFailed++
		if p.stats.FailuresByReason == nil {
			p.stats.FailuresByReason = map[string]int64{}
		}
		reason := string(o.Kind)
		if o.Kind == ProcessError {
			reason = string(o.Reason)
		}
		p.stats.FailuresByReason[reason]++
	}
}

// Cancel cancels the task with id. A queued task is cancelled and never
// starts (ok, "queued"). A running task is killed with its whole slot only
// when hard is set (ok, "running"); otherwise it is left to finish and ok
// is false, as concurrent.futures does. A finished or unknown id gives
// false and "done".
func (p *Pool) Cancel(id uint64, hard bool) (ok bool, state string) {
	p.mu.Lock()
	if it, queued := p.queue.Remove(id); queued {
		t := it.Value
		p.signalRoomLocked()
		p.endLocked(t, &Outcome{Kind: Cancelled})
		p.mu.Unlock()
		t.notify(Event{Outcome: &Outcome{Kind: Cancelled, Message: "cancelled before it started"}})
		return true, "queued"
	}
	for s := range p.slots {
		if t := s.task; t != nil && t.id == id && t.state == running {
			if hard {
				p.killTaskLocked(t, killedCancel)
			}
			p.mu.Unlock()
			return hard, "running"
		}
	}
	p.mu.Unlock()
	return false, "done"
}

// runningLocked calls f for each running task: the tasks of the slots
// (a task leaves the queue and becomes its slot's under one hold of p.mu).
func (p *Pool) runningLocked(f func(*Task)) {
	for s := range p.slots {
		if t := s.task; t != nil && t.state == running {
			f(t)
		}
	}
}

// ForgetClient applies the disconnect policy to a client's tasks.
func (p *Pool) ForgetClient(client uint64) {
	if p.cfg.OnDisconnect == Continue {
		return
	}
	p.mu.Lock()
	cancelled := p.dequeuedLocked(p.queue.RemoveClient(client), Cancelled)
	if p.cfg.OnDisconnect == Terminate {
		p.runningLocked(func(t *Task) {
			if t.spec.Client == client {
				p.killTaskLocked(t, killedCancel)
			}
		})
	}
	p.mu.Unlock()
	for _, t := range cancelled {
		t.notify(Event{Outcome: &Outcome{Kind: Cancelled, Message: "the client disconnected"}})
	}
}

// SetEnv changes the environment that workers started from now on get
// (running workers keep theirs until Recycle). replace drops variables
// not in env. A variable on the deny list (LD_PRELOAD, LD_LIBRARY_PATH and
// the like, unless the pool's AllowEnv names it) fails the whole call and
// changes nothing.
func (p *Pool) SetEnv(env map[string]string, replace bool) error {
	if err := p.cfg.checkEnv(env); err != nil {
		return err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if replace {
		p.env = maps.Clone(env)
		if p.env == nil {
			p.env = map[string]string{}
		}
		return nil
	}
	maps.Copy(p.env, env)
	return nil
}

// Env returns a copy of the pool's current environment additions.
func (p *Pool) Env() map[string]string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return maps.Clone(p.env)
}

// Recycle retires every worker started before the call: idle ones at once,
// busy ones when their task ends. Every task that starts after Recycle
// returns runs on a worker started after it, with the environment current
// then.
func (p *Pool) Recycle() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.recycleGen++
	for _, s := range p.idle {
		s.wakeLocked()
	}
	p.idle = nil
}

// Stats returns a snapshot of the statistics.
func (p *Pool) Stats() Stats {
	p.mu.Lock()
	defer p.mu.Unlock()
	st := p.stats
	st.FailuresByReason = maps.Clone(p.stats.FailuresByReason)
	if st.FailuresByReason == nil {
		st.FailuresByReason = map[string]int64{}
	}
	st.TasksQueued = int64(p.queue.Len())
	st.MissingGuarantees = p.missingGuarantees()
	for s := range p.slots {
		if s.pid == 0 {
			continue
		}
		st.WorkerProcessesStillAlive++
		switch s.state {
		case "busy":
			st.WorkerProcessesBusy++
		case "idle":
			st.WorkerProcessesIdle++
		}
	}
	st.TasksRunning = st.WorkerProcessesBusy
	return st
}

// Status returns each worker slot's state.
func (p *Pool) Status() Status {
	p.mu.Lock()
	env := maps.Clone(p.env)
	slots := slices.Collect(maps.Keys(p.slots))
	ws := make([]WorkerStatus, 0, len(slots))
	groups := make([]*cgroup.Group, 0, len(slots))
	for _, s := range slots {
		w := WorkerStatus{Slot: s.name, Pid: s.pid, Leaf: s.leafPath, State: s.state, TasksDone: s.tasksDone, StartError: s.startErr, taskUID: -1}
		if s.task != nil {
			w.Task = s.task.id
			if pr := s.task.spec.Peer; pr != nil {
				w.taskUID = int64(pr.UID)
			}
		}
		ws = append(ws, w)
		groups = append(groups, s.groupRef)
	}
	p.mu.Unlock()
	for i, g := range groups {
		if g == nil {
			continue
		}
		ws[i].MemoryCurrent, _ = g.MemoryCurrent()
		ws[i].MemoryPeak, _ = g.MemoryPeak()
	}
	slices.SortFunc(ws, func(a, b WorkerStatus) int { return cmpSlot(a.Slot, b.Slot) })
	return Status{Pool: p.cfg.Name, Kind: p.cfg.Kind, Workers: ws, Env: env, MissingGuarantees: p.missingGuarantees()}
}

// missingGuarantees lists what does not hold here (reduced mode), or nil.
func (p *Pool) missingGuarantees() []string {
	if !p.group.Reduced() {
		return nil
	}
	return slices.Clone(cgroup.ReducedMissing)
}

func cmpSlot(a, b string) int {
	if len(a) != len(b) {
		return len(a) - len(b)
	}
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// ShutdownOptions are Deadpool's shutdown arguments plus a deadline.
type ShutdownOptions struct {
	// Wait: running tasks finish (and, without CancelFutures, queued ones
	// run too) before Shutdown returns.
	Wait bool
	// CancelFutures: queued tasks are cancelled. Without Wait, running
	// tasks are killed and cancelled too.
	CancelFutures bool
	// Deadline, if positive, bounds how long running work may go on; then
	// it is killed and cancelled.
	Deadline time.Duration
}

// Shutdown stops accepting tasks and winds the pool down as Deadpool's
// matrix says:
//
//	wait  cancel  effect
//	true  true    running tasks finish; queued ones are cancelled
//	true  false   running and queued tasks all run
//	false true    running tasks are killed (cancelled); queued ones cancelled
//	false false   running tasks finish; queued ones are cancelled
//
// With Wait it blocks until every slot has exited and the pool's cgroups
// are gone (or ctx ends); without, it returns at once and Wait does that.
// It never fails because the backlog is full, and it is idempotent.
func (p *Pool) Shutdown(ctx context.Context, o ShutdownOptions) error {
	p.beginShutdown(o)
	if !o.Wait {
		return nil
	}
	return p.Wait(ctx)
}

// beginShutdown does Shutdown's work without waiting.
func (p *Pool) beginShutdown(o ShutdownOptions) {
	p.mu.Lock()
	p.draining = true
	var cancelled []*Task
	if o.CancelFutures || !o.Wait {
		cancelled = p.dequeuedLocked(p.queue.Drain(), Cancelled)
	}
	p.signalRoomLocked() // held submitters wake up and see draining
	if !o.Wait && o.CancelFutures {
		p.killRunningLocked()
	}
	if !p.stopping {
		p.stopping = true
		close(p.stopCh)
		for _, s := range p.idle {
			s.wakeLocked() // a slot waiting on its worker's socket does not see stopCh
		}
	}
	if p.expiry != nil {
		p.expiry.Stop()
	}
	p.mu.Unlock()
	for _, t := range cancelled {
		t.notify(Event{Outcome: &Outcome{Kind: Cancelled, Message: "cancelled by shutdown"}})
	}
	if o.Deadline > 0 {
		p.mu.Lock()
		if p.deadline == nil {
			p.deadline = time.AfterFunc(o.Deadline, p.deadlinePassed)
		}
		p.mu.Unlock()
	}
}

// deadlinePassed ends a shutdown's grace: nothing new starts, every queued
// task is cancelled, and every running one is killed (and cancelled).
func (p *Pool) deadlinePassed() {
	p.mu.Lock()
	cancelled := p.dequeuedLocked(p.queue.Drain(), Cancelled)
	p.killRunningLocked()
	p.mu.Unlock()
	for _, t := range cancelled {
		t.notify(Event{Outcome: &Outcome{Kind: Cancelled, Message: "cancelled: the shutdown's deadline passed before it started"}})
	}
}

func (p *Pool) killRunningLocked() {
	p.runningLocked(func(t *Task) { p.killTaskLocked(t, killedCancel) })
}

// Wait blocks until every slot goroutine has exited after Shutdown, then
// removes the pool's group. It returns ctx.Err() if ctx ends first.
func (p *Pool) Wait(ctx context.Context) error {
	done := make(chan struct{})
	go func() { p.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		return ctx.Err()
	}
	p.releaseSpares()
	p.mu.Lock()
	if p.deadline != nil {
		p.deadline.Stop()
	}
	p.mu.Unlock()
	return p.group.Destroy(context.WithoutCancel(ctx), 10*time.Second)
}
