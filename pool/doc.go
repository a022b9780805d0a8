// Package pool is cgpool's supervisor: named pools of worker slots, each
// slot a cgroup subtree <root>/<pool>/w-<n> carrying the pool's limits,
// with the worker (or, in exec pools, the task's command) in the leaf
// w-<n>/worker. It owns the task state machine (queued, running, one
// terminal outcome), worker lifecycle (start, retire, replace, scale
// between min and max), statistics, shutdown, and the unix-socket server
// that speaks package ipc's client protocol.
//
// The supervisor owns every deadline: a timeout or a hard cancel writes
// cgroup.kill on the slot, so a task that ignores every signal or never
// yields the CPU still ends on time, and so does everything it started.
// Why a worker died is decided by oomwatch.Classify from the slot's OOM
// counters, read after the worker was reaped and before the slot is removed.
//
// Worker start-up policy: a worker that fails to start, or exits before it
// says hello, is counted (worker_start_failures, last_start_error, and the
// slot's start_error in Status) and tried again after a back-off that
// doubles up to 5 s. While no worker of the pool runs, each failure also
// fails the task a worker would take next with a process error (reason
// crashed, with the start error), so that a broken worker program never
// leaves a task waiting; while a healthy worker runs, the queue is its. A
// worker whose initializer fails (hello carries init_error) is logged and
// counted (initializer_failures) and serves tasks anyway, as Deadpool does.
//
// Exec commands' output: with an ExecIO.Output, stdout and stderr are
// handed on as they are read (one reader goroutine per stream), so
// nothing is cut and the supervisor holds no more than a read buffer: a
// reader that does not keep up stalls the command on its full pipe, and
// the task's timeout, which covers the delivery of the output too, still
// ends it.
// Without Output, each stream is kept up to Config.OutputLimit and cut
// past it (the outcome says so). ExecIO.MaxOutput bounds both streams
// together: past it the command is killed (reason output_limit). Once a
// command has ended and its slot is empty, every writer in the slot is
// dead: what the pipes hold is read at once, and a pipe that neither has
// data nor ends (a process outside the slot holds it) is given up after
// a short grace, so that no task holds its slot past its end. The
// Server's stream_output is such an Output: a chunk waits in the reader
// goroutine while the client's outbox holds more than 1 MiB, so a client
// that does not read holds back its own command, never a slot's
// goroutine or the daemon's memory.
//
// Goroutines: each slot has one goroutine (owned by its Pool, joined by
// Shutdown), each worker process one reader of its socket and the one
// waiter of package spawn. Pool and Supervisor are safe for concurrent use.
package pool
