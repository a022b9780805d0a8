package ipc

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

func quietLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }

// sockPath returns a socket path in a fresh private directory.
func sockPath(t *testing.T) string {
	t.Helper()
	return filepath.Join(t.TempDir(), "cgpool.sock")
}

func mustListen(t *testing.T, path string, opts ListenOptions) *Listener {
	t.Helper()
	if opts.Logger == nil {
		opts.Logger = quietLogger()
	}
	l, err := Listen(path, opts)
	if err != nil {
		t.Fatalf("Listen: %v", err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

// staleSocket leaves a socket file at path that nobody listens on.
func staleSocket(t *testing.T, path string) {
	t.Helper()
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	if err := unix.Bind(fd, &unix.SockaddrUnix{Name: path}); err != nil {
		t.Fatal(err)
	}
}

func wantListenError(t *testing.T, err error, sentinel error, text string) {
	t.Helper()
	var le *ListenError
	if !errors.As(err, &le) || !errors.Is(err, sentinel) {
		t.Fatalf("got %v (%T), want *ListenError wrapping %v", err, err, sentinel)
	}
	if !strings.Contains(err.Error(), text) {
		t.Fatalf("error %q does not mention %q", err, text)
	}
}

func dialOK(t *testing.T, path string) {
	t.Helper()
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatalf("dial %s: %v", path, err)
	}
	c.Close()
}

func TestListenModeAcceptClose(t *testing.T) {
	path := sockPath(t)
	l := mustListen(t, path, ListenOptions{})
	fi, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode()&os.ModeSocket == 0 || fi.Mode().Perm() != 0o600 {
		t.Fatalf("socket mode %v, want socket 0600", fi.Mode())
	}
	if l.Path() != path || l.Addr().String() != path {
		t.Fatalf("Path %q Addr %q", l.Path(), l.Addr())
	}

	client, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	conn, err := l.Accept()
	if err != nil {
		t.Fatalf("Accept: %v", err)
	}
	defer conn.Close()
	uid, _, pid, err := PeerCred(conn)
	if err != nil || uid != uint32(os.Geteuid()) || pid != int32(os.Getpid()) {
		t.Fatalf("PeerCred of accepted conn: uid %d pid %d err %v", uid, pid, err)
	}
	if l.Rejected() != 0 {
		t.Fatalf("Rejected = %d", l.Rejected())
	}

	if err := l.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if _, err := os.Lstat(path); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("socket file still there after Close: %v", err)
	}
	if err := l.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := l.Accept(); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Accept after Close: %v", err)
	}
	// The accepted connection survives the listener.
	if _, err := conn.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
}

func TestListenModeAndGroup(t *testing.T) {
	path := sockPath(t)
	opts := ListenOptions{Mode: 0o660}
	const gid = 54321
	if os.Geteuid() == 0 {
		opts.Group = gid
	}
	mustListen(t, path, opts)
	fi, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o660 {
		t.Fatalf("mode %v, want 0660", fi.Mode())
	}
	if opts.Group != 0 {
		if g := fi.Sys().(*syscall.Stat_t).Gid; g != gid {
			t.Fatalf("group %d, want %d", g, gid)
		}
	}
}

func TestListenRefusesUnsafeDir(t *testing.T) {
	for _, tc := range []struct {
		mode os.FileMode
		text string
	}{
		{0o777, "world-writable"},
		{0o777 | os.ModeSticky, "sticky bit does not help"},
		{0o770, "group-writable"},
		{0o730, "group-writable"},
		{0o703, "world-writable"},
	} {
		t.Run(tc.mode.String(), func(t *testing.T) {
			dir := t.TempDir()
			if err := os.Chmod(dir, tc.mode); err != nil {
				t.Fatal(err)
			}
			path := filepath.Join(dir, "s.sock")
			_, err := Listen(path, ListenOptions{Logger: quietLogger()})
			wantListenError(t, err, ErrUnsafeDir, tc.text)
			if _, err := os.Lstat(path); !errors.Is(err, os.ErrNotExist) {
				t.Fatal("Listen created a file despite refusing")
			}
		})
	}
	t.Run("not a directory", func(t *testing.T) {
		file := filepath.Join(t.TempDir(), "file")
		if err := os.WriteFile(file, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := Listen(filepath.Join(file, "s.sock"), ListenOptions{})
		wantListenError(t, err, ErrUnsafeDir, "not a directory")
	})
	t.Run("owned by another user", func(t *testing.T) {
		if os.Geteuid() != 0 {
			t.Skip("needs root to chown")
		}
		dir := t.TempDir()
		if err := os.Chown(dir, 54321, 54321); err != nil {
			t.Fatal(err)
		}
		_, err := Listen(filepath.Join(dir, "s.sock"), ListenOptions{})
		wantListenError(t, err, ErrUnsafeDir, "owned by uid 54321")
	})
	t.Run("missing", func(t *testing.T) {
		_, err := Listen(filepath.Join(t.TempDir(), "nope", "s.sock"), ListenOptions{})
		if !errors.Is(err, unix.ENOENT) {
			t.Fatalf("got %v", err)
		}
	})
}

func TestListenRefusesLiveServer(t *testing.T) {
	path := sockPath(t)
	l := mustListen(t, path, ListenOptions{})
	_, err := Listen(path, ListenOptions{Logger: quietLogger()})
	wantListenError(t, err, ErrSocketInUse, "socket in use by a live server")
	// The live socket is untouched.
	dialOK(t, path)
	// Its probe connection is in the first server's backlog; that is harmless.
	c, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
}

func TestListenReplacesStaleSocket(t *testing.T) {
	path := sockPath(t)
	staleSocket(t, path)
	if _, err := net.Dial("unix", path); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("stale socket: dial gave %v", err)
	}
	mustListen(t, path, ListenOptions{})
	dialOK(t, path)
}

