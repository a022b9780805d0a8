//go:build !vm

package main

// The comparisons with GNU parallel: each flag cgpool run shares with it,
// run through both on the same input. They are host tests (the VM has no
// perl, and nothing in them needs its kernel), so that they never count
// as a skip there; .ci/run installs GNU parallel on the host.

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// gnuParallel runs GNU parallel with args in dir; without it the test
// skips (.ci/run installs it).
func gnuParallel(t *testing.T, dir, stdin string, args ...string) ran {
	t.Helper()
	path, err := exec.LookPath("parallel")
	if err != nil {
		t.Skip("GNU parallel is not installed (apt-get install parallel; .ci/run does): nothing to compare with")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, path, append([]string{"--will-cite"}, args...)...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "PARALLEL_HOME="+filepath.Join(dir, ".parallel"))
	return runTool(t, cmd, stdin)
}

// TestRunLikeGNUParallel runs each GNU parallel flag that cgpool run has
// through both, on the same input, and compares what a user sees:
// standard output (in order where the flag orders it) and the exit
// status.
func TestRunLikeGNUParallel(t *testing.T) {
	requireCgroups(t)
	if _, err := exec.LookPath("parallel"); err != nil {
		t.Skip("GNU parallel is not installed (apt-get install parallel; .ci/run does): nothing to compare with")
	}
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	nums := write("nums", "1\n2\n3\n")
	letters := write("letters", "a\nb\n")
	for _, tc := range []struct {
		name   string
		stdin  string
		args   []string
		sorted bool // compare the lines in any order (no -k)
	}{
		{"input appended without {}", "1\n2\n3\n", []string{"-k", "echo", "x"}, false},
		{"blank lines run", "a\n\nb\n", []string{"-k", "echo", "x{}x"}, false},
		{"-r skips blank lines", "a\n\n  \nb\n", []string{"-k", "-r", "echo", "x{}x"}, false},
		{"::: combinations", "", []string{"-k", "echo", "{1}-{2}", ":::", "a", "b", ":::", "1", "2"}, false},
		{"::: {} is all values", "", []string{"-k", "echo", "[{}]", ":::", "a", "b", ":::", "1"}, false},
		{"-a FILE twice", "", []string{"-k", "-a", nums, "-a", letters, "echo"}, false},
		{":::: FILE", "", []string{"-k", "echo", "{2}{1}", "::::", nums, "::::", letters}, false},
		{"--colsep", " a , b\nc,d\n", []string{"-k", "--colsep", ",", "echo", "[{2}]", "[{1}]", "[{3}]"}, false},
		{"{.} {/} {//} {/.} {#}", "", []string{"-k", "echo", "{.}", "{/}", "{//}", "{/.}", "{#}", ":::", "dir/sub.d/file.tar.gz", "nodot", "/abs/x.y", "sub.dir/bar"}, false},
		{"{%} with -j1", "", []string{"-k", "-j1", "echo", "{%}", ":::", "a", "b"}, false},
		{"{-1} and {2.}", "", []string{"-k", "echo", "{-1}", "{2.}", ":::", "a", ":::", "b.txt"}, false},
		{"--tag", "", []string{"-k", "--tag", "echo", "{}-out", ":::", "a", "b c"}, false},
		{"--dry-run", "", []string{"--dry-run", "-k", "echo", "{}", ":::", "it's", "x y", "a$b", "", "plain"}, false},
		{"shell line: values are quoted", "$(echo INJECTED) a;b `id`\n", []string{"echo {}; echo done"}, false},
		{"shell line without {}: appended quoted", "$(echo INJECTED)\n", []string{"echo got"}, false},
		{"-q pastes values unquoted", "$(echo INJECTED)\n", []string{"-q", "sh", "-c", "echo {}"}, false},
		{"-k keeps input order", "", []string{"-k", "-j4", "sleep {}; echo {}", ":::", "0.3", "0.1", "0.2"}, false},
		{"no -k: every line", "", []string{"-j4", "echo {}", ":::", "1", "2", "3", "4", "5"}, true},
		{"exit status: the number failed", "", []string{"exit {}", ":::", "0", "1", "2", "0", "3"}, true},
		{"exit status: 101 past 100", strings.Repeat("x\n", 101), []string{"-j2", "false"}, true},
		{"--halt now,fail=1: the failed command's status", "", []string{"-j2", "--halt", "now,fail=1", "sleep {}; exit 3", ":::", "0.1", "20"}, true},
		{"--halt soon,fail=50%: the failed share", "", []string{"-j1", "--halt", "soon,fail=50%", "exit {}", ":::", "1", "0", "1", "1"}, true},
		{"--halt 2 (now,fail=1)", "", []string{"-j1", "--halt", "2", "exit {}", ":::", "0", "4", "0"}, true},
		{"--halt now,success=1", "", []string{"-j1", "--halt", "now,success=1", "exit {}", ":::", "1", "0", "1"}, true},
		// After the failure nothing more starts (cgpool run queues
		// commands ahead of its slots, but not with --halt: this failed
		// when it did).
		{"--halt soon,fail=1: nothing queued starts", "", []string{"-j2", "--halt", "soon,fail=1", "echo {}; sleep 0.{}; exit 1", ":::", "3", "5", "1", "1", "1"}, true},
		// Two commands that run at once never share a slot number
		// (mkdir fails if the other holds it), and every number is 1..-j.
		{"PARALLEL_JOBSLOT: 1..-j, never shared", "", []string{"-j2", `mkdir "slot-$PARALLEL_JOBSLOT" || exit 9; sleep 0.1; rmdir "slot-$PARALLEL_JOBSLOT"; echo $PARALLEL_JOBSLOT | tr 12 xx`, ":::", "a", "b", "c", "d", "e", "f"}, true},
		{"--line-buffer: whole lines", "", []string{"--line-buffer", "-j3", "for i in 1 2 3; do echo {}-$i; done", ":::", "a", "b", "c"}, true},
		{"-k --line-buffer", "", []string{"-k", "--line-buffer", "-j3", "sleep 0.{}; echo {}-1; echo {}-2", ":::", "3", "1", "2"}, false},
		{"--pipe --block 100k", func() string {
			var b strings.Builder
			for i := 1; i <= 100000; i++ {
				fmt.Fprintln(&b, i)
			}
			return b.String()
		}(), []string{"-k", "--pipe", "--block", "100k", "wc", "-lc"}, false},
		{"--pipe --block 10K", strings.Repeat("line of input\n", 5000), []string{"-k", "--pipe", "--block", "10K", "wc", "-l"}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			gnu := gnuParallel(t, dir, tc.stdin, tc.args...)
			cg := cgpoolRun(t, dir, tc.stdin, tc.args...)
			gotOut, wantOut := cg.stdout, gnu.stdout
			if tc.sorted {
				gotOut, wantOut = strings.Join(sortedLines(gotOut), "\n"), strings.Join(sortedLines(wantOut), "\n")
			}
			if gotOut != wantOut || cg.code != gnu.code {
				t.Errorf("cgpool run %q:\n stdout %q\n exit %d\nGNU parallel:\n stdout %q\n exit %d\ncgpool's stderr: %s", tc.args, cg.stdout, cg.code, gnu.stdout, gnu.code, cg.stderr)
			}
		})
	}
}

