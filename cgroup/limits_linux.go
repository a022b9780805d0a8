package cgroup

import (
	"fmt"
	"slices"
	"strings"

	"github.com/containerd/cgroups/v3/cgroup2"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// SetLimits writes res (see the list above limitFiles for the fields it
// maps) to the group's interface files. It does not block beyond those
// writes. A nil res writes nothing.
//
// Errors: a field it does not support wraps ErrUnsupportedLimit; a limit
// whose controller the group does not offer (cgroup.controllers) wraps
// ErrControllerUnavailable and names the file, the controller and where to
// find one. Both are found before anything is written: nothing is faked.
// A write the kernel refuses comes back with its path and errno.
//
// The typed fields go through containerd/cgroups' Update, which writes
// values only (it never toggles controllers of our ancestors); Unified
// entries are written as given, after them.
func (g *Group) SetLimits(res *specs.LinuxResources) error {
	if g.pg != nil {
		files, err := limitFiles(res)
		if err != nil {
			return err
		}
		if len(files) > 0 {
			return fmt.Errorf("limit %s needs the %s controller: %w (%w)", files[0].file, files[0].controller, ErrControllerUnavailable, ErrReduced)
		}
		return nil
	}
	files, err := limitFiles(res)
	if err != nil {
		return fmt.Errorf("limits for %s: %w", g.dir, err)
	}
	if len(files) == 0 {
		return nil
	}
	have, err := g.Controllers()
	if err != nil {
		return err
	}
	for _, f := range files {
		if !slices.Contains(have, f.controller) {
			offered := strings.Join(have, " ")
			if offered == "" {
				offered = "none"
			}
			return fmt.Errorf("%s: the %s controller is not enabled for %s (controllers offered here: %s; on a hybrid cgroup v1/v2 host it belongs to v1: use a pure cgroup v2 host or the VM, scripts/vm-test.sh): %w",
				f.file, f.controller, g.dir, offered, ErrControllerUnavailable)
		}
	}
	typed := *res
	typed.Unified = nil
	var unlimited []string // "max" values: cgroup2 would write -1, which memory.max refuses (EINVAL)
	if m := res.Memory; m != nil {
		mm := *m
		if mm.Limit != nil && *mm.Limit < 0 {
			unlimited = append(unlimited, "memory.max")
			if mm.Swap != nil {
				unlimited = append(unlimited, "memory.swap.max")
			}
			mm.Limit, mm.Swap = nil, nil
		} else if mm.Swap != nil && *mm.Swap < 0 {
			unlimited = append(unlimited, "memory.swap.max")
			mm.Swap = nil
		}
		typed.Memory = &mm
	}
	r := cgroup2.ToResources(&typed)
	if m := r.Memory; m != nil && m.Max == nil && m.Swap == nil && m.Low == nil {
		r.Memory = nil // nothing left to write after the "max" values
	}
	if r.CPU != nil && r.CPU.Weight == nil && r.CPU.Max == "" {
		r.CPU = nil
	}
	mgr, err := cgroup2.Load(g.loadPath(), cgroup2.WithMountpoint(g.mount.Point))
	if err != nil {
		return fmt.Errorf("load %s: %w", g.dir, err)
	}
	if err := mgr.Update(r); err != nil {
		return fmt.Errorf("set limits on %s: %w", g.dir, err)
	}
	for _, f := range unlimited {
		if err := g.WriteFile(f, "max"); err != nil {
			return err
		}
	}
	for _, k := range sortedKeys(res.Unified) {
		if err := g.WriteFile(k, res.Unified[k]); err != nil {
			return err
		}
	}
	return nil
}

// loadPath is the group's path relative to the mount point, as
// containerd/cgroups' Load wants it ("/a/b").
func (g *Group) loadPath() string {
	return "/" + strings.TrimPrefix(strings.TrimPrefix(g.dir, g.mount.Point), "/")
}
