package sched

import (
	"cmp"
	"fmt"
	"slices"
	"time"
)

// Item is one pending task as stored in a [Queue]. The queue stores the Item
// by value; Value is opaque to the queue and is never inspected or copied
// deeply.
type Item[T any] struct {
	// ID identifies the item. It is chosen by the caller and must be unique
	// among the items currently queued; it may be reused once the item has
	// left the queue.
	ID uint64
	// Priority orders items across the queue: lower numbers run first. It
	// must be >= 0.
	Priority int
	// Client identifies the submitter. Items of different clients at the same
	// priority are served round-robin.
	Client uint64
	// Deadline is the queue deadline: the item must not be started after it.
	// The zero Time means no deadline. The queue itself never looks at a
	// clock; see [Queue.Expire] and [Queue.NextDeadline].
	Deadline time.Time
	// Value is the caller's payload.
	Value T
}

// entry is the queue's internal record of one queued item. It is linked into
// its client's FIFO at its priority (prev/next) and, if it has a deadline,
// sits in the deadline heap at index dl. The item's client and priority
// are its FIFO's, and its deadline is kept as an offset from the queue's
// epoch: an entry is 64 bytes, where the Item it stands for is 56, and a
// large backlog is mostly entries.
type entry[T any] struct {
	id         uint64
	value      T
	deadline   time.Duration // from Queue.epoch; meaningful while dl >= 0
	seq        uint64        // submission order, for deadline-heap ties
	prev, next *entry[T]
	cq         *clientQ[T]
	dl         int // index in Queue.deadlines, or -1
}

// clientQ is one client's FIFO at one priority. It exists only while
// non-empty, and then it is linked into its level's rotation (rprev/rnext).
type clientQ[T any] struct {
	client       uint64
	lvl          *level[T]
	head, tail   *entry[T]
	rprev, rnext *clientQ[T]
}

// cqKey identifies one client's FIFO at one priority.
type cqKey struct {
	client uint64
	prio   int
}

// level holds all items at one priority: a rotation of non-empty client
// FIFOs. While non-empty it sits in the priority heap at index idx; an empty
// (idle) level has idx -1 and may stay in Queue.levels for reuse.
type level[T any] struct {
	prio         int
	idx          int
	rhead, rtail *clientQ[T]
}

// Bounds on the records kept for reuse, so that a queue in steady state does
// not allocate, while one that shrinks after a burst does not keep much more
// than this memory.
const (
	maxFreeEntries = 1024 // recycled entries
	maxFreeCQs     = 256  // recycled client FIFOs
	maxIdleLevels  = 16   // empty levels kept in Queue.levels
)

// Queue is cgpool's pending-task queue: strict priority, round-robin between
// clients within a priority, FIFO within a client. The zero Queue is not
// usable; create one with [New]. A Queue is not safe for concurrent use: the
// caller must serialize all method calls (the pool holds a lock around it).
// No method blocks.
type Queue[T any] struct {
	max int
	n   int
	seq uint64
	// epoch is the first deadline ever pushed: deadlines are kept as
	// offsets from it (Time.Sub and Add keep the monotonic reading).
	epoch time.Time

	byID      idTable[T]
	levels    map[int]*level[T]     // non-empty and a few idle levels
	prios     ixheap[*level[T]]     // non-empty levels, on prio
	cqs       map[cqKey]*clientQ[T] // non-empty client FIFOs
	deadlines ixheap[*entry[T]]     // entries with a deadline, on (Deadline, seq)

	// Free lists of recycled records (linked through next and rnext).
	freeEntries    *entry[T]
	freeCQs        *clientQ[T]
	nFreeE, nFreeC int
}

// New returns an empty queue that holds at most maxBacklog items; a
// maxBacklog <= 0 means unbounded. The caller owns the returned Queue. New
// does not block and cannot fail.
func New[T any](maxBacklog int) *Queue[T] {
	if maxBacklog < 0 {
		maxBacklog = 0
	}
	return &Queue[T]{
		max:    maxBacklog,
		levels: make(map[int]*level[T]),
		cqs:    make(map[cqKey]*clientQ[T]),
	}
}

