package sched

import (
	"math/rand/v2"
	"testing"
	"time"
)

const (
	benchItems   = 100_000
	benchClients = 100
	benchPrios   = 8
)

// benchQueue returns a queue holding benchItems items spread over
// benchClients clients and benchPrios priorities, and a table of random
// priorities/deadline offsets for the timed loop.
func benchQueue(b *testing.B, withDeadlines bool) (*Queue[int], []int) {
	b.Helper()
	rng := rand.New(rand.NewPCG(42, 42))
	q := New[int](0)
	for i := 0; i < benchItems; i++ {
		x := Item[int]{ID: uint64(i), Priority: rng.IntN(benchPrios), Client: uint64(rng.IntN(benchClients)), Value: i}
		if withDeadlines {
			x.Deadline = t0.Add(time.Duration(rng.IntN(3600)) * time.Second)
		}
		if err := q.Push(x); err != nil {
			b.Fatal(err)
		}
	}
	rnd := make([]int, 1<<16)
	for i := range rnd {
		rnd[i] = rng.IntN(1 << 30)
	}
	return q, rnd
}

// BenchmarkPushPop measures one Push plus one Pop with the queue in steady
// state at 100,000 items from 100 clients (and, for comparison, on an empty
// queue where every Push creates and every Pop drops a level).
func BenchmarkPushPop(b *testing.B) {
	for _, bc := range []struct {
		name      string
		prefill   bool
		deadlines bool
	}{
		{"100k-items/100-clients", true, false},
		{"100k-items/100-clients/deadlines", true, true},
		{"empty-queue", false, false},
	} {
		b.Run(bc.name, func(b *testing.B) {
			var q *Queue[int]
			rnd := make([]int, 1<<16)
			if bc.prefill {
				q, rnd = benchQueue(b, bc.deadlines)
			} else {
				q = New[int](0)
			}
			id := uint64(benchItems)
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; b.Loop(); i++ {
				r := rnd[i&(len(rnd)-1)]
				x := Item[int]{ID: id, Priority: r % benchPrios, Client: uint64(r>>3) % benchClients, Value: i}
				if bc.deadlines {
					x.Deadline = t0.Add(time.Duration(r%3600) * time.Second)
				}
				id++
				if err := q.Push(x); err != nil {
					b.Fatal(err)
				}
				if _, ok := q.Pop(); !ok {
					b.Fatal("Pop() = false")
				}
			}
		})
	}
}

// BenchmarkPushRemove measures one Push plus one Remove of a random queued
// item at 100,000 items.
func BenchmarkPushRemove(b *testing.B) {
	q, rnd := benchQueue(b, true)
	live := make([]uint64, benchItems)
	for i := range live {
		live[i] = uint64(i)
	}
	id := uint64(benchItems)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		r := rnd[i&(len(rnd)-1)]
		if err := q.Push(Item[int]{ID: id, Priority: r % benchPrios, Client: uint64(r>>3) % benchClients,
			Deadline: t0.Add(time.Duration(r%3600) * time.Second)}); err != nil {
			b.Fatal(err)
		}
		k := r % len(live)
		if _, ok := q.Remove(live[k]); !ok {
			b.Fatalf("Remove(%d) = false", live[k])
		}
		live[k] = id
		id++
	}
}

// BenchmarkExpireNothing measures Expire when no item has expired, at
// 100,000 items with deadlines.
func BenchmarkExpireNothing(b *testing.B) {
	q, _ := benchQueue(b, true)
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if got := q.Expire(t0.Add(-time.Second)); got != nil {
			b.Fatal("expired something")
		}
	}
}
