package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
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
	"golang.org/x/sys/unix"
)

// roCgroupEnv names the cgroup v2 mount point that the cgpool process
// started by roCgroup bind-mounts read-only over itself, in the private
// mount namespace it was started in: a container's read-only
// /sys/fs/cgroup, without the container.
const roCgroupEnv = "CGPOOL_TEST_RO_CGROUP"

// readOnlyCgroupForTest, in the test binary acting as cgpool, makes the
// cgroup v2 mount read-only in its (private) mount namespace.
func readOnlyCgroupForTest() {
	p := os.Getenv(roCgroupEnv)
	if p == "" {
		return
	}
	os.Unsetenv(roCgroupEnv) // the reaper and tasks inherit the namespace, not the job
	if err := unix.Mount(p, p, "", unix.MS_BIND, ""); err != nil {
		fmt.Fprintln(os.Stderr, "test: bind", p, err)
		os.Exit(99)
	}
	if err := unix.Mount("", p, "", unix.MS_REMOUNT|unix.MS_BIND|unix.MS_RDONLY, ""); err != nil {
		fmt.Fprintln(os.Stderr, "test: remount read-only", p, err)
		os.Exit(99)
	}
}

// roCgroup returns "cgpool args..." to run in a private mount namespace
// (unshare -m: Go makes its mounts private) where the cgroup v2 mount is
// read-only.
func roCgroup(ctx context.Context, t *testing.T, args ...string) *exec.Cmd {
	t.Helper()
	if os.Geteuid() != 0 {
		kerneltest.Skipf(t, "a private mount namespace with a read-only cgroupfs needs root")
	}
	m, err := cgroup.FindMount()
	if err != nil {
		kerneltest.Skipf(t, "no cgroup v2 mount to make read-only: %v", err)
	}
	cmd := cgpool(ctx, args...)
	cmd.Env = append(cmd.Env, roCgroupEnv+"="+m.Point)
	cmd.SysProcAttr = &syscall.SysProcAttr{Unshareflags: syscall.CLONE_NEWNS}
	return cmd
}

