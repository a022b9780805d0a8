package spawn_test

import (
	"context"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cgpool/cgpool/internal/kerneltest"
	"github.com/cgpool/cgpool/spawn"
	"golang.org/x/sys/unix"
)

func TestMain(m *testing.M) {
	if os.Getenv(kerneltest.HelperEnv) == "fd3" {
		// Say hello over the inherited socket on fd 3, then echo the
		// environment variable the test set.
		f := os.NewFile(3, "fd3")
		f.Write([]byte("hello " + os.Getenv("CGPOOL_SPAWN_TEST")))
		os.Exit(0)
	}
	kerneltest.Main(m)
}

func wait(t *testing.T, p *spawn.Process) spawn.Exit {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	e, err := p.Wait(ctx)
	if err != nil {
		t.Fatalf("Wait: %v", err)
	}
	return e
}

// TestChildStartsInLeaf: the child's own /proc/self/cgroup names its leaf
// from its first instruction on (acceptance 1).
func TestChildStartsInLeaf(t *testing.T) {
	r := kerneltest.NewRoot(t)
	leaf := kerneltest.Leaf(t, &r.Group, "w-1", nil)
	c := kerneltest.Start(t, leaf, "cgroup")
	if got, want := c.Line(t), "0::"+leaf.CgroupPath(); got != want {
		t.Errorf("child's first /proc/self/cgroup line = %q, want %q", got, want)
	}
	if e := wait(t, c.Process); e.Code != 0 || e.Signaled() {
		t.Errorf("child exit = %v, want status 0", e)
	}
}

// TestFD3EnvAndExit: the worker socket arrives on fd 3, the environment is
// exactly the one given, and exit codes and signals come back.
func TestFD3EnvAndExit(t *testing.T) {
	r := kerneltest.NewRoot(t)
	leaf := kerneltest.Leaf(t, &r.Group, "w-1", nil)
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	ours, theirs := os.NewFile(uintptr(fds[0]), "ours"), os.NewFile(uintptr(fds[1]), "theirs")
	defer ours.Close()
	dir, err := leaf.Open()
	if err != nil {
		t.Fatal(err)
	}
	defer dir.Close()
	exe, _ := os.Executable()
	p, err := spawn.Start(spawn.Options{
		Path: exe, Cgroup: dir, ExtraFiles: []*os.File{theirs},
		Env: []string{kerneltest.HelperEnv + "=fd3", "CGPOOL_SPAWN_TEST=42"},
	})
	theirs.Close()
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	conn, err := net.FileConn(ours)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 64)
	n, err := conn.Read(buf)
	if err != nil || string(buf[:n]) != "hello 42" {
		t.Errorf("fd 3 read = %q, %v; want %q", buf[:n], err, "hello 42")
	}
	if e := wait(t, p); e.Code != 0 {
		t.Errorf("exit = %v", e)
	}

	c := kerneltest.Start(t, leaf, "exit", "3")
	if e := wait(t, c.Process); e.Code != 3 || e.Signaled() {
		t.Errorf("exit 3 helper: Exit = %+v, want code 3", e)
	}
	c = kerneltest.Start(t, leaf, "sleep")
	c.Line(t)
	if err := c.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if e := wait(t, c.Process); e.Signal != syscall.SIGTERM {
		t.Errorf("SIGTERMed helper: Exit = %+v, want signal SIGTERM", e)
	}
	if err := c.Signal(syscall.SIGKILL); !errors.Is(err, os.ErrProcessDone) {
		t.Errorf("Signal after exit = %v, want os.ErrProcessDone", err)
	}
}

// TestStartErrors: no cgroup, no program, and a non-leaf target (a group
// with controllers enabled for children) are refused with an error.
func TestStartErrors(t *testing.T) {
	if _, err := spawn.Start(spawn.Options{Path: "/bin/true"}); err == nil {
		t.Error("Start without Cgroup succeeded")
	}
	r := kerneltest.NewRoot(t)
	leaf := kerneltest.Leaf(t, &r.Group, "w-1", nil)
	dir, err := leaf.Open()
	if err != nil {
		t.Fatal(err)
	}
	defer dir.Close()
	_, err = spawn.Start(spawn.Options{Path: "/nonexistent/program", Cgroup: dir})
	if err == nil || !strings.Contains(err.Error(), "/nonexistent/program") {
		t.Errorf("Start(/nonexistent/program) = %v, want an error naming it", err)
	}
}

// TestPathLookupAndStdin: a program not found in PATH is looked for again
// at the next start (a failure is never remembered), and a child given no
// standard input
// reads end of file at once (/dev/null).
func TestPathLookupAndStdin(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("PATH", dir+":/usr/bin:/bin")
	start := func() (*spawn.Process, string, error) {
		var out strings.Builder
		p, err := spawn.Start(spawn.Options{Path: "cgpool-spawn-probe", Args: []string{"cgpool-spawn-probe", "x"},
			ProcessGroupOnly: true, Stdout: &out, Env: []string{"PATH=/usr/bin:/bin"}})
		if err != nil {
			return nil, "", err
		}
		wait(t, p)
		p.Close()
		return p, out.String(), nil
	}
	if _, _, err := start(); !errors.Is(err, exec.ErrNotFound) {
		t.Fatalf("start of a program not in PATH: %v, want exec.ErrNotFound", err)
	}
	script := "#!/bin/sh\necho \"$1\"; cat; echo eof\n"
	if err := os.WriteFile(filepath.Join(dir, "cgpool-spawn-probe"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	_, out, err := start()
	if err != nil {
		t.Fatalf("start once the program is in PATH: %v", err)
	}
	if out != "x\neof\n" {
		t.Errorf("the child printed %q, want its argument, then end of its input at once", out)
	}
}
