package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/cgpool/cgpool/ipc"
	"github.com/cgpool/cgpool/pool"
	"github.com/coreos/go-systemd/v22/activation"
	"github.com/coreos/go-systemd/v22/daemon"
	"github.com/spf13/cobra"
)

// poolFlags are the flags that describe one pool without a config file.
type poolFlags struct {
	name, kind, command  string
	maxWorkers           int
	minWorkers           int
	maxTasksPerChild     int
	spareWorkers         int
	maxWorkerMemory      string
	trimThreshold        string
	memoryMax, memoryHig string
	pidsMax              int64
	maxBacklog           int
	env                  []string
	idleDelay            time.Duration
	timeout              time.Duration
	maxTimeout           time.Duration
	user                 string
	allowRoot            bool
}

func (f *poolFlags) register(cmd *cobra.Command, defaultKind string) {
	fl := cmd.Flags()
	fl.StringVar(&f.name, "pool", "default", "pool name")
	fl.StringVar(&f.kind, "kind", defaultKind, "pool kind: exec (a command per task) or worker (a long-lived worker program)")
	fl.StringVar(&f.command, "worker-command", "", "worker program for a worker pool, split on spaces (e.g. \"python3 -m cgpool.worker\")")
	fl.IntVarP(&f.maxWorkers, "max-workers", "j", runtime.NumCPU(), "most workers (slots) running at once")
	f.minWorkers = -1
	fl.Var(optInt{&f.minWorkers}, "min-workers", "workers kept when idle (default: max-workers; 0 scales to zero)")
	fl.IntVar(&f.maxTasksPerChild, "max-tasks-per-child", 0, "replace a worker after this many tasks (0: never)")
	fl.IntVar(&f.spareWorkers, "spare-workers", 0, "workers kept started beyond max-workers, to replace a dead one at once (worker pools)")
	fl.StringVar(&f.maxWorkerMemory, "max-worker-memory", "", "replace a worker whose cgroup uses this much after a task (e.g. 512M)")
	fl.StringVar(&f.trimThreshold, "trim-threshold", "", "ask a worker to give memory back above this (e.g. 256M)")
	fl.StringVar(&f.memoryMax, "memory-max", "", "memory.max of each worker's cgroup, e.g. 64M (needs the memory controller)")
	fl.StringVar(&f.memoryHig, "memory-high", "", "memory.high of each worker's cgroup (throttle point)")
	fl.Int64Var(&f.pidsMax, "pids-max", 0, "pids.max of each worker's cgroup (needs the pids controller)")
	fl.IntVar(&f.maxBacklog, "max-backlog", pool.DefaultMaxBacklog, "most tasks waiting in the queue")
	fl.StringArrayVar(&f.env, "env", nil, "NAME=VALUE for the pool's environment (repeatable)")
	fl.DurationVar(&f.idleDelay, "idle-delay", pool.DefaultIdleDelay, "idle time before a worker above min-workers retires")
	fl.DurationVar(&f.timeout, "timeout", 0, "default per-task timeout (0: none)")
	fl.DurationVar(&f.maxTimeout, "max-timeout", 0, "longest per-task timeout a client may ask for (0: --timeout if set, else none)")
	fl.StringVar(&f.user, "user", "", "run workers and commands as this user (a name or uid) with its groups; default for a root daemon: each command as the user who submitted it")
	fl.BoolVar(&f.allowRoot, "allow-root", false, "let a root daemon run tasks as root (a root peer's commands, or a worker pool without --user)")
}

// optInt is an int flag whose unset value (-1) has no default to print:
// its usage says what unset means.
type optInt struct{ p *int }

func (o optInt) String() string {
	if o.p == nil || *o.p < 0 {
		return ""
	}
	return strconv.Itoa(*o.p)
}
func (o optInt) Type() string { return "int" }
func (o optInt) Set(v string) error {
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 {
		return fmt.Errorf("%q: want a count, 0 or more", v)
	}
	*o.p = n
	return nil
}

