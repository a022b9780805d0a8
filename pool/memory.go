package pool

import (
	"runtime/debug"
	"time"
)

// A backlog of many tasks is most of a supervisor's memory, and Go keeps
// the heap it grew to: a burst of 100,000 queued tasks left a daemon at
// twice their live size, and it kept that long after the queue drained.
// So when a pool's queue has grown by a quarter past scavengeMin, and a
// second after it drained from there (when the drained tasks' outcomes
// have gone out and nothing refers to them), the pool has the runtime
// collect and return what is free (debug.FreeOSMemory, in a goroutine of
// the pool's, one at a time): the daemon's memory then follows its
// backlog, both ways. A burst of 100,000 tasks costs about ten collections.
const scavengeMin = 8192

// drainedDelay is how long after the queue drained its memory is returned.
const drainedDelay = time.Second

// queueGrewLocked is called after a task was queued.
func (p *Pool) queueGrewLocked() {
	if p.queue.Len() >= p.scavengeAt {
		p.scavengeAt += p.scavengeAt / 4
		p.returnMemoryLocked(0)
	}
}

// queueShrankLocked is called after a task left the queue.
func (p *Pool) queueShrankLocked() {
	if p.queue.Len() == 0 && p.scavengeAt > scavengeMin {
		p.scavengeAt = scavengeMin
		p.returnMemoryLocked(drainedDelay)
	}
}

// returnMemoryLocked has the pool's returner goroutine return memory
// after the given delay; a request that comes while it works (the queue
// drained during a collection) is served after it, not dropped.
func (p *Pool) returnMemoryLocked(after time.Duration) {
	if p.returning {
		p.returnAgain = max(p.returnAgain, after)
		if p.returnAgain == 0 {
			p.returnAgain = time.Nanosecond // pending, at once
		}
		return
	}
	p.returning = true
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		for {
			if after > 0 {
				t := time.NewTimer(after)
				select {
				case <-t.C:
				case <-p.stopCh:
					t.Stop()
				}
			}
			debug.FreeOSMemory()
			p.mu.Lock()
			after, p.returnAgain = p.returnAgain, 0
			if after == 0 {
				p.returning = false
				p.mu.Unlock()
				return
			}
			p.mu.Unlock()
		}
	}()
}
