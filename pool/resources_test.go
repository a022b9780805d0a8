package pool

import (
	"encoding/json"
	"testing"
)

// TestConfigResources: a pool's limits, as runtime-spec's LinuxResources
// (the vocabulary cgroup.Group.SetLimits takes).
func TestConfigResources(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  Config
		ctrl []string
		want string
	}{
		{"none", Config{}, nil, `{}`},
		{"oom group only where memory is", Config{}, []string{"memory", "pids"}, `{"unified":{"memory.oom.group":"1"}}`},
		{"memory max, no swap", Config{MemoryMax: 64 << 20}, []string{"memory"},
			`{"memory":{"limit":67108864,"swap":67108864},"unified":{"memory.oom.group":"1"}}`},
		{"memory high alone still means no swap", Config{MemoryHigh: 1 << 20}, []string{"memory"},
			`{"unified":{"memory.high":"1048576","memory.oom.group":"1","memory.swap.max":"0"}}`},
		{"everything", Config{MemoryMax: 2 << 20, MemoryHigh: 1 << 20, PidsMax: 64, CPUWeight: 50, CPUMax: "50000 100000"}, []string{"cpu", "memory", "pids"},
			`{"memory":{"limit":2097152,"swap":2097152},"pids":{"limit":64},"unified":{"cpu.max":"50000 100000","cpu.weight":"50","memory.high":"1048576","memory.oom.group":"1"}}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, err := json.Marshal(tc.cfg.Resources(tc.ctrl))
			if err != nil {
				t.Fatal(err)
			}
			if string(b) != tc.want {
				t.Errorf("Resources(%q) of %+v =\n%s\nwant\n%s", tc.ctrl, tc.cfg, b, tc.want)
			}
		})
	}
}