func (f *poolFlags) config() (pool.Config, error) {
	c := pool.Config{Name: f.name, Kind: pool.Kind(f.kind), MaxWorkers: f.maxWorkers, MaxTasksPerChild: f.maxTasksPerChild, SpareWorkers: f.spareWorkers,
		PidsMax: f.pidsMax, MaxBacklog: f.maxBacklog, IdleDelay: f.idleDelay, DefaultTimeout: f.timeout, MaxTimeout: f.maxTimeout,
		User: f.user, AllowRoot: f.allowRoot, Env: map[string]string{}}
	if f.command != "" {
		c.Command = strings.Fields(f.command)
	}
	if f.minWorkers >= 0 {
		m := f.minWorkers
		c.MinWorkers = &m
	}
	for _, s := range []struct {
		v   string
		dst *int64
	}{{f.maxWorkerMemory, &c.MaxWorkerMemoryBytes}, {f.trimThreshold, &c.TrimThresholdBytes}, {f.memoryMax, &c.MemoryMax}, {f.memoryHig, &c.MemoryHigh}} {
		if s.v == "" {
			continue
		}
		n, err := parseSize(s.v)
		if err != nil {
			return c, err
		}
		*s.dst = n
	}
	for _, kv := range f.env {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return c, fmt.Errorf("--env %q: want NAME=VALUE", kv)
		}
		c.Env[k] = v
	}
	return c, nil
}

// listen returns the socket systemd passed (socket activation: the unit's
// .socket file names, makes and owns it) or else makes one at path.
func listen(path string, opts ipc.ListenOptions, log *slog.Logger) (*ipc.Listener, error) {
	lns, err := activation.Listeners()
	if err != nil {
		return nil, fmt.Errorf("sockets passed by systemd: %w", err)
	}
	for _, l := range lns {
		if ul, ok := l.(*net.UnixListener); ok {
			ln := ipc.Adopt(ul, opts)
			log.Info("using the socket systemd passed (socket activation); --socket and socket_mode do not apply", "socket", ln.Path())
			return ln, nil
		}
	}
	if len(lns) > 0 {
		return nil, fmt.Errorf("systemd passed %d file descriptors and none is a unix stream socket listening (ListenStream=/path in the .socket unit)", len(lns))
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, err
	}
	return ipc.Listen(path, opts)
}

func defaultSocket() string {
	if d := os.Getenv("XDG_RUNTIME_DIR"); d != "" && os.Getuid() != 0 {
		return filepath.Join(d, "cgpool.sock")
	}
	return "/run/cgpool/cgpool.sock"
}

func newLogger(level string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level %q: want debug, info, warn or error", level)
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: l})), nil
}

// ownReaper is this process's reaper (see reaper_linux.go). It is held
// here, for the life of the process, because closing (or garbage
// collecting) its pipe is what tells the reaper we are gone.
var ownReaper *reaper