// TestRunGroupsOutput: --group (the default) prints each command's output
// whole: no line of another command comes between two of its lines, in
// cgpool run as in GNU parallel.
func TestRunGroupsOutput(t *testing.T) {
	requireCgroups(t)
	dir := t.TempDir()
	args := []string{"-j4", "for i in 1 2 3 4 5; do echo {}-$i; sleep 0.01; done", ":::", "a", "b", "c", "d"}
	check := func(who string, r ran) {
		t.Helper()
		lines := strings.Split(strings.TrimSuffix(r.stdout, "\n"), "\n")
		if len(lines) != 20 {
			t.Fatalf("%s printed %d lines, want 20:\n%s", who, len(lines), r.stdout)
		}
		for i := 0; i < 20; i += 5 {
			job := strings.Split(lines[i], "-")[0]
			for k := 1; k <= 5; k++ {
				if want := fmt.Sprintf("%s-%d", job, k); lines[i+k-1] != want {
					t.Errorf("%s: line %d is %q, want %q (output mixed):\n%s", who, i+k, lines[i+k-1], want, r.stdout)
				}
			}
		}
	}
	check("cgpool run", cgpoolRun(t, dir, "", append([]string{"--group"}, args...)...))
	check("cgpool run (default)", cgpoolRun(t, dir, "", args...))
	check("GNU parallel", gnuParallel(t, dir, "", append([]string{"--group"}, args...)...))
}

// TestRunRetries: --retries N runs a failing command N times in all, in
// both, and logs it once.
func TestRunRetries(t *testing.T) {
	requireCgroups(t)
	dir := t.TempDir()
	count := func(who string, run func(args ...string) ran) {
		t.Helper()
		f := filepath.Join(dir, who)
		r := run("--retries", "3", "--joblog", f+".log", "echo try >> "+f+"; exit 1", ":::", "x")
		b, _ := os.ReadFile(f)
		if n := strings.Count(string(b), "try"); n != 3 || r.code != 1 {
			t.Errorf("%s --retries 3: %d attempts, exit %d; want 3 attempts, exit 1 (stderr %q)", who, n, r.code, r.stderr)
		}
		log, _ := os.ReadFile(f + ".log")
		if n := strings.Count(string(log), "\n"); n != 2 {
			t.Errorf("%s: the joblog has %d lines, want the header and one:\n%s", who, n, log)
		}
	}
	count("cgpool", func(a ...string) ran { return cgpoolRun(t, dir, "", a...) })
	count("parallel", func(a ...string) ran { return gnuParallel(t, dir, "", a...) })
	// Only the last attempt's output is printed, as in GNU parallel.
	r := cgpoolRun(t, dir, "", "--retries", "2", "echo attempt; exit 1", ":::", "x")
	if r.stdout != "attempt\n" {
		t.Errorf("cgpool run --retries 2 printed %q, want the last attempt's output only", r.stdout)
	}
}

