package main

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/cgpool/cgpool/client"
	"github.com/cgpool/cgpool/ipc"
	"github.com/spf13/cobra"
)

// dial connects to the daemon; the error says what to check, once.
func dial(ctx context.Context, socket string) (*client.Client, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, socket, client.WithClientName("cgpool-cli"))
	if err != nil {
		var oe *net.OpError
		if errors.As(err, &oe) && oe.Op == "dial" {
			why := oe.Err.Error()
			var se *os.SyscallError
			if errors.As(oe.Err, &se) {
				why = se.Err.Error()
			}
			return nil, fmt.Errorf("cannot connect to the cgpool daemon at %s: %s (is `cgpool serve` running, and is that its socket? see --socket)", socket, why)
		}
		return nil, fmt.Errorf("the cgpool daemon at %s: %s", socket, message(err))
	}
	return c, nil
}

// keepEnv reports whether --env-all passes a variable on: everything but
// the slot's own CGPOOL_ variables, which the daemon sets for each task
// (a caller that runs inside a cgpool task has its own slot's, and a
// nested pool in the task must find the task's).
func keepEnv(name string) bool { return !strings.HasPrefix(name, "CGPOOL_") }

func submitCmd() *cobra.Command {
	var (
		socket, poolName, memoryMax, cwd string
		maxOutput                        int64
		timeout, queueTimeout            time.Duration
		priority                         int
		env                              []string
		envAll, showUsage                bool
	)
	cmd := &cobra.Command{
		Use:   "submit [flags] -- COMMAND [ARG...]",
		Short: "Run one command through a cgpool daemon's exec pool",
		Long: `Run COMMAND in a slot of a running daemon's exec pool (its own cgroup), relay
its stdout and stderr as it writes them (never cut; --max-output bounds
them), and exit with its status.

The command runs in the current directory (--cwd another), as the daemon sees
the file system, with the daemon's environment for the pool plus what you
pass: --env NAME=VALUE, --env NAME (your value of NAME), or --env-all (your
whole environment but the CGPOOL_ variables the daemon sets per task). The
pool's rules apply to what you pass (a daemon may refuse variables or a
directory its user cannot enter): a refusal exits 120 and says why.

When the task does not end by itself, the exit status says why:

  124       timed out (its cgroup was killed)
  125       killed by the OOM killer at memory.max
  126       found but not executable (or could not be started)
  127       not found
  128+N     killed by signal N that cgpool did not send
  120       cancelled, not started within --queue-timeout, or refused
  130, 143  interrupted by Ctrl-C (SIGINT) or SIGTERM: the task was killed
  1         cgpool itself failed (no daemon, ...); 2 bad usage

Ctrl-C kills the task (its whole cgroup) and exits 130; a second Ctrl-C exits
at once. --usage prints one line at the end with what the task cost, read from
its cgroup (so what its children and detached daemons did counts): wall time,
CPU user/system, memory peak, pids peak, I/O bytes; a figure the daemon's
kernel cannot measure says so.`,
		Example: `  cgpool submit -- sh -c 'exit 3'; echo $?     # 3
  cd proj && cgpool submit --timeout 5m --memory-max 256M -- ./build.sh
  FOO=bar cgpool submit --env FOO -- sh -c 'echo $FOO'
  cgpool submit --usage -- make -j4   # last line: cgpool: usage: wall 41.20s, CPU 123.40s (user ...`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			// The output streams to ours as the command writes it.
			t := client.Task{Pool: poolName, Argv: args, Priority: priority, Timeout: timeout, QueueTimeout: queueTimeout, Env: map[string]string{},
				Stdout: os.Stdout, Stderr: os.Stderr, MaxOutput: maxOutput}
			// Every usage error is found here, before the daemon is asked.
			switch {
			case priority < 0 || priority > math.MaxInt32:
				return usageErr(fmt.Errorf("--priority %d: want 0 (the first to run) to %d", priority, math.MaxInt32))
			case timeout < 0:
				return usageErr(fmt.Errorf("--timeout %v: must not be negative", timeout))
			case queueTimeout < 0:
				return usageErr(fmt.Errorf("--queue-timeout %v: must not be negative", queueTimeout))
			}
			if memoryMax != "" {
				n, err := parseSize(memoryMax)
				if err != nil {
					return usageErr(fmt.Errorf("--memory-max: %w", err))
				}
				t.MemoryMax = n
			}
			if envAll {
				for _, kv := range os.Environ() {
					if k, v, ok := strings.Cut(kv, "="); ok && k != "" && keepEnv(k) {
						t.Env[k] = v
					}
				}
			}
			for _, kv := range env {
				k, v, ok := strings.Cut(kv, "=")
				if !ok {
					v, ok = os.LookupEnv(k)
					if !ok {
						return usageErr(fmt.Errorf("--env %s: no such variable in your environment (--env NAME=VALUE sets one)", k))
					}
				}
				if k == "" || strings.ContainsRune(k, 0) {
					return usageErr(fmt.Errorf("--env %q: want NAME=VALUE or NAME", kv))
				}
				t.Env[k] = v
			}
			dir := cwd
			if dir == "" {
				var err error
				if dir, err = os.Getwd(); err != nil {
					return fmt.Errorf("the current directory: %w (--cwd names one)", err)
				}
			} else if dir, _ = filepath.Abs(dir); dir == "" {
				return usageErr(fmt.Errorf("--cwd %q: not a path", cwd))
			}
			t.Dir = dir

			sigc := make(chan os.Signal, 2)
			signal.Notify(sigc, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
			defer signal.Stop(sigc)
			ctx, cancel := context.WithCancel(cmd.Context())
			defer cancel()
			got := make(chan os.Signal, 1) // the first signal, once it came
			interrupted := func() os.Signal {
				select {
				case s := <-got:
					got <- s
					return s
				default:
					return nil
				}
			}
			go func() {
				select {
				case s := <-sigc:
					got <- s
					cancel()
				case <-ctx.Done():
					return
				}
				select { // a second one: at once
				case s := <-sigc:
					fmt.Fprintf(os.Stderr, "cgpool: %s again: leaving now\n", sigName(s))
					os.Exit(signalExit(s))
				case <-time.After(time.Minute):
				}
			}()
			c, err := dial(ctx, socket)
			if err != nil {
				if sig := interrupted(); sig != nil {
					return &exitError{signalExit(sig)}
				}
				return err
			}
			defer c.Close()
			f, err := c.Submit(ctx, t)
			if err != nil {
				if sig := interrupted(); sig != nil {
					return &exitError{signalExit(sig)}
				}
				return submitExit(nil, err)
			}
			res, err := f.Wait(ctx)
			if sig := interrupted(); sig != nil && ctx.Err() != nil {
				// Interrupted: kill the task (its whole cgroup) and say so.
				cctx, ccancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer ccancel()
				_, _ = f.Cancel(cctx, true)
				res, err = f.Wait(cctx)
				if res != nil {
					writeOutput(res)
				}
				fmt.Fprintf(os.Stderr, "cgpool: %s: the task was killed\n", sigName(sig))
				return &exitError{signalExit(sig)}
			}
			exit := submitExit(res, err)
			if showUsage {
				reportUsage(os.Stderr, f.Usage())
			}
			return exit
		},
	}
	fl := cmd.Flags()
	fl.SetInterspersed(false) // flags end where COMMAND starts
	fl.StringVar(&socket, "socket", defaultSocket(), "the daemon's unix socket")
	fl.StringVar(&poolName, "pool", "", "pool name (default: the daemon's first pool)")
	fl.DurationVar(&timeout, "timeout", 0, "kill the task after this long (0: the pool's default)")
	fl.DurationVar(&queueTimeout, "queue-timeout", 0, "give up if the task has not started within this long")
	fl.StringVar(&memoryMax, "memory-max", "", "memory.max for this task, e.g. 64M (at most the pool's)")
	fl.IntVar(&priority, "priority", 0, "queue priority, 0 or more; lower runs first")
	fl.StringArrayVar(&env, "env", nil, "NAME=VALUE for the task's environment, or NAME to pass your own value (repeatable)")
	fl.BoolVar(&envAll, "env-all", false, "pass your whole environment (but CGPOOL_ variables) to the task")
	fl.StringVar(&cwd, "cwd", "", "the task's working directory (default: the current directory)")
	fl.Var(sizeFlag{&maxOutput}, "max-output", "most output (stdout and stderr together) the command may write, e.g. 100M; more kills it (default: no bound)")
	fl.BoolVar(&showUsage, "usage", false, "print what the task cost to stderr at the end: wall and CPU time, memory and pids peaks, I/O bytes (from its cgroup: children and daemons included)")
	return cmd
}

