package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/cgpool/cgpool/client"
	"github.com/cgpool/cgpool/ipc"
	"golang.org/x/sys/unix"
)

// BenchmarkDaemonRoundTrip: a no-op task from a Go client in this process
// through a "cgpool serve" process to a Go worker (cgpool echo-worker), one
// at a time: three processes, as a service and its clients run. Beside it,
// in the same run, the three-process floor: the same frames through a
// relay process that forwards each to the same worker program and its
// answer back, with nothing of the supervisor in it. Reports the medians,
// the supervisor's p99, and the ratio of the medians (ns/op also counts the
// floor and the warm-up: read the metrics).
//
//	go test -run '^$' -bench DaemonRoundTrip -benchtime 3000x ./cmd/cgpool
func BenchmarkDaemonRoundTrip(b *testing.B) {
	exe, _ := os.Executable()
	sock := startServe(b, "--kind", "worker", "--worker-command", exe+" echo-worker", "-j", "1")
	ctx := context.Background()
	c, err := client.Dial(ctx, sock)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	task := client.Task{Payload: []byte("x")}
	roundTrip := func() error {
		f, err := c.Submit(ctx, task)
		if err == nil {
			_, err = f.Wait(ctx)
		}
		return err
	}
	floor := relayFloor(b, b.N)
	lat := timeRoundTrips(b, b.N, roundTrip)
	p50, f50 := lat[len(lat)/2], floor[len(floor)/2]
	b.ReportMetric(float64(p50.Microseconds()), "p50-µs")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
	b.ReportMetric(float64(f50.Microseconds()), "3-process-floor-p50-µs")
	b.ReportMetric(float64(p50)/float64(f50), "x-floor")
}

// timeRoundTrips runs roundTrip n times after as many to warm up and
// returns the times, sorted.
func timeRoundTrips(b *testing.B, n int, roundTrip func() error) []time.Duration {
	lat := make([]time.Duration, 0, n)
	for i := range 2 * n {
		t0 := time.Now()
		if err := roundTrip(); err != nil {
			b.Fatal(err)
		}
		if i >= n {
			lat = append(lat, time.Since(t0))
		}
	}
	slices.Sort(lat)
	return lat
}

// relayFloor times n no-op round trips through a relay process (this test
// binary with CGPOOL_TEST_RELAY set; see relayMain) to the worker program.
func relayFloor(b *testing.B, n int) []time.Duration {
	sock := filepath.Join(shortTempDir(b, "cgpool-relay"), "relay.sock")
	exe, _ := os.Executable()
	relay := exec.Command(exe)
	relay.Env = append(os.Environ(), "CGPOOL_TEST_RELAY="+sock)
	relay.Stderr = os.Stderr
	out, err := relay.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := relay.Start(); err != nil {
		b.Fatal(err)
	}
	defer relay.Wait() // it ends when its client does
	var ready [1]byte
	if _, err := out.Read(ready[:]); err != nil {
		b.Fatalf("relay: %v", err)
	}
	nc, err := net.Dial("unix", sock)
	if err != nil {
		b.Fatal(err)
	}
	c := ipc.NewConn(nc)
	defer c.Close()
	id := uint64(0)
	return timeRoundTrips(b, n, func() error {
		id++
		if err := c.Write(&ipc.Header{Type: ipc.TypeSubmit, ID: id}, []byte("x")); err != nil {
			return err
		}
		h, _, err := c.Read()
		if err == nil && h.Type != ipc.TypeResult {
			err = fmt.Errorf("relay answered %+v", h)
		}
		return err
	})
}

// relayMain is the relay process of BenchmarkDaemonRoundTrip: it starts
// "cgpool echo-worker" on a socketpair, listens on path, writes one byte to
// stdout when ready, and forwards every frame of its one client to the
// worker as a task and the worker's answer back as a result.
func relayMain(path string) {
	fail := func(err error) {
		fmt.Fprintln(os.Stderr, "relay:", err)
		os.Exit(1)
	}
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		fail(err)
	}
	ours, theirs := os.NewFile(uintptr(fds[0]), "relay"), os.NewFile(uintptr(fds[1]), "worker")
	exe, _ := os.Executable()
	worker := exec.Command(exe, "echo-worker")
	worker.Env = append(os.Environ(), "CGPOOL_TEST_RELAY=", "CGPOOL_TEST_MAIN=1")
	worker.ExtraFiles = []*os.File{theirs}
	worker.Stderr = os.Stderr
	if err := worker.Start(); err != nil {
		fail(err)
	}
	theirs.Close()
	wc, err := net.FileConn(ours)
	ours.Close() // wc has its own copy; the worker must see end of file when wc closes
	if err != nil {
		fail(err)
	}
	w := ipc.NewConn(wc)
	if h, _, err := w.Read(); err != nil || h.Type != ipc.TypeHello {
		fail(fmt.Errorf("worker hello: %+v %v", h, err))
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		fail(err)
	}
	os.Stdout.Write([]byte{'\n'})
	nc, err := ln.Accept()
	ln.Close()
	if err != nil {
		fail(err)
	}
	c := ipc.NewConn(nc)
	for {
		h, p, err := c.Read()
		if err != nil {
			break // the client is done
		}
		if err := w.Write(&ipc.Header{Type: ipc.TypeTask, ID: h.ID}, p); err != nil {
			fail(err)
		}
		r, rp, err := w.Read()
		if err != nil {
			fail(err)
		}
		if err := c.Write(&ipc.Header{Type: ipc.TypeResult, ID: r.ID}, rp); err != nil {
			break
		}
	}
	w.Close() // the worker exits at end of file
	worker.Wait()
}