func TestListenRefusesNonSocket(t *testing.T) {
	t.Run("regular file", func(t *testing.T) {
		path := sockPath(t)
		if err := os.WriteFile(path, []byte("precious"), 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := Listen(path, ListenOptions{})
		wantListenError(t, err, ErrNotSocket, "regular file")
		if b, _ := os.ReadFile(path); string(b) != "precious" {
			t.Fatal("file was touched")
		}
	})
	t.Run("symlink to socket", func(t *testing.T) {
		dir := t.TempDir()
		target := filepath.Join(dir, "real.sock")
		staleSocket(t, target)
		path := filepath.Join(dir, "link.sock")
		if err := os.Symlink(target, path); err != nil {
			t.Fatal(err)
		}
		_, err := Listen(path, ListenOptions{})
		wantListenError(t, err, ErrNotSocket, "symlink")
	})
	t.Run("directory", func(t *testing.T) {
		path := sockPath(t)
		if err := os.Mkdir(path, 0o700); err != nil {
			t.Fatal(err)
		}
		_, err := Listen(path, ListenOptions{})
		wantListenError(t, err, ErrNotSocket, "directory")
	})
}

func TestListenCloseKeepsReplacedSocket(t *testing.T) {
	path := sockPath(t)
	l := mustListen(t, path, ListenOptions{})
	// Someone removes our socket and puts another one at the path.
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	staleSocket(t, path)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Lstat(path)
	if err != nil || fi.Mode()&os.ModeSocket == 0 {
		t.Fatalf("the replacement socket was removed: %v", err)
	}
}

func TestListenBadPaths(t *testing.T) {
	long := filepath.Join(t.TempDir(), strings.Repeat("x", 120))
	for _, p := range []string{"", "@abstract", "a\x00b", long} {
		if l, err := Listen(p, ListenOptions{}); err == nil {
			l.Close()
			t.Errorf("Listen(%q) succeeded", p)
		}
	}
}

func TestListenConcurrentSamePath(t *testing.T) {
	// Two servers racing for one stale path: exactly one wins.
	path := sockPath(t)
	staleSocket(t, path)
	var wg sync.WaitGroup
	results := make([]error, 4)
	ls := make([]*Listener, 4)
	for i := range results {
		wg.Go(func() { ls[i], results[i] = Listen(path, ListenOptions{Logger: quietLogger()}) })
	}
	wg.Wait()
	won := 0
	for i, err := range results {
		if err == nil {
			won++
			defer ls[i].Close()
		} else if !errors.Is(err, ErrSocketInUse) {
			t.Errorf("loser %d: %v", i, err)
		}
	}
	if won != 1 {
		t.Fatalf("%d servers listen on %s", won, path)
	}
	dialOK(t, path)
}

func TestPeerCredSocketpair(t *testing.T) {
	a, b := socketpair(t)
	for _, c := range []*net.UnixConn{a, b} {
		uid, gid, pid, err := PeerCred(c)
		if err != nil {
			t.Fatal(err)
		}
		if uid != uint32(os.Geteuid()) || gid != uint32(os.Getegid()) || pid != int32(os.Getpid()) {
			t.Fatalf("PeerCred = %d %d %d, want %d %d %d", uid, gid, pid, os.Geteuid(), os.Getegid(), os.Getpid())
		}
	}
	a.Close()
	if _, _, _, err := PeerCred(a); err == nil {
		t.Fatal("PeerCred on a closed conn succeeded")
	}
}

// Peer filtering with a real foreign uid: the test binary re-executes
// itself, drops to uid/gid 65534 (and supplementary group 4242), connects,
// reports it, and waits for stdin to close. Needs root.

const helperEnv = "IPC_TEST_DIAL_AS_NOBODY"

func TestHelperDialAsNobody(t *testing.T) {
	path := os.Getenv(helperEnv)
	if path == "" {
		return // only a helper process (started by the peer-filter test) has work here
	}
	for _, drop := range []func() error{
		func() error { return syscall.Setgroups([]int{4242}) },
		func() error { return syscall.Setgid(65534) },
		func() error { return syscall.Setuid(65534) },
	} {
		if err := drop(); err != nil {
			os.Stdout.WriteString("cannot drop privileges: " + err.Error() + "\n")
			os.Exit(10)
		}
	}
	c, err := net.Dial("unix", path)
	if err != nil {
		os.Stdout.WriteString("dial error: " + err.Error() + "\n")
		os.Exit(13)
	}
	os.Stdout.WriteString("connected\n")
	io.Copy(io.Discard, os.Stdin)
	c.Close()
	os.Exit(0)
}

// dialAsNobody starts the helper and returns once its connect has completed.
func dialAsNobody(t *testing.T, path string) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperDialAsNobody$")
	cmd.Env = append(os.Environ(), helperEnv+"="+path)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stdin.Close(); cmd.Wait() })
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if strings.HasPrefix(line, "cannot drop privileges") {
		t.Skipf("helper: %s", line)
	}
	if line != "connected\n" {
		t.Fatalf("helper: %q %v", line, err)
	}
}

