// Package oomwatch watches the memory.events and cgroup.events files of
// many worker groups through one inotify instance, and decides why a task
// ended from recorded facts.
//
// One inotify fd serves every group (non-blocking and close-on-exec,
// wrapped in an *os.File so that closing it unblocks the reader): an
// inotify instance per group would hit fs.inotify.max_user_instances (128
// by default) and closing one costs milliseconds. A notification is only a
// wake-up: the kernel rate-limits cgroup file notifications (about one per
// 10 ms per file), so callers re-read the files; they never count events.
//
// Classify is a pure function: the order of events never decides a
// verdict, only counters read after the worker was reaped and before its
// group was removed (the kernel raises oom_kill before it sends the
// SIGKILL, so the counter is already up when wait returns).
//
// It does not kill, reap or remove anything. A Watcher is safe for
// concurrent use; Run must be called once, by the Watcher's owner.
package oomwatch
