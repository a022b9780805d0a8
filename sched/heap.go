package sched

// ixheap is a binary min-heap whose elements know their own index in it,
// so that any of them can be removed in O(log n). The queue keeps two: its
// non-empty priority levels (on priority) and its items with a deadline
// (on deadline, then arrival).
type ixheap[E heapElem[E]] struct{ s []E }

// heapElem is what an ixheap holds: an order, and a place to record the
// element's index (-1 once it has left the heap).
type heapElem[E any] interface {
	before(E) bool
	setIndex(int)
}

func (h *ixheap[E]) len() int { return len(h.s) }

func (h *ixheap[E]) min() E { return h.s[0] }

func (h *ixheap[E]) push(e E) {
	e.setIndex(len(h.s))
	h.s = append(h.s, e)
	h.up(len(h.s) - 1)
}

// remove takes out the element at index i.
func (h *ixheap[E]) remove(i int) {
	last := len(h.s) - 1
	h.s[i].setIndex(-1)
	if i != last {
		h.s[i] = h.s[last]
		h.s[i].setIndex(i)
	}
	var zero E
	h.s[last] = zero
	h.s = h.s[:last]
	if i != last && !h.down(i) {
		h.up(i)
	}
}

func (h *ixheap[E]) swap(i, j int) {
	h.s[i], h.s[j] = h.s[j], h.s[i]
	h.s[i].setIndex(i)
	h.s[j].setIndex(j)
}

func (h *ixheap[E]) up(i int) {
	for i > 0 {
		p := (i - 1) / 2
		if !h.s[i].before(h.s[p]) {
			break
		}
		h.swap(i, p)
		i = p
	}
}

// down moves the element at i down to its place; it reports whether it
// moved.
func (h *ixheap[E]) down(i int) bool {
	start := i
	for {
		c := 2*i + 1
		if c >= len(h.s) {
			break
		}
		if r := c + 1; r < len(h.s) && h.s[r].before(h.s[c]) {
			c = r
		}
		if !h.s[c].before(h.s[i]) {
			break
		}
		h.swap(i, c)
		i = c
	}
	return i != start
}
