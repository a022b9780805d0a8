package cgroup

import (
	"fmt"
	"slices"
	"strings"

	"github.com/containerd/cgroups/v3/cgroup2"
)

// SetLimits writes l to the group's interface files. A limit whose
// controller the group does not offer (cgroup.controllers) is refused
// before anything is written, with an error wrapping
// ErrControllerUnavailable that names the file, the controller and where
// to find one; nothing is faked.
//
// The writes go through containerd/cgroups' Update, which writes values
// only (it never toggles controllers of our ancestors).
func (g *Group) SetLimits(l Limits) error {
	needs := l.needs()
	if len(needs) == 0 {
		return nil
	}
	have, err := g.Controllers()
	if err != nil {
		return err
	}
	for _, n := range needs {
		if !slices.Contains(have, n[0]) {
			offered := strings.Join(have, " ")
			if offered == "" {
				offered = "none"
			}
			return fmt.Errorf("%s: the %s controller is not enabled for %s (controllers offered here: %s; on a hybrid cgroup v1/v2 host it belongs to v1: use a pure cgroup v2 host or the VM, scripts/vm-test.sh): %w",
				n[1], n[0], g.dir, offered, ErrControllerUnavailable)
		}
	}
	res := &cgroup2.Resources{}
	if l.MemoryMax != 0 || l.MemoryHigh != 0 || l.MemorySwapMax != nil || l.OOMGroup {
		m := &cgroup2.Memory{Swap: l.MemorySwapMax}
		if l.MemoryMax != 0 {
			m.Max = &l.MemoryMax
		}
		if l.MemoryHigh != 0 {
			m.High = &l.MemoryHigh
		}
		if l.OOMGroup {
			t := true
			m.OOMGroup = &t
		}
		res.Memory = m
	}
	if l.PidsMax != 0 {
		res.Pids = &cgroup2.Pids{Max: l.PidsMax}
	}
	if l.CPUWeight != 0 || l.CPUMax != "" {
		c := &cgroup2.CPU{Max: cgroup2.CPUMax(l.CPUMax)}
		if l.CPUWeight != 0 {
			c.Weight = &l.CPUWeight
		}
		res.CPU = c
	}
	mgr, err := cgroup2.Load(g.loadPath(), cgroup2.WithMountpoint(g.mount.Point))
	if err != nil {
		return fmt.Errorf("load %s: %w", g.dir, err)
	}
	if err := mgr.Update(res); err != nil {
		return fmt.Errorf("set limits on %s: %w", g.dir, err)
	}
	return nil
}

// loadPath is the group's path relative to the mount point, as
// containerd/cgroups' Load wants it ("/a/b").
func (g *Group) loadPath() string {
	return "/" + strings.TrimPrefix(strings.TrimPrefix(g.dir, g.mount.Point), "/")
}
