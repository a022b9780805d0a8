package check

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/cgpool/cgpool/cgroup"
	"github.com/cgpool/cgpool/pool"
	"golang.org/x/sys/unix"
)

//go:embed cgpool_check_tasks.py
var pyTasks []byte

// Options are what Run needs from its caller.
type Options struct {
	// Self is the argv that runs this cgpool binary (the Go worker is
	// Self + "check-worker"; the nested rows run Self + "run ...").
	Self []string
	// Python is the interpreter for the Python column ("": python3 in
	// PATH); PythonPath goes in front of its PYTHONPATH (where the cgpool
	// package is, if it is not installed).
	Python, PythonPath string
	// Require lists what the configuration asks for beyond the basics:
	// "memory", "pids", "python". A missing one fails the check.
	Require []string
	// Columns and Rows limit the matrix (nil: all).
	Columns, Rows []string
	// Timeout is the stuck tasks' timeout (default 1 s); Parallel, how many
	// cells run at once (default 4).
	Timeout  time.Duration
	Parallel int
	// Slack is how late the kernel's evidence may come on this machine
	// (default 1 s): T wants the timeout told within Timeout + Slack and
	// every process seen gone within Slack of it; K allows 2 s + Slack for
	// a worker pool to empty a slot after telling the outcome; E, 1 s +
	// Slack after the shutdown. Raise it where everything is slow (qemu
	// without KVM on a busy host), not to excuse a real leak: a process
	// that survives is still reported, however late.
	Slack time.Duration
	// Progress, if set, is called after each cell (from Run's goroutines,
	// one at a time).
	Progress func(done, total int, cell *Cell)
	Log      *slog.Logger
}

// Cell is one row × column of the matrix.
type Cell struct {
	Row    string `json:"row"`
	Column string `json:"column"`
	// Status: "pass", "fail", or "n/a" (the host lacks what the row
	// needs; Reason says what).
	Status string `json:"status"`
	// W, K, T, E: "pass", "fail", or "" when not run.
	W       string   `json:"w,omitempty"`
	K       string   `json:"k,omitempty"`
	T       string   `json:"t,omitempty"`
	E       string   `json:"e,omitempty"`
	Seconds float64  `json:"seconds"`
	Reason  string   `json:"reason,omitempty"`
	Notes   []string `json:"notes,omitempty"`
	// Required: the row's guarantee is asked for here; an n/a then fails.
	Required bool `json:"required"`
}

// Report is the whole check.
type Report struct {
	Host  *Host   `json:"host"`
	Cells []*Cell `json:"cells"`
	// Missing lists each guarantee that does not hold here, with why.
	Missing []string `json:"missing"`
	// Failed: a guarantee the configuration asks for is missing, or a cell
	// that could run failed.
	Failed bool `json:"failed"`
	// TimeoutSeconds and SlackSeconds are the Options the cells were
	// judged by.
	TimeoutSeconds float64 `json:"timeout_seconds"`
	SlackSeconds   float64 `json:"slack_seconds"`
}

