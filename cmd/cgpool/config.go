package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
	"github.com/cgpool/cgpool/pool"
)

// fileConfig is the serve configuration file: TOML, or JSON when the file
// name ends in .json (what the Python package writes).
type fileConfig struct {
	Socket      string   `toml:"socket" json:"socket"`
	SocketMode  string   `toml:"socket_mode" json:"socket_mode"`
	SocketGroup int      `toml:"socket_group" json:"socket_group"`
	AllowUIDs   []uint32 `toml:"allow_uids" json:"allow_uids"`
	AllowGIDs   []uint32 `toml:"allow_gids" json:"allow_gids"`
	// Admins may change pools' environments, recycle, shut down and see
	// other peers' tasks in status; root and the daemon's own user always.
	AdminUIDs            []uint32 `toml:"admin_uids" json:"admin_uids"`
	AdminGIDs            []uint32 `toml:"admin_gids" json:"admin_gids"`
	MaxConnections       int      `toml:"max_connections" json:"max_connections"`
	MaxConnectionsPerUID int      `toml:"max_connections_per_uid" json:"max_connections_per_uid"`
	Root                 string   `toml:"root" json:"root"`
	// AllowNoCgroup lets serve run in reduced mode (process groups, no
	// limits, no OOM classification) where no writable cgroup v2 exists.
	AllowNoCgroup bool   `toml:"allow_no_cgroup" json:"allow_no_cgroup"`
	LogLevel      string `toml:"log_level" json:"log_level"`
	// MetricsAddr serves Prometheus metrics ("127.0.0.1:9464", or a bare
	// port); MetricsAllowRemote lets it be an address other hosts reach.
	MetricsAddr        string       `toml:"metrics_addr" json:"metrics_addr"`
	MetricsAllowRemote bool         `toml:"metrics_allow_remote" json:"metrics_allow_remote"`
	Pools              []poolConfig `toml:"pools" json:"pools"`
}

// poolConfig is one pool in the file. Durations are Go duration strings
// ("10s", "250ms"); byte sizes are numbers or strings with a unit ("64M").
type poolConfig struct {
	Name                 string            `toml:"name" json:"name"`
	Kind                 string            `toml:"kind" json:"kind"`
	Command              []string          `toml:"command" json:"command"`
	MaxWorkers           int               `toml:"max_workers" json:"max_workers"`
	MinWorkers           *int              `toml:"min_workers" json:"min_workers"`
	StartWorkers         int               `toml:"start_workers" json:"start_workers"`
	IdleDelay            string            `toml:"idle_delay" json:"idle_delay"`
	MaxTasksPerChild     int               `toml:"max_tasks_per_child" json:"max_tasks_per_child"`
	SpareWorkers         int               `toml:"spare_workers" json:"spare_workers"`
	MaxWorkerMemoryBytes size              `toml:"max_worker_memory_bytes" json:"max_worker_memory_bytes"`
	TrimThresholdBytes   size              `toml:"trim_threshold_bytes" json:"trim_threshold_bytes"`
	MemoryMax            size              `toml:"memory_max" json:"memory_max"`
	MemoryHigh           size              `toml:"memory_high" json:"memory_high"`
	PidsMax              int64             `toml:"pids_max" json:"pids_max"`
	CPUWeight            uint64            `toml:"cpu_weight" json:"cpu_weight"`
	CPUMax               string            `toml:"cpu_max" json:"cpu_max"`
	MaxBacklog           int               `toml:"max_backlog" json:"max_backlog"`
	Env                  map[string]string `toml:"env" json:"env"`
	User                 string            `toml:"user" json:"user"`
	Group                string            `toml:"group" json:"group"`
	UID                  *uint32           `toml:"uid" json:"uid"`
	GID                  *uint32           `toml:"gid" json:"gid"`
	AllowRoot            bool              `toml:"allow_root" json:"allow_root"`
	DefaultTimeout       string            `toml:"default_timeout" json:"default_timeout"`
	MaxTimeout           string            `toml:"max_timeout" json:"max_timeout"`
	MaxEnvBytes          size              `toml:"max_env_bytes" json:"max_env_bytes"`
	MaxArgvBytes         size              `toml:"max_argv_bytes" json:"max_argv_bytes"`
	MaxPayloadBytes      size              `toml:"max_payload_bytes" json:"max_payload_bytes"`
	MaxTasksPerClient    int               `toml:"max_tasks_per_client" json:"max_tasks_per_client"`
	MaxQueuedBytes       size              `toml:"max_queued_bytes" json:"max_queued_bytes"`
	AllowEnv             []string          `toml:"allow_env" json:"allow_env"`
	OutputLimit          size              `toml:"output_limit" json:"output_limit"`
	OnDisconnect         string            `toml:"on_disconnect" json:"on_disconnect"`
}

// size is a byte count written as a number or as "64M", "1G", "512K".
type size int64

func (s *size) UnmarshalText(b []byte) error {
	n, err := parseSize(string(b))
	*s = size(n)
	return err
}

func (s *size) UnmarshalJSON(b []byte) error {
	if len(b) > 0 && b[0] == '"' {
		var str string
		if err := json.Unmarshal(b, &str); err != nil {
			return err
		}
		return s.UnmarshalText([]byte(str))
	}
	var n int64
	if err := json.Unmarshal(b, &n); err != nil {
		return err
	}
	*s = size(n)
	return nil
}

