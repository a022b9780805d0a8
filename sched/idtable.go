package sched

import "math/rand/v2"

// idTable maps item IDs to their entries. It is an open-addressing hash table
// with linear probing and backward-shift deletion: unlike a built-in map it
// leaves no tombstones behind, so a queue that constantly inserts new IDs and
// deletes old ones keeps short probe sequences (the built-in map was the
// dominant cost of Push+Pop at 100,000 queued items). The hash is seeded per
// table, so no fixed set of IDs collides in every queue.
type idTable[T any] struct {
	slots []idSlot[T] // len is 0 or a power of two; e == nil marks a free slot
	shift uint        // 64 - log2(len(slots))
	n     int
	seed  uint64
}

type idSlot[T any] struct {
	id uint64
	e  *entry[T]
}

const idTableMinSize = 16

func (t *idTable[T]) home(id uint64) int {
	x := id ^ t.seed
	x ^= x >> 32
	x *= 0x9e3779b97f4a7c15
	return int(x >> t.shift)
}

// get returns the entry for id, or nil.
func (t *idTable[T]) get(id uint64) *entry[T] {
	if t.n == 0 {
		return nil
	}
	mask := len(t.slots) - 1
	for i := t.home(id); ; i = (i + 1) & mask {
		s := &t.slots[i]
		if s.e == nil {
			return nil
		}
		if s.id == id {
			return s.e
		}
	}
}

// find makes room for one more ID and returns the slot that holds id, or the
// free slot where id belongs, and the entry already there (nil if none). The
// slot index is valid until the next call that modifies the table.
func (t *idTable[T]) find(id uint64) (int, *entry[T]) {
	if 2*(t.n+1) > len(t.slots) { // keep the load factor <= 1/2
		t.resize(max(idTableMinSize, 2*len(t.slots)))
	}
	mask := len(t.slots) - 1
	for i := t.home(id); ; i = (i + 1) & mask {
		s := &t.slots[i]
		if s.e == nil || s.id == id {
			return i, s.e
		}
	}
}

// setAt stores a new id at the free slot i returned by find.
func (t *idTable[T]) setAt(i int, id uint64, e *entry[T]) {
	t.slots[i] = idSlot[T]{id, e}
	t.n++
}

// delete removes id, which must be present.
func (t *idTable[T]) delete(id uint64) {
	mask := len(t.slots) - 1
	i := t.home(id)
	for t.slots[i].id != id || t.slots[i].e == nil {
		i = (i + 1) & mask
	}
	// Backward shift: move later members of the probe run into the hole
	// unless their home lies cyclically in (hole, j].
	for j := i; ; {
		j = (j + 1) & mask
		s := t.slots[j]
		if s.e == nil {
			break
		}
		h := t.home(s.id)
		if i <= j {
			if i < h && h <= j {
				continue
			}
		} else if i < h || h <= j {
			continue
		}
		t.slots[i] = s
		i = j
	}
	t.slots[i] = idSlot[T]{}
	t.n--
	if len(t.slots) > idTableMinSize && 8*t.n < len(t.slots) {
		t.resize(len(t.slots) / 2)
	}
}

func (t *idTable[T]) resize(size int) {
	if t.seed == 0 {
		t.seed = rand.Uint64() | 1
	}
	old := t.slots
	t.slots = make([]idSlot[T], size)
	t.shift = 64
	for s := size; s > 1; s >>= 1 {
		t.shift--
	}
	mask := size - 1
	for _, s := range old {
		if s.e == nil {
			continue
		}
		i := t.home(s.id)
		for t.slots[i].e != nil {
			i = (i + 1) & mask
		}
		t.slots[i] = s
	}
}
