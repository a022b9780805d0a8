package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/cgpool/cgpool/ipc"
	"github.com/cgpool/cgpool/oomwatch"
	"github.com/cgpool/cgpool/pool"
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
	maxOutput int64
	progress  string // auto, always, never
	bar       bool
	quiet     bool
	root      string
	logLevel  string

	argFiles     []string
	colsep       string
	quote        bool // -q: no quoting of values in shell code, no shell line
	noEmpty      bool // -r
	once         bool
	pipe         bool
	block        int64
	joblog       string
	resume       bool
	resumeFailed bool
	retries      int
	halt         string
	keepOrder    bool
	lineBuffer   bool
	group        bool
	tag          bool
	dryRun       bool
}

const runLong = `Run COMMAND for each input line, -j at a time, like xargs -P or GNU parallel,
through an embedded supervisor (no daemon needed). Every command gets its own
cgroup: --timeout kills the command and everything it started (a detached
daemon included), --memory-max sets memory.max (an OOM kill is reported as
such), and nothing a command starts outlives it.

The cgroup comes from where cgpool runs: a delegated systemd unit; else, on a
systemd host, a transient scope with Delegate=yes from your own (or, as root,
the system's) service manager over D-Bus; else, as root, a new group at the
top of the cgroup v2 tree. Where none can be had (a read-only /sys/fs/cgroup
in a container), it runs in reduced mode and says so in one line on stderr:
process groups instead of cgroups, so a process that leaves its process group
is not killed, no limit is enforced (--memory-max and --pids-max are refused),
and an OOM kill is reported as killed, not oom.

Input: lines of standard input, of -a FILE (repeatable), or the values after
::: (and the lines of the files after ::::) at the end of the command line.
Several sources give every combination. Commands start as lines arrive.
Blank lines run COMMAND with an empty value, as in GNU parallel; -r skips
lines that are empty or only blanks, as xargs does.

Replacement strings, as in GNU parallel: {} the input line; {.} without its
extension; {/} its basename; {//} its directory; {/.} basename without
extension; {#} the job's number; {%} its slot (1..-j); {N} {N.} {N/} {N//}
{N/.} the N'th column (--colsep) or source. A COMMAND without any gets the
input appended as its last argument(s) (seq 3 | cgpool run echo runs "echo 1",
"echo 2", "echo 3").

To run a command once, with no input: cgpool run --once [flags] -- COMMAND.

Quoting: COMMAND runs as an argument list, without a shell, so a value in an
argument of its own reaches the program intact, whatever it holds. Shell code
gets the values shell-quoted, as GNU parallel quotes them, so an input line
such as $(rm -rf ~) is data, never code: a COMMAND that is one argument with
spaces or shell syntax ('echo {}; sleep 1') runs as a /bin/sh -c line; the
script of sh/bash/dash/zsh/ksh -c is quoted the same way. Do not put quotes
around {} yourself. -q (--quote) runs the arguments as they are, with the
values pasted unquoted (GNU parallel's -q).

Output is never cut and never mixed within a line: by default each command's
whole output (standard output, then standard error) once it has ended
(--group); --line-buffer prints whole lines as they come; -k prints in input
order. What waits to be printed spills from memory to an unlinked file in
$TMPDIR. --max-output bounds what one command may write: a command that
writes more is killed and reported ("output limit"). --pipe gives each command
a block of standard input (--block, default 1M, cut at a newline) on its
standard input; otherwise commands read /dev/null.

--joblog FILE writes GNU parallel's joblog (Seq, Host, Starttime, JobRuntime,
Send, Receive, Exitval, Signal), then cgpool's Reason, the usage columns
CPUUser, CPUSystem (µs), MemoryPeak, PidsPeak, IORead, IOWrite (bytes, from
the command's cgroup; "-" for a figure this kernel does not measure, "<=N" for
a slot's high-water mark), and Command last. --resume skips the jobs in the joblog;
--resume-failed skips only those that succeeded. A run that is interrupted
does not log the commands it killed, so --resume runs exactly those and the
ones that never started.

Ctrl-C (SIGINT), SIGTERM or SIGHUP: no new command starts, the running ones'
cgroups are killed, their output so far is printed, the summary and the joblog
are written, and cgpool exits 130 (143, 129). A second Ctrl-C stops at once:
the output still waiting is dropped, and everything is killed and removed.

A run of several commands ends with a summary line on stderr; one that ended
by itself also names the slowest command (wall time) and the hungriest
(memory peak, or CPU time where memory is not measured), from each command's
cgroup.

Exit status: with --once, the command's own status, or 124 timed out,
125 OOM-killed, 126 not executable (or could not start), 127 not found,
122 killed for writing more than --max-output,
128+N killed by signal N, 120 refused (e.g. a limit this host cannot enforce).
Otherwise as GNU parallel: 0 if every command succeeded, else the number of
failed commands (101: more than 100); with --halt ...,fail=1 the failed
command's status; with --halt ...% the failed share in percent. Commands that
never started are not failures. 130/143/129 when interrupted, 2 for bad usage,
1 if cgpool itself failed.`

