package pool_test

import (
	"bytes"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cgpool/cgpool/cgroup"
	"github.com/cgpool/cgpool/internal/kerneltest"
	"github.com/cgpool/cgpool/pool"
)

func execPool(t *testing.T) (*cgroup.Root, *pool.Pool) {
	t.Helper()
	r := kerneltest.NewRoot(t)
	_, p := newPoolOn(t, r, func(c *pool.Config) { c.Kind, c.Command = pool.KindExec, nil })
	return r, p
}

// escapeScript starts a child that holds the command's stdout and
// stderr, moves it to the group outside the slot and prints its pid (as
// root, a task can; it can also pass the fds to any process over a unix
// socket). Then the command does what rest says.
func escapeScript(outside *cgroup.Group, rest string) []string {
	return []string{"sh", "-c", `sleep 300 & echo $! > ` + filepath.Join(outside.Path(), "cgroup.procs") + `; echo escaped $!; ` + rest}
}

// TestExecOutcomeNotHeldByEscapedOutput is issue 9's exec defect: the
// exec path waited without bound for the end of the command's stdout and
// stderr, so a process holding them outside the slot kept the slot busy
// and the outcome unsent (no outcome after 20 s for a 3 s timeout). Now
// the outcome comes within a short bound after the kill (and after a
// command that ends by itself), with the output that was written.
func TestExecOutcomeNotHeldByEscapedOutput(t *testing.T) {
	r, p := execPool(t)
	outside := kerneltest.Leaf(t, &r.Group, "outside", nil) // killed and removed when the test ends
	for _, tc := range []struct {
		name string
		spec pool.Spec
		kind pool.OutcomeKind
	}{
		{"timeout", pool.Spec{Argv: escapeScript(outside, "sleep 300"), Timeout: time.Second}, pool.TimedOut},
		{"exits by itself", pool.Spec{Argv: escapeScript(outside, "exit 0")}, pool.Result},
	} {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			o := submit(t, p, tc.spec).wait(t, 8*time.Second)
			if o.Kind != tc.kind || !strings.HasPrefix(string(o.Stdout), "escaped ") {
				t.Errorf("outcome %v, stdout %q; want %v and the output written", o.Kind, o.Stdout, tc.kind)
			}
			t.Logf("outcome after %v", time.Since(start).Round(time.Millisecond))
		})
	}
	// The slot is free again: a next task runs at once.
	if o := submit(t, p, pool.Spec{Argv: []string{"echo", "next"}}).wait(t, 5*time.Second); string(o.Stdout) != "next\n" {
		t.Errorf("next task: %+v", o)
	}
}

// collector is an OutputFunc that keeps what it is given.
type collector struct {
	mu   sync.Mutex
	out  [3]bytes.Buffer
	gate chan struct{} // if not nil, each call waits for it (or abort)
}

func (c *collector) write(s pool.Stream, p []byte, abort <-chan struct{}) error {
	if c.gate != nil {
		select {
		case <-c.gate:
		case <-abort:
			return nil
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.out[s].Write(p)
	return nil
}

// TestExecStreamsOutput: with an Output, every byte of stdout and stderr
// is delivered, in order, nothing is cut and nothing is kept in the
// outcome.
func TestExecStreamsOutput(t *testing.T) {
	_, p := execPool(t)
	var c collector
	o := submit(t, p, pool.Spec{Argv: []string{"sh", "-c", "yes 0123456789 | head -c 10000000; yes err | head -c 1000000 >&2"}, IO: &pool.ExecIO{Output: c.write}}).wait(t, 30*time.Second)
	if o.Kind != pool.Result || o.ExitCode != 0 || o.Stdout != nil || o.StdoutBytes != 10_000_000 || o.StderrBytes != 1_000_000 {
		t.Fatalf("outcome %v exit %d, %d bytes kept, counts %d/%d", o.Kind, o.ExitCode, len(o.Stdout), o.StdoutBytes, o.StderrBytes)
	}
	want := bytes.Repeat([]byte("0123456789\n"), 10_000_000/11+1)[:10_000_000]
	if !bytes.Equal(c.out[pool.Stdout].Bytes(), want) {
		t.Errorf("stdout: %d bytes delivered, not what the command wrote", c.out[pool.Stdout].Len())
	}
	if c.out[pool.Stderr].Len() != 1_000_000 {
		t.Errorf("stderr: %d bytes delivered, want 1000000", c.out[pool.Stderr].Len())
	}
}

// TestExecOutputBackpressure: a reader that does not take the output
// stalls the command on its full pipe (the supervisor holds no more than
// a pipe's worth), the task's timeout still ends it, and the outcome is
// not held by the reader.
func TestExecOutputBackpressure(t *testing.T) {
	_, p := execPool(t)
	c := collector{gate: make(chan struct{})}
	start := time.Now()
	f := submit(t, p, pool.Spec{Argv: []string{"sh", "-c", "head -c 100000000 /dev/zero; echo finished >&2"}, IO: &pool.ExecIO{Output: c.write}, Timeout: 2 * time.Second})
	o := f.wait(t, 10*time.Second)
	if o.Kind != pool.TimedOut {
		t.Errorf("outcome %v, want the timeout: the command cannot finish while nobody reads", o.Kind)
	}
	if o.StdoutBytes > 4<<20 {
		t.Errorf("%d bytes were read from a command whose reader took none: the supervisor buffers", o.StdoutBytes)
	}
	if d := time.Since(start); d > 6*time.Second {
		t.Errorf("outcome after %v for a 2 s timeout", d)
	}
	// Released, a reader gets everything.
	c = collector{}
	o = submit(t, p, pool.Spec{Argv: []string{"sh", "-c", "head -c 5000000 /dev/zero"}, IO: &pool.ExecIO{Output: c.write}, Timeout: 20 * time.Second}).wait(t, 30*time.Second)
	if o.Kind != pool.Result || c.out[pool.Stdout].Len() != 5_000_000 {
		t.Errorf("outcome %v with %d bytes", o.Kind, c.out[pool.Stdout].Len())
	}
}

// TestExecMaxOutput: past MaxOutput the command is killed, exactly
// MaxOutput bytes are delivered, and the outcome says why.
func TestExecMaxOutput(t *testing.T) {
	_, p := execPool(t)
	var c collector
	o := submit(t, p, pool.Spec{Argv: []string{"sh", "-c", "echo to-stderr >&2; exec yes"}, IO: &pool.ExecIO{Output: c.write, MaxOutput: 100_000}}).wait(t, 10*time.Second)
	if o.Kind != pool.ProcessError || o.Reason != pool.OutputLimit || !strings.Contains(o.Message, "output limit of 100000 bytes") {
		t.Errorf("outcome %v %q %q", o.Kind, o.Reason, o.Message)
	}
	if n := c.out[pool.Stdout].Len() + c.out[pool.Stderr].Len(); n != 100_000 {
		t.Errorf("%d bytes delivered, want exactly 100000", n)
	}
	if st := p.Stats(); st.FailuresByReason[string(pool.OutputLimit)] != 1 {
		t.Errorf("failures_by_reason %v", st.FailuresByReason)
	}
	// Under the bound, nothing happens.
	o = submit(t, p, pool.Spec{Argv: []string{"echo", "small"}, IO: &pool.ExecIO{Output: c.write, MaxOutput: 100}}).wait(t, 10*time.Second)
	if o.Kind != pool.Result {
		t.Errorf("small output: %v", o.Kind)
	}
}
