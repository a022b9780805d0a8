// Package kerneltest is test support for the packages that touch the
// kernel: a scratch cgroup root per test, removed in t.Cleanup; children
// that re-execute the test binary in a helper mode (no shell needed); and
// the rule that a test which cannot run here skips with its reason, except
// inside the VM (CGPOOL_VM=1), where a skip is a failure.
//
// Only _test.go files import it.
package kerneltest

import (
	"bufio"
	"context"
	"fmt"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/cgpool/cgpool/cgroup"
	"github.com/cgpool/cgpool/spawn"
	"go.uber.org/goleak"
)

// HelperEnv selects a helper mode in a re-executed test binary.
const HelperEnv = "CGPOOL_TEST_HELPER"

// InVM reports whether the tests run inside scripts/vm-test.sh's VM.
func InVM() bool { return os.Getenv("CGPOOL_VM") == "1" }

// Skipf skips the test with a reason, or fails it inside the VM, where
// everything a test needs must be there.
func Skipf(t testing.TB, format string, args ...any) {
	t.Helper()
	if InVM() {
		t.Fatalf("in the VM a skip is a failure: "+format, args...)
	}
	t.Skipf(format, args...)
}

var (
	seq       atomic.Int64
	sweepOnce sync.Once
)

// sweepDeadRuns removes the test roots of earlier test processes that were
// killed before their cleanup ran (a test binary past its -timeout, say):
// cgpool-test-<pid>-<n>, marked as ours, whose pid no longer runs.
func sweepDeadRuns(m cgroup.MountInfo) {
	top, err := cgroup.OpenRoot(m.Point, nil)
	if err != nil {
		return
	}
	ents, _ := os.ReadDir(m.Point)
	for _, e := range ents {
		var pid, n int
		if _, err := fmt.Sscanf(e.Name(), "cgpool-test-%d-%d", &pid, &n); err != nil || syscall.Kill(pid, 0) == nil {
			continue
		}
		if g := top.Child(e.Name()); g.Marked() {
			_ = g.Destroy(context.Background(), 10*time.Second)
		}
	}
}

