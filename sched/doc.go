// Package sched owns cgpool's pending-task queue: it decides which queued
// task runs next.
//
// # What it owns
//
// A [Queue] holds tasks that have been submitted but not yet started. Its
// order is:
//
//  1. Strict priority: a lower Priority number always runs first.
//  2. Within one priority, round-robin between clients: every client has its
//     own FIFO at that priority, and the clients that have items there take
//     turns, one item each, in the order in which they (last) became
//     non-empty at that priority. A client that empties and comes back joins
//     the end of the rotation.
//  3. Within one client and priority, submission (FIFO) order.
//
// With a single client the order is therefore exactly priority, then
// submission order. A client that floods a priority cannot starve another
// client at the same priority: their items come out interleaved 1:1.
//
// The queue also tracks optional queue deadlines (the time after which an item
// must no longer be started) so that the pool can expire stale items with
// [Queue.Expire] and arm a single timer from [Queue.NextDeadline], and it
// enforces an optional backlog limit ([ErrFull]).
//
// # What it does not do
//
// The package starts no goroutines, arms no timers, reads no clock (callers
// pass "now" to [Queue.Expire]) and takes no locks. No operation blocks. It
// does not run, retry or report tasks; it only stores and orders them.
//
// # Concurrency
//
// A Queue is not safe for concurrent use. The pool holds its own lock around
// every call; two goroutines must never call methods of the same Queue at the
// same time without such external synchronization.
//
// # Complexity and memory
//
// Push, Pop and Remove run in O(log n) (n items queued) or better; removal is
// eager (items are unlinked in O(1) from intrusive lists and from an
// open-addressing ID index that leaves no tombstones), so Len is always exact
// and Pop never meets a removed item. Expire costs O(k log n) for k expired
// items and O(1) when nothing has expired. RemoveClient costs O(p + m log n)
// for a client with m queued items, p being the number of priorities that
// have items. A queue in steady state does not allocate: it recycles a
// bounded number of internal records, and its index and deadline heap shrink
// again after a burst.
package sched
