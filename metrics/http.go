package metrics

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// ErrNotLoopback is returned by CheckAddr for an address that other hosts
// could reach, when remote access was not asked for.
var ErrNotLoopback = errors.New("metrics: address is not a loopback address")

// DefaultHost is where a bare port listens.
const DefaultHost = "127.0.0.1"

// CheckAddr turns the operator's --metrics-addr into a TCP address to
// listen on. A bare port ("9464") means 127.0.0.1:9464. A host that is not
// loopback ("0.0.0.0:9464", ":9464", a LAN address or a name that resolves
// to one) is refused with ErrNotLoopback unless allowRemote is set: metrics
// name pools, slots and task counts, which a host's other users, let alone
// other hosts, need not see. It may resolve a host name (blocking on the
// resolver).
func CheckAddr(addr string, allowRemote bool) (string, error) {
	if addr == "" {
		return "", errors.New("metrics: empty address")
	}
	if !strings.Contains(addr, ":") {
		addr = net.JoinHostPort(DefaultHost, addr)
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", fmt.Errorf("metrics address %q: %w", addr, err)
	}
	if _, err := net.LookupPort("tcp", port); err != nil {
		return "", fmt.Errorf("metrics address %q: port: %w", addr, err)
	}
	if allowRemote {
		return addr, nil
	}
	if host == "" {
		return "", fmt.Errorf("metrics address %q listens on every interface: %w (give 127.0.0.1:%s, or allow remote scrapes explicitly with --metrics-allow-remote)", addr, ErrNotLoopback, port)
	}
	var ips []net.IP
	if ip := net.ParseIP(strings.Trim(host, "[]")); ip != nil {
		ips = []net.IP{ip}
	} else {
		found, err := net.LookupIP(host)
		if err != nil {
			return "", fmt.Errorf("metrics address %q: %w", addr, err)
		}
		ips = found
	}
	for _, ip := range ips {
		if !ip.IsLoopback() {
			return "", fmt.Errorf("metrics address %q (%s) is reachable from other hosts: %w (allow it explicitly with --metrics-allow-remote)", addr, ip, ErrNotLoopback)
		}
	}
	return addr, nil
}

// Listen checks addr (see CheckAddr) and listens on it. The caller owns the
// listener; Serve closes it.
func Listen(addr string, allowRemote bool) (net.Listener, error) {
	a, err := CheckAddr(addr, allowRemote)
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", a)
	if err != nil {
		return nil, fmt.Errorf("metrics: %w", err)
	}
	return ln, nil
}

// Handler serves the registry in Prometheus' text format (or OpenMetrics
// when the scraper asks for it) on /metrics, and a pointer to it on /.
func (m *Metrics) Handler(log *slog.Logger) http.Handler {
	mux := http.NewServeMux()
	opts := promhttp.HandlerOpts{EnableOpenMetrics: true, MaxRequestsInFlight: 4, Timeout: 10 * time.Second}
	if log != nil {
		opts.ErrorLog = slog.NewLogLogger(log.Handler(), slog.LevelWarn)
	}
	mux.Handle("/metrics", promhttp.HandlerFor(m.reg, opts))
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/" {
			http.NotFound(w, r)
			return
		}
		fmt.Fprintln(w, "cgpool: metrics at /metrics")
	})
	return mux
}

// Serve serves m's Handler on ln until ctx ends, then shuts the server down
// (giving scrapes in flight up to 5 s) and returns nil; it closes ln. Any
// other end of serving is returned as an error.
func (m *Metrics) Serve(ctx context.Context, ln net.Listener, log *slog.Logger) error {
	srv := &http.Server{Handler: m.Handler(log), ReadHeaderTimeout: 10 * time.Second, IdleTimeout: time.Minute}
	if log != nil {
		srv.ErrorLog = slog.NewLogLogger(log.Handler(), slog.LevelWarn)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	select {
	case err := <-done:
		return fmt.Errorf("metrics server: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	err := srv.Shutdown(sctx)
	if serr := <-done; !errors.Is(serr, http.ErrServerClosed) {
		err = errors.Join(err, serr)
	}
	return err
}
