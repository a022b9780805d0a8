package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/cgpool/cgpool/pool"
	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"
)

// demoJob is one of the demo's commands.
type demoJob struct {
	label     string
	argv      []string
	timeout   time.Duration
	memoryMax int64
}

// The demo's four commands, one per fate.
var demoJobs = []demoJob{
	{label: "succeeds", argv: []string{"sh", "-c", `echo "hello from cgroup $(grep '^0::' /proc/self/cgroup | cut -d: -f3)"`}},
	{label: "times out, with a detached child", argv: []string{"sh", "-c", `setsid sleep 300 & echo "started detached child $!"; sleep 300`}, timeout: 2 * time.Second},
	{label: "crashes", argv: []string{"sh", "-c", `echo "about to crash"; kill -SEGV $$`}},
	{label: "allocates past memory.max", argv: []string{"awk", `BEGIN { s = "x"; while (1) s = s s }`}, memoryMax: 64 << 20, timeout: 20 * time.Second},
}

// demoResult is how a demo command ended.
type demoResult struct {
	job     demoJob
	outcome *pool.Outcome
	err     error // refused
}

func demoCmd() *cobra.Command {
	var root, logLevel string
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
			results, err := runDemo(cmd.Context(), root, logLevel)
			if err != nil {
				return err
			}
			fmt.Println()
			for _, r := range results {
				fmt.Printf("  %-36s → %s\n", r.job.label, demoVerdict(r))
			}
			fmt.Println()
			ok := 0
			for _, r := range results {
				if r.err == nil && r.outcome.Kind == pool.Result && r.outcome.ExitCode == 0 {
					ok++
				}
			}
			fmt.Printf("cgpool: %s: %d succeeded, %d failed, as they should\n", plural(len(results), "command"), ok, len(results)-ok)
			return nil
		},
	}
	cmd.Flags().StringVar(&root, "root", "", "cgroup directory to manage (default: found automatically)")
	cmd.Flags().StringVar(&logLevel, "log-level", "warn", "supervisor log level")
	return cmd
}

// runDemo runs the demo's commands at once and prints each one's output
// as it ends.
func runDemo(ctx context.Context, root, logLevel string) ([]demoResult, error) {
	n := len(demoJobs)
	em, err := openEmbedded(ctx, root, logLevel, pool.Config{Name: "demo", Kind: pool.KindExec, MaxWorkers: n, MinWorkers: &n, MaxBacklog: -1})
	if err != nil {
		return nil, err
	}
	defer em.close()
	results := make([]demoResult, n)
	var mu sync.Mutex
	var wg sync.WaitGroup
	for i, j := range demoJobs {
		results[i].job = j
		wg.Add(1)
		_, err := em.pool.Submit(ctx, pool.Spec{Argv: j.argv, Timeout: j.timeout, MemoryMax: j.memoryMax}, func(e pool.Event) {
			if e.Outcome == nil {
				return
			}
			mu.Lock()
			results[i].outcome = e.Outcome
			os.Stdout.Write(e.Outcome.Stdout)
			os.Stderr.Write(e.Outcome.Stderr)
			mu.Unlock()
			wg.Done()
		})
		if err != nil {
			results[i].err = err
			wg.Done()
		}
	}
	wg.Wait()
	return results, nil
}

// demoVerdict says what happened, and for the timeout, whether the
// detached child is gone.
func demoVerdict(r demoResult) string {
	if r.err != nil {
		if errors.Is(r.err, pool.ErrInvalid) && strings.Contains(r.err.Error(), "memory controller") {
			return "refused: this host's cgroup v2 has no memory controller (it is bound to cgroup v1); run scripts/vm-test.sh --demo to see the OOM kill in a VM"
		}
		return "refused: " + r.err.Error()
	}
	o := r.outcome
	v := endingOf(o, nil).msg
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