// TestRunJoblogLikeGNUParallel: cgpool's joblog has GNU parallel's eight
// columns in their places (same Seq, Host, Exitval and Signal for the
// same commands), cgpool's Reason and usage columns, the command last;
// and each tool resumes from the other's joblog.
func TestRunJoblogLikeGNUParallel(t *testing.T) {
	requireCgroups(t)
	dir := t.TempDir()
	cgLog, gnuLog := filepath.Join(dir, "cg.log"), filepath.Join(dir, "gnu.log")
	args := func(log string) []string {
		return []string{"-j2", "--joblog", log, "echo {}; exit {}", ":::", "0", "3", "0"}
	}
	cg := cgpoolRun(t, dir, "", args(cgLog)...)
	gnu := gnuParallel(t, dir, "", args(gnuLog)...)
	if cg.code != 1 || gnu.code != 1 {
		t.Fatalf("exit %d (cgpool), %d (GNU parallel); want 1 each", cg.code, gnu.code)
	}
	c, g := joblogRows(t, cgLog), joblogRows(t, gnuLog)
	if len(c) != 3 || len(g) != 3 {
		t.Fatalf("joblog lines: cgpool %d, GNU parallel %d; want 3 each", len(c), len(g))
	}
	for i := range c {
		if len(c[i]) != 16 {
			t.Fatalf("cgpool joblog line %q: %d columns, want 16", c[i], len(c[i]))
		}
		for _, col := range []int{0, 1, 4, 5, 6, 7} { // Seq Host Send Receive Exitval Signal
			if c[i][col] != g[i][col] {
				t.Errorf("joblog seq %d column %d: cgpool %q, GNU parallel %q", i+1, col+1, c[i][col], g[i][col])
			}
		}
		if c[i][15] != g[i][8] {
			t.Errorf("joblog seq %d command: cgpool %q, GNU parallel %q", i+1, c[i][15], g[i][8])
		}
		if want := map[string]string{"0": "ok", "3": "exit"}[c[i][6]]; c[i][8] != want {
			t.Errorf("joblog seq %d: Reason %q, want %q", i+1, c[i][8], want)
		}
		// Usage: CPU user and system µs are always measured; memory and
		// pids peaks and I/O are "-" where the kernel has no such figure,
		// or "<=N" for a slot's mark.
		for k, u := range c[i][9:15] {
			if _, err := strconv.ParseInt(strings.TrimPrefix(u, "<="), 10, 64); err != nil && (k < 2 || u != "-") {
				t.Errorf("joblog seq %d: usage column %d %q, want a number (or - for a figure not measured)", i+1, 10+k, u)
			}
		}
		for _, col := range []int{2, 3} { // Starttime, JobRuntime: seconds with 3 decimals
			if _, err := strconv.ParseFloat(strings.TrimSpace(c[i][col]), 64); err != nil || !strings.Contains(c[i][col], ".") {
				t.Errorf("joblog seq %d column %d %q: want seconds such as 1700000000.123", i+1, col+1, c[i][col])
			}
		}
	}

	// Each resumes from the other's joblog: --resume runs seqs 4 and 5,
	// --resume-failed 2, 4 and 5.
	more := []string{"echo {}", ":::", "0", "3", "0", "4", "5"}
	for _, tc := range []struct {
		flag, from string
		want       []string
	}{
		{"--resume", "cgpool", []string{"4", "5"}},
		{"--resume", "GNU parallel", []string{"4", "5"}},
		{"--resume-failed", "cgpool", []string{"3", "4", "5"}},
		{"--resume-failed", "GNU parallel", []string{"3", "4", "5"}},
	} {
		src := map[string]string{"cgpool": cgLog, "GNU parallel": gnuLog}[tc.from]
		for _, tool := range []string{"cgpool", "GNU parallel"} {
			log := filepath.Join(dir, "resume.log")
			b, _ := os.ReadFile(src)
			os.WriteFile(log, b, 0o644)
			a := append([]string{"-j1", tc.flag, "--joblog", log}, more...)
			var r ran
			if tool == "cgpool" {
				r = cgpoolRun(t, dir, "", a...)
			} else {
				r = gnuParallel(t, dir, "", a...)
			}
			if got := sortedLines(r.stdout); !slices.Equal(got, tc.want) || r.code != 0 {
				t.Errorf("%s %s from %s's joblog ran %q (exit %d), want %q; stderr %q", tool, tc.flag, tc.from, got, r.code, tc.want, r.stderr)
			}
		}
	}
}
