package sched

import (
	"cmp"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

var t0 = time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)

func at(sec int) time.Time { return t0.Add(time.Duration(sec) * time.Second) }

// it builds an item whose Value is its ID in text, so that payloads are
// checked along with everything else.
func it(id uint64, client uint64, prio int) Item[string] {
	return Item[string]{ID: id, Priority: prio, Client: client, Value: fmt.Sprint("v", id)}
}

func itd(id uint64, client uint64, prio int, deadline time.Time) Item[string] {
	x := it(id, client, prio)
	x.Deadline = deadline
	return x
}

func sameItem(a, b Item[string]) bool {
	return a.ID == b.ID && a.Priority == b.Priority && a.Client == b.Client &&
		a.Deadline.Equal(b.Deadline) && a.Value == b.Value
}

func ids(items []Item[string]) []uint64 {
	out := make([]uint64, len(items))
	for i, x := range items {
		out[i] = x.ID
	}
	return out
}

func mustPush(t *testing.T, q *Queue[string], items ...Item[string]) {
	t.Helper()
	for _, x := range items {
		if err := q.Push(x); err != nil {
			t.Fatalf("Push(%d) = %v, want nil", x.ID, err)
		}
	}
}

func popIDs(t *testing.T, q *Queue[string], n int) []uint64 {
	t.Helper()
	var out []uint64
	for i := 0; i < n; i++ {
		x, ok := q.Pop()
		if !ok {
			t.Fatalf("Pop() #%d = _, false, want an item (Len %d)", i, q.Len())
		}
		out = append(out, x.ID)
	}
	return out
}

func popAll(q *Queue[string]) []uint64 {
	var out []uint64
	for {
		x, ok := q.Pop()
		if !ok {
			return out
		}
		out = append(out, x.ID)
	}
}

func TestPopOrder(t *testing.T) {
	tests := []struct {
		name  string
		items []Item[string]
		want  []uint64
	}{
		{
			name:  "empty",
			items: nil,
			want:  nil,
		},
		{
			name:  "single client priority then FIFO",
			items: []Item[string]{it(1, 7, 5), it(2, 7, 1), it(3, 7, 3), it(4, 7, 0), it(5, 7, 1)},
			want:  []uint64{4, 2, 5, 3, 1},
		},
		{
			name:  "single client all same priority is FIFO",
			items: []Item[string]{it(9, 1, 2), it(3, 1, 2), it(7, 1, 2), it(1, 1, 2)},
			want:  []uint64{9, 3, 7, 1},
		},
		{
			name: "two clients alternate within a priority",
			items: []Item[string]{
				it(1, 1, 0), it(2, 1, 0), it(3, 1, 0),
				it(11, 2, 0), it(12, 2, 0),
			},
			want: []uint64{1, 11, 2, 12, 3},
		},
		{
			name: "strict priority beats rotation",
			items: []Item[string]{
				it(1, 1, 2), it(2, 1, 2),
				it(11, 2, 1), it(12, 2, 1),
				it(21, 3, 0),
			},
			want: []uint64{21, 11, 12, 1, 2},
		},
		{
			name: "large and sparse priorities",
			items: []Item[string]{
				it(1, 1, 1<<40), it(2, 2, 0), it(3, 1, 17), it(4, 3, 1<<20), it(5, 2, 17),
			},
			want: []uint64{2, 3, 5, 4, 1},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			q := New[string](0)
			mustPush(t, q, tc.items...)
			if got := q.Len(); got != len(tc.items) {
				t.Fatalf("Len() = %d, want %d", got, len(tc.items))
			}
			byID := map[uint64]Item[string]{}
			for _, x := range tc.items {
				byID[x.ID] = x
			}
			for i, w := range tc.want {
				got, ok := q.Pop()
				if !ok || !sameItem(got, byID[w]) {
					t.Fatalf("Pop() #%d = %+v, %v, want %+v, true", i, got, ok, byID[w])
				}
			}
			if got, ok := q.Pop(); ok {
				t.Fatalf("Pop() = %+v, true, want empty queue", got)
			}
			if got := q.Len(); got != 0 {
				t.Fatalf("Len() = %d, want 0", got)
			}
		})
	}
}

