package main

import (
	"fmt"
	"math"
	"strconv"
	"strings"
)

// haltSpec is --halt WHEN,WHY=N[%] as GNU parallel has it: when "now"
// kills the running commands, "soon" lets them finish; why counts
// failed, succeeded or finished (done) commands; N% is a share of all
// the commands, which are then read before any starts.
type haltSpec struct {
	never bool
	now   bool
	why   string // fail, success, done
	count int
	pct   float64 // 0 < pct <= 1 when a share
	text  string
}

func parseHalt(s string) (haltSpec, error) {
	h := haltSpec{text: s}
	bad := fmt.Errorf("--halt %q: want never, now,fail=N, soon,fail=N%%, now,success=N, soon,done=N (N a count or a percentage), or 0, 1, 2, -1, -2, N%%", s)
	switch s {
	case "", "never", "0":
		h.never = true
		return h, nil
	case "1":
		s = "soon,fail=1"
	case "2":
		s = "now,fail=1"
	case "-1":
		s = "soon,success=1"
	case "-2":
		s = "now,success=1"
	default:
		if strings.HasSuffix(s, "%") && !strings.Contains(s, ",") {
			s = "soon,fail=" + s
		}
	}
	when, rest, ok := strings.Cut(s, ",")
	if !ok {
		return h, bad
	}
	switch when {
	case "now":
		h.now = true
	case "soon":
	default:
		return h, bad
	}
	why, n, ok := strings.Cut(rest, "=")
	if !ok {
		return h, bad
	}
	switch why {
	case "fail", "success", "done":
		h.why = why
	default:
		return h, bad
	}
	if p, ok := strings.CutSuffix(n, "%"); ok {
		v, err := strconv.ParseFloat(p, 64)
		if err != nil || v <= 0 || v > 100 {
			return h, bad
		}
		h.pct = v / 100
		return h, nil
	}
	v, err := strconv.Atoi(n)
	if err != nil || v < 1 {
		return h, bad
	}
	h.count = v
	return h, nil
}

// reached reports whether the condition holds after a command ended.
func (h haltSpec) reached(failed, succeeded, total int) bool {
	if h.never {
		return false
	}
	n := failed
	switch h.why {
	case "success":
		n = succeeded
	case "done":
		n = failed + succeeded
	}
	if h.pct > 0 {
		return float64(n) >= float64(total)*h.pct
	}
	return n >= h.count
}

// exitStatus is the run's exit status once the condition held, as GNU
// parallel computes it: the failed share in percent, the failed count
// (at most 101), the failing command's own status for fail=1 (last is
// that command's), 0 for success.
func (h haltSpec) exitStatus(failed, total, last int) int {
	switch {
	case h.why == "success":
		return 0
	case h.pct > 0:
		return int(math.Ceil(float64(failed) / float64(max(total, 1)) * 100))
	case h.count == 1:
		return last
	}
	return min(failed, 101)
}
