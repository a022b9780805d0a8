package main

import (
	"context"
	"crypto/sha256"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cgpool/cgpool/internal/kerneltest"
)

// TestSubmitUsageBeforeRoundTrip: bad usage exits 2 without asking the
// daemon (there is none at this socket: a round trip would exit 1).
func TestSubmitUsageBeforeRoundTrip(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	sock := filepath.Join(t.TempDir(), "none.sock")
	for _, args := range [][]string{
		{"submit", "--priority", "-1", "--", "true"},
		{"submit", "--timeout", "-1s", "--", "true"},
		{"submit", "--queue-timeout", "-1s", "--", "true"},
		{"submit", "--memory-max", "lots", "--", "true"},
		{"submit", "--env", "=x", "--", "true"},
		{"submit", "--env", "CGPOOL_TEST_SURELY_UNSET", "--", "true"},
		{"submit"},
		{"shutdown", "--deadline", "-1s"},
		{"env", "NOEQUALS"},
		{"stats", "extra"},
	} {
		out, err := cgpool(ctx, append(args, "--socket", sock)...).CombinedOutput()
		if code := exitStatus(t, err); code != exitUsage || strings.Count(string(out), "cgpool:") != 1 {
			t.Errorf("cgpool %q: exit %d, %q; want 2 and one line", args, code, out)
		}
	}
	// No daemon: one line, one prefix, and what to check.
	out, err := cgpool(ctx, "submit", "--socket", sock, "--", "true").CombinedOutput()
	if code := exitStatus(t, err); code != exitFailure || strings.Count(string(out), "cgpool") != 3 ||
		!strings.Contains(string(out), "cannot connect to the cgpool daemon at "+sock+": no such file or directory") {
		t.Errorf("no daemon: exit %d, %q", code, out)
	}
}