// Run probes the host and runs the matrix below root (which the caller has
// taken over; rootFrom says how it was chosen, for the report). It blocks
// until every cell is done or ctx ends, and removes every group and
// process it made. The error is for the check itself failing (no temporary
// directory, ctx ended); what the host lacks is in the report.
func Run(ctx context.Context, root *cgroup.Root, rootFrom string, o Options) (*Report, error) {
	if o.Timeout <= 0 {
		o.Timeout = time.Second
	}
	if o.Parallel <= 0 {
		o.Parallel = 4
	}
	if o.Slack <= 0 {
		o.Slack = time.Second
	}
	if o.Log == nil {
		o.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	h := probe(ctx, root, rootFrom, &o)
	rep := &Report{Host: h, TimeoutSeconds: o.Timeout.Seconds(), SlackSeconds: o.Slack.Seconds()}
	for _, f := range []struct {
		name string
		f    Feature
	}{{"cgroup.kill", h.CgroupKill}, {"CLONE_INTO_CGROUP", h.CloneInto}, {"pidfd", h.Pidfd}} {
		if !f.f.OK {
			rep.Missing = append(rep.Missing, f.name+": "+f.f.Detail)
			rep.Failed = true
		}
	}
	if h.Reduced {
		// No cell is run: a row that detaches a daemon would leave it
		// running on the host, the very guarantee that is missing.
		for _, m := range cgroup.ReducedMissing {
			rep.Missing = append(rep.Missing, "reduced mode: "+m)
		}
		for _, col := range Columns {
			if o.Columns != nil && !slices.Contains(o.Columns, col) {
				continue
			}
			for _, r := range rows {
				if r.in(col) && (o.Rows == nil || slices.Contains(o.Rows, r.name)) {
					rep.Cells = append(rep.Cells, &Cell{Row: r.name, Column: col, Status: "n/a", Reason: "reduced mode: the matrix needs a writable cgroup v2"})
				}
			}
		}
		return rep, nil
	}
	dir, err := os.MkdirTemp("", "cgpool-check-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	// Workers may run as another user (the escape row): they must read it.
	if err := os.Chmod(dir, 0o755); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(dir, "cgpool_check_tasks.py"), pyTasks, 0o644); err != nil {
		return nil, err
	}
	env := &cellEnv{o: &o, root: root, host: h, tasksDir: dir}

	var todo []*Cell
	for _, col := range Columns {
		if o.Columns != nil && !slices.Contains(o.Columns, col) {
			continue
		}
		for _, r := range rows {
			if !r.in(col) || (o.Rows != nil && !slices.Contains(o.Rows, r.name)) {
				continue
			}
			c := &Cell{Row: r.name, Column: col}
			c.Required, c.Reason = env.available(r, col)
			if c.Reason != "" {
				c.Status = "n/a"
				if c.Required {
					c.Status = "fail"
				}
			}
			rep.Cells = append(rep.Cells, c)
			if c.Status == "" {
				todo = append(todo, c)
			}
		}
	}
	var mu sync.Mutex
	done := 0
	sem := make(chan struct{}, o.Parallel)
	var wg sync.WaitGroup
	for _, c := range todo {
		wg.Add(1)
		go func() {
			defer wg.Done()
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				return
			}
			defer func() { <-sem }()
			env.run(ctx, c)
			mu.Lock()
			done++
			if o.Progress != nil {
				o.Progress(done, len(todo), c)
			}
			mu.Unlock()
		}()
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return rep, err
	}
	seen := map[string]bool{}
	for _, c := range rep.Cells {
		switch {
		case c.Status == "fail":
			rep.Failed = true
		case c.Status == "n/a" && !seen[c.Reason]:
			seen[c.Reason] = true
			rep.Missing = append(rep.Missing, c.Reason)
		}
	}
	return rep, nil
}

// cellEnv is what every cell shares.
type cellEnv struct {
	o        *Options
	root     *cgroup.Root
	host     *Host
	tasksDir string
}

// available says whether row r can run in column col here: "" if so, else
// why not; required says the configuration asks for what it lacks.
func (e *cellEnv) available(r row, col string) (required bool, reason string) {
	if col == ColPython && !e.host.Python.OK {
		return slices.Contains(e.o.Require, "python"), "python: " + e.host.Python.Detail
	}
	if r.name == "b_pool" && !e.host.Billiard.OK {
		return false, "b_pool: " + e.host.Billiard.Detail
	}
	if r.noRoot && os.Geteuid() == 0 {
		prog := ""
		switch col {
		case ColGo:
			prog = e.o.Self[0]
		case ColPython:
			prog = e.host.python
		}
		if prog != "" && !othersMayRun(prog) {
			return false, fmt.Sprintf("%s × %s: the row runs its tasks as uid %d (as root a task could move itself anywhere), and %s is not executable by other users (a directory on its path is closed to them)", r.name, col, nobody, prog)
		}
	}
	if r.needs != "" && !slices.Contains(e.host.Enabled, r.needs) {
		why := fmt.Sprintf("%s: the %s controller is not available to cgroup v2 here (offered at %s: %q)", r.name, r.needs, e.host.Root, e.host.Offered)
		if e.host.Hybrid {
			why += "; on this hybrid cgroup v1/v2 host it belongs to v1"
		}
		return slices.Contains(e.o.Require, r.needs), why
	}
	return false, ""
}