// TestReducedModeReadOnlyCgroupfs: issue 12 acceptance 4a. With the
// cgroup v2 mount read-only, cgpool run falls back to reduced mode and
// says so in one line on stderr; a timeout still kills the command's
// process group; a memory limit is refused; cgpool serve refuses to start
// without --allow-no-cgroup and with it serves, stats and ps naming the
// missing guarantees.
func TestReducedModeReadOnlyCgroupfs(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	t.Run("run", func(t *testing.T) {
		var out, errb bytes.Buffer
		cmd := roCgroup(ctx, t, "run", "--once", "--", "sh", "-c", "echo hello")
		cmd.Stdout, cmd.Stderr = &out, &errb
		if err := cmd.Run(); err != nil {
			t.Fatalf("cgpool run: %v; stderr:\n%s", err, errb.String())
		}
		if out.String() != "hello\n" {
			t.Errorf("stdout %q, want hello", out.String())
		}
		lines := strings.Split(strings.TrimSuffix(errb.String(), "\n"), "\n")
		if len(lines) != 1 || !strings.Contains(lines[0], "reduced mode") {
			t.Fatalf("stderr %q: want exactly one line announcing reduced mode", errb.String())
		}
		for _, m := range cgroup.ReducedMissing {
			if !strings.Contains(lines[0], m) {
				t.Errorf("the warning %q does not name the missing guarantee %q", lines[0], m)
			}
		}
	})
	t.Run("timeout kills the process group", func(t *testing.T) {
		var out, errb bytes.Buffer
		cmd := roCgroup(ctx, t, "run", "--once", "--timeout", "500ms", "--", "sh", "-c", "sleep 300 & echo $!; wait")
		cmd.Stdout, cmd.Stderr = &out, &errb
		if code := exitStatus(t, cmd.Run()); code != exitTimeout {
			t.Fatalf("exit %d, want %d; stderr:\n%s", code, exitTimeout, errb.String())
		}
		pid, err := strconv.Atoi(strings.TrimSpace(out.String()))
		if err != nil {
			t.Fatalf("no child pid on stdout %q", out.String())
		}
		if alive(pid) {
			t.Errorf("the timed-out command's child %d outlived cgpool run", pid)
			_ = unix.Kill(pid, unix.SIGKILL)
		}
		if !strings.Contains(errb.String(), "its process group") {
			t.Errorf("stderr %q does not say the process group was killed", errb.String())
		}
	})
	t.Run("memory limit refused", func(t *testing.T) {
		var errb bytes.Buffer
		cmd := roCgroup(ctx, t, "run", "--memory-max", "64M", "--", "true")
		cmd.Stderr = &errb
		if code := exitStatus(t, cmd.Run()); code != exitUsage || !strings.Contains(errb.String(), "refused in reduced mode") {
			t.Errorf("exit %d, stderr %q: want %d and a refusal naming reduced mode", code, errb.String(), exitUsage)
		}
	})
	t.Run("check", func(t *testing.T) {
		var out bytes.Buffer
		cmd := roCgroup(ctx, t, "check", "--json", "--progress", "never")
		cmd.Stdout = &out
		if code := exitStatus(t, cmd.Run()); code != exitFailure {
			t.Errorf("cgpool check exit %d in reduced mode, want %d (guarantees missing)", code, exitFailure)
		}
		var rep struct {
			Host    struct{ Reduced bool }
			Missing []string
		}
		if err := json.Unmarshal(out.Bytes(), &rep); err != nil {
			t.Fatalf("check --json: %v\n%s", err, out.String())
		}
		if !rep.Host.Reduced {
			t.Error("check --json: host.reduced is not set")
		}
		for _, m := range cgroup.ReducedMissing {
			if !slices.Contains(rep.Missing, "reduced mode: "+m) {
				t.Errorf("check --json: missing %q does not name %q", rep.Missing, m)
			}
		}
	})
	t.Run("serve refuses without --allow-no-cgroup", func(t *testing.T) {
		var errb bytes.Buffer
		sock := filepath.Join(shortTempDir(t, "cgpool-ro"), "s.sock")
		cmd := roCgroup(ctx, t, "serve", "--socket", sock, "--allow-root")
		cmd.Stderr = &errb
		if code := exitStatus(t, cmd.Run()); code != exitUsage || !strings.Contains(errb.String(), "--allow-no-cgroup") {
			t.Errorf("exit %d, stderr %q: want %d and a hint at --allow-no-cgroup", code, errb.String(), exitUsage)
		}
	})
	t.Run("private serve falls back by itself", func(t *testing.T) {
		// The Python Executor's private supervisor: serve --private-dir.
		dir := shortTempDir(t, "cgpool-ro")
		sock := filepath.Join(dir, "s.sock")
		var errb bytes.Buffer
		cmd := roCgroup(ctx, t, "serve", "--socket", sock, "--private-dir", dir, "--ready", "--exit-with-stdin", "--allow-root", "--log-level", "warn")
		stdin, err := cmd.StdinPipe()
		if err != nil {
			t.Fatal(err)
		}
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		cmd.Stderr = &errb
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		line, err := bufio.NewReader(out).ReadString('\n')
		stdin.Close() // the owner goes: the supervisor shuts down
		werr := cmd.Wait()
		if err != nil || line != "ready "+sock+"\n" {
			t.Fatalf("private serve said %q, %v (exit %v); stderr:\n%s", line, err, werr, errb.String())
		}
		if werr != nil {
			t.Errorf("private serve: %v\n%s", werr, errb.String())
		}
		if n := strings.Count(errb.String(), "reduced mode"); n != 1 || strings.Count(errb.String(), "\n") != 1 {
			t.Errorf("private serve's stderr %q: want the one reduced-mode line", errb.String())
		}
	})
	t.Run("serve --allow-no-cgroup", func(t *testing.T) {
		sock := filepath.Join(shortTempDir(t, "cgpool-ro"), "s.sock")
		cmd := roCgroup(ctx, t, "serve", "--socket", sock, "--ready", "--allow-root", "--allow-no-cgroup", "--log-level", "warn")
		startReady(t, cmd, sock)
		defer func() {
			if err := cgpool(ctx, "shutdown", "--socket", sock).Run(); err != nil {
				t.Errorf("cgpool shutdown: %v", err)
			}
			if err := cmd.Wait(); err != nil {
				t.Errorf("cgpool serve: %v", err)
			}
		}()
		out, err := cgpool(ctx, "submit", "--socket", sock, "--", "sh", "-c", "echo ok").Output()
		if err != nil || string(out) != "ok\n" {
			t.Errorf("submit: %q, %v", out, err)
		}
		out, err = cgpool(ctx, "stats", "--json", "--socket", sock).Output()
		if err != nil || !strings.Contains(string(out), "missing_guarantees") || !strings.Contains(string(out), cgroup.ReducedMissing[1]) {
			t.Errorf("stats does not name the missing guarantees: %v\n%s", err, out)
		}
		out, err = cgpool(ctx, "ps", "--socket", sock).Output()
		if err != nil || !strings.Contains(string(out), "reduced mode") {
			t.Errorf("ps does not say the pool runs in reduced mode: %v\n%s", err, out)
		}
	})
}

// alive reports whether pid runs (a zombie does not).
func alive(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	i := bytes.LastIndexByte(b, ')')
	return i >= 0 && i+2 < len(b) && b[i+2] != 'Z'
}
