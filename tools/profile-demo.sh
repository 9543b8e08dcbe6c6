#!/usr/bin/env bash
# make profile: the demo under `perf record` with wxjit's jitdump on, then
# `perf inject --jit` and the top of `perf report`, where the demo's JIT
# functions appear by the names it gave them ("expr#N (x * 3) ..."). Fails
# if none does. Usage: profile-demo.sh BUILD_DIR OUT_DIR
set -euo pipefail
build=$1
out=$2
command -v perf >/dev/null ||
  { echo "perf is missing: sudo apt-get install -y linux-perf"; exit 1; }
rm -rf "$out"
mkdir -p "$out"
out=$(cd "$out" && pwd)
# -k mono: jitdump's timestamps are CLOCK_MONOTONIC. The build-id cache
# stays in OUT_DIR instead of ~/.debug.
perf_() { perf --buildid-dir "$out/buildid" "$@"; }
JITDUMPDIR=$out WXJIT_PERF=jitdump perf_ record -e cpu-clock -k mono \
  -o "$out/perf.data" -- "$build/demo/wxjit-demo" --quick > "$out/demo.txt"
perf_ inject --jit -i "$out/perf.data" -o "$out/perf.jit.data"
perf_ report -i "$out/perf.jit.data" --stdio --sort sym 2>/dev/null |
  grep -v '^#' | grep . > "$out/report.txt" || true
# The demo spreads its time over a thousand small functions and its own
# interpreter: the top of the report, then the top of its JIT functions.
echo "perf report, the demo under jitdump (top 10 symbols):"
head -10 "$out/report.txt"
echo "... its JIT functions (top 15 of them):"
grep 'expr#' "$out/report.txt" | head -15 || true
named=$(grep -c 'expr#' "$out/report.txt" || true)
unnamed=$(grep -c '\[\.\] 0x' "$out/report.txt" || true)
echo "profile: $named JIT functions by name, $unnamed unnamed user-space" \
  "addresses (all: perf report -i $out/perf.jit.data)"
[ "$named" -gt 0 ]
