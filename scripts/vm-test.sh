#!/usr/bin/env bash
# vm-test.sh: run cgpool's Go tests inside a qemu VM booted on Debian 12's
# Linux 6.1 kernel, which has a full cgroup v2 hierarchy (memory, pids,
# cgroup.kill, memory.peak) that the host may not give us. See usage below.
set -euo pipefail

usage() {
	cat <<'EOF'
Usage: scripts/vm-test.sh [-run REGEX] [-bench REGEX] [-keep] [packages...]

Builds each Go package's tests as a static binary (CGO_ENABLED=0 go test -c),
packs them into an initramfs with a small /init (scripts/vminit), busybox and
the kernel's RAM disk module (brd.ko: /dev/ram0, a block device for io.stat),
boots Debian's Linux 6.1 kernel under qemu, runs every test binary inside with
-test.v and prints, as its last line, e.g.:

    12 passed, 0 failed, 0 skipped

It exits non-zero if any test failed or was skipped, if no test passed, or if
the VM did not finish (timeout, kernel panic).

Options:
  -run REGEX     only run tests matching REGEX (go test -run; in every binary)
  -bench REGEX   run benchmarks matching REGEX instead of tests (-run ^$ unless
                 -run is given too)
  -keep          keep the initramfs and its root folder in the scratch folder
  -tags LIST     build the tests with these build tags too (beside "vm"),
                 e.g. -tags soak for the chaos soak of cmd/cgpool
  -demo          run the README's demo (cgpool demo) in the VM, with the OOM kill
  -print-kernel  fetch the kernel if it is not cached, print its path, and exit
                 (scripts/systemd-vm-test.sh boots the same kernel)
  -h, --help     show this help
  packages       Go packages whose tests to build (default: every package of
                 ./... that has tests, except ./scripts/...)

Examples:
  scripts/vm-test.sh                                   # all tests
  scripts/vm-test.sh ./cgroup                          # one package
  scripts/vm-test.sh -run 'TestKillEmptiesTree' ./cgroup   # one test
  scripts/vm-test.sh -run 'TestLeaf/memory' ./cgroup   # one subtest
  scripts/vm-test.sh -bench . ./sched                  # benchmarks
  scripts/vm-test.sh -tags soak -run '^TestSoak$' ./cmd/cgpool   # the 5-minute soak

Environment:
  CGPOOL_VM_SCRATCH  scratch folder (default: <repo>/.vm, ignored by git); the
                     console log is left there as console.log
  CGPOOL_VM_CACHE    where the downloaded kernel is kept between runs
                     (default: ~/.cache/cgpool-vm); delete it to fetch anew
  CGPOOL_VM_KERNEL   use this vmlinuz instead of Debian's
  CGPOOL_VM_ACCEL    kvm or tcg (default: kvm if /dev/kvm is usable hardware
                     virtualization, falling back to tcg if the VM does not
                     start within 60s; else tcg)
  CGPOOL_VM_MEM      guest memory in MiB (default 1024)
  CGPOOL_VM_TIMEOUT  seconds before the whole VM run is killed (default 1200)
  CGPOOL_VM_TEST_TIMEOUT  -test.timeout of each test binary (default 10m)

Needs root to install qemu-system-x86, busybox-static and cpio with apt-get
when they are missing.
EOF
}

