package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/cgpool/cgpool/cgroup"
)

// openRoot finds the cgroup root cgpool manages and takes it over:
//   - --root DIR: that directory (created if missing);
//   - inside a cgpool worker slot (CGPOOL_SLOT_CGROUP): a new group in the
//     slot, so that a nested pool subdivides its slot's limits and dies with
//     it;
//   - our own cgroup, when it is delegated to us (systemd Delegate=yes) and
//     is not the hierarchy's root; its parent, when we already run in a
//     "supervisor" group of a delegated parent (DelegateSubgroup=supervisor,
//     systemd 254+);
//   - on a systemd host, a transient scope cgpool-<pid>.scope with
//     Delegate=yes from the user's own manager (or, as root, the system
//     manager), over D-Bus (startScope; CGPOOL_NO_SCOPE=1 skips it);
//   - else a new group cgpool-<pid> at the top of the hierarchy (as root on
//     a machine without systemd delegation, like the hybrid build hosts).
//
// release undoes it (sweeps our groups, and removes the root if we made it).
func openRoot(ctx context.Context, flag string, log *slog.Logger) (*cgroup.Root, error) {
	m, err := cgroup.FindMount()
	if err != nil {
		err = fmt.Errorf("cgpool needs a cgroup v2 hierarchy (Linux 5.14+): %w", err)
		if flag == "" {
			err = &noCgroupError{why: "no cgroup v2 mount", err: err}
		}
		return nil, err
	}
	var r *cgroup.Root
	switch slot := os.Getenv("CGPOOL_SLOT_CGROUP"); {
	case flag != "":
		if _, err := os.Stat(flag); errors.Is(err, os.ErrNotExist) {
			r, err = cgroup.MkdirRoot(flag, log)
			if err != nil {
				return nil, err
			}
		} else if r, err = cgroup.OpenRoot(flag, log); err != nil {
			return nil, err
		}
	case slot != "":
		r, err = cgroup.MkdirRoot(filepath.Join(slot, "nested-"+strconv.Itoa(os.Getpid())), log)
		if err != nil {
			return nil, fmt.Errorf("nested pool in slot %s: %w", slot, err)
		}
	default:
		self, err := cgroup.SelfPath()
		if err != nil {
			return nil, err
		}
		if dir := m.HostPath(self); self != "/" {
			// On a systemd host only a cgroup systemd delegated is ours,
			// however writable (root may write any).
			delegated := func(d string) bool { return !systemdRunning() || systemdDelegated(ctx, d) }
			// systemd 254+ with DelegateSubgroup=supervisor starts us in
			// <unit>/supervisor: the delegated root is its parent.
			if filepath.Base(dir) == cgroup.SupervisorName {
				if r, err = cgroup.OpenRoot(filepath.Dir(dir), log); err == nil && delegated(filepath.Dir(dir)) {
					break
				}
			}
			if r, err = cgroup.OpenRoot(dir, log); err == nil && delegated(dir) {
				break
			}
		}
		// Not delegated: on a systemd host, ask the manager (the user's
		// own, or as root the system's) for a transient scope with
		// Delegate=yes, as rootless container tools do.
		var scopeErr error
		if systemdRunning() && os.Getenv("CGPOOL_NO_SCOPE") == "" {
			dir, err := startScope(ctx, log)
			if err == nil {
				if r, err = cgroup.OpenRoot(dir, log); err == nil {
					break
				}
			}
			scopeErr = err
			log.Warn("systemd gave no delegated transient scope; trying without", "err", err)
		}
		sweepStaleRoots(ctx, m, log)
		dir := filepath.Join(m.Point, "cgpool-"+strconv.Itoa(os.Getpid()))
		if r, err = cgroup.MkdirRoot(dir, log); err != nil {
			why := fmt.Sprintf("own cgroup %s not delegated; cannot make %s: %v", self, dir, err)
			if scopeErr != nil {
				why += "; no transient scope from systemd: " + scopeErr.Error()
			}
			return nil, &noCgroupError{
				why: why,
				err: fmt.Errorf("no delegated cgroup to manage: our own cgroup %s is not delegated to us, systemd gave no transient scope (%v), and %s cannot be created (%w); run cgpool as a systemd service with Delegate=yes, as root, or pass --root", self, scopeErr, dir, err),
			}
		}
	}
	// Never sweep a root whose owner lives: a second cgpool serve with the
	// same root would kill the first one's tasks and groups.
	if err := r.Lock(); err != nil {
		if r.Created() {
			_ = r.Release(ctx)
		}
		return nil, fmt.Errorf("cgroup root %s: %w", r.Path(), err)
	}
	if err := r.TakeOver(ctx); err != nil {
		_ = r.Release(ctx)
		return nil, err
	}
	return r, nil
}

// sweepStaleRoots removes the cgpool-<pid> roots that earlier runs made at
// the top of the hierarchy and could not remove because they were killed:
// only groups carrying our mark, whose ownership lock is free (no live
// supervisor holds it: a dead one's, zombie or not, closed with it) and
// whose pid no longer runs or is a zombie (a root of a cgpool older than
// the lock has no lock to hold).
func sweepStaleRoots(ctx context.Context, m cgroup.MountInfo, log *slog.Logger) {
	top, err := cgroup.OpenRoot(m.Point, log)
	if err != nil {
		return
	}
	ents, err := os.ReadDir(m.Point)
	if err != nil {
		return
	}
	for _, e := range ents {
		rest, ok := strings.CutPrefix(e.Name(), "cgpool-")
		pid, err := strconv.Atoi(rest)
		if !ok || err != nil || !e.IsDir() || !processGone(pid) {
			continue // not ours by name, or its supervisor may still run (or its pid was reused)
		}
		g := top.Child(e.Name())
		if !g.Marked() {
			continue
		}
		lock, err := cgroup.TryLockDir(g.Path())
		if err != nil {
			continue // its owner lives (or the directory went meanwhile)
		}
		err = g.Destroy(ctx, 10*time.Second)
		lock.Close()
		if err != nil {
			log.Warn("could not remove a stale cgpool root", "path", g.Path(), "err", err)
			continue
		}
		log.Info("removed the cgroup root of a cgpool that was killed", "path", g.Path())
	}
}

// noCgroupError is openRoot's failure to find any writable cgroup v2 where
// it looks by itself (not --root, not a nested pool's slot): the case in
// which reduced mode may stand in (openRootOrReduced).
type noCgroupError struct {
	why string // short, for the one-line warning
	err error
}

func (e *noCgroupError) Error() string { return e.err.Error() }
func (e *noCgroupError) Unwrap() error { return e.err }

// openRootOrReduced is openRoot, except that where no writable cgroup v2
// can be had at all (a container with a read-only /sys/fs/cgroup, a user
// with no delegation) and allow is set, it returns a reduced-mode root
// (cgroup.NewReducedRoot: process groups instead of cgroups) and says so
// on stderr in one line naming the guarantees that are missing. Without
// allow the error says how to ask for reduced mode (hint).
func openRootOrReduced(ctx context.Context, flag string, allow bool, hint string, log *slog.Logger) (*cgroup.Root, error) {
	r, err := openRoot(ctx, flag, log)
	var nc *noCgroupError
	if err == nil || !errors.As(err, &nc) {
		return r, err
	}
	if !allow {
		return nil, fmt.Errorf("%w; %s (reduced mode: %s)", err, hint, strings.Join(cgroup.ReducedMissing, "; "))
	}
	fmt.Fprintln(os.Stderr, cgroup.ReducedWarning(nc.why))
	return cgroup.NewReducedRoot(log), nil
}
