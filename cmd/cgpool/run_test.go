package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cgpool/cgpool/cgroup"
)

// ran is what a command printed and how it exited.
type ran struct {
	stdout, stderr string
	code           int
}

// runTool runs a command with stdin and returns what it did.
func runTool(t *testing.T, cmd *exec.Cmd, stdin string) ran {
	t.Helper()
	cmd.Stdin = strings.NewReader(stdin)
	var so, se bytes.Buffer
	cmd.Stdout, cmd.Stderr = &so, &se
	err := cmd.Run()
	return ran{so.String(), se.String(), exitStatus(t, err)}
}

// cgpoolRun runs "cgpool run args..." in dir.
func cgpoolRun(t *testing.T, dir, stdin string, args ...string) ran {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := cgpool(ctx, append([]string{"run", "--progress", "never"}, args...)...)
	cmd.Dir = dir
	return runTool(t, cmd, stdin)
}

// gnuParallel runs GNU parallel with args in dir; without it the test
// skips (in the VM, where .ci/run does not install it, too: the
// comparison is a host test).
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

func sortedLines(s string) []string {
	l := strings.Split(strings.TrimSuffix(s, "\n"), "\n")
	slices.Sort(l)
	return l
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

// joblogRows reads a joblog into rows of fields, without the header.
func joblogRows(t *testing.T, path string) [][]string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var rows [][]string
	for i, l := range strings.Split(strings.TrimSuffix(string(b), "\n"), "\n") {
		if i == 0 {
			if !strings.HasPrefix(l, "Seq\tHost\tStarttime\tJobRuntime\tSend\tReceive\tExitval\tSignal\t") {
				t.Fatalf("%s: header %q is not GNU parallel's", path, l)
			}
			continue
		}
		rows = append(rows, strings.Split(l, "\t"))
	}
	slices.SortFunc(rows, func(a, b []string) int { x, _ := strconv.Atoi(a[0]); y, _ := strconv.Atoi(b[0]); return x - y })
	return rows
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
		for _, u := range c[i][9:15] {
			if u != "-" {
				t.Errorf("joblog seq %d: usage column %q, want - (no usage yet)", i+1, u)
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

// TestRunStartsAsLinesArrive: the first command runs (and its output is
// out) while its input is still open, as with xargs.
func TestRunStartsAsLinesArrive(t *testing.T) {
	requireCgroups(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := cgpool(ctx, "run", "-j2", "echo", "got")
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	rd := bufio.NewReader(out)
	io.WriteString(in, "1\n")
	line, err := rd.ReadString('\n') // before the input ends
	if err != nil || line != "got 1\n" {
		t.Fatalf("first line %q, %v; want the first command's output while the input is open", line, err)
	}
	io.WriteString(in, "2\n")
	in.Close()
	rest, _ := io.ReadAll(rd)
	if string(rest) != "got 2\n" {
		t.Errorf("then %q, want %q", rest, "got 2\n")
	}
	if err := cmd.Wait(); err != nil {
		t.Errorf("cgpool run: %v", err)
	}
}

// TestRunQuoting: values never become shell code, in a shell line or in
// an sh -c script, and reach an argument of their own intact.
func TestRunQuoting(t *testing.T) {
	requireCgroups(t)
	dir := t.TempDir()
	evil := "$(echo INJECTED) `echo INJECTED` ; echo INJECTED 'it''s' \"q\""
	for _, args := range [][]string{
		{"sh", "-c", "printf '%s\\n' {}"},
		{"bash", "-ec", "printf '%s\\n' {}"},
		{"printf %s\\\\n {}"},
		{"printf", "%s\\n", "{}"},
		{"printf", "%s\\n"},
	} {
		r := cgpoolRun(t, dir, evil+"\n", args...)
		if r.stdout != evil+"\n" || r.code != 0 {
			t.Errorf("cgpool run %q with input %q printed %q (exit %d, stderr %q), want the input back", args, evil, r.stdout, r.code, r.stderr)
		}
	}
}

// TestRunExitAndMessages: not found is 127 and counted apart, not
// executable 126; the summary reads as English; --once gives the
// command's own status.
func TestRunExitAndMessages(t *testing.T) {
	requireCgroups(t)
	dir := t.TempDir()
	noexec := filepath.Join(dir, "noexec.sh")
	os.WriteFile(noexec, []byte("#!/bin/sh\necho hi\n"), 0o644)
	for _, tc := range []struct {
		name     string
		stdin    string
		args     []string
		code     int
		stderr   []string
		noStderr []string
	}{
		{"not found once", "", []string{"--once", "/nonexistent/cmd"}, 127, []string{"cgpool: /nonexistent/cmd: command not found\n"}, []string{"commands"}},
		{"not executable once", "", []string{"--once", noexec}, 126, []string{"cannot be executed (permission denied)"}, []string{noexec + ": " + noexec}},
		{"exit status once", "", []string{"--once", "sh", "-c", "exit 7"}, 7, []string{"exited with status 7"}, []string{"commands"}},
		{"ok once: silent", "", []string{"--once", "true"}, 0, nil, []string{"cgpool"}},
		{"one command", "x\n", []string{"false"}, 1, []string{"cgpool: 1 command: 1 failed (exit 1: 1)\n"}, []string{"1 commands"}},
		{"not found counted apart", "", []string{"{}", ":::", "/nonexistent/a", "true", noexec, "false"}, 3,
			[]string{"cgpool: 4 commands: 1 succeeded, 3 failed (exit 1: 1, not executable: 1, not found: 1)\n"}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := cgpoolRun(t, dir, tc.stdin, tc.args...)
			if r.code != tc.code {
				t.Errorf("exit %d, want %d; stderr %q", r.code, tc.code, r.stderr)
			}
			for _, w := range tc.stderr {
				if !strings.Contains(r.stderr, w) {
					t.Errorf("stderr %q lacks %q", r.stderr, w)
				}
			}
			for _, w := range tc.noStderr {
				if strings.Contains(r.stderr, w) {
					t.Errorf("stderr %q has %q", r.stderr, w)
				}
			}
		})
	}
}

// TestRunUsageErrors: bad usage exits 2 before anything runs.
func TestRunUsageErrors(t *testing.T) {
	dir := t.TempDir()
	for _, args := range [][]string{
		{"-j", "0", "true"},
		{"--halt", "sometimes", "true"},
		{"--retries", "-1", "true"},
		{"--resume", "true"},
		{"--colsep", "(", "true"},
		{"--once", "echo", "{}"},
		{"--once", "true", ":::", "a"},
		{"--pipe", "wc", ":::", "a"},
		{"--line-buffer", "--group", "true"},
		{"echo", ":::"},
		{":::", "a"},
		{"-a", filepath.Join(dir, "missing"), "echo"},
	} {
		r := cgpoolRun(t, dir, "", args...)
		if r.code != exitUsage || !strings.HasPrefix(r.stderr, "cgpool: ") || strings.Count(r.stderr, "cgpool:") != 1 {
			t.Errorf("cgpool run %q: exit %d, stderr %q; want 2 and one line", args, r.code, r.stderr)
		}
	}
}

// TestRunBarAndQuiet: --bar is the progress bar (on stderr; stdout is
// the commands'), --quiet drops the output but not the summary.
func TestRunBarAndQuiet(t *testing.T) {
	requireCgroups(t)
	dir := t.TempDir()
	r := cgpoolRun(t, dir, "", "--bar", "-k", "echo", ":::", "a", "b")
	if r.stdout != "a\nb\n" || !strings.Contains(r.stderr, "cgpool run") {
		t.Errorf("--bar: stdout %q, stderr %q; want the output and a bar on stderr", r.stdout, r.stderr)
	}
	r = cgpoolRun(t, dir, "", "--quiet", "echo", ":::", "a", "b")
	if r.stdout != "" || !strings.Contains(r.stderr, "2 commands: 2 succeeded") {
		t.Errorf("--quiet: stdout %q, stderr %q", r.stdout, r.stderr)
	}
}

// lockedBuffer is a bytes.Buffer that a test may read while a command
// writes to it.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func mustMount(t *testing.T) string {
	t.Helper()
	m, err := cgroup.FindMount()
	if err != nil {
		t.Fatal(err)
	}
	return m.Point
}

// waitFor polls cond for up to 30 s, failing with what.
func waitFor(t *testing.T, cond func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestCommandForms: which argument is shell code, and so gets quoted
// values.
func TestCommandForms(t *testing.T) {
	for _, tc := range []struct {
		args []string
		raw  bool
		argv []string
	}{
		{[]string{"echo", "{}"}, false, []string{"echo", "a b$x"}},
		{[]string{"echo"}, false, []string{"echo", "a b$x"}},
		{[]string{"echo {}"}, false, []string{"/bin/sh", "-c", "echo 'a b$x'"}},
		{[]string{"echo"}, false, []string{"echo", "a b$x"}},
		{[]string{"sh", "-c", "echo {}"}, false, []string{"sh", "-c", "echo 'a b$x'"}},
		{[]string{"/bin/bash", "-o", "pipefail", "-ec", "x={}", "{}"}, false, []string{"/bin/bash", "-o", "pipefail", "-ec", "x='a b$x'", "a b$x"}},
		{[]string{"busybox", "sh", "-c", "echo {}"}, false, []string{"busybox", "sh", "-c", "echo 'a b$x'"}},
		{[]string{"sh", "script.sh", "-c", "{}"}, false, []string{"sh", "script.sh", "-c", "a b$x"}},
		{[]string{"python3", "-c", "print('{}')"}, false, []string{"python3", "-c", "print('a b$x')"}},
		{[]string{"sh", "-c", "echo {}"}, true, []string{"sh", "-c", "echo a b$x"}},
		{[]string{"echo {}"}, true, []string{"echo a b$x"}},
		{[]string{"echo {x}"}, false, []string{"/bin/sh", "-c", "echo {x} 'a b$x'"}},
	} {
		c := newCommand(tc.args, tc.raw)
		got, _ := c.expand(&job{seq: 1, slot: 1, args: []string{"a b$x"}})
		if !slices.Equal(got, tc.argv) {
			t.Errorf("newCommand(%q, raw=%v).expand = %q, want %q", tc.args, tc.raw, got, tc.argv)
		}
	}
}

func TestParseHalt(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want haltSpec
		ok   bool
	}{
		{"never", haltSpec{never: true}, true},
		{"now,fail=1", haltSpec{now: true, why: "fail", count: 1}, true},
		{"soon,fail=30%", haltSpec{why: "fail", pct: 0.3}, true},
		{"2", haltSpec{now: true, why: "fail", count: 1}, true},
		{"-1", haltSpec{why: "success", count: 1}, true},
		{"20%", haltSpec{why: "fail", pct: 0.2}, true},
		{"now,done=3", haltSpec{now: true, why: "done", count: 3}, true},
		{"later,fail=1", haltSpec{}, false},
		{"now,fail=0", haltSpec{}, false},
		{"now,fail=101%", haltSpec{}, false},
		{"now,boom=1", haltSpec{}, false},
	} {
		got, err := parseHalt(tc.in)
		got.text = ""
		if (err == nil) != tc.ok || (tc.ok && got != tc.want) {
			t.Errorf("parseHalt(%q) = %+v, %v; want %+v ok=%v", tc.in, got, err, tc.want, tc.ok)
		}
	}
}
