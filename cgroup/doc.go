// Package cgroup owns cgpool's cgroup v2 subtree: finding the cgroup v2
// mount and the process's own cgroup, deciding whether a cgroup is delegated
// to us, taking a delegated root over (moving the supervisor into
// <root>/supervisor and enabling the controllers we use), creating groups
// with limits, killing a group whole with cgroup.kill, waiting until it is
// empty, removing it, and reading its counters (memory.events, memory.current,
// memory.peak, pids.current).
//
// It does not start processes (package spawn does, straight into a group's
// directory with CLONE_INTO_CGROUP), does not watch for events (package
// oomwatch does) and never reaps a process: a Kill only queues signals.
//
// Every group this package creates is marked with the extended attribute
// user.cgpool (cgroupfs supports user xattrs since Linux 5.7); a sweep of a
// root removes only marked groups, so a cgroup somebody else made inside or
// beside our root is never touched.
//
// Limits are runtime-spec's LinuxResources (github.com/opencontainers/
// runtime-spec), the vocabulary container runtimes share; SetLimits maps
// the fields a worker slot needs onto cgroup v2 files and refuses the rest.
//
// Kernel features: cgroup v2; cgroup.kill (Linux 5.14) for Kill, with a
// freeze-and-signal fallback on older kernels; memory.peak (5.19) is read
// when present. Controllers that the hierarchy does not offer are reported
// by Root.Controllers, and a limit that would need one is refused with an
// error wrapping ErrControllerUnavailable instead of being faked.
//
// Reduced mode (pgroup_linux.go): where no writable cgroup v2 exists,
// NewReducedRoot returns a Root whose Groups stand for process groups
// (Track, Kill = kill(-pgid, SIGKILL), members found in /proc, memory from
// procfs); ReducedMissing says which guarantees are lost, and SetLimits
// refuses every limit there.
//
// Values of type Root and Group are safe for concurrent use: they hold only
// immutable paths (or, in reduced mode, a node guarded by its own mutex),
// and every method is a few file operations.
package cgroup
