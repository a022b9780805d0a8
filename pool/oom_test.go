package pool_test

import (
	"math/rand/v2"
	"os"
	"testing"
	"time"

	"github.com/cgpool/cgpool/internal/kerneltest"
	"github.com/cgpool/cgpool/oomwatch"
	"github.com/cgpool/cgpool/pool"
)

// TestOOMAmongSmallTasks: 10 tasks over memory_max shuffled among 100 small
// ones on one worker: exactly the 10 fail with reason oom, the 100
// succeed, and the supervisor (this process) is untouched (acceptance 2).
func TestOOMAmongSmallTasks(t *testing.T) {
	r := kerneltest.NewRoot(t)
	kerneltest.RequireControllers(t, r, "memory")
	_, p := newPoolOn(t, r, func(c *pool.Config) { c.MemoryMax = 64 << 20 })
	payloads := make([]string, 0, 110)
	for range 10 {
		payloads = append(payloads, "alloc:200")
	}
	for range 100 {
		payloads = append(payloads, "alloc:1")
	}
	rng := rand.New(rand.NewPCG(1, 2))
	rng.Shuffle(len(payloads), func(i, j int) { payloads[i], payloads[j] = payloads[j], payloads[i] })
	var fs []*future
	for _, pl := range payloads {
		fs = append(fs, submit(t, p, pool.Spec{Payload: []byte(pl)}))
	}
	oom, ok := 0, 0
	for i, f := range fs {
		o := f.wait(t, 2*time.Minute)
		switch {
		case o.Kind == pool.ProcessError && o.Reason == oomwatch.OOM:
			oom++
			if payloads[i] != "alloc:200" {
				t.Errorf("task %d (%s) classified oom", i, payloads[i])
			}
		case o.Kind == pool.Result:
			ok++
		default:
			t.Errorf("task %d (%s): %+v", i, payloads[i], o)
		}
		if o.Pid == os.Getpid() {
			t.Fatalf("task %d ran in the supervisor", i)
		}
	}
	if oom != 10 || ok != 100 {
		t.Errorf("%d oom and %d ok, want 10 and 100", oom, ok)
	}
	if st := p.Stats(); st.FailuresByReason["oom"] != 10 {
		t.Errorf("failures by reason %v, want oom 10", st.FailuresByReason)
	}
}
