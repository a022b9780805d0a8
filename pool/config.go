package pool

import (
	"errors"
	"fmt"
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

	MaxWorkers       int           `toml:"max_workers"`
	MinWorkers       *int          `toml:"min_workers"` // nil: = MaxWorkers
	IdleDelay        time.Duration `toml:"idle_delay"`  // idle time before a worker above MinWorkers retires
	MaxTasksPerChild int           `toml:"max_tasks_per_child"`
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

	MaxBacklog     int               `toml:"max_backlog"`
	Env            map[string]string `toml:"env"`
	UID            *uint32           `toml:"uid"`
	GID            *uint32           `toml:"gid"`
	DefaultTimeout time.Duration     `toml:"default_timeout"`
	// OutputLimit bounds the captured stdout and stderr of an exec task,
	// each.
	OutputLimit  int64            `toml:"output_limit"`
	OnDisconnect DisconnectPolicy `toml:"on_disconnect"`
	Observer     Observer         `toml:"-" json:"-"` // told of tasks, spawns and kills as they happen (observe.go); nil: none
}

// Defaults.
const (
	DefaultMaxBacklog  = 1000
	DefaultIdleDelay   = 10 * time.Second
	DefaultOutputLimit = 1 << 20
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
	if c.DefaultTimeout < 0 {
		return c, errors.New("default_timeout must not be negative")
	}
	return c, nil
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