// Len returns the exact number of items currently queued. It does not block.
func (q *Queue[T]) Len() int { return q.n }

// Cap returns the backlog limit given to [New], or 0 if the queue is
// unbounded. It does not block.
func (q *Queue[T]) Cap() int { return q.max }

// Push queues it behind the items already queued for the same client and
// priority. It does not block. The queue keeps a copy of it until it leaves
// through Pop, Remove, RemoveClient, Expire or Drain.
//
// Errors (nothing is queued in any of these cases):
//   - a wrapped [ErrInvalidPriority] if it.Priority < 0;
//   - a wrapped [ErrDuplicate] if an item with it.ID is already queued;
//   - [ErrFull] if the queue already holds Cap() items (bounded queues only).
func (q *Queue[T]) Push(it Item[T]) error {
	if it.Priority < 0 {
		return fmt.Errorf("%w: %d (id %d)", ErrInvalidPriority, it.Priority, it.ID)
	}
	slot, dup := q.byID.find(it.ID)
	if dup != nil {
		return fmt.Errorf("%w: %d", ErrDuplicate, it.ID)
	}
	if q.max > 0 && q.n >= q.max {
		return ErrFull
	}

	key := cqKey{it.Client, it.Priority}
	cq := q.cqs[key]
	if cq == nil {
		lvl := q.levels[it.Priority]
		if lvl == nil {
			lvl = &level[T]{prio: it.Priority, idx: -1}
			q.levels[it.Priority] = lvl
		}
		if lvl.idx < 0 {
			q.prios.push(lvl)
		}
		cq = q.newClientQ(it.Client, lvl)
		q.cqs[key] = cq
		// Join the end of the rotation.
		cq.rprev = lvl.rtail
		if lvl.rtail != nil {
			lvl.rtail.rnext = cq
		} else {
			lvl.rhead = cq
		}
		lvl.rtail = cq
	}

	q.seq++
	e := q.newEntry()
	*e = entry[T]{id: it.ID, value: it.Value, seq: q.seq, cq: cq, dl: -1, prev: cq.tail}
	if !it.Deadline.IsZero() {
		if q.epoch.IsZero() {
			q.epoch = it.Deadline
		}
		e.deadline = it.Deadline.Sub(q.epoch)
	}
	if cq.tail != nil {
		cq.tail.next = e
	} else {
		cq.head = e
	}
	cq.tail = e
	q.byID.setAt(slot, it.ID, e)
	if !it.Deadline.IsZero() {
		q.deadlines.push(e)
	}
	q.n++
	return nil
}

// Pop removes and returns the item that should run next, and true; it returns
// the zero Item and false if the queue is empty. It does not block and does
// not look at deadlines: call [Queue.Expire] first if expired items must not
// be started. The returned Item belongs to the caller.
func (q *Queue[T]) Pop() (Item[T], bool) {
	if q.n == 0 {
		return Item[T]{}, false
	}
	lvl := q.prios.min()
	cq := lvl.rhead
	e := cq.head
	it := q.itemOf(e)
	q.unlink(e)
	if cq.head != nil && lvl.rtail != cq {
		// The client still has items here: it goes to the end of the
		// rotation. (If it emptied, unlink already took it out.)
		lvl.rhead = cq.rnext
		lvl.rhead.rprev = nil
		cq.rnext = nil
		cq.rprev = lvl.rtail
		lvl.rtail.rnext = cq
		lvl.rtail = cq
	}
	return it, true
}

// Peek returns the item that Pop would return next, and true, without
// removing it; the zero Item and false if the queue is empty. It does not
// block. The returned Item's Value is shared with the queue.
func (q *Queue[T]) Peek() (Item[T], bool) {
	if q.n == 0 {
		return Item[T]{}, false
	}
	return q.itemOf(q.prios.min().rhead.head), true
}

