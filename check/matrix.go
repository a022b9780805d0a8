package check

import (
	"fmt"
	"strings"
)

// Columns: the kinds of pool every row runs against.
const (
	ColExec   = "exec"   // a command per task, in the slot's leaf
	ColGo     = "go"     // a Go worker (cgpool check-worker, built on package worker)
	ColPython = "python" // the Python worker (python3 -m cgpool.worker)
)

// Columns lists them in table order.
var Columns = []string{ColExec, ColGo, ColPython}

// row is one task kind of the matrix.
type row struct {
	name  string
	needs string // the controller its limit needs: "", "memory" or "pids"
	// In which columns it runs (the Python-only rows probe Python's own
	// pools and process model).
	exec, goW, py bool
	// oom: the normal form's right outcome is an OOM kill, not 10.
	oom bool
	// noRoot: its tasks must not run as root (the escape row: as root a
	// process may move itself anywhere).
	noRoot bool
	what   string
}

// rows is the matrix of check-matrix.md §3.2, in its order.
var rows = []row{
	{name: "cpu", exec: true, goW: true, py: true, what: "baseline; stuck: a busy loop"},
	{name: "subprocess", exec: true, goW: true, py: true, what: "ordinary children; stuck: sleep forever"},
	{name: "mp_process", py: true, what: "multiprocessing.Process: the worker must not be daemonic"},
	{name: "mp_pool", py: true, what: "a nested multiprocessing.Pool"},
	{name: "cf_pool", py: true, what: "nested ProcessPoolExecutors (fork and forkserver)"},
	{name: "cgpool_nested", exec: true, goW: true, py: true, what: "a cgpool inside a task (cgpool run; the Python Executor)"},
	{name: "b_pool", py: true, what: "a billiard pool (Celery's), where python3-billiard is installed"},
	{name: "detach", exec: true, goW: true, py: true, what: "double fork + setsid: re-parenting escapes tree walks"},
	{name: "bg_child", exec: true, goW: true, py: true, what: "a child started and not waited for"},
	{name: "threads_fork", py: true, what: "fork while a thread holds a lock: a child that never exits"},
	{name: "parent_threads", py: true, what: "the client has threads: workers are exec'd, never forked from it"},
	{name: "sigterm_ignore", exec: true, goW: true, py: true, what: "SIGTERM ignored: the kill must not rely on it"},
	{name: "gil_c", goW: true, py: true, what: "a loop that never yields (C holding the GIL; a locked Go thread)"},
	{name: "sigstop", exec: true, goW: true, py: true, what: "a stopped process: cgroup.kill still ends it"},
	{name: "cgroup_escape", exec: true, goW: true, py: true, noRoot: true, what: "the task tries to move itself out of its slot: refused"},
	{name: "oom", needs: "memory", exec: true, goW: true, py: true, oom: true, what: "allocate past memory.max: outcome oom"},
	{name: "fork_bomb", needs: "pids", exec: true, goW: true, py: true, what: "fork past pids.max"},
}

// in reports whether the row runs in column col.
func (r row) in(col string) bool {
	switch col {
	case ColExec:
		return r.exec
	case ColGo:
		return r.goW
	case ColPython:
		return r.py
	}
	return false
}

// Limits of the pools of the rows that need them.
const (
	oomLimit  = 64 << 20
	pidsLimit = 64
)