// poolConfig is the pool of one cell: one slot, started on demand.
func (e *cellEnv) poolConfig(r row, col string) pool.Config {
	zero := 0
	name := strings.ReplaceAll(fmt.Sprintf("check-%s-%s", col, r.name), "_", "-")
	cfg := pool.Config{
		Name: name, Kind: pool.KindWorker, MaxWorkers: 1, MinWorkers: &zero,
		Env: map[string]string{
			markerEnv:                   marker(name),
			"CGPOOL_CHECK_CGROUP_MOUNT": e.host.Mount,
		},
	}
	switch col {
	case ColExec:
		cfg.Kind = pool.KindExec
	case ColGo:
		cfg.Command = append(slices.Clone(e.o.Self), "check-worker")
	case ColPython:
		cfg.Command = []string{e.host.python, "-m", "cgpool.worker"}
		pp := e.tasksDir
		if e.o.PythonPath != "" {
			pp += ":" + e.o.PythonPath
		}
		if old := os.Getenv("PYTHONPATH"); old != "" {
			pp += ":" + old
		}
		cfg.Env["PYTHONPATH"] = pp
		if len(e.o.Self) == 1 {
			cfg.Env["CGPOOL_BIN"] = e.o.Self[0] // the nested Executor's supervisor
		}
	}
	switch r.needs {
	case "memory":
		cfg.MemoryMax = oomLimit
	case "pids":
		cfg.PidsMax = pidsLimit
	}
	switch {
	case r.noRoot && os.Geteuid() == 0:
		n := uint32(nobody)
		cfg.UID, cfg.GID = &n, &n
	case cfg.Kind == pool.KindWorker:
		// As the check's own caller: as root, like an exec task of an
		// in-process caller (a root supervisor's worker pools need it said).
		cfg.AllowRoot = true
	}
	return cfg
}

// spec is the task of row r in column col.
func (e *cellEnv) spec(r row, col string, stuck bool) pool.Spec {
	switch col {
	case ColExec:
		return pool.Spec{Argv: execArgv(r.name, stuck, e.o.Self)}
	case ColGo:
		return pool.Spec{Payload: goPayload(r.name, stuck)}
	}
	return pool.Spec{Payload: pyPayload(r.name, stuck)}
}

const markerEnv = "CGPOOL_CHECK_CELL"

// nobody is the uid and gid the escape row's tasks run as when the check
// runs as root.
const nobody = 65534

// othersMayRun reports whether a user who is neither the owner nor in the
// group could run prog: every directory on its path searchable, and the
// file itself executable, by others.
func othersMayRun(prog string) bool {
	p, err := filepath.EvalSymlinks(prog)
	if err != nil {
		return false
	}
	for dir := p; ; dir = filepath.Dir(dir) {
		st, err := os.Stat(dir)
		if err != nil || st.Mode().Perm()&0o001 == 0 {
			return false
		}
		if dir == "/" {
			return true
		}
	}
}

// marker is the value of markerEnv that every process of a cell carries.
func marker(poolName string) string { return poolName + "-" + strconv.Itoa(os.Getpid()) }