func TestFairness(t *testing.T) {
	const clientA, clientB = 1, 2
	tests := []struct {
		name     string
		urgentA  bool // A also pushes one priority-0 item after B's items
		wantHead []uint64
	}{
		{name: "flood does not starve", urgentA: false, wantHead: []uint64{1, 10001, 2, 10002}},
		{name: "priority 0 from flooder first", urgentA: true, wantHead: []uint64{5000, 1, 10001, 2, 10002}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			q := New[string](0)
			for i := uint64(1); i <= 1000; i++ {
				mustPush(t, q, it(i, clientA, 1))
			}
			for i := uint64(10001); i <= 10010; i++ {
				mustPush(t, q, it(i, clientB, 1))
			}
			if tc.urgentA {
				mustPush(t, q, it(5000, clientA, 0))
			}
			n := 20
			if tc.urgentA {
				n = 21
			}
			got := popIDs(t, q, n)
			if !slices.Equal(got[:len(tc.wantHead)], tc.wantHead) {
				t.Fatalf("first Pop()s = %v, want prefix %v", got, tc.wantHead)
			}
			seenB := 0
			for i, id := range got {
				if id > 10000 {
					seenB++
					if want := uint64(10000 + seenB); id != want {
						t.Fatalf("Pop() #%d = %d, want %d (B in FIFO order)", i, id, want)
					}
				}
				if id == 5000 && i != 0 {
					t.Fatalf("Pop() #%d = 5000, want it at #0 (priority 0)", i)
				}
			}
			if seenB != 10 {
				t.Fatalf("B items in first %d Pop()s = %d, want 10 (got %v)", n, seenB, got)
			}
			// After B is done, A's flood continues in FIFO order.
			x, _ := q.Pop()
			if want := uint64(11); x.ID != want {
				t.Fatalf("Pop() after B drained = %d, want %d", x.ID, want)
			}
			if got, want := q.Len(), 1000-11; got != want {
				t.Fatalf("Len() = %d, want %d", got, want)
			}
		})
	}
}

// op is one step of a scripted scenario.
type op struct {
	push   *Item[string] // push this item
	pop    uint64        // pop and expect this ID (0: expect empty)
	remove uint64        // remove this ID ...
	ok     bool          // ... and expect this result
}

func pushOp(id, client uint64, prio int) op {
	x := it(id, client, prio)
	return op{push: &x}
}
func popOp(id uint64) op         { return op{pop: id} }
func rmOp(id uint64, ok bool) op { return op{remove: id, ok: ok} }

func runScript(t *testing.T, q *Queue[string], ops []op) {
	t.Helper()
	for i, o := range ops {
		switch {
		case o.push != nil:
			if err := q.Push(*o.push); err != nil {
				t.Fatalf("step %d: Push(%d) = %v, want nil", i, o.push.ID, err)
			}
		case o.remove != 0:
			n := q.Len()
			got, ok := q.Remove(o.remove)
			if ok != o.ok || (ok && got.ID != o.remove) {
				t.Fatalf("step %d: Remove(%d) = %d, %v, want %d, %v", i, o.remove, got.ID, ok, o.remove, o.ok)
			}
			want := n
			if ok {
				want--
			}
			if q.Len() != want {
				t.Fatalf("step %d: Len() after Remove = %d, want %d", i, q.Len(), want)
			}
		default:
			got, ok := q.Pop()
			if o.pop == 0 {
				if ok {
					t.Fatalf("step %d: Pop() = %d, true, want empty", i, got.ID)
				}
				continue
			}
			if !ok || got.ID != o.pop {
				t.Fatalf("step %d: Pop() = %d, %v, want %d, true", i, got.ID, ok, o.pop)
			}
		}
	}
}

