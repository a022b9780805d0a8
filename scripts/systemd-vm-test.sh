#!/usr/bin/env bash
# systemd-vm-test.sh: prove cgpool under a real systemd. Boots a Debian
# bookworm root (systemd 252) under qemu with contrib/systemd's units and the
# cgpool binary installed, and runs internal/systemdvm's tests inside. See
# usage below.
set -euo pipefail

usage() {
	cat <<'EOF'
Usage: scripts/systemd-vm-test.sh [-run REGEX] [-keep] [-prepare]

Builds (once, then from its cache) a Debian bookworm root with systemd made
by debootstrap, packed as an uncompressed initramfs; adds to it, for this
run only, the cgpool binary (/usr/local/bin/cgpool), contrib/systemd's
units (cgpool.socket enabled, cgpool.service not: the socket starts it),
testdata/config/systemd.toml as /etc/cgpool.toml, the Python package, and
internal/systemdvm's tests (go test -tags systemdvm -c); boots it on the
Debian 6.1 kernel that scripts/vm-test.sh uses, with systemd as PID 1
(rdinit=/sbin/init), where a service runs the tests as root, and prints, as
its last line, e.g.:

    9 passed, 0 failed, 0 skipped

It exits non-zero if any test failed or was skipped, if no test passed, or
if the VM did not finish.

Options:
  -run REGEX  only run tests matching REGEX (go test -run)
  -keep       keep the run's overlay and its folder in the scratch folder
  -prepare    only install the tools, fetch the kernel and build the root
              image into the cache, then exit (.ci/run does this in the
              background while the host tests run: debootstrap waits on
              the network, the tests on the CPU)
  -h, --help  show this help

Environment:
  CGPOOL_SYSTEMD_VM_CACHE  where the root image is kept, one folder per
                           image key (default: ~/.cache/cgpool-systemd-vm);
                           the key is a hash of the package list, the
                           suite, the mirror and this script's image recipe
  CGPOOL_SYSTEMD_VM_MIRROR Debian mirror for debootstrap (default:
                           http://deb.debian.org/debian)
  CGPOOL_VM_SCRATCH        scratch folder (default: <repo>/.vm); the
                           console log is left there as systemd-console.log
  CGPOOL_VM_ACCEL          kvm or tcg (default: kvm if /dev/kvm is hardware
                           virtualization, else tcg)
  CGPOOL_VM_TIMEOUT        seconds before the VM is killed (default 900)

Needs root: debootstrap and the initramfs's device nodes need it, and
qemu-system-x86, debootstrap and cpio are installed with apt-get when
missing.
EOF
}

log() { printf 'systemd-vm-test: %s\n' "$*" >&2; }
die() {
	log "error: $*"
	exit 1
}

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SCRATCH=${CGPOOL_VM_SCRATCH:-$REPO/.vm}
CACHE=${CGPOOL_SYSTEMD_VM_CACHE:-${HOME:-/root}/.cache/cgpool-systemd-vm}
MIRROR=${CGPOOL_SYSTEMD_VM_MIRROR:-http://deb.debian.org/debian}
VM_TIMEOUT=${CGPOOL_VM_TIMEOUT:-900}
MEM=2048

RUN=""
KEEP=0
PREPARE=0
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
	-keep | --keep)
		KEEP=1
		shift
		;;
	-prepare | --prepare)
		PREPARE=1
		shift
		;;
	*)
		usage >&2
		die "unknown argument $1"
		;;
	esac
done
(($(id -u) == 0)) || die "needs root (debootstrap, device nodes in the image)"

mkdir -p "$SCRATCH" "$CACHE"
SCRATCH=$(cd "$SCRATCH" && pwd)
OVERLAY=$SCRATCH/systemd-overlay
CONSOLE=$SCRATCH/systemd-console.log
rm -f "$CONSOLE"

# shellcheck source=scripts/vm-lib.sh
source "$REPO/scripts/vm-lib.sh"
# shellcheck disable=SC2317 # called by the EXIT trap
on_exit() {
	stop_vm
	if ((KEEP == 0)); then
		rm -rf "$OVERLAY" "$SCRATCH/systemd-initrd" "$SCRATCH/systemd-overlay.cpio"
	fi
	[[ -z ${BUILD:-} ]] || rm -rf "$BUILD"
}
trap on_exit EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- tools and kernel ----------------------------------------------------------

missing=()
for pkg in qemu-system-x86 debootstrap cpio; do
	if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed'; then
		missing+=("$pkg")
	fi
