// Command vminit is /init of the initramfs that scripts/vm-test.sh boots under
// qemu to run cgpool's tests on a real cgroup v2 kernel.
//
// It mounts the filesystems a test needs (devtmpfs, proc, sysfs, cgroup2,
// tmpfs), loads the RAM disk driver /lib/modules/brd.ko when the initramfs
// has it (/dev/ram0, the only block device, for io.stat), runs every /tests/*.test binary in name order with -test.v and the
// working directory /src/<name>, streams their output to the serial console
// and prints one marked line per result:
//
//	CGPOOL-TEST PASS cgroup/TestKillEmptiesTree
//	CGPOOL-TEST FAIL cgroup/(binary exit 2)
//
// followed, once all binaries ran, by exactly one
//
//	CGPOOL-SUMMARY: 12 passed, 0 failed, 0 skipped
//
// and then powers the machine off. The host script turns that into its exit
// status. Options come from the kernel command line:
//
//	cgpool.run=REGEX        passed to each binary as -test.run=REGEX
//	cgpool.bench=REGEX      -test.bench=REGEX (and -test.run=^$ unless cgpool.run is set)
//	cgpool.timeout=DURATION -test.timeout per binary, default 10m
//
// A value with spaces may be double-quoted: cgpool.run="A B".
//
// vminit does not enable any controller in the root cgroup's
// cgroup.subtree_control: each test sets up the cgroups it needs. It refuses
// to do anything unless it runs as PID 1, so that running it by mistake on a
// host can neither mount over nor power off that host.
//
// With --systemd it is instead the test runner of
// scripts/systemd-vm-test.sh's VM, where systemd is PID 1 and vminit runs
// as a service (cgpool-vmtest.service): it mounts nothing (systemd did),
// runs the binaries in /usr/local/lib/cgpool-vmtest/tests with their
// directories below .../src, leaves other processes alone (they are
// systemd's), and prints and powers off the same way. It refuses to run
// unless PID 1 is systemd and the kernel command line has
// cgpool.systemd-vm=1, which no ordinary host's has.
//
// It uses only the standard library and golang.org/x/sys/unix and must be
// built with CGO_ENABLED=0: the initramfs has no C library.
package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"runtime/debug"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Where the test binaries and their working directories are; --systemd
// moves them below /usr/local/lib/cgpool-vmtest.
var (
	testsDir = "/tests"
	srcDir   = "/src"
	// underSystemd: --systemd mode (see the package comment).
	underSystemd bool
)

const (
	cgroupRoot = "/sys/fs/cgroup"

	// defaultTimeout is the per-binary -test.timeout when the kernel command
	// line has no cgpool.timeout.
	defaultTimeout = 10 * time.Minute
	// killGrace is how long after its -test.timeout a binary that has not
	// exited (its own timeout panic did not fire or hung) is SIGKILLed.
	killGrace = time.Minute
	// drainTimeout bounds the wait for the end of a binary's output once it
	// exited and its leftover processes were killed.
	drainTimeout = 10 * time.Second
	// sweepTimeout bounds the reaping of leftover processes after a binary.
	sweepTimeout = 5 * time.Second
)

// testEnv is the whole environment of every test binary.
var testEnv = []string{
	"PATH=/bin:/sbin:/usr/bin",
	"HOME=/tmp",
	"TMPDIR=/tmp",
	"CGPOOL_VM=1",
}

func main() {
	if len(os.Args) == 2 && os.Args[1] == "--systemd" {
		if err := checkSystemdVM(); err != nil {
			fmt.Fprintln(os.Stderr, "vminit --systemd:", err)
			os.Exit(2)
		}
		underSystemd = true
		testsDir, srcDir = "/usr/local/lib/cgpool-vmtest/tests", "/usr/local/lib/cgpool-vmtest/src"
		testEnv = append([]string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}, testEnv[1:]...)
	} else if os.Getpid() != 1 {
		fmt.Fprintln(os.Stderr, "vminit: not PID 1; this is the /init of the cgpool test VM (see scripts/vm-test.sh), refusing to run")
		os.Exit(2)
	}
	if !underSystemd {
		fixStdio()
	}
	con := &console{w: os.Stdout}
	var sum summary
	err := func() (err error) {
		defer func() {
			if r := recover(); r != nil {
				err = fmt.Errorf("panic: %v\n%s", r, debug.Stack())
			}
		}()
		return run(con, &sum)
	}()
	if err != nil {
		for _, l := range strings.Split(strings.TrimRight(err.Error(), "\n"), "\n") {
			con.printf("vminit: %s", l)
		}
		// The line right before the summary names the reason.
		con.printf("CGPOOL-ERROR: vminit: %s", firstLine(err.Error()))
		sum = summary{failed: 1}
	}
	con.printf("CGPOOL-SUMMARY: %d passed, %d failed, %d skipped", sum.passed, sum.failed, sum.skipped)
	powerOff()
}

