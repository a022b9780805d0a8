package check

import (
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

// WriteJSON writes the report as indented JSON.
func (r *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// cellText is a cell as the table shows it: "pass 0.4s", "FAIL K,T 3.1s",
// "n/a" or "-" (not a row of that column).
func cellText(c *Cell) string {
	if c == nil {
		return "-"
	}
	switch c.Status {
	case "n/a":
		return "n/a"
	case "pass":
		return fmt.Sprintf("pass %.1fs", c.Seconds)
	}
	var failed []string
	for _, x := range []struct{ name, v string }{{"W", c.W}, {"K", c.K}, {"T", c.T}, {"E", c.E}} {
		if x.v == "fail" {
			failed = append(failed, x.name)
		}
	}
	if len(failed) == 0 {
		return "FAIL (n/a, required)"
	}
	return fmt.Sprintf("FAIL %s %.1fs", strings.Join(failed, ","), c.Seconds)
}

// WriteText writes the host facts, the matrix as a table, and the reason
// for every guarantee that does not hold.
func (r *Report) WriteText(w io.Writer) error {
	h := r.Host
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	feature := func(f Feature) string {
		if f.OK {
			return "yes: " + f.Detail
		}
		return "NO: " + f.Detail
	}
	mount := h.Mount
	if h.MountRoot != "" && h.MountRoot != "/" {
		mount += " (namespace root " + h.MountRoot + ")"
	}
	if h.Hybrid {
		mount += "; hybrid host: cgroup v1 hierarchies are mounted too"
	}
	fmt.Fprintln(tw, "cgpool check: this host")
	for _, kv := range [][2]string{
		{"kernel", h.Kernel},
		{"cgroup v2 mount", mount},
		{"own cgroup", h.OwnCgroup},
		{"root", h.Root},
		{"delegated", feature(h.Delegated)},
		{"controllers", fmt.Sprintf("offered to the root: %s; enabled for slots: %s", list(h.Offered), list(h.Enabled))},
		{"cgroup.kill", feature(h.CgroupKill)},
		{"CLONE_INTO_CGROUP", feature(h.CloneInto)},
		{"pidfd", feature(h.Pidfd)},
		{"memory.events", feature(h.MemoryEvents)},
		{"memory.peak", feature(h.MemoryPeak)},
		{"systemd", feature(h.Systemd)},
		{"python", feature(h.Python)},
	} {
		fmt.Fprintf(tw, "  %s\t%s\n", kv[0], kv[1])
	}
	fmt.Fprintln(tw)
	cols := []string{}
	for _, col := range Columns {
		if slices.ContainsFunc(r.Cells, func(c *Cell) bool { return c.Column == col }) {
			cols = append(cols, col)
		}
	}
	fmt.Fprintf(tw, "task \\ pool\t%s\n", strings.Join(cols, "\t"))
	for _, rw := range rows {
		var line []string
		any := false
		for _, col := range cols {
			c := r.cell(rw.name, col)
			any = any || c != nil
			line = append(line, cellText(c))
		}
		if any {
			fmt.Fprintf(tw, "%s\t%s\n", rw.name, strings.Join(line, "\t"))
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(w, "\nW: the result is right; K: nothing the task started outlives it; T: a stuck task times out (timeout %s, told within %s more) and its whole tree is killed; E: shutdown leaves nothing.\n",
		seconds(r.TimeoutSeconds), seconds(r.SlackSeconds))
	var pass, fail, na int
	for _, c := range r.Cells {
		switch c.Status {
		case "pass":
			pass++
		case "fail":
			fail++
		default:
			na++
		}
	}
	if len(r.Missing) > 0 {
		fmt.Fprintln(w, "\nNot available here:")
		for _, m := range r.Missing {
			fmt.Fprintln(w, "  "+m)
		}
	}
	if fail > 0 {
		fmt.Fprintln(w, "\nFailed:")
		for _, c := range r.Cells {
			if c.Status == "fail" {
				fmt.Fprintf(w, "  %s × %s: %s\n", c.Row, c.Column, c.Reason)
			}
		}
	}
	var notes []string
	for _, c := range r.Cells {
		for _, n := range c.Notes {
			notes = append(notes, fmt.Sprintf("  %s × %s: %s", c.Row, c.Column, n))
		}
	}
	if len(notes) > 0 {
		fmt.Fprintln(w, "\nNotes:")
		fmt.Fprintln(w, strings.Join(notes, "\n"))
	}
	verdict := "every guarantee asked for holds"
	if r.Failed {
		verdict = "a guarantee asked for does not hold"
	}
	_, err := fmt.Fprintf(w, "\n%d cells: %d passed, %d failed, %d not available; %s\n", len(r.Cells), pass, fail, na, verdict)
	return err
}

func (r *Report) cell(row, col string) *Cell {
	for _, c := range r.Cells {
		if c.Row == row && c.Column == col {
			return c
		}
	}
	return nil
}

func list(s []string) string {
	if len(s) == 0 {
		return "none"
	}
	return strings.Join(s, " ")
}

// seconds formats a duration in seconds as Go does ("1s", "1.5s").
func seconds(s float64) string { return time.Duration(s * float64(time.Second)).String() }
