package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"strings"
)

// Input sources of cgpool run, as GNU parallel has them: standard input,
// -a FILE (repeatable), ::: VALUES and :::: FILES after COMMAND. Several
// sources give every combination, the first source varying slowest
// (parallel(1), ":::"). The first source is read as it arrives, so that
// commands start while the input is still being written (as xargs does);
// the others are read whole first.

// srcSpec names one input source.
type srcSpec struct {
	file   string   // a file, "-" for standard input
	values []string // a ::: list
	list   bool
}

func (s srcSpec) String() string {
	switch {
	case s.list:
		return ":::"
	case s.file == "-":
		return "standard input"
	}
	return s.file
}

// splitArgs separates COMMAND from the ::: and :::: sources after it.
func splitArgs(args []string) (cmd []string, srcs []srcSpec, err error) {
	i := 0
	for i < len(args) && args[i] != ":::" && args[i] != "::::" {
		i++
	}
	cmd = args[:i]
	for i < len(args) {
		sep := args[i]
		j := i + 1
		for j < len(args) && args[j] != ":::" && args[j] != "::::" {
			j++
		}
		vals := args[i+1 : j]
		if sep == ":::" {
			if len(vals) == 0 {
				return nil, nil, errors.New("::: is followed by no values")
			}
			srcs = append(srcs, srcSpec{values: vals, list: true})
		} else {
			if len(vals) == 0 {
				return nil, nil, errors.New(":::: is followed by no file")
			}
			for _, f := range vals {
				srcs = append(srcs, srcSpec{file: f})
			}
		}
		i = j
	}
	return cmd, srcs, nil
}

// inputOptions say how values are read and split.
type inputOptions struct {
	colsep    *regexp.Regexp // --colsep: split each value into columns
	skipEmpty bool           // -r: skip values that are only blanks
}

// maxLine bounds one input line (a longer one is an error, not a cut).
const maxLine = 1 << 20

// lineReader reads the values of one source.
type lineReader struct {
	name string
	sc   *bufio.Scanner
	c    io.Closer
	vals []string // a ::: list
	n    int
}

// openSources opens every source (a file that cannot be opened is a usage
// error, found before anything runs).
func openSources(srcs []srcSpec, stdin io.Reader) ([]*lineReader, error) {
	var readers []*lineReader
	for _, s := range srcs {
		lr, err := openSource(s, stdin)
		if err != nil {
			for _, r := range readers {
				r.close()
			}
			return nil, usageErr(err)
		}
		readers = append(readers, lr)
	}
	return readers, nil
}

func openSource(s srcSpec, stdin io.Reader) (*lineReader, error) {
	if s.list {
		return &lineReader{name: s.String(), vals: s.values}, nil
	}
	lr := &lineReader{name: s.String()}
	r := stdin
	if s.file != "-" {
		f, err := os.Open(s.file)
		if err != nil {
			return nil, err
		}
		r, lr.c = f, f
	}
	lr.sc = bufio.NewScanner(r)
	lr.sc.Buffer(make([]byte, 0, 64<<10), maxLine)
	lr.sc.Split(scanLines)
	return lr, nil
}

// scanLines is bufio.ScanLines without the removal of a \r (GNU parallel
// keeps it too).
func scanLines(data []byte, atEOF bool) (int, []byte, error) {
	if i := bytes.IndexByte(data, '\n'); i >= 0 {
		return i + 1, data[:i], nil
	}
	if atEOF && len(data) > 0 {
		return len(data), data, nil
	}
	return 0, nil, nil
}

// next returns the next value; ok false at the end.
func (lr *lineReader) next() (string, bool, error) {
	if lr.sc == nil {
		if lr.n >= len(lr.vals) {
			return "", false, nil
		}
		lr.n++
		return lr.vals[lr.n-1], true, nil
	}
	if lr.sc.Scan() {
		lr.n++
		return lr.sc.Text(), true, nil
	}
	err := lr.sc.Err()
	if errors.Is(err, bufio.ErrTooLong) {
		err = fmt.Errorf("line %d is longer than %d bytes", lr.n+1, maxLine)
	}
	if err != nil {
		return "", false, fmt.Errorf("read %s: %w", lr.name, err)
	}
	return "", false, nil
}

