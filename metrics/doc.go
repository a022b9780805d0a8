// Package metrics exposes a cgpool supervisor as Prometheus metrics, through
// prometheus/client_golang: tasks by outcome and reason, the queue by
// priority, workers by state, each worker slot's memory (memory.current and
// memory.peak of its cgroup), and histograms of task run time, spawn latency
// and kill-to-empty latency; the client server's connections, refusals,
// failed handshakes, dropped slow clients and accept errors
// (pool.Server.Stats); beside them client_golang's process and Go
// collectors (process_resident_memory_bytes, go_goroutines, ...) describe
// the supervisor itself.
//
// Counters and gauges are read from the pools (Stats, Status,
// QueuedByPriority) and the server (Stats) at scrape time, so they agree
// with `cgpool stats` and `cgpool ps`; the histograms are fed by the pools as events happen, through
// the pool.Observer that Metrics implements.
//
// It does not decide where the endpoint listens beyond refusing a
// non-loopback address unless asked (Listen), and it holds no goroutine of
// its own: Serve runs the HTTP server until its context ends.
//
// A Metrics is safe for concurrent use.
package metrics
