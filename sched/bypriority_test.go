package sched

import (
	"maps"
	"testing"
)

// TestByPriority: the per-priority counts follow pushes, pops, removals of
// one item and of a client's items, and leave no empty priority behind.
func TestByPriority(t *testing.T) {
	q := New[string](0)
	check := func(step string, want map[int]int) {
		t.Helper()
		if got := q.ByPriority(); !maps.Equal(got, want) {
			t.Errorf("after %s: ByPriority() = %v, want %v", step, got, want)
		}
	}
	check("nothing", map[int]int{})
	for _, x := range []Item[string]{it(1, 1, 0), it(2, 2, 0), it(3, 1, 5), it(4, 2, 5), it(5, 2, 5), it(6, 3, 9)} {
		if err := q.Push(x); err != nil {
			t.Fatal(err)
		}
	}
	check("six pushes", map[int]int{0: 2, 5: 3, 9: 1})
	q.Pop()
	check("a pop", map[int]int{0: 1, 5: 3, 9: 1})
	q.Remove(6)
	check("removing 6", map[int]int{0: 1, 5: 3})
	q.RemoveClient(2)
	check("removing client 2", map[int]int{5: 1})
	q.Drain()
	check("drain", map[int]int{})
}
