package pool_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cgpool/cgpool/internal/kerneltest"
	"github.com/cgpool/cgpool/ipc"
	"github.com/cgpool/cgpool/pool"
)

// The tests of SECURITY.md's rules. Each fails when its rule is removed.

const nobody = 65534

// clientHelper is the test binary as a client of sock (CGPOOL_TEST_CLIENT),
// run by asClient as another user: it sends the requests (JSON headers, one
// a line, in CGPOOL_TEST_REQS), reads until each has its final message or
// reply, and prints every header it got as a JSON line.
func clientHelper(sock, reqs string) int {
	nc, err := net.Dial("unix", sock)
	if err != nil {
		fmt.Fprintln(os.Stderr, "dial:", err)
		return 1
	}
	c := ipc.NewConn(nc)
	if _, err := ipc.ClientHello(c, "test-peer"); err != nil {
		fmt.Fprintln(os.Stderr, "hello:", err)
		return 1
	}
	open := map[uint64]bool{}
	for _, line := range strings.Split(strings.TrimSpace(reqs), "\n") {
		var h ipc.Header
		if err := json.Unmarshal([]byte(line), &h); err != nil {
			fmt.Fprintln(os.Stderr, "request:", err)
			return 1
		}
		open[h.ID] = true
		if err := c.Write(&h, nil); err != nil {
			fmt.Fprintln(os.Stderr, "write:", err)
			return 1
		}
	}
	out := json.NewEncoder(os.Stdout)
	for len(open) > 0 {
		h, payload, err := c.Read()
		if err != nil {
			fmt.Fprintln(os.Stderr, "read:", err)
			return 1
		}
		out.Encode(reply{h, string(payload)})
		switch h.Type {
		case ipc.TypeAccepted, ipc.TypeRunning:
		default:
			delete(open, h.ID)
		}
	}
	return 0
}

// reply is one frame a clientHelper got.
type reply struct {
	H ipc.Header
	P string
}

// stdout is an exec result's stdout.
func (r reply) stdout() string { return r.P[:min(int(r.H.StdoutLen), len(r.P))] }

// asClient runs clientHelper as uid:gid (no supplementary groups) against
// sock and returns the frames it got, by id: the last one for each.
func asClient(t *testing.T, sock string, uid, gid uint32, reqs ...ipc.Header) map[uint64]reply {
	t.Helper()
	var lines []string
	for _, h := range reqs {
		b, _ := json.Marshal(h)
		lines = append(lines, string(b))
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, kerneltest.PublicExecutable(t))
	cmd.Env = append(os.Environ(), "CGPOOL_TEST_CLIENT="+sock, "CGPOOL_TEST_REQS="+strings.Join(lines, "\n"))
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: gid, Groups: []uint32{}}}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	outp, err := cmd.Output()
	if err != nil {
		t.Fatalf("client as %d:%d: %v: %s", uid, gid, err, stderr.String())
	}
	got := map[uint64]reply{}
	sc := bufio.NewScanner(strings.NewReader(string(outp)))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var r reply
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatal(err)
		}
		got[r.H.ID] = r
	}
	return got
}

// startPublicServer runs a supervisor with the given pools behind a socket
// that uid nobody may use, as a root daemon with allow_uids = [65534] would.
func startPublicServer(t *testing.T, o pool.ServerOptions, cfgs ...pool.Config) (string, *pool.Supervisor) {
	t.Helper()
	if os.Geteuid() != 0 {
		kerneltest.Skipf(t, "the peer-credential tests need root, to be a root daemon and to run a client as uid %d", nobody)
	}
	s, err := pool.NewSupervisor(kerneltest.NewRoot(t), cfgs, nil)
	if err != nil {
		t.Fatal(err)
	}
	dir, err := os.MkdirTemp("", "cgpool-pub")
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(dir, 0o711)
	sock := filepath.Join(dir, "s.sock")
	ln, err := ipc.Listen(sock, ipc.ListenOptions{Mode: 0o666, AllowUIDs: []uint32{nobody}})
	if err != nil {
		t.Fatal(err)
	}
	srv := pool.NewServer(s, ln, o)
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ctx) }()
	t.Cleanup(func() {
		sctx, scancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer scancel()
		if err := s.Shutdown(sctx, pool.ShutdownOptions{Wait: true, CancelFutures: true}); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		cancel()
		<-served
		os.RemoveAll(dir)
	})
	return sock, s
}

