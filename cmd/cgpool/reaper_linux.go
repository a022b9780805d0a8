package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"strconv"
	"syscall"
	"time"

	"github.com/cgpool/cgpool/cgroup"
	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"
)

// The reaper makes a supervisor's tasks die with it, however it dies.
// Outside systemd nothing else would: a SIGKILLed (or crashed, or
// OOM-killed) supervisor leaves its slots' process trees running, a
// `setsid` grandchild included, until some later cgpool sweeps them. So
// every supervisor starts a reaper: a small process of its own session
// (terminal signals do not reach it) that holds the read end of a pipe
// whose write end only the supervisor holds (close-on-exec: no worker
// inherits it). The pipe ends when the supervisor's process ends, clean
// exit or not (a zombie's descriptors are closed too). The reaper then
// takes the root's lock (a successor that took the root over keeps it),
// kills and removes every group the supervisor made (cgroup.Reap), removes
// its socket if it is still the one it made, and exits. After a clean
// shutdown it finds nothing left and exits quietly. Under systemd,
// KillMode=mixed does the same for the unit, reaper included.

// reaper is a started reaper process.
type reaper struct {
	cmd  *exec.Cmd
	pipe *os.File // the write end: held, never written
}

// reaperSpec is what a reaper removes.
type reaperSpec struct {
	root       string // the root's directory
	removeRoot bool   // the supervisor made the root (remove it too)
	socket     string // the socket file, removed if its inode is still socketIno
	socketIno  uint64
	privateDir string // removed whole (serve --private-dir)
}

// startReaper starts the reaper of the calling supervisor. The reaper ends
// when the supervisor's process does: there is nothing to stop.
func startReaper(s reaperSpec, log *slog.Logger) (*reaper, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	r, w, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	args := []string{"__reap", "--root", s.root, "--owner", strconv.Itoa(os.Getpid())}
	if s.removeRoot {
		args = append(args, "--remove-root")
	}
	if s.socket != "" && s.socketIno != 0 {
		args = append(args, "--socket", s.socket, "--socket-ino", strconv.FormatUint(s.socketIno, 10))
	}
	if s.privateDir != "" {
		args = append(args, "--private-dir", s.privateDir)
	}
	cmd := exec.Command(exe, args...)
	cmd.ExtraFiles = []*os.File{r}
	cmd.Stderr = os.Stderr
	cmd.Env = append(os.Environ(), "CGPOOL_SLOT_CGROUP=") // not a nested pool's
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	err = cmd.Start()
	r.Close()
	if err != nil {
		w.Close()
		return nil, fmt.Errorf("start the reaper: %w", err)
	}
	go func() {
		// The reaper ends before us only if someone kills it: say so, our
		// tasks would then outlive a crash of ours.
		if err := cmd.Wait(); err != nil {
			log.Warn("the reaper ended before the supervisor; its tasks will not die with it if it is killed", "err", err)
		}
	}()
	return &reaper{cmd: cmd, pipe: w}, nil
}

func socketIno(path string) uint64 {
	var st unix.Stat_t
	if err := unix.Lstat(path, &st); err != nil {
		return 0
	}
	return st.Ino
}

// reapCmd is the hidden `cgpool __reap`, started by startReaper.
func reapCmd() *cobra.Command {
	var s reaperSpec
	var owner int
	cmd := &cobra.Command{
		Use:    "__reap",
		Hidden: true,
		Short:  "internal: remove a dead supervisor's cgroups and tasks (started by the supervisor itself)",
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			// A pidfd of the owner, taken while it certainly lives (it
			// started us and holds the pipe), so no reused pid can fool us.
			pidfd, err := unix.PidfdOpen(owner, 0)
			if err != nil {
				pidfd = -1 // gone already, or a kernel before 5.3: the pipe alone tells
			}
			signal := make([]byte, 1)
			pipe := os.NewFile(3, "owner")
			for {
				if _, err := pipe.Read(signal); err != nil {
					break // io.EOF: the owner's process ended
				}
			}
			if pidfd >= 0 {
				// The pipe ends as the owner's descriptors are closed one
				// by one: its lock on the root may still be held for a
				// moment. Its pidfd becomes readable once it has exited,
				// every descriptor closed.
				fds := []unix.PollFd{{Fd: int32(pidfd), Events: unix.POLLIN}}
				for {
					if _, err := unix.Poll(fds, 30_000); err != unix.EINTR {
						break
					}
				}
				unix.Close(pidfd)
			}
			return reap(s, owner)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&s.root, "root", "", "")
	fl.BoolVar(&s.removeRoot, "remove-root", false, "")
	fl.StringVar(&s.socket, "socket", "", "")
	fl.Uint64Var(&s.socketIno, "socket-ino", 0, "")
	fl.StringVar(&s.privateDir, "private-dir", "", "")
	fl.IntVar(&owner, "owner", 0, "")
	return cmd
}

func reap(s reaperSpec, owner int) error {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var n int
	var err error
	if s.root != "" { // "": reduced mode, no cgroup to reap
		n, err = cgroup.Reap(ctx, s.root, s.removeRoot, log)
	}
	if s.socket != "" && socketIno(s.socket) == s.socketIno {
		os.Remove(s.socket)
	}
	if s.privateDir != "" {
		os.RemoveAll(s.privateDir)
	}
	switch {
	case err != nil:
		return fmt.Errorf("the supervisor (pid %d) ended; removing what it left in %s: %w", owner, s.root, err)
	case n > 0:
		fmt.Fprintf(os.Stderr, "cgpool: the supervisor (pid %d) ended without cleaning up; its tasks were killed and its %d cgroups under %s removed\n", owner, n, s.root)
	}
	return nil
}