// run runs one cell and fills in c.
func (e *cellEnv) run(ctx context.Context, c *Cell) {
	start := time.Now()
	r := rows[slices.IndexFunc(rows, func(r row) bool { return r.name == c.Row })]
	defer func() { c.Seconds = time.Since(start).Seconds() }()
	var fails []string
	fail := func(check *string, format string, args ...any) {
		*check = "fail"
		fails = append(fails, fmt.Sprintf(format, args...))
	}
	defer func() {
		c.Status = "pass"
		if len(fails) > 0 {
			c.Status = "fail"
			c.Reason = strings.Join(fails, "; ")
		}
	}()
	cfg := e.poolConfig(r, c.Column)
	mark := cfg.Env[markerEnv]
	sup, err := pool.NewSupervisor(e.root, []pool.Config{cfg}, e.o.Log)
	if err != nil {
		fail(&c.W, "W: the pool did not start: %v", err)
		return
	}
	p, _ := sup.Pool(cfg.Name)
	poolDir := filepath.Join(e.root.Path(), cfg.Name)

	// W and K: the normal form.
	c.W, c.K = "pass", "pass"
	spec := e.spec(r, c.Column, false)
	spec.Timeout = time.Minute // a hang is a failure, not a hung check
	out, _, err := e.submit(ctx, p, spec)
	switch {
	case err != nil:
		fail(&c.W, "W: %v", err)
	default:
		if why := judge(r, c.Column, out); why != "" {
			fail(&c.W, "W: %s", why)
		}
		if why, first, late := e.leftovers(p, poolDir, out.Leaf, mark); why != "" {
			fail(&c.K, "K: %s", why)
		} else if late > 0 {
			c.Notes = append(c.Notes, fmt.Sprintf("K: gone %v after the outcome was told: %s", late.Round(time.Millisecond), first))
		}
	}

	// T: the stuck form, with a timeout.
	c.T = "pass"
	spec = e.spec(r, c.Column, true)
	spec.Timeout = e.o.Timeout
	out, seen, err := e.submit(ctx, p, spec)
	switch {
	case err != nil:
		fail(&c.T, "T: %v", err)
	case out.Kind != pool.TimedOut:
		fail(&c.T, "T: the stuck task ended as %s, want a timeout", describe(out))
	case seen.ran > e.o.Timeout+e.o.Slack:
		fail(&c.T, "T: the timeout was told %v after the start, more than timeout (%v) + slack (%v)", seen.ran.Round(time.Millisecond), e.o.Timeout, e.o.Slack)
	}
	if err == nil {
		if why := seen.gone(e.root, out.Leaf, e.o.Slack); why != "" {
			fail(&c.T, "T: %s", why)
		}
	}
	seen.close()

	// E: shutdown leaves nothing.
	c.E = "pass"
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
	defer cancel()
	if err := sup.Shutdown(sctx, pool.ShutdownOptions{Wait: true, CancelFutures: true}); err != nil {
		fail(&c.E, "E: shutdown: %v", err)
	}
	if _, err := os.Stat(poolDir); !errors.Is(err, os.ErrNotExist) {
		fail(&c.E, "E: the pool's cgroup %s is still there after shutdown", poolDir)
	}
	if pids := waitNoMarked(mark, nil, time.Second+e.o.Slack); len(pids) > 0 {
		fail(&c.E, "E: processes of the cell outlived the pool's shutdown: %s", describePids(pids))
		killMarked(mark)
	}
}

// judge is W: whether the normal form's outcome is right ("" if so).
func judge(r row, col string, o *pool.Outcome) string {
	if r.oom {
		if o.Kind == pool.ProcessError && o.Reason == "oom" {
			return ""
		}
		return fmt.Sprintf("allocating past memory.max ended as %s, want an OOM kill (reason oom)", describe(o))
	}
	var got string
	switch {
	case o.Kind != pool.Result:
		return fmt.Sprintf("the task ended as %s, want a result", describe(o))
	case col == ColExec && r.name == "fork_bomb":
		if strings.Contains(string(o.Stdout), "no limit") {
			return "the command forked 1000 times: pids.max did not stop it"
		}
		return ""
	case col == ColExec:
		if o.ExitCode != 0 {
			return fmt.Sprintf("the command exited %d (stderr %q), want 0", o.ExitCode, firstLine(string(o.Stderr)))
		}
		got = strings.TrimSpace(string(o.Stdout))
	case col == ColGo:
		got = strings.TrimSpace(string(o.Payload))
	default:
		got = unpickle(o.Payload)
	}
	if got != "10" {
		return fmt.Sprintf("the result is %q, want 10", got)
	}
	return ""
}

func describe(o *pool.Outcome) string {
	s := string(o.Kind)
	if o.Reason != "" {
		s += " (" + string(o.Reason) + ")"
	}
	if o.Message != "" {
		s += ": " + firstLine(o.Message)
	}
	return s
}

// submit runs spec and returns its outcome; while it runs, every process
// seen in its slot is recorded with a pidfd.
func (e *cellEnv) submit(ctx context.Context, p *pool.Pool, spec pool.Spec) (*pool.Outcome, *watch, error) {
	w := &watch{pidfds: map[int]int{}}
	type start struct {
		leaf string
		at   time.Time
	}
	running := make(chan start, 1)
	done := make(chan *pool.Outcome, 1)
	if _, err := p.Submit(ctx, spec, func(ev pool.Event) {
		switch {
		case ev.Outcome != nil:
			done <- ev.Outcome
		case ev.Running:
			// The first sample is taken here, on the pool's goroutine,
			// before the pool goes on: the task's first process is
			// there, whatever the check's own goroutine gets of a busy
			// CPU. The channel hands w over to the loop below. The start
			// is taken here too: the check's goroutine may see the event
			// late, and a late start would shorten the time T judges.
			at := time.Now()
			w.sample(e.root, ev.Leaf)
			running <- start{ev.Leaf, at}
		}
	}); err != nil {
		return nil, w, fmt.Errorf("submit: %w", err)
	}
	deadline := time.NewTimer(2*time.Minute + spec.Timeout)
	defer deadline.Stop()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	var leaf string
	var started time.Time
	for {
		select {
		case st := <-running:
			leaf, started = st.leaf, st.at
			w.sample(e.root, leaf)
		case o := <-done:
			if !started.IsZero() {
				w.ran = time.Since(started)
			}
			return o, w, nil
		case <-tick.C:
			if leaf != "" {
				w.sample(e.root, leaf)
			}
		case <-deadline.C:
			return nil, w, errors.New("no outcome within two minutes")
		case <-ctx.Done():
			return nil, w, ctx.Err()
		}
	}
}

