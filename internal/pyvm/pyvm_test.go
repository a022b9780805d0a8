//go:build vm

package pyvm

import (
	"context"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/cgpool/cgpool/internal/kerneltest"
)

// TestPythonKernelCases runs the Python tests whose names contain "oom":
// an Executor task over memory_max raises OutOfMemoryError and the next
// task succeeds (issue acceptance 4), and the OOM example prints its OOM.
func TestPythonKernelCases(t *testing.T) {
	// The VM has no system manager to delegate the controllers: NewRoot
	// enables them at the top, as systemd's Delegate= would, for the
	// cgpool that the Python Executor starts.
	kerneltest.NewRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "/usr/bin/python3", "-m", "unittest", "discover", "-v", "-s", "/python/tests", "-k", "oom")
	cmd.Dir = "/python"
	cmd.Env = append(os.Environ(), "CGPOOL_BIN=/bin/cgpool", "PYTHONPATH=/python", "CGPOOL_VM=1", "PYTHONDONTWRITEBYTECODE=1")
	out, err := cmd.CombinedOutput()
	t.Logf("python3 -m unittest -k oom:\n%s", out)
	if err != nil {
		t.Fatalf("the Python tests failed: %v", err)
	}
	m := regexp.MustCompile(`Ran (\d+) tests?`).FindSubmatch(out)
	if m == nil {
		t.Fatal("no 'Ran N tests' line")
	}
	if n, _ := strconv.Atoi(string(m[1])); n < 2 {
		t.Errorf("ran %d Python tests, want at least the two OOM cases", n)
	}
	if regexp.MustCompile(`skipped`).Match(out) {
		t.Error("a Python test skipped inside the VM")
	}
}

// TestPythonThreadExits runs a Python thread to its end, and then an
// Executor (whose reader and writer threads end at shutdown). CPython ends
// a thread with pthread_exit, which unwinds through libgcc_s.so.1: glibc
// loads it with dlopen, so ldd does not list it, and without it in the
// initramfs the interpreter aborts with "libgcc_s.so.1 must be installed
// for pthread_exit to work" (issue 10).
func TestPythonThreadExits(t *testing.T) {
	kerneltest.NewRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	const script = `
import threading, cgpool
done = []
t = threading.Thread(target=done.append, args=(1,))
t.start()
t.join()
print("thread ended", done)
with cgpool.Executor(max_workers=1) as ex:
    print("task", ex.submit(sum, [1, 2]).result())
print("executor ended")
`
	cmd := exec.CommandContext(ctx, "/usr/bin/python3", "-c", script)
	cmd.Dir = "/python"
	cmd.Env = append(os.Environ(), "CGPOOL_BIN=/bin/cgpool", "PYTHONPATH=/python", "PYTHONDONTWRITEBYTECODE=1")
	out, err := cmd.CombinedOutput()
	t.Logf("python3:\n%s", out)
	if err != nil {
		t.Fatalf("python3 failed: %v", err)
	}
	want := "thread ended [1]\ntask 3\nexecutor ended\n"
	if string(out) != want {
		t.Errorf("output %q, want %q", out, want)
	}
}
