package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/cgpool/cgpool/client"
	"github.com/cgpool/cgpool/pool"
	"github.com/spf13/cobra"
)

// adminCmd builds a command that talks to the daemon once. poolHelp is
// what --pool means for it ("" for a command without --pool).
func adminCmd(use, short, long, poolHelp string, args cobra.PositionalArgs, setup func(*cobra.Command), run func(cmd *cobra.Command, args []string, socket, pool string) error) *cobra.Command {
	var socket, poolName string
	cmd := &cobra.Command{Use: use, Short: short, Long: long, Args: args,
		RunE: func(cmd *cobra.Command, a []string) error { return run(cmd, a, socket, poolName) }}
	cmd.Flags().StringVar(&socket, "socket", defaultSocket(), "the daemon's unix socket")
	if poolHelp != "" {
		cmd.Flags().StringVar(&poolName, "pool", "", poolHelp)
	}
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

// byPool decodes a stats or status document: one pool's (when p names
// it) or every pool's, keyed by name.
func byPool[T any](raw json.RawMessage, p string) (map[string]T, error) {
	all := map[string]T{}
	if p != "" {
		var one T
		if err := json.Unmarshal(raw, &one); err != nil {
			return nil, err
		}
		all[p] = one
		return all, nil
	}
	return all, json.Unmarshal(raw, &all)
}

// documentCmd is stats and ps: it fetches one document from the daemon
// (one pool's or every pool's), what it is called in --json's help, and
// prints it as JSON with --json, else as table prints it.
func documentCmd[T any](use, short, long, what string, fetch func(*client.Client, context.Context, string) (json.RawMessage, error), table func(io.Writer, map[string]T) error) *cobra.Command {
	var asJSON bool
	return adminCmd(use, short, long, "the pool (default: all pools)", cobra.NoArgs,
		func(cmd *cobra.Command) { cmd.Flags().BoolVar(&asJSON, "json", false, "print the "+what+" as JSON") },
		func(cmd *cobra.Command, _ []string, socket, p string) error {
			c, err := dial(cmd.Context(), socket)
			if err != nil {
				return err
			}
			defer c.Close()
			raw, err := fetch(c, cmd.Context(), p)
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(raw)
			}
			all, err := byPool[T](raw, p)
			if err != nil {
				return err
			}
			return table(os.Stdout, all)
		})
}

func statsCmd() *cobra.Command {
	return documentCmd("stats", "Print pool statistics: a table, or JSON with --json",
		`Print each pool's statistics as a table: workers alive, busy and idle, tasks
queued, running, received, succeeded, failed (with the reasons), cancelled and
rejected. --json prints the whole document, Deadpool's eight keys first
(tasks_received, tasks_launched, tasks_failed, worker_processes_created,
max_workers_busy_concurrently, worker_processes_still_alive,
worker_processes_idle, worker_processes_busy), then the rest.`,
		"statistics", (*client.Client).Stats, statsTable)
}

