package oomwatch

import (
	"errors"
	"io/fs"

	"github.com/cgpool/cgpool/cgroup"
)

// Counters are the OOM counters of one group's memory.events
// (hierarchical, so kills inside nested groups count too).
type Counters struct {
	OOMKill, OOMGroupKill uint64
}

// Read returns the group's OOM counters. Without the memory controller
// (memory.events missing) it returns zero counters and ok=false: no OOM
// can be told apart there, and none is ever reported.
func Read(g *cgroup.Group) (c Counters, ok bool, err error) {
	ev, err := g.MemoryEvents()
	if errors.Is(err, fs.ErrNotExist) {
		return Counters{}, false, nil
	}
	if err != nil {
		return Counters{}, false, err
	}
	return CountersOf(ev), true, nil
}

// CountersOf is the counters of a memory.events already read.
func CountersOf(ev cgroup.MemoryEvents) Counters {
	return Counters{OOMKill: ev.OOMKill, OOMGroupKill: ev.OOMGroupKill}
}
