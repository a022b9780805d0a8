package pool_test

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cgpool/cgpool/internal/kerneltest"
	"github.com/cgpool/cgpool/pool"
	"golang.org/x/sys/unix"
)

// usageHelper runs in a re-executed test binary (CGPOOL_TEST_USAGE) or in
// a test worker (op "usage"): spec is "cpuMS:MiB:bytes:file:detach". With
// detach 1 it does nothing itself but start a child in a session of its
// own (setsid), nobody's to wait for, which does all the work, and it
// returns once that child has closed its end of a pipe (so the work is
// done, though the child may not have been reaped). Else it touches MiB
// MiB of memory, writes bytes bytes to file (fsynced), and burns CPU until
// this process has used cpuMS ms of CPU time more than when it began.
func usageHelper(spec string) int {
	if err := usageWork(spec); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Println("done")
	return 0
}

func usageWork(spec string) error {
	f := strings.Split(spec, ":")
	if len(f) != 5 {
		return fmt.Errorf("usage spec %q: want cpuMS:MiB:bytes:file:detach", spec)
	}
	cpuMS, _ := strconv.Atoi(f[0])
	mib, _ := strconv.Atoi(f[1])
	n, _ := strconv.Atoi(f[2])
	if f[4] == "1" {
		exe, _ := os.Executable()
		r, w, err := os.Pipe()
		if err != nil {
			return err
		}
		cmd := exec.Command(exe)
		cmd.Env = append(os.Environ(), "CGPOOL_TEST_WORKER=", "CGPOOL_TEST_USAGE="+strings.Join(append(f[:4:4], "0"), ":"))
		cmd.Stdout = w
		cmd.Stderr = os.Stderr
		cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
		if err := cmd.Start(); err != nil {
			return err
		}
		w.Close()
		cmd.Process.Release() // detached: never waited for
		b, err := io.ReadAll(r)
		if err != nil || string(b) != "done\n" {
			return fmt.Errorf("detached child said %q, %v", b, err)
		}
		return nil
	}
	var t0 unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_PROCESS_CPUTIME_ID, &t0); err != nil {
		return err
	}
	mem := make([]byte, max(mib<<20, 1))
	for i := 0; i < len(mem); i += 4096 {
		mem[i] = 1
	}
	if n > 0 && strings.HasPrefix(f[3], "/dev/") {
		if err := blockDeviceIO(f[3], n); err != nil {
			return err
		}
	} else if n > 0 {
		out, err := os.Create(f[3])
		if err != nil {
			return err
		}
		if _, err := out.Write(make([]byte, n)); err != nil {
			return err
		}
		if err := out.Sync(); err != nil {
			return err
		}
		out.Close()
	}
	for {
		var ts unix.Timespec
		if err := unix.ClockGettime(unix.CLOCK_PROCESS_CPUTIME_ID, &ts); err != nil {
			return err
		}
		if time.Duration(ts.Nano()-t0.Nano()) >= time.Duration(cpuMS)*time.Millisecond {
			break
		}
		for i := 0; i < 1e5; i++ {
			mem[i%len(mem)]++
		}
	}
	runtime.KeepAlive(mem)
	return nil
}

// blockDeviceIO writes n bytes (a multiple of 4096) to the block device
// dev and reads them back, both with O_DIRECT: each byte is one bio the
// block layer charges to this process's cgroup in io.stat, and none is
// served from the page cache.
func blockDeviceIO(dev string, n int) error {
	buf, err := unix.Mmap(-1, 0, n, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_ANON|unix.MAP_PRIVATE) // page-aligned, as O_DIRECT wants
	if err != nil {
		return err
	}
	defer unix.Munmap(buf)
	for i := range buf {
		buf[i] = byte(i)
	}
	fd, err := unix.Open(dev, unix.O_RDWR|unix.O_DIRECT|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open %s: %w", dev, err)
	}
	defer unix.Close(fd)
	if w, err := unix.Pwrite(fd, buf, 0); err != nil || w != n {
		return fmt.Errorf("write %s: %d of %d bytes, %v", dev, w, n, err)
	}
	clear(buf)
	if r, err := unix.Pread(fd, buf, 0); err != nil || r != n {
		return fmt.Errorf("read %s: %d of %d bytes, %v", dev, r, n, err)
	}
	if buf[n-1] != byte(n-1) {
		return fmt.Errorf("read %s: not what was written", dev)
	}
	return nil
}

// ramDisk is the VM's block device (scripts/vminit loads brd.ko).
const ramDisk = "/dev/ram0"

// onBlockDevice reports whether dir is on a file system backed by a block
// device, whose writes io.stat counts (tmpfs and the VM's initramfs are
// not).
func onBlockDevice(t *testing.T, dir string) bool {
	var st unix.Stat_t
	if err := unix.Stat(dir, &st); err != nil {
		t.Fatal(err)
	}
	return unix.Major(st.Dev) != 0
}

