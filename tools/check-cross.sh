#!/usr/bin/env bash
# make check-cross: the library and its whole ctest suite for aarch64 and
# riscv64 Linux, cross-built with Debian's gcc-<arch>-linux-gnu and run
# under qemu-user, every heap test once per backend (toggle, dualmap,
# procmem), then sljit's own tests on wxjit (tools/check-sljit.sh with
# SLJIT_CROSS=<arch>).
#
#   tools/check-cross.sh [aarch64] [riscv64]     (default: both)
#
# Environment: CROSS_BUILD (build directory prefix, default build-cross:
# build-cross-aarch64, build-cross-riscv64), CROSS_JOBS (default nproc).
# As root, installs what is missing with apt-get; otherwise prints the
# command to run. What qemu-user cannot do (seccomp; code written through a
# second mapping; a re-queued fault signal) the tests report as SKIPPED
# with the reason, never as a pass: see the summary at the end.
set -euo pipefail
cd "$(dirname "$0")/.."

ARCHES=("$@")
[ ${#ARCHES[@]} -gt 0 ] || ARCHES=(aarch64 riscv64)
PREFIX=${CROSS_BUILD:-build-cross}
JOBS=${CROSS_JOBS:-$(nproc 2>/dev/null || echo 2)}

# Each tool the script runs, and the Debian packages that provide it.
declare -A NEED=(
    [cmake]=cmake [make]=make
    [aarch64-linux-gnu-gcc]="gcc-aarch64-linux-gnu libc6-dev-arm64-cross"
    [riscv64-linux-gnu-gcc]="gcc-riscv64-linux-gnu libc6-dev-riscv64-cross"
    [qemu-aarch64]=qemu-user [qemu-riscv64]=qemu-user
)
source tools/need.sh

# Runs one ctest selection, prints its log, appends "arch set passed
# skipped failed" to the summary and records a failure in STATUS.
SUMMARY=()
STATUS=0
run_set() {
    local arch=$1 set=$2 dir=$3 log
    shift 3
    log=$dir/check-cross-$set.log
    echo "== $arch, $set: ctest $* (each test under qemu-$arch)"
    local rc=0
    (cd "$dir" && ctest --timeout 120 -j"$JOBS" "$@") >"$log" 2>&1 || rc=$?
    # Every test's command and output (what was checked, what was skipped
    # and why), then ctest's own verdicts.
    [ -f "$dir/Testing/Temporary/LastTest.log" ] &&
    awk '/^[0-9]+\/[0-9]+ Test: /  { sub(/^[0-9]+\/[0-9]+ /, ""); print "--- " $0; next }
         /^Command: /              { print "    " $0; next }
         /^-+$|^Output:|^<end of output>|^Directory:|^"|^Test time|^[0-9]+\/[0-9]+ Testing:|^(Start|End) testing/ { next }
         /^Test (Passed|Failed)|^Test not run|^Unable/ { print "    => " $0; next }
         NF { print "    " $0 }' "$dir/Testing/Temporary/LastTest.log"
    cat "$log"
    local passed skipped failed
    passed=$(grep -cE 'Test +#[0-9]+: .* Passed' "$log" || true)
    skipped=$(grep -cE 'Test +#[0-9]+: .*\*\*\*Skipped' "$log" || true)
    failed=$(grep -cE 'Test +#[0-9]+: .*\*\*\*(Failed|Timeout|Exception|Not Run)' \
        "$log" || true)
    [ "$rc" = 0 ] || [ "$failed" != 0 ] || failed=1 # ctest itself failed
    SUMMARY+=("$(printf '%-8s %-12s %6s %7s %6s' "$arch" "$set" "$passed" \
        "$skipped" "$failed")")
    [ "$failed" = 0 ] || STATUS=1
}

check_arch() {
    local arch=$1 dir=$PREFIX-$arch
    echo "== $arch: configure $dir (cmake/toolchain-$arch.cmake)"
    # demo/ and bench/ emit x86_64 code of their own: not cross targets.
    cmake -S . -B "$dir" -DCMAKE_TOOLCHAIN_FILE="$PWD/cmake/toolchain-$arch.cmake" \
        -DCMAKE_BUILD_TYPE=RelWithDebInfo -DWXJIT_WERROR=ON \
        -DWXJIT_DEMO=OFF -DWXJIT_BENCH=OFF >"$dir.configure.log" 2>&1 ||
        { cat "$dir.configure.log"; exit 1; }
    grep 'cross build:' "$dir.configure.log" || true
    echo "== $arch: build ($("$arch-linux-gnu-gcc" --version | head -1))"
    cmake --build "$dir" -j"$JOBS"
    echo "== $arch: $("qemu-$arch" --version | head -1)"
    # procmem first: under qemu-user every procmem test skips, and a
    # ctest run whose closing line counts no executed test must not be
    # the log's last (CI reads the last runner verdict as "ran no test").
    run_set "$arch" "procmem" "$dir" -L procmem
    run_set "$arch" "dualmap" "$dir" -L dualmap
    run_set "$arch" "no-backend" "$dir" -LE 'toggle|dualmap|procmem'
    run_set "$arch" "toggle" "$dir" -L toggle
    echo "== $arch: check-sljit (sljit's own tests on wxjit)"
    local rc=0
    SLJIT_CROSS=$arch bash tools/check-sljit.sh "$dir" || rc=$?
    SUMMARY+=("$(printf '%-8s %-12s %s' "$arch" "check-sljit" \
        "$([ $rc = 0 ] && echo "passed (skips above)" || echo FAILED)")")
    [ $rc = 0 ] || STATUS=1
}

need_install check-cross
for arch in "${ARCHES[@]}"; do
    case $arch in
    aarch64 | riscv64) check_arch "$arch" ;;
    *) echo "check-cross: unknown architecture $arch" >&2; exit 2 ;;
    esac
done

echo
echo "== check-cross summary (tests per ctest selection; SKIPPED ones print"
echo "   their reason above: what qemu-user cannot emulate)"
printf '%-8s %-12s %6s %7s %6s\n' arch tests passed skipped failed
printf '%s\n' "${SUMMARY[@]}"
if [ "$STATUS" = 0 ]; then
    echo "check-cross: all passed (or skipped with a reason) for ${ARCHES[*]}"
else
    echo "check-cross: FAILED"
fi
exit $STATUS
