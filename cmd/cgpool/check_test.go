//go:build !vm

package main

import (
	"context"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cgpool/cgpool/check"
	"github.com/cgpool/cgpool/internal/kerneltest"
)

// TestCheckMatchesHost: cgpool check's verdicts agree with what this host
// is (issue 12, acceptance 2). The facts are found here independently: the
// controllers a fresh root gets, whether python3 imports the cgpool
// package, whether billiard is there. Where a controller is missing (the
// hybrid build hosts: memory and pids belong to cgroup v1) its row must be
// "n/a" with the reason; every other cell must pass; --require of a missing
// controller must fail the check. The systemd VM runs the same check and
// wants every cell to pass (internal/systemdvm).
func TestCheckMatchesHost(t *testing.T) {
	root := kerneltest.NewRoot(t)
	have := root.Controllers()
	// The Go worker of the escape row runs as nobody: give it a copy of
	// this binary that others may run (go test's build folder is private).
	dir := shortTempDir(t, "cgpool-check")
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	exe := filepath.Join(dir, "cgpool")
	self, _ := os.Executable()
	copyFile(t, self, exe)
	repo, _ := filepath.Abs("../..")
	py, pyErr := exec.LookPath("/usr/bin/python3") // Debian's: runnable by nobody too
	args := []string{"check", "--json", "--progress", "never", "--python-path", filepath.Join(repo, "python"), "--python", py}
	pyOK := pyErr == nil && exec.Command(py, "-c", "import sys; sys.path.insert(0, sys.argv[1]); import cgpool.worker", filepath.Join(repo, "python")).Run() == nil
	billiard := pyErr == nil && exec.Command(py, "-c", "import billiard").Run() == nil

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	run := func(extra ...string) (*check.Report, int) {
		t.Helper()
		cmd := exec.CommandContext(ctx, exe, append(args, extra...)...)
		cmd.Env = append(os.Environ(), "CGPOOL_TEST_MAIN=1")
		cmd.Stderr = os.Stderr
		out, err := cmd.Output()
		code := exitStatus(t, err)
		var rep check.Report
		if err := json.Unmarshal(out, &rep); err != nil {
			t.Fatalf("cgpool check --json printed no report (%v), exit %d:\n%s", err, code, out)
		}
		return &rep, code
	}
	rep, code := run()
	h := rep.Host
	for name, f := range map[string]check.Feature{"cgroup.kill": h.CgroupKill, "CLONE_INTO_CGROUP": h.CloneInto, "pidfd": h.Pidfd, "delegated": h.Delegated} {
		if !f.OK {
			t.Errorf("%s: %s; this host has it (the kernel tests run here)", name, f.Detail)
		}
	}
	if got := slices.Contains(have, "memory"); h.MemoryEvents.OK != got {
		t.Errorf("memory.events reported %v (%s), but the memory controller is %v here", h.MemoryEvents.OK, h.MemoryEvents.Detail, got)
	}
	if h.Python.OK != pyOK {
		t.Errorf("python reported %v (%s), but importing cgpool.worker works: %v", h.Python.OK, h.Python.Detail, pyOK)
	}
	_, noSystemd := os.Stat("/run/systemd/system")
	if h.Systemd.OK != (noSystemd == nil) {
		t.Errorf("systemd reported %v (%s)", h.Systemd.OK, h.Systemd.Detail)
	}
	if len(rep.Cells) < 30 {
		t.Errorf("only %d cells", len(rep.Cells))
	}
	for _, c := range rep.Cells {
		var want, reason string
		switch {
		case c.Column == check.ColPython && !pyOK:
			want, reason = "n/a", "python"
		case c.Row == "b_pool" && !billiard:
			want, reason = "n/a", "billiard"
		case c.Row == "oom" && !slices.Contains(have, "memory"):
			want, reason = "n/a", "the memory controller is not available"
		case c.Row == "fork_bomb" && !slices.Contains(have, "pids"):
			want, reason = "n/a", "the pids controller is not available"
		default:
			want = "pass"
		}
		if c.Status != want || !strings.Contains(c.Reason, reason) {
			t.Errorf("%s × %s: %s (%s), want %s with a reason naming %q", c.Row, c.Column, c.Status, c.Reason, want, reason)
		}
	}
	if code != 0 || rep.Failed {
		t.Errorf("cgpool check exited %d (failed %v); want 0: nothing was required that is missing", code, rep.Failed)
	}
	if slices.Contains(have, "memory") {
		return
	}
	// Asking for what is missing fails the check, with the reason.
	rep, code = run("--require", "memory", "--row", "oom,cpu", "--column", "exec")
	if code != exitFailure || !rep.Failed {
		t.Errorf("--require memory without the memory controller: exit %d, failed %v; want %d", code, rep.Failed, exitFailure)
	}
	if c := cellOf(rep, "oom", check.ColExec); c == nil || c.Status != "fail" || !strings.Contains(c.Reason, "memory controller") {
		t.Errorf("oom × exec with memory required: %+v, want a failure naming the memory controller", c)
	}
}