// openDirs makes the directories above path traversable for the helper.
func openDirs(t *testing.T, path string) {
	for d := filepath.Dir(path); d != os.TempDir() && d != "/" && d != "."; d = filepath.Dir(d) {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
}

func TestAcceptFiltersPeers(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to run a peer under another uid")
	}
	cases := []struct {
		name   string
		opts   ListenOptions
		reject bool
	}{
		{"default rejects others", ListenOptions{}, true},
		{"other uid listed", ListenOptions{AllowUIDs: []uint32{1000, 65534}}, false},
		{"primary gid listed", ListenOptions{AllowGIDs: []uint32{65534}}, false},
		{"supplementary gid listed", ListenOptions{AllowGIDs: []uint32{4242}}, false},
		{"socket group is allowed", ListenOptions{Group: 4242}, false},
		{"unrelated ids", ListenOptions{AllowUIDs: []uint32{1000}, AllowGIDs: []uint32{1000}}, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			path := sockPath(t)
			openDirs(t, path)
			var logBuf bytes.Buffer
			var mu sync.Mutex
			tc.opts.Mode = 0o666
			tc.opts.Logger = slog.New(slog.NewTextHandler(&lockedWriter{w: &logBuf, mu: &mu}, nil))
			l := mustListen(t, path, tc.opts)

			dialAsNobody(t, path) // queued first in the backlog
			self, err := net.Dial("unix", path)
			if err != nil {
				t.Fatal(err)
			}
			defer self.Close()

			c, err := l.Accept()
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			uid, _, _, _ := PeerCred(c)
			if tc.reject {
				if uid != 0 || l.Rejected() != 1 {
					t.Fatalf("accepted uid %d, rejected %d; want our own conn after 1 rejection", uid, l.Rejected())
				}
				mu.Lock()
				logged := logBuf.String()
				mu.Unlock()
				if !strings.Contains(logged, "uid=65534") || !strings.Contains(logged, "rejected peer") {
					t.Fatalf("log: %q", logged)
				}
			} else if uid != 65534 || l.Rejected() != 0 {
				t.Fatalf("accepted uid %d, rejected %d; want the helper (65534)", uid, l.Rejected())
			}
		})
	}
}

type lockedWriter struct {
	w  io.Writer
	mu *sync.Mutex
}

func (w *lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.w.Write(p)
}

func TestAllowedPolicyUnit(t *testing.T) {
	l := &Listener{self: 1000, uids: []uint32{2000}, gids: []uint32{300}}
	a, _ := socketpair(t) // only used for SO_PEERGROUPS, which yields our own groups
	ours, err := os.Getgroups()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		uid, gid uint32
		want     bool
	}{
		{1000, 1, true}, {0, 1, true}, {2000, 1, true}, {3000, 300, true}, {3000, 301, slices.Contains(ours, 300)},
	} {
		if got := l.allowed(a, tc.uid, tc.gid); got != tc.want {
			t.Errorf("allowed(%d, %d) = %v, want %v", tc.uid, tc.gid, got, tc.want)
		}
	}
	l.gids = nil
	if l.allowed(a, 3000, 300) {
		t.Error("no gid list: foreign uid allowed")
	}
}
