package cgroup

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Reduced mode: where no writable cgroup v2 can be had (a container with a
// read-only /sys/fs/cgroup, a host without systemd delegation for this
// user), a Root and its Groups can stand for process groups instead of
// cgroup directories. A Group of a reduced root is a node in memory: it
// holds the process groups Track gave it (each process cgpool starts is
// the leader of a session and process group of its own, spawn.Start's
// Setsid). Kill SIGKILLs those process groups; Populated, WaitEmpty and
// SubtreeProcs find their members in /proc; memory is the sum of the
// members' RSS (VmRSS), and the peak the highest sum of their VmHWM seen.
//
// What this cannot give, and Missing names for the user:
//   - a process that leaves its process group (setsid, setpgid: a daemon
//     that detaches) escapes the kill;
//   - no limit (memory, pids, cpu) is enforced: SetLimits refuses any;
//   - no OOM kill is classified as such: the kernel's counters are per
//     cgroup, so an OOM kill is reported as "killed by SIGKILL".

// ErrReduced wraps what a reduced-mode group cannot do (read or write a
// cgroup interface file, enable a controller).
var ErrReduced = errors.New("cgroup: reduced mode (process groups, no cgroup)")

// ReducedMissing lists, in words a user reads, the guarantees that do not
// hold in reduced mode.
var ReducedMissing = []string{
	"processes that leave their process group (setsid, double-forked daemons) are not killed",
	"no memory (or pids, cpu) limit is enforced",
	"an OOM kill is reported as killed (SIGKILL), never as oom",
}

// ReducedWarning is the one line cgpool prints on stderr when it runs in
// reduced mode; why says what made it (no writable cgroup v2 here).
func ReducedWarning(why string) string {
	return "cgpool: WARNING: reduced mode, no writable cgroup v2 (" + why + "): tasks run in process groups; missing guarantees: " +
		strings.Join(ReducedMissing, "; ")
}

// pgNode is a reduced-mode group.
type pgNode struct {
	mu       sync.Mutex
	name     string
	parent   *pgNode
	children map[string]*pgNode
	pgids    map[int]bool
	peak     int64
	removed  bool
}

// NewReducedRoot returns a root of reduced mode (see ErrReduced): no
// cgroup is made or touched; TakeOver, Lock and Release do nothing but
// bookkeeping. log may be nil.
func NewReducedRoot(log *slog.Logger) *Root {
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return &Root{Group: Group{pg: &pgNode{name: "reduced"}}, log: log}
}

// Reduced reports whether the group stands for process groups (reduced
// mode) rather than a cgroup directory.
func (g *Group) Reduced() bool { return g.pg != nil }

// Track records that the process group pgid (a process cgpool started as
// the leader of its own session) belongs to the group: Kill kills it and
// Populated sees its members. On a real cgroup it does nothing: the
// kernel knows where a process is.
func (g *Group) Track(pgid int) {
	if g.pg == nil || pgid <= 0 {
		return
	}
	g.pg.mu.Lock()
	if g.pg.pgids == nil {
		g.pg.pgids = map[int]bool{}
	}
	g.pg.pgids[pgid] = true
	g.pg.mu.Unlock()
}

func (n *pgNode) child(name string) *pgNode {
	n.mu.Lock()
	defer n.mu.Unlock()
	if c, ok := n.children[name]; ok {
		return c
	}
	return &pgNode{name: name, parent: n}
}

func (n *pgNode) mkdir(name string) (*pgNode, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if _, ok := n.children[name]; ok {
		return nil, fmt.Errorf("group %s/%s: %w", n.name, name, fs.ErrExist)
	}
	if n.children == nil {
		n.children = map[string]*pgNode{}
	}
	c := &pgNode{name: name, parent: n}
	n.children[name] = c
	return c, nil
}

// tracked returns the process groups of n and its descendants. Groups
// that have no member left (kill(-pgid, 0) fails with ESRCH) are
// forgotten on the way: their number may be reused by an unrelated
// process group later, which must never be killed.
func (n *pgNode) tracked() []int {
	n.mu.Lock()
	var out []int
	for pgid := range n.pgids {
		if err := unix.Kill(-pgid, 0); errors.Is(err, unix.ESRCH) {
			delete(n.pgids, pgid)
			continue
		}
		out = append(out, pgid)
	}
	kids := make([]*pgNode, 0, len(n.children))
	for _, c := range n.children {
		kids = append(kids, c)
	}
	n.mu.Unlock()
	for _, c := range kids {
		out = append(out, c.tracked()...)
	}
	return out
}

// member is a live (not zombie) process of a tracked process group.
type member struct {
	pid       int
	rss, hwm  int64
	startTime uint64
}

// members lists the live processes whose process group n (or a
// descendant) tracks, by one walk of /proc.
func (n *pgNode) members(withMemory bool) []member {
	pgs := n.tracked()
	if len(pgs) == 0 {
		return nil
	}
	want := make(map[int]bool, len(pgs))
	for _, p := range pgs {
		want[p] = true
	}
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var out []member
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue // it exited meanwhile
		}
		// pid (comm) state ppid pgrp ...: comm may hold spaces and parens.
		i := strings.LastIndexByte(string(b), ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(b[i+1:]))
		if len(f) < 3 || f[0] == "Z" || f[0] == "X" {
			continue
		}
		pgrp, err := strconv.Atoi(f[2])
		if err != nil || !want[pgrp] {
			continue
		}
		m := member{pid: pid}
		if withMemory {
			m.rss, m.hwm = statusMemory(pid)
		}
		out = append(out, m)
	}
	if withMemory {
		var sum int64
		for _, m := range out {
			sum += m.hwm
		}
		n.notePeak(sum)
	}
	return out
}

