package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/cgpool/cgpool/cgroup"
	"github.com/cgpool/cgpool/pool"
	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"
)

// embedded is a supervisor of our own with one exec pool, for run and
// demo.
type embedded struct {
	root *cgroup.Root
	sup  *pool.Supervisor
	pool *pool.Pool
	log  *slog.Logger
	once sync.Once
}

// openEmbedded takes a cgroup root and starts an exec pool of n slots.
// A limit this host's cgroup v2 cannot enforce is a refusal (exit 120),
// as it is for a task sent to a daemon.
func openEmbedded(ctx context.Context, root, logLevel string, cfg pool.Config) (*embedded, error) {
	log, err := newLogger(logLevel)
	if err != nil {
		return nil, usageErr(err)
	}
	r, err := openRootOrReduced(ctx, root, true, "", log)
	if err != nil {
		return nil, err
	}
	if r.Reduced() {
		if err := reducedRefusals(cfg); err != nil {
			_ = r.Release(context.Background())
			return nil, err
		}
	}
	// Our commands die with us however we die (see reaper_linux.go).
	if ownReaper, err = startReaper(reaperSpec{root: r.Path(), removeRoot: r.Created()}, log); err != nil {
		_ = r.Release(context.Background())
		return nil, err
	}
	sup, err := pool.NewSupervisor(r, []pool.Config{cfg}, log)
	if err != nil {
		_ = r.Release(context.Background())
		if errors.Is(err, cgroup.ErrControllerUnavailable) {
			return nil, refusedErr{err}
		}
		return nil, err
	}
	p, _ := sup.Pool(cfg.Name)
	return &embedded{root: r, sup: sup, pool: p, log: log}, nil
}

// refusedErr is a run the pool refused as asked: it exits 120.
type refusedErr struct{ err error }

func (e refusedErr) Error() string { return e.err.Error() }
func (e refusedErr) Unwrap() error { return e.err }

// close kills whatever still runs, waits for the slots to empty and
// removes every cgroup of ours. It is idempotent and safe to call from
// two goroutines (the second waits for the first).
func (e *embedded) close() {
	e.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_ = e.sup.Shutdown(ctx, pool.ShutdownOptions{Wait: true, CancelFutures: true, Deadline: time.Nanosecond})
		if err := e.root.Release(ctx); err != nil {
			e.log.Error("release cgroup root", "root", e.root.Path(), "err", err)
		}
	})
}

// kill ends everything at once for a second interrupt: the running
// commands' cgroups are killed and every cgroup of ours is removed,
// without waiting for the pool's goroutines (one may be stuck writing
// output nobody reads); the process exits right after.
func (e *embedded) kill() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_ = e.sup.Shutdown(ctx, pool.ShutdownOptions{Wait: false, CancelFutures: true})
	if err := e.root.Release(ctx); err != nil {
		e.log.Error("release cgroup root", "root", e.root.Path(), "err", err)
	}
}

// runJob is one job of a run on its way.
type runJob struct {
	*job
	attempt int
	task    *pool.Task
	start   time.Time
	out     *jobOut
	stopped bool // cgpool killed it (interrupt, --halt now), or cancelled it before it started
	// notStarted: cancelled in the pool's queue (queued ahead), never run
	notStarted bool
}

// runEvent is a pool event about a job, or the end of the input.
type runEvent struct {
	j   *runJob
	at  time.Time
	e   pool.Event
	err error // refused at submission
}

// runner carries out a plan. Its loop owns every field but those under
// mu, which a second interrupt reads from its own goroutine.
type runner struct {
	p    *runPlan
	em   *embedded
	out  *output
	jl   *joblog
	bar  *progressbar.ProgressBar
	evc  chan runEvent
	free []int // free slots ({%}), lowest first; unused when ahead > 0
	// ahead is how many commands wait in the pool's queue beyond the
	// slots, so that a slot whose command ended starts the next at once,
	// not after this loop has seen the end and sent another (alone, 3 to
	// 10% less wall time for 2,000 true at -j2, in noisy runs). Then the
	// pool tells each command its slot (PARALLEL_JOBSLOT, ExecIO.SlotEnv).
	// 0 when COMMAND holds {%}, which must be known when the command is
	// expanded, and with --halt: a slot would start a queued command
	// before this loop saw the end that reached the halt, and after a halt
	// nothing starts.
	ahead   int
	workers int

	running map[*runJob]bool
	seq     int // inputs taken so far
	last    int // the exit status of the last failed command (--halt fail=1)

	mu        sync.Mutex
	succeeded int
	failed    int
	byGroup   map[string]int
	killed    int    // killed by cgpool
	skipped   int    // --resume
	notRun    int    // read, never started
	partial   bool   // the input was not read to its end
	stopped   string // why no new command starts: "", "interrupt", "halt", "output"
	signal    os.Signal
	haltCode  int
	usage     usageTop // the slowest and hungriest commands so far
	err       error    // reading the input or writing the output failed
}