// summary counts the CGPOOL-TEST lines printed.
type summary struct {
	passed, failed, skipped int
}

func (s *summary) add(status string) {
	switch status {
	case "PASS":
		s.passed++
	case "FAIL":
		s.failed++
	case "SKIP":
		s.skipped++
	}
}

// console writes whole lines to the serial console. Several goroutines print
// (test output, kernel messages); each line is written with one Write under a
// lock so that lines never interleave.
type console struct {
	mu sync.Mutex
	w  io.Writer
}

func (c *console) println(s string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	_, _ = io.WriteString(c.w, s+"\n")
}

func (c *console) printf(format string, args ...any) {
	c.println(fmt.Sprintf(format, args...))
}

// fixStdio makes sure fds 0, 1 and 2 are the console. The kernel opens
// /dev/console for init before exec; if the initramfs had no such node, they
// are closed (or /dev/null, which the Go runtime opens in their place when it
// can). Nothing can be reported before this works, so errors are ignored.
func fixStdio() {
	if err := mountFS("devtmpfs", "/dev", "devtmpfs", unix.MS_NOSUID, "mode=0755"); err != nil {
		return
	}
	var st unix.Stat_t
	if err := unix.Fstat(1, &st); err == nil && st.Mode&unix.S_IFMT == unix.S_IFCHR &&
		unix.Major(st.Rdev) != 1 { // 1 is the mem major: /dev/null and friends
		return
	}
	fd, err := unix.Open("/dev/console", unix.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		return
	}
	for i := 0; i < 3; i++ {
		_ = unix.Dup3(fd, i, 0)
	}
	if fd > 2 {
		_ = unix.Close(fd)
	}
}

// checkSystemdVM refuses --systemd anywhere but the systemd test VM.
func checkSystemdVM() error {
	comm, err := os.ReadFile("/proc/1/comm")
	if err != nil || strings.TrimSpace(string(comm)) != "systemd" {
		return fmt.Errorf("PID 1 is not systemd (%q, %v); this runs only in scripts/systemd-vm-test.sh's VM", comm, err)
	}
	raw, err := os.ReadFile("/proc/cmdline")
	if err != nil {
		return err
	}
	if _, ok := parseCmdline(string(raw))["cgpool.systemd-vm"]; !ok {
		return errors.New("the kernel command line has no cgpool.systemd-vm=1; this runs only in scripts/systemd-vm-test.sh's VM")
	}
	return nil
}

func run(con *console, sum *summary) error {
	if !underSystemd { // else systemd mounted everything, as on any host
		if err := setupMounts(); err != nil {
			return err
		}
	}
	// Kernel messages (OOM kills, warnings) would otherwise be written to the
	// serial port by the kernel itself, possibly in the middle of one of our
	// lines. Keep only emergencies (panics) on the direct path and forward
	// errors line by line from /dev/kmsg instead.
	if err := os.WriteFile("/proc/sys/kernel/printk", []byte("1"), 0); err != nil {
		con.printf("vminit: lower console loglevel: %v", err)
	}
	stopKmsg := forwardKmsg(con)
	defer stopKmsg()
	if err := loopbackUp(); err != nil {
		con.printf("vminit: warning: bring up lo: %v", err)
	}
	if !underSystemd {
		if msg := loadRAMDisk(); msg != "" {
			con.printf("vminit: %s", msg)
		}
	}

	raw, err := os.ReadFile("/proc/cmdline")
	if err != nil {
		return err
	}
	cfg, err := parseConfig(string(raw))
	if err != nil {
		return err
	}

	bins, err := filepath.Glob(filepath.Join(testsDir, "*.test"))
	if err != nil {
		return err
	}
	sort.Strings(bins)
	if len(bins) == 0 {
		con.printf("vminit: no test binaries in %s", testsDir)
	}
	var uname unix.Utsname
	_ = unix.Uname(&uname)
	con.printf("vminit: kernel %s, %d test binaries, args %q", unix.ByteSliceToString(uname.Release[:]), len(bins), cfg.args())
	for _, bin := range bins {
		for _, r := range runBinary(con, cfg, bin) {
			sum.add(r.status)
		}
	}
	return nil
}

