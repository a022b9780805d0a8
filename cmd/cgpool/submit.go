package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/cgpool/cgpool/client"
	"github.com/spf13/cobra"
)

func dial(ctx context.Context, socket string) (*client.Client, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, socket, client.WithClientName("cgpool-cli"))
	if err != nil {
		return nil, fmt.Errorf("connect to the cgpool daemon at %s (is `cgpool serve` running? --socket): %w", socket, err)
	}
	return c, nil
}

func submitCmd() *cobra.Command {
	var (
		socket, pool, memoryMax string
		timeout, queueTimeout   time.Duration
		priority                int
		env                     []string
		showUsage               bool
	)
	cmd := &cobra.Command{
		Use:   "submit [flags] -- COMMAND [ARG...]",
		Short: "Run one command through a cgpool daemon's exec pool",
		Long: `Run COMMAND in a slot of a running daemon's exec pool (its own cgroup), relay
its stdout and stderr, and exit with its status. When the task does not end by
itself, the exit status says why:

  124       timed out (its cgroup was killed)
  125       killed by the OOM killer at memory.max
  126       the process ended mid-task without an exit status of its own
  128+N     killed by signal N that cgpool did not send
  120       cancelled, not started within --queue-timeout, or refused
  1         cgpool itself failed (no daemon, ...); 2 bad usage

Ctrl-C cancels the task (its cgroup is killed). --usage prints one line at the
end with what the task cost, read from its cgroup (so what its children and
detached daemons did counts): wall time, CPU user/system, memory peak, pids
peak, I/O bytes; a figure the daemon's kernel cannot measure says so.`,
		Example: `  cgpool submit -- sh -c 'exit 3'; echo $?     # 3
  cgpool submit --timeout 5s --memory-max 256M -- ./build.sh
  cgpool submit --usage -- make -j4   # last line: cgpool: usage: wall 41.20s, CPU 123.40s (user ...`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			t := client.Task{Pool: pool, Argv: args, Priority: priority, Timeout: timeout, QueueTimeout: queueTimeout, Env: map[string]string{}}
			if memoryMax != "" {
				n, err := parseSize(memoryMax)
				if err != nil {
					return usageErr(err)
				}
				t.MemoryMax = n
			}
			for _, kv := range env {
				k, v, ok := strings.Cut(kv, "=")
				if !ok || k == "" {
					return usageErr(fmt.Errorf("--env %q: want NAME=VALUE", kv))
				}
				t.Env[k] = v
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			c, err := dial(ctx, socket)
			if err != nil {
				return err
			}
			defer c.Close()
			f, err := c.Submit(ctx, t)
			if err != nil {
				return submitExit(nil, err)
			}
			res, err := f.Wait(ctx)
			if ctx.Err() != nil {
				cctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer cancel()
				_, _ = f.Cancel(cctx, true)
				res, err = f.Wait(cctx)
			}
			exit := submitExit(res, err)
			if showUsage {
				reportUsage(os.Stderr, f.Usage())
			}
			return exit
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&socket, "socket", defaultSocket(), "the daemon's unix socket")
	fl.StringVar(&pool, "pool", "", "pool name (default: the daemon's first pool)")
	fl.DurationVar(&timeout, "timeout", 0, "kill the task after this long (0: the pool's default)")
	fl.DurationVar(&queueTimeout, "queue-timeout", 0, "give up if the task has not started within this long")
	fl.StringVar(&memoryMax, "memory-max", "", "memory.max for this task, e.g. 64M (at most the pool's)")
	fl.IntVar(&priority, "priority", 0, "queue priority, >= 0; lower runs first")
	fl.StringArrayVar(&env, "env", nil, "NAME=VALUE added to the task's environment (repeatable)")
	fl.BoolVar(&showUsage, "usage", false, "print what the task cost to stderr at the end: wall and CPU time, memory and pids peaks, I/O bytes (from its cgroup: children and daemons included)")
	return cmd
}

// submitExit relays the output and maps the outcome to the exit status.
func submitExit(res *client.Result, err error) error {
	if res != nil {
		os.Stdout.Write(res.Stdout)
		os.Stderr.Write(res.Stderr)
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
	code := exitFailure
	switch {
	case errors.As(err, &te):
		code = exitTimeout
	case errors.As(err, &pe) && pe.OOM():
		code = exitOOM
	case errors.As(err, &pe) && pe.Reason == "killed":
		code = exitSignal + pe.Signal
	case errors.As(err, &pe):
		code = exitCrashed
	case errors.As(err, &ce), errors.As(err, &qe), errors.As(err, &re), errors.Is(err, client.ErrInvalid):
		code = exitCancelled
	}
	fmt.Fprintln(os.Stderr, "cgpool:", err)
	return &exitError{code}
}