func execute(ctx context.Context, p *runPlan) error {
	o := p.o
	workers := o.jobs
	if o.once {
		workers = 1
	}
	cfg := pool.Config{Name: "run", Kind: pool.KindExec, MaxWorkers: workers, MinWorkers: &workers,
		MemoryMax: o.memoryMax, PidsMax: o.pidsMax, MaxBacklog: -1, DefaultTimeout: o.timeout}
	em, err := openEmbedded(ctx, o.root, o.logLevel, cfg)
	if err != nil {
		return err
	}
	defer em.close()

	ahead := workers
	if p.cmd.slot || o.once || !p.halt.never {
		ahead = 0
	}
	r := &runner{p: p, em: em, evc: make(chan runEvent, 2*(workers+ahead)+8), running: map[*runJob]bool{}, byGroup: map[string]int{},
		ahead: ahead, workers: workers}
	if ahead == 0 {
		for i := 1; i <= workers; i++ {
			r.free = append(r.free, i)
		}
	}
	if o.progress == "always" || (o.progress == "auto" && !o.once && term.IsTerminal(int(os.Stderr.Fd()))) {
		r.bar = progressbar.NewOptions(-1, progressbar.OptionSetWriter(os.Stderr), progressbar.OptionSetDescription("cgpool run"),
			progressbar.OptionShowCount(), progressbar.OptionShowElapsedTimeOnFinish(), progressbar.OptionClearOnFinish())
	}
	before := func() {
		if r.bar != nil {
			_ = r.bar.Clear()
		}
	}
	r.out = newOutput(os.Stdout, os.Stderr, o.lineBuffer, o.keepOrder, o.quiet, before)
	if o.joblog != "" {
		if r.jl, err = openJoblog(o.joblog, o.resume || o.resumeFailed); err != nil {
			return err
		}
		defer r.jl.close()
	}

	sigc := make(chan os.Signal, 4)
	signal.Notify(sigc, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGPIPE)
	defer signal.Stop(sigc)
	interrupt := make(chan os.Signal, 1)
	sigDone := make(chan struct{})
	defer close(sigDone)
	go r.signals(sigc, interrupt, sigDone)

	err = r.loop(ctx, interrupt)
	r.out.close()
	if r.bar != nil {
		_ = r.bar.Finish()
	}
	em.close()
	r.summary(os.Stderr)
	if err != nil {
		return err
	}
	return r.exitStatus()
}

// signals delivers the first interrupt to the loop; a second one stops
// at once: the output still waiting is dropped, everything is killed and
// removed, and cgpool exits.
func (r *runner) signals(sigc <-chan os.Signal, first chan<- os.Signal, done <-chan struct{}) {
	n := 0
	for {
		select {
		case <-done:
			return
		case s := <-sigc:
			if s == syscall.SIGPIPE {
				continue // a write to a closed stdout fails with EPIPE instead; see loop
			}
			n++
			if n == 1 {
				first <- s
				continue
			}
			r.out.drop()
			fmt.Fprintf(os.Stderr, "cgpool: %s again: killing everything now\n", sigName(s))
			r.em.kill()
			r.mu.Lock()
			if r.stopped == "" {
				r.stopped, r.signal = "interrupt", s
			}
			r.mu.Unlock()
			r.summary(os.Stderr)
			if r.jl != nil {
				r.jl.close()
			}
			os.Exit(signalExit(s))
		}
	}
}

func sigName(s os.Signal) string {
	if n, ok := s.(syscall.Signal); ok {
		return signalName(int(n))
	}
	return s.String()
}

func signalExit(s os.Signal) int {
	if n, ok := s.(syscall.Signal); ok {
		return exitSignal + int(n)
	}
	return exitSignal + int(syscall.SIGINT)
}