func execConfig(mod func(*pool.Config)) pool.Config {
	c := pool.Config{Name: "x", Kind: pool.KindExec, MaxWorkers: 2}
	if mod != nil {
		mod(&c)
	}
	return c
}

// idsArgv prints the identity the task runs with (the test binary's "ids"
// helper, which every user may run).
func idsArgv(t *testing.T) []string { return []string{kerneltest.PublicExecutable(t)} }

var idsEnv = map[string]string{kerneltest.HelperEnv: "ids", "CGPOOL_TEST_WORKER": ""}

func wantIDs(id pool.Identity) string {
	groups := slices.Clone(id.Groups)
	slices.Sort(groups)
	if groups == nil {
		groups = []uint32{}
	}
	return fmt.Sprintf("uid=%d gid=%d groups=%v", id.UID, id.GID, groups)
}

// TestExecRunsAsPeer: a root daemon runs an exec task of a peer as that
// peer: its uid, its account's primary gid and groups, never root's (on
// the old main it ran as uid 0).
func TestExecRunsAsPeer(t *testing.T) {
	sock, _ := startPublicServer(t, pool.ServerOptions{}, execConfig(nil))
	got := asClient(t, sock, nobody, nobody, ipc.Header{Type: ipc.TypeSubmit, ID: 1, Pool: "x", Argv: idsArgv(t), Env: idsEnv})
	r := got[1]
	want := wantIDs(pool.LookupIdentity(nobody, nobody))
	if r.H.Type != ipc.TypeResult {
		t.Fatalf("peer's task: %+v", r)
	}
	if out := strings.TrimSpace(r.stdout()); out != want {
		t.Errorf("a peer's task ran as %q, want %q", out, want)
	}
}

// TestRootPeerNeedsAllowRoot: a root peer's exec task is refused unless the
// pool says allow_root; with it, the task runs as root with root's own
// groups.
func TestRootPeerNeedsAllowRoot(t *testing.T) {
	if os.Geteuid() != 0 {
		kerneltest.Skipf(t, "needs root")
	}
	root := pool.LookupIdentity(0, 0)
	_, p := newPoolOn(t, kerneltest.NewRoot(t), func(c *pool.Config) { c.Kind, c.Command, c.AllowRoot = pool.KindExec, nil, false })
	_, err := p.Submit(context.Background(), pool.Spec{Argv: idsArgv(t), Env: idsEnv, Peer: &root}, nil)
	var re *pool.RejectError
	if !errors.As(err, &re) || !errors.Is(err, pool.ErrForbidden) || re.Reason != ipc.RejectForbidden {
		t.Fatalf("a root peer's task without allow_root: %v, want a forbidden refusal", err)
	}
	_, p2 := newPoolOn(t, kerneltest.NewRoot(t), func(c *pool.Config) { c.Kind, c.Command, c.AllowRoot = pool.KindExec, nil, true })
	o := submit(t, p2, pool.Spec{Argv: idsArgv(t), Env: idsEnv, Peer: &root}).wait(t, 30*time.Second)
	if out := strings.TrimSpace(string(o.Stdout)); o.Kind != pool.Result || out != wantIDs(root) {
		t.Errorf("with allow_root: %+v (%q), want %q", o, out, wantIDs(root))
	}
}

// TestFixedUserGroups: a pool with a fixed user runs its commands and
// workers with that user's groups, never the daemon's (on the old main a
// uid/gid pool kept the daemon's supplementary groups).
func TestFixedUserGroups(t *testing.T) {
	if os.Geteuid() != 0 {
		kerneltest.Skipf(t, "needs root")
	}
	// The daemon (this process) gets supplementary groups the task must
	// not inherit.
	restore := withGroups(t, []int{0, 4, 6})
	defer restore()
	uid, gid := uint32(nobody), uint32(nobody)
	want := pool.LookupIdentity(nobody, nobody)
	want.GID = gid
	t.Run("exec", func(t *testing.T) {
		_, p := newPoolOn(t, kerneltest.NewRoot(t), func(c *pool.Config) { c.Kind, c.Command, c.UID, c.GID = pool.KindExec, nil, &uid, &gid })
		o := submit(t, p, pool.Spec{Argv: idsArgv(t), Env: idsEnv}).wait(t, 30*time.Second)
		if out := strings.TrimSpace(string(o.Stdout)); out != wantIDs(want) {
			t.Errorf("a fixed-user command ran as %q, want %q", out, wantIDs(want))
		}
	})
	t.Run("worker", func(t *testing.T) {
		_, p := newPoolOn(t, kerneltest.NewRoot(t), func(c *pool.Config) {
			c.Command, c.UID, c.GID = []string{kerneltest.PublicExecutable(t)}, &uid, &gid
		})
		o := run(t, p, "groups")
		if got := string(o.Payload); o.Kind != pool.Result || got != wantIDs(want) {
			t.Errorf("a fixed-user worker runs as %q (%+v), want %q", got, o, wantIDs(want))
		}
	})
}

