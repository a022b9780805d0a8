package pool

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"strings"

	"github.com/cgpool/cgpool/cgroup"
)

// Supervisor is a set of named pools below one cgroup root.
type Supervisor struct {
	root  *cgroup.Root
	log   *slog.Logger
	pools map[string]*Pool
	names []string
}

// NewSupervisor creates the pools (each starts its MinWorkers workers)
// below root, which the caller has taken over and releases after Wait.
// log may be nil. A pool whose limits need a controller the root does not
// offer is refused with an error wrapping cgroup.ErrControllerUnavailable.
func NewSupervisor(root *cgroup.Root, cfgs []Config, log *slog.Logger) (*Supervisor, error) {
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if len(cfgs) == 0 {
		return nil, errors.New("no pools configured")
	}
	s := &Supervisor{root: root, log: log, pools: map[string]*Pool{}}
	base := baseEnv()
	for _, c := range cfgs {
		if _, dup := s.pools[c.Name]; dup {
			s.abort()
			return nil, fmt.Errorf("pool %q is configured twice", c.Name)
		}
		p, err := newPool(&root.Group, root.Controllers(), c, base, log)
		if err != nil {
			s.abort()
			return nil, err
		}
		s.pools[c.Name] = p
		s.names = append(s.names, c.Name)
	}
	return s, nil
}

func (s *Supervisor) abort() {
	ctx := context.Background()
	for _, p := range s.pools {
		_ = p.Shutdown(ctx, ShutdownOptions{Wait: true, CancelFutures: true})
	}
}

// Pool returns the named pool, or an error wrapping ErrUnknownPool. The
// empty name means the first configured pool.
func (s *Supervisor) Pool(name string) (*Pool, error) {
	if name == "" {
		name = s.names[0]
	}
	p, ok := s.pools[name]
	if !ok {
		return nil, &RejectError{Reason: "unknown_pool", Msg: fmt.Sprintf("no pool named %q (pools: %s)", name, strings.Join(s.names, ", ")), Err: ErrUnknownPool}
	}
	return p, nil
}

// Pools returns the pool names in configuration order.
func (s *Supervisor) Pools() []string { return append([]string(nil), s.names...) }

// Shutdown shuts every pool down (see Pool.Shutdown); with o.Wait it
// returns when all of them are gone.
func (s *Supervisor) Shutdown(ctx context.Context, o ShutdownOptions) error {
	for _, n := range s.names {
		s.pools[n].beginShutdown(o)
	}
	if !o.Wait {
		return nil
	}
	return s.Wait(ctx)
}

// Wait blocks until every pool has shut down and removed its cgroups.
func (s *Supervisor) Wait(ctx context.Context) error {
	var errs []error
	for _, n := range s.names {
		errs = append(errs, s.pools[n].Wait(ctx))
	}
	return errors.Join(errs...)
}

// systemdVars are variables meant for the supervisor alone: a worker that
// inherited NOTIFY_SOCKET could speak for the service.
var systemdVars = []string{"NOTIFY_SOCKET", "LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES", "WATCHDOG_USEC", "WATCHDOG_PID",
	"INVOCATION_ID", "JOURNAL_STREAM", "MEMORY_PRESSURE_WATCH", "MEMORY_PRESSURE_WRITE", "CGPOOL_POOL", "CGPOOL_SLOT_CGROUP"}

// baseEnv is the supervisor's environment without systemd's variables.
func baseEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if k, _, _ := strings.Cut(kv, "="); !slices.Contains(systemdVars, k) {
			env = append(env, kv)
		}
	}
	return env
}
