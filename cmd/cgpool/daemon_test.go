package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cgpool/cgpool/cgroup"
	"github.com/cgpool/cgpool/internal/kerneltest"
	"golang.org/x/sys/unix"
)

// waitUntil polls cond until it holds or d passes, then fails with what
// it saw last.
func waitUntil(t *testing.T, d time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		ok, seen := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v (last seen: %s)", what, d, seen)
		}
		time.Sleep(5 * time.Millisecond) // polling the kernel's view with a deadline
	}
}

// childrenOf lists the pids whose parent is pid.
func childrenOf(pid int) []int {
	ents, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range ents {
		c, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		s := string(b)
		i := strings.LastIndexByte(s, ')')
		f := strings.Fields(s[i+1:])
		if len(f) > 1 && f[1] == strconv.Itoa(pid) {
			out = append(out, c)
		}
	}
	return out
}

// reaperOf returns the pid of the reaper that supervisor pid started.
func reaperOf(t *testing.T, pid int) int {
	t.Helper()
	for _, c := range childrenOf(pid) {
		if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", c)); err == nil && bytes.Contains(b, []byte("__reap")) {
			return c
		}
	}
	t.Fatalf("supervisor %d has no reaper among its children %v", pid, childrenOf(pid))
	return 0
}

// serveRoot is the cgroup root a "cgpool serve" of pid made at the top.
func serveRoot(t *testing.T, pid int) string {
	m, err := cgroup.FindMount()
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(m.Point, "cgpool-"+strconv.Itoa(pid))
	t.Cleanup(func() { // whatever this test leaves, it removes
		if top, err := cgroup.OpenRoot(m.Point, nil); err == nil {
			top.Child(filepath.Base(dir)).Destroy(context.Background(), 10*time.Second)
		}
	})
	return dir
}

func readPid(path string) int {
	b, _ := os.ReadFile(path)
	n, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	return n
}

// TestKilledServeLeavesNothing: a SIGKILLed cgpool serve (outside
// systemd) leaves no task running, a detached setsid grandchild included,
// no cgroup and no socket: its reaper removes them; the client of the
// running task is told at once. On the old main all of it stayed until
// the next cgpool swept it.
func TestKilledServeLeavesNothing(t *testing.T) {
	requireCgroups(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	dir := shortTempDir(t, "cgpool-kill")
	sock := filepath.Join(dir, "s.sock")
	serve := cgpool(ctx, "serve", "--socket", sock, "--ready", "-j", "1", "--log-level", "warn", "--allow-root")
	startReady(t, serve, sock)
	root := serveRoot(t, serve.Process.Pid)
	pidFile := filepath.Join(dir, "daemon.pid")
	sub := cgpool(ctx, "submit", "--socket", sock, "--", "/bin/sh", "-c", "setsid sleep 1000 & echo $! > "+pidFile+"; sleep 1000")
	var subErr bytes.Buffer
	sub.Stderr = &subErr
	if err := sub.Start(); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 30*time.Second, "the task's detached grandchild", func() (bool, string) { return readPid(pidFile) > 0, "no pid file" })
	grandchild := readPid(pidFile)
	serve.Process.Kill()
	serve.Wait()
	waitUntil(t, 30*time.Second, "the detached grandchild dies with the supervisor", func() (bool, string) {
		return processGone(grandchild), fmt.Sprintf("pid %d alive", grandchild)
	})
	waitUntil(t, 30*time.Second, "the supervisor's cgroup root is removed", func() (bool, string) {
		_, err := os.Stat(root)
		return errors.Is(err, os.ErrNotExist), fmt.Sprint(err)
	})
	waitUntil(t, 10*time.Second, "the socket file is removed", func() (bool, string) {
		_, err := os.Stat(sock)
		return errors.Is(err, os.ErrNotExist), fmt.Sprint(err)
	})
	done := make(chan error, 1)
	go func() { done <- sub.Wait() }()
	select {
	case err := <-done:
		if err == nil {
			t.Errorf("the client of a task its supervisor lost exited 0")
		}
	case <-time.After(10 * time.Second):
		t.Errorf("the client of a task its supervisor lost still waits 10 s later")
		sub.Process.Kill()
		<-done
	}
}