// withGroups sets this process's supplementary groups (all threads) and
// returns the function that puts them back.
func withGroups(t *testing.T, groups []int) func() {
	t.Helper()
	old, err := syscall.Getgroups()
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Setgroups(groups); err != nil {
		t.Fatal(err)
	}
	return func() { syscall.Setgroups(old) }
}

// TestWorkerPoolOfRootNeedsUser: a root supervisor refuses a worker pool
// with neither a user nor allow_root.
func TestWorkerPoolOfRootNeedsUser(t *testing.T) {
	if os.Geteuid() != 0 {
		kerneltest.Skipf(t, "needs root")
	}
	_, err := pool.NewSupervisor(kerneltest.NewRoot(t), []pool.Config{testConfig(func(c *pool.Config) { c.AllowRoot = false })}, nil)
	if err == nil || !strings.Contains(err.Error(), "allow_root") {
		t.Fatalf("a root worker pool without user or allow_root: %v, want a refusal naming allow_root", err)
	}
}

// TestCeilings: a request above one of the pool's ceilings is refused with
// reason over_limit (too_large for a payload), never clamped; a task that
// asks for no timeout gets the default, or the ceiling.
func TestCeilings(t *testing.T) {
	uid := pool.Identity{UID: 1234, GID: 1234}
	_, wp := newPool(t, func(c *pool.Config) {
		c.DefaultTimeout = 5 * time.Second // and so max_timeout 5s
		c.MaxEnvBytes, c.MaxPayloadBytes, c.MaxTasksPerClient = 64, 1024, 2
	})
	_, ep := newPoolOn(t, kerneltest.NewRoot(t), func(c *pool.Config) {
		c.Kind, c.Command, c.MaxArgvBytes, c.AllowRoot = pool.KindExec, nil, 32, true
	})
	cases := []struct {
		name   string
		p      *pool.Pool
		spec   pool.Spec
		reason string
	}{
		{"timeout above the default (the ceiling)", wp, pool.Spec{Payload: []byte("echo:x"), Timeout: time.Hour}, ipc.RejectOverLimit},
		{"env too large", wp, pool.Spec{Payload: []byte("echo:x"), Env: map[string]string{"A": strings.Repeat("x", 100)}}, ipc.RejectOverLimit},
		{"payload too large", wp, pool.Spec{Payload: make([]byte, 2000)}, ipc.RejectTooLarge},
		{"argv too large", ep, pool.Spec{Argv: []string{"/bin/echo", strings.Repeat("y", 64)}}, ipc.RejectOverLimit},
		{"exec payload", ep, pool.Spec{Argv: []string{"/bin/true"}, Payload: []byte("x")}, ipc.RejectInvalid},
	}
	for _, tc := range cases {
		_, err := tc.p.Submit(context.Background(), tc.spec, nil)
		var re *pool.RejectError
		if !errors.As(err, &re) || re.Reason != tc.reason {
			t.Errorf("%s: Submit = %v, want a refusal of reason %s", tc.name, err, tc.reason)
		}
	}
	// Tasks in flight per peer: the third of one uid is refused, another
	// uid's is not.
	gate := filepath.Join(t.TempDir(), "gate")
	if err := syscall.Mkfifo(gate, 0o600); err != nil {
		t.Fatal(err)
	}
	a := submit(t, wp, pool.Spec{Payload: []byte("gate:" + gate), Peer: &uid})
	b := submit(t, wp, pool.Spec{Payload: []byte("echo:b"), Peer: &uid})
	_, err := wp.Submit(context.Background(), pool.Spec{Payload: []byte("echo:c"), Peer: &uid}, nil)
	if !errors.Is(err, pool.ErrOverLimit) {
		t.Errorf("a third task in flight of one uid: %v, want over_limit", err)
	}
	other := pool.Identity{UID: 999, GID: 999}
	c := submit(t, wp, pool.Spec{Payload: []byte("echo:c"), Peer: &other})
	f, _ := os.OpenFile(gate, os.O_WRONLY, 0)
	f.Write([]byte{1})
	f.Close()
	for _, fu := range []*future{a, b, c} {
		if o := fu.wait(t, 30*time.Second); o.Kind != pool.Result {
			t.Errorf("a task within the ceilings: %+v", o)
		}
	}
	// Once they are done, the uid may submit again.
	if o := submit(t, wp, pool.Spec{Payload: []byte("echo:d"), Peer: &uid}).wait(t, 30*time.Second); o.Kind != pool.Result {
		t.Errorf("after its tasks ended: %+v", o)
	}
}

