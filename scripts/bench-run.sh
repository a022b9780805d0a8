#!/usr/bin/env bash
# bench-run.sh: `cgpool run -j2 --joblog` over N `true` commands (each in a
# cgroup slot of its own, killed and checked after it, its output
# streamed, a joblog line written) beside, in the same run and alternating:
#   xargs -P2                  the same commands, no cgroups
#   GNU parallel -j2 --joblog  the tool cgpool run stands in for
#   floor                      scripts/benchfloor: a fresh cgroup leaf per
#                              command (mkdir, CLONE_INTO_CGROUP, wait,
#                              rmdir) and nothing else: what the kernel costs
# and prints the medians and the ratios. Targets (issue 14): cgpool run at
# most 1.25x xargs, at least 3x faster than GNU parallel. These machines are
# shared and noisy: read the ratios, not the seconds.
#
#   scripts/bench-run.sh [N] [REPEATS]      (default 2000 commands, 5 repeats)
#
# Needs root (or a delegated cgroup v2) and GNU parallel (apt-get install
# parallel; without it that row is skipped).
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-2000}
REPEATS=${2:-5}
export PATH="/usr/local/go/bin:$PATH"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
go build -o "$tmp/cgpool" ./cmd/cgpool
go build -o "$tmp/floor" ./scripts/benchfloor
have_parallel=0
if command -v parallel >/dev/null; then
	have_parallel=1
	export PARALLEL_HOME="$tmp/parallel-home"
fi

secs() { # run "$@" and print its wall time in seconds
	local t0 t1
	t0=$(date +%s.%N)
	"$@" >/dev/null
	t1=$(date +%s.%N)
	awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f\n", b - a }'
}
median() { sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

xargs_run() { seq "$N" | xargs -P2 -I{} true {}; }
floor_run() { "$tmp/floor" -P 2 "$N" true; }
cgpool_run() {
	seq "$N" | "$tmp/cgpool" run -j2 --progress never --joblog "$tmp/cgpool.log" true 2>/dev/null
	[ "$(wc -l <"$tmp/cgpool.log")" -eq $((N + 1)) ] || { echo "cgpool run: the joblog lacks lines" >&2; exit 1; }
}
parallel_run() { seq "$N" | parallel --will-cite -j2 --joblog "$tmp/parallel.log" true; }

: >"$tmp/x"
: >"$tmp/f"
: >"$tmp/c"
: >"$tmp/p"
for _ in $(seq "$REPEATS"); do
	secs xargs_run >>"$tmp/x"
	secs floor_run >>"$tmp/f"
	secs cgpool_run >>"$tmp/c"
	if [ "$have_parallel" = 1 ]; then
		secs parallel_run >>"$tmp/p"
	fi
done
x=$(median <"$tmp/x")
f=$(median <"$tmp/f")
c=$(median <"$tmp/c")
p=0
if [ "$have_parallel" = 1 ]; then
	p=$(median <"$tmp/p")
fi
awk -v n="$N" -v r="$REPEATS" -v x="$x" -v f="$f" -v c="$c" -v p="$p" 'BEGIN {
	printf "%d x true, -P2/-j2, median of %d runs each, alternating\n", n, r
	printf "  %-34s %8s %12s %10s\n", "", "seconds", "us/command", "vs xargs"
	printf "  %-34s %8.3f %12.0f %9.2fx\n", "xargs -P2", x, x / n * 1e6, 1
	printf "  %-34s %8.3f %12.0f %9.2fx\n", "floor (fresh leaf per command)", f, f / n * 1e6, f / x
	printf "  %-34s %8.3f %12.0f %9.2fx   (target: at most 1.25x)\n", "cgpool run -j2 --joblog", c, c / n * 1e6, c / x
	if (p > 0) {
		printf "  %-34s %8.3f %12.0f %9.2fx\n", "GNU parallel -j2 --joblog", p, p / n * 1e6, p / x
		printf "  GNU parallel / cgpool run: %.2fx (target: at least 3x)\n", p / c
	} else {
		printf "  GNU parallel: not installed (apt-get install parallel)\n"
	}
}'
