package metrics

import (
	"strconv"
	"sync"
	"time"

	"github.com/cgpool/cgpool/pool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// Source is what Metrics reads at scrape time: a *pool.Supervisor.
type Source interface {
	Pools() []string
	Pool(name string) (*pool.Pool, error)
}

// workerStates are the states `cgpool ps` shows; each is exported for
// every pool, zero included, so that a series does not come and go.
var workerStates = []string{"starting", "idle", "busy", "retiring"}

// Metrics is the registry of one supervisor's metrics and the pool.Observer
// that feeds its histograms. Create it with New, put it in each
// pool.Config.Observer, then Watch the supervisor.
type Metrics struct {
	reg *prometheus.Registry

	taskRun, spawn, empty *prometheus.HistogramVec

	mu     sync.Mutex
	src    Source
	server ServerSource
}

// ServerSource is what Metrics reads of the client server at scrape
// time: a *pool.Server.
type ServerSource interface {
	Stats() pool.ServerStats
}

// New returns a registry with cgpool's metrics and client_golang's process
// and Go collectors. It starts nothing.
func New() *Metrics {
	m := &Metrics{reg: prometheus.NewRegistry()}
	m.taskRun = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "cgpool_task_duration_seconds",
		Help: "Run time of tasks that started, from the start on their worker (or of their command) to their outcome, by outcome and reason.",
		// 1 ms to about 2.3 h: from a no-op to a long batch job.
		Buckets: prometheus.ExponentialBuckets(0.001, 3, 16),
	}, []string{"pool", "outcome", "reason"})
	m.spawn = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "cgpool_spawn_duration_seconds",
		Help: "Time to start a process into a worker slot: a worker, from its clone to its hello (worker pools); a task's command, its clone into the leaf (exec pools).",
		// 100 µs to about 33 s: a clone3 into a cgroup to a slow interpreter.
		Buckets: prometheus.ExponentialBuckets(0.0001, 3, 13),
	}, []string{"pool"})
	m.empty = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "cgpool_kill_to_empty_seconds",
		Help: "Time from a cgroup.kill that cgpool wrote on a worker slot (emptying it after a task, or tearing it down) until the slot was empty (at a teardown: and removed).",
		// 50 µs to about 16 s: the kernel's kill floor to a task stuck in D state.
		Buckets: prometheus.ExponentialBuckets(0.00005, 3, 13),
	}, []string{"pool"})
	m.reg.MustRegister(m.taskRun, m.spawn, m.empty, (*stats)(m),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		collectors.NewGoCollector())
	return m
}

// Registry returns the registry, for an HTTP handler or a test's Gather.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// Watch makes src the supervisor whose pools a scrape reads. Before it, a
// scrape has only the histograms and the process and Go metrics.
func (m *Metrics) Watch(src Source) {
	m.mu.Lock()
	m.src = src
	m.mu.Unlock()
}

// WatchServer makes srv the server whose counters (connections open,
// refused, failed handshakes, dropped slow clients, accept errors) a scrape
// reads. Before it, no cgpool_server_ metric is exported: a supervisor
// embedded without a socket (cgpool run) has none.
func (m *Metrics) WatchServer(srv ServerSource) {
	m.mu.Lock()
	m.server = srv
	m.mu.Unlock()
}

// TaskEnded implements pool.Observer.
func (m *Metrics) TaskEnded(p string, kind pool.OutcomeKind, reason string, run time.Duration) {
	m.taskRun.WithLabelValues(p, string(kind), reason).Observe(run.Seconds())
}

// Spawned implements pool.Observer.
func (m *Metrics) Spawned(p string, d time.Duration) { m.spawn.WithLabelValues(p).Observe(d.Seconds()) }

// SlotEmptied implements pool.Observer.
func (m *Metrics) SlotEmptied(p string, d time.Duration) {
	m.empty.WithLabelValues(p).Observe(d.Seconds())
}

var _ pool.Observer = (*Metrics)(nil)

// stats is the prometheus.Collector that reads the pools at scrape time.
type stats Metrics

