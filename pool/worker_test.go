package pool_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cgpool/cgpool/cgroup"
	"github.com/cgpool/cgpool/internal/kerneltest"
	"github.com/cgpool/cgpool/worker"
)

// TestMain runs the test binary as a worker program when the pool starts
// it with CGPOOL_TEST_WORKER=1.
func TestMain(m *testing.M) {
	if sock := os.Getenv("CGPOOL_TEST_CLIENT"); sock != "" {
		os.Exit(clientHelper(sock, os.Getenv("CGPOOL_TEST_REQS")))
	}
	if spec := os.Getenv("CGPOOL_TEST_USAGE"); spec != "" {
		os.Exit(usageHelper(spec))
	}
	if os.Getenv("CGPOOL_TEST_WORKER") == "1" {
		if f := os.Getenv("CGPOOL_TEST_FAIL_IF"); f != "" {
			if _, err := os.Stat(f); err == nil {
				os.Exit(3) // a worker that cannot start while f exists
			}
		}
		init := func() error {
			if v := os.Getenv("CGPOOL_TEST_INIT_FAIL"); v != "" {
				return errors.New(v)
			}
			if os.Getenv("CGPOOL_TEST_HOLD_SOCKET") == "1" {
				return holdSocket()
			}
			return nil
		}
		if err := worker.ServeWith(handle, worker.Options{Init: init}); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	kerneltest.Main(m)
}

// handle runs the test operations, "op:arg":
//
//	echo:X     answer X
//	pid        answer the worker's pid
//	ids        answer "uid:gid" of the worker
//	env:NAME   answer $NAME
//	sleep:MS   sleep, answer "slept"
//	big:N      answer N bytes
//	fifo:PATH  block until the test writes to (or closes) the FIFO PATH; answer what it wrote
//	gate:PATH  block until one byte can be read from the FIFO PATH
//	fail:MSG   fail with MSG
//	exit:N     exit the worker with status N mid-task
//	alloc:MIB  allocate and touch MIB MiB, answer "ok"
//	daemon:F   start a detached, setsid child that writes its pid to F, then sleep forever
//	leave      start a detached child that outlives the task; answer its pid
//	spin       ignore every catchable signal and spin on the CPU forever
func handle(ctx context.Context, t *worker.Task) ([]byte, error) {
	op, arg, _ := strings.Cut(string(t.Payload), ":")
	switch op {
	case "echo":
		return []byte(arg), nil
	case "pid":
		return []byte(strconv.Itoa(os.Getpid())), nil
	case "ids":
		return []byte(fmt.Sprintf("%d:%d", os.Getuid(), os.Getgid())), nil
	case "env":
		return []byte(os.Getenv(arg)), nil
	case "groups": // as kerneltest's "ids" helper prints them
		groups, _ := syscall.Getgroups()
		slices.Sort(groups)
		return []byte(fmt.Sprintf("uid=%d gid=%d groups=%v", os.Getuid(), os.Getgid(), groups)), nil
	case "sleep":
		ms, _ := strconv.Atoi(arg)
		time.Sleep(time.Duration(ms) * time.Millisecond)
		return []byte("slept"), nil
	case "big":
		n, _ := strconv.Atoi(arg)
		return bytes.Repeat([]byte("b"), n), nil
	case "fifo":
		// Opening a FIFO for reading blocks until the test opens it for
		// writing: a gate the test opens when it is ready.
		b, err := os.ReadFile(arg)
		return b, err
	case "gate":
		// Take one byte from the FIFO arg: the test opens the gate for
		// as many tasks as it writes bytes.
		f, err := os.Open(arg)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		var b [1]byte
		_, err = f.Read(b[:])
		return b[:], err
	case "usage": // see usageHelper
		if err := usageWork(arg); err != nil {
			return nil, err
		}
		return []byte("ok"), nil
	case "fail":
		return nil, errors.New(arg)
	case "exit":
		n, _ := strconv.Atoi(arg)
		os.Exit(n)
	case "memmax": // the memory.max of the slot this worker runs in
		self, err := cgroup.SelfPath()
		if err != nil {
			return nil, err
		}
		m, err := cgroup.FindMount()
		if err != nil {
			return nil, err
		}
		v, err := os.ReadFile(filepath.Join(m.HostPath(self), "..", "memory.max"))
		return bytes.TrimSpace(v), err
	case "alloc":
		mib, _ := strconv.Atoi(arg)
		var keep [][]byte
		for range mib {
			b := make([]byte, 1<<20)
			for j := 0; j < len(b); j += 4096 {
				b[j] = 1
			}
			keep = append(keep, b)
		}
		return []byte(fmt.Sprintf("ok %d", len(keep))), nil
	case "daemon":
		pid, err := startDetached()
		if err != nil {
			return nil, err
		}
		os.WriteFile(arg, []byte(strconv.Itoa(pid)), 0o644)
		for { // not select {}: with nothing else running, that is a fatal deadlock
			time.Sleep(time.Hour)
		}
	case "leave":
		pid, err := startDetached()
		if err != nil {
			return nil, err
		}
		return []byte(strconv.Itoa(pid)), nil
	case "spin":
		for s := syscall.Signal(1); s <= 64; s++ {
			if s != syscall.SIGKILL && s != syscall.SIGSTOP {
				signal.Ignore(s)
			}
		}
		for {
		}
	}
	return nil, fmt.Errorf("unknown op %q", op)
}

// holdSocket starts a child that keeps a copy of the worker's socket
// (fd 3) open and sleeps: once the worker dies, the socket does not end.
func holdSocket() error {
	exe, _ := os.Executable()
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), "CGPOOL_TEST_WORKER=", kerneltest.HelperEnv+"=sleep")
	cmd.ExtraFiles = []*os.File{os.NewFile(3, "worker-socket")}
	if err := cmd.Start(); err != nil {
		return err
	}
	return cmd.Process.Release()
}

// startDetached starts a child of its own session that sleeps forever and
// is nobody's to wait for, as a daemon a task forks would be.
func startDetached() (int, error) {
	exe, _ := os.Executable()
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), "CGPOOL_TEST_WORKER=", kerneltest.HelperEnv+"=sleep")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return 0, err
	}
	pid := cmd.Process.Pid
	cmd.Process.Release()
	return pid, nil
}
