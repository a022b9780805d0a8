package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/cgpool/cgpool/cgroup"
	"github.com/cgpool/cgpool/check"
	"github.com/cgpool/cgpool/worker"
	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"
	"golang.org/x/term"
)

func checkCmd() *cobra.Command {
	var (
		configPath, root, progress, logLevel string
		asJSON                               bool
		o                                    check.Options
	)
	cmd := &cobra.Command{
		Use:   "check",
		Short: "Test this host: which of cgpool's guarantees hold here, and why not",
		Long: `Check what this host gives cgpool, then prove it. First the facts: the
cgroup v2 mount and the root cgpool would use, whether that cgroup is
delegated, which controllers are available, and whether cgroup.kill,
CLONE_INTO_CGROUP, pidfd, memory.events, memory.peak, systemd and python3
(with the cgpool package) are there. Then the task × pool matrix: each task
row (a busy loop, children, detached daemons, ignored SIGTERM, a stopped
process, an escape attempt, an OOM, a fork bomb, nested pools, ...) against
an exec pool, a Go worker pool and a Python worker pool, each run once to
completion and once stuck until a timeout, judged by

  W  the result is right
  K  nothing the task started outlives it
  T  the stuck task is told as a timeout within timeout + slack (1s), and
     every process ever seen in its slot is gone
  E  after the pool's shutdown, no cgroup and no process of it remains

and printed as a table with the time of each cell and the reason for every
guarantee that does not hold. A row whose controller is missing (oom needs
memory, fork_bomb pids) is "n/a" with the reason.

Exit status: 0 when every guarantee asked for holds; 1 when one does not (a
cell fails, cgroup.kill, CLONE_INTO_CGROUP or pidfd is missing, or a limit
the configuration (--config) or --require asks for cannot be had); 2 for bad
usage. Needs what cgpool serve needs: root, or a delegated cgroup.`,
		Example: `  cgpool check
  cgpool check --config /etc/cgpool.toml     # fail if its memory_max cannot be enforced here
  cgpool check --json --require memory,pids
  cgpool check --column exec --row detach,oom`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := newLogger(logLevel)
			if err != nil {
				return usageErr(err)
			}
			for _, r := range o.Require {
				if !slices.Contains([]string{"memory", "pids", "python"}, r) {
					return usageErr(fmt.Errorf("--require %q: want memory, pids or python", r))
				}
			}
			for _, c := range o.Columns {
				if !slices.Contains(check.Columns, c) {
					return usageErr(fmt.Errorf("--column %q: want one of %s", c, strings.Join(check.Columns, ", ")))
				}
			}
			for _, d := range []struct {
				flag string
				v    time.Duration
			}{{"--timeout", o.Timeout}, {"--slack", o.Slack}} {
				if d.v <= 0 {
					return usageErr(fmt.Errorf("%s %v: want a positive duration such as 1s", d.flag, d.v))
				}
			}
			if o.Parallel <= 0 {
				return usageErr(fmt.Errorf("--parallel %d: want at least 1", o.Parallel))
			}
			if progress != "auto" && progress != "always" && progress != "never" {
				return usageErr(fmt.Errorf("--progress %q: want auto, always or never", progress))
			}
			if configPath != "" {
				fc, err := loadConfig(configPath)
				if err != nil {
					return usageErr(err)
				}
				o.Require = append(o.Require, requirements(fc)...)
				if fc.Root != "" && root == "" {
					root = fc.Root
				}
			}
			exe, err := os.Executable()
			if err != nil {
				return err
			}
			o.Self, o.Log = []string{exe}, log
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
			defer stop()
			r, err := openRootOrReduced(ctx, root, true, "", log)
			if err != nil {
				return err
			}
			defer func() {
				if err := r.Release(context.Background()); err != nil {
					log.Error("release cgroup root", "root", r.Path(), "err", err)
				}
			}()
			var bar *progressbar.ProgressBar
			if progress == "always" || (progress == "auto" && term.IsTerminal(int(os.Stderr.Fd()))) {
				o.Progress = func(done, total int, c *check.Cell) {
					if bar == nil {
						bar = progressbar.NewOptions(total, progressbar.OptionSetWriter(os.Stderr), progressbar.OptionSetDescription("cgpool check"),
							progressbar.OptionShowCount(), progressbar.OptionClearOnFinish())
					}
					bar.Describe(fmt.Sprintf("cgpool check: %s × %s %s", c.Row, c.Column, c.Status))
					_ = bar.Add(1)
				}
			}
			rep, err := check.Run(ctx, r, rootOrigin(root, r), o)
			if bar != nil {
				_ = bar.Finish()
			}
			if err != nil {
				return err
			}
			if asJSON {
				err = rep.WriteJSON(os.Stdout)
			} else {
				err = rep.WriteText(os.Stdout)
			}
			if err != nil {
				return err
			}
			if rep.Failed {
				return &exitError{exitFailure}
			}
			return nil
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&configPath, "config", "", "the serve configuration to check for: the limits its pools set become required")
	fl.StringSliceVar(&o.Require, "require", nil, "also require these: memory, pids, python (comma-separated)")
	fl.BoolVar(&asJSON, "json", false, "print the report as JSON")
	fl.StringVar(&root, "root", "", "cgroup directory to check in (default: found as cgpool serve finds it)")
	fl.StringSliceVar(&o.Columns, "column", nil, "only these pool kinds: exec, go, python")
	fl.StringSliceVar(&o.Rows, "row", nil, "only these task rows (see the table for their names)")
	fl.DurationVar(&o.Timeout, "timeout", time.Second, "timeout of the stuck tasks")
	fl.IntVar(&o.Parallel, "parallel", 4, "cells run at once")
	fl.DurationVar(&o.Slack, "slack", time.Second, "how late a timeout may be told, and a slot emptied, on a slow machine (qemu without KVM: 5s)")
	fl.StringVar(&o.Python, "python", "", "Python interpreter for the Python column (default: python3 in PATH)")
	fl.StringVar(&o.PythonPath, "python-path", "", "directory with the cgpool Python package, if it is not installed")
	fl.StringVar(&progress, "progress", "auto", "progress on stderr: auto (on a terminal), always or never")
	fl.StringVar(&logLevel, "log-level", "error", "supervisor log level")
	return cmd
}

