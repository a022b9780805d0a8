package oomwatch

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"

	"golang.org/x/sys/unix"
)

// Watcher multiplexes change notifications of many groups' memory.events
// and cgroup.events over one inotify instance.
type Watcher struct {
	f *os.File

	mu   sync.Mutex
	byWd map[int32]*Watch
}

// Watch is one group's registration. Its channel ticks (coalesced: at most
// one pending tick) when memory.events or cgroup.events of the group
// changed.
type Watch struct {
	w   *Watcher
	dir string
	wds []int32
	c   chan struct{}
}

// New creates the inotify instance. It starts nothing: the owner calls Run.
func New() (*Watcher, error) {
	fd, err := unix.InotifyInit1(unix.IN_NONBLOCK | unix.IN_CLOEXEC)
	if err != nil {
		return nil, os.NewSyscallError("inotify_init1", err)
	}
	return &Watcher{f: os.NewFile(uintptr(fd), "inotify"), byWd: map[int32]*Watch{}}, nil
}

// Add watches dir/cgroup.events and, when the memory controller is there,
// dir/memory.events. The caller owns the Watch and must Close it before
// removing the group (or let the kernel drop it with the group).
func (w *Watcher) Add(dir string) (*Watch, error) {
	wt := &Watch{w: w, dir: dir, c: make(chan struct{}, 1)}
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, name := range []string{"cgroup.events", "memory.events"} {
		p := filepath.Join(dir, name)
		wd, err := unix.InotifyAddWatch(int(w.f.Fd()), p, unix.IN_MODIFY)
		if errors.Is(err, unix.ENOENT) && name == "memory.events" {
			continue
		}
		if err != nil {
			for _, old := range wt.wds {
				_, _ = unix.InotifyRmWatch(int(w.f.Fd()), uint32(old))
				delete(w.byWd, old)
			}
			return nil, &os.PathError{Op: "inotify_add_watch", Path: p, Err: err}
		}
		wt.wds = append(wt.wds, int32(wd))
		w.byWd[int32(wd)] = wt
	}
	return wt, nil
}

// C returns the channel that ticks on a change. It is never closed.
func (wt *Watch) C() <-chan struct{} { return wt.c }

// Dir returns the watched group's directory.
func (wt *Watch) Dir() string { return wt.dir }

// Close removes the watch. It is idempotent; a group already removed is
// not an error.
func (wt *Watch) Close() error {
	w := wt.w
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, wd := range wt.wds {
		if w.byWd[wd] == wt {
			delete(w.byWd, wd)
			_, _ = unix.InotifyRmWatch(int(w.f.Fd()), uint32(wd)) // EINVAL once the group is gone
		}
	}
	wt.wds = nil
	return nil
}

// Len returns how many watch descriptors are registered (for leak checks).
func (w *Watcher) Len() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.byWd)
}

// Run reads notifications and ticks the matching Watch channels until ctx
// ends; then it closes the inotify fd and returns ctx.Err(). It blocks; it
// must be called once.
func (w *Watcher) Run(ctx context.Context) error {
	stop := context.AfterFunc(ctx, func() { w.f.Close() })
	defer stop()
	buf := make([]byte, 64*(unix.SizeofInotifyEvent+unix.NAME_MAX+1))
	for {
		n, err := w.f.Read(buf)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if errors.Is(err, fs.ErrClosed) {
				return err
			}
			return fmt.Errorf("read inotify: %w", err)
		}
		w.dispatch(buf[:n])
	}
}

// dispatch handles one read's worth of events. A bare event is
// unix.SizeofInotifyEvent (16) bytes, not unsafe.Sizeof(InotifyEvent{}).
func (w *Watcher) dispatch(b []byte) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for len(b) >= unix.SizeofInotifyEvent {
		wd := int32(binary.NativeEndian.Uint32(b[0:4]))
		mask := binary.NativeEndian.Uint32(b[4:8])
		nameLen := binary.NativeEndian.Uint32(b[12:16])
		b = b[min(len(b), unix.SizeofInotifyEvent+int(nameLen)):]
		wt := w.byWd[wd]
		if wt == nil {
			continue
		}
		if mask&unix.IN_IGNORED != 0 {
			delete(w.byWd, wd) // the group was removed; the kernel dropped the watch
		}
		select {
		case wt.c <- struct{}{}:
		default: // a tick is already pending: readers re-read the files anyway
		}
	}
}
