// Command cgpool is a process pool that cannot be broken: a supervisor that
// keeps workers in their own cgroup v2 leaves, and the commands to use it.
//
//	cgpool demo                 the README's first command: four commands, four fates
//	cgpool run -j4 --timeout 5s -- CMD {}    run CMD per input line, each in its own cgroup
//	cgpool serve --config FILE  the daemon
//	cgpool submit -- CMD...     one command through the daemon
//	cgpool stats | ps | env | recycle | shutdown
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/spf13/cobra"
)

// Exit codes shared by submit and run (see README.md).
const (
	exitFailure   = 1   // cgpool itself failed
	exitUsage     = 2   // bad flags or configuration
	exitCancelled = 120 // cancelled, queue timeout, or rejected
	exitTimeout   = 124 // the task timed out (as timeout(1))
	exitOOM       = 125 // the task was killed by the OOM killer at memory.max
	exitCrashed   = 126 // a worker exited mid-task on its own
	exitSignal    = 128 // + N: killed by signal N that cgpool did not send
)

// exitError carries an exit status out of a command.
type exitError struct{ code int }

func (e *exitError) Error() string { return fmt.Sprintf("exit status %d", e.code) }

type usageError struct{ err error }

func (e *usageError) Error() string { return e.err.Error() }
func (e *usageError) Unwrap() error { return e.err }

func usageErr(err error) error { return &usageError{err} }

func rootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:   "cgpool",
		Short: "A process pool that cannot be broken: every worker in its own cgroup v2 leaf",
		Long: `cgpool keeps pools of worker processes, each in its own cgroup v2 leaf with a
memory limit, and runs tasks with priorities, per-task timeouts and environment
propagation. An OOM kill is told apart from any other death (memory.events), a
timeout kills the task's whole cgroup (cgroup.kill), and nothing a task starts
outlives it. Needs Linux 5.14+ with cgroup v2 and a delegated cgroup (systemd
Delegate=yes, or root).`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageErr(err) })
	root.AddCommand(serveCmd(), runCmd(), demoCmd(), submitCmd(), statsCmd(), psCmd(), envCmd(), recycleCmd(), shutdownCmd(), checkCmd(), echoWorkerCmd(), checkWorkerCmd(), reapCmd())
	return root
}

func main() {
	err := rootCmd().ExecuteContext(context.Background())
	var ee *exitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		os.Exit(ee.code)
	default:
		fmt.Fprintln(os.Stderr, "cgpool:", err)
		var ue *usageError
		if errors.As(err, &ue) || isCobraUsage(err) {
			os.Exit(exitUsage)
		}
		os.Exit(exitFailure)
	}
}

// isCobraUsage tells cobra's own argument errors (flag errors are wrapped
// by the root's FlagErrorFunc).
func isCobraUsage(err error) bool {
	for _, p := range []string{"unknown command", "accepts ", "requires at least", "arg(s)"} {
		if strings.Contains(err.Error(), p) {
			return true
		}
	}
	return false
}