func TestRotation(t *testing.T) {
	const A, B, C = 1, 2, 3
	tests := []struct {
		name string
		ops  []op
	}{
		{
			name: "three clients in order of arrival",
			ops: []op{
				pushOp(1, A, 0), pushOp(2, A, 0),
				pushOp(11, B, 0), pushOp(12, B, 0),
				pushOp(21, C, 0),
				popOp(1), popOp(11), popOp(21), popOp(2), popOp(12), popOp(0),
			},
		},
		{
			name: "client that empties rejoins at the end",
			ops: []op{
				pushOp(1, A, 0),
				pushOp(11, B, 0), pushOp(12, B, 0), pushOp(13, B, 0),
				popOp(1),        // A empties: rotation [B]
				popOp(11),       // [B]
				pushOp(2, A, 0), // A comes back behind B: [B A]
				popOp(12), popOp(2), popOp(13), popOp(0),
			},
		},
		{
			name: "client emptied by Remove rejoins at the end",
			ops: []op{
				pushOp(1, A, 0), pushOp(2, A, 0),
				pushOp(11, B, 0),
				pushOp(21, C, 0),
				rmOp(1, true), rmOp(2, true), // A leaves: [B C]
				pushOp(3, A, 0), // [B C A]
				popOp(11), popOp(21), popOp(3), popOp(0),
			},
		},
		{
			name: "new client joins behind the current rotation",
			ops: []op{
				pushOp(1, A, 0), pushOp(2, A, 0), pushOp(3, A, 0),
				pushOp(11, B, 0), pushOp(12, B, 0),
				popOp(1),         // [B A]
				pushOp(21, C, 0), // [B A C]
				popOp(11), popOp(2), popOp(21), popOp(12), popOp(3), popOp(0),
			},
		},
		{
			name: "rotations are per priority",
			ops: []op{
				pushOp(1, A, 1), pushOp(2, A, 1),
				pushOp(11, B, 1), pushOp(12, B, 1),
				pushOp(13, B, 0), pushOp(3, A, 0),
				// priority 0 rotation is [B A], priority 1 is [A B].
				popOp(13), popOp(3), popOp(1), popOp(11), popOp(2), popOp(12), popOp(0),
			},
		},
		{
			name: "removing a client's head keeps its turn",
			ops: []op{
				pushOp(1, A, 0), pushOp(2, A, 0),
				pushOp(11, B, 0), pushOp(12, B, 0),
				rmOp(1, true), // A still first: [A B]
				popOp(2), popOp(11), popOp(12), popOp(0),
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			runScript(t, New[string](0), tc.ops)
		})
	}
}

func TestRemove(t *testing.T) {
	const A, B = 1, 2
	tests := []struct {
		name string
		ops  []op
	}{
		{
			name: "removed item is never popped",
			ops: []op{
				pushOp(1, A, 0), pushOp(2, A, 0), pushOp(3, A, 0),
				rmOp(2, true),
				popOp(1), popOp(3), popOp(0),
			},
		},
		{
			name: "unknown id",
			ops:  []op{pushOp(1, A, 0), rmOp(99, false), popOp(1), popOp(0)},
		},
		{
			name: "twice",
			ops:  []op{pushOp(1, A, 0), pushOp(2, A, 0), rmOp(1, true), rmOp(1, false), popOp(2), popOp(0)},
		},
		{
			name: "already popped",
			ops:  []op{pushOp(1, A, 0), popOp(1), rmOp(1, false), popOp(0)},
		},
		{
			name: "last item of the best priority",
			ops: []op{
				pushOp(1, A, 5), pushOp(2, B, 0), pushOp(3, A, 0),
				rmOp(2, true), rmOp(3, true),
				popOp(1), popOp(0),
			},
		},
		{
			name: "tail and middle of a client FIFO",
			ops: []op{
				pushOp(1, A, 0), pushOp(2, A, 0), pushOp(3, A, 0), pushOp(4, A, 0),
				pushOp(11, B, 0),
				rmOp(4, true), rmOp(2, true),
				popOp(1), popOp(11), popOp(3), popOp(0),
			},
		},
		{
			name: "id can be reused after removal",
			ops:  []op{pushOp(1, A, 3), rmOp(1, true), pushOp(1, B, 0), popOp(1), popOp(0)},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			runScript(t, New[string](0), tc.ops)
		})
	}

	t.Run("returns the item", func(t *testing.T) {
		q := New[string](0)
		want := itd(7, 3, 2, at(10))
		mustPush(t, q, want)
		got, ok := q.Remove(7)
		if !ok || !sameItem(got, want) {
			t.Fatalf("Remove(7) = %+v, %v, want %+v, true", got, ok, want)
		}
		if d, ok := q.NextDeadline(); ok {
			t.Fatalf("NextDeadline() = %v, true, want false after Remove", d)
		}
	})
}