// requirements are the guarantees a serve configuration relies on.
func requirements(fc *fileConfig) []string {
	var req []string
	add := func(r string) {
		if !slices.Contains(req, r) {
			req = append(req, r)
		}
	}
	for _, p := range fc.Pools {
		if p.MemoryMax > 0 || p.MemoryHigh > 0 {
			add("memory")
		}
		if p.PidsMax > 0 {
			add("pids")
		}
		if slices.ContainsFunc(p.Command, func(a string) bool { return a == "cgpool.worker" }) {
			add("python")
		}
	}
	return req
}

// rootOrigin says, for the report, how openRoot chose r.
func rootOrigin(flag string, r *cgroup.Root) string {
	switch {
	case r.Reduced():
		return "none: reduced mode, no writable cgroup v2 here"
	case flag != "":
		return "given by --root or the configuration"
	case os.Getenv("CGPOOL_SLOT_CGROUP") != "":
		return "a group in the cgpool slot this runs in (nested)"
	}
	if b := filepath.Base(r.Path()); strings.HasPrefix(b, "cgpool-") && strings.HasSuffix(b, ".scope") {
		return "a transient scope with Delegate=yes that systemd made for us"
	}
	self, _ := cgroup.SelfPath()
	if m, err := cgroup.FindMount(); err == nil {
		own := m.HostPath(self)
		if own == r.Path() || filepath.Dir(own) == r.Path() {
			return "our own cgroup, delegated to us"
		}
	}
	return "created at the top of the hierarchy: run as root, outside a delegated cgroup"
}

// checkWorkerCmd is the Go worker of cgpool check's matrix.
func checkWorkerCmd() *cobra.Command {
	return &cobra.Command{
		Use:    "check-worker",
		Short:  "The Go worker that cgpool check runs its task rows on",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			exe, err := os.Executable()
			if err != nil {
				return err
			}
			return worker.Serve(func(_ context.Context, t *worker.Task) ([]byte, error) { return check.GoTask(t.Payload, []string{exe}) })
		},
	}
}
