package main

import (
	"bytes"
	"errors"
	"io"
	"os"
	"sync"
	"sync/atomic"
)

// How cgpool run prints its commands' output. Output is never cut and
// never mixed within a line:
//   - --group (the default, as in GNU parallel): a command's whole
//     output, standard output then standard error, once it has ended;
//   - --line-buffer: whole lines as they come, lines of different
//     commands interleaved;
//   - --keep-order (-k): in input order; with --line-buffer, the oldest
//     running command's lines as they come, the others' when their turn
//     comes.
//
// What waits to be printed is held in memory up to spoolMemory bytes a
// stream, then in an unlinked file in $TMPDIR, so that a command that
// writes gigabytes costs disk, not memory.

// spoolMemory is how much of one stream of one command is held in memory.
const spoolMemory = 64 << 10

// spool is bytes waiting to be printed.
type spool struct {
	mem  []byte
	file *os.File // past spoolMemory; unlinked
	size int64
}

func (s *spool) write(p []byte) error {
	s.size += int64(len(p))
	if s.file == nil && len(s.mem)+len(p) <= spoolMemory {
		s.mem = append(s.mem, p...)
		return nil
	}
	if s.file == nil {
		f, err := os.CreateTemp("", "cgpool-run-*")
		if err != nil {
			return err
		}
		os.Remove(f.Name()) // nothing to clean up if we are killed
		s.file = f
		if _, err := f.Write(s.mem); err != nil {
			return err
		}
		s.mem = nil
	}
	_, err := s.file.Write(p)
	return err
}

// copyTo writes what the spool holds to w and empties it.
func (s *spool) copyTo(w io.Writer) error {
	defer s.reset()
	if s.file == nil {
		_, err := w.Write(s.mem)
		return err
	}
	if _, err := s.file.Seek(0, io.SeekStart); err != nil {
		return err
	}
	_, err := io.Copy(w, s.file)
	return err
}

func (s *spool) reset() {
	if s.file != nil {
		s.file.Close()
		s.file = nil
	}
	s.mem = s.mem[:0]
	s.size = 0
}

// output is where the commands' output goes. It is safe for concurrent
// use: commands' output arrives from the pool's goroutines.
type output struct {
	mu      sync.Mutex
	dst     [2]io.Writer // stdout, stderr
	line    bool         // --line-buffer
	keep    bool         // --keep-order
	quiet   bool         // --quiet: drop it all
	before  func()       // called before each write (clears the progress bar)
	next    int          // keep: the next seq whose output goes out
	waiting map[int]*jobOut
	err     error       // the first failed write (EPIPE on a closed stdout)
	dropped atomic.Bool // a second interrupt: print nothing more (set without the lock: a writer may hold it, blocked)
}

func newOutput(stdout, stderr io.Writer, line, keep, quiet bool, before func()) *output {
	if before == nil {
		before = func() {}
	}
	return &output{dst: [2]io.Writer{stdout, stderr}, line: line, keep: keep, quiet: quiet, before: before, next: 1, waiting: map[int]*jobOut{}}
}

// jobOut is one command's output on its way.
type jobOut struct {
	o     *output
	seq   int
	tag   []byte // --tag: prefix of every line ("" for none)
	sp    [2]spool
	live  bool // its lines go out as they come
	done  bool
	bytes int64 // all it wrote, for the joblog
}

// open starts the output of job seq. Under --keep-order, jobs must be
// opened in seq order (skipped seqs are passed to skip).
func (o *output) open(seq int, tag string) *jobOut {
	o.mu.Lock()
	defer o.mu.Unlock()
	j := &jobOut{o: o, seq: seq}
	if tag != "" {
		j.tag = []byte(tag + "\t")
	}
	j.live = o.line && (!o.keep || seq == o.next)
	if o.keep {
		o.waiting[seq] = j
	}
	return j
}

