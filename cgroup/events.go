package cgroup

import (
	"fmt"
	"strconv"
	"strings"
)

// MemoryEvents holds the counters of memory.events or memory.events.local.
// Counters a kernel does not report (oom_group_kill before Linux 5.17) stay 0.
type MemoryEvents struct {
	Low, High, Max, OOM, OOMKill, OOMGroupKill uint64
}

// Events holds the fields of cgroup.events.
type Events struct {
	Populated bool // the group or a descendant holds a live process
	Frozen    bool
}

// ParseFlatKeyed parses a "key value" per line cgroup file (memory.events,
// cgroup.events, pids.events, memory.stat) into a map. Values must be
// unsigned integers.
func ParseFlatKeyed(data string) (map[string]uint64, error) {
	out := make(map[string]uint64, 8)
	for _, line := range strings.Split(data, "\n") {
		if line == "" {
			continue
		}
		k, v, ok := strings.Cut(line, " ")
		if !ok {
			return nil, fmt.Errorf("flat-keyed line %q: no value", line)
		}
		n, err := strconv.ParseUint(strings.TrimSpace(v), 10, 64)
		if err != nil {
			return nil, fmt.Errorf("flat-keyed line %q: %w", line, err)
		}
		out[k] = n
	}
	return out, nil
}

// ParseMemoryEvents parses the text of memory.events(.local).
func ParseMemoryEvents(data string) (MemoryEvents, error) {
	m, err := ParseFlatKeyed(data)
	if err != nil {
		return MemoryEvents{}, err
	}
	return MemoryEvents{
		Low: m["low"], High: m["high"], Max: m["max"],
		OOM: m["oom"], OOMKill: m["oom_kill"], OOMGroupKill: m["oom_group_kill"],
	}, nil
}

// ParseEvents parses the text of cgroup.events.
func ParseEvents(data string) (Events, error) {
	m, err := ParseFlatKeyed(data)
	if err != nil {
		return Events{}, err
	}
	if _, ok := m["populated"]; !ok {
		return Events{}, fmt.Errorf("cgroup.events %q: no populated field", data)
	}
	return Events{Populated: m["populated"] != 0, Frozen: m["frozen"] != 0}, nil
}

// parseLimit parses a value such as memory.max's: "max" or a number.
// "max" comes back as -1.
func parseLimit(s string) (int64, error) {
	s = strings.TrimSpace(s)
	if s == "max" {
		return -1, nil
	}
	return strconv.ParseInt(s, 10, 64)
}
