package ipc

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// maxSunPath is the longest socket path Linux accepts (sun_path is 108
// bytes including the terminating NUL).
const maxSunPath = 107

// probeTimeout bounds the connect used to tell a live socket from a stale
// one. A unix-socket connect normally completes or fails at once.
const probeTimeout = 2 * time.Second

// ListenOptions configure [Listen]. The zero value gives a socket of mode
// 0600 that only the server's own user and root may use.
type ListenOptions struct {
	// Mode is the permission bits of the socket file; 0 means 0600. Bits
	// outside os.ModePerm are ignored. The mode is applied between bind and
	// listen (see Listen), so no client can ever connect while the file has
	// a laxer mode.
	Mode os.FileMode
	// Group, if > 0, is the gid the socket file is given (chown) and is
	// added to AllowGIDs, so that members of that group can use the socket
	// when Mode grants group access (e.g. 0660). -1 or 0 leaves the file's
	// group alone (a server running with gid 0 already owns it as group 0).
	Group int
	// AllowUIDs and AllowGIDs list the peers Accept lets through, matched
	// against the peer's SO_PEERCRED uid, its primary gid and its
	// supplementary groups (SO_PEERGROUPS), as they were when it connected.
	// The server's own effective uid and root are always allowed; with both
	// lists empty (and Group unset) no one else is.
	AllowUIDs []uint32
	AllowGIDs []uint32
	// Logger receives one warning per rejected peer; nil means
	// slog.Default().
	Logger *slog.Logger
}

// Listener is a unix-socket listener created by [Listen] that accepts only
// allowed peers and removes its socket file on Close if the file is still
// the one it created. Its methods are safe for concurrent use.
type Listener struct {
	ln       *net.UnixListener
	path     string
	dev, ino uint64
	self     uint32
	uids     []uint32
	gids     []uint32
	log      *slog.Logger
	rejected atomic.Uint64

	closeOnce sync.Once
	closeErr  error
}