func TestRemoveClient(t *testing.T) {
	const A, B, C = 1, 2, 3
	tests := []struct {
		name      string
		items     []Item[string]
		client    uint64
		want      []uint64
		wantAfter []uint64 // pop order of what is left
	}{
		{
			name:      "unknown client",
			items:     []Item[string]{it(1, A, 0)},
			client:    C,
			want:      nil,
			wantAfter: []uint64{1},
		},
		{
			name: "in queue order across priorities",
			items: []Item[string]{
				it(1, A, 3), it(11, B, 1), it(2, A, 1), it(3, A, 0), it(12, B, 0), it(4, A, 1), it(5, A, 3),
			},
			client:    A,
			want:      []uint64{3, 2, 4, 1, 5},
			wantAfter: []uint64{12, 11},
		},
		{
			name: "other clients keep their rotation",
			items: []Item[string]{
				it(11, B, 0), it(12, B, 0), it(1, A, 0), it(21, C, 0), it(22, C, 0),
			},
			client:    A,
			want:      []uint64{1},
			wantAfter: []uint64{11, 21, 12, 22},
		},
		{
			name:      "only client",
			items:     []Item[string]{itd(1, A, 0, at(5)), it(2, A, 2)},
			client:    A,
			want:      []uint64{1, 2},
			wantAfter: nil,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			q := New[string](0)
			mustPush(t, q, tc.items...)
			got := q.RemoveClient(tc.client)
			if !slices.Equal(ids(got), tc.want) {
				t.Fatalf("RemoveClient(%d) = %v, want %v", tc.client, ids(got), tc.want)
			}
			if l, want := q.Len(), len(tc.wantAfter); l != want {
				t.Fatalf("Len() = %d, want %d", l, want)
			}
			if again := q.RemoveClient(tc.client); again != nil {
				t.Fatalf("second RemoveClient(%d) = %v, want nil", tc.client, ids(again))
			}
			if rest := popAll(q); !slices.Equal(rest, tc.wantAfter) {
				t.Fatalf("Pop()s after RemoveClient = %v, want %v", rest, tc.wantAfter)
			}
			// The client can come back.
			mustPush(t, q, it(100, tc.client, 0))
			if got := popAll(q); !slices.Equal(got, []uint64{100}) {
				t.Fatalf("Pop()s after rejoin = %v, want [100]", got)
			}
		})
	}
}

func TestExpire(t *testing.T) {
	const A, B = 1, 2
	items := []Item[string]{
		itd(1, A, 0, at(30)),
		itd(2, B, 1, at(10)),
		it(3, A, 0), // no deadline
		itd(4, A, 2, at(20)),
		itd(5, B, 0, at(10)), // ties with 2: submission order
		itd(6, A, 0, at(40)),
	}
	tests := []struct {
		name     string
		remove   []uint64 // removed before expiring
		now      time.Time
		want     []uint64
		wantNext time.Time // zero: none
		wantPops []uint64
	}{
		{
			name:     "nothing expired yet",
			now:      at(9),
			want:     nil,
			wantNext: at(10),
			wantPops: []uint64{1, 5, 3, 6, 2, 4},
		},
		{
			name:     "deadline equal to now expires",
			now:      at(10),
			want:     []uint64{2, 5},
			wantNext: at(20),
			wantPops: []uint64{1, 3, 6, 4},
		},
		{
			name:     "several in deadline order",
			now:      at(35),
			want:     []uint64{2, 5, 4, 1},
			wantNext: at(40),
			wantPops: []uint64{3, 6},
		},
		{
			name:     "everything with a deadline",
			now:      at(1000),
			want:     []uint64{2, 5, 4, 1, 6},
			wantNext: time.Time{},
			wantPops: []uint64{3},
		},
		{
			name:     "removed items are not expired and NextDeadline skips them",
			remove:   []uint64{2, 5, 4},
			now:      at(25),
			want:     nil,
			wantNext: at(30),
			wantPops: []uint64{1, 3, 6},
		},
		{
			name:     "removing the earliest moves NextDeadline",
			remove:   []uint64{5},
			now:      at(15),
			want:     []uint64{2},
			wantNext: at(20),
			wantPops: []uint64{1, 3, 6, 4},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			q := New[string](0)
			mustPush(t, q, items...)
			for _, id := range tc.remove {
				if _, ok := q.Remove(id); !ok {
					t.Fatalf("Remove(%d) = false, want true", id)
				}
			}
			n := q.Len()
			got := q.Expire(tc.now)
			if !slices.Equal(ids(got), tc.want) {
				t.Fatalf("Expire(%v) = %v, want %v", tc.now, ids(got), tc.want)
			}
			if l := q.Len(); l != n-len(tc.want) {
				t.Fatalf("Len() = %d, want %d", l, n-len(tc.want))
			}
			next, ok := q.NextDeadline()
			if ok != !tc.wantNext.IsZero() || !next.Equal(tc.wantNext) {
				t.Fatalf("NextDeadline() = %v, %v, want %v, %v", next, ok, tc.wantNext, !tc.wantNext.IsZero())
			}
			if again := q.Expire(tc.now); again != nil {
				t.Fatalf("second Expire(%v) = %v, want nil", tc.now, ids(again))
			}
			if pops := popAll(q); !slices.Equal(pops, tc.wantPops) {
				t.Fatalf("Pop()s after Expire = %v, want %v", pops, tc.wantPops)
			}
			if d, ok := q.NextDeadline(); ok {
				t.Fatalf("NextDeadline() on empty queue = %v, true, want false", d)
			}
		})
	}
}

