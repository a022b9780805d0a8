package main

import (
	"context"
	"errors"
	"log/slog"

	"github.com/cgpool/cgpool/metrics"
	"github.com/cgpool/cgpool/pool"
)

// metricsServer is the --metrics-addr endpoint of cgpool serve: nil when
// it is off (the default), else one goroutine serving HTTP until stop.
type metricsServer struct {
	m      *metrics.Metrics
	cancel context.CancelFunc
	done   chan error
}

// startMetrics listens on fc's metrics address, if any, and makes every
// pool report to it. It fails (as a usage error) on an address other
// hosts could reach unless metrics_allow_remote says so; it listens before
// any cgroup is touched, so a bad address costs nothing.
func startMetrics(fc fileConfig, cfgs []pool.Config, log *slog.Logger) (*metricsServer, error) {
	if fc.MetricsAddr == "" {
		return nil, nil
	}
	ln, err := metrics.Listen(fc.MetricsAddr, fc.MetricsAllowRemote)
	if err != nil {
		if errors.Is(err, metrics.ErrNotLoopback) {
			return nil, usageErr(err)
		}
		return nil, err
	}
	ms := &metricsServer{m: metrics.New(), done: make(chan error, 1)}
	for i := range cfgs {
		cfgs[i].Observer = ms.m
	}
	var ctx context.Context
	ctx, ms.cancel = context.WithCancel(context.Background())
	log.Info("serving Prometheus metrics", "url", "http://"+ln.Addr().String()+"/metrics")
	go func() { ms.done <- ms.m.Serve(ctx, ln, log) }()
	return ms, nil
}

// watch makes the endpoint read the supervisor's pools.
func (ms *metricsServer) watch(sup *pool.Supervisor) {
	if ms != nil {
		ms.m.Watch(sup)
	}
}

// watchServer makes the endpoint read the client server's counters.
func (ms *metricsServer) watchServer(srv *pool.Server) {
	if ms != nil {
		ms.m.WatchServer(srv)
	}
}

// stop ends the endpoint and waits for it; idempotent for nil.
func (ms *metricsServer) stop(log *slog.Logger) {
	if ms == nil {
		return
	}
	ms.cancel()
	if err := <-ms.done; err != nil {
		log.Warn("metrics endpoint", "err", err)
	}
}