// Listen creates a unix stream socket at path and listens on it, applying
// socket hygiene:
//
//   - The parent directory must be a directory, must not be writable by
//     group or others (the sticky bit does not make that acceptable: anyone
//     who can create entries there can squat the path before the server
//     starts or race the stale-socket cleanup), and must be owned by the
//     server's effective user or root. Otherwise: *ListenError wrapping
//     ErrUnsafeDir.
//   - If something exists at path: a non-socket (regular file, directory,
//     symlink, ...) is refused with ErrNotSocket; a socket on which a
//     connect succeeds is refused with ErrSocketInUse ("socket in use by a
//     live server"; a live socket is never unlinked); a socket whose connect
//     is refused (ECONNREFUSED) is stale and is unlinked.
//   - The socket is bound, then chmod'ed to opts.Mode (and chown'ed to
//     opts.Group), and only then does it listen: between bind and listen a
//     connect fails with ECONNREFUSED, so the mode is in force before any
//     client can connect. (The process umask is not touched: it is
//     process-wide and changing it would race with other goroutines.)
//   - The check-unlink-bind sequence holds an exclusive flock on the parent
//     directory, so two servers starting at once on the same path cannot
//     both decide the path is stale; one of them gets ErrSocketInUse.
//
// Listen blocks only for those checks (the flock waits for a concurrent
// Listen or Close on the same directory). The caller owns the returned
// Listener and must Close it. Hygiene refusals are *ListenError (errors.As),
// wrapping ErrUnsafeDir, ErrNotSocket or ErrSocketInUse (errors.Is); system
// failures are returned wrapped with the path. Abstract socket names
// (leading '@' or NUL) are not supported.
func Listen(path string, opts ListenOptions) (*Listener, error) {
	refuse := func(sentinel error, format string, args ...any) error {
		return &ListenError{Path: path, Reason: fmt.Sprintf(format, args...), Err: sentinel}
	}
	switch {
	case path == "":
		return nil, errors.New("ipc: listen: empty socket path")
	case path[0] == '@' || strings.IndexByte(path, 0) >= 0:
		return nil, fmt.Errorf("ipc: listen %q: abstract or NUL-containing socket names are not supported", path)
	case len(path) > maxSunPath:
		return nil, fmt.Errorf("ipc: listen %s: socket path is %d bytes long; Linux allows at most %d", path, len(path), maxSunPath)
	}
	mode := uint32(opts.Mode.Perm())
	if mode == 0 {
		mode = 0o600
	}
	self := uint32(os.Geteuid())

	// Open, check and lock the parent directory. Checking the opened fd
	// (not the name) means the directory we lock is the one we checked.
	dir := filepath.Dir(path)
	dfd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		if err == unix.ENOTDIR {
			return nil, refuse(ErrUnsafeDir, "parent %s is not a directory", dir)
		}
		return nil, &ListenError{Path: path, Reason: fmt.Sprintf("cannot open parent directory %s: %v", dir, err), Err: err}
	}
	defer unix.Close(dfd) // also releases the flock
	var dst unix.Stat_t
	if err := unix.Fstat(dfd, &dst); err != nil {
		return nil, fmt.Errorf("ipc: listen %s: stat %s: %w", path, dir, err)
	}
	if err := checkDir(dir, &dst, self); err != "" {
		return nil, refuse(ErrUnsafeDir, "%s", err)
	}
	if err := flock(dfd, unix.LOCK_EX); err != nil {
		return nil, fmt.Errorf("ipc: listen %s: lock %s: %w", path, dir, err)
	}

	// Deal with whatever is at path.
	var st unix.Stat_t
	switch err := unix.Lstat(path, &st); {
	case err == unix.ENOENT:
	case err != nil:
		return nil, fmt.Errorf("ipc: listen %s: lstat: %w", path, err)
	case st.Mode&unix.S_IFMT != unix.S_IFSOCK:
		return nil, refuse(ErrNotSocket, "%s exists and is a %s, not a unix socket; refusing to remove it", path, fileKind(st.Mode))
	default:
		switch live, err := probe(path); {
		case live:
			return nil, refuse(ErrSocketInUse, "socket in use by a live server (a connect to it succeeded); stop that server or choose another path")
		case err != nil:
			return nil, refuse(ErrSocketInUse, "cannot tell whether the existing socket is live (connect: %v); not removing it", err)
		}
		if err := unix.Unlink(path); err != nil && err != unix.ENOENT {
			return nil, fmt.Errorf("ipc: listen %s: remove stale socket: %w", path, err)
		}
	}

	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("ipc: listen %s: socket: %w", path, err)
	}
	bound := false
	fail := func(op string, err error) (*Listener, error) {
		unix.Close(fd)
		if bound {
			unix.Unlink(path)
		}
		return nil, fmt.Errorf("ipc: listen %s: %s: %w", path, op, err)
	}
	if err := unix.Bind(fd, &unix.SockaddrUnix{Name: path}); err != nil {
		return fail("bind", err)
	}
	bound = true
	if err := unix.Chmod(path, mode); err != nil {
		return fail("chmod", err)
	}
	if opts.Group > 0 {
		if err := unix.Lchown(path, -1, opts.Group); err != nil {
			return fail("chown", err)
		}
	}
	if err := unix.Lstat(path, &st); err != nil {
		return fail("lstat", err)
	}
	if err := unix.Listen(fd, unix.SOMAXCONN); err != nil {
		return fail("listen", err)
	}
	f := os.NewFile(uintptr(fd), path)
	nl, err := net.FileListener(f) // dups the fd
	f.Close()
	if err != nil {
		unix.Unlink(path)
		return nil, fmt.Errorf("ipc: listen %s: %w", path, err)
	}
	ul := nl.(*net.UnixListener)
	ul.SetUnlinkOnClose(false) // Close decides, by device and inode

	l := newListener(ul, path, opts)
	l.dev, l.ino = uint64(st.Dev), uint64(st.Ino)
	return l, nil
}

// newListener is a Listener on ul with opts' peer checks; the socket file
// is not its own until the caller sets dev and ino.
func newListener(ul *net.UnixListener, path string, opts ListenOptions) *Listener {
	l := &Listener{
		ln:   ul,
		path: path,
		self: uint32(os.Geteuid()),
		uids: slices.Clone(opts.AllowUIDs),
		gids: slices.Clone(opts.AllowGIDs),
		log:  opts.Logger,
	}
	if opts.Group > 0 {
		l.gids = append(l.gids, uint32(opts.Group))
	}
	if l.log == nil {
		l.log = slog.Default()
	}
	return l
}

