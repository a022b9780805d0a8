package cgroup

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// SupervisorName is the child of a root that holds the supervisor itself:
// cgroup v2's no-internal-processes rule lets a root enable controllers for
// its children only when it holds no process of its own.
const SupervisorName = "supervisor"

// Wanted lists the controllers cgpool enables when they are offered. io
// sets no limit; it is there for io.stat, the bytes each task read and
// wrote (pool.Usage).
var wanted = []string{"cpu", "memory", "pids", "io"}

// sweepTimeout bounds how long Sweep waits for one killed group to empty.
const sweepTimeout = 10 * time.Second

// FindMount returns the cgroup v2 mount this process sees, from
// /proc/self/mountinfo. It fails with ErrNoCgroup2 when there is none.
func FindMount() (MountInfo, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return MountInfo{}, err
	}
	defer f.Close()
	ms, err := ParseMountinfo(f)
	if err != nil {
		return MountInfo{}, err
	}
	return PickMount(ms)
}

// SelfPath returns this process's cgroup v2 path from /proc/self/cgroup,
// e.g. "/system.slice/cgpool.service/supervisor".
func SelfPath() (string, error) {
	f, err := os.Open("/proc/self/cgroup")
	if err != nil {
		return "", err
	}
	defer f.Close()
	return ParseProcCgroup(f)
}

// Root is a delegated cgroup that cgpool owns: the supervisor sits in
// <root>/supervisor, pools and worker slots are created below it.
type Root struct {
	Group
	log         *slog.Logger
	controllers []string // enabled in the root's cgroup.subtree_control
	created     bool     // MkdirRoot made the directory
	origin      string   // the cgroup (host path) TakeOver moved us out of, or ""
	lock        *os.File // the ownership lock (Lock), or nil
}

// OpenRoot opens an existing cgroup directory as a root. It checks that dir
// is on a cgroup v2 mount and delegated to us (cgroup.procs and
// cgroup.subtree_control writable); otherwise the error wraps
// ErrNoCgroup2 or ErrNotDelegated. log may be nil. Nothing is changed on
// disk until TakeOver.
func OpenRoot(dir string, log *slog.Logger) (*Root, error) {
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	dir = filepath.Clean(dir)
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return nil, &os.PathError{Op: "statfs", Path: dir, Err: err}
	}
	if st.Type != unix.CGROUP2_SUPER_MAGIC {
		return nil, fmt.Errorf("%s is not on a cgroup v2 mount: %w", dir, ErrNoCgroup2)
	}
	m, err := FindMount()
	if err != nil {
		return nil, err
	}
	if dir != m.Point && !strings.HasPrefix(dir, m.Point+"/") {
		return nil, fmt.Errorf("%s is not below the cgroup v2 mount %s: %w", dir, m.Point, ErrNoCgroup2)
	}
	for _, f := range []string{"cgroup.procs", "cgroup.subtree_control"} {
		if err := unix.Access(filepath.Join(dir, f), unix.W_OK); err != nil {
			return nil, fmt.Errorf("%s: %w (%w)", filepath.Join(dir, f), ErrNotDelegated, err)
		}
	}
	return &Root{Group: Group{mount: m, dir: dir}, log: log}, nil
}

// MkdirRoot creates dir (its parent must exist and be delegated to us),
// marks it, and opens it as a root. Release removes it again.
func MkdirRoot(dir string, log *slog.Logger) (*Root, error) {
	dir = filepath.Clean(dir)
	parent, err := OpenRoot(filepath.Dir(dir), log)
	if err != nil {
		return nil, err
	}
	if _, err := parent.Mkdir(filepath.Base(dir)); err != nil {
		return nil, err
	}
	r, err := OpenRoot(dir, log)
	if err != nil {
		_ = os.Remove(dir)
		return nil, err
	}
	r.created = true
	return r, nil
}

// Created reports whether MkdirRoot made the root (Release removes it).
func (r *Root) Created() bool { return r.created }

// Controllers returns the controllers TakeOver enabled for the root's
// children: cpu, memory and pids, where cgroup.controllers offers them.
func (r *Root) Controllers() []string { return slices.Clone(r.controllers) }

// Supervisor returns the group the supervisor runs in.
func (r *Root) Supervisor() *Group { return r.Child(SupervisorName) }