var (
	descTasks = prometheus.NewDesc("cgpool_tasks_total",
		"Tasks that ended, by outcome (result, task_error, timeout, queue_timeout, process_error, cancelled) and, for process errors, reason (oom, killed, crashed).",
		[]string{"pool", "outcome", "reason"}, nil)
	descReceived = prometheus.NewDesc("cgpool_tasks_received_total", "Tasks accepted into the queue.", []string{"pool"}, nil)
	descStarted  = prometheus.NewDesc("cgpool_tasks_started_total", "Tasks started on a worker (or whose command was started).", []string{"pool"}, nil)
	descRejected = prometheus.NewDesc("cgpool_tasks_rejected_total", "Submissions refused: invalid, backlog full, or the pool draining.", []string{"pool"}, nil)
	descQueued   = prometheus.NewDesc("cgpool_queued_tasks", "Tasks waiting in the queue, by priority (lower runs first).", []string{"pool", "priority"}, nil)
	descWorkers  = prometheus.NewDesc("cgpool_workers", "Worker slots by state (starting, idle, busy, retiring).", []string{"pool", "state"}, nil)
	descMax      = prometheus.NewDesc("cgpool_max_workers", "The pool's max_workers.", []string{"pool"}, nil)
	descCreated  = prometheus.NewDesc("cgpool_workers_started_total", "Worker slots set up (in worker pools: worker processes started that said hello).", []string{"pool"}, nil)
	descStartErr = prometheus.NewDesc("cgpool_worker_start_failures_total", "Worker starts that failed (and failed a queued task).", []string{"pool"}, nil)
	descRetired  = prometheus.NewDesc("cgpool_workers_retired_total", "Workers retired: idle above min_workers, recycled, max_tasks_per_child, memory, or a task left processes behind.", []string{"pool"}, nil)
	descLeftover = prometheus.NewDesc("cgpool_leftover_processes_killed_total", "Processes a finished task left in its slot, killed with the slot.", []string{"pool"}, nil)
	descMem      = prometheus.NewDesc("cgpool_slot_memory_bytes", "memory.current of a worker slot's cgroup (the worker and everything it started). Absent where the memory controller is not available.", []string{"pool", "slot"}, nil)
	descPeak     = prometheus.NewDesc("cgpool_slot_memory_peak_bytes", "memory.peak of a worker slot's cgroup since the slot was created (Linux 5.19+). Absent where unknown.", []string{"pool", "slot"}, nil)

	descConns       = prometheus.NewDesc("cgpool_server_connections", "Client connections open on the supervisor's socket (handshaking ones included).", nil, nil)
	descRefused     = prometheus.NewDesc("cgpool_server_connections_refused_total", "Connections refused because the server's max_connections or one uid's max_connections_per_uid was reached.", nil, nil)
	descHandshake   = prometheus.NewDesc("cgpool_server_handshake_failures_total", "Connections closed because no valid hello came within the handshake timeout (wrong protocol version, garbage, silence).", nil, nil)
	descDropped     = prometheus.NewDesc("cgpool_server_slow_clients_dropped_total", "Clients disconnected because they did not take their replies (outbox full, or nothing taken within the write timeout).", nil, nil)
	descAcceptError = prometheus.NewDesc("cgpool_server_accept_errors_total", "Temporary accept errors (EMFILE, ENFILE, ENOMEM...) the server backed off from.", nil, nil)
)

// processErrorReasons are the failure reasons that are process errors;
// the other failure reasons are outcomes of their own.
var processErrorReasons = map[string]bool{"oom": true, "killed": true, "crashed": true}

func (s *stats) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descTasks, descReceived, descStarted, descRejected, descQueued, descWorkers, descMax, descCreated, descStartErr, descRetired, descLeftover, descMem, descPeak,
		descConns, descRefused, descHandshake, descDropped, descAcceptError} {
		ch <- d
	}
}

func (s *stats) Collect(ch chan<- prometheus.Metric) {
	s.mu.Lock()
	src, server := s.src, s.server
	s.mu.Unlock()
	counter := func(d *prometheus.Desc, v int64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	gauge := func(d *prometheus.Desc, v int64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, float64(v), labels...)
	}
	if server != nil {
		st := server.Stats()
		gauge(descConns, int64(st.Connections))
		for _, c := range []struct {
			d *prometheus.Desc
			v uint64
		}{{descRefused, st.ConnectionsRefused}, {descHandshake, st.HandshakeFailures}, {descDropped, st.SlowClientsDropped}, {descAcceptError, st.AcceptErrors}} {
			ch <- prometheus.MustNewConstMetric(c.d, prometheus.CounterValue, float64(c.v))
		}
	}
	if src == nil {
		return
	}
	for _, name := range src.Pools() {
		p, err := src.Pool(name)
		if err != nil {
			continue
		}
		st := p.Stats()
		counter(descTasks, st.TasksSucceeded, name, string(pool.Result), "")
		counter(descTasks, st.TasksCancelled, name, string(pool.Cancelled), "")
		for _, kind := range []pool.OutcomeKind{pool.TaskError, pool.TimedOut, pool.QueueTimeout} {
			counter(descTasks, st.FailuresByReason[string(kind)], name, string(kind), "")
		}
		for _, reason := range []string{"oom", "killed", "crashed"} {
			counter(descTasks, st.FailuresByReason[reason], name, string(pool.ProcessError), reason)
		}
		for reason, n := range st.FailuresByReason {
			if known := processErrorReasons[reason] || reason == string(pool.TaskError) || reason == string(pool.TimedOut) || reason == string(pool.QueueTimeout); !known {
				counter(descTasks, n, name, reason, "") // a failure kind newer than this exporter: still counted
			}
		}
		counter(descReceived, st.TasksReceived, name)
		counter(descStarted, st.TasksLaunched, name)
		counter(descRejected, st.TasksRejected, name)
		counter(descCreated, st.WorkerProcessesCreated, name)
		counter(descStartErr, st.WorkerStartFailures, name)
		counter(descRetired, st.WorkersRetired, name)
		counter(descLeftover, st.LeftoverProcessesKilled, name)
		gauge(descMax, int64(st.MaxWorkers), name)
		for prio, n := range p.QueuedByPriority() {
			gauge(descQueued, int64(n), name, strconv.Itoa(prio))
		}
		states := map[string]int64{}
		for _, w := range p.Status().Workers {
			states[w.State]++
			if w.MemoryCurrent > 0 {
				gauge(descMem, w.MemoryCurrent, name, w.Slot)
			}
			if w.MemoryPeak > 0 {
				gauge(descPeak, w.MemoryPeak, name, w.Slot)
			}
		}
		for _, state := range workerStates {
			gauge(descWorkers, states[state], name, state)
			delete(states, state)
		}
		for state, n := range states {
			gauge(descWorkers, n, name, state) // a state newer than this list
		}
	}
}
