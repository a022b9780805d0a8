package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"os/signal"
	"runtime"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/cgpool/cgpool/oomwatch"
	"github.com/cgpool/cgpool/pool"
	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"
	"golang.org/x/term"
)

// runOptions are the settings of an embedded run.
type runOptions struct {
	jobs      int
	timeout   time.Duration
	memoryMax int64
	pidsMax   int64
	progress  string // auto, always, never
	quiet     bool
	root      string
	logLevel  string
}

// job is one command of a run.
type job struct {
	n         int
	argv      []string
	label     string        // how the summary names it
	timeout   time.Duration // 0: the run's
	memoryMax int64         // 0: the run's
}

// jobResult is how a job ended.
type jobResult struct {
	job     job
	outcome *pool.Outcome
	err     error // refused before it ran
}

// reason is a short word for the summary: ok, exit N, timeout, oom, ...
func (r jobResult) reason() string {
	switch {
	case r.err != nil:
		return "refused"
	case r.outcome.Kind == pool.Result && r.outcome.ExitCode == 0:
		return "ok"
	case r.outcome.Kind == pool.Result:
		return fmt.Sprintf("exit %d", r.outcome.ExitCode)
	case r.outcome.Kind == pool.ProcessError && r.outcome.Reason == oomwatch.Killed:
		return "killed by " + signalName(r.outcome.Signal)
	case r.outcome.Kind == pool.ProcessError:
		return string(r.outcome.Reason)
	case r.outcome.Kind == pool.TimedOut:
		return "timeout"
	}
	return string(r.outcome.Kind)
}

func signalName(n int) string {
	if name := unix.SignalName(syscall.Signal(n)); name != "" {
		return name
	}
	return fmt.Sprintf("signal %d", n)
}

// exitCode maps an outcome to cgpool's documented exit statuses.
func exitCode(o *pool.Outcome) int {
	switch o.Kind {
	case pool.Result:
		return o.ExitCode
	case pool.TimedOut:
		return exitTimeout
	case pool.ProcessError:
		switch o.Reason {
		case oomwatch.OOM:
			return exitOOM
		case oomwatch.Killed:
			return exitSignal + o.Signal
		}
		return exitCrashed
	}
	return exitCancelled
}

func runCmd() *cobra.Command {
	var o runOptions
	var input string
	cmd := &cobra.Command{
		Use:   "run [flags] [--] COMMAND [ARG...]",
		Short: "Run commands in parallel, each in its own cgroup, with no daemon",
		Long: `Run COMMAND through an embedded supervisor (no daemon needed). If an argument
contains {}, COMMAND runs once per line of input (--input, or standard input),
with {} replaced by the line, -j at a time, like xargs -P or GNU parallel; else
it runs once. Every command gets its own cgroup slot: --timeout kills the
command and everything it started (a detached daemon included), --memory-max
sets memory.max (an OOM kill is reported as such), and nothing a command starts
outlives it.

The cgroup comes from where cgpool runs: a delegated systemd unit; else, on a
systemd host, a transient scope with Delegate=yes from your own (or, as root,
the system's) service manager over D-Bus; else, as root, a new group at the
top of the cgroup v2 tree. Where none can be had (a read-only /sys/fs/cgroup
in a container), it runs in reduced mode and says so in one line on stderr:
process groups instead of cgroups, so a process that leaves its process group
is not killed, no limit is enforced (--memory-max and --pids-max are refused),
and an OOM kill is reported as killed, not oom.

Each command's output is printed when it ends; a progress bar is shown on a
terminal; a summary of failures by reason ends the run.

Exit status: for a single command, its own status, or 124 timeout, 125 OOM,
126 crashed, 128+N killed by signal N, 120 cancelled/refused; for many, the
number of failed commands (at most 100); 1 if cgpool itself failed.`,
		Example: `  seq 100 | cgpool run -j4 --timeout 10s -- sh -c 'echo {}; sleep 1'
  cgpool run --memory-max 64M --timeout 5s -- python3 train.py
  cgpool run --input urls.txt -- curl -sO {}`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var jobs []job
			templated := slices.ContainsFunc(args, func(a string) bool { return strings.Contains(a, "{}") })
			if !templated {
				jobs = []job{{n: 1, argv: args, label: strings.Join(args, " ")}}
			} else {
				in := io.Reader(os.Stdin)
				if input != "" && input != "-" {
					f, err := os.Open(input)
					if err != nil {
						return usageErr(err)
					}
					defer f.Close()
					in = f
				}
				sc := bufio.NewScanner(in)
				sc.Buffer(make([]byte, 64*1024), 1<<20)
				for sc.Scan() {
					line := sc.Text()
					argv := make([]string, len(args))
					for i, a := range args {
						argv[i] = strings.ReplaceAll(a, "{}", line)
					}
					jobs = append(jobs, job{n: len(jobs) + 1, argv: argv, label: strings.Join(argv, " ")})
				}
				if err := sc.Err(); err != nil {
					return err
				}
			}
			results, err := runJobs(cmd.Context(), o, jobs)
			if err != nil {
				return err
			}
			failed := summarize(os.Stderr, results, len(jobs) > 1)
			if len(jobs) == 1 {
				r := results[0]
				if r.err != nil {
					return &exitError{exitCancelled}
				}
				if c := exitCode(r.outcome); c != 0 {
					return &exitError{c}
				}
				return nil
			}
			if failed > 0 {
				return &exitError{min(failed, 100)}
			}
			return nil
		},
	}
	fl := cmd.Flags()
	fl.IntVarP(&o.jobs, "jobs", "j", runtime.NumCPU(), "commands running at once")
	fl.DurationVar(&o.timeout, "timeout", 0, "per-command timeout, e.g. 30s (0: none)")
	fl.Var(sizeFlag{&o.memoryMax}, "memory-max", "memory.max per command, e.g. 64M (needs the memory controller)")
	fl.Int64Var(&o.pidsMax, "pids-max", 0, "pids.max per command (needs the pids controller)")
	fl.StringVar(&input, "input", "", "read the lines for {} from this file instead of standard input")
	fl.StringVar(&o.progress, "progress", "auto", "progress bar: auto (on a terminal), always or never")
	fl.BoolVarP(&o.quiet, "quiet", "q", false, "do not print the commands' output")
	fl.StringVar(&o.root, "root", "", "cgroup directory to manage (default: found automatically)")
	fl.StringVar(&o.logLevel, "log-level", "warn", "supervisor log level")
	return cmd
}