done
if ((${#missing[@]} > 0)); then
	log "installing ${missing[*]} (log: $SCRATCH/apt.log)"
	{ DEBIAN_FRONTEND=noninteractive apt-get update &&
		DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"; } >>"$SCRATCH/apt.log" 2>&1 ||
		die "apt-get install ${missing[*]} failed; see $SCRATCH/apt.log"
fi
# The kernel scripts/vm-test.sh boots, from its cache (fetched once).
KERNEL=$("$REPO/scripts/vm-test.sh" --print-kernel) || die "could not get the kernel (scripts/vm-test.sh --print-kernel)"
[[ -r $KERNEL ]] || die "kernel $KERNEL not readable"

# --- the root image (cached) ----------------------------------------------------

# What goes into the image. Changing any of it (or the recipe in
# build_image, whose text is part of the key) builds a new image.
SUITE=bookworm
# python3-celery, python3-redis and redis-server: the Celery memory-limit
# test (TestCeleryMemoryLimit) runs a real celery worker here.
PACKAGES=systemd,systemd-sysv,dbus,dbus-user-session,libpam-systemd,passwd,python3,python3-billiard,python3-celery,python3-redis,redis-server
# Units a test VM has no use for, and that would slow the boot or wait for
# devices it lacks (serial-getty waits 90 s for ttyS0's device unit, which
# only udev would make). redis-server's own service: the Celery test starts
# a private one on a free port.
MASK="redis-server.service serial-getty@ttyS0.service getty@tty1.service console-getty.service systemd-timesyncd.service apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer fstrim.timer man-db.timer dpkg-db-backup.timer systemd-tmpfiles-clean.timer"

build_image() {
	local root=$1
	debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$root" "$MIRROR" >"$BUILD/debootstrap.log" 2>&1 ||
		{
			tail -n 20 "$BUILD/debootstrap.log" >&2
			die "debootstrap failed; see the lines above"
		}
	# shellcheck disable=SC2086 # MASK is a word list
	chroot "$root" systemctl mask $MASK >/dev/null 2>&1
	echo cgpool-systemd-vm >"$root/etc/hostname"
	: >"$root/etc/machine-id" # systemd makes a transient one at boot
	printf '127.0.0.1\tlocalhost cgpool-systemd-vm\n' >"$root/etc/hosts"
	# What a test VM never reads: 150 MB of a 290 MB root.
	rm -rf "$root"/usr/share/{doc,man,info,locale}/* "$root"/var/cache/apt/* "$root"/var/lib/apt/lists/* "$root"/var/log/*.log
	find "$root/usr/lib/python3" -name __pycache__ -prune -exec rm -rf {} + 2>/dev/null || true
}

KEY=$( {
	echo "$SUITE $MIRROR $PACKAGES $MASK"
	declare -f build_image
} | sha256sum | cut -c1-16)
IMAGE=$CACHE/$KEY/base.cpio
t0=$(now)
if [[ ! -s $IMAGE ]]; then
	BUILD=$(mktemp -d "$SCRATCH/systemd-image.XXXXXX")
	log "building the bookworm root image $KEY with debootstrap (once; cached in $CACHE/$KEY)"
	build_image "$BUILD/root"
	mkdir -p "$CACHE/$KEY"
	(cd "$BUILD/root" && find . | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet) >"$IMAGE.tmp"
	mv "$IMAGE.tmp" "$IMAGE"
	echo "$SUITE $PACKAGES" >"$CACHE/$KEY/contents"
	rm -rf "$BUILD"
	BUILD=""
	# Older images are of no use once the recipe changed.
	for d in "$CACHE"/*/; do
		[[ $d == "$CACHE/$KEY/" ]] || rm -rf "$d"
	done
	log "image built in $(since "$t0")s: $(du -h "$IMAGE" | cut -f1)"
fi
if ((PREPARE == 1)); then
	log "prepared: kernel $KERNEL, image $IMAGE"
	exit 0
fi

# --- this run's overlay ---------------------------------------------------------

export PATH="/usr/local/go/bin:$PATH"
t1=$(now)
rm -rf "$OVERLAY"
O=$OVERLAY
mkdir -p "$O"/usr/local/bin "$O"/usr/local/lib/cgpool-vmtest/{tests,src} "$O"/etc/systemd/system/{sockets.target.wants,multi-user.target.wants}
cd "$REPO"
CGO_ENABLED=0 GOOS=linux GOARCH=amd64 go build -o "$O/usr/local/bin/cgpool" ./cmd/cgpool
CGO_ENABLED=0 GOOS=linux GOARCH=amd64 go build -o "$O/usr/local/lib/cgpool-vmtest/vminit" ./scripts/vminit
CGO_ENABLED=0 GOOS=linux GOARCH=amd64 go test -tags systemdvm -c -o "$O/usr/local/lib/cgpool-vmtest/tests/systemdvm.test" ./internal/systemdvm
mkdir -p "$O/usr/local/lib/cgpool-vmtest/src/systemdvm"
cp contrib/systemd/cgpool.service contrib/systemd/cgpool.socket "$O/etc/systemd/system/"
ln -s ../cgpool.socket "$O/etc/systemd/system/sockets.target.wants/cgpool.socket"
cp testdata/config/systemd.toml "$O/etc/cgpool.toml"
# The Python package, where Debian's python3 looks for local packages.
mkdir -p "$O/usr/local/lib/python3.11/dist-packages"
cp -a python/cgpool "$O/usr/local/lib/python3.11/dist-packages/cgpool"
find "$O/usr/local/lib/python3.11/dist-packages" -name __pycache__ -prune -exec rm -rf {} +
# Its tests, for the Celery test (python/tests/test_celery.py and helpers).
cp -a python/tests "$O/usr/local/lib/cgpool-vmtest/python-tests"
find "$O/usr/local/lib/cgpool-vmtest/python-tests" -name __pycache__ -prune -exec rm -rf {} +
cat >"$O/etc/systemd/system/cgpool-vmtest.service" <<'EOF'
[Unit]
Description=cgpool's systemd VM tests (scripts/systemd-vm-test.sh)
After=multi-user.target cgpool.socket
Wants=cgpool.socket

[Service]
Type=exec
ExecStart=/usr/local/lib/cgpool-vmtest/vminit --systemd
StandardOutput=tty
StandardError=tty
TTYPath=/dev/ttyS0
TTYReset=no
TTYVHangup=no

[Install]
WantedBy=multi-user.target
EOF
ln -s ../cgpool-vmtest.service "$O/etc/systemd/system/multi-user.target.wants/cgpool-vmtest.service"
(cd "$O" && find . | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet) >"$SCRATCH/systemd-overlay.cpio"
# The kernel unpacks concatenated archives in order: the overlay's files
# land on top of the cached root.
cat "$IMAGE" "$SCRATCH/systemd-overlay.cpio" >"$SCRATCH/systemd-initrd"
log "overlay built in $(since "$t1")s; initramfs $(du -h "$SCRATCH/systemd-initrd" | cut -f1); kernel $KERNEL"

# --- boot -------------------------------------------------------------------------

ACCEL=${CGPOOL_VM_ACCEL:-tcg}
if [[ -z ${CGPOOL_VM_ACCEL:-} && -r /dev/kvm && -w /dev/kvm ]] && [[ -d /sys/module/kvm_intel || -d /sys/module/kvm_amd ]]; then
	ACCEL=kvm
fi
[[ $ACCEL == kvm || $ACCEL == tcg ]] || die "CGPOOL_VM_ACCEL must be kvm or tcg, not $ACCEL"
[[ $RUN != *'"'* && $RUN != *' '* ]] || die "-run REGEX must not contain spaces or double quotes"
APPEND="console=ttyS0 quiet panic=-1 rdinit=/sbin/init systemd.show_status=false cgpool.systemd-vm=1"
[[ -z $RUN ]] || APPEND+=" cgpool.run=$RUN"
qemu=(qemu-system-x86_64 -machine q35 -accel "$ACCEL" -cpu max -smp 2 -m "$MEM" -nographic -no-reboot
	-kernel "$KERNEL" -initrd "$SCRATCH/systemd-initrd" -append "$APPEND")
log "booting ($ACCEL, ${MEM} MiB, timeout ${VM_TIMEOUT}s): ${qemu[*]}"
t2=$(now)
run_vm "$CONSOLE" "$VM_TIMEOUT" 0 "${qemu[@]}"
log "VM ran for $(since "$t2")s with $ACCEL (qemu exit status $qemu_rc); console log: $CONSOLE"

# --- results ---------------------------------------------------------------------

rc=0
report systemd-vm-test "$CONSOLE" "$VM_TIMEOUT" || rc=$?
exit "$rc"
