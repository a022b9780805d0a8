package sched

import "errors"

// Errors returned by [Queue.Push]. They are sentinels: test for them with
// errors.Is, since Push may wrap them with the offending ID or priority.
var (
	// ErrFull is returned by Push when the queue already holds maxBacklog
	// items. Nothing is queued; the caller may retry after a Pop, Remove,
	// RemoveClient, Expire or Drain frees room.
	ErrFull = errors.New("sched: backlog full")

	// ErrInvalidPriority is returned (wrapped) by Push when Item.Priority is
	// negative. Nothing is queued.
	ErrInvalidPriority = errors.New("sched: invalid priority")

	// ErrDuplicate is returned (wrapped) by Push when an item with the same ID
	// is already queued. Nothing is queued and the existing item is untouched.
	ErrDuplicate = errors.New("sched: duplicate item id")
)