// TestTimeoutCeilingWithoutAsk: with max_timeout and no default, a task
// that asks for no timeout still ends at the ceiling.
func TestTimeoutCeilingWithoutAsk(t *testing.T) {
	_, p := newPool(t, func(c *pool.Config) { c.MaxTimeout = 300 * time.Millisecond })
	start := time.Now()
	o := run(t, p, "sleep:30000")
	if o.Kind != pool.TimedOut || o.Timeout != 300*time.Millisecond {
		t.Errorf("a task that asked for no timeout under max_timeout 300ms: %+v after %v", o, time.Since(start))
	}
}

// TestSetEnvDenied: the pool environment refuses the loader's variables
// unless allow_env names them.
func TestSetEnvDenied(t *testing.T) {
	_, p := newPool(t, nil)
	for _, name := range []string{"LD_PRELOAD", "LD_LIBRARY_PATH", "LD_AUDIT", "GCONV_PATH"} {
		if err := p.SetEnv(map[string]string{"OK": "1", name: "/tmp/x"}, false); err == nil || !strings.Contains(err.Error(), name) {
			t.Errorf("SetEnv(%s) = %v, want a refusal naming it", name, err)
		}
	}
	if env := p.Env(); env["OK"] != "" {
		t.Errorf("a refused SetEnv changed the environment: %v", env)
	}
	_, p2 := newPool(t, func(c *pool.Config) { c.AllowEnv = []string{"LD_LIBRARY_PATH"} })
	if err := p2.SetEnv(map[string]string{"LD_LIBRARY_PATH": "/opt/lib"}, false); err != nil {
		t.Errorf("SetEnv of a name allow_env lists: %v", err)
	}
}