// Remove cancels the queued item with the given id and returns it and true,
// or the zero Item and false if no such item is queued (never pushed, or
// already popped or removed). It runs in O(log n), does not block, and the
// returned Item belongs to the caller.
func (q *Queue[T]) Remove(id uint64) (Item[T], bool) {
	e := q.byID.get(id)
	if e == nil {
		return Item[T]{}, false
	}
	it := q.itemOf(e)
	q.unlink(e)
	return it, true
}

// RemoveClient removes every queued item submitted by client and returns them
// in the order in which Pop would have returned them (priority, then
// submission order). It returns nil if the client has nothing queued. It does
// not block; the returned slice belongs to the caller.
func (q *Queue[T]) RemoveClient(client uint64) []Item[T] {
	var cqs []*clientQ[T]
	count := 0
	for _, lvl := range q.prios.s {
		if cq := q.cqs[cqKey{client, lvl.prio}]; cq != nil {
			cqs = append(cqs, cq)
			for e := cq.head; e != nil; e = e.next {
				count++
			}
		}
	}
	if count == 0 {
		return nil
	}
	slices.SortFunc(cqs, func(a, b *clientQ[T]) int { return cmp.Compare(a.lvl.prio, b.lvl.prio) })
	out := make([]Item[T], 0, count)
	for _, cq := range cqs {
		for e := cq.head; e != nil; {
			next := e.next
			out = append(out, q.itemOf(e))
			q.unlink(e)
			e = next
		}
	}
	return out
}

// Expire removes and returns every queued item whose Deadline is non-zero and
// not after now, ordered by Deadline (ties in submission order). It returns
// nil if nothing has expired, in O(1). It does not block and does not read a
// clock; the returned slice belongs to the caller.
func (q *Queue[T]) Expire(now time.Time) []Item[T] {
	var out []Item[T]
	for q.deadlines.len() > 0 && !q.deadlineOf(q.deadlines.min()).After(now) {
		e := q.deadlines.min()
		out = append(out, q.itemOf(e))
		q.unlink(e)
	}
	return out
}

// NextDeadline returns the earliest Deadline among the queued items and true,
// or the zero Time and false if no queued item has a deadline. The pool can
// arm a single timer for it and call [Queue.Expire] when it fires. It does
// not block.
func (q *Queue[T]) NextDeadline() (time.Time, bool) {
	if q.deadlines.len() == 0 {
		return time.Time{}, false
	}
	return q.deadlineOf(q.deadlines.min()), true
}

// ByPriority returns how many items are queued at each priority; a
// priority with none is absent, and an empty queue gives an empty map. It
// walks every queued item (O(n)): it is meant for a metrics scrape, not for
// a scheduling decision. It does not block; the map belongs to the caller.
func (q *Queue[T]) ByPriority() map[int]int {
	out := make(map[int]int, len(q.prios.s))
	for _, lvl := range q.prios.s {
		n := 0
		for cq := lvl.rhead; cq != nil; cq = cq.rnext {
			for e := cq.head; e != nil; e = e.next {
				n++
			}
		}
		out[lvl.prio] = n
	}
	return out
}

// Drain removes every queued item and returns them in the order in which Pop
// would have returned them. It returns nil if the queue is empty. It does not
// block; the returned slice belongs to the caller. The queue stays usable.
func (q *Queue[T]) Drain() []Item[T] {
	if q.n == 0 {
		return nil
	}
	out := make([]Item[T], 0, q.n)
	for {
		it, ok := q.Pop()
		if !ok {
			return out
		}
		out = append(out, it)
	}
}