func (n *pgNode) notePeak(v int64) {
	for ; n != nil; n = n.parent {
		n.mu.Lock()
		n.peak = max(n.peak, v)
		n.mu.Unlock()
	}
}

// statusMemory reads VmRSS and VmHWM (bytes) of a process.
func statusMemory(pid int) (rss, hwm int64) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok || (k != "VmRSS" && k != "VmHWM") {
			continue
		}
		f := strings.Fields(v)
		if len(f) == 0 {
			continue
		}
		kb, _ := strconv.ParseInt(f[0], 10, 64)
		if k == "VmRSS" {
			rss = kb * 1024
		} else {
			hwm = kb * 1024
		}
	}
	return rss, hwm
}

func (n *pgNode) pids() []int {
	ms := n.members(false)
	out := make([]int, len(ms))
	for i, m := range ms {
		out[i] = m.pid
	}
	return out
}

// kill SIGKILLs every tracked process group of n and below.
func (n *pgNode) kill() error {
	var errs []error
	for _, pgid := range n.tracked() {
		if err := unix.Kill(-pgid, unix.SIGKILL); err != nil && !errors.Is(err, unix.ESRCH) {
			errs = append(errs, os.NewSyscallError(fmt.Sprintf("kill(-%d)", pgid), err))
		}
	}
	return errors.Join(errs...)
}

// waitEmpty waits until no tracked process group of n has a live member:
// on each member's pidfd, so that an exit wakes it at once. A member that
// was not there at the first look (forked during the wait) is found by
// the next walk.
func (n *pgNode) waitEmpty(ctx context.Context) error {
	for {
		ms := n.members(false)
		if len(ms) == 0 {
			return nil
		}
		var fds []unix.PollFd
		for _, m := range ms {
			fd, err := unix.PidfdOpen(m.pid, 0)
			if err != nil {
				continue // gone already
			}
			fds = append(fds, unix.PollFd{Fd: int32(fd), Events: unix.POLLIN})
		}
		err := pollPidfds(ctx, fds)
		for _, f := range fds {
			unix.Close(int(f.Fd))
		}
		if err != nil {
			return fmt.Errorf("wait for process groups %v to empty: %w (%w)", n.tracked(), ErrNotEmpty, err)
		}
	}
}

// pollPidfds waits until one of fds is readable (its process exited), in
// slices of at most 50 ms (a member may be a zombie not ours to reap, or
// new members may have been forked), or ctx ends.
func pollPidfds(ctx context.Context, fds []unix.PollFd) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if len(fds) == 0 {
		return nil
	}
	slice := 50 * time.Millisecond
	if dl, ok := ctx.Deadline(); ok {
		slice = min(slice, max(time.Until(dl), time.Millisecond))
	}
	_, err := unix.Poll(fds, int(slice.Milliseconds())+1)
	if err != nil && !errors.Is(err, unix.EINTR) {
		return os.NewSyscallError("poll", err)
	}
	return ctx.Err()
}

func (n *pgNode) remove() error {
	if len(n.pids()) > 0 {
		return fmt.Errorf("remove %s: %w", n.name, ErrNotEmpty)
	}
	if n.parent != nil {
		n.parent.mu.Lock()
		if n.parent.children[n.name] == n {
			delete(n.parent.children, n.name)
		}
		n.parent.mu.Unlock()
	}
	n.mu.Lock()
	n.removed = true
	n.mu.Unlock()
	return nil
}

func (n *pgNode) path() string {
	if n.parent == nil {
		return ""
	}
	return n.parent.path() + "/" + n.name
}

func reducedErr(what string) error {
	return fmt.Errorf("%s: %w", what, ErrReduced)
}