// slotOf is the host directory of the slot whose leaf is leaf (a path as
// /proc/<pid>/cgroup shows it).
func slotOf(root *cgroup.Root, leaf string) (string, bool) {
	own := root.CgroupPath()
	rel, ok := strings.CutPrefix(leaf, strings.TrimSuffix(own, "/")+"/")
	if !ok {
		return "", false
	}
	return filepath.Join(root.Path(), filepath.Dir(rel)), true
}

// subtreeProcs lists every process in dir and below.
func subtreeProcs(dir string) []int {
	var pids []int
	_ = filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil || !d.IsDir() {
			return nil
		}
		b, err := os.ReadFile(filepath.Join(p, "cgroup.procs"))
		if err != nil {
			return nil
		}
		for _, f := range strings.Fields(string(b)) {
			if pid, err := strconv.Atoi(f); err == nil {
				pids = append(pids, pid)
			}
		}
		return nil
	})
	return pids
}

// watch is what a stuck task's cell saw: a pidfd for every process that
// was in its slot, and how long the task ran.
type watch struct {
	pidfds map[int]int
	ran    time.Duration
}

func (w *watch) sample(root *cgroup.Root, leaf string) {
	dir, ok := slotOf(root, leaf)
	if !ok {
		return
	}
	for _, pid := range subtreeProcs(dir) {
		if _, seen := w.pidfds[pid]; seen {
			continue
		}
		if fd, err := unix.PidfdOpen(pid, 0); err == nil {
			w.pidfds[pid] = fd
		}
	}
}

// gone checks T's evidence after a timeout: the slot is empty (or
// removed), and every process seen in it has exited (within slack).
func (w *watch) gone(root *cgroup.Root, leaf string, slack time.Duration) string {
	var why []string
	if dir, ok := slotOf(root, leaf); ok {
		if b, err := os.ReadFile(filepath.Join(dir, "cgroup.events")); err == nil {
			if ev, err := cgroup.ParseEvents(string(b)); err == nil && ev.Populated {
				why = append(why, fmt.Sprintf("its slot %s still holds processes after the timeout was told: %s", dir, describePids(subtreeProcs(dir))))
			}
		}
	}
	if len(w.pidfds) == 0 {
		why = append(why, "no process was ever seen in the slot (the check could not watch it)")
	}
	deadline := time.Now().Add(slack)
	var alive []int
	for pid, fd := range w.pidfds {
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		ms := max(0, int(time.Until(deadline).Milliseconds()))
		if n, err := unix.Poll(fds, ms); err != nil || n == 0 {
			alive = append(alive, pid)
		}
	}
	if len(alive) > 0 {
		slices.Sort(alive)
		why = append(why, fmt.Sprintf("processes seen in the slot are still alive %v after the timeout: %s", slack, describePids(alive)))
	}
	return strings.Join(why, "; ")
}

func (w *watch) close() {
	for _, fd := range w.pidfds {
		unix.Close(fd)
	}
}

// keptGrace is how long after a task's outcome K waits for what it left to
// be gone: a worker pool tells the outcome first and then kills the slot
// (tens of milliseconds here, over a second for 60 processes in a VM
// without KVM). With the default slack: 3 s.
func (e *cellEnv) keptGrace() time.Duration { return 2*time.Second + e.o.Slack }

