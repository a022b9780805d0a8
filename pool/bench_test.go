package pool_test

import (
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/cgpool/cgpool/client"
	"github.com/cgpool/cgpool/ipc"
	"github.com/cgpool/cgpool/pool"
	"golang.org/x/sys/unix"
)

func pct(d []time.Duration, p float64) time.Duration {
	slices.Sort(d)
	return d[int(float64(len(d)-1)*p)]
}

// BenchmarkNoopRoundTrip: a no-op task through the socket, the supervisor
// and a Go worker, one at a time. Beside it, in the same run, two floors:
// a bare ipc round trip to an echo goroutine across a unix socket, and
// the relay floor, the same path with nothing of the supervisor in it (a
// goroutine that forwards each frame from the client's socket to the same
// worker program and its answer back). Reports medians, the p99, and the
// ratio of the supervisor's median to the relay floor's.
//
//	go test -run '^$' -bench NoopRoundTrip ./pool
func BenchmarkNoopRoundTrip(b *testing.B) {
	sock, _ := startServerB(b)
	c, err := client.Dial(context.Background(), sock)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	ctx := context.Background()
	task := client.Task{Payload: []byte("echo:x")}
	for range 200 { // warm up
		f, _ := c.Submit(ctx, task)
		f.Wait(ctx)
	}
	floor := rawRoundTrips(b, b.N)
	relay := relayRoundTrips(b, b.N)
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		t0 := time.Now()
		f, err := c.Submit(ctx, task)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := f.Wait(ctx); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(t0))
	}
	b.StopTimer()
	p50, p99, f50, r50 := pct(lat, .5), pct(lat, .99), pct(floor, .5), pct(relay, .5)
	b.ReportMetric(float64(p50.Microseconds()), "p50-µs")
	b.ReportMetric(float64(p99.Microseconds()), "p99-µs")
	b.ReportMetric(float64(f50.Microseconds()), "raw-socket-p50-µs")
	b.ReportMetric(float64(r50.Microseconds()), "relay-floor-p50-µs")
	b.ReportMetric(float64(p50)/float64(r50), "x-relay")
}

// BenchmarkNoopThroughput: many no-op tasks in flight on one connection.
func BenchmarkNoopThroughput(b *testing.B) {
	sock, _ := startServerB(b, func(c *pool.Config) { c.MaxWorkers = 2; c.MaxBacklog = -1 })
	c, err := client.Dial(context.Background(), sock)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	ctx := context.Background()
	task := client.Task{Payload: []byte("echo:x")}
	b.ResetTimer()
	start := time.Now()
	fs := make([]*client.Future, b.N)
	for i := range fs {
		if fs[i], err = c.Submit(ctx, task); err != nil {
			b.Fatal(err)
		}
	}
	for _, f := range fs {
		if _, err := f.Wait(ctx); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "tasks/s")
}

// BenchmarkReplaceAfterKill: a busy worker is SIGKILLed from outside; the
// time until the next queued task is running on its replacement.
func BenchmarkReplaceAfterKill(b *testing.B) {
	_, p := startServerB(b)
	var lat []time.Duration
	for i := 0; i < b.N; i++ {
		victim := newFuture()
		if _, err := p.Submit(context.Background(), pool.Spec{Payload: []byte("sleep:60000")}, victim.notify); err != nil {
			b.Fatal(err)
		}
		ev := <-victim.running
		next := newFuture()
		if _, err := p.Submit(context.Background(), pool.Spec{Payload: []byte("echo:x")}, next.notify); err != nil {
			b.Fatal(err)
		}
		t0 := time.Now()
		unix.Kill(ev.Pid, syscall.SIGKILL)
		<-next.running
		lat = append(lat, time.Since(t0))
		<-victim.done
		<-next.done
	}
	b.ReportMetric(float64(pct(lat, .5).Microseconds()), "p50-µs")
	b.ReportMetric(float64(pct(lat, .99).Microseconds()), "p99-µs")
}

// rawRoundTrips times n 64-byte frame round trips to an echo goroutine
// over a unix socket, with the same ipc framing.
func rawRoundTrips(b *testing.B, n int) []time.Duration {
	return floorRoundTrips(b, n, make([]byte, 64), func(h ipc.Header, p []byte) (ipc.Header, []byte, error) {
		h.Type = ipc.TypeResult
		return h, p, nil
	})
}

// relayRoundTrips times n no-op tasks on the path of a task with nothing
// of the supervisor in it: client frame over a unix socket to a relay
// goroutine, task frame over a socketpair to the test worker program (a
// child process, as the pool's workers), and both answers back.
func relayRoundTrips(b *testing.B, n int) []time.Duration {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		b.Fatal(err)
	}
	ours, theirs := os.NewFile(uintptr(fds[0]), "relay"), os.NewFile(uintptr(fds[1]), "relay-worker")
	exe, _ := os.Executable()
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), "CGPOOL_TEST_WORKER=1")
	cmd.ExtraFiles = []*os.File{theirs}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	theirs.Close()
	defer cmd.Wait()
	wc, err := net.FileConn(ours)
	ours.Close()
	if err != nil {
		b.Fatal(err)
	}
	w := ipc.NewConn(wc)
	defer w.Close() // the worker ends at end of file
	if h, _, err := w.Read(); err != nil || h.Type != ipc.TypeHello {
		b.Fatalf("relay worker hello: %v %v", h, err)
	}
	return floorRoundTrips(b, n, []byte("echo:x"), func(h ipc.Header, p []byte) (ipc.Header, []byte, error) {
		if err := w.Write(&ipc.Header{Type: ipc.TypeTask, ID: h.ID}, p); err != nil {
			return h, nil, err
		}
		r, rp, err := w.Read()
		return ipc.Header{Type: ipc.TypeResult, ID: r.ID}, rp, err
	})
}

// floorRoundTrips times n round trips of payload to a goroutine that
// answers each frame with answer, across a unix socket, after as many
// again to warm up.
func floorRoundTrips(b *testing.B, n int, payload []byte, answer func(ipc.Header, []byte) (ipc.Header, []byte, error)) []time.Duration {
	path := filepath.Join(b.TempDir(), "floor.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	go func() {
		sc, err := ln.Accept()
		if err != nil {
			return
		}
		c := ipc.NewConn(sc)
		defer c.Close()
		for {
			h, p, err := c.Read()
			if err != nil {
				return
			}
			if h, p, err = answer(h, p); err != nil {
				return
			}
			c.Write(&h, p)
		}
	}()
	nc, err := net.Dial("unix", path)
	if err != nil {
		b.Fatal(err)
	}
	c := ipc.NewConn(nc)
	defer c.Close()
	out := make([]time.Duration, 0, n)
	for i := range 2 * n {
		t0 := time.Now()
		c.Write(&ipc.Header{Type: ipc.TypeSubmit, ID: uint64(i + 1)}, payload)
		if h, _, err := c.Read(); err != nil || h.Type != ipc.TypeResult {
			b.Fatalf("floor round trip: %+v %v", h, err)
		}
		if i >= n {
			out = append(out, time.Since(t0))
		}
	}
	return out
}

// startServerB is startServer for benchmarks.
func startServerB(b *testing.B, mods ...func(*pool.Config)) (string, *pool.Pool) {
	b.Helper()
	return startServerTB(b, func(c *pool.Config) {
		for _, m := range mods {
			m(c)
		}
	})
}
