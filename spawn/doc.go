// Package spawn starts a process directly inside a cgroup: the child is
// created by clone3 with CLONE_INTO_CGROUP (SysProcAttr.UseCgroupFD, Go
// 1.20, Linux 5.7), so it never runs an instruction outside its group and
// its memory limit holds from its first page. It also hands the child an
// inherited socket on fd 3 (or any extra files), a chosen environment, an
// optional uid/gid, Pdeathsig and a session of its own, and keeps a pidfd
// (SysProcAttr.PidFD, Go 1.22) so that signals can never hit a recycled pid.
//
// It does not create, limit or kill cgroups (package cgroup does), and it
// does not classify exits (package oomwatch does). There is no fallback to
// "start, then move into the cgroup": if the kernel refuses
// CLONE_INTO_CGROUP (ENOSYS before 5.7 or under a seccomp filter, EBUSY
// when the target group has controllers enabled for children), Start
// returns that error.
//
// Exactly one goroutine waits for each child; it is started by Start and
// ends when the child is reaped. A Process is safe for concurrent use.
package spawn
