package cgroup_test

import (
	"context"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/cgpool/cgpool/internal/kerneltest"
	"github.com/cgpool/cgpool/spawn"
)

// BenchmarkLeafLifecycle times the four steps of a worker replacement and
// reports each step's median in µs: create a leaf with limits (the limits
// the hierarchy offers), spawn a process into it, kill it and see it empty,
// remove it. Run it on the host with
//
//	go test -run '^$' -bench LeafLifecycle ./cgroup
//
// and in the VM with scripts/vm-test.sh -bench LeafLifecycle ./cgroup.
func BenchmarkLeafLifecycle(b *testing.B) {
	r := kerneltest.NewRoot(b)
	sleep, err := execLook("sleep")
	if err != nil {
		kerneltest.Skipf(b, "%v", err)
	}
	lim := &specs.LinuxResources{}
	if slices.Contains(r.Controllers(), "memory") {
		lim = kerneltest.MemoryLimit(64 << 20)
	}
	if slices.Contains(r.Controllers(), "pids") {
		pids := int64(256)
		lim.Pids = &specs.LinuxPids{Limit: &pids}
	}
	ctx := context.Background()
	var create, start, kill, remove []time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		t0 := time.Now()
		g, err := r.Mkdir("w-" + strconv.Itoa(i))
		if err != nil {
			b.Fatal(err)
		}
		if err := g.SetLimits(lim); err != nil {
			b.Fatal(err)
		}
		t1 := time.Now()
		d, err := g.Open()
		if err != nil {
			b.Fatal(err)
		}
		p, err := spawn.Start(spawn.Options{Path: sleep, Args: []string{"sleep", "1000"}, Cgroup: d})
		d.Close()
		if err != nil {
			b.Fatal(err)
		}
		t2 := time.Now()
		if err := g.Kill(); err != nil {
			b.Fatal(err)
		}
		if _, err := p.Wait(ctx); err != nil {
			b.Fatal(err)
		}
		if err := g.WaitEmpty(ctx); err != nil {
			b.Fatal(err)
		}
		t3 := time.Now()
		p.Close()
		if err := g.Remove(); err != nil {
			b.Fatal(err)
		}
		t4 := time.Now()
		create, start = append(create, t1.Sub(t0)), append(start, t2.Sub(t1))
		kill, remove = append(kill, t3.Sub(t2)), append(remove, t4.Sub(t3))
	}
	b.StopTimer()
	for _, m := range []struct {
		name string
		d    []time.Duration
	}{{"create-p50-µs", create}, {"spawn-p50-µs", start}, {"kill-empty-p50-µs", kill}, {"remove-p50-µs", remove}} {
		slices.Sort(m.d)
		b.ReportMetric(float64(m.d[len(m.d)/2].Microseconds()), m.name)
	}
}
