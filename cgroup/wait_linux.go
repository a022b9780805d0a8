package cgroup

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"
)

// WaitEmpty blocks until cgroup.events says populated 0 or ctx ends; then
// it returns an error wrapping both ErrNotEmpty and ctx.Err(). A group that
// no longer exists counts as empty.
//
// The kernel rate-limits cgroup.events notifications (about one per 10 ms
// per file), so a notification can lag the state: WaitEmpty re-reads the
// file after short polls instead of trusting the wake-up alone.
func (g *Group) WaitEmpty(ctx context.Context) error {
	if g.pg != nil {
		return g.pg.waitEmpty(ctx)
	}
	for slice := 200 * time.Microsecond; ; slice = min(2*slice, 10*time.Millisecond) {
		ev, err := g.Events()
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		if err != nil {
			return err
		}
		if !ev.Populated {
			return nil
		}
		if err := waitEventsChange(ctx, g, slice); err != nil {
			return fmt.Errorf("wait for %s to empty: %w (%w)", g.dir, ErrNotEmpty, err)
		}
	}
}

// waitEventsChange waits up to slice for cgroup.events of g to change, or
// returns ctx.Err() when ctx ends first. A timeout is not an error.
func waitEventsChange(ctx context.Context, g *Group, slice time.Duration) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if dl, ok := ctx.Deadline(); ok {
		slice = min(slice, time.Until(dl))
	}
	f, err := os.Open(filepath.Join(g.dir, "cgroup.events"))
	if err != nil {
		return err
	}
	defer f.Close()
	var buf [64]byte
	_, _ = f.Read(buf[:]) // a read arms the kernfs poll
	fds := []unix.PollFd{{Fd: int32(f.Fd()), Events: unix.POLLPRI}}
	_, err = unix.Poll(fds, max(1, int(slice/time.Millisecond)))
	if err != nil && !errors.Is(err, unix.EINTR) {
		return os.NewSyscallError("poll", err)
	}
	return ctx.Err()
}