// loop starts commands as inputs come and slots are free, and handles
// their ends, until every command ended or a stop left none running.
func (r *runner) loop(ctx context.Context, interrupt <-chan os.Signal) error {
	p := r.p
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	inputs, readErr := p.inputs(ctx)
	var pending []input // read ahead before any starts (--halt N%)
	total := -1         // inputs in all, once known
	if p.halt.pct > 0 {
		for in := range inputs {
			pending = append(pending, in)
		}
		if *readErr != nil {
			return *readErr
		}
		total, inputs = len(pending), nil
	}
	for {
		r.mu.Lock()
		stopped := r.stopped != ""
		r.mu.Unlock()
		var next <-chan input
		room := r.room()
		if !stopped && room && inputs != nil {
			next = inputs
		}
		if !stopped && room && len(pending) > 0 {
			r.take(pending[0], total)
			pending = pending[1:]
			continue
		}
		if next == nil && len(r.running) == 0 && (stopped || (inputs == nil && len(pending) == 0)) {
			break
		}
		select {
		case in, ok := <-next:
			if !ok {
				inputs = nil
				total = r.seq
				if r.bar != nil {
					r.bar.ChangeMax(max(total-r.skipped, 1))
				}
				if err := *readErr; err != nil {
					fmt.Fprintf(os.Stderr, "cgpool: %v; starting no more commands\n", err)
					r.stop("input", nil)
					r.err = err
				}
				continue
			}
			r.take(in, total)
		case ev := <-r.evc:
			r.handle(ev, total)
		case s := <-interrupt:
			fmt.Fprintf(os.Stderr, "cgpool: %s: starting no more commands; killing the %s running\n", sigName(s), plural(r.started(), "command"))
			r.stop("interrupt", s)
		}
		if err := r.out.failed(); err != nil && !r.isStopped() {
			if errors.Is(err, syscall.EPIPE) {
				// Its reader is gone (cgpool run ... | head): stop as
				// quietly as a program killed by SIGPIPE.
				r.stop("output", syscall.SIGPIPE)
			} else {
				fmt.Fprintf(os.Stderr, "cgpool: writing the commands' output: %v; stopping\n", err)
				r.stop("output", nil)
				r.err = err
			}
		}
	}
	// What was read but never started.
	r.mu.Lock()
	r.notRun += len(pending)
	r.mu.Unlock()
	if inputs != nil {
		n, partial := countRest(inputs)
		r.mu.Lock()
		r.notRun += n
		r.partial = partial
		r.mu.Unlock()
	}
	return r.err
}

// countRest counts the inputs read but not taken. The reader may still be
// on its way to the end of a short input: it gets a moment; partial says
// it did not get there (a long or endless input).
func countRest(inputs <-chan input) (n int, partial bool) {
	t := time.NewTimer(50 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case _, ok := <-inputs:
			if !ok {
				return n, false
			}
			n++
		case <-t.C:
			return n, true
		}
	}
}

func (r *runner) isStopped() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.stopped != ""
}

// take starts the command for the next input, or skips it (--resume).
func (r *runner) take(in input, total int) {
	r.seq++
	seq := r.seq
	if r.p.skip[seq] {
		r.mu.Lock()
		r.skipped++
		r.mu.Unlock()
		r.out.skip(seq)
		return
	}
	j := &runJob{job: &job{seq: seq, args: in.args, in: in.data}}
	if r.ahead == 0 {
		j.slot, r.free = r.free[0], r.free[1:]
	}
	j.argv, j.line = r.p.cmd.expand(j.job)
	tag := ""
	if r.p.o.tag {
		tag = strings.Join(in.args, " ")
	}
	j.out = r.out.open(seq, tag)
	r.running[j] = true
	r.submit(j)
}

// submit sends the job's command to the pool; its events come back on
// r.evc (which has room for every event of every running job, so the
// pool never waits on it).
func (r *runner) submit(j *runJob) {
	out := j.out
	spec := pool.Spec{Argv: j.argv, Env: map[string]string{"PARALLEL_SEQ": strconv.Itoa(j.seq)},
		IO: &pool.ExecIO{MaxOutput: r.p.o.maxOutput,
			Output: func(s pool.Stream, p []byte, _ <-chan struct{}) error {
				out.write(int(s)-1, p)
				return nil
			}}}
	if r.ahead == 0 {
		spec.Env["PARALLEL_JOBSLOT"] = strconv.Itoa(j.slot)
	} else {
		spec.IO.SlotEnv = "PARALLEL_JOBSLOT"
	}
	if r.p.o.pipe {
		spec.IO.Stdin = j.in
		if spec.IO.Stdin == nil {
			spec.IO.Stdin = []byte{}
		}
	}
	t, err := r.em.pool.Submit(context.Background(), spec, func(e pool.Event) {
		r.evc <- runEvent{j: j, at: time.Now(), e: e}
	})
	if err != nil {
		r.evc <- runEvent{j: j, at: time.Now(), err: err}
		return
	}
	j.task = t
}

