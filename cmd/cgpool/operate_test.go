package main

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cgpool/cgpool/internal/kerneltest"
)

// lockedBuffer is an io.Writer a process's output can be copied into
// while the test reads it.
type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
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

// freePort returns a loopback port that was free a moment ago.
func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
}

// TestServeMetrics: --metrics-addr with a bare port serves the metrics on
// 127.0.0.1, and they count the tasks the daemon ran.
func TestServeMetrics(t *testing.T) {
	port := freePort(t)
	sock := startServe(t, "--metrics-addr", port)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	get := func() string {
		t.Helper()
		resp, err := http.Get("http://127.0.0.1:" + port + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("GET /metrics: %v %s", err, resp.Status)
		}
		return string(b)
	}
	const result = `cgpool_tasks_total{outcome="result",pool="default",reason=""} `
	if s := get(); !strings.Contains(s, result+"0\n") || !strings.Contains(s, "go_goroutines ") || !strings.Contains(s, "process_resident_memory_bytes ") {
		t.Errorf("metrics before any task lack %q or the process and Go metrics:\n%s", result+"0", s)
	}
	for range 2 {
		if out, err := cgpool(ctx, "submit", "--socket", sock, "--", "true").CombinedOutput(); err != nil {
			t.Fatalf("cgpool submit: %v\n%s", err, out)
		}
	}
	s := get()
	if !strings.Contains(s, result+"2\n") || !strings.Contains(s, `cgpool_task_duration_seconds_count{outcome="result",pool="default",reason=""} 2`) {
		t.Errorf("after two tasks, metrics lack %q and a task duration count of 2:\n%s", result+"2", s)
	}
	// The server's own counters are exported; the two submits'
	// connections, closed, are counted out (once the server has read
	// their end).
	for _, line := range []string{"cgpool_server_handshake_failures_total 0\n", "cgpool_server_connections_refused_total 0\n"} {
		if !strings.Contains(s, line) {
			t.Errorf("metrics lack the server's %q:\n%s", line, s)
		}
	}
	for deadline := time.Now().Add(10 * time.Second); !strings.Contains(s, "cgpool_server_connections 0\n"); s = get() {
		if time.Now().After(deadline) {
			t.Fatalf("cgpool_server_connections is not 0 after both submits exited:\n%s", s)
		}
		time.Sleep(20 * time.Millisecond) // polling a scrape, with a deadline
	}
}

// TestServeMetricsLoopbackOnly: an address other hosts can reach is refused
// (usage error, before any cgroup is made) unless allowed explicitly.
func TestServeMetricsLoopbackOnly(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, addr := range []string{"0.0.0.0:9464", ":9464"} {
		out, err := cgpool(ctx, "serve", "--metrics-addr", addr, "--socket", filepath.Join(t.TempDir(), "s.sock")).CombinedOutput()
		if got := exitStatus(t, err); got != exitUsage || !strings.Contains(string(out), "--metrics-allow-remote") {
			t.Errorf("serve --metrics-addr %s: exit %d, %q; want %d naming --metrics-allow-remote", addr, got, out, exitUsage)
		}
	}
}

// notifySocket is a fake systemd notification socket: what serve sends to
// $NOTIFY_SOCKET arrives on C, one datagram at a time.
type notifySocket struct {
	path string
	C    chan string
}

func newNotifySocket(t *testing.T) *notifySocket {
	t.Helper()
	path := filepath.Join(shortTempDir(t, "cgpool-notify"), "notify")
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	n := &notifySocket{path: path, C: make(chan string, 1024)}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 4096)
		for {
			k, err := c.Read(buf)
			if err != nil {
				return
			}
			select {
			case n.C <- string(buf[:k]):
			default:
			}
		}
	}()
	t.Cleanup(func() { c.Close(); <-done })
	return n
}

// await waits for a datagram containing want and returns it.
func (n *notifySocket) await(t *testing.T, want string, d time.Duration) string {
	t.Helper()
	timer := time.NewTimer(d)
	defer timer.Stop()
	var last string
	for {
		select {
		case m := <-n.C:
			if strings.Contains(m, want) {
				return m
			}
			last = m
		case <-timer.C:
			t.Fatalf("no notification with %q within %v (last: %q)", want, d, last)
		}
	}
}

