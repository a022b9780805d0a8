//go:build load

package main

// The load figures of README.md (issue 11), against a real "cgpool serve"
// process on this machine:
//
//	go test -tags load -run TestLoad -v -timeout 20m ./cmd/cgpool
//
// Each subtest prints its figures and fails when a target is missed.

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cgpool/cgpool/client"
	"github.com/cgpool/cgpool/ipc"
	"github.com/cgpool/cgpool/pool"
)

// rssOf is the resident set of pid in bytes (VmRSS).
func rssOf(t *testing.T, pid int) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10
		}
	}
	t.Fatal("no VmRSS")
	return 0
}

func fdsOf(pid int) int {
	ents, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	return len(ents)
}

// loadServe starts "cgpool serve" with args and returns its socket and
// process; it is shut down when the test ends.
func loadServe(t *testing.T, args ...string) (string, *exec.Cmd) {
	t.Helper()
	requireCgroups(t)
	sock := filepath.Join(shortTempDir(t, "cgpool-load"), "s.sock")
	ctx, cancel := context.WithCancel(context.Background())
	cmd := cgpool(ctx, append([]string{"serve", "--socket", sock, "--ready", "--log-level", "error", "--allow-root"}, args...)...)
	startReady(t, cmd, sock)
	t.Cleanup(func() {
		cgpool(context.Background(), "shutdown", "--socket", sock, "--wait=false").Run()
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			cancel()
			<-done
		}
		cancel()
	})
	return sock, cmd
}

// stats reads one pool's statistics through c.
func stats(t *testing.T, c *client.Client) pool.Stats {
	t.Helper()
	b, err := c.Stats(context.Background(), "default")
	if err != nil {
		t.Fatal(err)
	}
	var st pool.Stats
	if err := json.Unmarshal(b, &st); err != nil {
		t.Fatal(err)
	}
	return st
}

// flooder is a separate process (this test binary, CGPOOL_TEST_FLOOD) that
// submits n tasks of argv to sock, reading and dropping the replies, and
// prints "submitted" when all are accepted.
func startFlooder(t *testing.T, sock string, n int, argv ...string) *exec.Cmd {
	t.Helper()
	exe, _ := os.Executable()
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), "CGPOOL_TEST_FLOOD="+sock, "CGPOOL_TEST_FLOOD_N="+strconv.Itoa(n), "CGPOOL_TEST_FLOOD_ARGV="+strings.Join(argv, "\x1f"))
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || line != "submitted\n" {
		t.Fatalf("flooder said %q, %v", line, err)
	}
	return cmd
}

func init() {
	if sock := os.Getenv("CGPOOL_TEST_FLOOD"); sock != "" {
		n, _ := strconv.Atoi(os.Getenv("CGPOOL_TEST_FLOOD_N"))
		os.Exit(floodMain(sock, n, strings.Split(os.Getenv("CGPOOL_TEST_FLOOD_ARGV"), "\x1f")))
	}
}

func floodMain(sock string, n int, argv []string) int {
	nc, err := net.Dial("unix", sock)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	c := ipc.NewConn(nc)
	if _, err := ipc.ClientHello(c, "flood"); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	accepted := make(chan struct{})
	go func() {
		seen := 0
		for {
			h, _, err := c.Read()
			if err != nil {
				return
			}
			if h.Type == ipc.TypeAccepted {
				if seen++; seen == n {
					close(accepted)
				}
			} else if h.Type == ipc.TypeRejected {
				fmt.Fprintln(os.Stderr, "rejected:", h.Message)
				os.Exit(1)
			}
		}
	}()
	frames := make([]ipc.Frame, 0, 256)
	for i := range n {
		frames = append(frames, ipc.Frame{Header: ipc.Header{Type: ipc.TypeSubmit, ID: uint64(i + 1), Argv: argv}})
		if len(frames) == cap(frames) || i == n-1 {
			if err := c.WriteBatch(frames); err != nil {
				fmt.Fprintln(os.Stderr, err)
				return 1
			}
			frames = frames[:0]
		}
	}
	<-accepted
	fmt.Println("submitted")
	select {} // until killed
}

