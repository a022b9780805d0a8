package pool

import "time"

// Observer is told of events in a pool's life as they happen: what a
// metrics exporter turns into histograms (the counters and gauges it reads
// from Stats, Status and QueuedByPriority at scrape time). Set it in
// Config.Observer; nil means none. Its methods are called from the pool's
// own goroutines, with no lock of the pool held: they must be safe for
// concurrent use and must not block.
type Observer interface {
	// TaskEnded: a task that was started on a worker (or, in an exec pool,
	// whose command was about to start) has its outcome. run is from the
	// start to the outcome; reason is the process error's reason (oom,
	// killed, crashed) or "".
	TaskEnded(pool string, kind OutcomeKind, reason string, run time.Duration)
	// Spawned: a process was started into a slot's leaf. Worker pools:
	// from the clone to the worker's hello; exec pools: the clone of the
	// task's command into its leaf.
	Spawned(pool string, d time.Duration)
	// SlotEmptied: a slot's cgroup that cgpool killed (to empty it after a
	// task, or to tear a worker's slot down) was empty d after the kill
	// (at a teardown: and removed).
	SlotEmptied(pool string, d time.Duration)
}

// nopObserver is the Observer of a pool configured without one.
type nopObserver struct{}

func (nopObserver) TaskEnded(string, OutcomeKind, string, time.Duration) {}
func (nopObserver) Spawned(string, time.Duration)                        {}
func (nopObserver) SlotEmptied(string, time.Duration)                    {}

func (p *Pool) observer() Observer {
	if p.cfg.Observer == nil {
		return nopObserver{}
	}
	return p.cfg.Observer
}

// observeSpawn reports a process started since start.
func (p *Pool) observeSpawn(start time.Time) { p.observer().Spawned(p.cfg.Name, time.Since(start)) }

// observeEmptied reports a slot empty since its kill at killed (a zero
// time: there was no kill, nothing to report).
func (p *Pool) observeEmptied(killed time.Time) {
	if !killed.IsZero() {
		p.observer().SlotEmptied(p.cfg.Name, time.Since(killed))
	}
}

// QueuedByPriority returns how many tasks wait at each priority (lower
// runs first); priorities with none are absent. It takes the pool's lock
// for a walk of the queue, so it is meant for a scrape, not a hot path.
func (p *Pool) QueuedByPriority() map[int]int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.queue.ByPriority()
}