const runExample = `  seq 100 | cgpool run -j4 --timeout 10s -- sh -c 'echo {}; sleep 1'
  cgpool run -j8 --joblog jobs.log gzip -9 ::: *.log
  cgpool run --resume --joblog jobs.log gzip -9 ::: *.log     # the rest, after a Ctrl-C
  cgpool run --colsep , -a pairs.csv -- cp {1} {2}
  cgpool run --once --memory-max 64M --timeout 5s -- python3 train.py
  cat big.txt | cgpool run --pipe --block 10M wc -l`

func runCmd() *cobra.Command {
	var o runOptions
	var input string
	cmd := &cobra.Command{
		Use:     "run [flags] [--] COMMAND [ARG...] [::: VALUE... | :::: FILE...]",
		Short:   "Run commands in parallel, each in its own cgroup, with no daemon (like GNU parallel)",
		Long:    runLong,
		Example: runExample,
		Args:    cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if input != "" {
				o.argFiles = append(o.argFiles, input)
			}
			o.progress = map[bool]string{true: "always", false: o.progress}[o.bar]
			return runMain(cmd.Context(), o, args)
		},
	}
	fl := cmd.Flags()
	fl.SetInterspersed(false) // flags end where COMMAND starts, as in xargs and GNU parallel
	fl.IntVarP(&o.jobs, "jobs", "j", runtime.NumCPU(), "commands running at once")
	fl.DurationVar(&o.timeout, "timeout", 0, "per-command timeout, e.g. 30s (0: none)")
	fl.Var(sizeFlag{&o.memoryMax}, "memory-max", "memory.max per command, e.g. 64M (needs the memory controller)")
	fl.Int64Var(&o.pidsMax, "pids-max", 0, "pids.max per command (needs the pids controller)")
	fl.Var(sizeFlag{&o.maxOutput}, "max-output", "most output (stdout and stderr together) one command may write, e.g. 100M; more is a failure (default: no bound)")
	fl.StringArrayVarP(&o.argFiles, "arg-file", "a", nil, "read input lines from this file (- for standard input; repeatable: every combination)")
	fl.StringVar(&input, "input", "", "the same as -a")
	_ = fl.MarkHidden("input")
	fl.StringVarP(&o.colsep, "colsep", "C", "", "split each input line into columns {1} {2} ... at this regular expression (Go RE2 syntax); columns are trimmed of blanks")
	fl.BoolVarP(&o.quote, "quote", "q", false, "run the arguments as they are: no /bin/sh line, values pasted unquoted even into shell code")
	fl.BoolVarP(&o.noEmpty, "no-run-if-empty", "r", false, "skip input lines that are empty or only blanks (as xargs does)")
	fl.BoolVar(&o.once, "once", false, "run COMMAND once, as given, reading no input")
	fl.BoolVar(&o.pipe, "pipe", false, "give each command a block of standard input on its standard input (see --block)")
	fl.Var(gnuSizeFlag{&o.block}, "block", "--pipe: block size, cut after the last newline within it; as in GNU parallel, K M G are 1024-based, k m g 1000-based (default 1M)")
	fl.StringVar(&o.joblog, "joblog", "", "write a line per finished command to this file (GNU parallel's format plus cgpool's columns; +FILE appends)")
	fl.BoolVar(&o.resume, "resume", false, "skip the jobs --joblog lists (by their number): run the rest")
	fl.BoolVar(&o.resumeFailed, "resume-failed", false, "as --resume, but run the failed jobs of --joblog again")
	fl.IntVar(&o.retries, "retries", 0, "run a failing command up to this many times in all (0 or 1: once)")
	fl.StringVar(&o.halt, "halt", "never", "stop early: now,fail=N kills the running commands once N failed; soon,fail=N% starts no more once N% of all failed (also success=, done=)")
	fl.BoolVarP(&o.keepOrder, "keep-order", "k", false, "print the commands' output in input order")
	fl.BoolVar(&o.lineBuffer, "line-buffer", false, "print output as whole lines as they come, instead of whole outputs at the end")
	fl.BoolVar(&o.lineBuffer, "lb", false, "the same as --line-buffer")
	_ = fl.MarkHidden("lb")
	fl.BoolVar(&o.group, "group", false, "print each command's whole output once it ends (the default)")
	fl.BoolVar(&o.tag, "tag", false, "start every output line with the command's input and a TAB")
	fl.BoolVar(&o.dryRun, "dry-run", false, "print the commands that would run, one a line, and run nothing")
	fl.StringVar(&o.progress, "progress", "auto", "progress bar on stderr: auto (on a terminal, for many commands), always or never")
	fl.BoolVar(&o.bar, "bar", false, "show the progress bar (the same as --progress always)")
	fl.BoolVar(&o.quiet, "quiet", false, "do not print the commands' output")
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

