package worker

import (
	"context"
	"errors"
	"net"
	"os"
	"testing"
	"time"

	"github.com/cgpool/cgpool/ipc"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// start runs serve on one end of a socketpair and returns the other end,
// as the supervisor sees it, and serve's result.
func start(t *testing.T, h Handler, o Options) (*ipc.Conn, <-chan error) {
	t.Helper()
	a, b := net.Pipe()
	done := make(chan error, 1)
	go func() { done <- serve(ipc.NewConn(b), h, o) }()
	c := ipc.NewConn(a)
	t.Cleanup(func() { c.Close() })
	a.SetDeadline(time.Now().Add(10 * time.Second))
	return c, done
}

func read(t *testing.T, c *ipc.Conn) (ipc.Header, []byte) {
	t.Helper()
	h, p, err := c.Read()
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	return h, p
}

func TestProtocol(t *testing.T) {
	finalRan := false
	h := func(_ context.Context, tk *Task) ([]byte, error) {
		switch string(tk.Payload) {
		case "env":
			return []byte(os.Getenv("CGPOOL_WORKER_TEST")), nil
		case "fail":
			return nil, errors.New("boom")
		case "panic":
			panic("oops")
		}
		return append([]byte("echo "), tk.Payload...), nil
	}
	c, done := start(t, h, Options{Init: func() error { return errors.New("init broke") }, Final: func() { finalRan = true }})
	if hello, _ := read(t, c); hello.Type != ipc.TypeHello || hello.PID != os.Getpid() || hello.Version != ipc.ProtocolVersion || hello.InitError != "init broke" {
		t.Fatalf("hello = %+v", hello)
	}
	for _, tc := range []struct {
		payload string
		env     map[string]string
		typ     string
		want    string
	}{
		{"x", nil, ipc.TypeResult, "echo x"},
		{"env", map[string]string{"CGPOOL_WORKER_TEST": "set"}, ipc.TypeResult, "set"},
		{"env", nil, ipc.TypeResult, ""}, // the addition was for one task only
		{"fail", nil, ipc.TypeTaskError, "boom"},
		{"panic", nil, ipc.TypeTaskError, "panic: oops"},
	} {
		if err := c.Write(&ipc.Header{Type: ipc.TypeTask, ID: 7, Env: tc.env}, []byte(tc.payload)); err != nil {
			t.Fatal(err)
		}
		r, p := read(t, c)
		got := string(p)
		if r.Type == ipc.TypeTaskError {
			got = r.Message
		}
		if r.Type != tc.typ || r.ID != 7 || got != tc.want {
			t.Errorf("task %q: %s %q (id %d), want %s %q", tc.payload, r.Type, got, r.ID, tc.typ, tc.want)
		}
	}
	c.Write(&ipc.Header{Type: ipc.TypeTrim}, nil)
	if r, _ := read(t, c); r.Type != ipc.TypeTrimmed || r.RSS <= 0 {
		t.Errorf("trim answer %+v, want trimmed with the RSS", r)
	}
	c.Write(&ipc.Header{Type: ipc.TypeExit}, nil)
	if err := <-done; err != nil || !finalRan {
		t.Errorf("after exit: serve returned %v, finalizer ran %v", err, finalRan)
	}
}

func TestSupervisorGone(t *testing.T) {
	c, done := start(t, func(context.Context, *Task) ([]byte, error) { return nil, nil }, Options{})
	read(t, c)
	c.Close()
	if err := <-done; err != nil {
		t.Errorf("serve after the supervisor closed the socket: %v, want nil", err)
	}
}