// sizeFlag parses sizes such as 64M.
type sizeFlag struct{ p *int64 }

func (s sizeFlag) String() string {
	if s.p == nil || *s.p == 0 {
		return ""
	}
	return fmt.Sprint(*s.p)
}
func (s sizeFlag) Set(v string) error {
	n, err := parseSize(v)
	*s.p = n
	return err
}
func (s sizeFlag) Type() string { return "size" }

// runJobs runs the jobs on an embedded exec pool and returns their
// results in job order. It prints each job's output as it ends.
func runJobs(ctx context.Context, o runOptions, jobs []job) ([]jobResult, error) {
	if o.jobs < 1 {
		return nil, usageErr(errors.New("-j must be at least 1"))
	}
	log, err := newLogger(o.logLevel)
	if err != nil {
		return nil, usageErr(err)
	}
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	defer stop()
	root, err := openRootOrReduced(ctx, o.root, true, "", log)
	if err != nil {
		return nil, err
	}
	if root.Reduced() {
		if err := reducedRefusals(o, jobs); err != nil {
			_ = root.Release(ctx)
			return nil, err
		}
	}
	defer func() {
		if err := root.Release(context.Background()); err != nil {
			log.Error("release cgroup root", "root", root.Path(), "err", err)
		}
	}()
	if ownReaper, err = startReaper(reaperSpec{root: root.Path(), removeRoot: root.Created()}, log); err != nil {
		return nil, err
	}
	workers := min(o.jobs, max(len(jobs), 1))
	cfg := pool.Config{Name: "run", Kind: pool.KindExec, MaxWorkers: workers, MinWorkers: &workers, MemoryMax: o.memoryMax,
		PidsMax: o.pidsMax, MaxBacklog: -1, DefaultTimeout: o.timeout}
	sup, err := pool.NewSupervisor(root, []pool.Config{cfg}, log)
	if err != nil {
		return nil, err
	}
	p, _ := sup.Pool("run")
	defer func() {
		_ = sup.Shutdown(context.Background(), pool.ShutdownOptions{Wait: true, CancelFutures: true})
	}()

	var bar *progressbar.ProgressBar
	if o.progress == "always" || (o.progress == "auto" && len(jobs) > 1 && term.IsTerminal(int(os.Stderr.Fd()))) {
		bar = progressbar.NewOptions(len(jobs), progressbar.OptionSetWriter(os.Stderr), progressbar.OptionSetDescription("cgpool run"),
			progressbar.OptionShowCount(), progressbar.OptionShowElapsedTimeOnFinish(), progressbar.OptionClearOnFinish())
	}
	results := make([]jobResult, len(jobs))
	var mu sync.Mutex // serializes output
	var wg sync.WaitGroup
	report := func(r jobResult) {
		mu.Lock()
		defer mu.Unlock()
		results[r.job.n-1] = r
		if bar != nil {
			_ = bar.Clear()
		}
		printResult(r, o.quiet, len(jobs) > 1)
		if bar != nil {
			_ = bar.Add(1)
		}
	}
	for _, j := range jobs {
		wg.Add(1)
		spec := pool.Spec{Argv: j.argv, Timeout: j.timeout, MemoryMax: j.memoryMax}
		_, err := p.Submit(ctx, spec, func(e pool.Event) {
			if e.Outcome != nil {
				report(jobResult{job: j, outcome: e.Outcome})
				wg.Done()
			}
		})
		if err != nil {
			report(jobResult{job: j, err: err})
			wg.Done()
			if ctx.Err() != nil {
				break
			}
		}
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		fmt.Fprintln(os.Stderr, "cgpool: interrupted; killing what runs")
		_ = sup.Shutdown(context.Background(), pool.ShutdownOptions{Wait: true, CancelFutures: true, Deadline: time.Nanosecond})
		<-done
	}
	if bar != nil {
		_ = bar.Finish()
	}
	return results, nil
}

