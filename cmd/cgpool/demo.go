package main

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/cgpool/cgpool/pool"
	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"
)

// The demo's four commands, one per fate.
var demoJobs = []job{
	{n: 1, label: "succeeds", argv: []string{"sh", "-c", `echo "hello from cgroup $(grep '^0::' /proc/self/cgroup | cut -d: -f3)"`}},
	{n: 2, label: "times out, with a detached child", argv: []string{"sh", "-c", `setsid sleep 300 & echo "started detached child $!"; sleep 300`}, timeout: 2 * time.Second},
	{n: 3, label: "crashes", argv: []string{"sh", "-c", `echo "about to crash"; kill -SEGV $$`}},
	{n: 4, label: "allocates past memory.max", argv: []string{"awk", `BEGIN { s = "x"; while (1) s = s s }`}, memoryMax: 64 << 20, timeout: 20 * time.Second},
}

func demoCmd() *cobra.Command {
	var o runOptions
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Run four commands that meet four fates: ok, timeout, crash, OOM",
		Long: `Run four shell commands through an embedded supervisor, each in its own
cgroup: one succeeds; one times out after 2s while a child it detached with
setsid is still running (both die with the cgroup); one crashes (SIGSEGV); one
allocates past a 64 MiB memory.max and is OOM-killed. Where the host's cgroup v2
has no memory controller (hybrid cgroup v1/v2 hosts), the memory limit is
refused in one line, and scripts/vm-test.sh --demo shows the OOM in a VM.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			o.jobs, o.progress = len(demoJobs), "never"
			results, err := runJobs(cmd.Context(), o, demoJobs)
			if err != nil {
				return err
			}
			fmt.Println()
			for _, r := range results {
				fmt.Printf("  %-36s → %s\n", r.job.label, demoVerdict(r))
			}
			fmt.Println()
			summarize(os.Stdout, results, true)
			return nil
		},
	}
	cmd.Flags().StringVar(&o.root, "root", "", "cgroup directory to manage (default: found automatically)")
	cmd.Flags().StringVar(&o.logLevel, "log-level", "warn", "supervisor log level")
	return cmd
}

// demoVerdict says what happened, and for the timeout, whether the
// detached child is gone.
func demoVerdict(r jobResult) string {
	if r.err != nil {
		if errors.Is(r.err, pool.ErrInvalid) && strings.Contains(r.err.Error(), "memory controller") {
			return "refused: this host's cgroup v2 has no memory controller (it is bound to cgroup v1); run scripts/vm-test.sh --demo to see the OOM kill in a VM"
		}
		return "refused: " + r.err.Error()
	}
	o := r.outcome
	v := r.reason()
	switch o.Kind {
	case pool.TimedOut:
		v = fmt.Sprintf("timed out after %v, cgroup killed", o.Timeout)
		if f := strings.Fields(string(o.Stdout)); len(f) == 4 {
			if pid, err := strconv.Atoi(f[3]); err == nil {
				if processGone(pid) {
					v += fmt.Sprintf("; detached child %d is gone too", pid)
				} else {
					v += fmt.Sprintf("; detached child %d STILL ALIVE", pid)
				}
			}
		}
	case pool.ProcessError:
		v = o.Message
	case pool.Result:
		if o.ExitCode == 0 {
			v = "ok: " + strings.TrimSpace(string(o.Stdout))
		}
	}
	return v
}

// processGone reports whether pid no longer runs: it does not exist, or it
// is a zombie that its new parent has not reaped yet (a killed process
// holds no resources but its pid until then).
func processGone(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return unix.Kill(pid, 0) != nil
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i > 0 && i+2 < len(s) && s[i+2] == 'Z'
}