// leftovers checks K after a normal task: within keptGrace of its outcome
// the slot it ran in holds nothing but its worker (or is gone), and no
// process of the cell lives outside the pool's current slots. late is how
// long that took when it was not so at once.
func (e *cellEnv) leftovers(p *pool.Pool, poolDir, leaf, mark string) (why, first string, late time.Duration) {
	start := time.Now()
	for {
		why = e.leftoversNow(p, poolDir, leaf, mark)
		if first == "" {
			first = why
		}
		if why == "" {
			if first != "" {
				late = time.Since(start)
			}
			return "", first, late
		}
		if time.Since(start) > e.keptGrace() {
			return why + fmt.Sprintf(" (%v after the outcome)", e.keptGrace()), first, 0
		}
		time.Sleep(10 * time.Millisecond) // re-reading the kernel's state with a deadline
	}
}

func (e *cellEnv) leftoversNow(p *pool.Pool, poolDir, leaf, mark string) string {
	workers := map[int]bool{}
	for _, w := range p.Status().Workers {
		if w.Pid != 0 {
			workers[w.Pid] = true
		}
	}
	if dir, ok := slotOf(e.root, leaf); ok {
		var extra []int
		for _, pid := range subtreeProcs(dir) {
			if !workers[pid] {
				extra = append(extra, pid)
			}
		}
		if len(extra) > 0 {
			return "left in its slot: " + describePids(extra)
		}
	}
	var outside []int
	for _, pid := range marked(mark) {
		if !inDir(pid, e.host, poolDir) {
			outside = append(outside, pid)
		}
	}
	if len(outside) > 0 {
		return "outside the pool's cgroups: " + describePids(outside)
	}
	return ""
}

// inDir reports whether pid's cgroup is dir or below it.
func inDir(pid int, h *Host, dir string) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		return true // gone
	}
	for _, l := range strings.Split(string(b), "\n") {
		if p, ok := strings.CutPrefix(l, "0::"); ok {
			host := filepath.Join(h.Mount, strings.TrimPrefix(p, strings.TrimSuffix(h.MountRoot, "/")))
			return host == dir || strings.HasPrefix(host, dir+"/")
		}
	}
	return false
}

// marked lists the live processes whose environment carries the cell's
// marker (the check-matrix's host-independent probe).
func marked(mark string) []int {
	want := []byte(markerEnv + "=" + mark + "\x00")
	ents, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		env, err := os.ReadFile("/proc/" + e.Name() + "/environ")
		if err != nil || !containsEnv(env, want) {
			continue
		}
		if st, err := os.ReadFile("/proc/" + e.Name() + "/stat"); err == nil && isZombie(st) {
			continue // exited, its parent has not reaped it yet
		}
		pids = append(pids, pid)
	}
	return pids
}

func containsEnv(environ, kv []byte) bool {
	return len(environ) > 0 && (strings.HasPrefix(string(environ), string(kv)) || strings.Contains(string(environ), "\x00"+string(kv)))
}

func isZombie(stat []byte) bool {
	s := string(stat)
	i := strings.LastIndexByte(s, ')')
	return i >= 0 && i+2 < len(s) && s[i+2] == 'Z'
}

// waitNoMarked waits up to d for no process other than keep to carry the
// marker, and returns those that still do.
func waitNoMarked(mark string, keep map[int]bool, d time.Duration) []int {
	deadline := time.Now().Add(d)
	for {
		var left []int
		for _, pid := range marked(mark) {
			if !keep[pid] {
				left = append(left, pid)
			}
		}
		if len(left) == 0 || time.Now().After(deadline) {
			return left
		}
		time.Sleep(20 * time.Millisecond) // re-reading /proc with a deadline
	}
}

// killMarked SIGKILLs what the check left (only processes carrying this
// cell's marker, through a pidfd so that a reused pid is never hit).
func killMarked(mark string) {
	for _, pid := range marked(mark) {
		if fd, err := unix.PidfdOpen(pid, 0); err == nil {
			_ = unix.PidfdSendSignal(fd, unix.SIGKILL, nil, 0)
			unix.Close(fd)
		}
	}
}

// describePids names processes: "1234 (sleep), 1240 (sh)".
func describePids(pids []int) string {
	var parts []string
	for i, pid := range pids {
		if i == 8 {
			parts = append(parts, fmt.Sprintf("and %d more", len(pids)-i))
			break
		}
		comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
		parts = append(parts, fmt.Sprintf("%d (%s)", pid, strings.TrimSpace(string(comm))))
	}
	return strings.Join(parts, ", ")
}
