package main

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
)

// The joblog of cgpool run: GNU parallel's format (parallel(1),
// --joblog), one TAB-separated line per command that ran to an end:
//
//	Seq Host Starttime JobRuntime Send Receive Exitval Signal
//
// then cgpool's own columns, then the command last (so that no command
// can shift a column):
//
//	Reason CPUUser CPUSystem MemoryPeak PidsPeak IORead IOWrite Command
//
// The first eight are GNU parallel's, in its places: its --resume and
// --resume-failed read a cgpool joblog, and cgpool reads theirs. Host is
// ":" (this machine). Send is the bytes given on standard input (--pipe);
// Receive the bytes of output. Exitval is the exit status, or -1 for a
// command that was killed (Signal then says by which signal: 9 for the
// kill of its cgroup). Reason is how it ended (ok, exit, timeout, oom,
// killed, not_found, not_executable, output_limit, ...). The usage
// columns (CPU µs, bytes) are "-" until the pool reports a task's usage.
//
// Commands that cgpool itself stopped (an interrupt, --halt now) are not
// written: they did not end by themselves, and --resume runs them again.

const joblogHeader = "Seq\tHost\tStarttime\tJobRuntime\tSend\tReceive\tExitval\tSignal\tReason\tCPUUser\tCPUSystem\tMemoryPeak\tPidsPeak\tIORead\tIOWrite\tCommand\n"

// joblogEntry is one line.
type joblogEntry struct {
	seq           int
	start         time.Time
	runtime       time.Duration
	send, receive int64
	exit, signal  int
	reason        string
	command       string
}

// joblog appends entries to the file, each written at once (a run that
// is killed keeps every line written before).
type joblog struct {
	mu sync.Mutex // a second interrupt closes it from another goroutine
	f  *os.File
	w  *bufio.Writer
}

// openJoblog opens the joblog for writing: appended to if it starts with
// "+" or when resuming, else truncated. It writes the header to a new or
// empty file.
func openJoblog(name string, resume bool) (*joblog, error) {
	appendTo := resume
	if rest, ok := strings.CutPrefix(name, "+"); ok {
		name, appendTo = rest, true
	}
	flag := os.O_WRONLY | os.O_CREATE | os.O_TRUNC
	if appendTo {
		flag = os.O_WRONLY | os.O_CREATE | os.O_APPEND
	}
	f, err := os.OpenFile(name, flag, 0o644)
	if err != nil {
		return nil, err
	}
	l := &joblog{f: f, w: bufio.NewWriterSize(f, 4096)}
	if st, err := f.Stat(); err == nil && st.Size() == 0 {
		l.w.WriteString(joblogHeader)
	}
	return l, nil
}

// add writes one line and flushes it.
func (l *joblog) add(e joblogEntry) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f == nil {
		return nil
	}
	cmd := strings.NewReplacer("\n", `\n`, "\t", " ").Replace(e.command)
	fmt.Fprintf(l.w, "%d\t:\t%.3f\t%10.3f\t%d\t%d\t%d\t%d\t%s\t-\t-\t-\t-\t-\t-\t%s\n",
		e.seq, float64(e.start.UnixMilli())/1e3, e.runtime.Seconds(), e.send, e.receive, e.exit, e.signal, e.reason, cmd)
	return l.w.Flush()
}

// close flushes and closes the file; it is idempotent.
func (l *joblog) close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f == nil {
		return nil
	}
	err := errors.Join(l.w.Flush(), l.f.Close())
	l.f = nil
	return err
}

// readJoblog returns the sequence numbers a resumed run skips: those with
// a line (--resume), or with a line of exit 0 and signal 0
// (--resume-failed), as GNU parallel reads them. A missing file skips
// nothing.
func readJoblog(name string, failedToo bool) (map[int]bool, error) {
	name = strings.TrimPrefix(name, "+")
	f, err := os.Open(name)
	if errors.Is(err, fs.ErrNotExist) {
		return map[int]bool{}, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	done := map[int]bool{}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 64<<10), 4<<20)
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		if n == 1 && strings.HasPrefix(line, "Seq\t") {
			continue
		}
		if strings.TrimSpace(line) == "" {
			continue
		}
		f := strings.Split(line, "\t")
		seq, err := strconv.Atoi(f[0])
		if err != nil || seq < 1 || len(f) < 9 {
			return nil, fmt.Errorf("%s:%d: not a joblog line (want Seq, Host, Starttime, JobRuntime, Send, Receive, Exitval, Signal, ... separated by tabs): %q", name, n, line)
		}
		if failedToo && (strings.TrimSpace(f[6]) != "0" || strings.TrimSpace(f[7]) != "0") {
			continue
		}
		done[seq] = true
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read %s: %w", name, err)
	}
	return done, nil
}