// TestAdminOnly: a peer that is not an admin may not change the pool
// environment, recycle or shut down, and sees no details of other peers'
// tasks; an admin (root) may.
func TestAdminOnly(t *testing.T) {
	sock, sup := startPublicServer(t, pool.ServerOptions{}, execConfig(func(c *pool.Config) { c.MaxWorkers = 1 }))
	p, _ := sup.Pool("x")
	// A task of root's runs, and nobody looks at the pool.
	root := pool.LookupIdentity(0, 0)
	gate := filepath.Join(t.TempDir(), "gate")
	if err := syscall.Mkfifo(gate, 0o600); err != nil {
		t.Fatal(err)
	}
	f := newFuture()
	if _, err := p.Submit(context.Background(), pool.Spec{Argv: []string{"/bin/sh", "-c", "read x < " + gate}, Peer: &root}, f.notify); !errors.Is(err, pool.ErrForbidden) {
		// root peers need allow_root here: the task below runs as the pool's
		// in-process caller instead.
		t.Fatalf("root peer: %v", err)
	}
	if _, err := p.Submit(context.Background(), pool.Spec{Argv: []string{"/bin/sh", "-c", "read x < " + gate}}, f.notify); err != nil {
		t.Fatal(err)
	}
	ev := <-f.running
	got := asClient(t, sock, nobody, nobody,
		ipc.Header{Type: ipc.TypeSetEnv, ID: 1, Pool: "x", Env: map[string]string{"A": "1"}},
		ipc.Header{Type: ipc.TypeRecycle, ID: 2, Pool: "x"},
		ipc.Header{Type: ipc.TypeShutdown, ID: 3},
		ipc.Header{Type: ipc.TypeStatus, ID: 4, Pool: "x"},
	)
	for id := uint64(1); id <= 3; id++ {
		if h := got[id].H; h.Type != ipc.TypeError || h.Code != ipc.CodeForbidden {
			t.Errorf("request %d of a non-admin: %+v, want error forbidden", id, h)
		}
	}
	var st pool.Status
	if err := json.Unmarshal(got[4].H.Status, &st); err != nil {
		t.Fatal(err)
	}
	if len(st.Workers) != 1 || st.Workers[0].State != "busy" || st.Workers[0].Pid != 0 || st.Workers[0].Task != 0 || st.Workers[0].Leaf != "" {
		t.Errorf("a non-admin's status of another's task: %+v, want busy with no pid, task or leaf", st.Workers)
	}
	if env := p.Env(); env["A"] != "" {
		t.Errorf("a non-admin changed the pool environment: %v", env)
	}
	if p.Stats().TasksRejected != 1 {
		t.Errorf("stats: %+v", p.Stats())
	}
	// An admin (root: this process) sees the details.
	tc := connect(t, sock)
	tc.c.Write(&ipc.Header{Type: ipc.TypeStatus, ID: 9, Pool: "x"}, nil)
	h, _, err := tc.c.Read()
	if err != nil {
		t.Fatal(err)
	}
	st = pool.Status{}
	json.Unmarshal(h.Status, &st)
	if len(st.Workers) != 1 || st.Workers[0].Pid != ev.Pid {
		t.Errorf("an admin's status: %+v, want pid %d", st.Workers, ev.Pid)
	}
	w, _ := os.OpenFile(gate, os.O_WRONLY, 0)
	w.Write([]byte("x\n"))
	w.Close()
	f.wait(t, 30*time.Second)
}

// startServerWith is startServer with server options.
func startServerWith(t *testing.T, o pool.ServerOptions, mod func(*pool.Config)) (*pool.Server, string, *pool.Pool) {
	t.Helper()
	s, p := newPoolOn(t, kerneltest.NewRoot(t), mod)
	dir, err := os.MkdirTemp("", "cgpool-sock")
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(dir, 0o700)
	sock := filepath.Join(dir, "s.sock")
	ln, err := ipc.Listen(sock, ipc.ListenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	srv := pool.NewServer(s, ln, o)
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ctx) }()
	t.Cleanup(func() {
		sctx, scancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer scancel()
		s.Shutdown(sctx, pool.ShutdownOptions{Wait: true, CancelFutures: true})
		cancel()
		if err := <-served; err != nil {
			t.Errorf("Serve: %v", err)
		}
		os.RemoveAll(dir)
	})
	return srv, sock, p
}

// TestHandshakeDeadline: a connection that never says hello is closed
// after the handshake timeout, and counted.
func TestHandshakeDeadline(t *testing.T) {
	srv, sock, _ := startServerWith(t, pool.ServerOptions{HandshakeTimeout: 200 * time.Millisecond}, nil)
	var conns []net.Conn
	for range 20 {
		c, err := net.Dial("unix", sock)
		if err != nil {
			t.Fatal(err)
		}
		c.Write([]byte{0, 0, 0, 9}) // half a frame prefix
		conns = append(conns, c)
	}
	for i, c := range conns {
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		buf := make([]byte, 4096)
		for {
			_, err := c.Read(buf)
			if err != nil {
				if errors.Is(err, os.ErrDeadlineExceeded) {
					t.Fatalf("connection %d still open 10 s after a 200 ms handshake timeout", i)
				}
				break
			}
		}
		c.Close()
	}
	deadline := time.Now().Add(10 * time.Second)
	for srv.Stats().HandshakeFailures < 20 || srv.Stats().Connections > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("server stats %+v, want 20 handshake failures and no connection", srv.Stats())
		}
		time.Sleep(time.Millisecond) // polling the server's counters with a deadline
	}
}

