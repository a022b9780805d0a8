package main

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
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

func sortedLines(s string) []string {
	l := strings.Split(strings.TrimSuffix(s, "\n"), "\n")
	slices.Sort(l)
	return l
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
	bash := "bash"
	if _, err := exec.LookPath(bash); err != nil {
		bash = "ash" // the VM's busybox: another shell whose -c script is quoted
	}
	for _, args := range [][]string{
		{"sh", "-c", "printf '%s\\n' {}"},
		{bash, "-ec", "printf '%s\\n' {}"},
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