// skip tells a keep-order output that seq prints nothing (resumed).
func (o *output) skip(seq int) {
	if !o.keep {
		return
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	o.waiting[seq] = &jobOut{o: o, seq: seq, done: true}
	o.advanceLocked()
}

// failed returns the first write error, if any.
func (o *output) failed() error {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.err
}

// drop makes every later write a no-op (a second interrupt).
func (o *output) drop() { o.dropped.Store(true) }

// emit writes p to stream s with the tag at every line start, and
// remembers the first error.
func (o *output) emitLocked(s int, tag, p []byte) {
	if o.err != nil || o.dropped.Load() || o.quiet || len(p) == 0 {
		return
	}
	o.before()
	if len(tag) > 0 {
		var b bytes.Buffer
		for len(p) > 0 {
			i := bytes.IndexByte(p, '\n')
			b.Write(tag)
			if i < 0 {
				b.Write(p)
				break
			}
			b.Write(p[:i+1])
			p = p[i+1:]
		}
		p = b.Bytes()
	}
	if _, err := o.dst[s].Write(p); err != nil {
		o.err = err
	}
}

// flushSpoolLocked writes a spool out, tagged, and empties it.
func (o *output) flushSpoolLocked(j *jobOut, s int) {
	sp := &j.sp[s]
	if len(j.tag) == 0 && sp.file != nil && o.err == nil && !o.dropped.Load() && !o.quiet {
		o.before()
		if err := sp.copyTo(o.dst[s]); err != nil && o.err == nil {
			o.err = err
		}
		return
	}
	if sp.file == nil {
		o.emitLocked(s, j.tag, sp.mem)
		sp.reset()
		return
	}
	// Tagged and large: through a buffer, one chunk at a time, whole
	// lines (a tag starts each).
	if _, err := sp.file.Seek(0, io.SeekStart); err != nil {
		o.err = errors.Join(o.err, err)
		sp.reset()
		return
	}
	buf := make([]byte, 64<<10)
	var carry []byte
	for {
		n, err := sp.file.Read(buf)
		chunk := append(carry, buf[:n]...)
		i := bytes.LastIndexByte(chunk, '\n')
		if i >= 0 {
			o.emitLocked(s, j.tag, chunk[:i+1])
			carry = append([]byte(nil), chunk[i+1:]...)
		} else {
			carry = chunk
		}
		if err != nil {
			break
		}
	}
	o.emitLocked(s, j.tag, carry)
	sp.reset()
}

// write takes output of stream s (0 stdout, 1 stderr) as it comes.
func (j *jobOut) write(s int, p []byte) {
	o := j.o
	o.mu.Lock()
	defer o.mu.Unlock()
	j.bytes += int64(len(p))
	if o.quiet || o.dropped.Load() {
		return
	}
	if !j.live {
		if err := j.sp[s].write(p); err != nil && o.err == nil {
			o.err = err
		}
		return
	}
	// Live: whole lines out now, the last partial line kept.
	i := bytes.LastIndexByte(p, '\n')
	if i < 0 {
		if err := j.sp[s].write(p); err != nil && o.err == nil {
			o.err = err
		}
		return
	}
	if j.sp[s].size > 0 {
		if err := j.sp[s].write(p[:i+1]); err != nil && o.err == nil {
			o.err = err
		}
		o.flushSpoolLocked(j, s)
	} else {
		o.emitLocked(s, j.tag, p[:i+1])
	}
	if i+1 < len(p) {
		if err := j.sp[s].write(p[i+1:]); err != nil && o.err == nil {
			o.err = err
		}
	}
}

// reset forgets what a command wrote so far (it is retried; GNU parallel
// prints only the last attempt's output). Lines already printed stay.
func (j *jobOut) reset() {
	j.o.mu.Lock()
	defer j.o.mu.Unlock()
	j.sp[0].reset()
	j.sp[1].reset()
	j.bytes = 0
}

// finish prints what is left of a command's output (its whole output
// under --group) once it has ended, and under --keep-order what the
// commands after it were waiting with.
func (j *jobOut) finish() {
	o := j.o
	o.mu.Lock()
	defer o.mu.Unlock()
	j.done = true
	if o.keep && j.seq != o.next {
		return // printed when its turn comes
	}
	o.flushSpoolLocked(j, 0)
	o.flushSpoolLocked(j, 1)
	if o.keep {
		delete(o.waiting, j.seq)
		o.next++
		o.advanceLocked()
	}
}

// advanceLocked prints, in order, the commands whose turn has come.
func (o *output) advanceLocked() {
	for {
		j := o.waiting[o.next]
		if j == nil {
			return
		}
		o.flushSpoolLocked(j, 0)
		o.flushSpoolLocked(j, 1)
		if !j.done {
			j.live = o.line // the new oldest: its lines go out as they come
			return
		}
		delete(o.waiting, o.next)
		o.next++
	}
}

// discard drops a command's output without printing it (a second
// interrupt) and lets keep-order go past it.
func (j *jobOut) discard() {
	j.o.mu.Lock()
	j.sp[0].reset()
	j.sp[1].reset()
	j.o.mu.Unlock()
	j.finish()
}

// close prints whatever still waits for its turn (under --keep-order,
// the commands after one that never ran), in order.
func (o *output) close() {
	o.mu.Lock()
	defer o.mu.Unlock()
	for len(o.waiting) > 0 {
		low := -1
		for seq := range o.waiting {
			if low < 0 || seq < low {
				low = seq
			}
		}
		j := o.waiting[low]
		o.flushSpoolLocked(j, 0)
		o.flushSpoolLocked(j, 1)
		delete(o.waiting, low)
	}
}