// TestConnectionCaps: a connection past the per-uid or the total cap is
// refused with an error of code busy and counted; one closed makes room.
func TestConnectionCaps(t *testing.T) {
	for _, tc := range []struct {
		name string
		o    pool.ServerOptions
	}{
		{"per uid", pool.ServerOptions{MaxConnsPerUID: 3}},
		{"in all", pool.ServerOptions{MaxConns: 3}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv, sock, _ := startServerWith(t, tc.o, nil)
			var open []*testClient
			for range 3 {
				open = append(open, connect(t, sock))
			}
			nc, err := net.Dial("unix", sock)
			if err != nil {
				t.Fatal(err)
			}
			c := ipc.NewConn(nc)
			_, err = ipc.ClientHello(c, "fourth")
			var re *ipc.RemoteError
			if !errors.As(err, &re) || re.Code != ipc.CodeBusy {
				t.Fatalf("a fourth connection: %v, want a remote error of code busy", err)
			}
			c.Close()
			if n := srv.Stats().ConnectionsRefused; n != 1 {
				t.Errorf("refused %d, want 1", n)
			}
			open[0].c.Close()
			deadline := time.Now().Add(10 * time.Second)
			for srv.Stats().Connections > 2 {
				if time.Now().After(deadline) {
					t.Fatalf("the closed connection is still counted: %+v", srv.Stats())
				}
				time.Sleep(time.Millisecond) // polling with a deadline
			}
			late := connect(t, sock)
			late.submit(t, ipc.Header{}, "echo:room")
			if got := late.finals(t, 1, nil); got[1].Type != ipc.TypeResult {
				t.Errorf("a connection after one closed: %+v", got[1])
			}
		})
	}
}

// TestSlowClientDoesNotHoldOutcomes: a task's events never wait for its
// client's socket. A client that does not read, with its socket full, and
// a task of its that starts at once: on the old main the slot's goroutine
// then waited for "accepted" to be written, and no other client's task ran.
func TestSlowClientDoesNotHoldOutcomes(t *testing.T) {
	sock, p := startServer(t, func(c *pool.Config) { c.MaxBacklog = -1 })
	slow, other := connect(t, sock), connect(t, sock)
	const n = 100
	for range n {
		slow.submit(t, ipc.Header{}, "big:65536") // 6.4 MB of results it does not read
	}
	deadline := time.Now().Add(60 * time.Second)
	for p.Stats().TasksSucceeded < n {
		if time.Now().After(deadline) {
			t.Fatalf("the slow client's tasks did not run: %+v", p.Stats())
		}
		time.Sleep(time.Millisecond) // polling the pool's counters with a deadline
	}
	// The first starts at once; the others wait in the queue, and their
	// "accepted" cannot be written now: the socket is full.
	slow.submit(t, ipc.Header{}, "sleep:200")
	for range 4 {
		slow.submit(t, ipc.Header{}, "echo:late")
	}
	other.submit(t, ipc.Header{}, "echo:other")
	done := make(chan ipc.Header, 1)
	go func() { done <- other.finals(t, 1, nil)[1] }()
	select {
	case h := <-done:
		if h.Type != ipc.TypeResult {
			t.Errorf("the other client's task: %+v", h)
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("the other client's task did not finish while a client did not read: %+v", p.Stats())
	}
	got := slow.finals(t, n+5, nil)
	for id := uint64(1); id <= n+5; id++ {
		if got[id].Type != ipc.TypeResult {
			t.Errorf("slow client's task %d: %+v", id, got[id])
		}
	}
}

// TestCancelHeldRace: a cancel that races with a held submission entering
// the pool is answered from the submission's fate: "ok, queued" only if
// the task then never runs (on the old main it could answer ok and let the
// task run).
func TestCancelHeldRace(t *testing.T) {
	sock, _ := startServer(t, func(c *pool.Config) { c.MaxBacklog = 1 })
	c := connect(t, sock)
	const n = 3000
	for i := range n {
		id := c.submit(t, ipc.Header{Hold: true}, "echo:x")
		if i%2 == 0 {
			c.c.Write(&ipc.Header{Type: ipc.TypeCancel, ID: id}, nil)
		}
	}
	replies := map[uint64]ipc.Header{}
	finals := map[uint64]ipc.Header{}
	for len(finals) < n || len(replies) < n/2 {
		h, _, err := c.c.Read()
		if err != nil {
			t.Fatal(err)
		}
		switch {
		case h.Type == ipc.TypeCancelReply:
			replies[h.ID] = h
		case ipc.IsFinal(h.Type):
			finals[h.ID] = h
		}
	}
	okCancels := 0
	for id, r := range replies {
		f := finals[id]
		switch {
		case r.OK && f.Type != ipc.TypeCancelled:
			t.Errorf("task %d: cancel answered ok (%s) but the task ended %s", id, r.State, f.Type)
		case !r.OK && f.Type == ipc.TypeCancelled:
			t.Errorf("task %d: cancel answered not ok (%s) but the task was cancelled", id, r.State)
		}
		if r.OK {
			okCancels++
		}
	}
	if okCancels == 0 {
		t.Errorf("no cancel of %d took effect: the test raced nothing", len(replies))
	}
}

// TestOutboxBounded: a client that sends requests and reads no answer
// costs the daemon a bounded outbox (on the old main 200,000 stats requests
// grew it by 448 MiB); one that piles up more results than the bound is
// disconnected, and others are served on.
func TestOutboxBounded(t *testing.T) {
	srv, sock, p := startServerWith(t, pool.ServerOptions{MaxOutboxBytes: 4 << 20}, func(c *pool.Config) { c.MaxBacklog = -1 })
	t.Run("requests", func(t *testing.T) {
		var before runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		c := connect(t, sock)
		wrote := make(chan int, 1)
		go func() {
			i := 0
			for ; i < 100_000; i++ {
				if c.c.Write(&ipc.Header{Type: ipc.TypeStats, ID: uint64(i + 1)}, nil) != nil {
					break
				}
			}
			wrote <- i
		}()
		var n int
		select {
		case n = <-wrote: // the old main: it read them all
		case <-time.After(5 * time.Second): // the server stopped reading: the writes block
		}
		var after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&after)
		if grew := int64(after.HeapAlloc) - int64(before.HeapAlloc); grew > 48<<20 {
			t.Errorf("unread stats replies grew the heap by %d MiB (%d requests written)", grew>>20, n)
		}
		c.c.Close()
	})
	t.Run("results", func(t *testing.T) {
		before := srv.Stats().SlowClientsDropped
		slow := connect(t, sock)
		for range 40 {
			slow.submit(t, ipc.Header{}, "big:262144") // 10 MiB of results, past the 4 MiB bound
		}
		deadline := time.Now().Add(60 * time.Second)
		for srv.Stats().SlowClientsDropped == before {
			if time.Now().After(deadline) {
				t.Fatalf("a client over its outbox bound was not dropped: %+v %+v", srv.Stats(), p.Stats())
			}
			time.Sleep(time.Millisecond) // polling the server's counters with a deadline
		}
		other := connect(t, sock)
		other.submit(t, ipc.Header{}, "echo:on")
		if got := other.finals(t, 1, nil); got[1].Type != ipc.TypeResult {
			t.Errorf("another client after the drop: %+v", got[1])
		}
	})
}