// TestSecondServeSameRoot: a second cgpool serve given the root of a live
// one refuses it and touches nothing; the first serves on (on the old main
// the second swept the root, killed the running task, and the first
// failed every task after).
func TestSecondServeSameRoot(t *testing.T) {
	kr := kerneltest.NewRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	dir := shortTempDir(t, "cgpool-two")
	rootDir := filepath.Join(kr.Path(), "shared")
	sockA, sockB := filepath.Join(dir, "a.sock"), filepath.Join(dir, "b.sock")
	a := cgpool(ctx, "serve", "--socket", sockA, "--root", rootDir, "--ready", "-j", "1", "--log-level", "warn", "--allow-root")
	startReady(t, a, sockA)
	defer func() {
		cgpool(ctx, "shutdown", "--socket", sockA).Run()
		a.Wait()
	}()
	gate := filepath.Join(dir, "gate")
	if err := unix.Mkfifo(gate, 0o600); err != nil {
		t.Fatal(err)
	}
	running := cgpool(ctx, "submit", "--socket", sockA, "--", "/bin/sh", "-c", "read x < "+gate+"; echo survived")
	var out bytes.Buffer
	running.Stdout = &out
	if err := running.Start(); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 30*time.Second, "the first supervisor runs the task", func() (bool, string) {
		b, _ := cgpool(ctx, "ps", "--socket", sockA).CombinedOutput()
		return strings.Contains(string(b), "busy"), string(b)
	})
	bctx, bcancel := context.WithTimeout(ctx, 15*time.Second) // a second serve that took the root over would run on
	defer bcancel()
	bOut, err := cgpool(bctx, "serve", "--socket", sockB, "--root", rootDir, "-j", "1", "--log-level", "warn", "--allow-root").CombinedOutput()
	if err == nil || !strings.Contains(string(bOut), "another cgpool") {
		t.Errorf("a second serve on a live root: %v, %q; want a refusal saying another cgpool owns it", err, bOut)
	}
	// Non-blocking: with no reader left (the task killed) the open fails
	// at once instead of hanging.
	f, err := os.OpenFile(gate, os.O_WRONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		running.Process.Kill()
		running.Wait()
		t.Fatalf("the first supervisor's task no longer reads its gate: %v", err)
	}
	f.Write([]byte("go\n"))
	f.Close()
	if err := running.Wait(); err != nil || strings.TrimSpace(out.String()) != "survived" {
		t.Errorf("the first supervisor's running task: %v, %q", err, out.String())
	}
	if b, err := cgpool(ctx, "submit", "--socket", sockA, "--", "echo", "after").CombinedOutput(); err != nil || strings.TrimSpace(string(b)) != "after" {
		t.Errorf("the first supervisor after the refused second: %v, %q", err, b)
	}
}

// TestServeSIGHUP: a SIGHUP (a closed terminal) shuts cgpool serve down
// as SIGTERM does: its tasks, cgroups and socket are gone when it exits
// (on the old main it died at once and left them).
func TestServeSIGHUP(t *testing.T) {
	requireCgroups(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	dir := shortTempDir(t, "cgpool-hup")
	sock := filepath.Join(dir, "s.sock")
	serve := cgpool(ctx, "serve", "--socket", sock, "--ready", "-j", "1", "--log-level", "warn", "--allow-root")
	startReady(t, serve, sock)
	root := serveRoot(t, serve.Process.Pid)
	// The reaper must not be what cleans up here: it is stopped first.
	reaper := reaperOf(t, serve.Process.Pid)
	syscall.Kill(reaper, syscall.SIGSTOP)
	defer syscall.Kill(reaper, syscall.SIGCONT)
	pidFile := filepath.Join(dir, "task.pid")
	sub := cgpool(ctx, "submit", "--socket", sock, "--", "/bin/sh", "-c", "echo $$ > "+pidFile+"; sleep 1000")
	if err := sub.Start(); err != nil {
		t.Fatal(err)
	}
	defer sub.Wait()
	waitUntil(t, 30*time.Second, "the task starts", func() (bool, string) { return readPid(pidFile) > 0, "" })
	task := readPid(pidFile)
	serve.Process.Signal(syscall.SIGHUP)
	if err := serve.Wait(); err != nil {
		t.Errorf("cgpool serve after SIGHUP: %v, want a clean exit", err)
	}
	if !processGone(task) {
		t.Errorf("the task (pid %d) runs on after the supervisor's SIGHUP", task)
	}
	for _, p := range []string{root, sock} {
		if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s left behind after SIGHUP: %v", p, err)
		}
	}
}

