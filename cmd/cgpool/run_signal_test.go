package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestRunInterrupt is acceptance 3: SIGINT mid-run prints the summary,
// writes the joblog, kills the running commands' cgroups, leaves nothing
// behind and exits 130; --resume then runs exactly the commands that did
// not end: the two killed and the fifteen never started.
func TestRunInterrupt(t *testing.T) {
	requireCgroups(t)
	dir := t.TempDir()
	log := filepath.Join(dir, "jobs.log")
	input := ""
	for i := 1; i <= 20; i++ {
		input += strconv.Itoa(i) + "\n"
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := cgpool(ctx, "run", "-j2", "--line-buffer", "--joblog", log,
		`if [ {} -le 3 ]; then echo done {}; else setsid sleep 300 & echo started {} $$ $!; wait; fi`)
	cmd.Stdin = strings.NewReader(input)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// Wait until commands 4 and 5 run (1 to 3 are done by then).
	var pids []int
	var seen []string
	sc := bufio.NewScanner(out)
	for len(pids) < 4 && sc.Scan() {
		seen = append(seen, sc.Text())
		if f := strings.Fields(sc.Text()); len(f) == 4 && f[0] == "started" {
			for _, s := range f[2:] {
				n, _ := strconv.Atoi(s)
				pids = append(pids, n)
			}
		}
	}
	if len(pids) < 4 {
		t.Fatalf("saw %q, want two commands started", seen)
	}
	root := filepath.Join(mustMount(t), "cgpool-"+strconv.Itoa(cmd.Process.Pid))
	if _, err := os.Stat(root); err != nil {
		t.Fatalf("the run's cgroup root %s: %v", root, err)
	}
	cmd.Process.Signal(syscall.SIGINT)
	io.Copy(io.Discard, out)
	code := exitStatus(t, cmd.Wait())
	if code != 130 {
		t.Errorf("exit %d after SIGINT, want 130; stderr %q", code, stderr.String())
	}
	want := "cgpool: 20 commands: 3 succeeded, 2 killed by the interrupt, 15 not started; the joblog " + log + " lets --resume run the rest\n"
	if !strings.HasSuffix(stderr.String(), want) {
		t.Errorf("stderr %q, want it to end with the summary %q", stderr.String(), want)
	}
	if strings.Count(stderr.String(), "\n") != 2 {
		t.Errorf("stderr %q: want the interrupt line and the summary, nothing per command", stderr.String())
	}
	for _, pid := range pids {
		if !processGone(pid) {
			t.Errorf("process %d (a command or its detached child) survived the interrupt", pid)
			syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	if _, err := os.Stat(root); !os.IsNotExist(err) {
		t.Errorf("the run's cgroup root %s is still there: %v", root, err)
	}
	var done []string
	for _, row := range joblogRows(t, log) {
		done = append(done, row[0])
	}
	if !slices.Equal(done, []string{"1", "2", "3"}) {
		t.Errorf("joblog after the interrupt has seqs %q, want 1 2 3 (the killed ones are not logged)", done)
	}

	r := cgpoolRun(t, dir, input, "-j2", "--resume", "--joblog", log, "echo resumed {}")
	var want2 []string
	for i := 4; i <= 20; i++ {
		want2 = append(want2, "resumed "+strconv.Itoa(i))
	}
	slices.Sort(want2)
	if got := sortedLines(r.stdout); !slices.Equal(got, want2) || r.code != 0 {
		t.Errorf("--resume ran %q (exit %d, stderr %q), want commands 4 to 20", got, r.code, r.stderr)
	}
	if !strings.Contains(r.stderr, "20 commands: 17 succeeded, 3 skipped (done in the joblog)") {
		t.Errorf("--resume summary: %q", r.stderr)
	}
	if got := len(joblogRows(t, log)); got != 20 {
		t.Errorf("joblog has %d lines after --resume, want 20", got)
	}
}

// TestRunSecondInterrupt: with the run stuck writing output nobody reads,
// a first SIGINT cannot finish; a second stops at once, exits 130 and
// still leaves no process and no cgroup behind.
func TestRunSecondInterrupt(t *testing.T) {
	requireCgroups(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := cgpool(ctx, "run", "-j2", "--line-buffer",
		`echo pid $$ {}; setsid sleep 300 & echo pid $! {}; yes {} | head -c 10000000; sleep 300`, ":::", "a", "b")
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout = pw
	var stderr lockedBuffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pw.Close()
	rd := bufio.NewReader(pr)
	var pids []int
	for len(pids) < 4 {
		l, err := rd.ReadString('\n')
		if err != nil {
			t.Fatalf("read: %v", err)
		}
		if f := strings.Fields(l); len(f) == 3 && f[0] == "pid" {
			n, _ := strconv.Atoi(f[1])
			pids = append(pids, n)
		}
	}
	// Now nobody reads: once the pipe is full, cgpool is stuck writing
	// the commands' lines.
	capacity, err := unix.FcntlInt(pr.Fd(), unix.F_GETPIPE_SZ, 0)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool {
		n, err := unix.IoctlGetInt(int(pr.Fd()), unix.TIOCINQ) // FIONREAD
		return err == nil && n+rd.Buffered() >= capacity
	}, "cgpool's stdout pipe to fill")
	root := filepath.Join(mustMount(t), "cgpool-"+strconv.Itoa(cmd.Process.Pid))
	cmd.Process.Signal(syscall.SIGINT)
	waitFor(t, func() bool { return strings.Contains(stderr.String(), "SIGINT: starting no more") }, "the first SIGINT's line")
	cmd.Process.Signal(syscall.SIGINT)
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if code := exitStatus(t, err); code != 130 {
			t.Errorf("exit %d after the second SIGINT, want 130; stderr %q", code, stderr.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("cgpool run still runs 30 s after the second SIGINT; stderr %q", stderr.String())
	}
	pr.Close()
	if !strings.Contains(stderr.String(), "SIGINT again: killing everything now") {
		t.Errorf("stderr %q", stderr.String())
	}
	for _, pid := range pids {
		if !processGone(pid) {
			t.Errorf("process %d survived", pid)
			syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	if _, err := os.Stat(root); !os.IsNotExist(err) {
		t.Errorf("the run's cgroup root %s is still there: %v", root, err)
	}
}

// TestRunSIGTERM: SIGTERM exits 143 and SIGHUP (a closed terminal) 129,
// each counting the not-started ones once.
func TestRunSIGTERM(t *testing.T) {
	requireCgroups(t)
	for _, tc := range []struct {
		sig  syscall.Signal
		code int
	}{{syscall.SIGTERM, 143}, {syscall.SIGHUP, 129}} {
		t.Run(tc.sig.String(), func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			cmd := cgpool(ctx, "run", "-j2", "--line-buffer", "echo started {}; sleep 300")
			cmd.Stdin = strings.NewReader(strings.Repeat("x\n", 200))
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			out, _ := cmd.StdoutPipe()
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			sc := bufio.NewScanner(out)
			for n := 0; n < 2 && sc.Scan(); n++ {
			}
			cmd.Process.Signal(tc.sig)
			io.Copy(io.Discard, out)
			if code := exitStatus(t, cmd.Wait()); code != tc.code {
				t.Errorf("exit %d, want %d", code, tc.code)
			}
			if want := "cgpool: 200 commands: 0 succeeded, 2 killed by the interrupt, 198 not started\n"; !strings.HasSuffix(stderr.String(), want) {
				t.Errorf("stderr %q, want the summary %q", stderr.String(), want)
			}
			if strings.Contains(stderr.String(), "cancelled") {
				t.Errorf("stderr %q: a line per command not started", stderr.String())
			}
		})
	}
}

// bigOutput is what the test command of TestRunBigOutput writes: 50 MB
// on stdout, 3 MB on stderr, in lines.
func bigOutput() (stdout, stderr []byte) {
	line := []byte("0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz-line\n")
	stdout = bytes.Repeat(line, 50_000_000/len(line)+1)[:50_000_000]
	stderr = bytes.Repeat([]byte("an error line on stderr\n"), 3_000_000/24+1)[:3_000_000]
	return stdout, stderr
}

// TestRunBigOutput is acceptance 5: a command that writes 50 MB to stdout
// and 3 MB to stderr gets every byte to cgpool run's stdout and stderr
// (checksums), in each output mode, and cgpool run's memory does not grow
// by the output's size (its peak RSS, from wait4, beside a run that
// writes nothing; see rssMain for why it is measured from a process of
// its own).
func TestRunBigOutput(t *testing.T) {
	requireCgroups(t)
	wantOut, wantErr := bigOutput()
	dir := t.TempDir()
	src := filepath.Join(dir, "out")
	if err := os.WriteFile(src, wantOut, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(src+".err", wantErr, 0o644); err != nil {
		t.Fatal(err)
	}
	script := "cat " + src + "; cat " + src + ".err >&2"
	peak := func(args ...string) (stdout, stderr []byte, rssKiB int64) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		rssFile := filepath.Join(dir, "rss")
		cmd := cgpool(ctx, append([]string{"run", "--progress", "never"}, args...)...)
		cmd.Env = append(cmd.Env, "TMPDIR="+dir, "CGPOOL_TEST_RSS="+rssFile)
		// Files, so that the test's own buffers are not what is measured.
		so, _ := os.Create(filepath.Join(dir, "so"))
		se, _ := os.Create(filepath.Join(dir, "se"))
		cmd.Stdout, cmd.Stderr = so, se
		err := cmd.Run()
		so.Close()
		se.Close()
		if err != nil {
			t.Fatalf("cgpool run %q: %v", args, err)
		}
		stdout, _ = os.ReadFile(filepath.Join(dir, "so"))
		stderr, _ = os.ReadFile(filepath.Join(dir, "se"))
		b, err := os.ReadFile(rssFile)
		if err != nil {
			t.Fatal(err)
		}
		rssKiB, _ = strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
		return stdout, stderr, rssKiB
	}
	_, _, base := peak("--once", "true")
	for _, mode := range [][]string{
		{"--once"},
		{"--group", "-j2", "--", "sh", "-c", script + "; :", ":::", "a"},
		{"--line-buffer", "-j2", "--", "sh", "-c", script + "; :", ":::", "a"},
		{"-k", "-j2", "--", "sh", "-c", script + "; :", ":::", "a"},
	} {
		args := mode
		if mode[0] == "--once" {
			args = []string{"--once", "--", "sh", "-c", script}
		}
		gotOut, gotErr, rss := peak(args...)
		if sha256.Sum256(gotOut) != sha256.Sum256(wantOut) || len(gotOut) != len(wantOut) {
			t.Errorf("%q: stdout is %d bytes, not the 50,000,000 the command wrote", mode, len(gotOut))
		}
		if !bytes.HasPrefix(gotErr, wantErr) || len(gotErr) != len(wantErr) {
			t.Errorf("%q: stderr is %d bytes, not the 3,000,000 the command wrote (+ nothing: it succeeded): %q", mode, len(gotErr), gotErr[max(0, len(gotErr)-200):])
		}
		t.Logf("%q: peak RSS %d KiB (%d KiB for a run with no output)", mode, rss, base)
		if rss-base > 16<<10 {
			t.Errorf("%q: peak RSS %d KiB, %d KiB above a run with no output: the output is held in memory", mode, rss, rss-base)
		}
	}
}

// TestRunMaxOutput: past --max-output a command is killed, exactly the
// bound reaches stdout, it fails with its own reason, and one loud line
// says so.
func TestRunMaxOutput(t *testing.T) {
	requireCgroups(t)
	dir := t.TempDir()
	log := filepath.Join(dir, "log")
	r := cgpoolRun(t, dir, "", "--max-output", "100K", "--joblog", log, "-k", "{}", ":::", "yes", "true")
	if len(r.stdout) != 100<<10 || r.code != 1 {
		t.Errorf("stdout %d bytes, exit %d; want 102400 and 1", len(r.stdout), r.code)
	}
	if strings.Count(r.stderr, "OUTPUT CUT") != 1 || !strings.Contains(r.stderr, "2 commands: 1 succeeded, 1 failed (output limit: 1)") {
		t.Errorf("stderr %q", r.stderr)
	}
	if rows := joblogRows(t, log); len(rows) != 2 || rows[0][8] != "output_limit" || rows[0][6] != "-1" || rows[0][7] != "9" {
		t.Errorf("joblog %q", rows)
	}
	r = cgpoolRun(t, dir, "", "--once", "--max-output", "1000", "yes")
	if r.code != exitOutputLimit || len(r.stdout) != 1000 {
		t.Errorf("--once: exit %d, %d bytes", r.code, len(r.stdout))
	}
}
