package cgroup

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"

	"golang.org/x/sys/unix"
)

// Lock takes the root's ownership lock: an exclusive flock on the root's
// directory, held (on a close-on-exec descriptor, so no child inherits it)
// until Release, or until this process ends, however it ends. A second
// supervisor that finds the lock held must not touch the root: its owner
// lives (a zombie owner has closed its descriptors, so its lock is free).
// Lock does not block: a held lock fails at once with an error wrapping
// ErrOwned. Call it before TakeOver, whose sweep would kill the owner's
// tasks. Locking twice is a no-op.
func (r *Root) Lock() error {
	if r.pg != nil {
		return nil
	}
	if r.lock != nil {
		return nil
	}
	f, err := TryLockDir(r.dir)
	if err != nil {
		return err
	}
	r.lock = f
	return nil
}

// TryLockDir takes the exclusive, non-blocking flock on dir that Root.Lock
// takes, and returns the open directory that holds it (close it to
// unlock). A lock held elsewhere is an error wrapping ErrOwned.
func TryLockDir(dir string) (*os.File, error) {
	f, err := os.OpenFile(dir, os.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	for {
		err = unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err != unix.EINTR {
			break
		}
	}
	if err != nil {
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("%s: %w (another cgpool serve or cgpool run manages it)", dir, ErrOwned)
		}
		return nil, &os.PathError{Op: "flock", Path: dir, Err: err}
	}
	return f, nil
}

// Reap removes what a supervisor that died left of its root dir: it takes
// the root's lock (a root locked by a live supervisor, a successor that
// took it over meanwhile, is left alone), kills, waits for and removes
// every marked group below it but the supervisor's own (Sweep), and, if
// remove is set (the dead supervisor had made the root), removes the
// supervisor group and the root itself. A root that no longer exists is
// nothing to do. It blocks until the groups are empty or ctx ends, and
// returns how many groups it swept.
func Reap(ctx context.Context, dir string, remove bool, log *slog.Logger) (int, error) {
	lock, err := TryLockDir(dir)
	switch {
	case errors.Is(err, os.ErrNotExist), errors.Is(err, ErrOwned):
		return 0, nil
	case err != nil:
		return 0, err
	}
	defer lock.Close()
	r, err := OpenRoot(dir, log)
	if err != nil {
		return 0, err
	}
	n, err := r.Sweep(ctx)
	if err != nil || !remove {
		return n, err
	}
	if sup := r.Supervisor(); sup.exists() && sup.Marked() {
		if err := sup.Destroy(ctx, sweepTimeout); err != nil {
			return n, err
		}
	}
	return n, r.Remove()
}