// gnuSizeFlag parses a size the way GNU parallel does (its UNIT PREFIX):
// K, M, G, T multiply by powers of 1024, k, m, g, t by powers of 1000.
type gnuSizeFlag struct{ p *int64 }

func (s gnuSizeFlag) String() string { return sizeFlag(s).String() }
func (s gnuSizeFlag) Type() string   { return "size" }
func (s gnuSizeFlag) Set(v string) error {
	t := strings.TrimSpace(v)
	mult := int64(1)
	if t != "" {
		if i := strings.IndexByte("kmgtKMGT", t[len(t)-1]); i >= 0 {
			mult = []int64{1e3, 1e6, 1e9, 1e12, 1 << 10, 1 << 20, 1 << 30, 1 << 40}[i]
			t = t[:len(t)-1]
		}
	}
	n, err := strconv.ParseInt(t, 10, 64)
	if err != nil || n <= 0 {
		return fmt.Errorf("size %q: want a byte count such as 1048576, 1M (1024-based) or 1m (1000-based)", v)
	}
	*s.p = n * mult
	return nil
}

// runPlan is what a run was asked to do, checked before anything starts.
type runPlan struct {
	o       runOptions
	cmd     *command
	srcs    []srcSpec
	in      inputOptions
	halt    haltSpec
	skip    map[int]bool // --resume: seqs already done
	stdin   io.Reader
	readers []*lineReader // the sources, open
}