// stop starts no more commands; an interrupt or --halt now also kills the
// running ones (they end as cancelled, and are not logged).
func (r *runner) stop(why string, s os.Signal) {
	r.mu.Lock()
	if r.stopped == "" {
		r.stopped, r.signal = why, s
	}
	r.mu.Unlock()
	if why == "halt" && !r.p.halt.now {
		return // the running ones finish; nothing is queued ahead with --halt
	}
	for j := range r.running {
		j.stopped = true
		if j.task != nil {
			if _, state := r.em.pool.Cancel(j.task.ID(), true); state == "queued" {
				j.notStarted = true // queued ahead: it never ran
			}
		}
	}
}

// room reports whether another command may be taken now.
func (r *runner) room() bool {
	if r.ahead == 0 {
		return len(r.free) > 0
	}
	return len(r.running) < r.workers+r.ahead
}

// started counts the commands that run (not the ones queued ahead).
func (r *runner) started() int {
	n := 0
	for j := range r.running {
		if !j.start.IsZero() {
			n++
		}
	}
	return n
}

// handle takes one event about a job.
func (r *runner) handle(ev runEvent, total int) {
	j := ev.j
	if ev.err == nil && ev.e.Outcome == nil {
		if ev.e.Running {
			j.start = ev.at
		}
		return
	}
	end := endingOf(ev.e.Outcome, ev.err)
	if j.start.IsZero() {
		j.start = ev.at
	}
	if j.stopped && !end.ok {
		// Killed by cgpool: not an ending of its own, and not logged, so
		// that --resume runs it again.
		j.out.finish()
		r.done(j)
		r.mu.Lock()
		if j.notStarted {
			r.notRun++
		} else {
			r.killed++
		}
		r.mu.Unlock()
		return
	}
	if !end.ok && j.attempt+1 < r.p.o.retries && !r.isStopped() {
		j.attempt++
		j.out.reset()
		r.submit(j)
		return
	}
	j.out.finish()
	if !end.ok {
		r.failLine(j, end)
	}
	var fig *figures
	if ev.e.Outcome != nil {
		fig = poolFigures(ev.e.Outcome.Usage)
	}
	r.mu.Lock()
	r.usage.add(usageRow{j.seq, j.line, fig})
	r.mu.Unlock()
	if r.jl != nil {
		e := joblogEntry{seq: j.seq, start: j.start, runtime: ev.at.Sub(j.start), send: int64(len(j.in)), receive: j.out.bytes,
			exit: end.exit, signal: end.signal, reason: end.reason, usage: fig.joblogColumns(), command: j.line}
		if err := r.jl.add(e); err != nil && r.err == nil {
			fmt.Fprintf(os.Stderr, "cgpool: writing the joblog %s: %v; starting no more commands\n", r.p.o.joblog, err)
			r.err = err
			r.stop("output", nil)
		}
	}
	r.done(j)
	r.mu.Lock()
	if end.ok {
		r.succeeded++
	} else {
		r.failed++
		r.byGroup[end.group]++
		r.last = end.code
	}
	failed, succeeded := r.failed, r.succeeded
	halting := r.stopped == "" && r.p.halt.reached(failed, succeeded, total)
	if halting {
		r.haltCode = r.p.halt.exitStatus(failed, total, r.last)
	}
	r.mu.Unlock()
	if halting {
		h := r.p.halt
		what := map[string]string{"fail": "failed", "success": "succeeded", "done": "ended"}[h.why]
		n := map[string]int{"fail": failed, "success": succeeded, "done": failed + succeeded}[h.why]
		if h.now {
			fmt.Fprintf(os.Stderr, "cgpool: --halt %s: %s %s; killing the %s still running\n", h.text, plural(n, "command"), what, plural(r.started(), "command"))
		} else {
			fmt.Fprintf(os.Stderr, "cgpool: --halt %s: %s %s; starting no more, waiting for the %s running\n", h.text, plural(n, "command"), what, plural(r.started(), "command"))
		}
		r.stop("halt", nil)
	}
}