// mountFS mounts fstype on target, creating target, unless something is
// mounted there already.
func mountFS(source, target, fstype string, flags uintptr, data string) error {
	if err := os.MkdirAll(target, 0o755); err != nil {
		return err
	}
	if isMountpoint(target) {
		return nil
	}
	if err := unix.Mount(source, target, fstype, flags, data); err != nil {
		return fmt.Errorf("mount %s on %s (%s): %w", fstype, target, data, err)
	}
	return nil
}

// isMountpoint reports whether dir is on another filesystem than its parent.
func isMountpoint(dir string) bool {
	var st, parent unix.Stat_t
	if unix.Stat(dir, &st) != nil || unix.Stat(filepath.Dir(dir), &parent) != nil {
		return false
	}
	return st.Dev != parent.Dev
}

func setupMounts() error {
	const common = unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC
	mounts := []struct {
		source, target, fstype string
		flags                  uintptr
		data                   string
	}{
		{"devtmpfs", "/dev", "devtmpfs", unix.MS_NOSUID, "mode=0755"},
		{"proc", "/proc", "proc", common, ""},
		{"sysfs", "/sys", "sysfs", common, ""},
		{"tmpfs", "/tmp", "tmpfs", unix.MS_NOSUID | unix.MS_NODEV, "mode=1777"},
		{"tmpfs", "/dev/shm", "tmpfs", unix.MS_NOSUID | unix.MS_NODEV, "mode=1777"},
	}
	for _, m := range mounts {
		if err := mountFS(m.source, m.target, m.fstype, m.flags, m.data); err != nil {
			return err
		}
	}
	// The options systemd (252, Debian 12) uses, so tests see what a host
	// sees; memory_recursiveprot needs Linux 5.7.
	if err := mountFS("cgroup2", cgroupRoot, "cgroup2", common, "nsdelegate,memory_recursiveprot"); err != nil {
		if err := mountFS("cgroup2", cgroupRoot, "cgroup2", common, "nsdelegate"); err != nil {
			return err
		}
	}
	return nil
}

// loopbackUp sets IFF_UP on lo, so tests can use 127.0.0.1.
func loopbackUp() error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return os.NewSyscallError("socket", err)
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq("lo")
	if err != nil {
		return err
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return os.NewSyscallError("SIOCGIFFLAGS", err)
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	if err := unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr); err != nil {
		return os.NewSyscallError("SIOCSIFFLAGS", err)
	}
	return nil
}

// forwardKmsg prints kernel messages of level error or more urgent, logged
// from now on, as "kmsg: ..." lines. The returned func stops it.
func forwardKmsg(con *console) (stop func()) {
	fd, err := unix.Open("/dev/kmsg", unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		con.printf("vminit: open /dev/kmsg: %v", err)
		return func() {}
	}
	if _, err := unix.Seek(fd, 0, io.SeekEnd); err != nil {
		con.printf("vminit: seek /dev/kmsg: %v", err)
	}
	// A non-blocking fd is registered with the runtime poller, so Close
	// unblocks the Read below.
	f := os.NewFile(uintptr(fd), "/dev/kmsg")
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 8192)
		for {
			n, err := f.Read(buf)
			if errors.Is(err, unix.EPIPE) {
				continue // records were overwritten before we read them
			}
			if err != nil {
				return
			}
			if lvl, msg, ok := parseKmsg(string(buf[:n])); ok && lvl <= 3 {
				con.printf("kmsg: %s", msg)
			}
		}
	}()
	return func() {
		_ = f.Close()
		select {
		case <-done:
		case <-time.After(time.Second):
		}
	}
}

// parseKmsg splits one /dev/kmsg record, "PRI,SEQ,TS,FLAGS;MESSAGE\n" with
// optional continuation lines, into its level and message.
func parseKmsg(rec string) (level int, msg string, ok bool) {
	head, rest, ok := strings.Cut(rec, ";")
	if !ok {
		return 0, "", false
	}
	pri, _, _ := strings.Cut(head, ",")
	p, err := strconv.Atoi(pri)
	if err != nil {
		return 0, "", false
	}
	msg, _, _ = strings.Cut(rest, "\n")
	return p & 7, msg, true
}