// TestLoad: 100,000 queued tasks, what each costs the daemon, stats under
// load, a killed client's queue cancelled, memory returned; 1,000
// connections at once; 64 workers on this machine's CPUs; a flood that
// does not starve another client.
func TestLoad(t *testing.T) {
	t.Run("queued", func(t *testing.T) {
		const n = 100_000
		sock, serve := loadServe(t, "-j", "2", "--max-backlog", "-1")
		pid := serve.Process.Pid
		ctx := context.Background()
		c, err := client.Dial(ctx, sock)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		gate := filepath.Join(t.TempDir(), "gate")
		if err := syscall.Mkfifo(gate, 0o600); err != nil {
			t.Fatal(err)
		}
		var busy []*client.Future
		for range 2 { // both workers wait at the gate, so every flood task queues
			f, err := c.Submit(ctx, client.Task{Argv: []string{"/bin/sh", "-c", "read x < " + gate}})
			if err != nil {
				t.Fatal(err)
			}
			busy = append(busy, f)
		}
		for stats(t, c).TasksRunning < 2 {
			time.Sleep(time.Millisecond) // polling the daemon's counters
		}
		base := rssOf(t, pid)
		// stats answered every 10 ms by a second client while the flood goes on
		var lat []time.Duration
		stop := make(chan struct{})
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				case <-time.After(10 * time.Millisecond):
				}
				t0 := time.Now()
				if _, err := c.Stats(ctx, "default"); err != nil {
					return
				}
				lat = append(lat, time.Since(t0))
			}
		}()
		t0 := time.Now()
		flood := startFlooder(t, sock, n, "/bin/true")
		submitted := time.Since(t0)
		queued := rssOf(t, pid)
		st := stats(t, c)
		per := (queued - base) / n
		t.Logf("%d tasks queued in %v: daemon RSS %d MiB -> %d MiB, %d bytes a queued task (tasks_queued %d)",
			n, submitted.Round(time.Millisecond), base>>20, queued>>20, per, st.TasksQueued)
		// The flooder dies: its queue is cancelled (cancel_queued).
		t1 := time.Now()
		flood.Process.Kill()
		flood.Wait()
		for stats(t, c).TasksQueued > 0 {
			time.Sleep(time.Millisecond)
		}
		cancelled := time.Since(t1)
		close(stop)
		wg.Wait()
		slices.Sort(lat)
		after := rssOf(t, pid)
		// Memory back after the queue drained: wait for the daemon's idle
		// return (bounded) and read again.
		deadline := time.Now().Add(30 * time.Second)
		for rssOf(t, pid) > base+(queued-base)/4 && time.Now().Before(deadline) {
			time.Sleep(100 * time.Millisecond)
		}
		returned := rssOf(t, pid)
		t.Logf("a killed client's %d queued tasks cancelled in %v; RSS right after %d MiB, then %d MiB",
			n, cancelled.Round(time.Millisecond), after>>20, returned>>20)
		t.Logf("stats under load: %d samples, p50 %v, p99 %v, max %v", len(lat), lat[len(lat)/2], lat[len(lat)*99/100], lat[len(lat)-1])
		if per > 512 {
			t.Errorf("%d bytes a queued task, more than 512", per)
		}
		if lat[len(lat)-1] > 100*time.Millisecond {
			t.Errorf("stats took up to %v under load, more than 100 ms", lat[len(lat)-1])
		}
		if returned > base+(queued-base)/4 {
			t.Errorf("memory not returned after the queue drained: RSS %d MiB, %d MiB before the flood", returned>>20, base>>20)
		}
		f, _ := os.OpenFile(gate, os.O_WRONLY, 0)
		f.Write([]byte("x\nx\n"))
		f.Close()
		for _, b := range busy {
			b.Wait(ctx)
		}
	})
}