// TakeOver makes the root ours: if this process is in the root itself it
// moves into <root>/supervisor (a process elsewhere, for example a test
// binary that manages a root below it, is left where it is); it sweeps
// the groups an earlier run left (see Sweep); and it enables every
// controller in cpu, memory and pids that the root offers. A controller the
// root does not offer is logged, and limits that need it are refused later
// by SetLimits.
func (r *Root) TakeOver(ctx context.Context) error {
	if r.pg != nil {
		return nil // reduced mode: nothing to move, sweep or enable
	}
	self, err := SelfPath()
	if err != nil {
		return err
	}
	selfDir := r.mount.HostPath(self)
	if selfDir == r.dir {
		sup := r.Supervisor()
		if !sup.exists() {
			if _, err := r.Mkdir(SupervisorName); err != nil {
				return fmt.Errorf("create supervisor group: %w", err)
			}
		}
		if err := sup.WriteFile("cgroup.procs", strconv.Itoa(os.Getpid())); err != nil {
			return fmt.Errorf("move supervisor into %s: %w", sup.dir, err)
		}
		r.origin = selfDir
	}
	if _, err := r.Sweep(ctx); err != nil {
		return err
	}
	offered, err := r.Group.Controllers()
	if err != nil {
		return err
	}
	var enable []string
	for _, c := range wanted {
		if slices.Contains(offered, c) {
			enable = append(enable, c)
		} else {
			r.log.Info("cgroup controller not available; limits that need it will be refused", "controller", c, "root", r.dir, "offered", strings.Join(offered, " "))
		}
	}
	if err := r.EnableControllers(enable...); err != nil {
		if errors.Is(err, unix.EBUSY) {
			return fmt.Errorf("enable controllers %v on %s: the root holds processes of its own (no-internal-processes rule); start the supervisor inside the root or in %s: %w", enable, r.dir, SupervisorName, err)
		}
		return fmt.Errorf("enable controllers %v on %s: %w", enable, r.dir, err)
	}
	r.controllers = enable
	return nil
}

// Sweep kills, waits for and removes every group below the root that this
// package created (it carries the user.cgpool mark), except the
// supervisor's own. Groups without the mark are left alone. It returns how
// many groups it removed. Each group gets sweepTimeout to empty.
func (r *Root) Sweep(ctx context.Context) (int, error) {
	if r.pg != nil {
		return 0, nil
	}
	ents, err := os.ReadDir(r.dir)
	if err != nil {
		return 0, err
	}
	n := 0
	var errs []error
	for _, e := range ents {
		if !e.IsDir() || e.Name() == SupervisorName {
			continue
		}
		g := r.Child(e.Name())
		if !g.Marked() {
			r.log.Info("leaving a cgroup we did not create", "path", g.dir)
			continue
		}
		if err := g.Destroy(ctx, sweepTimeout); err != nil {
			errs = append(errs, err)
			continue
		}
		r.log.Info("swept a cgroup left by an earlier run", "path", g.dir)
		n++
	}
	return n, errors.Join(errs...)
}

// Destroy kills everything in the group and below it, waits up to timeout
// for it to empty and removes it: the whole teardown of a worker slot.
// On a kernel without cgroup.kill it falls back to FreezeKill.
func (g *Group) Destroy(ctx context.Context, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if pop, err := g.Populated(); err == nil && pop {
		err := g.Kill()
		if errors.Is(err, errors.ErrUnsupported) {
			err = g.FreezeKill(ctx)
		}
		if err != nil {
			return err
		}
		if err := g.WaitEmpty(ctx); err != nil {
			return err
		}
	} else if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	return g.Remove()
}

// Release undoes TakeOver: it sweeps every group we created, disables the
// controllers it enabled, moves this process back to where TakeOver found
// it (removing the supervisor group), and removes the root itself if
// MkdirRoot made it. It blocks until the groups are empty or ctx ends.
func (r *Root) Release(ctx context.Context) error {
	if r.pg != nil {
		ctx, cancel := context.WithTimeout(ctx, sweepTimeout)
		defer cancel()
		if err := r.pg.kill(); err != nil {
			return err
		}
		return r.pg.waitEmpty(ctx)
	}
	_, err := r.Sweep(ctx)
	if err != nil {
		return err
	}
	if err := r.DisableControllers(r.controllers...); err != nil {
		return err
	}
	r.controllers = nil
	if r.origin != "" {
		origin := &Group{mount: r.mount, dir: r.origin}
		if err := origin.WriteFile("cgroup.procs", strconv.Itoa(os.Getpid())); err != nil {
			return fmt.Errorf("move supervisor back to %s: %w", r.origin, err)
		}
		r.origin = ""
	}
	if sup := r.Supervisor(); sup.exists() && sup.Marked() {
		if err := sup.Remove(); err != nil && !errors.Is(err, ErrNotEmpty) {
			return err
		}
	}
	if r.created {
		if err := r.Remove(); err != nil {
			return err
		}
	}
	if r.lock != nil {
		r.lock.Close()
		r.lock = nil
	}
	return nil
}