// statsTable prints the statistics for a person.
func statsTable(w io.Writer, all map[string]pool.Stats) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "POOL\tWORKERS\tBUSY\tIDLE\tQUEUED\tRUNNING\tRECEIVED\tSUCCEEDED\tFAILED\tCANCELLED\tREJECTED")
	var notes []string
	for _, name := range slices.Sorted(maps.Keys(all)) {
		st := all[name]
		fmt.Fprintf(tw, "%s\t%d/%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\n", name, st.WorkerProcessesStillAlive, st.MaxWorkers,
			st.WorkerProcessesBusy, st.WorkerProcessesIdle, st.TasksQueued, st.TasksRunning, st.TasksReceived,
			st.TasksSucceeded, st.TasksFailed, st.TasksCancelled, st.TasksRejected)
		if len(st.FailuresByReason) > 0 {
			var why []string
			for _, k := range slices.Sorted(maps.Keys(st.FailuresByReason)) {
				why = append(why, fmt.Sprintf("%s %d", k, st.FailuresByReason[k]))
			}
			notes = append(notes, fmt.Sprintf("%s: failed: %s", name, strings.Join(why, ", ")))
		}
		var more []string
		for _, kv := range []struct {
			what string
			n    int64
		}{{"workers created", st.WorkerProcessesCreated}, {"retired", st.WorkersRetired}, {"leftover processes killed", st.LeftoverProcessesKilled},
			{"worker start failures", st.WorkerStartFailures}, {"initializer failures", st.InitializerFailures}, {"trimmed", st.WorkersTrimmed}} {
			if kv.n > 0 {
				more = append(more, fmt.Sprintf("%s %d", kv.what, kv.n))
			}
		}
		if len(more) > 0 {
			notes = append(notes, fmt.Sprintf("%s: %s", name, strings.Join(more, ", ")))
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, n := range notes {
		fmt.Fprintln(w, n)
	}
	for _, name := range slices.Sorted(maps.Keys(all)) {
		if m := all[name].MissingGuarantees; len(m) > 0 {
			fmt.Fprintf(w, "pool %s runs in reduced mode (no writable cgroup v2); missing guarantees: %s\n", name, strings.Join(m, "; "))
		}
	}
	return nil
}

func psCmd() *cobra.Command {
	return documentCmd("ps", "List the worker processes: pid, cgroup leaf, state, current task, memory, tasks done",
		`List every worker process (and every exec command running) with its slot, pid,
state, task, memory and cgroup leaf. Slots with no process (an exec pool's
slot between commands, a slot starting) are counted below the table instead.
--json prints the whole status document, those slots included.`,
		"status", (*client.Client).Status, psTable)
}

// psTable prints the slots that hold a process, and how many do not.
func psTable(w io.Writer, all map[string]pool.Status) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "POOL\tSLOT\tPID\tSTATE\tTASK\tMEM\tPEAK\tDONE\tLEAF")
	var notes []string
	for _, name := range slices.Sorted(maps.Keys(all)) {
		empty := map[string]int{}
		for _, ws := range all[name].Workers {
			if ws.Pid == 0 {
				empty[ws.State]++
				continue
			}
			task := "-"
			if ws.Task != 0 {
				task = fmt.Sprint(ws.Task)
			}
			leaf := ws.Leaf
			if leaf == "" && len(all[name].MissingGuarantees) > 0 {
				leaf = "(process group)"
			}
			fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%s\t%s\t%d\t%s\n", name, ws.Slot, ws.Pid, ws.State, task, human(ws.MemoryCurrent), human(ws.MemoryPeak), ws.TasksDone, leaf)
		}
		if n := sum(empty); n > 0 {
			var by []string
			for _, st := range slices.Sorted(maps.Keys(empty)) {
				by = append(by, fmt.Sprintf("%d %s", empty[st], st))
			}
			notes = append(notes, fmt.Sprintf("%s: %s with no process to show (%s)", name, plural(n, "slot"), strings.Join(by, ", ")))
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, n := range notes {
		fmt.Fprintln(w, n)
	}
	for _, name := range slices.Sorted(maps.Keys(all)) {
		if m := all[name].MissingGuarantees; len(m) > 0 {
			fmt.Fprintf(w, "pool %s runs in reduced mode (no writable cgroup v2); missing guarantees: %s\n", name, strings.Join(m, "; "))
		}
	}
	return nil
}

func sum(m map[string]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
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
	return adminCmd("env [NAME=VALUE...]", "List a pool's environment, or set it for workers started from now on",
		`With no arguments, list each pool's environment: the variables its workers
and commands get on top of the daemon's own.

With NAME=VALUE arguments, add them to the pool's environment (--replace:
make them the whole set; "cgpool env --replace" alone clears it). Running
workers keep the environment they started with; run "cgpool recycle" to roll
the change out to every later task.`,
		"the pool (default: all pools to list, the first pool to change)", cobra.ArbitraryArgs,
		func(cmd *cobra.Command) {
			cmd.Flags().BoolVar(&replace, "replace", false, "replace the pool's variables instead of adding to them")
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
			if len(args) > 0 || replace {
				return c.SetEnv(cmd.Context(), p, env, replace)
			}
			raw, err := c.Status(cmd.Context(), p)
			if err != nil {
				return err
			}
			all, err := byPool[pool.Status](raw, p)
			if err != nil {
				return err
			}
			for _, name := range slices.Sorted(maps.Keys(all)) {
				st := all[name]
				if len(all) > 1 {
					fmt.Printf("# pool %s\n", name)
				}
				if st.Env == nil {
					fmt.Println("# (not shown to you: the daemon shows a pool's environment to its admins)")
					continue
				}
				if len(st.Env) == 0 {
					fmt.Println("# no variables of the pool's own (its workers get the daemon's environment)")
				}
				for _, k := range slices.Sorted(maps.Keys(st.Env)) {
					fmt.Printf("%s=%s\n", k, st.Env[k])
				}
			}
			return nil
		})
}

func recycleCmd() *cobra.Command {
	return adminCmd("recycle", "Replace a pool's workers (idle ones now, busy ones after their task)",
		`Replace the pool's workers: idle ones at once, busy ones when their task ends.
Every task that starts after this command returns runs on a worker started
after it, with the pool's environment as it is then (see "cgpool env").`,
		"the pool (default: the first pool)", cobra.NoArgs, nil, func(cmd *cobra.Command, _ []string, socket, p string) error {
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
		`Shut the daemon down, as Deadpool's shutdown(wait, cancel_futures). --wait is
on by default: the command returns once the work has wound down.
  (default, --wait)               queued and running tasks all run
  --cancel-futures                running tasks finish; queued ones are cancelled
  --wait=false                    running tasks finish; queued ones are cancelled;
                                  returns at once
  --wait=false --cancel-futures   running tasks are killed, queued ones cancelled
--deadline D kills whatever still runs D after the shutdown began.`,
		"", cobra.NoArgs, func(cmd *cobra.Command) {
			cmd.Flags().BoolVar(&wait, "wait", true, "return once the work has wound down (--wait=false: at once)")
			cmd.Flags().BoolVar(&cancelFutures, "cancel-futures", false, "cancel the queued tasks")
			cmd.Flags().DurationVar(&deadline, "deadline", 0, "kill what still runs after this long (0: no deadline)")
		}, func(cmd *cobra.Command, _ []string, socket, _ string) error {
			if deadline < 0 {
				return usageErr(fmt.Errorf("--deadline %v: must not be negative", deadline))
			}
			c, err := dial(cmd.Context(), socket)
			if err != nil {
				return err
			}
			defer c.Close()
			return c.Shutdown(cmd.Context(), wait, cancelFutures, deadline)
		})
}
