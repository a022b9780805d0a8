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
	"runtime/debug"
	"strings"

	"github.com/cgpool/cgpool/ipc"
	"github.com/spf13/cobra"
)

// Exit codes shared by submit and run (see README.md).
const (
	exitFailure   = 1   // cgpool itself failed
	exitUsage     = 2   // bad flags or configuration
	exitCancelled = 120 // cancelled, queue timeout, or refused (as asked, the pool cannot run it)
	// exitOutputLimit: cgpool run --once killed the command for writing
	// more than --max-output.
	exitOutputLimit = 122
	exitTimeout     = 124 // the task timed out (as timeout(1))
	exitOOM         = 125 // the task was killed by the OOM killer at memory.max
	// exitNotExecutable and exitNotFound are a shell's: the command was
	// found but cannot be executed (or could not be started at all), or
	// it was not found.
	exitNotExecutable = 126
	exitNotFound      = 127
	exitSignal        = 128 // + N: killed by signal N that cgpool did not send; 130 SIGINT, 143 SIGTERM
)

// exitFor is the exit status of a task that did not end with a result of
// its own, by the reason it ended (the wire's names: ipc.Process*,
// "timeout", "cancelled", "refused", "queue_timeout") and, for "killed",
// the signal. The one table of submit and run.
func exitFor(reason string, signal int) int {
	switch reason {
	case "timeout":
		return exitTimeout
	case ipc.ProcessOOM:
		return exitOOM
	case ipc.ProcessKilled:
		return exitSignal + signal
	case ipc.ProcessOutputLimit:
		return exitOutputLimit
	case ipc.ProcessNotFound:
		return exitNotFound
	case ipc.ProcessNotExecutable, ipc.ProcessCrashed, ipc.ProcessLost:
		return exitNotExecutable
	}
	return exitCancelled // cancelled, refused, not started in time
}

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
		Version:       version(),
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetVersionTemplate("cgpool {{.Version}}\n")
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
		fmt.Fprintln(os.Stderr, "cgpool:", message(err))
		var ue *usageError
		var re refusedErr
		switch {
		case errors.As(err, &ue) || isCobraUsage(err):
			os.Exit(exitUsage)
		case errors.As(err, &re):
			os.Exit(exitCancelled)
		}
		os.Exit(exitFailure)
	}
}

// message is err's text without the "cgpool: " that the client and ipc
// packages start their errors with: main says "cgpool:" once.
func message(err error) string {
	m := strings.TrimPrefix(err.Error(), "cgpool: ")
	return strings.ReplaceAll(m, ": cgpool: ", ": ")
}

// version is the module's version, or the VCS revision it was built from.
func version() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "(unknown version)"
	}
	v := bi.Main.Version
	var rev, dirty string
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			if s.Value == "true" {
				dirty = "+dirty"
			}
		}
	}
	if (v == "" || v == "(devel)") && rev != "" {
		v = "devel " + rev[:min(12, len(rev))] + dirty
	}
	if v == "" {
		v = "(devel)"
	}
	return v + " (" + bi.GoVersion + ")"
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