// plan checks the whole command line: every usage error is found before
// a cgroup is made or a command runs.
func plan(o runOptions, args []string, stdin io.Reader) (*runPlan, error) {
	p := &runPlan{o: o, stdin: stdin}
	cmdArgs, lists, err := splitArgs(args)
	if err != nil {
		return nil, usageErr(err)
	}
	if len(cmdArgs) == 0 {
		return nil, usageErr(errors.New("no COMMAND before :::"))
	}
	switch {
	case o.jobs < 1:
		return nil, usageErr(fmt.Errorf("-j %d: must be at least 1", o.jobs))
	case o.retries < 0:
		return nil, usageErr(fmt.Errorf("--retries %d: must not be negative", o.retries))
	case o.timeout < 0:
		return nil, usageErr(fmt.Errorf("--timeout %v: must not be negative", o.timeout))
	case o.progress != "auto" && o.progress != "always" && o.progress != "never":
		return nil, usageErr(fmt.Errorf("--progress %q: want auto, always or never", o.progress))
	case (o.resume || o.resumeFailed) && o.joblog == "":
		return nil, usageErr(errors.New("--resume and --resume-failed read the --joblog FILE: give it"))
	case o.lineBuffer && o.group:
		return nil, usageErr(errors.New("--line-buffer and --group ask for opposite things: give one"))
	case o.once && (len(lists) > 0 || len(o.argFiles) > 0 || o.pipe):
		return nil, usageErr(errors.New("--once reads no input: it does not go with -a, :::, :::: or --pipe"))
	case o.pipe && (len(lists) > 0 || len(o.argFiles) > 0):
		return nil, usageErr(errors.New("--pipe gives standard input to the commands: it does not go with -a, ::: or ::::"))
	case o.block != 0 && !o.pipe:
		return nil, usageErr(errors.New("--block sizes the blocks of --pipe"))
	}
	if p.halt, err = parseHalt(o.halt); err != nil {
		return nil, usageErr(err)
	}
	if o.colsep != "" {
		if p.in.colsep, err = regexp.Compile(o.colsep); err != nil {
			return nil, usageErr(fmt.Errorf("--colsep %q: %w", o.colsep, err))
		}
	}
	p.in.skipEmpty = o.noEmpty
	p.cmd = newCommand(cmdArgs, o.quote)
	if o.once && p.cmd.repl {
		return nil, usageErr(errors.New("--once runs COMMAND as given, but it holds a replacement string such as {}: there is no input to put there"))
	}
	for _, f := range o.argFiles {
		p.srcs = append(p.srcs, srcSpec{file: f})
	}
	p.srcs = append(p.srcs, lists...)
	if len(p.srcs) == 0 && !o.once && !o.pipe {
		p.srcs = []srcSpec{{file: "-"}}
	}
	if o.pipe && o.block == 0 {
		p.o.block = 1 << 20
	}
	p.skip = map[int]bool{}
	if o.resume || o.resumeFailed {
		if p.skip, err = readJoblog(o.joblog, o.resumeFailed); err != nil {
			return nil, usageErr(err)
		}
	}
	if p.readers, err = openSources(p.srcs, stdin); err != nil {
		return nil, err
	}
	return p, nil
}

func runMain(ctx context.Context, o runOptions, args []string) error {
	p, err := plan(o, args, os.Stdin)
	if err != nil {
		return err
	}
	if f, ok := p.stdin.(*os.File); ok && len(p.srcs) == 1 && p.srcs[0].file == "-" && term.IsTerminal(int(f.Fd())) {
		fmt.Fprintln(os.Stderr, "cgpool: reading input lines from the terminal (Ctrl-D ends them); to run COMMAND once, use --once")
	}
	if o.dryRun {
		return dryRun(ctx, p, os.Stdout)
	}
	return execute(ctx, p)
}

// inputs starts reading the input and returns the channel of jobs'
// inputs; it is closed at the end of the input, and *readErr then says
// whether reading failed.
func (p *runPlan) inputs(ctx context.Context) (<-chan input, *error) {
	ahead := readAhead
	if p.o.pipe {
		ahead = 1 // blocks are large: read one ahead, no more
	}
	ch := make(chan input, ahead)
	var readErr error
	switch {
	case p.o.once:
		ch <- input{}
		close(ch)
	case p.o.pipe:
		go func() {
			readErr = produceBlocks(ctx, p.stdin, p.o.block, ch)
			close(ch) // after readErr is set: the reader sees it once ch is closed
		}()
	default:
		go func() {
			readErr = produce(ctx, p.readers, p.in, ch)
			close(ch) // after readErr is set: the reader sees it once ch is closed
		}()
	}
	return ch, &readErr
}

// readAhead is how many inputs are read before their commands start: a
// run that is interrupted can say how many of them never started.
const readAhead = 4096

// input is what one job gets from the input.
type input struct {
	args []string
	data []byte // --pipe
}

// dryRun prints every command that would run.
func dryRun(ctx context.Context, p *runPlan, w io.Writer) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ch, readErr := p.inputs(ctx)
	seq := 0
	for in := range ch {
		seq++
		if p.skip[seq] {
			continue
		}
		j := &job{seq: seq, args: in.args, slot: (seq-1)%p.o.jobs + 1}
		_, line := p.cmd.expand(j)
		if _, err := fmt.Fprintln(w, line); err != nil {
			return err
		}
	}
	return *readErr
}