// Adopt wraps a listening unix socket that someone else made and owns,
// typically systemd under socket activation: Accept applies opts' peer
// checks (AllowUIDs, AllowGIDs, Group) as for [Listen], but the socket
// file's mode, owner and directory are its maker's business (systemd's
// SocketMode, SocketUser, SocketGroup), and Close never removes it. opts'
// Mode is ignored.
func Adopt(ul *net.UnixListener, opts ListenOptions) *Listener {
	ul.SetUnlinkOnClose(false)
	path := ""
	if a, ok := ul.Addr().(*net.UnixAddr); ok {
		path = a.Name
	}
	return newListener(ul, path, opts) // dev and ino stay 0: Close removes no file
}

// checkDir returns why dir (whose stat is st) is unsafe, or "".
func checkDir(dir string, st *unix.Stat_t, self uint32) string {
	perm := st.Mode & 0o7777
	switch {
	case st.Mode&unix.S_IFMT != unix.S_IFDIR:
		return fmt.Sprintf("parent %s is not a directory", dir)
	case perm&0o022 != 0:
		who := "world"
		if perm&0o002 == 0 {
			who = "group"
		}
		sticky := ""
		if perm&unix.S_ISVTX != 0 {
			sticky = " (the sticky bit does not help: others could still create the socket path before the server does, or race the removal of a stale socket)"
		}
		return fmt.Sprintf("parent directory %s is %s-writable (mode %04o), so other users could replace or hijack the socket%s; use a directory writable only by the server's user, e.g. /run/cgpool with mode 0755", dir, who, perm, sticky)
	case st.Uid != self && st.Uid != 0:
		return fmt.Sprintf("parent directory %s is owned by uid %d, which is neither the server's uid %d nor root, and could replace the socket", dir, st.Uid, self)
	}
	return ""
}

func fileKind(m uint32) string {
	switch m & unix.S_IFMT {
	case unix.S_IFREG:
		return "regular file"
	case unix.S_IFDIR:
		return "directory"
	case unix.S_IFLNK:
		return "symlink"
	case unix.S_IFIFO:
		return "named pipe"
	case unix.S_IFCHR, unix.S_IFBLK:
		return "device"
	}
	return "non-socket file"
}

func flock(fd, how int) error {
	for {
		err := unix.Flock(fd, how)
		if err != unix.EINTR {
			return err
		}
	}
}

// probe connects to the socket at path. live reports a successful connect
// (or a full backlog, which also means someone listens); err is nil with
// live false when the socket is stale (ECONNREFUSED) or gone.
func probe(path string) (live bool, err error) {
	c, err := net.DialTimeout("unix", path, probeTimeout)
	if err == nil {
		c.Close()
		return true, nil
	}
	switch {
	case errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.ENOENT):
		return false, nil
	case errors.Is(err, syscall.EAGAIN):
		return true, nil
	}
	return false, err
}

// Accept blocks until an allowed peer connects and returns its connection,
// owned by the caller. Peers whose credentials are not allowed (see
// ListenOptions) are closed at once, counted (Rejected) and logged, and
// Accept goes on waiting. It returns the listener's error otherwise (after
// Close: an error wrapping net.ErrClosed); on a temporary error such as
// EMFILE the caller should back off before calling Accept again.
func (l *Listener) Accept() (*net.UnixConn, error) {
	for {
		c, err := l.ln.AcceptUnix()
		if err != nil {
			return nil, err
		}
		uid, gid, pid, err := PeerCred(c)
		if err == nil && l.allowed(c, uid, gid) {
			return c, nil
		}
		l.rejected.Add(1)
		if err != nil {
			l.log.Warn("ipc: rejected peer: cannot read its credentials", "path", l.path, "err", err)
		} else {
			l.log.Warn("ipc: rejected peer: uid/gid not allowed", "path", l.path, "uid", uid, "gid", gid, "pid", pid)
		}
		c.Close()
	}
}