func serveCmd() *cobra.Command {
	var (
		configPath, socket, root, logLevel  string
		exitWithStdin, ready, metricsRemote bool
		privateDir, metricsAddr             string
		grace                               time.Duration
		allowNoCgroup                       bool
		pf                                  poolFlags
	)
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run the supervisor daemon: pools of workers in cgroups, served on a unix socket",
		Long: `Run the cgpool supervisor. It takes over a delegated cgroup (its own under
systemd with Delegate=yes; else, on a systemd host, a transient scope with
Delegate=yes that it asks the user's or, as root, the system's service manager
for over D-Bus; else a new one at the top of the cgroup v2 tree when run as
root), keeps each pool's workers in their own cgroup slots, and serves clients
(cgpool submit, the Go client, the Python Executor) on a unix socket. Where no
writable cgroup v2 can be had it refuses to start (exit 2) unless given
--allow-no-cgroup: reduced mode, process groups instead of cgroups, no limits,
no OOM classification (README.md, "Reduced mode"); with --private-dir (the
Python Executor's own supervisor) it falls back to reduced mode by itself.

Pools come from --config (TOML, or JSON if the file name ends in .json; see
README.md for the keys) or, for one pool, from the flags below. Logs are
structured (log/slog) on stderr. Under systemd it reports READY=1 once the
socket listens, keeps a STATUS= line (workers busy and idle, tasks queued,
per pool) and pings WatchdogSec= from its main loop, and with socket
activation (a cgpool.socket unit) it serves the socket systemd passes
instead of making one: see contrib/systemd. --metrics-addr serves
Prometheus metrics (README.md lists them).

SIGINT, SIGTERM or SIGHUP shuts it down: queued tasks are cancelled, running ones get
--shutdown-deadline (10s) to finish, then everything is killed and every cgroup
and the socket file are removed.

Exit status: 0 after a shutdown; 2 for bad flags or configuration (every
error of the file is told at once); 1 if it could not serve.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := newLogger(logLevel)
			if err != nil {
				return usageErr(err)
			}
			var fc fileConfig
			if configPath != "" {
				c, err := loadConfig(configPath)
				if err != nil {
					return usageErr(err)
				}
				fc = *c
				if c.LogLevel != "" && !cmd.Flags().Changed("log-level") {
					if log, err = newLogger(c.LogLevel); err != nil {
						return usageErr(err)
					}
				}
			}
			if cmd.Flags().Changed("socket") || fc.Socket == "" {
				fc.Socket = socket
			}
			if cmd.Flags().Changed("root") || fc.Root == "" {
				fc.Root = root
			}
			if cmd.Flags().Changed("metrics-addr") {
				fc.MetricsAddr = metricsAddr
			}
			fc.MetricsAllowRemote = fc.MetricsAllowRemote || metricsRemote
			cfgs, err := fc.poolConfigs(configPath)
			if err != nil {
				return usageErr(err)
			}
			if len(cfgs) == 0 {
				c, err := pf.config()
				if err == nil {
					err = c.Validate()
				}
				if err != nil {
					return usageErr(err)
				}
				cfgs = append(cfgs, c)
			}
			if privateDir != "" {
				if filepath.Dir(fc.Socket) != filepath.Clean(privateDir) {
					return usageErr(fmt.Errorf("--private-dir %s must be the directory of the socket %s", privateDir, fc.Socket))
				}
				// Removed on every way out that runs Go code: the owner may
				// have been SIGKILLed and cannot do it.
				defer os.RemoveAll(privateDir)
			}
			if grace < 0 {
				return usageErr(fmt.Errorf("--shutdown-deadline %v: must not be negative", grace))
			}
			// A private supervisor (the Python Executor's) is embedded use,
			// as cgpool run is: it falls back to reduced mode by itself.
			fc.AllowNoCgroup = fc.AllowNoCgroup || allowNoCgroup || privateDir != ""
			return serve(cmd.Context(), log, fc, cfgs, exitWithStdin, ready, privateDir, grace)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&configPath, "config", "", "configuration file (TOML, or JSON by extension)")
	fl.StringVar(&socket, "socket", defaultSocket(), "unix socket path")
	fl.StringVar(&root, "root", "", "cgroup directory to manage (default: found automatically)")
	fl.StringVar(&logLevel, "log-level", "info", "debug, info, warn or error")
	fl.BoolVar(&exitWithStdin, "exit-with-stdin", false, "shut down when stdin reaches end of file (for a parent that owns this supervisor)")
	fl.BoolVar(&ready, "ready", false, "print \"ready SOCKET\" on stdout once the socket listens")
	fl.DurationVar(&grace, "shutdown-deadline", 10*time.Second, "on SIGINT, SIGTERM or SIGHUP, how long running tasks may go on before they are killed")
	fl.StringVar(&metricsAddr, "metrics-addr", "", "serve Prometheus metrics on http://ADDR/metrics: [HOST:]PORT, 127.0.0.1 when only a port is given (default: off)")
	fl.BoolVar(&metricsRemote, "metrics-allow-remote", false, "let --metrics-addr listen on an address other hosts can reach (0.0.0.0, a LAN address)")
	fl.BoolVar(&allowNoCgroup, "allow-no-cgroup", false, "where no writable cgroup v2 can be had, run in reduced mode (process groups: no memory limit, no OOM classification, escapees from a process group are not killed) instead of refusing to start")
	fl.StringVar(&privateDir, "private-dir", "", "a directory made for this supervisor alone (its socket's); removed with everything in it on exit")
	pf.register(cmd, "exec")
	return cmd
}

func serve(ctx context.Context, log *slog.Logger, fc fileConfig, cfgs []pool.Config, exitWithStdin, ready bool, privateDir string, grace time.Duration) error {
	// SIGHUP (a closed terminal, a dropped SSH session) shuts down as
	// SIGTERM does: tasks must not run on with nobody to report to.
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	defer stop()
	if exitWithStdin {
		var cancel context.CancelFunc
		ctx, cancel = context.WithCancel(ctx)
		defer cancel()
		go func() { // ends with the process; stdin has no other reader
			_, _ = io.Copy(io.Discard, os.Stdin)
			cancel()
		}()
	}
	mode := os.FileMode(0o600)
	if fc.SocketMode != "" {
		m, err := strconv.ParseUint(fc.SocketMode, 8, 32)
		if err != nil {
			return usageErr(fmt.Errorf("socket_mode %q: want octal such as 0660", fc.SocketMode))
		}
		mode = os.FileMode(m)
	}
	// The socket first: a live server on it is refused there, before this
	// process touches any cgroup (and the root's lock, in openRoot, keeps
	// a second supervisor off a root whose owner lives).
	lopts := ipc.ListenOptions{Mode: mode, Group: fc.SocketGroup, AllowUIDs: fc.AllowUIDs, AllowGIDs: fc.AllowGIDs, Logger: log}
	ln, err := listen(fc.Socket, lopts, log)
	if err != nil {
		return err
	}
	defer ln.Close()
	fc.Socket = ln.Path()
	mx, err := startMetrics(fc, cfgs, log)
	if err != nil {
		return err
	}
	defer mx.stop(log)
	root, err := openRootOrReduced(ctx, fc.Root, fc.AllowNoCgroup, "cgpool serve refuses to start without one; pass --allow-no-cgroup (or allow_no_cgroup = true) to run in reduced mode", log)
	if err != nil {
		var nc *noCgroupError
		if errors.As(err, &nc) {
			return usageErr(err)
		}
		return err
	}
	defer func() {
		if err := root.Release(context.Background()); err != nil {
			log.Error("release cgroup root", "root", root.Path(), "err", err)
		}
	}()
	rs := reaperSpec{root: root.Path(), removeRoot: root.Created(), privateDir: privateDir}
	if !ln.Adopted() {
		rs.socket, rs.socketIno = fc.Socket, socketIno(fc.Socket)
	}
	if ownReaper, err = startReaper(rs, log); err != nil {
		return err
	}
	sup, err := pool.NewSupervisor(root, cfgs, log)
	if err != nil {
		return err
	}
	mx.watch(sup)
	srv := pool.NewServer(sup, ln, pool.ServerOptions{Logger: log, AdminUIDs: fc.AdminUIDs, AdminGIDs: fc.AdminGIDs,
		MaxConns: fc.MaxConnections, MaxConnsPerUID: fc.MaxConnectionsPerUID})
	mx.watchServer(srv)
	log.Info("cgpool serving", "socket", fc.Socket, "cgroup", root.Path(), "pools", sup.Pools(), "controllers", root.Controllers())
	if ready {
		fmt.Printf("ready %s\n", fc.Socket)
	}
	_, _ = daemon.SdNotify(false, daemon.SdNotifyReady)
	beat := newHeartbeat(sup, log)
	beat.beat()

	serveCtx, stopServe := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- srv.Serve(serveCtx) }()
	var opts pool.ShutdownOptions
	for { // the main loop: systemd's watchdog pings come from here (notify.go)
		select {
		case <-beat.C():
			beat.beat()
			continue
		case <-beat.Wedged():
			log.Warn("test hook: the main loop stops here for good", "env", wedgeEnv)
			<-make(chan struct{})
		case <-ctx.Done():
			log.Info("shutting down", "reason", context.Cause(ctx))
			opts = pool.ShutdownOptions{Wait: true, CancelFutures: true, Deadline: max(grace, time.Nanosecond)}
			if exitWithStdin {
				// The owner is gone: nobody waits for results, so kill what runs.
				opts = pool.ShutdownOptions{Wait: false, CancelFutures: true}
			}
		case opts = <-srv.ShutdownRequested():
			log.Info("shutdown requested by a client", "wait", opts.Wait, "cancel_futures", opts.CancelFutures)
		case err := <-served:
			stopServe()
			_ = sup.Shutdown(context.Background(), pool.ShutdownOptions{Wait: true, CancelFutures: true})
			return err
		}
		break
	}
	defer beat.stopping()()
	err = sup.Shutdown(context.Background(), opts)
	if err == nil && !opts.Wait {
		err = sup.Wait(context.Background())
	}
	stopServe()
	if serr := <-served; serr != nil && !errors.Is(serr, context.Canceled) {
		err = errors.Join(err, serr)
	}
	return err
}