func (lr *lineReader) close() {
	if lr.c != nil {
		lr.c.Close()
	}
}

// columns splits one value as --colsep says.
func (o inputOptions) columns(v string) []string {
	if o.colsep == nil {
		return []string{v}
	}
	cols := o.colsep.Split(v, -1)
	for i, c := range cols {
		cols[i] = strings.Trim(c, " \t") // --colsep implies --trim rl
	}
	return cols
}

func blank(v string) bool { return strings.Trim(v, " \t\r") == "" }

// produce reads the sources and sends each job's arguments, in order,
// until the input ends or ctx ends; the caller closes out after it. The first
// source streams; the others are read whole before the first job.
func produce(ctx context.Context, readers []*lineReader, o inputOptions, out chan<- input) error {
	for _, lr := range readers {
		defer lr.close()
	}
	srcs := readers
	// The other sources, whole: every combination needs them all.
	rest := make([][][]string, len(srcs)-1)
	for i, lr := range readers[1:] {
		for {
			v, ok, err := lr.next()
			if err != nil {
				return err
			}
			if !ok {
				break
			}
			if o.skipEmpty && blank(v) {
				continue
			}
			rest[i] = append(rest[i], o.columns(v))
		}
		if len(rest[i]) == 0 {
			return nil // an empty source: no combination
		}
	}
	first := readers[0]
	idx := make([]int, len(rest))
	for {
		v, ok, err := first.next()
		if err != nil || !ok {
			return err
		}
		if o.skipEmpty && blank(v) {
			continue
		}
		head := o.columns(v)
		clear(idx)
		for {
			args := append([]string(nil), head...)
			for i, r := range rest {
				args = append(args, r[idx[i]]...)
			}
			select {
			case out <- input{args: args}:
			case <-ctx.Done():
				return nil
			}
			// The last source varies fastest.
			k := len(idx) - 1
			for k >= 0 {
				idx[k]++
				if idx[k] < len(rest[k]) {
					break
				}
				idx[k] = 0
				k--
			}
			if k < 0 {
				break
			}
		}
	}
}

// produceBlocks reads standard input for --pipe and sends it in blocks of
// about size bytes, each cut after its last newline (a block grows past
// size to the next newline when a line is longer), as GNU parallel's
// --pipe does, until the input ends or ctx ends.
func produceBlocks(ctx context.Context, r io.Reader, size int64, out chan<- input) error {
	var carry []byte
	buf := make([]byte, 64<<10)
	eof := false
	for !eof || len(carry) > 0 {
		for !eof && int64(len(carry)) < size {
			n, err := r.Read(buf[:min(int64(len(buf)), size-int64(len(carry)))])
			carry = append(carry, buf[:n]...)
			if errors.Is(err, io.EOF) {
				eof = true
			} else if err != nil {
				return fmt.Errorf("read standard input: %w", err)
			}
		}
		cut := len(carry)
		if !eof {
			if i := bytes.LastIndexByte(carry, '\n'); i >= 0 {
				cut = i + 1
			} else {
				// One line longer than the block: read on to its end.
				for !eof && bytes.IndexByte(carry, '\n') < 0 {
					n, err := r.Read(buf)
					carry = append(carry, buf[:n]...)
					if errors.Is(err, io.EOF) {
						eof = true
					} else if err != nil {
						return fmt.Errorf("read standard input: %w", err)
					}
				}
				cut = len(carry)
				if i := bytes.IndexByte(carry, '\n'); i >= 0 {
					cut = i + 1
				}
			}
		}
		block := carry[:cut:cut]
		carry = append([]byte(nil), carry[cut:]...)
		if len(block) == 0 {
			continue
		}
		select {
		case out <- input{data: block}:
		case <-ctx.Done():
			return nil
		}
	}
	return nil
}