// config is what the kernel command line asks of the test run.
type config struct {
	run, bench string
	timeout    time.Duration
}

// args are the flags passed to every test binary.
func (c config) args() []string {
	args := []string{"-test.v", "-test.timeout=" + c.timeout.String()}
	switch {
	case c.run != "":
		args = append(args, "-test.run="+c.run)
	case c.bench != "":
		args = append(args, "-test.run=^$")
	}
	if c.bench != "" {
		args = append(args, "-test.bench="+c.bench)
	}
	return args
}

// parseConfig reads the cgpool.* parameters of a kernel command line.
func parseConfig(cmdline string) (config, error) {
	cfg := config{timeout: defaultTimeout}
	params := parseCmdline(cmdline)
	cfg.run = params["cgpool.run"]
	cfg.bench = params["cgpool.bench"]
	if s, ok := params["cgpool.timeout"]; ok {
		d, err := time.ParseDuration(s)
		if err != nil || d <= 0 {
			return cfg, fmt.Errorf("kernel command line: bad cgpool.timeout=%q: want a positive duration such as 10m", s)
		}
		cfg.timeout = d
	}
	return cfg, nil
}

// parseCmdline splits a kernel command line into its key=value parameters,
// the way the kernel does: words are separated by spaces, and double quotes
// group words without being part of the value. A later parameter overrides
// an earlier one; a word without '=' maps to "".
func parseCmdline(s string) map[string]string {
	params := make(map[string]string)
	var word strings.Builder
	inQuote, inWord := false, false
	flush := func() {
		if inWord {
			k, v, _ := strings.Cut(word.String(), "=")
			params[k] = v
		}
		word.Reset()
		inWord = false
	}
	for _, r := range s {
		switch {
		case r == '"':
			inQuote = !inQuote
			inWord = true
		case !inQuote && (r == ' ' || r == '\t' || r == '\n'):
			flush()
		default:
			word.WriteRune(r)
			inWord = true
		}
	}
	flush()
	return params
}

var (
	resultRe = regexp.MustCompile(`^\s*--- (PASS|FAIL|SKIP): (\S+)`)
	// With -test.v a passing benchmark prints no "--- PASS" line, only its
	// measurement: "BenchmarkFoo-2   	  123456	      9.87 ns/op".
	benchRe = regexp.MustCompile(`^(Benchmark\S*)\s+\d+\s+\d`)
)

// parseResult reports whether a line of `go test -v` output is the result of
// one test, subtest or benchmark, and if so its status (PASS, FAIL or SKIP)
// and full name (subtests as Parent/sub).
func parseResult(line string) (status, name string, ok bool) {
	line = strings.TrimRight(line, "\r\n")
	if m := resultRe.FindStringSubmatch(line); m != nil {
		return m[1], m[2], true
	}
	if m := benchRe.FindStringSubmatch(line); m != nil {
		return "PASS", m[1], true
	}
	return "", "", false
}

// result is one CGPOOL-TEST line.
type result struct {
	status, name string
}