// parseSize reads "123", "64K", "64M", "2G" (powers of 1024; a trailing
// "B" or "iB" is allowed).
func parseSize(s string) (int64, error) {
	t := strings.TrimSpace(strings.ToUpper(s))
	t = strings.TrimSuffix(strings.TrimSuffix(t, "B"), "I")
	mult := int64(1)
	if t != "" {
		switch t[len(t)-1] {
		case 'K':
			mult = 1 << 10
		case 'M':
			mult = 1 << 20
		case 'G':
			mult = 1 << 30
		case 'T':
			mult = 1 << 40
		}
		if mult != 1 {
			t = t[:len(t)-1]
		}
	}
	n, err := strconv.ParseInt(t, 10, 64)
	if err != nil || n < 0 || n > math.MaxInt64/mult {
		return 0, fmt.Errorf("size %q: want a byte count such as 67108864 or 64M (at most 8 EiB)", s)
	}
	return n * mult, nil
}

func parseDuration(what, s string) (time.Duration, error) {
	if s == "" {
		return 0, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 {
		return 0, fmt.Errorf("%s %q: want a duration such as 10s or 250ms", what, s)
	}
	return d, nil
}

func loadConfig(path string) (*fileConfig, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return parseConfig(path, b)
}

// parseConfig reads a configuration file's contents: JSON when name ends
// in .json, TOML otherwise. Unknown settings are errors.
func parseConfig(path string, b []byte) (*fileConfig, error) {
	var c fileConfig
	if strings.EqualFold(filepath.Ext(path), ".json") {
		dec := json.NewDecoder(bytes.NewReader(b))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&c); err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
	} else {
		md, err := toml.Decode(string(b), &c)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		if un := md.Undecoded(); len(un) > 0 {
			return nil, fmt.Errorf("%s: unknown settings %q", path, un)
		}
	}
	return &c, nil
}

// poolConfigs turns the file's pools into pool settings and checks them
// all: every error is reported at once, each naming its pool, so that
// fixing one does not reveal the next.
func (fc *fileConfig) poolConfigs(path string) ([]pool.Config, error) {
	var cfgs []pool.Config
	var errs []error
	seen := map[string]bool{}
	for i, pc := range fc.Pools {
		name := pc.Name
		if name == "" {
			name = fmt.Sprintf("#%d", i+1)
		}
		bad := func(err error) { errs = append(errs, fmt.Errorf("%s: pool %s: %w", path, name, err)) }
		if seen[pc.Name] {
			bad(errors.New("configured twice"))
		}
		seen[pc.Name] = true
		if pc.MaxWorkers == 0 {
			bad(errors.New("max_workers is required: how many workers (or commands) run at once"))
		}
		c, err := pc.toPool()
		if err != nil {
			bad(err)
			continue
		}
		if pc.MaxWorkers != 0 {
			if err := c.Validate(); err != nil {
				if strings.Contains(err.Error(), "pool "+pc.Name+":") {
					errs = append(errs, fmt.Errorf("%s: %w", path, err)) // it names the pool already
				} else {
					bad(err)
				}
				continue
			}
		}
		cfgs = append(cfgs, c)
	}
	return cfgs, errors.Join(errs...)
}

func (pc poolConfig) toPool() (pool.Config, error) {
	idle, err := parseDuration("idle_delay", pc.IdleDelay)
	if err != nil {
		return pool.Config{}, err
	}
	timeout, err := parseDuration("default_timeout", pc.DefaultTimeout)
	if err != nil {
		return pool.Config{}, err
	}
	maxTimeout, err := parseDuration("max_timeout", pc.MaxTimeout)
	if err != nil {
		return pool.Config{}, err
	}
	return pool.Config{
		Name: pc.Name, Kind: pool.Kind(pc.Kind), Command: pc.Command,
		MaxWorkers: pc.MaxWorkers, MinWorkers: pc.MinWorkers, StartWorkers: pc.StartWorkers, IdleDelay: idle,
		MaxTasksPerChild: pc.MaxTasksPerChild, SpareWorkers: pc.SpareWorkers, MaxWorkerMemoryBytes: int64(pc.MaxWorkerMemoryBytes),
		TrimThresholdBytes: int64(pc.TrimThresholdBytes), MemoryMax: int64(pc.MemoryMax), MemoryHigh: int64(pc.MemoryHigh),
		PidsMax: pc.PidsMax, CPUWeight: pc.CPUWeight, CPUMax: pc.CPUMax, MaxBacklog: pc.MaxBacklog,
		Env: pc.Env, User: pc.User, Group: pc.Group, UID: pc.UID, GID: pc.GID, AllowRoot: pc.AllowRoot,
		DefaultTimeout: timeout, MaxTimeout: maxTimeout, MaxEnvBytes: int64(pc.MaxEnvBytes), MaxArgvBytes: int64(pc.MaxArgvBytes),
		MaxPayloadBytes: int64(pc.MaxPayloadBytes), MaxTasksPerClient: pc.MaxTasksPerClient, MaxQueuedBytes: int64(pc.MaxQueuedBytes),
		AllowEnv: pc.AllowEnv, OutputLimit: int64(pc.OutputLimit), OnDisconnect: pool.DisconnectPolicy(pc.OnDisconnect),
	}, nil
}
