package check

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// GoTask runs one task of the Go worker column: the payload is a row name,
// with ":stuck" for its stuck form, and the answer is "10". cmd/cgpool's
// hidden check-worker command serves it with package worker. self runs
// cgpool (for the nested row). A stuck form never returns.
func GoTask(payload []byte, self []string) ([]byte, error) {
	r, stuck := strings.CutSuffix(string(payload), ":stuck")
	ten := []byte("10")
	// Not select{}: with nothing else to run, the Go runtime would call that
	// a deadlock and exit 2.
	block := func() {
		for {
			time.Sleep(time.Hour)
		}
	}
	run := func(argv ...string) ([]byte, error) {
		out, err := exec.Command(argv[0], argv[1:]...).Output()
		if err != nil {
			return nil, fmt.Errorf("%q: %w", argv, err)
		}
		return bytes.TrimSpace(out), nil
	}
	switch r {
	case "cpu":
		n := 0
		for stuck || n < 100000 {
			n++
		}
		return ten, nil
	case "subprocess":
		if stuck {
			_, err := run("sleep", "3600")
			return nil, err
		}
		return run("echo", "10")
	case "cgpool_nested":
		argv := append(append([]string(nil), self...), "run", "--progress", "never", "--once", "-j2", "--", "echo", "10")
		if stuck {
			argv[len(argv)-2], argv[len(argv)-1] = "sleep", "3600"
		}
		return run(argv...)
	case "detach":
		// No pipes: the daemon would hold them open for ever.
		if err := exec.Command("sh", "-c", "(setsid sleep 3600 &)").Run(); err != nil {
			return nil, err
		}
	case "bg_child":
		if err := exec.Command("sleep", "3600").Start(); err != nil {
			return nil, err
		}
	case "sigterm_ignore":
		signal.Ignore(syscall.SIGTERM)
	case "gil_c":
		// A locked OS thread that never yields: the Go form of C code
		// holding the GIL.
		done := make(chan struct{})
		go func() {
			runtime.LockOSThread()
			x := uint64(1)
			for i := 0; stuck || i < 1e7; i++ {
				x = x*6364136223846793005 + 1
			}
			_ = x
			close(done)
		}()
		<-done
		return ten, nil
	case "sigstop":
		if stuck {
			_ = syscall.Kill(os.Getpid(), syscall.SIGSTOP)
			block()
		}
		c := exec.Command("sleep", "3600")
		if err := c.Start(); err != nil {
			return nil, err
		}
		_ = c.Process.Signal(syscall.SIGSTOP)
	case "cgroup_escape":
		if where, ok := escape(); ok {
			return []byte("escaped to " + where), nil
		}
	case "oom":
		var keep [][]byte
		for {
			b := make([]byte, 1<<20)
			for i := range b {
				b[i] = 1 // touched, so it is charged
			}
			keep = append(keep, b)
			if stuck && len(keep) >= 8 {
				block()
			}
		}
	case "fork_bomb":
		// Output to a file, not a pipe: the sleeps left behind would hold a
		// pipe open, and the wait for its end would never return.
		f, err := os.CreateTemp("", "cgpool-check-fork-bomb-")
		if err != nil {
			return nil, err
		}
		defer os.Remove(f.Name())
		defer f.Close()
		c := exec.Command("sh", "-c", execArgv("fork_bomb", stuck, nil)[2])
		c.Stdout = f
		_ = c.Run()
		if out, _ := os.ReadFile(f.Name()); bytes.Contains(out, []byte("no limit")) {
			return out, nil
		}
		return ten, nil
	default:
		return nil, fmt.Errorf("check-worker: no row %q", r)
	}
	if stuck {
		block()
	}
	return ten, nil
}

// escape tries to move this process to every parent of its cgroup, up to
// the top of the hierarchy; it reports the first that let it.
func escape() (string, bool) {
	mount := os.Getenv("CGPOOL_CHECK_CGROUP_MOUNT")
	b, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return "", false
	}
	var own string
	for _, l := range strings.Split(string(b), "\n") {
		if p, ok := strings.CutPrefix(l, "0::"); ok {
			own = p
		}
	}
	pid := strconv.Itoa(os.Getpid())
	for d := own; d != "/" && d != "" && d != "."; {
		d = filepath.Dir(d)
		target := filepath.Join(mount, d, "cgroup.procs")
		if err := os.WriteFile(target, []byte(pid), 0); err == nil {
			return target, true // refused is EACCES (not our file) or EBUSY (a group with controllers)
		}
	}
	return "", false
}