func TestDrain(t *testing.T) {
	const A, B = 1, 2
	tests := []struct {
		name  string
		items []Item[string]
		want  []uint64
	}{
		{name: "empty", items: nil, want: nil},
		{
			name: "pop order",
			items: []Item[string]{
				it(1, A, 2), it(2, A, 1), it(3, A, 1), it(11, B, 1), itd(12, B, 0, at(3)), it(13, B, 1),
			},
			want: []uint64{12, 2, 11, 3, 13, 1},
		},
		{
			// More distinct priorities than the queue keeps idle levels for.
			name:  "many priorities",
			items: manyPriorities(40),
			want:  []uint64{40, 39, 38, 37, 36, 35, 34, 33, 32, 31, 30, 29, 28, 27, 26, 25, 24, 23, 22, 21, 20, 19, 18, 17, 16, 15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			q := New[string](0)
			mustPush(t, q, tc.items...)
			got := q.Drain()
			if !slices.Equal(ids(got), tc.want) {
				t.Fatalf("Drain() = %v, want %v", ids(got), tc.want)
			}
			if q.Len() != 0 {
				t.Fatalf("Len() after Drain = %d, want 0", q.Len())
			}
			if d, ok := q.NextDeadline(); ok {
				t.Fatalf("NextDeadline() after Drain = %v, true, want false", d)
			}
			if x, ok := q.Pop(); ok {
				t.Fatalf("Pop() after Drain = %d, true, want false", x.ID)
			}
			// Still usable, and ids are free again.
			mustPush(t, q, tc.items...)
			if got := q.Len(); got != len(tc.items) {
				t.Fatalf("Len() after refill = %d, want %d", got, len(tc.items))
			}
			if got := q.Drain(); !slices.Equal(ids(got), tc.want) {
				t.Fatalf("second Drain() = %v, want %v", ids(got), tc.want)
			}
		})
	}
}

// manyPriorities returns n items of two clients with IDs 1..n and priorities
// n-1..0.
func manyPriorities(n int) []Item[string] {
	var out []Item[string]
	for i := 1; i <= n; i++ {
		out = append(out, it(uint64(i), uint64(i%2), n-i))
	}
	return out
}

func TestBacklog(t *testing.T) {
	const A, B = 1, 2
	fill := func(t *testing.T) *Queue[string] {
		q := New[string](3)
		mustPush(t, q, itd(1, A, 0, at(1)), it(2, B, 0), it(3, A, 1))
		if err := q.Push(it(4, A, 0)); !errors.Is(err, ErrFull) {
			t.Fatalf("Push(4) on full queue = %v, want ErrFull", err)
		}
		if q.Len() != 3 {
			t.Fatalf("Len() = %d, want 3", q.Len())
		}
		return q
	}
	tests := []struct {
		name string
		free func(q *Queue[string]) int // frees room, returns items freed
	}{
		{name: "Pop", free: func(q *Queue[string]) int { _, ok := q.Pop(); return b2i(ok) }},
		{name: "Remove", free: func(q *Queue[string]) int { _, ok := q.Remove(2); return b2i(ok) }},
		{name: "RemoveClient", free: func(q *Queue[string]) int { return len(q.RemoveClient(A)) }},
		{name: "Expire", free: func(q *Queue[string]) int { return len(q.Expire(at(1))) }},
		{name: "Drain", free: func(q *Queue[string]) int { return len(q.Drain()) }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			q := fill(t)
			freed := tc.free(q)
			if freed == 0 {
				t.Fatalf("%s freed nothing", tc.name)
			}
			for i := 0; i < freed; i++ {
				if err := q.Push(it(uint64(10+i), B, 0)); err != nil {
					t.Fatalf("Push(%d) after %s = %v, want nil", 10+i, tc.name, err)
				}
			}
			if err := q.Push(it(99, B, 0)); !errors.Is(err, ErrFull) {
				t.Fatalf("Push(99) = %v, want ErrFull", err)
			}
		})
	}

	caps := []struct {
		name string
		max  int
		want int
	}{
		{"bounded", 3, 3},
		{"zero is unbounded", 0, 0},
		{"negative is unbounded", -5, 0},
	}
	for _, tc := range caps {
		t.Run("Cap "+tc.name, func(t *testing.T) {
			q := New[string](tc.max)
			if got := q.Cap(); got != tc.want {
				t.Fatalf("Cap() = %d, want %d", got, tc.want)
			}
			if tc.want == 0 {
				for i := uint64(0); i < 10000; i++ {
					mustPush(t, q, it(i, i%7, int(i%3)))
				}
			}
		})
	}
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

