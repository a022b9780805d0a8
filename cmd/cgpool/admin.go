package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/cgpool/cgpool/pool"
	"github.com/spf13/cobra"
)

// adminCmd builds a command that talks to the daemon once.
func adminCmd(use, short, long string, args cobra.PositionalArgs, setup func(*cobra.Command), run func(cmd *cobra.Command, args []string, socket, pool string) error) *cobra.Command {
	var socket, poolName string
	cmd := &cobra.Command{Use: use, Short: short, Long: long, Args: args,
		RunE: func(cmd *cobra.Command, a []string) error { return run(cmd, a, socket, poolName) }}
	cmd.Flags().StringVar(&socket, "socket", defaultSocket(), "the daemon's unix socket")
	cmd.Flags().StringVar(&poolName, "pool", "", "pool name (default: all pools, or the first for changes)")
	if setup != nil {
		setup(cmd)
	}
	return cmd
}

func printJSON(raw json.RawMessage) error {
	var out bytes.Buffer
	if err := json.Indent(&out, raw, "", "  "); err != nil {
		return err
	}
	fmt.Println(out.String())
	return nil
}

func statsCmd() *cobra.Command {
	return adminCmd("stats", "Print pool statistics as JSON (Deadpool's eight keys first)",
		"Print each pool's statistics: tasks_received, tasks_launched, tasks_failed, worker_processes_created,\nmax_workers_busy_concurrently, worker_processes_still_alive, worker_processes_idle, worker_processes_busy,\nthen failures by reason and per-pool gauges.",
		cobra.NoArgs, nil, func(cmd *cobra.Command, _ []string, socket, p string) error {
			c, err := dial(cmd.Context(), socket)
			if err != nil {
				return err
			}
			defer c.Close()
			raw, err := c.Stats(cmd.Context(), p)
			if err != nil {
				return err
			}
			return printJSON(raw)
		})
}

func psCmd() *cobra.Command {
	var asJSON bool
	return adminCmd("ps", "List workers: pid, cgroup leaf, state, current task, memory, tasks done", "", cobra.NoArgs,
		func(cmd *cobra.Command) { cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON") },
		func(cmd *cobra.Command, _ []string, socket, p string) error {
			c, err := dial(cmd.Context(), socket)
			if err != nil {
				return err
			}
			defer c.Close()
			raw, err := c.Status(cmd.Context(), p)
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(raw)
			}
			var all map[string]pool.Status
			if p != "" {
				var one pool.Status
				if err := json.Unmarshal(raw, &one); err != nil {
					return err
				}
				all = map[string]pool.Status{p: one}
			} else if err := json.Unmarshal(raw, &all); err != nil {
				return err
			}
			tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "POOL\tSLOT\tPID\tSTATE\tTASK\tMEM\tPEAK\tDONE\tLEAF")
			for _, name := range slices.Sorted(maps.Keys(all)) {
				for _, w := range all[name].Workers {
					task := "-"
					if w.Task != 0 {
						task = fmt.Sprint(w.Task)
					}
					leaf := w.Leaf
					if leaf == "" && len(all[name].MissingGuarantees) > 0 {
						leaf = "(process group)"
					}
					fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%s\t%s\t%d\t%s\n", name, w.Slot, w.Pid, w.State, task, human(w.MemoryCurrent), human(w.MemoryPeak), w.TasksDone, leaf)
				}
			}
			if err := tw.Flush(); err != nil {
				return err
			}
			for _, name := range slices.Sorted(maps.Keys(all)) {
				if m := all[name].MissingGuarantees; len(m) > 0 {
					fmt.Printf("pool %s runs in reduced mode (no writable cgroup v2); missing guarantees: %s\n", name, strings.Join(m, "; "))
				}
			}
			return nil
		})
}

func human(n int64) string {
	switch {
	case n <= 0:
		return "-"
	case n >= 1<<30:
		return fmt.Sprintf("%.1fG", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1fM", float64(n)/(1<<20))
	}
	return fmt.Sprintf("%.0fK", float64(n)/(1<<10))
}

func envCmd() *cobra.Command {
	var replace bool
	return adminCmd("env [NAME=VALUE...]", "Set a pool's environment for workers started from now on",
		`Add NAME=VALUE pairs to the pool's environment (--replace: make them the whole
set). Running workers keep the environment they started with; run
"cgpool recycle" to roll the change out to every later task.`,
		cobra.MinimumNArgs(1),
		func(cmd *cobra.Command) {
			cmd.Flags().BoolVar(&replace, "replace", false, "replace the pool's variables instead of adding")
		},
		func(cmd *cobra.Command, args []string, socket, p string) error {
			env := map[string]string{}
			for _, kv := range args {
				k, v, ok := strings.Cut(kv, "=")
				if !ok || k == "" {
					return usageErr(fmt.Errorf("%q: want NAME=VALUE", kv))
				}
				env[k] = v
			}
			c, err := dial(cmd.Context(), socket)
			if err != nil {
				return err
			}
			defer c.Close()
			return c.SetEnv(cmd.Context(), p, env, replace)
		})
}

func recycleCmd() *cobra.Command {
	return adminCmd("recycle", "Replace a pool's workers (idle ones now, busy ones after their task)",
		"Every task that starts after this returns runs on a worker started after it, with the pool's environment current then.",
		cobra.NoArgs, nil, func(cmd *cobra.Command, _ []string, socket, p string) error {
			c, err := dial(cmd.Context(), socket)
			if err != nil {
				return err
			}
			defer c.Close()
			return c.Recycle(cmd.Context(), p)
		})
}

func shutdownCmd() *cobra.Command {
	var wait, cancelFutures bool
	var deadline time.Duration
	return adminCmd("shutdown", "Shut the daemon down",
		`Shut the daemon down, as Deadpool's shutdown(wait, cancel_futures):
  --wait --cancel-futures   running tasks finish, queued ones are cancelled
  --wait                    running and queued tasks all run
  --cancel-futures          running tasks are killed, queued ones cancelled
  (neither)                 running tasks finish, queued ones are cancelled
--deadline kills whatever still runs after that long.`,
		cobra.NoArgs, func(cmd *cobra.Command) {
			cmd.Flags().BoolVar(&wait, "wait", true, "return when running work is done")
			cmd.Flags().BoolVar(&cancelFutures, "cancel-futures", false, "cancel queued tasks")
			cmd.Flags().DurationVar(&deadline, "deadline", 0, "kill what still runs after this long (0: no deadline)")
		}, func(cmd *cobra.Command, _ []string, socket, _ string) error {
			c, err := dial(cmd.Context(), socket)
			if err != nil {
				return err
			}
			defer c.Close()
			return c.Shutdown(cmd.Context(), wait, cancelFutures, deadline)
		})
}