// ending is how one command ended, for the summary, the joblog and the
// exit status.
type ending struct {
	ok           bool
	reason       string // the joblog's Reason: ok, exit, timeout, oom, ...
	group        string // the summary's: "exit 7", "timeout", "not found", ...
	exit, signal int    // the joblog's Exitval and Signal
	code         int    // cgpool's exit status for it
	msg          string // what the failure line says
}

func signalName(n int) string {
	if name := unix.SignalName(unix.Signal(n)); name != "" {
		return name
	}
	return fmt.Sprintf("signal %d", n)
}

// endingOf classifies an outcome (or a refusal).
func endingOf(o *pool.Outcome, refused error) ending {
	if refused != nil {
		return ending{reason: "refused", group: "refused", exit: -1, code: exitFor("refused", 0), msg: "refused: " + refused.Error()}
	}
	switch o.Kind {
	case pool.Result:
		if o.ExitCode == 0 {
			return ending{ok: true, reason: "ok"}
		}
		return ending{reason: "exit", group: fmt.Sprintf("exit %d", o.ExitCode), exit: o.ExitCode, code: o.ExitCode,
			msg: fmt.Sprintf("exited with status %d", o.ExitCode)}
	case pool.TimedOut:
		msg := fmt.Sprintf("timed out after %v; its cgroup (pid %d and everything it started) was killed", o.Timeout, o.Pid)
		if o.Leaf == "" { // reduced mode: no cgroup, a process group
			msg = fmt.Sprintf("timed out after %v; its process group (pid %d and what it started there) was killed", o.Timeout, o.Pid)
		}
		return ending{reason: "timeout", group: "timeout", exit: -1, signal: 9, code: exitFor("timeout", 0), msg: msg}
	case pool.ProcessError:
		switch o.Reason {
		case oomwatch.OOM:
			return ending{reason: "oom", group: "oom", exit: -1, signal: 9, code: exitFor(ipc.ProcessOOM, 0), msg: o.Message}
		case oomwatch.Killed:
			return ending{reason: "killed", group: "killed by " + signalName(o.Signal), exit: -1, signal: o.Signal, code: exitFor(ipc.ProcessKilled, o.Signal),
				msg: fmt.Sprintf("killed by %s (not sent by cgpool)", signalName(o.Signal))}
		case pool.OutputLimit:
			return ending{reason: "output_limit", group: "output limit", exit: -1, signal: 9, code: exitFor(ipc.ProcessOutputLimit, 0), msg: o.Message}
		case pool.NotFound:
			return ending{reason: "not_found", group: "not found", exit: 127, code: exitFor(ipc.ProcessNotFound, 0), msg: "command not found"}
		case pool.NotExecutable:
			msg := "cannot be executed"
			if i := strings.Index(o.Message, ": cannot be executed"); i >= 0 {
				msg = o.Message[i+2:]
			}
			return ending{reason: "not_executable", group: "not executable", exit: 126, code: exitFor(ipc.ProcessNotExecutable, 0), msg: msg}
		}
		return ending{reason: "crashed", group: "could not start", exit: -1, code: exitFor(ipc.ProcessCrashed, 0), msg: o.Message}
	case pool.Cancelled:
		return ending{reason: "cancelled", group: "cancelled", exit: -1, signal: 9, code: exitFor("cancelled", 0), msg: o.Message}
	}
	return ending{reason: string(o.Kind), group: string(o.Kind), exit: -1, code: exitFor(string(o.Kind), 0), msg: o.String()}
}

// exitCode maps an outcome to cgpool's documented exit statuses (submit
// and cgpool run --once).
func exitCode(o *pool.Outcome) int { return endingOf(o, nil).code }

// reducedRefusals refuses, in reduced mode, the limits it cannot enforce:
// a limit that is silently not applied is worse than none asked for.
func reducedRefusals(cfg pool.Config) error {
	var asked []string
	if cfg.MemoryMax > 0 {
		asked = append(asked, "--memory-max")
	}
	if cfg.PidsMax > 0 {
		asked = append(asked, "--pids-max")
	}
	if len(asked) == 0 {
		return nil
	}
	return usageErr(fmt.Errorf("%s: refused in reduced mode (no writable cgroup v2 here), which cannot enforce a limit; drop the limit to run unconfined, or run where a delegated cgroup v2 exists", strings.Join(asked, ", ")))
}
