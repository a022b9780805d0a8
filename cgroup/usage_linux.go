package cgroup

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// CPUStat reads cpu.stat (descendants included).
func (g *Group) CPUStat() (CPUStat, error) {
	s, err := g.ReadFile("cpu.stat")
	if err != nil {
		return CPUStat{}, err
	}
	return ParseCPUStat(s)
}

// IOStat reads io.stat (descendants included). Without the io controller
// the file is missing and the error wraps fs.ErrNotExist.
func (g *Group) IOStat() (IOStat, error) {
	s, err := g.ReadFile("io.stat")
	if err != nil {
		return IOStat{}, err
	}
	return ParseIOStat(s)
}

// PidsPeak reads pids.peak: the most tasks the group and its descendants
// ever held at once (Linux 6.1, with the pids controller). Where the
// controller is on but the kernel is older, the error wraps
// errors.ErrUnsupported.
func (g *Group) PidsPeak() (int64, error) {
	v, err := g.readInt("pids.peak")
	if errors.Is(err, fs.ErrNotExist) && g.exists() {
		if _, cerr := os.Stat(filepath.Join(g.dir, "pids.current")); cerr == nil {
			return 0, fmt.Errorf("pids.peak: %w", errors.ErrUnsupported)
		}
	}
	return v, err
}

// UsageSample is one reading of a group's usage counters. A figure whose
// file the group lacks (no such controller, or an older kernel) is marked
// absent by its Has flag.
type UsageSample struct {
	CPU        CPUStat
	HasCPU     bool
	MemoryPeak int64 // memory.peak: bytes, since creation or the last ResetPeaks
	HasMemory  bool
	PidsPeak   int64 // pids.peak: tasks, since creation
	HasPids    bool
	IO         IOStat
	HasIO      bool
}

// UsageFiles keeps a group's usage files open, so that reading them after
// each task costs one pread each (no path walk). It is not safe for
// concurrent use. Close it before the group is removed.
type UsageFiles struct {
	cpu, memPeak, pidsPeak, io *os.File
	// peakResettable: memory.peak was opened for writing, which Linux
	// 6.12 allows (commit c6f53ed8f213); writing to it resets the peak
	// seen through this file to the current usage.
	peakResettable bool
}

// OpenUsage opens the group's cpu.stat and, where they exist, memory.peak
// (read-write where the kernel lets it be reset), pids.peak and io.stat.
// Only a missing cpu.stat is an error.
func (g *Group) OpenUsage() (*UsageFiles, error) {
	u := &UsageFiles{}
	var err error
	if u.cpu, err = os.Open(filepath.Join(g.dir, "cpu.stat")); err != nil {
		return nil, err
	}
	p := filepath.Join(g.dir, "memory.peak")
	if f, err := os.OpenFile(p, os.O_RDWR, 0); err == nil {
		u.memPeak, u.peakResettable = f, true
	} else if f, err := os.Open(p); err == nil {
		u.memPeak = f // before 6.12 the file has no write handler: open for writing fails with EACCES
	}
	if f, err := os.Open(filepath.Join(g.dir, "pids.peak")); err == nil {
		u.pidsPeak = f
	}
	if f, err := os.Open(filepath.Join(g.dir, "io.stat")); err == nil {
		u.io = f
	}
	return u, nil
}

// PeakResettable reports whether ResetPeaks resets memory.peak (Linux
// 6.12+). pids.peak can never be reset.
func (u *UsageFiles) PeakResettable() bool { return u.peakResettable }

// ResetPeaks resets memory.peak, as read through u, to the group's
// current usage, where the kernel allows it; it reports whether it did.
func (u *UsageFiles) ResetPeaks() bool {
	if !u.peakResettable {
		return false
	}
	if _, err := unix.Pwrite(int(u.memPeak.Fd()), []byte("reset\n"), 0); err != nil {
		u.peakResettable = false
		return false
	}
	return true
}

// Read takes one sample. An error reading cpu.stat (the group is gone)
// is returned; the optional files that fail are marked absent.
func (u *UsageFiles) Read() (UsageSample, error) {
	var s UsageSample
	var buf [1024]byte
	text, err := pread(u.cpu, buf[:])
	if err != nil {
		return s, err
	}
	if s.CPU, err = ParseCPUStat(text); err != nil {
		return s, err
	}
	s.HasCPU = true
	if u.memPeak != nil {
		if t, err := pread(u.memPeak, buf[:]); err == nil {
			if v, err := strconv.ParseInt(strings.TrimSpace(t), 10, 64); err == nil {
				s.MemoryPeak, s.HasMemory = v, true
			}
		}
	}
	if u.pidsPeak != nil {
		if t, err := pread(u.pidsPeak, buf[:]); err == nil {
			if v, err := strconv.ParseInt(strings.TrimSpace(t), 10, 64); err == nil {
				s.PidsPeak, s.HasPids = v, true
			}
		}
	}
	if u.io != nil {
		var big [4096]byte // one line per device
		if t, err := pread(u.io, big[:]); err == nil {
			if v, err := ParseIOStat(t); err == nil {
				s.IO, s.HasIO = v, true
			}
		}
	}
	return s, nil
}

// Close closes the files.
func (u *UsageFiles) Close() {
	for _, f := range []*os.File{u.cpu, u.memPeak, u.pidsPeak, u.io} {
		if f != nil {
			f.Close()
		}
	}
}

// pread reads a small cgroupfs file whole in one pread (cgroupfs returns
// such a file in one read); a file that fills buf is read again in full.
func pread(f *os.File, buf []byte) (string, error) {
	n, err := unix.Pread(int(f.Fd()), buf, 0)
	if err != nil {
		return "", &os.PathError{Op: "pread", Path: f.Name(), Err: err}
	}
	if n < len(buf) {
		return string(buf[:n]), nil
	}
	b, err := os.ReadFile(f.Name())
	return string(b), err
}