// TestZombieOwnerSwept: the stale-root sweep removes the root of a
// supervisor that died but is not reaped yet (kill(pid, 0) succeeds on a
// zombie, and the old main kept such roots for ever).
func TestZombieOwnerSwept(t *testing.T) {
	requireCgroups(t)
	m, err := cgroup.FindMount()
	if err != nil {
		t.Fatal(err)
	}
	z := exec.Command("/bin/true")
	if err := z.Start(); err != nil {
		t.Fatal(err)
	}
	defer z.Wait()
	pid := z.Process.Pid
	waitUntil(t, 10*time.Second, "the child is a zombie", func() (bool, string) { return processGone(pid), "" })
	if err := unix.Kill(pid, 0); err != nil {
		t.Fatalf("kill(%d, 0) = %v: not a zombie", pid, err)
	}
	dir := filepath.Join(m.Point, "cgpool-"+strconv.Itoa(pid))
	r, err := cgroup.MkdirRoot(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Release(context.Background()) })
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	sweepStaleRoots(context.Background(), m, log)
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the root of a zombie supervisor survived the sweep: %v", err)
	}
}

// TestServeSurvivesEMFILE: running out of file descriptors makes Accept
// fail for a while, not the service: cgpool serve backs off and serves
// again once descriptors are free (on the old main it shut down).
func TestServeSurvivesEMFILE(t *testing.T) {
	requireCgroups(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	dir := shortTempDir(t, "cgpool-emfile")
	sock := filepath.Join(dir, "s.sock")
	serve := cgpool(ctx, "serve", "--socket", sock, "--ready", "-j", "1", "--log-level", "error", "--allow-root")
	startReady(t, serve, sock)
	defer func() {
		cgpool(ctx, "shutdown", "--socket", sock).Run()
		serve.Wait()
	}()
	pid := serve.Process.Pid
	ents, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	var old unix.Rlimit
	if err := unix.Prlimit(pid, unix.RLIMIT_NOFILE, nil, &old); err != nil {
		t.Fatal(err)
	}
	lim := unix.Rlimit{Cur: uint64(len(ents) + 2), Max: old.Max}
	if err := unix.Prlimit(pid, unix.RLIMIT_NOFILE, &lim, nil); err != nil {
		t.Fatal(err)
	}
	var conns []net.Conn
	for range 20 {
		c, err := net.Dial("unix", sock)
		if err != nil {
			break // the backlog is full
		}
		conns = append(conns, c)
	}
	time.Sleep(200 * time.Millisecond) // let Accept run into EMFILE a few times (the test's only sleep: there is no event for "failed to accept")
	for _, c := range conns {
		c.Close()
	}
	if err := unix.Prlimit(pid, unix.RLIMIT_NOFILE, &old, nil); err != nil {
		t.Fatal(err)
	}
	if b, err := cgpool(ctx, "submit", "--socket", sock, "--", "echo", "served").CombinedOutput(); err != nil || strings.TrimSpace(string(b)) != "served" {
		t.Errorf("after EMFILE: %v, %q", err, b)
	}
}