// runBinary runs one test binary to its end and returns the results it
// printed. It always returns at least one FAIL when the binary exited
// non-zero.
func runBinary(con *console, cfg config, bin string) []result {
	name := strings.TrimSuffix(filepath.Base(bin), ".test")
	start := time.Now()
	var results []result
	emit := func(status, test string) {
		results = append(results, result{status, test})
		con.printf("CGPOOL-TEST %s %s/%s", status, name, test)
	}
	failed := func(code int, why string) []result {
		con.printf("vminit: %s: %s", name, why)
		emit("FAIL", fmt.Sprintf("(binary exit %d)", code))
		return results
	}

	dir := filepath.Join(srcDir, name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return failed(127, err.Error())
	}
	before := listCgroups()
	pr, pw, err := os.Pipe()
	if err != nil {
		return failed(127, err.Error())
	}
	cmd := exec.Command(bin, cfg.args()...)
	cmd.Dir = dir
	cmd.Env = testEnv
	cmd.Stdout = pw // one pipe for both keeps their lines in order
	cmd.Stderr = pw
	con.printf("vminit: === %s %s", bin, strings.Join(cfg.args(), " "))
	err = cmd.Start()
	pw.Close()
	if err != nil {
		pr.Close()
		return failed(127, "start: "+err.Error())
	}

	// The reader goroutine is the only one that touches results until
	// readDone is closed.
	readDone := make(chan struct{})
	go func() {
		defer close(readDone)
		r := bufio.NewReaderSize(pr, 64<<10)
		for {
			line, err := r.ReadString('\n')
			if line != "" {
				line = strings.TrimRight(line, "\r\n")
				con.println(line)
				if status, test, ok := parseResult(line); ok {
					emit(status, test)
				}
			}
			if err != nil {
				return
			}
		}
	}()

	stopReaper := reapOrphans(cmd.Process.Pid)
	waitErr := make(chan error, 1)
	go func() { waitErr <- cmd.Wait() }()
	watchdog := time.NewTimer(cfg.timeout + killGrace)
	var werr error
	select {
	case werr = <-waitErr:
	case <-watchdog.C:
		con.printf("vminit: %s still running %v after its -test.timeout, killing it", name, killGrace)
		_ = cmd.Process.Kill()
		werr = <-waitErr
	}
	watchdog.Stop()
	stopReaper()

	// Processes the tests left behind (orphans now children of PID 1) may
	// still hold the pipe open and would interfere with the next binary.
	left := 0
	if !underSystemd { // under systemd, every other process is systemd's
		left = killLeftovers()
	}
	select {
	case <-readDone:
	case <-time.After(drainTimeout):
		con.printf("vminit: %s: output pipe still open %v after exit, closing it", name, drainTimeout)
		pr.Close()
		<-readDone
	}
	pr.Close()
	if left > 0 {
		con.printf("vminit: %s: killed and reaped %d leftover processes", name, left)
	}
	if extra := newCgroups(before, listCgroups()); len(extra) > 0 {
		con.printf("vminit: warning: %s left cgroups behind: %s", name, strings.Join(extra, " "))
	}

	code := exitCode(werr)
	if code != 0 && !hasFail(results) {
		failed(code, fmt.Sprintf("exited with status %d (%v) without a FAIL line", code, werr))
	}
	var s summary
	for _, r := range results {
		s.add(r.status)
	}
	con.printf("vminit: --- %s: exit %d, %d passed, %d failed, %d skipped in %.2fs",
		name, code, s.passed, s.failed, s.skipped, time.Since(start).Seconds())
	return results
}

func hasFail(rs []result) bool {
	for _, r := range rs {
		if r.status == "FAIL" {
			return true
		}
	}
	return false
}

// exitCode is the status of a finished process, 128+N when signal N killed it.
func exitCode(err error) int {
	if err == nil {
		return 0
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return 128 + int(ws.Signal())
		}
		return ee.ExitCode()
	}
	return 127
}

// Reaping. PID 1 inherits every orphan, and an orphan that exits stays a
// zombie (still visible to kill(pid, 0) and in /proc) until PID 1 waits for
// it. A plain wait4(-1) loop running beside the test would also steal the
// exit status of the test binary itself, which os/exec waits for. So while a
// binary runs, reapOrphans peeks at exited children with
// waitid(P_ALL, WNOWAIT), which leaves them waitable, and reaps by pid only
// the ones that are not the test binary. Once the binary was waited for,
// killLeftovers kills whatever is left and reaps everything with wait4(-1).

// siginfoChld is the start of siginfo_t as filled in for SIGCHLD on 64-bit
// Linux; it has the size of unix.Siginfo.
type siginfoChld struct {
	Signo, Errno, Code, _ int32
	Pid                   int32
	UID                   uint32
	Status                int32
	_                     [100]byte
}

// Both directions: siginfoChld is exactly as large as unix.Siginfo.
var (
	_ [unsafe.Sizeof(unix.Siginfo{}) - unsafe.Sizeof(siginfoChld{})]byte
	_ [unsafe.Sizeof(siginfoChld{}) - unsafe.Sizeof(unix.Siginfo{})]byte
)

// peekExited returns the pid of one exited child without reaping it, or 0.
func peekExited() (int, error) {
	for {
		var si siginfoChld
		err := unix.Waitid(unix.P_ALL, 0, (*unix.Siginfo)(unsafe.Pointer(&si)),
			unix.WEXITED|unix.WNOHANG|unix.WNOWAIT, nil)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		return int(si.Pid), err
	}
}