log() { printf 'vm-test: %s\n' "$*" >&2; }
die() {
	log "error: $*"
	exit 1
}

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# Package arguments are relative to where the script was started, when that
# is inside the repository.
GODIR=$REPO
case $PWD/ in "$REPO"/*) GODIR=$PWD ;; esac
SCRATCH=${CGPOOL_VM_SCRATCH:-$REPO/.vm}
CACHE=${CGPOOL_VM_CACHE:-${HOME:-/root}/.cache/cgpool-vm}
MEM=${CGPOOL_VM_MEM:-1024}
VM_TIMEOUT=${CGPOOL_VM_TIMEOUT:-1200}

RUN=""
BENCH=""
PRINT_KERNEL=0
TAGS=vm
KEEP=0
PKGS=()
while (($# > 0)); do
	case $1 in
	-h | -help | --help)
		usage
		exit 0
		;;
	-run | --run)
		(($# >= 2)) || die "$1 needs a REGEX"
		RUN=$2
		shift 2
		;;
	-run=* | --run=*)
		RUN=${1#*=}
		shift
		;;
	-bench | --bench)
		(($# >= 2)) || die "$1 needs a REGEX"
		BENCH=$2
		shift 2
		;;
	-bench=* | --bench=*)
		BENCH=${1#*=}
		shift
		;;
	-keep | --keep)
		KEEP=1
		shift
		;;
	-tags | --tags)
		(($# >= 2)) || die "$1 needs a comma-separated list of build tags"
		TAGS="vm,$2"
		shift 2
		;;
	-demo | --demo)
		# The README's demo (cgpool demo) inside the VM, where the memory
		# controller exists and the OOM kill is shown: it is cmd/cgpool's
		# TestDemo, which prints the demo's output.
		RUN='^TestDemo$'
		PKGS=(./cmd/cgpool)
		shift
		;;
	-print-kernel | --print-kernel)
		PRINT_KERNEL=1
		shift
		;;
	--)
		shift
		PKGS+=("$@")
		break
		;;
	-*)
		usage >&2
		die "unknown option $1"
		;;
	*)
		PKGS+=("$1")
		shift
		;;
	esac
done

mkdir -p "$SCRATCH"
SCRATCH=$(cd "$SCRATCH" && pwd) # absolute: the build runs in another folder
ROOT=$SCRATCH/root
INITRD=$SCRATCH/initrd.gz
CONSOLE=$SCRATCH/console.log
rm -f "$CONSOLE"

# shellcheck source=scripts/vm-lib.sh
source "$REPO/scripts/vm-lib.sh"
# shellcheck disable=SC2317 # called by the EXIT trap
on_exit() {
	stop_vm
	if ((KEEP == 0)); then
		rm -rf "$ROOT" "$INITRD" "$SCRATCH/kernel.tmp"
	fi
}
trap on_exit EXIT
trap 'exit 130' INT
trap 'exit 143' TERM


# --- tools -------------------------------------------------------------------

apt_quiet() {
	# apt_quiet ARGS...: apt-get with its output in the scratch folder.
	if ! DEBIAN_FRONTEND=noninteractive apt-get "$@" >>"$SCRATCH/apt.log" 2>&1; then
		log "apt-get $* failed; last lines of $SCRATCH/apt.log:"
		tail -n 25 "$SCRATCH/apt.log" >&2
		exit 1
	fi
}

missing=()
for pkg in qemu-system-x86 busybox-static cpio python3; do
	if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed'; then
		missing+=("$pkg")
	fi
done
if ((${#missing[@]} > 0)); then
	(($(id -u) == 0)) || die "need root to install: ${missing[*]}"
	log "installing ${missing[*]} (log: $SCRATCH/apt.log)"
	: >"$SCRATCH/apt.log"
	apt_quiet update
	apt_quiet install -y --no-install-recommends "${missing[@]}"
fi
for cmd in qemu-system-x86_64 cpio gzip go timeout dpkg-deb; do
	command -v "$cmd" >/dev/null || die "$cmd not found"
done
[[ -x /bin/busybox ]] || die "/bin/busybox (package busybox-static) not found"

# --- kernel ------------------------------------------------------------------

# newest_kernel_pkg prints the newest linux-image-6.1.0-N-amd64 package name
# known to apt (signed or unsigned: both hold the same vmlinuz).
newest_kernel_pkg() {
	apt-cache search --names-only '^linux-image-6\.1\.0-[0-9]+-amd64(-unsigned)?$' 2>/dev/null |
		awk '{ print $1 }' |
		awk -F- '{ print $4 "\t" ($0 ~ /-unsigned$/ ? 1 : 0) "\t" $0 }' |
		sort -t"$(printf '\t')" -k1,1nr -k2,2n | head -n 1 | cut -f3
}

get_kernel() {
	if [[ -n ${CGPOOL_VM_KERNEL:-} ]]; then
		[[ -r $CGPOOL_VM_KERNEL ]] || die "CGPOOL_VM_KERNEL=$CGPOOL_VM_KERNEL is not readable"
		KERNEL=$(realpath "$CGPOOL_VM_KERNEL")
		return
	fi
	KERNEL=$CACHE/vmlinuz
	# brd.ko (the RAM disk driver, a module in Debian's kernel) comes
	# from the same package: pool's TestUsage writes to /dev/ram0, a block
	# device whose I/O io.stat counts (the VM has no disk).
	if [[ -s $KERNEL && -s $CACHE/brd.ko ]]; then
		return
	fi
	mkdir -p "$CACHE"
	local pkg
	pkg=$(newest_kernel_pkg)
	if [[ -z $pkg ]]; then
		log "no linux-image-6.1.0-*-amd64 known to apt; running apt-get update (log: $SCRATCH/apt.log)"
		apt_quiet update
		pkg=$(newest_kernel_pkg)
		[[ -n $pkg ]] || die "apt knows no linux-image-6.1.0-*-amd64 package; set CGPOOL_VM_KERNEL=/path/to/vmlinuz"
	fi
	log "downloading $pkg into $CACHE (once; it is reused later)"
	local tmp=$SCRATCH/kernel.tmp
	rm -rf "$tmp"
	mkdir -p "$tmp/x"
	(cd "$tmp" && apt_quiet download "$pkg")
	# Only the kernel and brd.ko are needed: extracting the whole package
	# (dpkg-deb -x) would also write ~400 MB of modules.
	dpkg-deb --fsys-tarfile "$tmp"/*.deb | tar -x -C "$tmp/x" --wildcards './boot/vmlinuz-*' './lib/modules/*/kernel/drivers/block/brd.ko'
	local vmlinuz brd
	vmlinuz=$(find "$tmp/x/boot" -name 'vmlinuz-*' | head -n 1)
	[[ -n $vmlinuz ]] || die "no boot/vmlinuz-* in $pkg"
	brd=$(find "$tmp/x/lib/modules" -name brd.ko | head -n 1)
	[[ -n $brd ]] || die "no lib/modules/*/kernel/drivers/block/brd.ko in $pkg"
	cp "$brd" "$CACHE/brd.ko.tmp"
	mv "$CACHE/brd.ko.tmp" "$CACHE/brd.ko"
	cp "$vmlinuz" "$CACHE/$(basename "$vmlinuz").tmp"
	mv "$CACHE/$(basename "$vmlinuz").tmp" "$CACHE/$(basename "$vmlinuz")"
	ln -sfn "$(basename "$vmlinuz")" "$CACHE/vmlinuz"
	echo "$pkg" >"$CACHE/package"
	rm -rf "$tmp"
}