// unlink takes e out of every structure of the queue, dropping its client
// FIFO and level when they become empty, and recycles e: the caller must copy
// e.item before calling it.
func (q *Queue[T]) unlink(e *entry[T]) {
	cq := e.cq
	if e.prev != nil {
		e.prev.next = e.next
	} else {
		cq.head = e.next
	}
	if e.next != nil {
		e.next.prev = e.prev
	} else {
		cq.tail = e.prev
	}
	if e.dl >= 0 {
		q.dlRemove(e.dl)
	}
	q.byID.delete(e.id)
	q.n--
	q.freeEntry(e)
	if cq.head == nil {
		q.dropClientQ(cq)
	}
}

// dropClientQ removes an empty client FIFO from its level's rotation and from
// the index, and retires the level if that was its last client.
func (q *Queue[T]) dropClientQ(cq *clientQ[T]) {
	lvl := cq.lvl
	if cq.rprev != nil {
		cq.rprev.rnext = cq.rnext
	} else {
		lvl.rhead = cq.rnext
	}
	if cq.rnext != nil {
		cq.rnext.rprev = cq.rprev
	} else {
		lvl.rtail = cq.rprev
	}
	delete(q.cqs, cqKey{cq.client, lvl.prio})
	q.freeClientQ(cq)

	if lvl.rhead == nil {
		q.prios.remove(lvl.idx)
		if len(q.levels)-q.prios.len() > maxIdleLevels {
			delete(q.levels, lvl.prio)
		}
	}
}

// Free lists. Recycled records are zeroed so that they retain no payload.

func (q *Queue[T]) newEntry() *entry[T] {
	e := q.freeEntries
	if e == nil {
		return new(entry[T])
	}
	q.freeEntries = e.next
	q.nFreeE--
	return e
}

func (q *Queue[T]) freeEntry(e *entry[T]) {
	*e = entry[T]{}
	if q.nFreeE < maxFreeEntries {
		e.next = q.freeEntries
		q.freeEntries = e
		q.nFreeE++
	}
}

func (q *Queue[T]) newClientQ(client uint64, lvl *level[T]) *clientQ[T] {
	cq := q.freeCQs
	if cq == nil {
		cq = new(clientQ[T])
	} else {
		q.freeCQs = cq.rnext
		q.nFreeC--
		cq.rnext = nil
	}
	cq.client, cq.lvl = client, lvl
	return cq
}

func (q *Queue[T]) freeClientQ(cq *clientQ[T]) {
	*cq = clientQ[T]{}
	if q.nFreeC < maxFreeCQs {
		cq.rnext = q.freeCQs
		q.freeCQs = cq
		q.nFreeC++
	}
}

// itemOf rebuilds the Item an entry stands for; call it before unlink (which
// may recycle the entry's FIFO).
func (q *Queue[T]) itemOf(e *entry[T]) Item[T] {
	it := Item[T]{ID: e.id, Priority: e.cq.lvl.prio, Client: e.cq.client, Value: e.value}
	if e.dl >= 0 {
		it.Deadline = q.deadlineOf(e)
	}
	return it
}

func (q *Queue[T]) deadlineOf(e *entry[T]) time.Time { return q.epoch.Add(e.deadline) }

// Heap orders (see ixheap).

func (l *level[T]) before(o *level[T]) bool { return l.prio < o.prio }
func (l *level[T]) setIndex(i int)          { l.idx = i }

// An entry's deadline order is (Deadline, seq): arrival breaks ties.
func (e *entry[T]) before(o *entry[T]) bool {
	if e.deadline == o.deadline {
		return e.seq < o.seq
	}
	return e.deadline < o.deadline
}
func (e *entry[T]) setIndex(i int) { e.dl = i }

// dlRemove takes the entry at index i out of the deadline heap and gives
// memory back after a burst of deadlines.
func (q *Queue[T]) dlRemove(i int) {
	q.deadlines.remove(i)
	if c := cap(q.deadlines.s); c > 1024 && len(q.deadlines.s) < c/4 {
		q.deadlines.s = append(make([]*entry[T], 0, c/2), q.deadlines.s...)
	}
}
