#!/usr/bin/env bash
# make check-arm64-system: the whole ctest suite, every heap test once per
# backend, on a real aarch64 Linux kernel: Debian's arm64 kernel booted
# under qemu-system-aarch64 (-M virt -cpu max, 2 vCPUs), with an initramfs
# of the statically linked test programs, the demo and tools/guest-init.c,
# which runs ctest's own command lines and powers off. Unlike qemu-user
# (make check-cross) a real kernel enters the seccomp W^X policy, runs code
# written through dualmap's second mapping and /proc/self/mem, and delivers
# re-queued fault signals: none of those skip here.
#
#   tools/check-arm64-system.sh
#
# Environment: ARM64_SYSTEM_BUILD (build directory, default
# build-arm64-system), ARM64_SYSTEM_JOBS (build jobs, default 2),
# ARM64_SYSTEM_CPUS (vCPUs, default 2), ARM64_SYSTEM_GUEST_JOBS (tests run
# at once in the guest, default 1: two at once on 2 vCPUs made the tests
# whose threads spin on each other time out, at 300 s, instead of taking
# about 50), ARM64_SYSTEM_TIMEOUT_SCALE (each test's ctest timeout is
# multiplied by it in the guest, default 3), ARM64_SYSTEM_SLOWDOWN (the
# tests' WXTEST_SLOWDOWN: their stress loops run that many times fewer
# rounds, default 50, as under Valgrind; 1 runs native counts, which took
# 1080-1330 s in all), ARM64_SYSTEM_TIMEOUT (seconds for the whole boot,
# default 3000), ARM64_SYSTEM_TESTS (a ctest -R regular expression: only
# the tests it matches, for a developer chasing one; default all),
# ARM64_KERNEL (an arm64 kernel Image to boot instead of Debian's).
# As root, installs what is missing with apt-get (adding the arm64
# architecture to fetch the kernel package, which is unpacked in the build
# directory, never installed); otherwise prints the command to run. Fails
# on any failed, timed-out or missing test; prints passed/skipped/failed
# per backend and every SKIPPED line with its reason.
set -euo pipefail
cd "$(dirname "$0")/.."

DIR=${ARM64_SYSTEM_BUILD:-build-arm64-system}
JOBS=${ARM64_SYSTEM_JOBS:-2}
CPUS=${ARM64_SYSTEM_CPUS:-2}
GUEST_JOBS=${ARM64_SYSTEM_GUEST_JOBS:-1}
TIMEOUT_SCALE=${ARM64_SYSTEM_TIMEOUT_SCALE:-3}
SLOWDOWN=${ARM64_SYSTEM_SLOWDOWN:-50}
TESTS=${ARM64_SYSTEM_TESTS:-}
TIMEOUT=${ARM64_SYSTEM_TIMEOUT:-3000}
CROSS=aarch64-linux-gnu

# Each tool the script runs, and the Debian packages that provide it.
declare -A NEED=(
    [cmake]=cmake [make]=make [cpio]=cpio
    [$CROSS-gcc]="gcc-$CROSS libc6-dev-arm64-cross"
    [qemu-system-aarch64]=qemu-system-arm
)
source tools/need.sh

# Debian's current arm64 kernel (the linux-image-arm64 metapackage's
# dependency), downloaded and unpacked into $DIR/kernel; prints the path of
# its Image.
fetch_kernel() {
    local pkg deb
    if ! dpkg --print-foreign-architectures | grep -qx arm64; then
        if [ "$(id -u)" != 0 ]; then
            echo "check-arm64-system: the kernel needs the arm64 package lists:" >&2
            echo "  sudo dpkg --add-architecture arm64 && sudo apt-get update" >&2
            exit 1
        fi
        echo "== check-arm64-system: dpkg --add-architecture arm64" >&2
        dpkg --add-architecture arm64
        apt-get update -q >&2
    fi
    pkg=$(apt-cache depends linux-image-arm64:arm64 |
        sed -n 's/^ *Depends: \(linux-image-[0-9][^:]*\).*/\1/p' | head -1)
    [ -n "$pkg" ] || { echo "check-arm64-system: no linux-image-arm64:arm64" \
        "in the package lists (apt-get update?)" >&2; exit 1; }
    mkdir -p "$DIR/kernel"
    deb=$(ls "$DIR/kernel/${pkg}"_*_arm64.deb 2>/dev/null | head -1 || true)
    if [ -z "$deb" ]; then
        echo "== check-arm64-system: apt-get download $pkg:arm64" >&2
        (cd "$DIR/kernel" && apt-get download -q "$pkg:arm64" >&2)
        deb=$(ls "$DIR/kernel/${pkg}"_*_arm64.deb | head -1)
    fi
    [ -d "$DIR/kernel/root" ] || dpkg-deb -x "$deb" "$DIR/kernel/root"
    ls "$DIR/kernel/root/boot/vmlinuz-"*
}