func TestPushErrors(t *testing.T) {
	tests := []struct {
		name    string
		max     int
		queued  []Item[string]
		push    Item[string]
		wantErr error
	}{
		{name: "negative priority", push: it(1, 1, -1), wantErr: ErrInvalidPriority},
		{name: "duplicate id", queued: []Item[string]{it(1, 1, 0)}, push: it(1, 2, 5), wantErr: ErrDuplicate},
		{name: "duplicate id on full queue", max: 1, queued: []Item[string]{it(1, 1, 0)}, push: it(1, 2, 0), wantErr: ErrDuplicate},
		{name: "invalid priority on full queue", max: 1, queued: []Item[string]{it(1, 1, 0)}, push: it(2, 2, -3), wantErr: ErrInvalidPriority},
		{name: "zero id is fine", push: it(0, 0, 0), wantErr: nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			q := New[string](tc.max)
			mustPush(t, q, tc.queued...)
			err := q.Push(tc.push)
			if !errors.Is(err, tc.wantErr) || (tc.wantErr == nil) != (err == nil) {
				t.Fatalf("Push(%+v) = %v, want %v", tc.push, err, tc.wantErr)
			}
			wantLen := len(tc.queued)
			if tc.wantErr == nil {
				wantLen++
			}
			if q.Len() != wantLen {
				t.Fatalf("Len() = %d, want %d", q.Len(), wantLen)
			}
			// Queued items are untouched.
			for _, want := range tc.queued {
				got, ok := q.Remove(want.ID)
				if !ok || !sameItem(got, want) {
					t.Fatalf("Remove(%d) = %+v, %v, want %+v, true", want.ID, got, ok, want)
				}
			}
		})
	}
}

// model is a deliberately simple reference implementation: a flat slice of
// items, scanned on every operation, plus one rotation slice of clients per
// priority.
type model struct {
	max   int
	seq   uint64
	items []mItem
	rot   map[int][]uint64
}

type mItem struct {
	Item[string]
	seq uint64
}

func newModel(max int) *model { return &model{max: max, rot: map[int][]uint64{}} }

func (m *model) has(client uint64, prio int) bool {
	for _, x := range m.items {
		if x.Client == client && x.Priority == prio {
			return true
		}
	}
	return false
}

func (m *model) push(x Item[string]) error {
	if x.Priority < 0 {
		return ErrInvalidPriority
	}
	for _, y := range m.items {
		if y.ID == x.ID {
			return ErrDuplicate
		}
	}
	if m.max > 0 && len(m.items) >= m.max {
		return ErrFull
	}
	if !m.has(x.Client, x.Priority) {
		m.rot[x.Priority] = append(m.rot[x.Priority], x.Client)
	}
	m.seq++
	m.items = append(m.items, mItem{x, m.seq})
	return nil
}

// take removes items[i], dropping its client from the rotation if that was
// the client's last item at that priority.
func (m *model) take(i int) Item[string] {
	x := m.items[i]
	m.items = slices.Delete(m.items, i, i+1)
	if !m.has(x.Client, x.Priority) {
		r := m.rot[x.Priority]
		m.rot[x.Priority] = slices.DeleteFunc(r, func(c uint64) bool { return c == x.Client })
	}
	return x.Item
}

func (m *model) pop() (Item[string], bool) {
	if len(m.items) == 0 {
		return Item[string]{}, false
	}
	best := m.items[0].Priority
	for _, x := range m.items {
		best = min(best, x.Priority)
	}
	client := m.rot[best][0]
	idx := -1
	for i, x := range m.items { // first in submission order
		if x.Client == client && x.Priority == best {
			idx = i
			break
		}
	}
	x := m.take(idx)
	if r := m.rot[best]; len(r) > 0 && r[0] == client {
		m.rot[best] = append(r[1:], client)
	}
	return x, true
}