func (l *Listener) allowed(c *net.UnixConn, uid, gid uint32) bool {
	if uid == l.self || uid == 0 || slices.Contains(l.uids, uid) {
		return true
	}
	if len(l.gids) == 0 {
		return false
	}
	if slices.Contains(l.gids, gid) {
		return true
	}
	groups, err := PeerGroups(c)
	if err != nil {
		return false
	}
	for _, g := range groups {
		if slices.Contains(l.gids, g) {
			return true
		}
	}
	return false
}

// Rejected returns how many connections Accept has closed because the peer
// was not allowed. It does not block.
func (l *Listener) Rejected() uint64 { return l.rejected.Load() }

// Addr returns the listener's address. It does not block.
func (l *Listener) Addr() net.Addr { return l.ln.Addr() }

// Adopted reports whether the listener came from Adopt (its socket file is
// someone else's, e.g. systemd's). It does not block.
func (l *Listener) Adopted() bool { return l.ino == 0 }

// Path returns the socket path given to Listen. It does not block.
func (l *Listener) Path() string { return l.path }

// Close stops listening (a blocked Accept returns an error wrapping
// net.ErrClosed) and removes the socket file if it is still the one Listen
// created (same device and inode): a file that someone else put at the
// path since is left alone. It takes the same directory lock as Listen.
// Idempotent: the first call returns the close or unlink error, later calls
// return nil. Connections already accepted are not affected.
func (l *Listener) Close() error {
	first := false
	l.closeOnce.Do(func() {
		first = true
		var err error
		if l.ino == 0 { // adopted: the file is not ours
			l.closeErr = l.ln.Close()
			return
		}
		if dfd, e := unix.Open(filepath.Dir(l.path), unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0); e == nil {
			_ = flock(dfd, unix.LOCK_EX)
			defer unix.Close(dfd)
		}
		var st unix.Stat_t
		if e := unix.Lstat(l.path, &st); e == nil && uint64(st.Dev) == l.dev && uint64(st.Ino) == l.ino {
			if e := unix.Unlink(l.path); e != nil && e != unix.ENOENT {
				err = fmt.Errorf("ipc: remove socket %s: %w", l.path, e)
			}
		}
		if e := l.ln.Close(); e != nil && err == nil {
			err = e
		}
		l.closeErr = err
	})
	if first {
		return l.closeErr
	}
	return nil
}

// PeerCred returns the credentials of the process at the other end of c as
// the kernel recorded them when the connection was made (SO_PEERCRED): its
// effective uid and gid and its pid (0 if the peer is in another pid
// namespace). It does not block. Errors come from the raw connection or the
// getsockopt call (e.g. ENOTCONN, or a wrapped net.ErrClosed if c is
// closed).
func PeerCred(c *net.UnixConn) (uid, gid uint32, pid int32, err error) {
	raw, err := c.SyscallConn()
	if err != nil {
		return 0, 0, 0, err
	}
	var cred *unix.Ucred
	var serr error
	if err := raw.Control(func(fd uintptr) {
		cred, serr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return 0, 0, 0, err
	}
	if serr != nil {
		return 0, 0, 0, os.NewSyscallError("getsockopt SO_PEERCRED", serr)
	}
	return cred.Uid, cred.Gid, cred.Pid, nil
}

// PeerGroups returns the supplementary groups of the process at the other
// end of c as they were when it connected (SO_PEERGROUPS, Linux 4.13+). It
// does not block.
func PeerGroups(c *net.UnixConn) ([]uint32, error) {
	raw, err := c.SyscallConn()
	if err != nil {
		return nil, err
	}
	var groups []uint32
	var serr error
	if err := raw.Control(func(fd uintptr) {
		n := 64
		for {
			buf := make([]uint32, n)
			size := uint32(4 * n)
			_, _, e := unix.Syscall6(unix.SYS_GETSOCKOPT, fd, unix.SOL_SOCKET, unix.SO_PEERGROUPS,
				uintptr(unsafe.Pointer(&buf[0])), uintptr(unsafe.Pointer(&size)), 0)
			if e == 0 {
				groups = buf[:size/4]
				return
			}
			if e == unix.ERANGE && int(size/4) > n {
				n = int(size / 4)
				continue
			}
			serr = e
			return
		}
	}); err != nil {
		return nil, err
	}
	return groups, serr
}
