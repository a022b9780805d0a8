package pool

import (
	"fmt"
	"os"
	"regexp"
	"slices"
	"strconv"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// Kind is what a pool's slots run.
type Kind string

const (
	// KindWorker pools run a long-lived worker program that speaks the
	// worker protocol on fd 3; tasks carry opaque payloads.
	KindWorker Kind = "worker"
	// KindExec pools run a client-given argv per task and return its exit
	// status and (bounded) output.
	KindExec Kind = "exec"
)

// DisconnectPolicy says what happens to a client's tasks when it goes away.
type DisconnectPolicy string

const (
	CancelQueued DisconnectPolicy = "cancel_queued" // default: queued tasks are cancelled; running ones finish
	Continue     DisconnectPolicy = "continue"      // everything runs; outcomes are dropped
	Terminate    DisconnectPolicy = "terminate"     // queued tasks cancelled, running ones killed
)

// Config is one pool's settings. The zero value of a field means its
// default (see Defaults).
type Config struct {
	Name    string   `toml:"name"`
	Kind    Kind     `toml:"kind"`
	Command []string `toml:"command"` // the worker program (worker pools)

	MaxWorkers int           `toml:"max_workers"`
	MinWorkers *int          `toml:"min_workers"` // nil: = MaxWorkers
	IdleDelay  time.Duration `toml:"idle_delay"`  // idle time before a worker above MinWorkers retires
	// StartWorkers is how many workers the pool starts with (0: MinWorkers;
	// at most MaxWorkers). Those above MinWorkers wait for their first
	// task without an idle deadline and retire by IdleDelay after it, as
	// Deadpool's first max_workers workers do.
	StartWorkers     int `toml:"start_workers"`
	MaxTasksPerChild int `toml:"max_tasks_per_child"`
	// SpareWorkers keeps this many workers started beyond the slots, each
	// in its own slot group, so that a worker that dies is replaced by one
	// that has already said hello (worker pools; a Python worker takes tens
	// of milliseconds to start).
	SpareWorkers int `toml:"spare_workers"`
	// MaxWorkerMemoryBytes retires a worker whose slot (children included)
	// uses at least this much after a task.
	MaxWorkerMemoryBytes int64 `toml:"max_worker_memory_bytes"`
	// TrimThresholdBytes asks a worker to give memory back after a task
	// when its slot uses at least this much.
	TrimThresholdBytes int64 `toml:"trim_threshold_bytes"`

	MemoryMax  int64  `toml:"memory_max"`  // per worker slot, bytes
	MemoryHigh int64  `toml:"memory_high"` // per worker slot, bytes
	PidsMax    int64  `toml:"pids_max"`
	CPUWeight  uint64 `toml:"cpu_weight"`
	CPUMax     string `toml:"cpu_max"`

	MaxBacklog int               `toml:"max_backlog"`
	Env        map[string]string `toml:"env"`

	// Who tasks and workers run as (see SECURITY.md). User (a name or a
	// uid) and Group (a name or a gid; default the user's primary group),
	// or the raw UID and GID, name a fixed user: every worker of a worker
	// pool, and every command of an exec pool, runs as that user with that
	// user's supplementary groups. Without a fixed user, a root
	// supervisor runs an exec task as the peer that submitted it (its uid,
	// primary gid and groups from the account database), and refuses to
	// start a worker pool. Root (as the fixed user, or as the peer) needs
	// AllowRoot. A supervisor that is not root runs everything as itself.
	User      string  `toml:"user"`
	Group     string  `toml:"group"`
	UID       *uint32 `toml:"uid"`
	GID       *uint32 `toml:"gid"`
	AllowRoot bool    `toml:"allow_root"`

	DefaultTimeout time.Duration `toml:"default_timeout"`
	// Ceilings on what a client may ask for; a request above one is
	// refused (RejectError reason over_limit), never clamped.
	// MaxTimeout is the longest per-task timeout a client may ask; 0
	// means DefaultTimeout when that is set (a client may ask for less,
	// not more), else no ceiling. With a ceiling, a task that asks for
	// none gets the default, or else the ceiling.
	MaxTimeout      time.Duration `toml:"max_timeout"`
	MaxEnvBytes     int64         `toml:"max_env_bytes"`     // per-task env additions, names and values; 0 = 64 KiB
	MaxArgvBytes    int64         `toml:"max_argv_bytes"`    // an exec task's argv; 0 = 64 KiB
	MaxPayloadBytes int64         `toml:"max_payload_bytes"` // a worker task's input; 0 = 64 MiB
	// MaxTasksPerClient bounds the tasks one peer uid has queued or
	// running in the pool at once; 0 = no bound but the backlog's.
	MaxTasksPerClient int `toml:"max_tasks_per_client"`
	// MaxQueuedBytes bounds the bytes (payloads, argv, env) of the tasks
	// waiting in the backlog; 0 = 256 MiB.
	MaxQueuedBytes int64 `toml:"max_queued_bytes"`
	// AllowEnv lists variable names that SetEnv accepts although they
	// are on the deny list (LD_PRELOAD and the other loader variables:
	// see deniedEnv).
	AllowEnv []string `toml:"allow_env"`

	// OutputLimit bounds the captured stdout and stderr of an exec task,
	// each.
	OutputLimit  int64            `toml:"output_limit"`
	OnDisconnect DisconnectPolicy `toml:"on_disconnect"`
	Observer     Observer         `toml:"-" json:"-"` // told of tasks, spawns and kills as they happen (observe.go); nil: none

	fixed *Identity // resolved by normalize: the fixed user, or nil
}

// Defaults.
const (
	DefaultMaxBacklog      = 1000
	DefaultIdleDelay       = 10 * time.Second
	DefaultOutputLimit     = 1 << 20
	DefaultMaxEnvBytes     = 64 << 10
	DefaultMaxArgvBytes    = 64 << 10
	DefaultMaxPayloadBytes = 64 << 20
	DefaultMaxQueuedBytes  = 256 << 20
)

var poolNameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,62}$`)

// normalize fills defaults and checks the settings.
func (c Config) normalize() (Config, error) {
	if !poolNameRE.MatchString(c.Name) {
		return c, fmt.Errorf("pool name %q: must match %s", c.Name, poolNameRE)
	}
	if c.Kind == "" {
		c.Kind = KindExec
	}
	switch c.Kind {
	case KindExec:
	case KindWorker:
		if len(c.Command) == 0 {
			return c, fmt.Errorf("pool %s: a worker pool needs a command", c.Name)
		}
	default:
		return c, fmt.Errorf("pool %s: kind %q is neither %q nor %q", c.Name, c.Kind, KindWorker, KindExec)
	}
	if c.MaxWorkers <= 0 {
		return c, fmt.Errorf("pool %s: max_workers must be at least 1", c.Name)
	}
	if c.MinWorkers == nil {
		m := c.MaxWorkers
		c.MinWorkers = &m
	}
	if *c.MinWorkers < 0 || *c.MinWorkers > c.MaxWorkers {
		return c, fmt.Errorf("pool %s: min_workers %d must be in 0..max_workers (%d)", c.Name, *c.MinWorkers, c.MaxWorkers)
	}
	if c.StartWorkers < 0 || c.StartWorkers > c.MaxWorkers {
		return c, fmt.Errorf("pool %s: start_workers %d must be in 0..max_workers (%d)", c.Name, c.StartWorkers, c.MaxWorkers)
	}
	if c.IdleDelay <= 0 {
		c.IdleDelay = DefaultIdleDelay
	}
	if c.MaxBacklog == 0 {
		c.MaxBacklog = DefaultMaxBacklog
	}
	if c.OutputLimit <= 0 {
		c.OutputLimit = DefaultOutputLimit
	}
	switch c.OnDisconnect {
	case "":
		c.OnDisconnect = CancelQueued
	case CancelQueued, Continue, Terminate:
	default:
		return c, fmt.Errorf("pool %s: on_disconnect %q is not one of cancel_queued, continue, terminate", c.Name, c.OnDisconnect)
	}
	for _, v := range []int64{int64(c.MaxTasksPerChild), int64(c.SpareWorkers), c.MaxWorkerMemoryBytes, c.TrimThresholdBytes, c.MemoryMax, c.MemoryHigh, c.PidsMax, c.OutputLimit} {
		if v < 0 {
			return c, fmt.Errorf("pool %s: negative limit %d", c.Name, v)
		}
	}
	if c.DefaultTimeout < 0 || c.MaxTimeout < 0 {
		return c, fmt.Errorf("pool %s: default_timeout and max_timeout must not be negative", c.Name)
	}
	if c.MaxTimeout == 0 {
		c.MaxTimeout = c.DefaultTimeout
	}
	if c.MaxTimeout > 0 && c.DefaultTimeout > c.MaxTimeout {
		return c, fmt.Errorf("pool %s: default_timeout %v is above max_timeout %v", c.Name, c.DefaultTimeout, c.MaxTimeout)
	}
	for _, v := range []*int64{&c.MaxEnvBytes, &c.MaxArgvBytes, &c.MaxPayloadBytes, &c.MaxQueuedBytes} {
		if *v < 0 {
			return c, fmt.Errorf("pool %s: negative limit %d", c.Name, *v)
		}
	}
	if c.MaxEnvBytes == 0 {
		c.MaxEnvBytes = DefaultMaxEnvBytes
	}
	if c.MaxArgvBytes == 0 {
		c.MaxArgvBytes = DefaultMaxArgvBytes
	}
	if c.MaxPayloadBytes == 0 {
		c.MaxPayloadBytes = DefaultMaxPayloadBytes
	}
	if c.MaxQueuedBytes == 0 {
		c.MaxQueuedBytes = DefaultMaxQueuedBytes
	}
	if c.MaxTasksPerClient < 0 {
		return c, fmt.Errorf("pool %s: negative max_tasks_per_client %d", c.Name, c.MaxTasksPerClient)
	}
	return c, c.resolveUser(uint32(os.Geteuid()))
}

// resolveUser sets c.fixed from User/Group or UID/GID and checks the
// run-as rules for a supervisor running as euid.
func (c *Config) resolveUser(euid uint32) error {
	c.fixed = nil
	switch {
	case c.User != "" && (c.UID != nil || c.GID != nil):
		return fmt.Errorf("pool %s: give user (and group) or uid (and gid), not both", c.Name)
	case c.User != "":
		id, err := lookupUser(c.User, c.Group)
		if err != nil {
			return fmt.Errorf("pool %s: %w", c.Name, err)
		}
		c.fixed = &id
	case c.Group != "":
		return fmt.Errorf("pool %s: group %q needs a user", c.Name, c.Group)
	case c.UID != nil:
		id := LookupIdentity(*c.UID, *c.UID)
		if c.GID != nil {
			id.GID = *c.GID
		}
		c.fixed = &id
	case c.GID != nil:
		return fmt.Errorf("pool %s: gid needs a uid (or a user)", c.Name)
	}
	if euid != 0 {
		if c.fixed != nil && c.fixed.UID != euid {
			return fmt.Errorf("pool %s: only a supervisor running as root can run workers as another user (%s; this one runs as uid %d)", c.Name, c.fixed, euid)
		}
		c.fixed = nil // everything runs as ourselves: nothing to switch
		return nil
	}
	if c.fixed != nil && c.fixed.UID == 0 && !c.AllowRoot {
		return fmt.Errorf("pool %s: its user is root; a pool runs tasks as root only with allow_root = true", c.Name)
	}
	if c.fixed == nil && c.Kind == KindWorker && !c.AllowRoot {
		return fmt.Errorf("pool %s: a worker pool of a root supervisor runs its workers as a configured user: set user = \"name\" (or uid and gid), or allow_root = true to run them as root", c.Name)
	}
	return nil
}

// Resources maps the pool's per-slot limits onto runtime-spec's
// LinuxResources, the one vocabulary cgroup.Group.SetLimits takes. ctrl
// are the controllers the root enabled. A memory limit comes with no swap
// (memory plus swap = memory), so that going over it is an OOM kill and
// not a slow swap; memory.oom.group is set wherever the memory controller
// is, so that an OOM kill takes the whole slot, never half a worker.
func (c Config) Resources(ctrl []string) *specs.LinuxResources {
	r := &specs.LinuxResources{Unified: map[string]string{}}
	if c.MemoryMax > 0 {
		limit := c.MemoryMax
		r.Memory = &specs.LinuxMemory{Limit: &limit, Swap: &limit}
	} else if c.MemoryHigh > 0 {
		r.Unified["memory.swap.max"] = "0"
	}
	if c.MemoryHigh > 0 {
		r.Unified["memory.high"] = strconv.FormatInt(c.MemoryHigh, 10)
	}
	if slices.Contains(ctrl, "memory") {
		r.Unified["memory.oom.group"] = "1"
	}
	if c.PidsMax > 0 {
		pids := c.PidsMax
		r.Pids = &specs.LinuxPids{Limit: &pids}
	}
	if c.CPUWeight > 0 {
		r.Unified["cpu.weight"] = strconv.FormatUint(c.CPUWeight, 10)
	}
	if c.CPUMax != "" {
		r.Unified["cpu.max"] = c.CPUMax // "QUOTA PERIOD" or "max PERIOD", as the kernel reads it
	}
	return r
}