func (m *model) remove(id uint64) (Item[string], bool) {
	for i, x := range m.items {
		if x.ID == id {
			return m.take(i), true
		}
	}
	return Item[string]{}, false
}

// removeWhere removes every item matching f, ordered by less.
func (m *model) removeWhere(f func(mItem) bool, less func(a, b mItem) int) []Item[string] {
	var sel []mItem
	for _, x := range m.items {
		if f(x) {
			sel = append(sel, x)
		}
	}
	slices.SortFunc(sel, less)
	var out []Item[string]
	for _, x := range sel {
		y, _ := m.remove(x.ID)
		out = append(out, y)
	}
	return out
}

func (m *model) removeClient(c uint64) []Item[string] {
	return m.removeWhere(func(x mItem) bool { return x.Client == c }, func(a, b mItem) int {
		return cmp.Or(cmp.Compare(a.Priority, b.Priority), cmp.Compare(a.seq, b.seq))
	})
}

func (m *model) expire(now time.Time) []Item[string] {
	return m.removeWhere(func(x mItem) bool {
		return !x.Deadline.IsZero() && !x.Deadline.After(now)
	}, func(a, b mItem) int {
		return cmp.Or(a.Deadline.Compare(b.Deadline), cmp.Compare(a.seq, b.seq))
	})
}

func (m *model) nextDeadline() (time.Time, bool) {
	var d time.Time
	for _, x := range m.items {
		if !x.Deadline.IsZero() && (d.IsZero() || x.Deadline.Before(d)) {
			d = x.Deadline
		}
	}
	return d, !d.IsZero()
}

func (m *model) drain() []Item[string] {
	var out []Item[string]
	for {
		x, ok := m.pop()
		if !ok {
			return out
		}
		out = append(out, x)
	}
}

func sameItems(a, b []Item[string]) bool {
	return slices.EqualFunc(a, b, sameItem)
}

