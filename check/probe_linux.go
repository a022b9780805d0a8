package check

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/cgpool/cgpool/cgroup"
	"github.com/cgpool/cgpool/spawn"
	"golang.org/x/sys/unix"
)

// Feature is one thing the host has or lacks, with what was seen.
type Feature struct {
	OK     bool   `json:"ok"`
	Detail string `json:"detail"`
}

func yes(format string, args ...any) Feature { return Feature{true, fmt.Sprintf(format, args...)} }
func no(format string, args ...any) Feature  { return Feature{false, fmt.Sprintf(format, args...)} }

// Host is what the probes found.
type Host struct {
	Kernel       string   `json:"kernel"`
	Mount        string   `json:"cgroup2_mount"`
	MountRoot    string   `json:"cgroup2_mount_root"`
	Hybrid       bool     `json:"hybrid"` // cgroup v1 hierarchies are mounted beside v2
	OwnCgroup    string   `json:"own_cgroup"`
	Root         string   `json:"root"`
	RootFrom     string   `json:"root_from"`
	Offered      []string `json:"controllers_offered"`
	Enabled      []string `json:"controllers_enabled"`
	Delegated    Feature  `json:"delegated"`
	CgroupKill   Feature  `json:"cgroup_kill"`
	CloneInto    Feature  `json:"clone_into_cgroup"`
	Pidfd        Feature  `json:"pidfd"`
	MemoryEvents Feature  `json:"memory_events"`
	MemoryPeak   Feature  `json:"memory_peak"`
	Systemd      Feature  `json:"systemd"`
	Python       Feature  `json:"python"`
	Billiard     Feature  `json:"billiard"`
	// Reduced: no writable cgroup v2 could be had, and cgpool would run
	// in reduced mode (process groups); the matrix is not run then.
	Reduced bool `json:"reduced,omitempty"`

	python string // the interpreter, when Python.OK
}

// probe fills in Host. The kernel probes use a scratch group below root,
// removed before it returns.
func probe(ctx context.Context, root *cgroup.Root, rootFrom string, o *Options) *Host {
	h := &Host{Root: root.Path(), RootFrom: rootFrom, Enabled: root.Controllers()}
	var uts unix.Utsname
	if unix.Uname(&uts) == nil {
		h.Kernel = unix.ByteSliceToString(uts.Release[:])
	}
	if m, err := cgroup.FindMount(); err == nil {
		h.Mount, h.MountRoot = m.Point, m.Root
		h.Hybrid = hasCgroupV1()
	}
	h.OwnCgroup, _ = cgroup.SelfPath()
	h.Offered, _ = root.Group.Controllers()
	h.Delegated = delegation(h)

	name := "check-probe-" + strconv.Itoa(os.Getpid())
	g, err := root.Mkdir(name)
	if root.Reduced() {
		h.Reduced, h.Root = true, "(none: reduced mode, process groups)"
		h.Delegated = no("no writable cgroup v2 here: cgpool run and the Python Executor run in reduced mode (process groups), cgpool serve only with --allow-no-cgroup")
		f := no("reduced mode: no cgroup")
		h.CgroupKill, h.CloneInto, h.MemoryEvents, h.MemoryPeak = f, f, f, f
	} else if err != nil {
		f := no("cannot create a group in %s: %v", root.Path(), err)
		h.CgroupKill, h.CloneInto, h.MemoryEvents, h.MemoryPeak = f, f, f, f
	} else {
		defer func() { _ = g.Destroy(context.WithoutCancel(ctx), 10*time.Second) }()
		h.CgroupKill = fileFeature(g, "cgroup.kill", "Linux 5.14")
		h.MemoryEvents = fileFeature(g, "memory.events", "the memory controller")
		h.MemoryPeak = fileFeature(g, "memory.peak", "Linux 5.19 and the memory controller")
		h.CloneInto = cloneInto(ctx, g)
	}
	if fd, err := unix.PidfdOpen(os.Getpid(), 0); err != nil {
		h.Pidfd = no("pidfd_open: %v (Linux 5.3)", err)
	} else {
		unix.Close(fd)
		h.Pidfd = yes("pidfd_open works")
	}
	h.Systemd = systemd()
	h.Python, h.Billiard, h.python = python(ctx, o)
	return h
}