// TestServeNotify: under systemd (a fake $NOTIFY_SOCKET here), serve says
// READY=1, keeps a STATUS= line with each pool's workers busy and idle and
// its queue depth, pings WATCHDOG=1 from its main loop when the unit has
// WatchdogSec=, and stops pinging when that loop is wedged (the test hook
// CGPOOL_TEST_WEDGE=SIGUSR2), which is what makes systemd restart it. The
// real systemd side is internal/systemdvm's TestWatchdogRestartsWedged.
func TestServeNotify(t *testing.T) {
	root := kerneltest.NewRoot(t)
	n := newNotifySocket(t)
	sock := filepath.Join(shortTempDir(t, "cgpool-cli"), "cgpool.sock")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := cgpool(ctx, "serve", "--socket", sock, "--root", filepath.Join(root.Path(), "served"), "--ready", "-j", "2", "--log-level", "warn", "--allow-root")
	cmd.Env = append(cmd.Env, "NOTIFY_SOCKET="+n.path, "WATCHDOG_USEC=400000", wedgeEnv+"=SIGUSR2")
	stderr := &lockedBuffer{}
	cmd.Stderr = stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() {
		_, _ = bufio.NewReader(out).ReadString('\n')
		exited <- cmd.Wait()
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill() // wedged: only SIGKILL ends it; the root's release sweeps its slots
		<-exited
	})
	n.await(t, "READY=1", 30*time.Second)
	n.await(t, "STATUS=default: 0 busy, 2 idle, 0 queued", 30*time.Second)
	n.await(t, "WATCHDOG=1", 5*time.Second)

	// A task in flight shows in the status line.
	submit := cgpool(ctx, "submit", "--socket", sock, "--", "sleep", "60")
	if err := submit.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = submit.Process.Kill(); _ = submit.Wait() }()
	n.await(t, "STATUS=default: 1 busy, 1 idle, 0 queued", 30*time.Second)

	// Wedge the main loop: the pings stop (serve's own goroutines, the
	// socket server among them, go on, as in a real deadlock of the loop).
	if err := cmd.Process.Signal(syscall.SIGUSR2); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(stderr.String(), "the main loop stops here") {
		if time.Now().After(deadline) {
			t.Fatalf("serve did not log the wedge; stderr:\n%s", stderr.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	for drained := false; !drained; { // what was sent before the wedge
		select {
		case <-n.C:
		default:
			drained = true
		}
	}
	// Ten ping intervals (200 ms each) of silence: systemd, with
	// WatchdogSec=400ms, would have killed it long before.
	select {
	case m := <-n.C:
		t.Errorf("after the wedge serve still notified %q", m)
	case <-time.After(2 * time.Second):
	}
	select {
	case err := <-exited:
		t.Errorf("the wedged serve exited by itself: %v", err)
	default:
	}
}

// TestWedgeHookNeedsItsVariable: without CGPOOL_TEST_WEDGE a SIGUSR2 does
// nothing (the Go runtime ignores it): the main loop goes on pinging and
// the daemon serves, so the hook cannot be triggered on a daemon that did
// not opt in.
func TestWedgeHookNeedsItsVariable(t *testing.T) {
	root := kerneltest.NewRoot(t)
	n := newNotifySocket(t)
	sock := filepath.Join(shortTempDir(t, "cgpool-cli"), "cgpool.sock")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := cgpool(ctx, "serve", "--socket", sock, "--root", filepath.Join(root.Path(), "served"), "--ready", "-j", "1", "--log-level", "warn", "--allow-root")
	cmd.Env = append(cmd.Env, "NOTIFY_SOCKET="+n.path, "WATCHDOG_USEC=400000")
	startReady(t, cmd, sock)
	n.await(t, "WATCHDOG=1", 10*time.Second)
	if err := cmd.Process.Signal(syscall.SIGUSR2); err != nil {
		t.Fatal(err)
	}
	if out, err := cgpool(ctx, "submit", "--socket", sock, "--", "true").CombinedOutput(); err != nil {
		t.Errorf("a task after SIGUSR2: %v\n%s", err, out)
	}
	for drained := false; !drained; {
		select {
		case <-n.C:
		default:
			drained = true
		}
	}
	n.await(t, "WATCHDOG=1", 5*time.Second)
	if err := cgpool(ctx, "shutdown", "--socket", sock).Run(); err != nil {
		t.Errorf("cgpool shutdown: %v", err)
	}
	if err := cmd.Wait(); err != nil {
		t.Errorf("cgpool serve after SIGUSR2 without the hook: %v", err)
	}
}

// TestServeInSupervisorSubgroup: started inside a "supervisor" group of a
// delegated cgroup (what systemd 254+ does with DelegateSubgroup=
// supervisor), serve takes the parent as its root: the pools sit beside
// supervisor, not inside it.
func TestServeInSupervisorSubgroup(t *testing.T) {
	root := kerneltest.NewRoot(t)
	sup, err := root.Mkdir("supervisor")
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(shortTempDir(t, "cgpool-cli"), "cgpool.sock")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	exe, _ := os.Executable()
	cmd := exec.CommandContext(ctx, "/bin/sh", "-c",
		`echo $$ > "$1/cgroup.procs" && exec "$0" serve --ready -j 1 --log-level warn --allow-root --socket "$2"`, exe, sup.Path(), sock)
	cmd.Env = append(os.Environ(), "CGPOOL_TEST_MAIN=1")
	startReady(t, cmd, sock)
	defer func() {
		if err := cgpool(ctx, "shutdown", "--socket", sock).Run(); err != nil {
			t.Errorf("cgpool shutdown: %v", err)
		}
		if err := cmd.Wait(); err != nil {
			t.Errorf("cgpool serve: %v", err)
		}
		// Its reaper (reaper_linux.go) leaves the group when it has seen
		// serve go.
		deadline := time.Now().Add(10 * time.Second)
		for {
			ev, err := sup.Events()
			if err != nil || !ev.Populated {
				break
			}
			if time.Now().After(deadline) {
				t.Errorf("supervisor still holds processes 10s after serve exited")
				break
			}
			time.Sleep(10 * time.Millisecond) // re-reading cgroup.events with a deadline
		}
	}()
	if _, err := os.Stat(filepath.Join(root.Path(), "default")); err != nil {
		t.Errorf("the pool's group is not beside supervisor in %s: %v", root.Path(), err)
	}
	if _, err := os.Stat(filepath.Join(sup.Path(), "supervisor")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("serve nested a supervisor group inside supervisor: %v", err)
	}
	if out, err := cgpool(ctx, "submit", "--socket", sock, "--", "true").CombinedOutput(); err != nil {
		t.Errorf("a task: %v\n%s", err, out)
	}
}
