package spawn

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Options says what to start and where.
type Options struct {
	Path string   // program to run; looked up in PATH if it has no slash
	Args []string // argv, including argv[0]; defaults to {Path}
	Env  []string // the whole environment; nil means an empty one
	Dir  string   // working directory; "" = the caller's

	// Cgroup is the target group's directory, opened O_PATH (see
	// cgroup.Group.Open). Required unless ProcessGroupOnly. The caller
	// keeps ownership.
	Cgroup *os.File
	// ProcessGroupOnly starts the child without a cgroup (Cgroup must be
	// nil): cgpool's reduced mode, where the child's own session and
	// process group (Setsid, always set) is all that contains it.
	ProcessGroupOnly bool

	Stdin          io.Reader
	Stdout, Stderr io.Writer
	// ExtraFiles become fds 3, 4, ... in the child (fd 3 is the worker
	// protocol socket by convention). The caller keeps ownership.
	ExtraFiles []*os.File

	// Credential runs the child as another uid/gid; nil keeps ours.
	Credential *syscall.Credential
	// Pdeathsig is sent to the child when the thread that started it dies
	// (Linux ties it to the thread, not the process: golang/go#27505). The
	// cgroup, not this signal, is what contains a child; 0 means SIGKILL.
	Pdeathsig syscall.Signal
}

// lookPathTTL bounds how long a program found in PATH is remembered: a
// program installed (or removed) meanwhile is seen this much later.
const lookPathTTL = time.Second

var looked struct {
	sync.Mutex
	m map[string]lookedPath
}

type lookedPath struct {
	path, envPath string // what name resolved to, under which $PATH
	at            time.Time
}

// lookPath is exec.LookPath(name) (PATH as os/exec reads it: ours, not
// the child's), remembered for lookPathTTL: a stat of each PATH folder
// per command was a tenth of cgpool run's own time over many short
// commands. A name with a slash, or one not found (the error is then
// os/exec's own), is returned as it is.
func lookPath(name string) string {
	if strings.Contains(name, "/") {
		return name
	}
	envPath := os.Getenv("PATH")
	looked.Lock()
	defer looked.Unlock()
	if e, ok := looked.m[name]; ok && e.envPath == envPath && time.Since(e.at) < lookPathTTL {
		return e.path
	}
	p, err := exec.LookPath(name)
	if err != nil || !filepath.IsAbs(p) {
		return name
	}
	if looked.m == nil || len(looked.m) >= 256 {
		looked.m = map[string]lookedPath{}
	}
	looked.m[name] = lookedPath{path: p, envPath: envPath, at: time.Now()}
	return p
}

var devNullFile struct {
	once sync.Once
	f    *os.File
}

// devNull is /dev/null opened once for reading, the standard input of
// every child given none (nil if it cannot be opened).
func devNull() *os.File {
	devNullFile.once.Do(func() {
		devNullFile.f, _ = os.Open(os.DevNull)
	})
	return devNullFile.f
}

// Process is a child started by Start.
type Process struct {
	cmd   *exec.Cmd
	pid   int
	done  chan struct{}
	mu    sync.Mutex
	pidfd int // -1 once closed
	err   error
}

// Start starts the child inside the group o.Cgroup, in a new session, and
// returns once it exists. The returned Process owns a pidfd and a waiting
// goroutine; call Close after Done to release the pidfd. Errors from the
// kernel keep their errno (use errors.Is with unix.ENOSYS, unix.EBUSY...).
func Start(o Options) (*Process, error) {
	if o.Cgroup == nil && !o.ProcessGroupOnly {
		return nil, errors.New("spawn: Options.Cgroup is required")
	}
	if o.Cgroup != nil && o.ProcessGroupOnly {
		return nil, errors.New("spawn: Options.Cgroup and ProcessGroupOnly exclude each other")
	}
	path := o.Path
	if path == "" {
		return nil, errors.New("spawn: Options.Path is required")
	}
	args := o.Args
	if len(args) == 0 {
		args = []string{path}
	}
	cmd := exec.Command(lookPath(path), args[1:]...)
	cmd.Args = args
	if cmd.Err != nil {
		return nil, cmd.Err
	}
	cmd.Env = o.Env
	if cmd.Env == nil {
		cmd.Env = []string{}
	}
	cmd.Dir = o.Dir
	cmd.Stdin, cmd.Stdout, cmd.Stderr = o.Stdin, o.Stdout, o.Stderr
	if o.Stdin == nil {
		if f := devNull(); f != nil {
			cmd.Stdin = f // else os/exec opens /dev/null for this child
		}
	}
	cmd.ExtraFiles = o.ExtraFiles
	sig := o.Pdeathsig
	if sig == 0 {
		sig = syscall.SIGKILL
	}
	pidfd := -1
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Setsid:     true,
		Pdeathsig:  sig,
		Credential: o.Credential,
		PidFD:      &pidfd,
	}
	where := "in its own process group"
	if o.Cgroup != nil {
		cmd.SysProcAttr.UseCgroupFD, cmd.SysProcAttr.CgroupFD = true, int(o.Cgroup.Fd())
		where = "in cgroup " + o.Cgroup.Name()
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s %s: %w", path, where, err)
	}
	p := &Process{cmd: cmd, pid: cmd.Process.Pid, done: make(chan struct{}), pidfd: pidfd}
	go p.wait()
	return p, nil
}

// wait is the one goroutine that reaps the child.
func (p *Process) wait() {
	err := p.cmd.Wait()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		err = nil // a non-zero exit is a fact about the child, not a failure to wait
	}
	p.err = err
	close(p.done)
}

// Pid returns the child's process id.
func (p *Process) Pid() int { return p.pid }

// Done is closed once the child has been reaped.
func (p *Process) Done() <-chan struct{} { return p.done }

// Signal sends sig through the pidfd. After the child was reaped it returns
// os.ErrProcessDone; it never signals a recycled pid.
func (p *Process) Signal(sig syscall.Signal) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	select {
	case <-p.done:
		return os.ErrProcessDone
	default:
	}
	if p.pidfd < 0 {
		return os.ErrProcessDone
	}
	if err := unix.PidfdSendSignal(p.pidfd, sig, nil, 0); err != nil {
		if errors.Is(err, unix.ESRCH) {
			return os.ErrProcessDone
		}
		return os.NewSyscallError("pidfd_send_signal", err)
	}
	return nil
}

// Wait blocks until the child was reaped or ctx ends, and returns how it
// ended. The error is ctx.Err() or an error from waiting itself; a
// non-zero exit is reported in Exit, not as an error.
func (p *Process) Wait(ctx context.Context) (Exit, error) {
	select {
	case <-p.done:
		if p.err != nil {
			return Exit{}, p.err
		}
		return ExitOf(p.cmd.ProcessState), nil
	case <-ctx.Done():
		return Exit{}, ctx.Err()
	}
}

// Close releases the pidfd. It does not kill or wait for the child; call it
// after Done. It is idempotent.
func (p *Process) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.pidfd < 0 {
		return nil
	}
	err := unix.Close(p.pidfd)
	p.pidfd = -1
	return err
}

// Exited reports, without blocking, whether the child has ended: it was
// reaped, or it is a zombie waiting for the reaper (the pidfd is readable).
func (p *Process) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.pidfd < 0 {
		return true
	}
	fds := []unix.PollFd{{Fd: int32(p.pidfd), Events: unix.POLLIN}}
	n, err := unix.Poll(fds, 0)
	return err == nil && n > 0
}