# --- initramfs ---------------------------------------------------------------

build_root() {
	rm -rf "$ROOT" "$INITRD"
	mkdir -p "$ROOT"/{bin,sbin,usr/bin,dev,proc,sys,tmp,etc,tests,src}
	cd "$GODIR"
	local module
	module=$(go list -m)

	local list format='{{.ImportPath}}	{{.Dir}}	{{len .TestGoFiles}}	{{len .XTestGoFiles}}	{{if .Error}}1{{else}}0{{end}}'
	if ((${#PKGS[@]} > 0)); then
		list=$(go list -tags "$TAGS" -e -f "$format" "${PKGS[@]}")
	else
		list=$(cd "$REPO" && go list -tags "$TAGS" -e -f "$format" ./... |
			awk -F'\t' -v m="$module" '$1 != m "/scripts" && index($1, m "/scripts/") != 1')
	fi

	local ip dir nt nx lerr name failed=() built=0
	while IFS=$'\t' read -r ip dir nt nx lerr; do
		[[ -n $ip ]] || continue
		if [[ $lerr == 1 ]]; then
			go list "$ip" >&2 || true # prints the error
			failed+=("$ip")
			continue
		fi
		((nt + nx > 0)) || continue
		if [[ $ip == "$module" ]]; then
			name=$(basename "$module")
		else
			name=${ip#"$module"/}
			name=${name//\//_}
		fi
		log "building $ip -> tests/$name.test"
		if ! CGO_ENABLED=0 GOOS=linux GOARCH=amd64 go test -tags "$TAGS" -c -o "$ROOT/tests/$name.test" "$ip"; then
			failed+=("$ip")
			continue
		fi
		built=$((built + 1))
		mkdir -p "$ROOT/src/$name"
		if [[ -d $dir/testdata ]]; then
			cp -a "$dir/testdata" "$ROOT/src/$name/testdata"
		fi
	done <<<"$list"
	# The repository's shared fixtures: a test in /src/<name> finds them at
	# ../testdata, as it does in the source tree.
	if [[ -d $REPO/testdata ]]; then
		cp -a "$REPO/testdata" "$ROOT/src/testdata"
	fi
	if ((${#failed[@]} > 0)); then
		die "could not build the tests of: ${failed[*]}"
	fi
	((built > 0)) || die "no package with tests among: ${PKGS[*]:-./...}"

	CGO_ENABLED=0 GOOS=linux GOARCH=amd64 go build -o "$ROOT/init" "$module/scripts/vminit"
	# /init loads it: /dev/ram0, a block device for io.stat (see get_kernel).
	if [[ -s $CACHE/brd.ko && -z ${CGPOOL_VM_KERNEL:-} ]]; then
		mkdir -p "$ROOT/lib/modules"
		cp "$CACHE/brd.ko" "$ROOT/lib/modules/brd.ko"
	fi

	cp /bin/busybox "$ROOT/bin/busybox"
	local applet
	for applet in sh ash sleep cat echo printf pwd ls ps kill mkdir true false setsid nohup head dd yes seq env grep awk cut tr tail wc sort xargs; do
		ln -s busybox "$ROOT/bin/$applet"
	done
	if [[ -e $ROOT/tests/internal_pyvm.test ]]; then
		pack_python
	fi
	printf 'root:x:0:0:root:/tmp:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' >"$ROOT/etc/passwd"
	printf 'root:x:0:\nnogroup:x:65534:\n' >"$ROOT/etc/group"
	printf '127.0.0.1\tlocalhost\n::1\tlocalhost\n' >"$ROOT/etc/hosts"
	# The kernel opens /dev/console for /init before /init can mount devtmpfs.
	if (($(id -u) == 0)); then
		mknod -m 600 "$ROOT/dev/console" c 5 1
		mknod -m 666 "$ROOT/dev/null" c 1 3
	fi

	(cd "$ROOT" && find . | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet | gzip -1) >"$INITRD"
}

# pack_python puts what internal/pyvm's test needs into the initramfs: the
# cgpool binary, the Python package (python/ -> /python) and Debian's
# python3 with its standard library and the shared libraries that ldd
# lists for the interpreter and its extension modules.
pack_python() {
	local py=/usr/bin/python3 stdlib lib
	[[ -x $py ]] || die "$py is needed for the Python tests in the VM"
	stdlib=$("$py" -c 'import sysconfig; print(sysconfig.get_paths()["stdlib"])')
	log "packing $py and $stdlib for the Python tests"
	CGO_ENABLED=0 GOOS=linux GOARCH=amd64 go build -o "$ROOT/bin/cgpool" "$module/cmd/cgpool"
	cp -a "$REPO/python" "$ROOT/python"
	mkdir -p "$ROOT/usr/bin" "$ROOT$stdlib"
	cp -L "$py" "$ROOT/usr/bin/python3"
	(cd "$stdlib" && tar --exclude=./test --exclude=./idlelib --exclude=./tkinter --exclude=./turtledemo \
		--exclude=./ensurepip --exclude=./lib2to3 --exclude=./site-packages --exclude=./dist-packages -cf - .) |
		(cd "$ROOT$stdlib" && tar -xf -)
	{
		ldd "$py"
		find "$stdlib/lib-dynload" -name '*.so' -exec ldd {} \; 2>/dev/null
		# glibc loads libgcc_s.so.1 with dlopen when a thread ends
		# (pthread_exit unwinds through it; CPython ends every thread so),
		# so ldd does not list it: without it the interpreter aborts with
		# "libgcc_s.so.1 must be installed for pthread_exit to work".
		ldconfig -p | awk '$1 == "libgcc_s.so.1" && /x86-64/ { print "\t" $1 " => " $NF " (0x0)" }'
	} | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }' | sort -u |
		while read -r lib; do
			mkdir -p "$ROOT$(dirname "$lib")"
			cp -L "$lib" "$ROOT$lib"
		done
	[[ -n $(find "$ROOT" -name 'libgcc_s.so.1' -print -quit) ]] ||
		die "libgcc_s.so.1 (package libgcc-s1) not found by ldconfig -p: Python threads need it in the VM"
}

# --- run ---------------------------------------------------------------------

t0=$(now)
get_kernel
if ((PRINT_KERNEL == 1)); then
	echo "$KERNEL"
	exit 0
fi
build_root
log "initramfs $(du -h "$INITRD" | cut -f1) built in $(since "$t0")s; kernel $KERNEL"

# KVM is used only where it is hardware virtualization (kvm_intel or kvm_amd):
# a /dev/kvm can also belong to a software hypervisor that runs only kernels
# built for it (kvm_pvm, on the machines this project is developed on), where
# a stock kernel hangs before its first message. Even then, when /init does
# not say hello within KVM_PROBE seconds, the run is retried with tcg.
ACCEL=${CGPOOL_VM_ACCEL:-}
AUTO=0
if [[ -z $ACCEL ]]; then
	AUTO=1
	ACCEL=tcg
	if [[ -r /dev/kvm && -w /dev/kvm ]] && [[ -d /sys/module/kvm_intel || -d /sys/module/kvm_amd ]]; then
		ACCEL=kvm
	fi
fi
KVM_PROBE=60
[[ $ACCEL == kvm || $ACCEL == tcg ]] || die "CGPOOL_VM_ACCEL must be kvm or tcg, not $ACCEL"

# quoted_param KEY VALUE: a kernel parameter; quotes keep spaces in the value.
quoted_param() {
	[[ $2 != *'"'* && $2 != *$'\n'* ]] || die "$1 value must not contain a double quote or newline: $2"
	if [[ $2 =~ [[:space:]] ]]; then printf '%s="%s"' "$1" "$2"; else printf '%s=%s' "$1" "$2"; fi
}
APPEND="console=ttyS0 quiet panic=-1 rdinit=/init cgroup_no_v1=all systemd.unified_cgroup_hierarchy=1"
[[ -z $RUN ]] || APPEND+=" $(quoted_param cgpool.run "$RUN")"
[[ -z $BENCH ]] || APPEND+=" $(quoted_param cgpool.bench "$BENCH")"
[[ -z ${CGPOOL_VM_TEST_TIMEOUT:-} ]] || APPEND+=" $(quoted_param cgpool.timeout "$CGPOOL_VM_TEST_TIMEOUT")"

# boot ACCEL: runs the VM (run_vm), printing its console while it is
# written to $CONSOLE, and sets qemu_rc. With kvm it returns 3 (and stops
# the VM) if /init has not printed its first line within KVM_PROBE seconds.
boot() {
	local accel=$1 probe=0
	local qemu=(qemu-system-x86_64 -machine q35 -accel "$accel" -cpu max -smp 2 -m "$MEM"
		-nographic -no-reboot -kernel "$KERNEL" -initrd "$INITRD" -append "$APPEND")
	log "booting ($accel, ${MEM} MiB, timeout ${VM_TIMEOUT}s): ${qemu[*]}"
	if [[ $accel == kvm ]]; then
		probe=$KVM_PROBE
	fi
	run_vm "$CONSOLE" "$VM_TIMEOUT" "$probe" "${qemu[@]}"
}

if ((KEEP == 1)); then
	log "kept: $ROOT and $INITRD"
fi
t1=$(now)
qemu_rc=0
if ! boot "$ACCEL"; then
	msg="with kvm, /init did not start within ${KVM_PROBE}s (can this /dev/kvm run Debian's kernel?)"
	((AUTO == 1)) || die "$msg; CGPOOL_VM_ACCEL=tcg avoids kvm"
	log "$msg; retrying with tcg"
	ACCEL=tcg
	t1=$(now)
	boot tcg
fi
log "VM ran for $(since "$t1")s with $ACCEL (qemu exit status $qemu_rc); console log: $CONSOLE"

# --- results -----------------------------------------------------------------

rc=0
report vm-test "$CONSOLE" "$VM_TIMEOUT" || rc=$?
exit "$rc"