// TestWorkerServesOneOwner: a worker runs the tasks of one (peer,
// affinity) pair only: a task of another pair gets another worker, so one
// client's code, loaded into a worker, never runs beside another's (on the
// old main a shared Python worker kept the first client's main module and
// failed the second's tasks). With a worker per owner idle, alternating
// owners costs no replacement.
func TestWorkerServesOneOwner(t *testing.T) {
	alice, bob := &pool.Identity{UID: 1000, GID: 1000}, &pool.Identity{UID: 1001, GID: 1001}
	pidOf := func(p *pool.Pool, peer *pool.Identity, affinity string) string {
		t.Helper()
		o := submit(t, p, pool.Spec{Payload: []byte("pid"), Peer: peer, Affinity: affinity}).wait(t, 30*time.Second)
		if o.Kind != pool.Result {
			t.Fatalf("task: %+v", o)
		}
		return string(o.Payload)
	}
	t.Run("one worker", func(t *testing.T) {
		_, p := newPool(t, nil)
		a1, a2 := pidOf(p, alice, "prog-a"), pidOf(p, alice, "prog-a")
		if a1 != a2 {
			t.Errorf("one owner's tasks ran on workers %s and %s, want one worker", a1, a2)
		}
		seen := map[string]string{a1: "alice/prog-a"}
		for _, o := range []struct {
			peer     *pool.Identity
			affinity string
			name     string
		}{{alice, "prog-b", "alice/prog-b"}, {bob, "prog-a", "bob/prog-a"}, {nil, "", "in-process"}, {alice, "prog-a", "alice/prog-a again"}} {
			pid := pidOf(p, o.peer, o.affinity)
			if prev, ok := seen[pid]; ok {
				t.Errorf("%s ran on worker %s, which had served %s", o.name, pid, prev)
			}
			seen[pid] = o.name
		}
	})
	t.Run("a worker per owner", func(t *testing.T) {
		_, p := newPool(t, func(c *pool.Config) { c.MaxWorkers = 2 })
		deadline := time.Now().Add(30 * time.Second)
		for p.Stats().WorkerProcessesIdle < 2 { // both workers up and unbound
			if time.Now().After(deadline) {
				t.Fatalf("two idle workers: %+v", p.Stats())
			}
			time.Sleep(time.Millisecond) // polling the pool's counters with a deadline
		}
		pids := map[string]bool{}
		for i := range 6 {
			peer := alice
			if i%2 == 1 {
				peer = bob
			}
			pids[pidOf(p, peer, "prog")] = true
		}
		if st := p.Stats(); len(pids) != 2 || st.WorkersRetired != 0 {
			t.Errorf("alternating two owners on two workers: %d workers, %d retired; want 2 and 0", len(pids), st.WorkersRetired)
		}
	})
}

