package cgroup

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// Kill writes 1 to cgroup.kill: the kernel SIGKILLs every process in the
// group and its descendants, including ones forked during the kill. It
// returns once the signals are queued; use WaitEmpty to see them gone.
// cgroup.kill needs Linux 5.14: on older kernels the error wraps
// errors.ErrUnsupported and the caller may use FreezeKill instead.
//
// Never start a process in a killed group or below it: on Linux 6.18 (seen
// on the build hosts) a child cloned into such a group with
// CLONE_INTO_CGROUP is SIGKILLed at birth, long after the kill finished
// (TestKilledGroupIsNotReusable). Replace the group instead.
func (g *Group) Kill() error {
	if g.pg != nil {
		return g.pg.kill()
	}
	err := g.WriteFile("cgroup.kill", "1")
	if errors.Is(err, fs.ErrNotExist) && g.exists() {
		return fmt.Errorf("%s: cgroup.kill: %w", g.dir, errors.ErrUnsupported)
	}
	return err
}

// FreezeKill is Kill for kernels before 5.14: it freezes the group (so no
// member can fork or exit), SIGKILLs each member of the group and its
// descendants through a pidfd, and thaws it. It blocks until the freeze
// took effect or ctx ends.
func (g *Group) FreezeKill(ctx context.Context) error {
	if g.pg != nil {
		return g.pg.kill()
	}
	if err := g.WriteFile("cgroup.freeze", "1"); err != nil {
		return err
	}
	defer g.WriteFile("cgroup.freeze", "0")
	for {
		ev, err := g.Events()
		if err != nil {
			return err
		}
		if ev.Frozen || !ev.Populated {
			break
		}
		if err := waitEventsChange(ctx, g, time.Millisecond); err != nil {
			return fmt.Errorf("freeze %s: %w", g.dir, err)
		}
	}
	pids, err := g.SubtreeProcs()
	if err != nil {
		return err
	}
	for _, pid := range pids {
		fd, err := unix.PidfdOpen(pid, 0)
		if errors.Is(err, unix.ESRCH) {
			continue
		}
		if err != nil {
			return os.NewSyscallError("pidfd_open", err)
		}
		err = unix.PidfdSendSignal(fd, unix.SIGKILL, nil, 0)
		unix.Close(fd)
		if err != nil && !errors.Is(err, unix.ESRCH) {
			return os.NewSyscallError("pidfd_send_signal", err)
		}
	}
	return nil
}