// writeOutput relays what a result holds of the output (nothing when it
// streamed) and says so, loudly, if the daemon cut it or it could not be
// written.
func writeOutput(res *client.Result) {
	os.Stdout.Write(res.Stdout)
	os.Stderr.Write(res.Stderr)
	if res.StdoutTruncated || res.StderrTruncated {
		fmt.Fprintln(os.Stderr, "cgpool: OUTPUT CUT: the daemon cut the command's output at its pool's output_limit")
	}
	if res.WriteErr != nil {
		fmt.Fprintln(os.Stderr, "cgpool: writing the command's output:", res.WriteErr)
	}
}

// submitExit relays the output and maps the outcome to the exit status.
func submitExit(res *client.Result, err error) error {
	if res != nil {
		writeOutput(res)
		if res.ExitCode != 0 {
			return &exitError{res.ExitCode}
		}
		return nil
	}
	var (
		te *client.TimeoutError
		pe *client.ProcessError
		ce *client.CancelledError
		qe *client.QueueTimeoutError
		re *client.RejectedError
	)
	code, msg := exitFailure, message(err)
	switch {
	case errors.As(err, &te):
		code = exitFor("timeout", 0)
		msg = fmt.Sprintf("timed out after %v; its cgroup (pid %d and everything it started) was killed", te.Timeout, te.PID)
	case errors.As(err, &pe):
		code, msg = exitFor(pe.Reason, pe.Signal), pe.Message
		switch pe.Reason {
		case ipc.ProcessKilled:
			msg = fmt.Sprintf("killed by %s (not sent by cgpool)", signalName(pe.Signal))
		case ipc.ProcessOutputLimit:
			msg = "OUTPUT CUT: " + pe.Message + " (--max-output); the rest of its output is lost"
		}
	case errors.As(err, &re):
		code, msg = exitFor("refused", 0), fmt.Sprintf("refused (%s): %s", re.Reason, re.Message)
	case errors.As(err, &ce):
		code, msg = exitFor("cancelled", 0), "cancelled: "+ce.Message
	case errors.As(err, &qe):
		code, msg = exitFor("queue_timeout", 0), fmt.Sprintf("not started within %v (--queue-timeout)", qe.QueueTimeout)
	case errors.Is(err, client.ErrInvalid):
		code = exitFor("refused", 0)
	}
	if msg == "" {
		msg = message(err)
	}
	fmt.Fprintln(os.Stderr, "cgpool:", msg)
	return &exitError{code}
}
