package main

import (
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/cgpool/cgpool/client"
	"github.com/cgpool/cgpool/pool"
)

// figures is a task's usage as the CLI prints it, from either the
// client's or the embedded pool's Usage (the two packages do not import
// each other).
type figures struct {
	wall, user, system time.Duration
	mem                int64
	memScope           string // "" not measured, "task", "slot"
	pids               int64
	pidsScope          string
	ioRead, ioWrite    int64
	hasIO              bool
}

func clientFigures(u *client.Usage) *figures {
	if u == nil {
		return nil
	}
	return &figures{u.Wall, u.CPUUser, u.CPUSystem, u.MemoryPeak, u.MemoryPeakScope, u.PidsPeak, u.PidsPeakScope, u.IORead, u.IOWrite, u.HasIO}
}

func poolFigures(u *pool.Usage) *figures {
	if u == nil {
		return nil
	}
	return &figures{u.Wall, u.CPUUser, u.CPUSystem, u.MemoryPeak, string(u.MemoryPeakScope), u.PidsPeak, string(u.PidsPeakScope), u.IORead, u.IOWrite, u.HasIO}
}

func (f *figures) cpu() time.Duration { return f.user + f.system }

// seconds prints a duration in seconds, 3 significant digits or ms.
func seconds(d time.Duration) string {
	switch {
	case d < time.Millisecond:
		return fmt.Sprintf("%dµs", d.Microseconds())
	case d < time.Second:
		return fmt.Sprintf("%.1fms", float64(d)/float64(time.Millisecond))
	}
	return fmt.Sprintf("%.2fs", d.Seconds())
}

// bytesHuman prints a byte count for a person: 0 B, 512 B, 4.0 KiB, ...
func bytesHuman(n int64) string {
	const unit = 1024
	if n < unit {
		return strconv.FormatInt(n, 10) + " B"
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit && exp < 4; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTP"[exp])
}

// line is the human line `cgpool submit --usage` prints, e.g.
//
//	usage: wall 1.52s, CPU 1.29s (user 1.20s, system 88.0ms), memory peak 64.0 MiB, pids peak 3 (slot mark), I/O read 0 B, written 4.0 MiB
//
// A figure the daemon's kernel does not offer says so.
func (f *figures) line() string {
	var b strings.Builder
	fmt.Fprintf(&b, "usage: wall %s, CPU %s (user %s, system %s)", seconds(f.wall), seconds(f.cpu()), seconds(f.user), seconds(f.system))
	peak := func(what, v, scope string) {
		switch scope {
		case "":
			fmt.Fprintf(&b, ", %s not measured", what)
		case string(pool.PeakSlot):
			fmt.Fprintf(&b, ", %s at most %s (the slot's high-water mark)", what, v)
		default:
			fmt.Fprintf(&b, ", %s %s", what, v)
		}
	}
	peak("memory peak", bytesHuman(f.mem), f.memScope)
	peak("pids peak", strconv.FormatInt(f.pids, 10), f.pidsScope)
	if f.hasIO {
		fmt.Fprintf(&b, ", I/O read %s, written %s", bytesHuman(f.ioRead), bytesHuman(f.ioWrite))
	} else {
		b.WriteString(", I/O not measured")
	}
	return b.String()
}

// reportUsage prints `cgpool submit --usage`'s line to w.
func reportUsage(w io.Writer, u *client.Usage) {
	if u == nil {
		fmt.Fprintln(w, "cgpool: usage: not reported (the task did not start, or the daemon does not measure)")
		return
	}
	fmt.Fprintln(w, "cgpool: "+clientFigures(u).line())
}

// joblogColumns are the joblog's usage columns, TAB-separated: CPUUser
// and CPUSystem in µs, MemoryPeak and IORead/IOWrite in bytes, PidsPeak
// in tasks; "-" for a figure not measured, and a peak that is only the
// slot's high-water mark (an upper bound, see docs/protocol.md) written
// as "<=N".
func (f *figures) joblogColumns() string {
	if f == nil {
		return "-\t-\t-\t-\t-\t-"
	}
	peak := func(v int64, scope string) string {
		switch scope {
		case "":
			return "-"
		case string(pool.PeakSlot):
			return "<=" + strconv.FormatInt(v, 10)
		}
		return strconv.FormatInt(v, 10)
	}
	io := "-\t-"
	if f.hasIO {
		io = strconv.FormatInt(f.ioRead, 10) + "\t" + strconv.FormatInt(f.ioWrite, 10)
	}
	return fmt.Sprintf("%d\t%d\t%s\t%s\t%s", f.user.Microseconds(), f.system.Microseconds(), peak(f.mem, f.memScope), peak(f.pids, f.pidsScope), io)
}

// usageRow is one command of a run for the summary's usage lines.
type usageRow struct {
	n     int
	label string
	f     *figures
}

// usageTop keeps, of a run's commands, the ones the summary's usage lines
// may name (the slowest, the hungriest by memory and by CPU), not every
// command's figures: a run may have millions.
type usageTop struct {
	n              int // commands that reported usage
	slow, mem, cpu *usageRow
}

func (u *usageTop) add(r usageRow) {
	if r.f == nil {
		return
	}
	u.n++
	if u.slow == nil || r.f.wall > u.slow.f.wall {
		u.slow = &r
	}
	if r.f.memScope != "" && (u.mem == nil || r.f.mem > u.mem.f.mem ||
		r.f.mem == u.mem.f.mem && u.mem.f.memScope == string(pool.PeakSlot) && r.f.memScope == string(pool.PeakTask)) {
		u.mem = &r
	}
	if u.cpu == nil || r.f.cpu() > u.cpu.f.cpu() {
		u.cpu = &r
	}
}

// summarize prints the run's slowest command (by wall time on the worker)
// and its hungriest (by memory peak where measured, else by CPU time), for
// a run of more than one command that reported usage.
func (u *usageTop) summarize(w io.Writer) {
	if u.n < 2 {
		return
	}
	slow := u.slow
	fmt.Fprintf(w, "cgpool: slowest: [%d] wall %s, CPU %s: %s\n", slow.n, seconds(slow.f.wall), seconds(slow.f.cpu()), slow.label)
	if hungry := u.mem; hungry != nil {
		scope := ""
		if hungry.f.memScope == string(pool.PeakSlot) {
			scope = " (at most: the slot's high-water mark)"
		}
		fmt.Fprintf(w, "cgpool: hungriest: [%d] memory peak %s%s, CPU %s: %s\n", hungry.n, bytesHuman(hungry.f.mem), scope, seconds(hungry.f.cpu()), hungry.label)
	} else {
		hungry := u.cpu
		fmt.Fprintf(w, "cgpool: hungriest: [%d] CPU %s (memory not measured: no memory controller): %s\n", hungry.n, seconds(hungry.f.cpu()), hungry.label)
	}
}