// TestIdleConnectionCost: an idle connection (handshake done, nothing in
// flight) costs the daemon a bounded amount of memory: SECURITY.md quotes
// the figure this test prints.
func TestIdleConnectionCost(t *testing.T) {
	srv, sock, _ := startServerWith(t, pool.ServerOptions{}, nil)
	const n = 500
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	var conns []*ipc.Conn
	for range n {
		nc, err := net.Dial("unix", sock)
		if err != nil {
			t.Fatal(err)
		}
		c := ipc.NewConn(nc, ipc.Options{BufferSize: 64}) // the clients' share stays small
		if _, err := ipc.ClientHello(c, "idle"); err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
	}
	deadline := time.Now().Add(30 * time.Second)
	for srv.Stats().Connections < n {
		if time.Now().After(deadline) {
			t.Fatalf("connections: %+v", srv.Stats())
		}
		time.Sleep(time.Millisecond) // polling the server's counters with a deadline
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	// Both ends live in this process: the clients' small share is counted
	// too, so this is an upper bound of the server's.
	per := (int64(after.HeapInuse+after.StackInuse) - int64(before.HeapInuse+before.StackInuse)) / n
	t.Logf("an idle connection costs the server at most %d bytes (heap and goroutine stacks)", per)
	if per > 48<<10 {
		t.Errorf("an idle connection costs %d bytes, more than 48 KiB", per)
	}
	for _, c := range conns {
		c.Close()
	}
}

// TestHeldSubmissionsBounded: held submissions are a second backlog, and
// as bounded: past 1024 on one connection the server stops reading it (the
// client's writes block) until some enter the pool; then every one is
// served. On the old main a client held 100,000 with a backlog of 10.
func TestHeldSubmissionsBounded(t *testing.T) {
	sock, p := startServer(t, func(c *pool.Config) { c.MaxBacklog = 1 })
	c := connect(t, sock)
	gate := filepath.Join(t.TempDir(), "gate")
	if err := syscall.Mkfifo(gate, 0o600); err != nil {
		t.Fatal(err)
	}
	c.submit(t, ipc.Header{}, "gate:"+gate) // holds the only worker
	const n = 5000
	payload := strings.Repeat("x", 16<<10) // 5000 x 16 KiB: 80 MiB if all were read
	wrote := make(chan struct{})
	go func() {
		defer close(wrote)
		for i := range n {
			h := ipc.Header{Type: ipc.TypeSubmit, ID: uint64(i + 2), Hold: true}
			if c.c.Write(&h, []byte("echo:"+payload)) != nil {
				return
			}
		}
	}()
	select {
	case <-wrote:
		t.Fatalf("the server read all %d held submissions with a backlog of 1", n)
	case <-time.After(3 * time.Second): // the writes block: the server stopped reading
	}
	f, _ := os.OpenFile(gate, os.O_WRONLY, 0)
	f.Write([]byte{1})
	f.Close()
	got := c.finals(t, n+1, nil)
	<-wrote
	for id := uint64(1); id <= n+1; id++ {
		if got[id].Type != ipc.TypeResult {
			t.Fatalf("task %d: %+v", id, got[id])
		}
	}
	if st := p.Stats(); st.TasksSucceeded != n+1 {
		t.Errorf("stats: %+v", st)
	}
}