func cellOf(r *check.Report, row, col string) *check.Cell {
	for _, c := range r.Cells {
		if c.Row == row && c.Column == col {
			return c
		}
	}
	return nil
}

// TestCheckText: the table a user reads, with the time of each cell and
// the reasons below it.
func TestCheckText(t *testing.T) {
	requireCgroups(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := cgpool(ctx, "check", "--progress", "never", "--column", "exec", "--row", "cpu,detach,oom").Output()
	if code := exitStatus(t, err); code != 0 {
		t.Fatalf("cgpool check: exit %d\n%s", code, out)
	}
	s := string(out)
	for _, want := range []string{"cgroup v2 mount", "CLONE_INTO_CGROUP", "task \\ pool", "detach", "pass ", "3 cells:"} {
		if !strings.Contains(s, want) {
			t.Errorf("the report lacks %q:\n%s", want, s)
		}
	}
	if r := kerneltest.NewRoot(t); !slices.Contains(r.Controllers(), "memory") && !strings.Contains(s, "oom: the memory controller is not available") {
		t.Errorf("without the memory controller the report must say why oom is not available:\n%s", s)
	}
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	in, err := os.Open(from)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.OpenFile(to, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestCheckUsage: bad flags are usage errors that name the flag, before
// any cgroup is touched.
func TestCheckUsage(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, tc := range []struct{ args []string }{
		{[]string{"--slack", "0"}},
		{[]string{"--timeout", "-1s"}},
		{[]string{"--parallel", "0"}},
		{[]string{"--column", "java"}},
		{[]string{"--require", "gpu"}},
		{[]string{"--progress", "sometimes"}},
	} {
		out, err := cgpool(ctx, append([]string{"check"}, tc.args...)...).CombinedOutput()
		if code := exitStatus(t, err); code != exitUsage || !strings.Contains(string(out), tc.args[0]) {
			t.Errorf("cgpool check %q: exit %d, %q; want %d naming %s", tc.args, code, out, exitUsage, tc.args[0])
		}
	}
}

// TestCheckSlack: --slack is what T judges by: no kill is told within 1ns
// of its timeout, so the cell fails and says why; the report carries the
// timeout and slack it was judged by.
func TestCheckSlack(t *testing.T) {
	requireCgroups(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := cgpool(ctx, "check", "--json", "--progress", "never", "--column", "exec", "--row", "sigterm_ignore", "--slack", "1ns").Output()
	if code := exitStatus(t, err); code != exitFailure {
		t.Errorf("cgpool check --slack 1ns: exit %d, want %d", code, exitFailure)
	}
	var rep check.Report
	if err := json.Unmarshal(out, &rep); err != nil {
		t.Fatalf("no report: %v\n%s", err, out)
	}
	if rep.TimeoutSeconds != 1 || rep.SlackSeconds != 1e-9 {
		t.Errorf("report judged by timeout %vs, slack %vs; want 1 and 1e-9", rep.TimeoutSeconds, rep.SlackSeconds)
	}
	c := cellOf(&rep, "sigterm_ignore", check.ColExec)
	if c == nil || c.T != "fail" || !strings.Contains(c.Reason, "slack (1ns)") || c.W != "pass" {
		t.Errorf("sigterm_ignore × exec with --slack 1ns: %+v; want W pass, T failed for the slack", c)
	}
}
