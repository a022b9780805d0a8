package cgroup

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// markAttr is the extended attribute set on every group this package
// creates; Sweep removes only marked groups. cgroupfs accepts user.*
// xattrs since Linux 5.7.
const markAttr = "user.cgpool"

var nameRE = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_-]{0,127}$`)

// Group is a cgroup v2 directory. A Group value holds only its paths; it
// is safe for concurrent use. It does not own the directory's lifetime:
// Remove does.
type Group struct {
	pg    *pgNode // non-nil: reduced mode, a process-group stand-in (pgroup_linux.go)
	mount MountInfo
	dir   string // absolute path of the directory
}

// Path returns the group's absolute directory, e.g.
// /sys/fs/cgroup/cgpool/default/w-3.
func (g *Group) Path() string {
	if g.pg != nil {
		return ""
	}
	return g.dir
}

// Name returns the last element of the group's path.
func (g *Group) Name() string {
	if g.pg != nil {
		return g.pg.name
	}
	return filepath.Base(g.dir)
}

// CgroupPath returns the path as /proc/<pid>/cgroup shows it for a process
// inside this group (relative to the hierarchy's root, starting with "/").
func (g *Group) CgroupPath() string {
	if g.pg != nil {
		return ""
	}
	rel, err := filepath.Rel(g.mount.Point, g.dir)
	if err != nil || rel == "." {
		return g.mount.Root
	}
	return filepath.Join(g.mount.Root, rel)
}

// Child returns the group for an existing child directory name. It does
// not touch the filesystem.
func (g *Group) Child(name string) *Group {
	if g.pg != nil {
		return &Group{pg: g.pg.child(name)}
	}
	return &Group{mount: g.mount, dir: filepath.Join(g.dir, name)}
}

// Mkdir creates the child group name, marks it as ours and returns it.
// name must match [A-Za-z0-9_][A-Za-z0-9_-]* (so it can never collide with
// an interface file such as memory.max). It fails with an error wrapping
// fs.ErrExist if the child exists.
func (g *Group) Mkdir(name string) (*Group, error) {
	if g.pg != nil {
		if !nameRE.MatchString(name) {
			return nil, fmt.Errorf("group name %q: must match %s", name, nameRE)
		}
		c, err := g.pg.mkdir(name)
		if err != nil {
			return nil, err
		}
		return &Group{pg: c}, nil
	}
	if !nameRE.MatchString(name) {
		return nil, fmt.Errorf("cgroup name %q: must match %s", name, nameRE)
	}
	c := g.Child(name)
	if err := os.Mkdir(c.dir, 0o755); err != nil {
		return nil, err
	}
	if err := unix.Setxattr(c.dir, markAttr, []byte("1"), 0); err != nil {
		_ = os.Remove(c.dir)
		return nil, &os.PathError{Op: "setxattr " + markAttr, Path: c.dir, Err: err}
	}
	return c, nil
}

// Marked reports whether the group carries the mark this package sets on
// the groups it creates.
func (g *Group) Marked() bool {
	if g.pg != nil {
		return true
	}
	buf := make([]byte, 8)
	_, err := unix.Getxattr(g.dir, markAttr, buf)
	return err == nil
}

// ReadFile returns the contents of one of the group's interface files.
func (g *Group) ReadFile(name string) (string, error) {
	if g.pg != nil {
		return "", &os.PathError{Op: "read", Path: name, Err: fs.ErrNotExist}
	}
	b, err := os.ReadFile(filepath.Join(g.dir, name))
	return string(b), err
}

// WriteFile writes val to one of the group's interface files in a single
// write(2), as cgroupfs wants. Errors are *os.PathError with the errno.
func (g *Group) WriteFile(name, val string) error {
	if g.pg != nil {
		return reducedErr("write " + name)
	}
	p := filepath.Join(g.dir, name)
	f, err := os.OpenFile(p, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	_, err = f.Write([]byte(val))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

func (g *Group) readInt(name string) (int64, error) {
	s, err := g.ReadFile(name)
	if err != nil {
		return 0, err
	}
	v, err := parseLimit(s)
	if err != nil {
		return 0, fmt.Errorf("parse %s: %w", filepath.Join(g.dir, name), err)
	}
	return v, nil
}

// Events reads cgroup.events.
func (g *Group) Events() (Events, error) {
	s, err := g.ReadFile("cgroup.events")
	if err != nil {
		return Events{}, err
	}
	return ParseEvents(s)
}

// Populated reports whether the group or a descendant holds a live process.
func (g *Group) Populated() (bool, error) {
	if g.pg != nil {
		return len(g.pg.pids()) > 0, nil
	}
	ev, err := g.Events()
	return ev.Populated, err
}

// MemoryEvents reads memory.events (hierarchical: descendants included).
// Without the memory controller the file is missing and the error wraps
// fs.ErrNotExist.
func (g *Group) MemoryEvents() (MemoryEvents, error) {
	s, err := g.ReadFile("memory.events")
	if err != nil {
		return MemoryEvents{}, err
	}
	return ParseMemoryEvents(s)
}

// MemoryEventsLocal reads memory.events.local (this group only, Linux 5.2).
func (g *Group) MemoryEventsLocal() (MemoryEvents, error) {
	s, err := g.ReadFile("memory.events.local")
	if err != nil {
		return MemoryEvents{}, err
	}
	return ParseMemoryEvents(s)
}

// MemoryCurrent reads memory.current in bytes (descendants included).
func (g *Group) MemoryCurrent() (int64, error) {
	if g.pg != nil { // the sum of its processes' VmRSS (shared pages counted in each)
		var sum int64
		for _, m := range g.pg.members(true) {
			sum += m.rss
		}
		return sum, nil
	}
	return g.readInt("memory.current")
}

// MemoryPeak reads memory.peak in bytes: the high-water mark since the
// group was created. It needs Linux 5.19; before that the error wraps
// errors.ErrUnsupported.
func (g *Group) MemoryPeak() (int64, error) {
	if g.pg != nil {
		g.pg.members(true)
		g.pg.mu.Lock()
		defer g.pg.mu.Unlock()
		return g.pg.peak, nil
	}
	v, err := g.readInt("memory.peak")
	if errors.Is(err, fs.ErrNotExist) && g.exists() {
		return 0, fmt.Errorf("memory.peak: %w", errors.ErrUnsupported)
	}
	return v, err
}

// PidsCurrent reads pids.current: tasks (threads included) in the group.
func (g *Group) PidsCurrent() (int64, error) {
	if g.pg != nil {
		return int64(len(g.pg.pids())), nil
	}
	return g.readInt("pids.current")
}

// Procs lists the processes directly in this group (not descendants).
func (g *Group) Procs() ([]int, error) {
	if g.pg != nil {
		return g.pg.pids(), nil
	}
	s, err := g.ReadFile("cgroup.procs")
	if err != nil {
		return nil, err
	}
	var pids []int
	for _, f := range strings.Fields(s) {
		pid, err := strconv.Atoi(f)
		if err != nil {
			return nil, fmt.Errorf("parse %s/cgroup.procs: %w", g.dir, err)
		}
		pids = append(pids, pid)
	}
	return pids, nil
}

// SubtreeProcs lists the processes in this group and every group below it.
// A group removed during the walk is skipped; other errors end it, with
// the pids found so far.
func (g *Group) SubtreeProcs() ([]int, error) {
	if g.pg != nil {
		return g.pg.pids(), nil
	}
	var all []int
	err := filepath.WalkDir(g.dir, func(p string, d fs.DirEntry, err error) error {
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil || !d.IsDir() {
			return err
		}
		pids, err := (&Group{mount: g.mount, dir: p}).Procs()
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		all = append(all, pids...)
		return err
	})
	return all, err
}

// Controllers reads cgroup.controllers: the controllers the parent lets
// this group use.
func (g *Group) Controllers() ([]string, error) {
	if g.pg != nil {
		return nil, nil
	}
	s, err := g.ReadFile("cgroup.controllers")
	if err != nil {
		return nil, err
	}
	return strings.Fields(s), nil
}

// EnableControllers writes "+name" for each name to cgroup.subtree_control,
// so that children of this group can be limited by them. It fails with
// EBUSY (kept in the *os.PathError) if the group holds processes itself.
func (g *Group) EnableControllers(names ...string) error {
	if g.pg != nil && len(names) > 0 {
		return reducedErr("enable controllers " + strings.Join(names, " "))
	}
	if len(names) == 0 {
		return nil
	}
	return g.WriteFile("cgroup.subtree_control", "+"+strings.Join(names, " +"))
}

// DisableControllers writes "-name" for each name to cgroup.subtree_control.
func (g *Group) DisableControllers(names ...string) error {
	if g.pg != nil {
		return nil
	}
	if len(names) == 0 {
		return nil
	}
	return g.WriteFile("cgroup.subtree_control", "-"+strings.Join(names, " -"))
}

// Open opens the group's directory O_PATH for CLONE_INTO_CGROUP. The
// caller owns the returned file and must close it.
func (g *Group) Open() (*os.File, error) {
	if g.pg != nil {
		return nil, nil // nothing to clone into: spawn.Options.ProcessGroupOnly
	}
	fd, err := unix.Open(g.dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: g.dir, Err: err}
	}
	return os.NewFile(uintptr(fd), g.dir), nil
}

// Exists reports whether the group's directory exists (someone may have
// removed it from outside). It does not block.
func (g *Group) Exists() bool { return g.exists() }

// Recreate makes the group's directory again, marked as ours, if it is
// gone; an existing one is left as it is. Its controllers and limits are
// the caller's to set again.
func (g *Group) Recreate() error {
	if g.pg != nil {
		return nil
	}
	if err := os.Mkdir(g.dir, 0o755); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return nil
		}
		return err
	}
	if err := unix.Setxattr(g.dir, markAttr, []byte("1"), 0); err != nil {
		_ = os.Remove(g.dir)
		return &os.PathError{Op: "setxattr " + markAttr, Path: g.dir, Err: err}
	}
	return nil
}

func (g *Group) exists() bool {
	if g.pg != nil {
		g.pg.mu.Lock()
		defer g.pg.mu.Unlock()
		return !g.pg.removed
	}
	_, err := os.Stat(filepath.Join(g.dir, "cgroup.procs"))
	return err == nil
}

// Remove removes the group and every group below it, deepest first. It
// does not kill: a populated group fails with an error wrapping
// ErrNotEmpty. A group that is already gone is not an error. rmdir can
// briefly return EBUSY after the last process left (the kernel is still
// releasing it); Remove retries that for up to a second.
func (g *Group) Remove() error {
	if g.pg != nil {
		return g.pg.remove()
	}
	ents, err := os.ReadDir(g.dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	for _, e := range ents {
		if e.IsDir() {
			if err := g.Child(e.Name()).Remove(); err != nil {
				return err
			}
		}
	}
	delay := 100 * time.Microsecond
	deadline := time.Now().Add(time.Second)
	for {
		err := unix.Rmdir(g.dir)
		switch {
		case err == nil, errors.Is(err, unix.ENOENT):
			return nil
		case errors.Is(err, unix.EBUSY):
			if pop, perr := g.Populated(); perr == nil && pop {
				return fmt.Errorf("remove %s: %w", g.dir, ErrNotEmpty)
			}
			if time.Now().After(deadline) {
				return &os.PathError{Op: "rmdir", Path: g.dir, Err: err}
			}
			time.Sleep(delay) // the kernel gives no event for "rmdir would now succeed"
			delay = min(2*delay, 20*time.Millisecond)
		default:
			return &os.PathError{Op: "rmdir", Path: g.dir, Err: err}
		}
	}
}