// delegation says who gave us the root.
func delegation(h *Host) Feature {
	var sd string
	if h.Mount != "" && h.OwnCgroup != "" {
		own := filepath.Join(h.Mount, strings.TrimPrefix(h.OwnCgroup, h.MountRoot))
		for _, dir := range []string{own, filepath.Dir(own)} { // our cgroup, or its parent if we sit in <unit>/supervisor
			for _, attr := range []string{"trusted.delegate", "user.delegate"} {
				buf := make([]byte, 8)
				if n, err := unix.Getxattr(dir, attr, buf); err == nil && strings.TrimSpace(string(buf[:n])) == "1" {
					sd = fmt.Sprintf("; systemd delegated %s (%s=1)", dir, attr)
				}
			}
			if sd != "" {
				break
			}
		}
	}
	return yes("%s is ours to manage (%s)%s", h.Root, h.RootFrom, sd)
}

func fileFeature(g *cgroup.Group, file, needs string) Feature {
	if _, err := os.Stat(filepath.Join(g.Path(), file)); err != nil {
		return no("%s is missing in a new group (needs %s)", file, needs)
	}
	return yes("%s present", file)
}

// cloneInto starts /bin/true straight into g with CLONE_INTO_CGROUP.
func cloneInto(ctx context.Context, g *cgroup.Group) Feature {
	leaf, err := g.Mkdir("leaf")
	if err != nil {
		return no("create a leaf: %v", err)
	}
	dir, err := leaf.Open()
	if err != nil {
		return no("open %s: %v", leaf.Path(), err)
	}
	defer dir.Close()
	truth := "/bin/true"
	if p, err := exec.LookPath("true"); err == nil {
		truth = p
	}
	p, err := spawn.Start(spawn.Options{Path: truth, Cgroup: dir})
	if err != nil {
		if errors.Is(err, unix.ENOSYS) {
			return no("clone3 is not available (ENOSYS: a kernel before 5.3, or a seccomp filter): %v", err)
		}
		return no("clone3(CLONE_INTO_CGROUP) into %s: %v (Linux 5.7)", leaf.Path(), err)
	}
	defer p.Close()
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if _, err := p.Wait(wctx); err != nil {
		return no("the process started into %s did not finish: %v", leaf.Path(), err)
	}
	return yes("a process started straight into a leaf")
}

func systemd() Feature {
	st, err := os.Stat("/run/systemd/system")
	if err != nil || !st.IsDir() {
		return no("not running under systemd (/run/systemd/system does not exist)")
	}
	comm, _ := os.ReadFile("/proc/1/comm")
	detail := "systemd is the service manager (PID 1: " + strings.TrimSpace(string(comm)) + ")"
	if out, err := exec.Command("systemctl", "--version").Output(); err == nil {
		detail += ", " + strings.SplitN(string(out), "\n", 2)[0]
	}
	if u := os.Getenv("INVOCATION_ID"); u != "" {
		detail += "; this process runs in a unit"
	}
	return yes("%s", detail)
}

// pythonEnv is the environment of the Python probes and workers: ours,
// with o.PythonPath in front of PYTHONPATH.
func pythonEnv(o *Options, extra ...string) []string {
	env := os.Environ()
	if o.PythonPath != "" {
		pp := o.PythonPath
		if old := os.Getenv("PYTHONPATH"); old != "" {
			pp += ":" + old
		}
		env = append(env, "PYTHONPATH="+pp)
	}
	return append(env, extra...)
}

func python(ctx context.Context, o *Options) (py, billiard Feature, path string) {
	path = o.Python
	if path == "" {
		p, err := exec.LookPath("python3")
		if err != nil {
			f := no("python3 not found in PATH")
			return f, f, ""
		}
		path = p
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, path, "-c", "import sys, cgpool.worker; print(sys.version.split()[0], sys.executable)")
	cmd.Env = pythonEnv(o)
	out, err := cmd.CombinedOutput()
	if err != nil {
		f := no("%s cannot import the cgpool Python package (pip install ./python, or PYTHONPATH): %s", path, firstLine(string(out)))
		return f, f, ""
	}
	version, real, _ := strings.Cut(strings.TrimSpace(string(out)), " ")
	if real != "" {
		path = real // past a version manager's shim, which runs python3 anew for every worker
	}
	py = yes("%s %s with the cgpool package", path, version)
	cmd = exec.CommandContext(ctx, path, "-c", "import billiard")
	cmd.Env = pythonEnv(o)
	if err := cmd.Run(); err != nil {
		billiard = no("billiard is not installed (Debian: python3-billiard)")
	} else {
		billiard = yes("billiard importable")
	}
	return py, billiard, path
}

func firstLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.LastIndex(s, "\n"); i >= 0 {
		return s[i+1:] // a traceback's last line says what failed
	}
	return s
}

// hasCgroupV1 reports whether a cgroup v1 hierarchy is mounted (a hybrid
// host, where controllers bound to v1 are not available to v2).
func hasCgroupV1() bool {
	b, err := os.ReadFile("/proc/self/mounts")
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) > 2 && f[2] == "cgroup" {
			return true
		}
	}
	return false
}
