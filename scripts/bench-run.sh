#!/usr/bin/env bash
# bench-run.sh: `cgpool run` over N `true` commands (each in its own cgroup
# slot, killed and checked after it) beside `xargs -P2` doing the same
# without cgroups, alternating runs on the same machine; prints the
# medians and their ratio. These machines are shared and noisy: read the
# ratio, not the seconds.
#
#   scripts/bench-run.sh [N] [REPEATS]      (default 2000 commands, 5 repeats)
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-2000}
REPEATS=${2:-5}
export PATH="/usr/local/go/bin:$PATH"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
go build -o "$tmp/cgpool" ./cmd/cgpool

secs() { # run "$@" and print its wall time in seconds
	local t0 t1
	t0=$(date +%s.%N)
	"$@" >/dev/null
	t1=$(date +%s.%N)
	awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f\n", b - a }'
}
median() { sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

xargs_run() { seq "$N" | xargs -P2 -I{} true {}; }
cgpool_run() { seq "$N" | "$tmp/cgpool" run -j2 --progress never -q -- true {} 2>/dev/null; }

: >"$tmp/x"
: >"$tmp/c"
for _ in $(seq "$REPEATS"); do
	secs xargs_run >>"$tmp/x"
	secs cgpool_run >>"$tmp/c"
done
x=$(median <"$tmp/x")
c=$(median <"$tmp/c")
awk -v n="$N" -v x="$x" -v c="$c" 'BEGIN {
	printf "%d x true, -P2/-j2, median of runs\n", n
	printf "  xargs -P2        %.3f s  (%.0f us a command)\n", x, x / n * 1e6
	printf "  cgpool run -j2   %.3f s  (%.0f us a command, each in its own cgroup)\n", c, c / n * 1e6
	printf "  ratio            %.2fx xargs (target: at most 1.5x)\n", c / x
}'
