package pool

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"syscall"
	"time"

	"github.com/cgpool/cgpool/cgroup"
	"github.com/cgpool/cgpool/ipc"
	"github.com/cgpool/cgpool/spawn"
	"golang.org/x/sys/unix"
)

// helloTimeout bounds how long a new worker may take to say hello.
const helloTimeout = 60 * time.Second

// exitGrace is how long a worker asked to exit may take before its slot is
// killed.
const exitGrace = 3 * time.Second

type msg struct {
	h       ipc.Header
	payload []byte
}

// workerProc is one worker process and its protocol socket. Only the slot
// goroutine that owns it reads the socket.
type workerProc struct {
	proc *spawn.Process
	nc   net.Conn // for read deadlines
	conn *ipc.Conn
}

// startWorker starts argv in the leaf with the worker socket on fd 3 and
// waits for its hello. On error nothing of it is left running except what
// the caller's group kill removes.
func startWorker(leaf *cgroup.Group, leafDir *os.File, argv, env []string, cred *syscall.Credential) (*workerProc, ipc.Header, error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, ipc.Header{}, os.NewSyscallError("socketpair", err)
	}
	ours, theirs := os.NewFile(uintptr(fds[0]), "worker-socket"), os.NewFile(uintptr(fds[1]), "worker-socket")
	proc, err := spawn.Start(spawn.Options{
		Path: argv[0], Args: argv, Env: env, Cgroup: leafDir, ProcessGroupOnly: leaf.Reduced(), Credential: cred,
		ExtraFiles: []*os.File{theirs}, Stdout: os.Stderr, Stderr: os.Stderr,
	})
	theirs.Close()
	if err != nil {
		ours.Close()
		return nil, ipc.Header{}, err
	}
	leaf.Track(proc.Pid())        // reduced mode: its process group is its container
	nc, err := net.FileConn(ours) // a net.Conn: deadlines, and Close unblocks a reader
	ours.Close()
	if err != nil {
		_ = proc.Signal(syscall.SIGKILL)
		<-proc.Done()
		proc.Close()
		return nil, ipc.Header{}, err
	}
	w := &workerProc{proc: proc, nc: nc, conn: ipc.NewConn(nc)}
	nc.SetReadDeadline(time.Now().Add(helloTimeout))
	h, _, err := w.conn.Read()
	nc.SetReadDeadline(time.Time{})
	switch {
	case err == nil && h.Type == ipc.TypeHello && h.Version == ipc.ProtocolVersion:
		return w, h, nil
	case err == nil && h.Type == ipc.TypeHello:
		err = fmt.Errorf("worker speaks protocol version %d, want %d", h.Version, ipc.ProtocolVersion)
	case err == nil:
		err = fmt.Errorf("worker %v sent %q before its hello", argv, h.Type)
	case errors.Is(err, os.ErrDeadlineExceeded):
		err = fmt.Errorf("worker %v did not say hello within %v", argv, helloTimeout)
	default:
		w.kill()
		e, _ := proc.Wait(context.Background())
		return nil, ipc.Header{}, fmt.Errorf("worker %v exited before its hello (%v)", argv, e)
	}
	w.kill()
	return nil, ipc.Header{}, err
}

func (w *workerProc) pid() int { return w.proc.Pid() }

// exited reports whether the worker has ended (it may not be reaped yet).
// It asks the pidfd: a system call.
func (w *workerProc) exited() bool { return w.proc.Exited() }

// dead reports whether the worker's end has been seen (its Done channel is
// closed). It costs no system call; a death not seen yet shows up on the
// worker's socket or through the pidfd watcher.
func (w *workerProc) dead() bool {
	select {
	case <-w.proc.Done():
		return true
	default:
		return false
	}
}

// kill SIGKILLs the worker process alone (its group is the caller's to
// kill), then reaps and releases everything.
func (w *workerProc) kill() {
	_ = w.proc.Signal(syscall.SIGKILL)
	w.release()
}

// release waits for the process and closes its socket and pidfd.
func (w *workerProc) release() {
	<-w.proc.Done()
	w.conn.Close()
	w.proc.Close()
}

// askExit asks the worker to run its finalizer and exit, and waits up to
// exitGrace. It reports whether the worker exited by itself.
func (w *workerProc) askExit() bool {
	if err := w.conn.Write(&ipc.Header{Type: ipc.TypeExit}, nil); err != nil && !errors.Is(err, ipc.ErrClosed) {
		return false
	}
	t := time.NewTimer(exitGrace)
	defer t.Stop()
	select {
	case <-w.proc.Done():
		return true
	case <-t.C:
		return false
	}
}