// execArgv is the exec column's command for row r; self runs cgpool.
func execArgv(r string, stuck bool, self []string) []string {
	sh := func(normal, blocked string) []string {
		if stuck {
			return []string{"sh", "-c", blocked}
		}
		return []string{"sh", "-c", normal}
	}
	switch r {
	case "cpu":
		return sh(`i=0; while [ $i -lt 100000 ]; do i=$((i+1)); done; echo 10`, `while :; do :; done`)
	case "subprocess":
		return sh(`date >/dev/null && echo 10`, `date >/dev/null; sleep 3600`)
	case "cgpool_nested":
		args := "-j2 -- echo 10"
		if stuck {
			args = "-j2 -- sleep 3600"
		}
		return append(append([]string(nil), self...), strings.Fields("run --progress never --once "+args)...)
	case "detach":
		return sh(`(setsid sleep 3600 &); echo 10`, `(setsid sleep 3600 &); sleep 3600`)
	case "bg_child":
		return sh(`sleep 3600 & echo 10`, `sleep 3600 & wait`)
	case "sigterm_ignore":
		return sh(`trap '' TERM; echo 10`, `trap '' TERM; sleep 3600`)
	case "sigstop":
		return sh(`sleep 3600 & kill -STOP $!; echo 10`, `kill -STOP $$`)
	case "cgroup_escape":
		// Every parent of our cgroup, up to the top: each write must fail.
		const try = `M=$CGPOOL_CHECK_CGROUP_MOUNT; d=$(sed -n 's/^0:://p' /proc/self/cgroup); ` +
			`while [ -n "$d" ] && [ "$d" != / ]; do d=$(dirname "$d"); ` +
			`if (echo $$ > "$M$d/cgroup.procs") 2>/dev/null; then echo "escaped to $M$d"; exit 0; fi; done; `
		return sh(try+`echo 10`, try+`sleep 3600`)
	case "oom":
		if stuck {
			return []string{"awk", `BEGIN { s = "x"; for (i = 0; i < 23; i++) s = s s; system("sleep 3600") }`}
		}
		return []string{"awk", `BEGIN { s = "x"; while (1) s = s s }`}
	case "fork_bomb":
		// Without a limit this starts 1000 sleeps and says so; under
		// pids.max the shell cannot fork and gives up.
		return sh(`i=0; while [ $i -lt 1000 ]; do sleep 3600 & i=$((i+1)); done; echo no limit`,
			`i=0; while [ $i -lt 1000 ]; do sleep 3600 & i=$((i+1)); done 2>/dev/null; wait`)
	}
	panic(fmt.Sprintf("check: no exec form for row %q", r))
}

// goPayload is the Go worker's task for row r (see GoTask).
func goPayload(r string, stuck bool) []byte {
	if stuck {
		return []byte(r + ":stuck")
	}
	return []byte(r)
}

// pyPayload is the Python worker's task: a pickle (protocol 2) of
// (cgpool_check_tasks.run, (r, stuck), {}), which cgpool.worker unpickles
// and calls.
func pyPayload(r string, stuck bool) []byte {
	b := []byte("\x80\x02ccgpool_check_tasks\nrun\n")
	b = append(b, 'X', byte(len(r)), byte(len(r)>>8), byte(len(r)>>16), byte(len(r)>>24))
	b = append(b, r...)
	if stuck {
		b = append(b, 0x88) // NEWTRUE
	} else {
		b = append(b, 0x89) // NEWFALSE
	}
	return append(b, 0x86, '}', 0x87, '.') // TUPLE2, EMPTY_DICT, TUPLE3, STOP
}

// unpickle reads the small results the Python rows return (an int, or a
// string saying what went wrong) from a pickle of any protocol; anything
// else comes back as its bytes, quoted.
func unpickle(b []byte) string {
	i := 0
	if len(b) > 1 && b[0] == 0x80 { // PROTO
		i = 2
	}
	if i < len(b) && b[i] == 0x95 { // FRAME + 8-byte length
		i += 9
	}
	if i >= len(b) {
		return fmt.Sprintf("%q", b)
	}
	rest := b[i+1:]
	switch b[i] {
	case 'K': // BININT1
		if len(rest) >= 1 {
			return fmt.Sprint(int(rest[0]))
		}
	case 'M': // BININT2
		if len(rest) >= 2 {
			return fmt.Sprint(int(rest[0]) | int(rest[1])<<8)
		}
	case 0x8c: // SHORT_BINUNICODE
		if len(rest) >= 1 && len(rest) >= 1+int(rest[0]) {
			return string(rest[1 : 1+int(rest[0])])
		}
	case 'X': // BINUNICODE
		if len(rest) >= 4 {
			n := int(rest[0]) | int(rest[1])<<8 | int(rest[2])<<16 | int(rest[3])<<24
			if len(rest) >= 4+n {
				return string(rest[4 : 4+n])
			}
		}
	}
	return fmt.Sprintf("%q", b)
}
