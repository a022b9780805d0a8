package sched

import (
	"math/rand/v2"
	"testing"
)

// TestIDTable checks the ID index against a built-in map through growth,
// backward-shift deletion and shrinking, with key patterns that defeat a
// naive hash (sequential, large strides, high bits only).
func TestIDTable(t *testing.T) {
	tests := []struct {
		name string
		key  func(i uint64) uint64
	}{
		{name: "sequential", key: func(i uint64) uint64 { return i }},
		{name: "stride 2^20", key: func(i uint64) uint64 { return i << 20 }},
		{name: "high bits", key: func(i uint64) uint64 { return i << 44 }},
		{name: "random", key: func(i uint64) uint64 { return i*0x9e3779b97f4a7c15 ^ 0xdeadbeef }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rng := rand.New(rand.NewPCG(7, 7))
			var tab idTable[int]
			ref := map[uint64]*entry[int]{}
			var live []uint64
			next := uint64(0)
			for step := 0; step < 60000; step++ {
				// Grow to ~5000 keys, then shrink back to empty.
				grow := step < 30000
				if r := rng.IntN(10); (grow && r < 7) || (!grow && r < 3) || len(live) == 0 {
					k := tc.key(next)
					next++
					i, old := tab.find(k)
					if old != nil {
						t.Fatalf("step %d: find(%#x) = %p, want nil", step, k, old)
					}
					e := &entry[int]{}
					tab.setAt(i, k, e)
					ref[k] = e
					live = append(live, k)
				} else {
					j := rng.IntN(len(live))
					k := live[j]
					live[j] = live[len(live)-1]
					live = live[:len(live)-1]
					tab.delete(k)
					delete(ref, k)
					if got := tab.get(k); got != nil {
						t.Fatalf("step %d: get(%#x) after delete = %p, want nil", step, k, got)
					}
				}
				if tab.n != len(ref) {
					t.Fatalf("step %d: n = %d, want %d", step, tab.n, len(ref))
				}
				if step%1000 == 0 {
					for k, e := range ref {
						if got := tab.get(k); got != e {
							t.Fatalf("step %d: get(%#x) = %p, want %p", step, k, got, e)
						}
						if _, got := tab.find(k); got != e {
							t.Fatalf("step %d: find(%#x) = %p, want %p", step, k, got, e)
						}
					}
					if got := tab.get(tc.key(next + 1)); got != nil {
						t.Fatalf("step %d: get(unknown) = %p, want nil", step, got)
					}
				}
			}
			if len(tab.slots) > 64 && 8*tab.n < len(tab.slots) {
				t.Fatalf("table did not shrink: %d slots for %d keys", len(tab.slots), tab.n)
			}
		})
	}
}
