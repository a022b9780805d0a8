package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cgpool/cgpool/cgroup"
	"github.com/cgpool/cgpool/internal/kerneltest"
)

// TestMain lets the test binary act as the cgpool command.
func TestMain(m *testing.M) {
	if os.Getenv("CGPOOL_TEST_MAIN") == "1" {
		if f := os.Getenv("CGPOOL_TEST_RSS"); f != "" {
			rssMain(f)
		}
		readOnlyCgroupForTest() // see roCgroup (reduced_test.go)
		main()
		os.Exit(0)
	}
	if path := os.Getenv("CGPOOL_TEST_RELAY"); path != "" {
		relayMain(path) // see BenchmarkDaemonRoundTrip
		os.Exit(0)
	}
	kerneltest.Main(m)
}

// rssMain runs "cgpool args..." as a child, writes its peak RSS (KiB, from
// wait4) to file and exits with its status. A child that Go's os/exec
// starts from a big process (the test) inherits that process's peak RSS
// at its execve (the kernel keeps ru_maxrss across execve, and Go starts
// children with CLONE_VM): started from this small process instead, the
// figure is cgpool's own.
func rssMain(file string) {
	exe, _ := os.Executable()
	cmd := exec.Command(exe, os.Args[1:]...)
	cmd.Env = slices.DeleteFunc(os.Environ(), func(kv string) bool { return strings.HasPrefix(kv, "CGPOOL_TEST_RSS=") })
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	err := cmd.Run()
	if cmd.ProcessState == nil {
		fmt.Fprintln(os.Stderr, "rssMain:", err)
		os.Exit(1)
	}
	os.WriteFile(file, []byte(strconv.FormatInt(cmd.ProcessState.SysUsage().(*syscall.Rusage).Maxrss, 10)), 0o644)
	os.Exit(cmd.ProcessState.ExitCode())
}

// cgpool runs the test binary as "cgpool args...".
func cgpool(ctx context.Context, args ...string) *exec.Cmd {
	exe, _ := os.Executable()
	cmd := exec.CommandContext(ctx, exe, args...)
	cmd.Env = append(os.Environ(), "CGPOOL_TEST_MAIN=1")
	return cmd
}

func exitStatus(t *testing.T, err error) int {
	t.Helper()
	var ee *exec.ExitError
	if err == nil {
		return 0
	}
	if errors.As(err, &ee) {
		return ee.ExitCode()
	}
	t.Fatalf("run: %v", err)
	return -1
}

// requireCgroups skips (fails in the VM) where cgpool cannot make cgroups.
func requireCgroups(t testing.TB) {
	t.Helper()
	kerneltest.NewRoot(t) // skips with the reason if no writable cgroup v2
}

// startServe starts "cgpool serve" and returns its socket; it is shut
// down and must leave no socket behind.
func startServe(t testing.TB, args ...string) string {
	t.Helper()
	sock, _ := startServeCmd(t, args...)
	return sock
}

// startServeCmd is startServe that also returns the serve process.
func startServeCmd(t testing.TB, args ...string) (string, *exec.Cmd) {
	t.Helper()
	requireCgroups(t)
	sock := filepath.Join(shortTempDir(t, "cgpool-cli"), "cgpool.sock")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	cmd := cgpool(ctx, append([]string{"serve", "--socket", sock, "--ready", "-j", "2", "--log-level", "warn", "--allow-root"}, args...)...)
	startReady(t, cmd, sock)
	t.Cleanup(func() {
		defer cancel()
		if err := cgpool(ctx, "shutdown", "--socket", sock).Run(); err != nil {
			t.Errorf("cgpool shutdown: %v", err)
		}
		if err := cmd.Wait(); err != nil {
			t.Errorf("cgpool serve: %v", err)
		}
		if _, err := os.Stat(sock); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("socket left behind: %v", err)
		}
	})
	return sock, cmd
}

