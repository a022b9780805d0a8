package pool_test

import (
	"context"
	"errors"
	"os"
	"testing"
	"time"

	"github.com/cgpool/cgpool/internal/kerneltest"
	"github.com/cgpool/cgpool/pool"
)

// TestShutdownMatrix: the four combinations of Deadpool's matrix, and
// nothing of the pool left afterwards (acceptance 6).
func TestShutdownMatrix(t *testing.T) {
	for _, tc := range []struct {
		name                 string
		opts                 pool.ShutdownOptions
		running, queued      pool.OutcomeKind
		returnsBeforeRunning bool
	}{
		{"wait+cancel", pool.ShutdownOptions{Wait: true, CancelFutures: true}, pool.Result, pool.Cancelled, false},
		{"wait", pool.ShutdownOptions{Wait: true}, pool.Result, pool.Result, false},
		{"nowait+cancel", pool.ShutdownOptions{CancelFutures: true}, pool.Cancelled, pool.Cancelled, true},
		{"nowait", pool.ShutdownOptions{}, pool.Result, pool.Cancelled, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := kerneltest.NewRoot(t)
			s, err := pool.NewSupervisor(r, []pool.Config{testConfig(nil)}, nil)
			if err != nil {
				t.Fatal(err)
			}
			p, _ := s.Pool("test")
			running := submit(t, p, pool.Spec{Payload: []byte("sleep:400")})
			ev := <-running.running
			queued := submit(t, p, pool.Spec{Payload: []byte("echo:q")})
			start := time.Now()
			if err := s.Shutdown(context.Background(), tc.opts); err != nil {
				t.Fatal(err)
			}
			returned := time.Since(start)
			if tc.returnsBeforeRunning && returned > 200*time.Millisecond {
				t.Errorf("Shutdown without wait took %v", returned)
			}
			if o := running.wait(t, 10*time.Second); o.Kind != tc.running {
				t.Errorf("running task: %+v, want %s", o, tc.running)
			}
			if o := queued.wait(t, 10*time.Second); o.Kind != tc.queued {
				t.Errorf("queued task: %+v, want %s", o, tc.queued)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			if err := s.Wait(ctx); err != nil {
				t.Fatal(err)
			}
			if pidAlive(ev.Pid) {
				t.Errorf("worker %d still alive after shutdown", ev.Pid)
			}
			if _, err := os.Stat(r.Child("test").Path()); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("pool cgroup still there after shutdown: %v", err)
			}
			if _, err := p.Submit(context.Background(), pool.Spec{Payload: []byte("echo:late")}, nil); !errors.Is(err, pool.ErrDraining) {
				t.Errorf("submit after shutdown: %v, want ErrDraining", err)
			}
		})
	}
}

// TestShutdownFullBacklog: a full backlog never makes Shutdown fail.
func TestShutdownFullBacklog(t *testing.T) {
	r := kerneltest.NewRoot(t)
	s, err := pool.NewSupervisor(r, []pool.Config{testConfig(func(c *pool.Config) { c.MaxBacklog = 3 })}, nil)
	if err != nil {
		t.Fatal(err)
	}
	p, _ := s.Pool("test")
	first := submit(t, p, pool.Spec{Payload: []byte("sleep:200")})
	<-first.running
	var fs []*future
	for range 3 {
		fs = append(fs, submit(t, p, pool.Spec{Payload: []byte("echo:x")}))
	}
	if _, err := p.Submit(context.Background(), pool.Spec{Payload: []byte("echo:x")}, nil); !errors.Is(err, pool.ErrQueueFull) {
		t.Fatalf("fourth queued task: %v, want ErrQueueFull", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := s.Shutdown(ctx, pool.ShutdownOptions{Wait: true}); err != nil {
		t.Fatalf("Shutdown with a full backlog: %v", err)
	}
	for _, f := range fs {
		if o := f.wait(t, time.Second); o.Kind != pool.Result {
			t.Errorf("queued task under shutdown(wait): %+v", o)
		}
	}
}

// TestShutdownDeadlineBounds: after a shutdown's deadline nothing new
// starts: the running task is killed and every queued one cancelled, so
// the shutdown ends near its deadline (on the old main the queued tasks
// started after the kill and ran to their end).
func TestShutdownDeadlineBounds(t *testing.T) {
	s, err := pool.NewSupervisor(kerneltest.NewRoot(t), []pool.Config{testConfig(nil)}, nil)
	if err != nil {
		t.Fatal(err)
	}
	p, _ := s.Pool("test")
	running := submit(t, p, pool.Spec{Payload: []byte("sleep:30000")})
	<-running.running
	queued := []*future{submit(t, p, pool.Spec{Payload: []byte("sleep:3000")}), submit(t, p, pool.Spec{Payload: []byte("sleep:3000")})}
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := s.Shutdown(ctx, pool.ShutdownOptions{Wait: true, Deadline: 300 * time.Millisecond}); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took > 2500*time.Millisecond {
		t.Errorf("a shutdown with a 300 ms deadline took %v", took)
	}
	if o := running.wait(t, time.Second); o.Kind != pool.Cancelled {
		t.Errorf("the running task: %+v, want cancelled", o)
	}
	for i, f := range queued {
		if o := f.wait(t, time.Second); o.Kind != pool.Cancelled {
			t.Errorf("queued task %d: %+v, want cancelled", i, o)
		}
	}
}