// TestSubmitCallersDirAndEnv: submit runs the command in the caller's
// directory with the environment it chose, not the daemon's.
func TestSubmitCallersDirAndEnv(t *testing.T) {
	sock := startServe(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	proj := t.TempDir()
	if err := os.WriteFile(filepath.Join(proj, "build.sh"), []byte("#!/bin/sh\necho built in \"$(pwd)\" with FOO=$FOO BAR=$BAR slot=${CGPOOL_SLOT_CGROUP:+set}\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	run := func(args ...string) (string, int) {
		cmd := cgpool(ctx, append([]string{"submit", "--socket", sock}, args...)...)
		cmd.Dir = proj
		cmd.Env = append(cmd.Env, "FOO=from-caller", "BAR=bar", "CGPOOL_SLOT_CGROUP=/not/this/one")
		out, err := cmd.CombinedOutput()
		return string(out), exitStatus(t, err)
	}
	if out, code := run("--", "./build.sh"); code != 0 || out != "built in "+proj+" with FOO= BAR= slot=set\n" {
		t.Errorf("submit ./build.sh from %s: exit %d, %q", proj, code, out)
	}
	if out, code := run("--env", "FOO", "--env", "BAR=set", "--", "./build.sh"); code != 0 || out != "built in "+proj+" with FOO=from-caller BAR=set slot=set\n" {
		t.Errorf("--env FOO --env BAR=set: exit %d, %q", code, out)
	}
	if out, code := run("--env-all", "--", "sh", "-c", `echo "$FOO $BAR $CGPOOL_SLOT_CGROUP"`); code != 0 || strings.Contains(out, "/not/this/one") || !strings.HasPrefix(out, "from-caller bar ") {
		t.Errorf("--env-all: exit %d, %q (the caller's CGPOOL_ variables must not override the slot's)", code, out)
	}
	if out, code := run("--cwd", "/", "--", "pwd"); code != 0 || out != "/\n" {
		t.Errorf("--cwd /: exit %d, %q", code, out)
	}
	if out, code := run("--cwd", filepath.Join(proj, "missing"), "--", "pwd"); code != exitCancelled || !strings.Contains(out, "not a directory the supervisor can see") {
		t.Errorf("--cwd missing: exit %d, %q; want 120 and why", code, out)
	}
	if out, code := run("--", "/nonexistent/cmd"); code != exitNotFound || out != "cgpool: /nonexistent/cmd: command not found\n" {
		t.Errorf("not found: exit %d, %q", code, out)
	}
}

// TestSubmitInterrupt: Ctrl-C kills the task and exits 130, SIGTERM 143.
func TestSubmitInterrupt(t *testing.T) {
	sock := startServe(t)
	for _, sig := range []syscall.Signal{syscall.SIGINT, syscall.SIGTERM} {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		cmd := cgpool(ctx, "submit", "--socket", sock, "--", "sh", "-c", "echo started; exec sleep 300")
		// The output comes with the outcome: wait until the task runs.
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		waitFor(t, func() bool { return busySlots(t, ctx, sock) == 1 }, "the task to run")
		cmd.Process.Signal(sig)
		code := exitStatus(t, cmd.Wait())
		cancel()
		if code != exitSignal+int(sig) {
			t.Errorf("%v: exit %d, want %d", sig, code, exitSignal+int(sig))
		}
		waitFor(t, func() bool { return busySlots(t, context.Background(), sock) == 0 }, "the task to be killed")
	}
}

// busySlots counts the busy slots cgpool ps shows.
func busySlots(t *testing.T, ctx context.Context, sock string) int {
	out, err := cgpool(ctx, "ps", "--socket", sock).Output()
	if err != nil {
		t.Fatalf("cgpool ps: %v", err)
	}
	return strings.Count(string(out), " busy ")
}

// TestAdminForPeople: stats is a table (JSON with --json), ps lists
// processes only, env with no arguments lists the environment.
func TestAdminForPeople(t *testing.T) {
	sock := startServe(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cgpool(ctx, "submit", "--socket", sock, "--", "false").Run()
	out, err := cgpool(ctx, "stats", "--socket", sock).Output()
	if err != nil || !strings.HasPrefix(string(out), "POOL") || !strings.Contains(string(out), "default ") || strings.Contains(string(out), "{") {
		t.Errorf("cgpool stats: %v\n%s", err, out)
	}
	out, err = cgpool(ctx, "ps", "--socket", sock).Output()
	if err != nil || !strings.Contains(string(out), "default: 2 slots with no process to show (2 idle)") || strings.Contains(string(out), "\tidle") {
		t.Errorf("cgpool ps: %v\n%s", err, out)
	}
	for _, l := range strings.Split(string(out), "\n")[1:] {
		if f := strings.Fields(l); len(f) > 2 && f[0] == "default" && f[2] == "0" {
			t.Errorf("cgpool ps shows a slot with pid 0: %q", l)
		}
	}
	if out, err := cgpool(ctx, "env", "--socket", sock, "B=2", "A=1").CombinedOutput(); err != nil {
		t.Fatalf("cgpool env B=2 A=1: %v %s", err, out)
	}
	out, err = cgpool(ctx, "env", "--socket", sock).Output()
	if err != nil || string(out) != "A=1\nB=2\n" {
		t.Errorf("cgpool env: %v %q, want A=1 and B=2", err, out)
	}
}

// TestConfigErrors: every error of a config file is told at once, each
// naming its pool; parse and validation errors both exit 2; a pool
// without max_workers says that it is required.
func TestConfigErrors(t *testing.T) {
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, tc := range []struct {
		name, file string
		want       []string
	}{
		{"several errors", `
[[pools]]
name = "a"
[[pools]]
name = "b"
max_workers = 2
min_workers = 5
[[pools]]
name = "c"
max_workers = 1
idle_delay = "soon"
`, []string{"pool a: max_workers is required", "pool b: min_workers 5 must be in 0..max_workers (2)", `pool c: idle_delay "soon"`}},
		{"parse error", "[[pools]\n", []string{"cfg.toml"}},
		{"unknown key", "[[pools]]\nname = \"a\"\nmax_workers = 1\nmax_worker = 3\n", []string{"unknown settings"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(dir, "cfg.toml")
			os.WriteFile(path, []byte(tc.file), 0o644)
			out, err := cgpool(ctx, "serve", "--config", path, "--socket", filepath.Join(dir, "s.sock")).CombinedOutput()
			if code := exitStatus(t, err); code != exitUsage {
				t.Errorf("exit %d, want 2: %s", code, out)
			}
			for _, w := range tc.want {
				if !strings.Contains(string(out), w) {
					t.Errorf("output lacks %q:\n%s", w, out)
				}
			}
		})
	}
}

// TestRefusedLimitSameExit: a memory limit this host cannot enforce is
// refused with 120 by run and by submit alike.
func TestRefusedLimitSameExit(t *testing.T) {
	r := kerneltest.NewRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	limit := "64M" // refused where there is no memory controller
	var serveArgs []string
	if slices.Contains(r.Controllers(), "memory") {
		// Here the memory controller is there: ask for more than the pool's.
		limit, serveArgs = "128M", []string{"--memory-max", "64M"}
	} else {
		out, err := cgpool(ctx, "run", "--once", "--memory-max", limit, "--", "true").CombinedOutput()
		if code := exitStatus(t, err); code != exitCancelled {
			t.Errorf("run --memory-max: exit %d, want 120: %s", code, out)
		}
	}
	sock := startServe(t, serveArgs...)
	out, err := cgpool(ctx, "submit", "--socket", sock, "--memory-max", limit, "--", "true").CombinedOutput()
	if code := exitStatus(t, err); code != exitCancelled {
		t.Errorf("submit --memory-max: exit %d, want 120: %s", code, out)
	}
}

// vmHWM is a live process's peak RSS in KiB.
func vmHWM(t *testing.T, pid int) int64 {
	t.Helper()
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmHWM:"); ok {
			n, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return n
		}
	}
	t.Fatalf("no VmHWM in /proc/%d/status", pid)
	return 0
}

// TestSubmitStreamsOutput: cgpool submit gets every byte of a command's
// 50 MB stdout and 3 MB stderr (it streams them: the daemon's pool would
// cut them at its output_limit of 1 MiB), and the daemon's peak RSS does
// not grow by the output's size. --max-output kills the command past its
// bound, exits 122 and says so loudly.
func TestSubmitStreamsOutput(t *testing.T) {
	sock, serve := startServeCmd(t)
	wantOut, wantErr := bigOutput()
	dir := t.TempDir()
	src := filepath.Join(dir, "out")
	os.WriteFile(src, wantOut, 0o644)
	os.WriteFile(src+".err", wantErr, 0o644)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	before := vmHWM(t, serve.Process.Pid)
	cmd := cgpool(ctx, "submit", "--socket", sock, "--", "sh", "-c", "cat "+src+"; cat "+src+".err >&2")
	so, _ := os.Create(filepath.Join(dir, "so"))
	se, _ := os.Create(filepath.Join(dir, "se"))
	cmd.Stdout, cmd.Stderr = so, se
	err := cmd.Run()
	so.Close()
	se.Close()
	if err != nil {
		t.Fatalf("cgpool submit: %v", err)
	}
	gotOut, _ := os.ReadFile(filepath.Join(dir, "so"))
	gotErr, _ := os.ReadFile(filepath.Join(dir, "se"))
	if sha256.Sum256(gotOut) != sha256.Sum256(wantOut) || sha256.Sum256(gotErr) != sha256.Sum256(wantErr) {
		t.Errorf("stdout %d bytes, stderr %d bytes: not what the command wrote (50000000, 3000000)", len(gotOut), len(gotErr))
	}
	after := vmHWM(t, serve.Process.Pid)
	t.Logf("cgpool serve's peak RSS: %d KiB before, %d KiB after 53 MB of output", before, after)
	if after-before > 16<<10 {
		t.Errorf("cgpool serve's peak RSS grew by %d KiB relaying 53 MB of output", after-before)
	}

	out, err := cgpool(ctx, "submit", "--socket", sock, "--max-output", "1000", "--", "yes").Output()
	if code := exitStatus(t, err); code != exitOutputLimit || len(out) != 1000 {
		t.Errorf("--max-output 1000: exit %d, %d bytes; want 122 and 1000", code, len(out))
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) && !strings.Contains(string(ee.Stderr), "OUTPUT CUT") {
		t.Errorf("stderr %q: want the loud line", ee.Stderr)
	}
}