// shortTempDir makes a private directory with a short path (a socket path
// must fit in 108 bytes, which t.TempDir's may not), removed when the test
// ends.
func shortTempDir(t testing.TB, prefix string) string {
	t.Helper()
	dir, err := os.MkdirTemp("", prefix)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// startReady starts a "serve --ready" command and waits for it to say it
// serves sock.
func startReady(t testing.TB, cmd *exec.Cmd, sock string) {
	t.Helper()
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	if line, err := bufio.NewReader(out).ReadString('\n'); err != nil || line != "ready "+sock+"\n" {
		t.Fatalf("serve said %q, %v; want ready on %s", line, err, sock)
	}
}

// TestSubmitExitCodes: acceptance 13 (the OOM code in the VM).
func TestSubmitExitCodes(t *testing.T) {
	sock := startServe(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, tc := range []struct {
		name string
		args []string
		want int
	}{
		{"exit 3", []string{"--", "sh", "-c", "exit 3"}, 3},
		{"ok", []string{"--", "true"}, 0},
		{"timeout", []string{"--timeout", "300ms", "--", "sleep", "10"}, exitTimeout},
		{"killed", []string{"--", "sh", "-c", "kill -TERM $$"}, exitSignal + 15},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cmd := cgpool(ctx, append([]string{"submit", "--socket", sock}, tc.args...)...)
			out, err := cmd.CombinedOutput()
			if got := exitStatus(t, err); got != tc.want {
				t.Errorf("cgpool submit %q: exit %d, want %d; output %q", tc.args, got, tc.want, out)
			}
		})
	}
	cmd := cgpool(ctx, "submit", "--socket", sock, "--", "sh", "-c", "echo out; echo err >&2")
	var so, se strings.Builder
	cmd.Stdout, cmd.Stderr = &so, &se
	if err := cmd.Run(); err != nil || so.String() != "out\n" || se.String() != "err\n" {
		t.Errorf("relay: stdout %q stderr %q err %v", so.String(), se.String(), err)
	}
	out, err := cgpool(ctx, "stats", "--json", "--socket", sock).Output()
	if err != nil || !strings.Contains(string(out), `"tasks_received": 5`) {
		t.Errorf("cgpool stats: %v\n%s", err, out)
	}
	out, err = cgpool(ctx, "ps", "--socket", sock).Output()
	if err != nil || !strings.Contains(string(out), "POOL") || !strings.Contains(string(out), "default") {
		t.Errorf("cgpool ps: %v\n%s", err, out)
	}
	for _, args := range [][]string{{"env", "GREETING=hi"}, {"recycle"}} {
		if out, err := cgpool(ctx, append(args, "--socket", sock)...).CombinedOutput(); err != nil {
			t.Errorf("cgpool %v: %v\n%s", args, err, out)
		}
	}
	cmd = cgpool(ctx, "submit", "--socket", sock, "--", "sh", "-c", "echo $GREETING")
	if out, err := cmd.Output(); err != nil || string(out) != "hi\n" {
		t.Errorf("after cgpool env + recycle, the task printed %q (%v), want hi", out, err)
	}
	if out, err := cgpool(ctx, "submit", "--socket", sock, "--priority", "-1", "--", "true").CombinedOutput(); exitStatus(t, err) != exitUsage {
		t.Errorf("negative priority: %v\n%s", err, out)
	}
}

// TestSubmitOOM: a task over its memory limit exits 125 (VM only).
func TestSubmitOOM(t *testing.T) {
	r := kerneltest.NewRoot(t)
	kerneltest.RequireControllers(t, r, "memory")
	sock := startServe(t, "--memory-max", "64M")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := cgpool(ctx, "submit", "--socket", sock, "--memory-max", "32M", "--", "awk", `BEGIN { s = "x"; while (1) s = s s }`)
	out, err := cmd.CombinedOutput()
	if got := exitStatus(t, err); got != exitOOM {
		t.Errorf("exit %d, want %d (OOM); output %q", got, exitOOM, out)
	}
}

// TestRunTemplate: cgpool run over input lines, with a failure summary.
func TestRunTemplate(t *testing.T) {
	requireCgroups(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := cgpool(ctx, "run", "-j", "2", "--timeout", "2s", "--", "sh", "-c", "test {} != 3 || exit 7; echo line {}")
	cmd.Stdin = strings.NewReader("1\n2\n3\n4\n")
	var so, se strings.Builder
	cmd.Stdout, cmd.Stderr = &so, &se
	err := cmd.Run()
	if got := exitStatus(t, err); got != 1 {
		t.Errorf("exit %d, want 1 (one failed command); stderr %q", got, se.String())
	}
	for _, want := range []string{"line 1\n", "line 2\n", "line 4\n"} {
		if !strings.Contains(so.String(), want) {
			t.Errorf("stdout %q lacks %q", so.String(), want)
		}
	}
	if !strings.Contains(se.String(), "cgpool: 4 commands: 3 succeeded, 1 failed (exit 7: 1)\n") {
		t.Errorf("summary missing from stderr %q", se.String())
	}
}

// TestDemo: the README's first command.
func TestDemo(t *testing.T) {
	requireCgroups(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := cgpool(ctx, "demo").Output()
	if err != nil {
		t.Fatalf("cgpool demo: %v\n%s", err, out)
	}
	s := string(out)
	t.Logf("cgpool demo:\n%s", s)
	for _, want := range []string{"ok: hello from cgroup", "timed out after 2s", "is gone too", "signal 11"} {
		if !strings.Contains(s, want) {
			t.Errorf("demo output lacks %q:\n%s", want, s)
		}
	}
	if kerneltest.InVM() && !strings.Contains(s, "OOM-killed") {
		t.Errorf("in the VM the demo must show the OOM kill:\n%s", s)
	}
}

func TestParseSize(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int64
		ok   bool
	}{{"64M", 64 << 20, true}, {"1G", 1 << 30, true}, {"512k", 512 << 10, true}, {"100", 100, true}, {"64MiB", 64 << 20, true}, {"x", 0, false}, {"-1", 0, false}} {
		got, err := parseSize(tc.in)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("parseSize(%q) = %d, %v; want %d ok=%v", tc.in, got, err, tc.want, tc.ok)
		}
	}
}