func TestModel(t *testing.T) {
	tests := []struct {
		name    string
		seed    uint64
		max     int
		clients int
		prios   int
		steps   int
	}{
		{name: "bounded few clients", seed: 1, max: 40, clients: 4, prios: 3, steps: 5000},
		{name: "unbounded many clients", seed: 2, max: 0, clients: 12, prios: 5, steps: 5000},
		{name: "one client", seed: 3, max: 25, clients: 1, prios: 4, steps: 3000},
		{name: "one priority", seed: 4, max: 0, clients: 6, prios: 1, steps: 3000},
		{name: "tiny backlog", seed: 5, max: 3, clients: 3, prios: 2, steps: 3000},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rng := rand.New(rand.NewPCG(tc.seed, 0x5eed))
			q := New[string](tc.max)
			m := newModel(tc.max)
			now := t0
			nextID := uint64(1)
			var stats struct{ pushed, full, dup, invalid, popped, removed, expired, drains, maxLen int }
			// randID returns a queued ID most of the time, else one that was
			// never used or has already left the queue.
			randID := func() uint64 {
				if len(m.items) > 0 && rng.IntN(4) != 0 {
					return m.items[rng.IntN(len(m.items))].ID
				}
				return uint64(rng.IntN(int(nextID) + 10))
			}
			for step := 0; step < tc.steps; step++ {
				// Alternate between filling and draining phases so that the
				// queue reaches its backlog limit and empties again.
				pushPct, popPct := 60, 15
				if step/250%2 == 1 {
					pushPct, popPct = 25, 50
				}
				switch r := rng.IntN(100); {
				case r < pushPct: // push
					var x Item[string]
					id := nextID
					if rng.IntN(20) == 0 {
						id = randID() // maybe a duplicate
					} else {
						nextID++
					}
					x = it(id, uint64(rng.IntN(tc.clients)), rng.IntN(tc.prios))
					if rng.IntN(50) == 0 {
						x.Priority = -1 - rng.IntN(3)
					}
					if rng.IntN(3) == 0 {
						x.Deadline = now.Add(time.Duration(1+rng.IntN(60)) * time.Second)
					}
					gotErr, wantErr := q.Push(x), m.push(x)
					if !errors.Is(gotErr, wantErr) || (gotErr == nil) != (wantErr == nil) {
						t.Fatalf("step %d: Push(%+v) = %v, want %v", step, x, gotErr, wantErr)
					}
					switch wantErr {
					case nil:
						stats.pushed++
					case ErrFull:
						stats.full++
					case ErrDuplicate:
						stats.dup++
					case ErrInvalidPriority:
						stats.invalid++
					}
				case r < pushPct+popPct: // pop
					peek, pok := q.Peek()
					got, ok := q.Pop()
					if pok != ok || !sameItem(peek, got) {
						t.Fatalf("step %d: Peek() = %+v, %v, but Pop() = %+v, %v", step, peek, pok, got, ok)
					}
					want, wok := m.pop()
					if ok != wok || !sameItem(got, want) {
						t.Fatalf("step %d: Pop() = %+v, %v, want %+v, %v", step, got, ok, want, wok)
					}
					stats.popped += b2i(ok)
				case r < pushPct+popPct+12: // remove
					id := randID()
					got, ok := q.Remove(id)
					want, wok := m.remove(id)
					if ok != wok || !sameItem(got, want) {
						t.Fatalf("step %d: Remove(%d) = %+v, %v, want %+v, %v", step, id, got, ok, want, wok)
					}
					stats.removed += b2i(ok)
				case r < pushPct+popPct+15: // remove client
					c := uint64(rng.IntN(tc.clients + 1))
					got, want := q.RemoveClient(c), m.removeClient(c)
					if !sameItems(got, want) {
						t.Fatalf("step %d: RemoveClient(%d) = %v, want %v", step, c, ids(got), ids(want))
					}
				case r < 99 || popPct == 15: // time passes, expire
					now = now.Add(time.Duration(rng.IntN(8)) * time.Second)
					got, want := q.Expire(now), m.expire(now)
					if !sameItems(got, want) {
						t.Fatalf("step %d: Expire(%v) = %v, want %v", step, now, ids(got), ids(want))
					}
					stats.expired += len(got)
				default: // drain
					got, want := q.Drain(), m.drain()
					if !sameItems(got, want) {
						t.Fatalf("step %d: Drain() = %v, want %v", step, ids(got), ids(want))
					}
					stats.drains++
				}
				if got, want := q.Len(), len(m.items); got != want {
					t.Fatalf("step %d: Len() = %d, want %d", step, got, want)
				}
				stats.maxLen = max(stats.maxLen, q.Len())
				gd, gok := q.NextDeadline()
				wd, wok := m.nextDeadline()
				if gok != wok || !gd.Equal(wd) {
					t.Fatalf("step %d: NextDeadline() = %v, %v, want %v, %v", step, gd, gok, wd, wok)
				}
			}
			got, want := q.Drain(), m.drain()
			if !sameItems(got, want) {
				t.Fatalf("final Drain() = %v, want %v", ids(got), ids(want))
			}
			t.Logf("%+v", stats)
		})
	}
}

// TestShrinkAfterBurst checks that a burst of items does not pin memory once
// the queue is empty again, whichever way the items leave.
func TestShrinkAfterBurst(t *testing.T) {
	tests := []struct {
		name  string
		empty func(q *Queue[string]) int
	}{
		{name: "Expire", empty: func(q *Queue[string]) int { return len(q.Expire(at(1 << 20))) }},
		{name: "Drain", empty: func(q *Queue[string]) int { return len(q.Drain()) }},
		{name: "Pop", empty: func(q *Queue[string]) int { return len(popAll(q)) }},
	}
	const burst = 20000
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			q := New[string](0)
			for i := uint64(0); i < burst; i++ {
				mustPush(t, q, itd(i, i%50, int(i%5), at(int(i))))
			}
			if got := tc.empty(q); got != burst {
				t.Fatalf("%s removed %d items, want %d", tc.name, got, burst)
			}
			if c := cap(q.deadlines.s); c > 2048 {
				t.Fatalf("cap(deadlines) = %d after emptying, want <= 2048", c)
			}
			if n := len(q.byID.slots); n > 1024 {
				t.Fatalf("len(id index) = %d after emptying, want <= 1024", n)
			}
			if d, ok := q.NextDeadline(); ok || q.Len() != 0 {
				t.Fatalf("NextDeadline() = %v, %v, Len() = %d, want empty queue", d, ok, q.Len())
			}
			mustPush(t, q, itd(1, 1, 0, at(5)))
			if got := popAll(q); !slices.Equal(got, []uint64{1}) {
				t.Fatalf("Pop()s = %v, want [1]", got)
			}
		})
	}
}