// NewRoot creates a fresh cgroup root for the test under the cgroup v2
// mount, takes it over (the test process stays where it is) and releases
// and removes it when the test ends. It skips (fails in the VM) where no
// writable cgroup v2 mount exists.
func NewRoot(t testing.TB) *cgroup.Root {
	t.Helper()
	m, err := cgroup.FindMount()
	if err != nil {
		Skipf(t, "no cgroup v2 mount: %v", err)
	}
	if InVM() {
		// The VM has no system manager to delegate controllers to us, so
		// the test does what systemd's Delegate= would.
		top, err := cgroup.OpenRoot(m.Point, nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := top.EnableControllers("cpu", "memory", "pids", "io"); err != nil {
			t.Fatalf("enable controllers at the VM's top cgroup: %v", err)
		}
	}
	sweepOnce.Do(func() { sweepDeadRuns(m) })
	dir := filepath.Join(m.Point, fmt.Sprintf("cgpool-test-%d-%d", os.Getpid(), seq.Add(1)))
	r, err := cgroup.MkdirRoot(dir, nil)
	if err != nil {
		Skipf(t, "cannot create a cgroup under %s (need root or a delegated cgroup v2): %v", m.Point, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := r.TakeOver(ctx); err != nil {
		_ = r.Remove()
		t.Fatalf("TakeOver(%s): %v", dir, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := r.Release(ctx); err != nil {
			t.Errorf("release test root %s: %v", dir, err)
		}
	})
	return r
}

// RequireControllers skips (fails in the VM) unless the root enabled every
// named controller.
func RequireControllers(t testing.TB, r *cgroup.Root, names ...string) {
	t.Helper()
	for _, n := range names {
		if !slices.Contains(r.Controllers(), n) {
			Skipf(t, "the %s controller is not available in %s (controllers here: %q); run scripts/vm-test.sh", n, r.Path(), r.Controllers())
		}
	}
}

// MemoryLimit is a slot's memory limit as the pool sets it: memory.max of
// bytes, no swap (memory plus swap = memory) and memory.oom.group, so that
// going over it is an OOM kill of the whole group.
func MemoryLimit(bytes int64) *specs.LinuxResources {
	return &specs.LinuxResources{
		Memory:  &specs.LinuxMemory{Limit: &bytes, Swap: &bytes},
		Unified: map[string]string{"memory.oom.group": "1"},
	}
}

// Leaf creates a child group with limits (nil: none) below parent and destroys it
// (kill, wait, remove) when the test ends.
func Leaf(t testing.TB, parent *cgroup.Group, name string, l *specs.LinuxResources) *cgroup.Group {
	t.Helper()
	g, err := parent.Mkdir(name)
	if err != nil {
		t.Fatalf("Mkdir(%q): %v", name, err)
	}
	t.Cleanup(func() {
		if err := g.Destroy(context.Background(), 10*time.Second); err != nil {
			t.Errorf("destroy %s: %v", g.Path(), err)
		}
	})
	if err := g.SetLimits(l); err != nil {
		t.Fatalf("SetLimits(%+v) on %s: %v", l, g.Path(), err)
	}
	return g
}

// Child is a helper process started into a group.
type Child struct {
	*spawn.Process
	Out *bufio.Reader // the child's stdout
}

// Line reads one line of the child's stdout, failing the test on EOF.
func (c *Child) Line(t testing.TB) string {
	t.Helper()
	s, err := c.Out.ReadString('\n')
	if err != nil {
		t.Fatalf("read child %d stdout: %v (got %q)", c.Pid(), err, s)
	}
	return strings.TrimSuffix(s, "\n")
}

// Start re-executes the test binary inside g in helper mode with args
// (see RunHelper for the modes). The child is killed and reaped when the
// test ends, if it still runs.
func Start(t testing.TB, g *cgroup.Group, mode string, args ...string) *Child {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	env := append(os.Environ(), HelperEnv+"="+mode, "CGPOOL_TEST_ARGS="+strings.Join(args, "\x1f"))
	return start(t, g, exe, []string{exe}, env)
}

// StartProgram starts path with args (argv[0] is path) inside g, with the
// test's environment; cleanup as for Start.
func StartProgram(t testing.TB, g *cgroup.Group, path string, args ...string) *Child {
	t.Helper()
	return start(t, g, path, append([]string{path}, args...), os.Environ())
}

func start(t testing.TB, g *cgroup.Group, path string, argv, env []string) *Child {
	t.Helper()
	dir, err := g.Open()
	if err != nil {
		t.Fatal(err)
	}
	defer dir.Close()
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	p, err := spawn.Start(spawn.Options{Path: path, Args: argv, Env: env, Cgroup: dir, Stdout: pw, Stderr: os.Stderr})
	pw.Close()
	if err != nil {
		pr.Close()
		t.Fatalf("start %q in %s: %v", argv, g.Path(), err)
	}
	t.Cleanup(func() {
		_ = p.Signal(9)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if _, err := p.Wait(ctx); err != nil {
			t.Errorf("helper %d did not exit: %v", p.Pid(), err)
		}
		p.Close()
		pr.Close()
	})
	return &Child{Process: p, Out: bufio.NewReader(pr)}
}

var (
	publicExeOnce sync.Once
	publicExe     string
	publicExeErr  error
)

// PublicExecutable returns a copy of the test binary that every user may
// run (go test builds it in a directory only its owner may enter), for
// children that run as another user. The copy lives in a 0755 directory
// of its own, made once per test process and removed by the caller of
// Main.
func PublicExecutable(t testing.TB) string {
	t.Helper()
	publicExeOnce.Do(func() {
		exe, err := os.Executable()
		if err != nil {
			publicExeErr = err
			return
		}
		dir, err := os.MkdirTemp("", "cgpool-test-exe-")
		if err != nil {
			publicExeErr = err
			return
		}
		if err := os.Chmod(dir, 0o755); err != nil {
			publicExeErr = err
			return
		}
		b, err := os.ReadFile(exe)
		if err != nil {
			publicExeErr = err
			return
		}
		publicExe = filepath.Join(dir, filepath.Base(exe))
		publicExeErr = os.WriteFile(publicExe, b, 0o755)
	})
	if publicExeErr != nil {
		t.Fatalf("a copy of the test binary for other users: %v", publicExeErr)
	}
	return publicExe
}

// Main runs the tests, or a helper mode when the binary was re-executed by
// Start; after the tests it checks that no goroutine leaked.
func Main(m *testing.M) {
	if mode := os.Getenv(HelperEnv); mode != "" {
		var args []string
		if a := os.Getenv("CGPOOL_TEST_ARGS"); a != "" {
			args = strings.Split(a, "\x1f")
		}
		os.Exit(RunHelper(mode, args, os.Stdout))
	}
	// Under -race every process of this binary sleeps a second at its exit
	// (the race runtime's atexit_sleep_ms, default 1000, waits for late
	// reports), and the tests start it again and again as a worker or as
	// cgpool: 50 recycles of TestEnvironment took 53 s, not 1.5 s. The
	// children inherit this; a GORACE the caller set is kept.
	if _, ok := os.LookupEnv("GORACE"); !ok {
		os.Setenv("GORACE", "atexit_sleep_ms=0")
	}
	code := m.Run()
	if publicExe != "" {
		os.RemoveAll(filepath.Dir(publicExe))
	}
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintf(os.Stderr, "goroutine leak: %v\n", err)
			code = 1
		}
	}
	os.Exit(code)
}

// RunHelper runs a helper mode and returns the exit code:
//
//	cgroup       print the cgroup v2 (0::) line of /proc/self/cgroup, exit 0
//	ids          print "uid=U gid=G groups=[...]" (sorted supplementary groups), exit 0
//	sleep        print "ready", then sleep until killed
//	exit N       exit with status N
//	alloc MIB    print "ready", allocate and touch MIB MiB, print "done", exit 0
//	ignore       ignore every catchable signal, print "ready", busy-loop
//	parent       start a "sleep" child without Pdeathsig, then sleep
//	supervise D  open D as a root, take it over, start a "sleep" child in
//	             each of D/pool/w-1 and D/pool/w-2 (in "parent" mode), print this process's
//	             cgroup path, then "ready", and sleep until killed; with
//	             a second argument "sweep-only", start no children
func RunHelper(mode string, args []string, out io.Writer) int {
	switch mode {
	case "cgroup":
		b, err := os.ReadFile("/proc/self/cgroup")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		for _, line := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(line, "0::") {
				fmt.Fprintln(out, line)
				return 0
			}
		}
		return 1
	case "sleep":
		fmt.Fprintln(out, "ready")
		sleepForever()
	case "exit":
		n, _ := strconv.Atoi(args[0])
		return n
	case "alloc":
		mib, _ := strconv.Atoi(args[0])
		fmt.Fprintln(out, "ready")
		touch(mib)
		fmt.Fprintln(out, "done")
		return 0
	case "parent":
		// A worker with a child of its own: the child has no Pdeathsig, so
		// it outlives its parent, as a task's daemon would.
		exe, _ := os.Executable()
		cmd := exec.Command(exe)
		cmd.Env = append(os.Environ(), HelperEnv+"=sleep")
		if err := cmd.Start(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		sleepForever()
	case "supervise":
		return supervise(args[0], args[1:], out)
	case "ids":
		groups, _ := syscall.Getgroups()
		slices.Sort(groups)
		fmt.Fprintf(out, "uid=%d gid=%d groups=%v\n", os.Getuid(), os.Getgid(), groups)
		return 0
	case "ignore":
		ignoreSignals()
		fmt.Fprintln(out, "ready")
		for {
		}
	}
	fmt.Fprintf(os.Stderr, "unknown helper mode %q\n", mode)
	return 2
}

var sink [][]byte

// touch allocates mib MiB and writes every page, so the memory is charged.
func touch(mib int) {
	for i := 0; i < mib; i++ {
		b := make([]byte, 1<<20)
		for j := 0; j < len(b); j += 4096 {
			b[j] = 1
		}
		sink = append(sink, b)
	}
}

// supervise is the "supervise" helper: a stand-in for a supervisor that
// leaves workers behind when it is SIGKILLed.
func supervise(dir string, args []string, out io.Writer) int {
	fail := func(err error) int { fmt.Fprintln(os.Stderr, "supervise:", err); return 1 }
	r, err := cgroup.OpenRoot(dir, nil)
	if err != nil {
		return fail(err)
	}
	if err := r.TakeOver(context.Background()); err != nil {
		return fail(err)
	}
	self, err := cgroup.SelfPath()
	if err != nil {
		return fail(err)
	}
	if len(args) > 0 && args[0] == "sweep-only" {
		fmt.Fprintln(out, self)
		fmt.Fprintln(out, "ready")
		return sleepForever()
	}
	pool, err := r.Mkdir("pool")
	if err != nil {
		return fail(err)
	}
	exe, _ := os.Executable()
	for _, name := range []string{"w-1", "w-2"} {
		g, err := pool.Mkdir(name)
		if err != nil {
			return fail(err)
		}
		d, err := g.Open()
		if err != nil {
			return fail(err)
		}
		_, err = spawn.Start(spawn.Options{Path: exe, Env: append(os.Environ(), HelperEnv+"=parent"), Cgroup: d})
		d.Close()
		if err != nil {
			return fail(err)
		}
	}
	fmt.Fprintln(out, self)
	fmt.Fprintln(out, "ready")
	return sleepForever()
}

// sleepForever blocks for good. (A bare select {} would be a deadlock that
// the runtime reports and exits on, when nothing else runs.)
func sleepForever() int {
	for {
		time.Sleep(time.Hour)
	}
}
