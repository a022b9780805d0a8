package cgroup

// Limits are the per-group settings cgpool writes. A zero field leaves the
// kernel's default ("max") in place.
type Limits struct {
	MemoryMax  int64 // memory.max in bytes
	MemoryHigh int64 // memory.high in bytes (throttle, never OOM-kills)
	// MemorySwapMax is memory.swap.max in bytes; nil leaves it alone. Set
	// it to 0 for deterministic OOM kills: with swap a group over
	// memory.max swaps instead of dying.
	MemorySwapMax *int64
	// OOMGroup sets memory.oom.group, so that an OOM kill takes the whole
	// group, never half a worker.
	OOMGroup  bool
	PidsMax   int64  // pids.max: tasks, threads included
	CPUWeight uint64 // cpu.weight, 1..10000
	CPUMax    string // cpu.max, "QUOTA PERIOD" in µs, e.g. "50000 100000"
}

// needs lists the controllers each set field requires, in a fixed order,
// with the file that needs it.
func (l Limits) needs() [][2]string {
	var out [][2]string
	if l.MemoryMax != 0 {
		out = append(out, [2]string{"memory", "memory.max"})
	}
	if l.MemoryHigh != 0 {
		out = append(out, [2]string{"memory", "memory.high"})
	}
	if l.MemorySwapMax != nil {
		out = append(out, [2]string{"memory", "memory.swap.max"})
	}
	if l.OOMGroup {
		out = append(out, [2]string{"memory", "memory.oom.group"})
	}
	if l.PidsMax != 0 {
		out = append(out, [2]string{"pids", "pids.max"})
	}
	if l.CPUWeight != 0 {
		out = append(out, [2]string{"cpu", "cpu.weight"})
	}
	if l.CPUMax != "" {
		out = append(out, [2]string{"cpu", "cpu.max"})
	}
	return out
}

// Controllers returns the controllers the limits need, without repeats.
func (l Limits) Controllers() []string {
	var out []string
	seen := map[string]bool{}
	for _, n := range l.needs() {
		if !seen[n[0]] {
			seen[n[0]] = true
			out = append(out, n[0])
		}
	}
	return out
}
