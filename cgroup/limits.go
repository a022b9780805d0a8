package cgroup

import (
	"fmt"
	"slices"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// A group's limits are given as runtime-spec's LinuxResources (the type
// runc, crun and containerd pass around), so that cgpool has one vocabulary
// for them. SetLimits supports the part of it that maps onto cgroup v2
// files a worker slot needs:
//
//	Memory.Limit        memory.max (a negative value: "max")
//	Memory.Reservation  memory.low
//	Memory.Swap         memory.swap.max = Swap - Limit (runtime-spec's Swap
//	                    is memory plus swap, as cgroup v1 counted it)
//	CPU.Shares          cpu.weight, converted as runc and crun convert it
//	CPU.Quota/Period    cpu.max
//	Pids.Limit          pids.max (a negative value: "max")
//	Unified             any "<controller>.<file>" of the group, written as is
//	                    (memory.high, memory.oom.group, cpu.weight, ...)
//
// Every other field (devices, block I/O, hugetlb, network, RDMA, cpusets,
// realtime, kernel memory, swappiness, DisableOOMKiller) is refused with an
// error wrapping ErrUnsupportedLimit rather than ignored.

// limitFile is one interface file a LinuxResources value writes, and the
// controller that owns it.
type limitFile struct{ controller, file string }

// limitFiles lists the files res writes, in a fixed order, or the first
// field that SetLimits does not support.
func limitFiles(res *specs.LinuxResources) ([]limitFile, error) {
	if res == nil {
		return nil, nil
	}
	unsupported := func(field string) ([]limitFile, error) {
		return nil, fmt.Errorf("LinuxResources.%s: %w", field, ErrUnsupportedLimit)
	}
	switch {
	case len(res.Devices) > 0:
		return unsupported("Devices")
	case res.BlockIO != nil:
		return unsupported("BlockIO")
	case len(res.HugepageLimits) > 0:
		return unsupported("HugepageLimits")
	case res.Network != nil:
		return unsupported("Network")
	case len(res.Rdma) > 0:
		return unsupported("Rdma")
	}
	var out []limitFile
	if m := res.Memory; m != nil {
		switch {
		case m.Kernel != nil:
			return unsupported("Memory.Kernel")
		case m.KernelTCP != nil:
			return unsupported("Memory.KernelTCP")
		case m.Swappiness != nil:
			return unsupported("Memory.Swappiness")
		case m.DisableOOMKiller != nil:
			return unsupported("Memory.DisableOOMKiller")
		case m.Swap != nil && m.Limit == nil:
			return nil, fmt.Errorf("LinuxResources.Memory.Swap is memory plus swap: it needs Memory.Limit too: %w", ErrUnsupportedLimit)
		case m.Swap != nil && *m.Swap >= 0 && *m.Limit >= 0 && *m.Swap < *m.Limit:
			return nil, fmt.Errorf("LinuxResources.Memory.Swap %d is below Memory.Limit %d (Swap is memory plus swap): %w", *m.Swap, *m.Limit, ErrUnsupportedLimit)
		}
		if m.Limit != nil {
			out = append(out, limitFile{"memory", "memory.max"})
		}
		if m.Reservation != nil {
			out = append(out, limitFile{"memory", "memory.low"})
		}
		if m.Swap != nil {
			out = append(out, limitFile{"memory", "memory.swap.max"})
		}
	}
	if c := res.CPU; c != nil {
		switch {
		case c.Cpus != "" || c.Mems != "":
			return unsupported("CPU.Cpus/Mems (cpuset)")
		case c.RealtimeRuntime != nil || c.RealtimePeriod != nil:
			return unsupported("CPU.Realtime*")
		case c.Burst != nil:
			return unsupported("CPU.Burst")
		case c.Idle != nil:
			return unsupported("CPU.Idle")
		case c.Quota != nil && c.Period == nil:
			return nil, fmt.Errorf("LinuxResources.CPU.Quota needs CPU.Period: %w", ErrUnsupportedLimit)
		}
		if c.Shares != nil {
			out = append(out, limitFile{"cpu", "cpu.weight"})
		}
		if c.Period != nil {
			out = append(out, limitFile{"cpu", "cpu.max"})
		}
	}
	if p := res.Pids; p != nil && p.Limit != nil {
		out = append(out, limitFile{"pids", "pids.max"})
	}
	for _, k := range sortedKeys(res.Unified) {
		ctrl, _, ok := strings.Cut(k, ".")
		if !ok || ctrl == "" || ctrl == "cgroup" || strings.ContainsAny(k, "/\x00") || k != strings.TrimSpace(k) {
			return nil, fmt.Errorf("LinuxResources.Unified[%q]: not a controller's interface file (want <controller>.<file>, e.g. memory.high): %w", k, ErrUnsupportedLimit)
		}
		out = append(out, limitFile{ctrl, k})
	}
	return out, nil
}

// Controllers returns the controllers that res needs, in a fixed order
// without repeats. It returns nil for a nil res, and for one that SetLimits
// would refuse (SetLimits reports why).
func Controllers(res *specs.LinuxResources) []string {
	files, err := limitFiles(res)
	if err != nil {
		return nil
	}
	var out []string
	for _, f := range files {
		if !slices.Contains(out, f.controller) {
			out = append(out, f.controller)
		}
	}
	return out
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