// TestUsage: every figure of a task's Usage against a task whose detached
// grandchild (setsid ... &, nobody waits for it) burns a known CPU time,
// touches a known amount of memory and writes a known number of bytes:
// the slot's cgroup counters include what the grandchild did, which no
// wait4 rusage would. On the hybrid host only CPU and wall time exist (no
// controllers); in the VM memory.peak and pids.peak must be there as well.
func TestUsage(t *testing.T) {
	const cpuMS, mib, nbytes = 300, 48, 4 << 20
	r := kerneltest.NewRoot(t)
	exe, _ := os.Executable()
	for _, k := range []pool.Kind{pool.KindExec, pool.KindWorker} {
		t.Run(string(k), func(t *testing.T) {
			_, p := newPoolOn(t, r, func(c *pool.Config) {
				c.Name = "test"
				c.Kind = k
				if k == pool.KindExec {
					c.Command = nil
				}
			})
			dir := t.TempDir()
			file := filepath.Join(dir, "written")
			// In the VM the grandchild's bytes go to the RAM disk with
			// O_DIRECT, written and read back: io.stat must count both.
			blockDev := false
			if kerneltest.InVM() {
				if _, err := os.Stat(ramDisk); err != nil {
					t.Fatalf("the VM has no %s (scripts/vm-test.sh packs brd.ko, vminit loads it): %v", ramDisk, err)
				}
				file, blockDev = ramDisk, true
			}
			spec := fmt.Sprintf("%d:%d:%d:%s:1", cpuMS, mib, nbytes, file)
			task := pool.Spec{Payload: []byte("usage:" + spec)}
			if k == pool.KindExec {
				task = pool.Spec{Argv: []string{exe}, Env: map[string]string{"CGPOOL_TEST_USAGE": spec, "CGPOOL_TEST_WORKER": ""}}
			}
			o := submit(t, p, task).wait(t, 2*time.Minute)
			if o.Kind != pool.Result || (k == pool.KindExec && o.ExitCode != 0) {
				t.Fatalf("outcome %+v (stderr %q)", o, o.Stderr)
			}
			u := o.Usage
			if u == nil {
				t.Fatal("the result has no Usage")
			}
			t.Logf("%s usage: %+v", k, *u)
			if st, err := os.Stat(file); !blockDev && (err != nil || st.Size() != nbytes) {
				t.Fatalf("the grandchild did not write its file: %v", err)
			}
			cpu := u.CPUUser + u.CPUSystem
			if cpu < cpuMS*time.Millisecond {
				t.Errorf("CPU %v (user %v, system %v): less than the %d ms the detached grandchild burned", cpu, u.CPUUser, u.CPUSystem, cpuMS)
			}
			if u.CPUUser <= 0 || u.CPUSystem <= 0 {
				t.Errorf("user CPU %v, system CPU %v: the grandchild burned in user mode and faulted its pages in kernel mode", u.CPUUser, u.CPUSystem)
			}
			// Two Go processes start and exit around the burn; under
			// tcg emulation that costs more than natively.
			if slack := 3 * time.Second; cpu > cpuMS*time.Millisecond+slack {
				t.Errorf("CPU %v: more than the %d ms burned plus %v", cpu, cpuMS, slack)
			}
			if u.Wall < cpuMS*time.Millisecond/2 || u.Wall > time.Minute {
				t.Errorf("wall %v: want at least the burn's %d ms / 2 (one thread burns) and under a minute", u.Wall, cpuMS)
			}
			mem := slicesContains(r.Controllers(), "memory")
			switch {
			case !mem && u.MemoryPeakScope != "":
				t.Errorf("memory peak %d (%s) without the memory controller", u.MemoryPeak, u.MemoryPeakScope)
			case mem && u.MemoryPeakScope != pool.PeakTask:
				t.Errorf("memory peak scope %q, want %q: the task raised the slot's high-water mark", u.MemoryPeakScope, pool.PeakTask)
			case mem && (u.MemoryPeak < mib<<20 || u.MemoryPeak > mib<<20+nbytes+96<<20):
				t.Errorf("memory peak %d bytes: want the grandchild's %d MiB, plus at most its %d bytes of page cache and 96 MiB for two Go runtimes", u.MemoryPeak, mib, nbytes)
			}
			pids := slicesContains(r.Controllers(), "pids")
			switch {
			case !pids && u.PidsPeakScope != "":
				t.Errorf("pids peak %d without the pids controller", u.PidsPeak)
			case pids && (u.PidsPeak < 2 || u.PidsPeak > 200):
				t.Errorf("pids peak %d: want the child and its grandchild alive at once (>= 2), and not hundreds", u.PidsPeak)
			}
			io := slicesContains(r.Controllers(), "io")
			switch {
			case io != u.HasIO:
				t.Errorf("HasIO %v with the io controller %v", u.HasIO, io)
			case io && blockDev && (u.IOWrite < nbytes || u.IORead < nbytes || u.IOWrite > nbytes+1<<20 || u.IORead > nbytes+1<<20):
				t.Errorf("io write %d bytes, read %d: want the %d the grandchild wrote to %s and read back (O_DIRECT), and at most 1 MiB more", u.IOWrite, u.IORead, nbytes, ramDisk)
			case io && blockDev:
				t.Logf("io: the grandchild's %d bytes written to %s and read back: io.stat wbytes %d, rbytes %d", nbytes, ramDisk, u.IOWrite, u.IORead)
			case io && onBlockDevice(t, dir) && u.IOWrite < nbytes:
				t.Errorf("io write %d bytes: less than the %d the grandchild wrote and fsynced", u.IOWrite, nbytes)
			case kerneltest.InVM():
				t.Errorf("no io controller in the VM: I/O bytes are unchecked")
			case io:
				t.Logf("%s is not on a block device: io.stat cannot count its writes (io read %d, write %d)", dir, u.IORead, u.IOWrite)
			default:
				t.Logf("no io controller here: I/O bytes are absent")
			}

			// A worker pool slot runs many tasks, an exec slot many
			// commands: each task's CPU is a difference of the slot's
			// counters. A burn that leaves nothing behind (so the slot is
			// kept), then a task on the same slot that does next to
			// nothing: its figures must not include the burn. Its peak is
			// its own (reset, 6.12+) or, said so, the slot's mark.
			burn := pool.Spec{Payload: []byte(fmt.Sprintf("usage:%d:%d:0::0", cpuMS, mib))}
			idle := pool.Spec{Payload: []byte("echo:x")}
			if k == pool.KindExec {
				burn = pool.Spec{Argv: []string{exe}, Env: map[string]string{"CGPOOL_TEST_USAGE": fmt.Sprintf("%d:%d:0::0", cpuMS, mib), "CGPOOL_TEST_WORKER": ""}}
				idle = pool.Spec{Argv: []string{"/bin/true"}}
			}
			ob := submit(t, p, burn).wait(t, 2*time.Minute)
			oi := submit(t, p, idle).wait(t, time.Minute)
			ub, ui := ob.Usage, oi.Usage
			if ob.Kind != pool.Result || oi.Kind != pool.Result || ub == nil || ui == nil {
				t.Fatalf("burn then idle: %+v, %+v", ob, oi)
			}
			t.Logf("%s burn: %+v; then idle: %+v", k, *ub, *ui)
			if oi.Leaf != ob.Leaf {
				t.Fatalf("the idle task ran in %s, not in the burn's slot %s: the slot was not kept", oi.Leaf, ob.Leaf)
			}
			if c := ub.CPUUser + ub.CPUSystem; c < cpuMS*time.Millisecond {
				t.Errorf("burn: CPU %v, less than the %d ms burned", c, cpuMS)
			}
			if c := ui.CPUUser + ui.CPUSystem; c >= cpuMS*time.Millisecond/2 {
				t.Errorf("idle task after a burn on the same slot: CPU %v; the burn was counted again", c)
			}
			if mem && (ui.MemoryPeakScope == "" || ui.MemoryPeakScope == pool.PeakSlot && ui.MemoryPeak < ub.MemoryPeak) {
				t.Errorf("idle task: memory peak %d scope %q; a slot mark is at least the burn's %d", ui.MemoryPeak, ui.MemoryPeakScope, ub.MemoryPeak)
			}
			if mem && ui.MemoryPeakScope == pool.PeakTask && ui.MemoryPeak >= ub.MemoryPeak && k == pool.KindExec {
				t.Errorf("idle command: memory peak %d marked as its own, but it is no less than the burn's %d", ui.MemoryPeak, ub.MemoryPeak)
			}
			if pids && ui.PidsPeakScope != pool.PeakSlot {
				t.Errorf("idle task: pids peak scope %q, want %q (pids.peak cannot be reset, and the idle task does not raise it)", ui.PidsPeakScope, pool.PeakSlot)
			}
		})
	}
}