// done frees a finished job's slot.
func (r *runner) done(j *runJob) {
	delete(r.running, j)
	if r.ahead == 0 {
		r.free = append(r.free, j.slot)
		slices.Sort(r.free)
	}
	if r.bar != nil {
		_ = r.bar.Add(1)
	}
}

// failLine says, once its output is out, how a command failed.
func (r *runner) failLine(j *runJob, end ending) {
	if end.reason == "output_limit" {
		// Loud: output is missing, and it is not the command's doing.
		fmt.Fprintf(os.Stderr, "cgpool: [%d] OUTPUT CUT: it wrote more than --max-output (%s), so it was killed and the rest of its output is lost: %s\n", j.seq, byteCount(r.p.o.maxOutput), j.line)
		return
	}
	if r.p.o.once {
		fmt.Fprintf(os.Stderr, "cgpool: %s: %s\n", j.line, end.msg)
		return
	}
	fmt.Fprintf(os.Stderr, "cgpool: [%d] %s: %s\n", j.seq, end.msg, j.line)
}

// plural is "1 command", "2 commands".
func plural(n int, what string) string {
	if n == 1 {
		return "1 " + what
	}
	return strconv.Itoa(n) + " " + what + "s"
}

// summary prints one line: how many commands ran and how they ended, and
// how many never started. A single command that succeeded gets none.
func (r *runner) summary(w io.Writer) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.signal == syscall.SIGPIPE {
		return
	}
	ran := r.succeeded + r.failed + r.killed
	if r.stopped == "" && r.failed == 0 && r.skipped == 0 && (r.p.o.once || ran <= 1) {
		return // one command that succeeded: nothing to sum up
	}
	if r.p.o.once && r.stopped == "" {
		return // its failure line said it all
	}
	var parts []string
	if r.succeeded > 0 || r.failed == 0 {
		parts = append(parts, fmt.Sprintf("%d succeeded", r.succeeded))
	}
	if r.failed > 0 {
		var why []string
		for _, k := range slices.Sorted(maps.Keys(r.byGroup)) {
			why = append(why, fmt.Sprintf("%s: %d", k, r.byGroup[k]))
		}
		parts = append(parts, fmt.Sprintf("%d failed (%s)", r.failed, strings.Join(why, ", ")))
	}
	if r.killed > 0 {
		by := map[string]string{"interrupt": "the interrupt", "halt": "--halt", "output": "cgpool (its output was closed)", "input": "cgpool"}[r.stopped]
		parts = append(parts, fmt.Sprintf("%d killed by %s", r.killed, by))
	}
	if r.skipped > 0 {
		parts = append(parts, fmt.Sprintf("%d skipped (done in the joblog)", r.skipped))
	}
	if r.notRun > 0 || r.partial {
		s := fmt.Sprintf("%d not started", r.notRun)
		if r.partial {
			s = fmt.Sprintf("%d read and not started (the rest of the input was not read)", r.notRun)
		}
		parts = append(parts, s)
	}
	total := ran + r.skipped + r.notRun
	line := fmt.Sprintf("cgpool: %s: %s", plural(total, "command"), strings.Join(parts, ", "))
	if r.stopped == "interrupt" && r.p.o.joblog != "" && (r.killed > 0 || r.notRun > 0 || r.partial) {
		line += fmt.Sprintf("; the joblog %s lets --resume run the rest", strings.TrimPrefix(r.p.o.joblog, "+"))
	}
	if r.stopped == "" {
		r.usage.summarize(w) // the slowest and the hungriest of a run that ended by itself
	}
	fmt.Fprintln(w, line)
}

// exitStatus is the run's exit status (see runLong).
func (r *runner) exitStatus() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	code := 0
	switch {
	case r.signal != nil:
		code = signalExit(r.signal)
	case r.stopped == "halt":
		code = r.haltCode
	case r.p.o.once:
		code = r.last
	case r.failed > 0:
		code = min(r.failed, 101)
	}
	if code == 0 {
		return nil
	}
	return &exitError{code}
}

// byteCount is "1000 bytes", or "104857600 bytes (100.0M)".
func byteCount(n int64) string {
	if n < 1<<20 {
		return fmt.Sprintf("%d bytes", n)
	}
	return fmt.Sprintf("%d bytes (%s)", n, human(n))
}
