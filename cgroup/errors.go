package cgroup

import "errors"

// Sentinels for the outcomes callers branch on. Use errors.Is.
var (
	// ErrNotDelegated: the cgroup is not writable by us (cgroup.procs or
	// cgroup.subtree_control cannot be written).
	ErrNotDelegated = errors.New("cgroup: not delegated to this process")
	// ErrControllerUnavailable: a limit needs a controller that the
	// hierarchy does not offer here (cgroup.controllers lacks it).
	ErrControllerUnavailable = errors.New("cgroup: controller not available")
	// ErrUnsupportedLimit: a limit SetLimits does not write (a
	// runtime-spec LinuxResources field outside what a worker slot needs,
	// or an inconsistent one): refused, never ignored.
	ErrUnsupportedLimit = errors.New("cgroup: limit not supported")
	// ErrNotEmpty: a group still holds processes.
	ErrNotEmpty = errors.New("cgroup: not empty")
	// ErrNoCgroup2: no cgroup v2 hierarchy is mounted.
	ErrNoCgroup2 = errors.New("cgroup: no cgroup v2 mount")
	// ErrOwned: another live process owns the root (it holds the root's
	// lock: see Root.Lock).
	ErrOwned = errors.New("cgroup: root owned by another live supervisor")
)