build() {
    echo "== check-arm64-system: configure $DIR (cmake/toolchain-aarch64-system.cmake)"
    cmake -S . -B "$DIR" \
        -DCMAKE_TOOLCHAIN_FILE="$PWD/cmake/toolchain-aarch64-system.cmake" \
        -DCMAKE_BUILD_TYPE=RelWithDebInfo -DWXJIT_WERROR=ON \
        -DWXJIT_BENCH=OFF >"$DIR.configure.log" 2>&1 ||
        { cat "$DIR.configure.log"; exit 1; }
    echo "== check-arm64-system: build ($("$CROSS-gcc" --version | head -1))"
    cmake --build "$DIR" -j"$JOBS"
    "$CROSS-gcc" -static -O2 -Wall -Wextra -Wshadow -Wstrict-prototypes \
        -Werror -o "$DIR/guest-init" tools/guest-init.c
}

# The initramfs: init, the manifest, and every program the manifest runs,
# stripped, at the path ctest knows it by (so the command lines need no
# rewriting), plus each test's working directory.
pack() {
    local root=$DIR/initramfs f
    (cd "$DIR" && ctest --show-only=json-v1 ${TESTS:+-R "$TESTS"}) \
        >"$DIR/tests.json"
    cmake -DJSON="$DIR/tests.json" -DOUT="$DIR/manifest" -DJOBS="$GUEST_JOBS" \
        -DTIMEOUT_SCALE="$TIMEOUT_SCALE" -DSLOWDOWN="$SLOWDOWN" \
        -DLABELS="$DIR/labels" -P tools/guest-manifest.cmake
    rm -rf "$root"
    mkdir -p "$root/wxsys"
    cp "$DIR/guest-init" "$root/init"
    cp "$DIR/manifest" "$root/wxsys/manifest"
    while read -r f; do
        if [ -f "$f" ]; then
            # No program interpreter: nothing to load from the archive.
            ! "$CROSS-readelf" -l "$f" | grep -q INTERP ||
                { echo "check-arm64-system: $f is not static" >&2; exit 1; }
            mkdir -p "$root$(dirname "$f")"
            "$CROSS-strip" -o "$root$f" "$f"
        else
            mkdir -p "$root$f"
        fi
    done < <(sed -n 's/^arg \(\/.*\)/\1/p; s/^cwd //p' "$DIR/manifest" | sort -u)
    (cd "$root" && find . | cpio -o -H newc -R 0:0 --quiet) >"$DIR/initramfs.cpio"
}

need_install check-arm64-system
KERNEL=${ARM64_KERNEL:-$(fetch_kernel)}
build
pack
echo "== check-arm64-system: boot $KERNEL ($(qemu-system-aarch64 --version | head -1))"
echo "   $(du -h "$DIR/initramfs.cpio" | cut -f1) initramfs, $CPUS vCPUs, timeout ${TIMEOUT}s;" \
    "each test's output is in $DIR/console.log"
start=$(date +%s)
rc=0
# -cpu max: every architectural feature qemu has (BTI, PAC, SVE...);
# pauth-impdef: its cheap pointer-authentication hash, as fast TCG needs
# (the architected QARMA costs more than the rest of the run). No NIC,
# no disk; a panic (init gone) ends qemu instead of rebooting.
timeout "$TIMEOUT" qemu-system-aarch64 -M virt -cpu max,pauth-impdef=on \
    -smp "$CPUS" -m 2G -nographic -no-reboot -nic none \
    -kernel "$KERNEL" -initrd "$DIR/initramfs.cpio" \
    -append "console=ttyAMA0 panic=-1 quiet" </dev/null |
    tee "$DIR/console.log" | grep --line-buffered -v '^wxsys: out ' || rc=$?
wall=$(($(date +%s) - start))
[ "$rc" = 0 ] || echo "check-arm64-system: qemu exited with $rc (124: timeout after ${TIMEOUT}s)"

awk -v wall="$wall" -v qemu_rc="$rc" -f tools/arm64-system-summary.awk \
    "$DIR/labels" "$DIR/console.log"