// printResult prints a finished job's output, then a line saying how it
// ended when it did not succeed.
func printResult(r jobResult, quiet, numbered bool) {
	tag := ""
	if numbered {
		tag = fmt.Sprintf("[%d] ", r.job.n)
	}
	if r.err != nil {
		fmt.Fprintf(os.Stderr, "cgpool: %srefused: %v\n", tag, r.err)
		return
	}
	o := r.outcome
	if !quiet {
		os.Stdout.Write(o.Stdout)
		os.Stderr.Write(o.Stderr)
	}
	switch {
	case o.Kind == pool.Result && o.ExitCode == 0:
	case o.Kind == pool.Result:
		fmt.Fprintf(os.Stderr, "cgpool: %sexited with status %d: %s\n", tag, o.ExitCode, r.job.label)
	case o.Kind == pool.TimedOut && o.Leaf == "": // reduced mode: no cgroup, a process group
		fmt.Fprintf(os.Stderr, "cgpool: %stimed out after %v; its process group (pid %d and what it started there) was killed: %s\n", tag, o.Timeout, o.Pid, r.job.label)
	case o.Kind == pool.TimedOut:
		fmt.Fprintf(os.Stderr, "cgpool: %stimed out after %v; its cgroup (pid %d and everything it started) was killed: %s\n", tag, o.Timeout, o.Pid, r.job.label)
	default:
		fmt.Fprintf(os.Stderr, "cgpool: %s%s: %s\n", tag, o.Message, r.job.label)
	}
}

// summarize prints the failures by reason and returns how many failed.
func summarize(w io.Writer, results []jobResult, always bool) int {
	byReason := map[string]int{}
	failed := 0
	for _, r := range results {
		if k := r.reason(); k != "ok" {
			byReason[k]++
			failed++
		}
	}
	if !always && failed == 0 {
		return 0
	}
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(byReason)) {
		parts = append(parts, fmt.Sprintf("%s %d", k, byReason[k]))
	}
	line := fmt.Sprintf("cgpool: %d commands: %d succeeded, %d failed", len(results), len(results)-failed, failed)
	if failed > 0 {
		line += " (" + strings.Join(parts, ", ") + ")"
	}
	fmt.Fprintln(w, line)
	return failed
}

// reducedRefusals refuses, in reduced mode, the limits it cannot enforce:
// a limit that is silently not applied is worse than none asked for.
func reducedRefusals(o runOptions, jobs []job) error {
	var asked []string
	if o.memoryMax > 0 {
		asked = append(asked, "--memory-max")
	}
	if o.pidsMax > 0 {
		asked = append(asked, "--pids-max")
	}
	for _, j := range jobs {
		if j.memoryMax > 0 && o.memoryMax <= 0 {
			asked = append(asked, "a job's memory limit")
			break
		}
	}
	if len(asked) == 0 {
		return nil
	}
	return usageErr(fmt.Errorf("%s: refused in reduced mode (no writable cgroup v2 here), which cannot enforce a limit; drop the limit to run unconfined, or run where a delegated cgroup v2 exists", strings.Join(asked, ", ")))
}
