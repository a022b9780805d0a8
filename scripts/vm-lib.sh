# shellcheck shell=bash
# vm-lib.sh: what scripts/vm-test.sh and scripts/systemd-vm-test.sh share:
# running qemu and stopping it (only the processes they started, by pid),
# and reading the tests' results from its console. Sourced, not run; the
# sourcing script sets `set -euo pipefail` and its own log and die.

qemu_pid=""
tail_pid=""
qemu_rc=0

now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

# stop_vm stops the VM and the console printer, if running: only the
# processes this script started, by pid.
stop_vm() {
	if [[ -n $qemu_pid ]]; then
		kill "$qemu_pid" 2>/dev/null || true
		wait "$qemu_pid" 2>/dev/null || true
	fi
	if [[ -n $tail_pid ]]; then
		kill "$tail_pid" 2>/dev/null || true
		wait "$tail_pid" 2>/dev/null || true
	fi
	qemu_pid=""
	tail_pid=""
}

# run_vm CONSOLE LIMIT PROBE QEMU...: runs the qemu command QEMU... for at
# most LIMIT seconds with its output in CONSOLE, printing the console as it
# is written, and sets qemu_rc. With PROBE > 0 it returns 3 (and stops the
# VM) if /init has not said hello ("vminit: kernel") within PROBE seconds.
run_vm() {
	local console=$1 limit=$2 probe=$3
	shift 3
	: >"$console"
	# stdin from /dev/null: qemu leaves the terminal alone. Backgrounded
	# commands ignore SIGINT, so the callers' traps stop qemu on Ctrl-C.
	timeout -k 10 "$limit" "$@" </dev/null >>"$console" 2>&1 &
	qemu_pid=$!
	tail -s 0.2 -n +1 -f --pid="$qemu_pid" "$console" &
	tail_pid=$!
	if ((probe > 0)); then
		local deadline=$((SECONDS + probe))
		until grep -a -q 'vminit: kernel' "$console"; do
			if ! kill -0 "$qemu_pid" 2>/dev/null || ((SECONDS >= deadline)); then
				stop_vm
				return 3
			fi
			sleep 0.5
		done
	fi
	set +e
	wait "$qemu_pid"
	qemu_rc=$?
	wait "$tail_pid"
	set -e
	qemu_pid=""
	tail_pid=""
}

# report NAME CONSOLE LIMIT: prints the results that scripts/vminit wrote
# on the console (errors, failures, skips, and last the line "N passed, N
# failed, N skipped") and returns non-zero if a test failed or was skipped
# (inside the VM a skip is a failure), if none passed, or if the VM did not
# finish (no summary line: a timeout after LIMIT seconds, a panic).
report() {
	local name=$1 console=$2 limit=$3
	local clean summary fails skips errors why err passed failed skipped nfail nskip rc=0
	clean=$(tr -d '\r' <"$console" | sed 's/\x1b\[[0-9;?]*[a-zA-Z]//g')
	summary=$(printf '%s\n' "$clean" | grep -a -E '^CGPOOL-SUMMARY: [0-9]+ passed, [0-9]+ failed, [0-9]+ skipped$' | tail -n 1 || true)
	fails=$(printf '%s\n' "$clean" | grep -a -E '^CGPOOL-TEST FAIL ' | cut -d' ' -f3- || true)
	skips=$(printf '%s\n' "$clean" | grep -a -E '^CGPOOL-TEST SKIP ' | cut -d' ' -f3- || true)
	errors=$(printf '%s\n' "$clean" | grep -a -E '^CGPOOL-ERROR: ' | cut -d' ' -f2- || true)
	echo
	[[ -z $errors ]] || { echo "ERROR in the VM:" && printf '%s\n' "$errors" | sed 's/^/  /'; }
	[[ -z $fails ]] || { echo "FAILED:" && printf '%s\n' "$fails" | sed 's/^/  /'; }
	[[ -z $skips ]] || { echo "SKIPPED (a skip inside the VM counts as a failure):" && printf '%s\n' "$skips" | sed 's/^/  /'; }
	if [[ -z $summary ]]; then
		why="qemu exited with status $qemu_rc"
		((qemu_rc != 124 && qemu_rc != 137)) || why="timed out after ${limit}s (CGPOOL_VM_TIMEOUT)"
		err=$(printf '%s\n' "$clean" | grep -a -E 'Kernel panic' | tail -n 3 || true)
		[[ -z $err ]] || printf '%s\n' "$err"
		echo "$name: the VM did not finish its run: no CGPOOL-SUMMARY line ($why); see $console"
		passed=$(printf '%s\n' "$clean" | grep -c -a -E '^CGPOOL-TEST PASS ' || true)
		nfail=$(printf '%s\n' "$clean" | grep -c -a -E '^CGPOOL-TEST FAIL ' || true)
		nskip=$(printf '%s\n' "$clean" | grep -c -a -E '^CGPOOL-TEST SKIP ' || true)
		echo "$passed passed, $((nfail + 1)) failed, $nskip skipped"
		return 1
	fi
	read -r passed failed skipped < <(echo "$summary" | sed -E 's/^CGPOOL-SUMMARY: ([0-9]+) passed, ([0-9]+) failed, ([0-9]+) skipped$/\1 \2 \3/')
	((failed == 0)) || rc=1
	if ((skipped > 0)); then
		echo "$name: $skipped skipped inside the VM"
		rc=1
	fi
	if ((passed == 0)); then
		if ((failed == 0 && skipped == 0)); then
			echo "$name: no test passed: no test ran (does -run match anything?)"
		else
			echo "$name: no test passed"
		fi
		rc=1
	fi
	echo "$passed passed, $failed failed, $skipped skipped"
	return "$rc"
}
