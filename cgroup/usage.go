package cgroup

import (
	"fmt"
	"strconv"
	"strings"
)

// CPUStat holds the CPU time counters of cpu.stat, in microseconds. The
// three are there in every cgroup v2 group, with or without the cpu
// controller (the core accounts them); the controller adds throttling
// counters, which are not kept here.
type CPUStat struct {
	UsageUsec, UserUsec, SystemUsec uint64
}

// ParseCPUStat parses the text of cpu.stat. usage_usec must be present;
// user_usec and system_usec are 0 if absent.
func ParseCPUStat(data string) (CPUStat, error) {
	m, err := ParseFlatKeyed(data)
	if err != nil {
		return CPUStat{}, err
	}
	u, ok := m["usage_usec"]
	if !ok {
		return CPUStat{}, fmt.Errorf("cpu.stat %q: no usage_usec field", data)
	}
	return CPUStat{UsageUsec: u, UserUsec: m["user_usec"], SystemUsec: m["system_usec"]}, nil
}

// IOStat holds the byte and operation counters of io.stat, summed over
// its devices. Discards (dbytes, dios) are not kept.
type IOStat struct {
	ReadBytes, WriteBytes, ReadIOs, WriteIOs uint64
}

// ParseIOStat parses the text of io.stat: one line per block device,
// "MAJ:MIN key=value ...", summing rbytes, wbytes, rios and wios over the
// lines. Keys it does not know (dbytes, dios, and those of io.cost or
// io.latency) are skipped; an empty file (no I/O yet) is all zeros.
func ParseIOStat(data string) (IOStat, error) {
	var s IOStat
	for _, line := range strings.Split(data, "\n") {
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		if !strings.Contains(f[0], ":") {
			return IOStat{}, fmt.Errorf("io.stat line %q: no MAJ:MIN device", line)
		}
		for _, kv := range f[1:] {
			k, v, ok := strings.Cut(kv, "=")
			if !ok {
				return IOStat{}, fmt.Errorf("io.stat line %q: %q is not key=value", line, kv)
			}
			var dst *uint64
			switch k {
			case "rbytes":
				dst = &s.ReadBytes
			case "wbytes":
				dst = &s.WriteBytes
			case "rios":
				dst = &s.ReadIOs
			case "wios":
				dst = &s.WriteIOs
			default:
				continue
			}
			n, err := strconv.ParseUint(v, 10, 64)
			if err != nil {
				return IOStat{}, fmt.Errorf("io.stat line %q: %w", line, err)
			}
			*dst += n
		}
	}
	return s, nil
}
