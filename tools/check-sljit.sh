#!/usr/bin/env bash
# make check-sljit: sljit's own tests on wxjit, under the W^X policy.
#
#   tools/check-sljit.sh [BUILD_DIR]     (default: build)
#
# Builds, from the sljit source tree in SLJIT_SRC (default:
# ../shared/third_party/sljit beside the repository; test data, not part
# of wxjit), with integrations/sljit's sljitConfigPre.h and libwxjit_sljit,
# and runs once per backend (WXJIT_BACKEND=toggle, dualmap, procmem) under
# wx-run:
#   - test_src's test program (sljit_test, every test in one process,
#     rewriting of sealed code and read-only buffers included): exit
#     status 0 and its "all tests PASSED" line;
#   - regex_src's regex engine test (regex_test): its "all tests PASSED"
#     line (its exit status is always 0);
#   - integrations/sljit/sljit_alloc_fail.c: a failed allocation is
#     sljit's own error, not an abort;
#   - integrations/sljit/sljit_patch_threads.c: threads rewrite jumps and
#     constants while others run code on the same pages;
# and a negative control: both sljit tests on sljit's stock allocator
# (RWX) under wx-run must not pass.
#
# With SLJIT_CROSS=aarch64 or riscv64 (make check-cross sets it), BUILD_DIR
# is that architecture's cross build: everything is built with
# <arch>-linux-gnu-gcc and run under qemu-<arch>. qemu-user cannot enter
# the seccomp policy, so the programs run without wx-run and the negative
# control is skipped; a backend whose probe fails under the emulator
# (wxjit-probe's reason: dualmap and procmem see stale translations) is
# skipped with that reason.
# Exit status 0 only if every check passed.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${1:-build}
case $BUILD in /*) ;; *) BUILD=$ROOT/$BUILD ;; esac
SRC=${SLJIT_SRC:-$ROOT/../shared/third_party/sljit}
OUT=$BUILD/check-sljit
BACKENDS="toggle dualmap procmem"

failures=0
pass() { printf '  PASS  %s\n' "$*"; }
fail() { printf '  FAIL  %s\n' "$*"; failures=$((failures + 1)); }
skip() { printf '  SKIP  %s\n' "$*"; }

CC=cc
RUN=() # the emulator, if any
POLICY=("$BUILD/wx-run")
WHERE="under W^X"
case ${SLJIT_CROSS:-} in
'') ;;
aarch64 | riscv64)
  CC=$SLJIT_CROSS-linux-gnu-gcc
  RUN=("qemu-$SLJIT_CROSS" -L "/usr/$SLJIT_CROSS-linux-gnu")
  POLICY=()
  WHERE="under qemu-$SLJIT_CROSS, no policy"
  ;;
*) echo "check-sljit: unknown SLJIT_CROSS=$SLJIT_CROSS" >&2; exit 2 ;;
esac
# A program of the build, under the emulator and the policy where they
# apply.
run() { "${RUN[@]}" "${POLICY[@]}" "$@"; }

[ -f "$SRC/sljit_src/sljitLir.c" ] || {
  echo "check-sljit: no sljit source at $SRC (set SLJIT_SRC)" >&2
  exit 1
}
mkdir -p "$OUT"
echo "== sljit from $SRC ($(head -1 "$SRC/ORIGIN" 2>/dev/null || true))"

CFLAGS=(-O2 -g -pthread)
ON_WXJIT=(-DSLJIT_HAVE_CONFIG_PRE=1 -I"$ROOT/integrations/sljit" -I"$SRC/sljit_src")
WXJIT_LIBS=("$BUILD/integrations/sljit/libwxjit_sljit.a" "$BUILD/libwxjit.a" -lm -lpthread)
REGEX=("$SRC/regex_src/regexMain.c" "$SRC/regex_src/regexJIT.c" "$SRC/sljit_src/sljitLir.c")

build() { # name command...
  local name=$1
  shift
  "$@" >"$OUT/build-$name.log" 2>&1 || {
    cat "$OUT/build-$name.log"
    echo "check-sljit: building $name failed" >&2
    exit 1
  }
}
TEST=("$SRC/test_src/sljitMain.c" "$SRC/test_src/sljitTest.c" "$SRC/sljit_src/sljitLir.c")
build sljit_test "$CC" "${CFLAGS[@]}" "${ON_WXJIT[@]}" "${TEST[@]}" "${WXJIT_LIBS[@]}" \
  -o "$OUT/sljit_test"
build sljit_patch_threads "$CC" "${CFLAGS[@]}" "${ON_WXJIT[@]}" -I"$ROOT/include" \
  "$ROOT/integrations/sljit/sljit_patch_threads.c" "$SRC/sljit_src/sljitLir.c" \
  "${WXJIT_LIBS[@]}" -o "$OUT/sljit_patch_threads"
build regex_test "$CC" "${CFLAGS[@]}" -fshort-wchar "${ON_WXJIT[@]}" "${REGEX[@]}" \
  "${WXJIT_LIBS[@]}" -o "$OUT/regex_test"
build sljit_alloc_fail "$CC" "${CFLAGS[@]}" "${ON_WXJIT[@]}" \
  "$ROOT/integrations/sljit/sljit_alloc_fail.c" "$SRC/sljit_src/sljitLir.c" \
  "${WXJIT_LIBS[@]}" -o "$OUT/sljit_alloc_fail"

# A test's verdict line (prefix $2), without its colours (an abort prints
# none: then its last line).
verdict() {
  sed 's/\x1b\[[0-9;]*m//g' "$1" | grep -m1 "$2 tests:" ||
    echo "no verdict, last line: $(sed 's/\x1b\[[0-9;]*m//g' "$1" | tail -1)"
}

echo "== negative control: sljit's own allocator under the W^X policy"
if [ ${#POLICY[@]} -eq 0 ]; then
  skip "negative control: qemu-user cannot enter the seccomp policy"
else
  build sljit_test-stock "$CC" "${CFLAGS[@]}" -DSLJIT_HAVE_CONFIG_PRE=1 -I"$SRC/test_src" \
    -I"$SRC/sljit_src" "${TEST[@]}" -lm -lpthread -o "$OUT/sljit_test-stock"
  build regex_test-stock "$CC" "${CFLAGS[@]}" -fshort-wchar -I"$SRC/sljit_src" "${REGEX[@]}" \
    -lm -lpthread -o "$OUT/regex_test-stock"
  run "$OUT/regex_test-stock" -s >"$OUT/stock.log" 2>&1 || true
  if verdict "$OUT/stock.log" REGEX | grep -q 'all tests PASSED'; then
    fail "stock regex_test passed under W^X: the policy does not bite"
  else
    pass "stock regex_test under W^X does not pass: $(verdict "$OUT/stock.log" REGEX)"
  fi
  if run "$OUT/sljit_test-stock" -s >"$OUT/stock-test.log" 2>&1; then
    fail "stock sljit_test passed under W^X: the policy does not bite"
  else
    pass "stock sljit_test under W^X does not pass: $(verdict "$OUT/stock-test.log" SLJIT)"
  fi
fi

for b in $BACKENDS; do
  echo "== wxjit, backend $b"
  refused=$("${RUN[@]}" "$BUILD/wxjit-probe" | sed -n "s/^  $b *refused: //p")
  if [ -n "$refused" ]; then
    skip "backend $b: its probe fails here: $refused"
    continue
  fi
  log=$OUT/test-$b.log
  if WXJIT_BACKEND=$b WXJIT_SLJIT_STATS=1 run "$OUT/sljit_test" -s >"$log" 2>&1 &&
     verdict "$log" SLJIT | grep -q 'all tests PASSED'; then
    pass "sljit_test $WHERE: $(verdict "$log" SLJIT) ($(grep -o 'installs=[0-9]*' "$log"))"
  else
    fail "sljit_test $WHERE: $(verdict "$log" SLJIT) ($log)"
  fi
  log=$OUT/regex-$b.log
  WXJIT_BACKEND=$b WXJIT_SLJIT_STATS=1 run "$OUT/regex_test" -s >"$log" 2>&1 || true
  stats=$(grep -o 'wxjit_sljit: backend=.*' "$log" || true)
  if verdict "$log" REGEX | grep -q 'all tests PASSED' &&
     [[ $stats == "wxjit_sljit: backend=$b "* ]]; then
    pass "regex_test $WHERE: $(verdict "$log" REGEX) (${stats#wxjit_sljit: })"
  else
    fail "regex_test $WHERE: $(verdict "$log" REGEX); ${stats:-no wxjit stats} ($log)"
  fi
  if WXJIT_BACKEND=$b run "$OUT/sljit_alloc_fail" >"$OUT/alloc-$b.log" 2>&1; then
    pass "sljit_alloc_fail $WHERE"
  else
    fail "sljit_alloc_fail $WHERE:"
  fi
  sed 's/^/        /' "$OUT/alloc-$b.log"
  if WXJIT_BACKEND=$b run "$OUT/sljit_patch_threads" >"$OUT/patch-$b.log" 2>&1; then
    pass "$(cat "$OUT/patch-$b.log")"
  else
    fail "sljit_patch_threads $WHERE: $(tail -1 "$OUT/patch-$b.log")"
  fi
done

if [ "$failures" -eq 0 ]; then
  echo "check-sljit: all checks passed"
else
  echo "check-sljit: $failures check(s) FAILED (logs in $OUT)"
  exit 1
fi