// TestUsageOnEveryEnd: outcomes of tasks that ran, however they ended,
// carry a Usage whose wall time covers the run.
func TestUsageOnEveryEnd(t *testing.T) {
	_, p := newPool(t, func(c *pool.Config) { c.Kind, c.Command = pool.KindExec, nil })
	sh := func(s string) []string { return []string{"/bin/sh", "-c", s} }
	for _, tc := range []struct {
		name string
		spec pool.Spec
		kind pool.OutcomeKind
		wall time.Duration
	}{
		{"exit 3", pool.Spec{Argv: sh("exit 3")}, pool.Result, 0},
		{"timeout", pool.Spec{Argv: sh("sleep 30"), Timeout: 300 * time.Millisecond}, pool.TimedOut, 300 * time.Millisecond},
		{"killed", pool.Spec{Argv: sh("kill -9 $$")}, pool.ProcessError, 0},
		{"not found", pool.Spec{Argv: []string{"/nonexistent/cmd"}}, pool.ProcessError, 0},
	} {
		o := submit(t, p, tc.spec).wait(t, time.Minute)
		if o.Kind != tc.kind || o.Usage == nil || o.Usage.Wall < tc.wall || o.Usage.Wall > 30*time.Second {
			t.Errorf("%s: outcome %s, usage %+v; want %s with a wall time of at least %v", tc.name, o.Kind, o.Usage, tc.kind, tc.wall)
		}
	}
}

func slicesContains(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}