// TestStaleRootSwept: the cgroup root left by a supervisor that was
// SIGKILLed is removed by the next cgpool that starts.
func TestStaleRootSwept(t *testing.T) {
	requireCgroups(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	sock := filepath.Join(shortTempDir(t, "cgpool-cli"), "s.sock")
	cmd := cgpool(ctx, "serve", "--socket", sock, "--ready", "-j", "1", "--log-level", "warn", "--allow-root")
	startReady(t, cmd, sock)
	m, err := cgroup.FindMount()
	if err != nil {
		t.Fatal(err)
	}
	stale := filepath.Join(m.Point, "cgpool-"+strconv.Itoa(cmd.Process.Pid))
	t.Cleanup(func() { // whatever this test leaves, it removes
		if top, err := cgroup.OpenRoot(m.Point, nil); err == nil {
			top.Child(filepath.Base(stale)).Destroy(context.Background(), 10*time.Second)
		}
	})
	if _, err := os.Stat(stale); err != nil {
		t.Fatalf("the supervisor's root %s: %v", stale, err)
	}
	// Both die at once (the supervisor and its reaper, which would
	// otherwise clean up at once: see TestKilledServeLeavesNothing).
	syscall.Kill(reaperOf(t, cmd.Process.Pid), syscall.SIGKILL)
	cmd.Process.Kill()
	cmd.Wait()
	if _, err := os.Stat(stale); err != nil {
		t.Fatalf("the killed supervisor's root is already gone (%v); nothing to test", err)
	}
	if out, err := cgpool(ctx, "run", "--once", "--", "true").CombinedOutput(); err != nil {
		t.Fatalf("cgpool run: %v\n%s", err, out)
	}
	if _, err := os.Stat(stale); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("stale root %s still there after the next start: %v", stale, err)
	}
}

// TestServeSocketActivation: given a listening socket the way systemd
// passes one (fd 3, LISTEN_FDS=1, LISTEN_PID of the server), serve uses it
// instead of making its own, serves tasks on it, and leaves it in place on
// exit: the file is systemd's.
func TestServeSocketActivation(t *testing.T) {
	requireCgroups(t)
	dir := shortTempDir(t, "cgpool-act")
	sock := filepath.Join(dir, "activated.sock")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: sock, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	ln.SetUnlinkOnClose(false)
	f, err := ln.File()
	ln.Close()
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	exe, _ := os.Executable()
	// sh sets LISTEN_PID to its own pid, which exec hands on to serve.
	cmd := exec.CommandContext(ctx, "/bin/sh", "-c",
		`export LISTEN_PID=$$ LISTEN_FDS=1; exec "$0" serve --ready -j 1 --log-level warn --allow-root --socket "$1"`,
		exe, filepath.Join(dir, "not-used", "cgpool.sock"))
	cmd.Env = append(os.Environ(), "CGPOOL_TEST_MAIN=1")
	cmd.ExtraFiles = []*os.File{f}
	startReady(t, cmd, sock) // on the passed socket, not --socket's

	if got, err := cgpool(ctx, "submit", "--socket", sock, "--", "sh", "-c", "echo hi").Output(); err != nil || string(got) != "hi\n" {
		t.Errorf("a task through the passed socket: %q, %v", got, err)
	}
	if err := cgpool(ctx, "shutdown", "--socket", sock).Run(); err != nil {
		t.Errorf("cgpool shutdown: %v", err)
	}
	if err := cmd.Wait(); err != nil {
		t.Errorf("cgpool serve: %v", err)
	}
	if _, err := os.Stat(sock); err != nil {
		t.Errorf("the passed socket is systemd's to remove, but: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "not-used")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("serve made its own socket directory although systemd passed a socket: %v", err)
	}
}