// reapOrphans reaps, until stop is called, exited children other than keep.
// stop returns once the reaping goroutine has exited.
func reapOrphans(keep int) (stop func()) {
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, unix.SIGCHLD)
	quit := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer signal.Stop(sigs)
		tick := time.NewTicker(500 * time.Millisecond) // in case a SIGCHLD was coalesced
		defer tick.Stop()
		for {
			for {
				pid, err := peekExited()
				if err != nil || pid == 0 || pid == keep {
					break // nothing exited, or only the binary: os/exec reaps it
				}
				var ws unix.WaitStatus
				if _, err := unix.Wait4(pid, &ws, unix.WNOHANG, nil); err != nil {
					break
				}
			}
			select {
			case <-quit:
				return
			case <-sigs:
			case <-tick.C:
			}
		}
	}()
	return func() {
		close(quit)
		<-done
	}
}

// killLeftovers SIGKILLs every process but PID 1 and reaps all children,
// giving up after sweepTimeout. It returns how many it reaped.
func killLeftovers() int {
	_ = unix.Kill(-1, unix.SIGKILL) // kill(2): -1 is everyone but init itself
	reaped := 0
	deadline := time.Now().Add(sweepTimeout)
	for time.Now().Before(deadline) {
		var ws unix.WaitStatus
		pid, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil)
		switch {
		case errors.Is(err, unix.EINTR):
		case err != nil: // ECHILD: no children left
			return reaped
		case pid > 0:
			reaped++
		default: // children left that have not died yet
			time.Sleep(10 * time.Millisecond)
		}
	}
	return reaped
}

// listCgroups returns every cgroup below the root, as paths relative to it.
func listCgroups() map[string]bool {
	set := make(map[string]bool)
	_ = filepath.WalkDir(cgroupRoot, func(p string, d os.DirEntry, err error) error {
		if err != nil || !d.IsDir() || p == cgroupRoot {
			return nil
		}
		rel, _ := filepath.Rel(cgroupRoot, p)
		set[rel] = true
		return nil
	})
	return set
}

func newCgroups(before, after map[string]bool) []string {
	var extra []string
	for p := range after {
		if !before[p] {
			extra = append(extra, p)
		}
	}
	sort.Strings(extra)
	return extra
}

func firstLine(s string) string {
	l, _, _ := strings.Cut(s, "\n")
	return l
}

// powerOff flushes and powers the machine off. With qemu -no-reboot and the
// kernel's panic=-1, even a failing reboot(2) (init then exits, and the
// kernel panics and reboots) ends qemu.
func powerOff() {
	// tcdrain: the last lines may still sit in the serial driver's buffer,
	// which powering off does not wait for.
	_ = unix.IoctlSetInt(1, unix.TCSBRK, 1)
	unix.Sync()
	err := unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF)
	fmt.Fprintf(os.Stdout, "vminit: power off: %v\n", err)
	os.Exit(1)
}

// ramDiskModule is where scripts/vm-test.sh puts the kernel's brd.ko.
const ramDiskModule = "/lib/modules/brd.ko"

// loadRAMDisk loads brd.ko, when the initramfs has it, for one 64 MiB RAM
// disk, /dev/ram0 (devtmpfs makes the node): the VM's only block device,
// whose reads and writes io.stat counts (pool's TestUsage). It returns a
// line to print.
func loadRAMDisk() string {
	f, err := os.Open(ramDiskModule)
	if errors.Is(err, fs.ErrNotExist) {
		return "no " + ramDiskModule + " in the initramfs: no /dev/ram0 (io.stat has no block device to count)"
	}
	if err != nil {
		return "open " + ramDiskModule + ": " + err.Error()
	}
	defer f.Close()
	if err := unix.FinitModule(int(f.Fd()), "rd_nr=1 rd_size=65536 max_part=0", 0); err != nil && !errors.Is(err, unix.EEXIST) {
		return "load " + ramDiskModule + ": " + err.Error()
	}
	if _, err := os.Stat("/dev/ram0"); err != nil {
		return "brd.ko loaded, but: " + err.Error()
	}
	return "/dev/ram0: a 64 MiB RAM disk (brd.ko), for io.stat"
}
