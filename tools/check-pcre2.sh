#!/usr/bin/env bash
# make check-pcre2: PCRE2's JIT (sljit) on wxjit, proven by PCRE2's own
# tests under the kernel-enforced W^X policy (tools/wx_policy.h, entered by
# wx-run).
#
#   tools/check-pcre2.sh [WXJIT_BUILD_DIR]     (default: build)
#
# 1. Fetches Debian's source package pcre2=$PCRE2_DEB (adding deb-src
#    entries to apt if none is configured) into $PCRE2_WORK, outside the
#    repository (default /tmp/wxjit-pcre2).
# 2. Builds it three times with CMake (8-bit library, JIT on), unpatched:
#      stock     sljit's default allocator (RWX mappings);
#      sljit-wx  sljit's own W^X allocator (a mapping per function);
#      wxjit     -DSLJIT_HAVE_CONFIG_PRE=1 -I integrations/sljit, linked
#                with libwxjit_sljit.a and libwxjit.a.
# 3. Checks, each under wx-run:
#      negative control: stock must fail pcre2_jit_test and RunTest (it
#        passes both without the policy: the policy is what breaks it);
#      sljit-wx passes pcre2_jit_test;
#      wxjit, per backend (WXJIT_BACKEND=toggle, dualmap, procmem, and
#        procmem with WXJIT_SLJIT_DEFER_TRAP_FILL=1):
#        pcre2_jit_test and RunTest pass, every JIT function came from
#        wxjit's heap, integrations/sljit/pcre2_threads passes, and
#        integrations/sljit/pcre2_fallback: a pattern whose JIT code is
#        larger than a chunk falls back to the interpreter (stock PCRE2
#        JIT-compiles it: checked too).
# 4. Unless PCRE2_FIGURES=0: pages, mappings and system calls of
#    pcre2_jit_test per variant (strace + tools/code-mappings.pl, wxjit's
#    own counters), and its wall time (least and median of
#    PCRE2_TIMING_RUNS runs, default 7, interleaved); then the compile
#    rate of integrations/sljit/pcre2_compile_rate with
#    PCRE2_COMPILE_THREADS threads (default 4) for PCRE2_COMPILE_SECONDS
#    (default 2), PCRE2_COMPILE_RUNS runs (default 5) interleaved, stock
#    against each backend: Markdown tables in $PCRE2_WORK/figures.md.
# Exit status 0 only if every check passed.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${1:-build}
case $BUILD in /*) ;; *) BUILD=$ROOT/$BUILD ;; esac
PCRE2_DEB=${PCRE2_DEB:-10.42-1}
WORK=${PCRE2_WORK:-/tmp/wxjit-pcre2}
JOBS=${JOBS:-$(nproc 2>/dev/null || echo 2)}
FIGURES=${PCRE2_FIGURES:-1}
TIMING_RUNS=${PCRE2_TIMING_RUNS:-7}
THREADS_ROUNDS=${PCRE2_THREADS_ROUNDS:-10000}
COMPILE_THREADS=${PCRE2_COMPILE_THREADS:-4}
COMPILE_SECONDS=${PCRE2_COMPILE_SECONDS:-2}
COMPILE_RUNS=${PCRE2_COMPILE_RUNS:-5}
# X-defer: backend X with WXJIT_HEAP_DEFER_TRAP_FILL (wxjit_env).
BACKENDS="toggle dualmap procmem procmem-defer"

WX_RUN=$BUILD/wx-run
SLJIT_LIB=$BUILD/integrations/sljit/libwxjit_sljit.a
WXJIT_LIB=$BUILD/libwxjit.a
SRC=$WORK/pcre2-$PCRE2_DEB
LOGS=$WORK/logs

failures=0
say() { printf '%s\n' "$*"; }
pass() { say "  PASS  $*"; }
fail() { say "  FAIL  $*"; failures=$((failures + 1)); }
die() { say "check-pcre2: $*" >&2; exit 1; }
# The environment that puts integrations/sljit on wxjit variant $1.
wxjit_env() {
  local backend=${1%-defer}
  printf 'WXJIT_BACKEND=%s WXJIT_SLJIT_DEFER_TRAP_FILL=%d' "$backend" "$([ "$backend" = "$1" ]; echo $?)"
}

# ---- tools ----------------------------------------------------------------
need_pkgs=()
command -v cmake >/dev/null || need_pkgs+=(cmake)
command -v cc >/dev/null || need_pkgs+=(build-essential)
command -v dpkg-source >/dev/null || need_pkgs+=(dpkg-dev)
if [ "$FIGURES" != 0 ]; then command -v strace >/dev/null || need_pkgs+=(strace); fi
if [ ${#need_pkgs[@]} -gt 0 ]; then
  [ "$(id -u)" = 0 ] || die "missing: ${need_pkgs[*]} (sudo apt-get install -y ${need_pkgs[*]})"
  say "== installing ${need_pkgs[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${need_pkgs[@]}" >/dev/null \
    || { apt-get update >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${need_pkgs[@]}" >/dev/null; }
fi
for f in "$WX_RUN" "$SLJIT_LIB" "$WXJIT_LIB"; do
  [ -e "$f" ] || die "$f is missing: build wxjit first (make build BUILD=${BUILD#"$ROOT"/})"
done
mkdir -p "$WORK" "$LOGS"

# ---- 1. the source package -----------------------------------------------
have_source_pin() {
  # Not grep -q on a pipe: under pipefail, apt-cache's SIGPIPE would count.
  local versions
  versions=$(apt-cache showsrc pcre2 2>/dev/null || true)
  grep -qx "Version: $PCRE2_DEB" <<<"$versions"
}

# deb-src variants of the Debian entries apt already uses.
add_deb_src() {
  [ "$(id -u)" = 0 ] || die "no deb-src entry offers pcre2 $PCRE2_DEB; as root this script adds one"
  local d=/etc/apt/sources.list.d
  if [ -f $d/debian.sources ]; then
    sed -e 's/^Types:.*/Types: deb-src/' $d/debian.sources >$d/wxjit-deb-src.sources
  elif [ -f /etc/apt/sources.list ] && grep -q '^deb ' /etc/apt/sources.list; then
    sed -n 's/^deb /deb-src /p' /etc/apt/sources.list >$d/wxjit-deb-src.list
  else
    # shellcheck disable=SC1091
    . /etc/os-release
    printf 'deb-src http://deb.debian.org/debian %s main\n' "$VERSION_CODENAME" >$d/wxjit-deb-src.list
  fi
  say "   added deb-src entries ($(ls $d/wxjit-deb-src.*)); apt-get update"
  apt-get update >"$LOGS/apt-update.log" 2>&1 || true
}

if [ ! -f "$SRC/.wxjit-extracted" ]; then
  say "== fetching Debian source package pcre2=$PCRE2_DEB"
  have_source_pin || add_deb_src
  have_source_pin || die "pcre2 $PCRE2_DEB is not in the configured Debian archives (see $LOGS/apt-update.log)"
  rm -rf "$WORK/dl" "$SRC"
  mkdir -p "$WORK/dl"
  # apt's download sandbox user cannot write to a root-owned directory.
  chown _apt "$WORK/dl" 2>/dev/null || true
  (cd "$WORK/dl" && apt-get source --download-only "pcre2=$PCRE2_DEB") >"$LOGS/apt-source.log" 2>&1 \
    || die "apt-get source failed (see $LOGS/apt-source.log)"
  dpkg-source -x "$WORK"/dl/pcre2_"$PCRE2_DEB".dsc "$SRC" >"$LOGS/dpkg-source.log" 2>&1 \
    || die "dpkg-source -x failed (see $LOGS/dpkg-source.log)"
  touch "$SRC/.wxjit-extracted"
fi
say "== source: $SRC"

# ---- 2. three builds -----------------------------------------------------
COMMON=(
  -DCMAKE_BUILD_TYPE=Release
  -DBUILD_SHARED_LIBS=OFF -DBUILD_STATIC_LIBS=ON
  -DPCRE2_BUILD_PCRE2_8=ON -DPCRE2_BUILD_PCRE2_16=OFF -DPCRE2_BUILD_PCRE2_32=OFF
  -DPCRE2_SUPPORT_JIT=ON -DPCRE2_BUILD_TESTS=ON -DPCRE2_BUILD_PCRE2GREP=OFF
  -DPCRE2_SUPPORT_LIBZ=OFF -DPCRE2_SUPPORT_LIBBZ2=OFF
  -DPCRE2_SUPPORT_LIBEDIT=OFF -DPCRE2_SUPPORT_LIBREADLINE=OFF
)
# The flags a PCRE2 build needs to run its JIT on wxjit: nothing else.
WXJIT_CFLAGS="-DSLJIT_HAVE_CONFIG_PRE=1 -I$ROOT/integrations/sljit"
WXJIT_LIBS=("$SLJIT_LIB" "$WXJIT_LIB" -lpthread)

build_variant() { # name c-flags extra-libraries
  local dir=$WORK/build-$1
  if [ -f "$dir/CMakeCache.txt" ] && ! grep -qx "CMAKE_HOME_DIRECTORY:INTERNAL=$SRC" "$dir/CMakeCache.txt"; then
    rm -rf "$dir"
  fi
  # The archives linked in are not dependencies CMake knows about: relink.
  rm -f "$dir/pcre2test" "$dir/pcre2_jit_test" "$dir/pcre2posix_test"
  say "== building PCRE2 ($1)"
  cmake -S "$SRC" -B "$dir" "${COMMON[@]}" "-DCMAKE_C_FLAGS=$2" \
    "-DCMAKE_C_STANDARD_LIBRARIES=$3" >"$LOGS/configure-$1.log" 2>&1 \
    || die "configuring PCRE2 ($1) failed (see $LOGS/configure-$1.log)"
  cmake --build "$dir" -j"$JOBS" >"$LOGS/build-$1.log" 2>&1 \
    || die "building PCRE2 ($1) failed (see $LOGS/build-$1.log)"
}
build_variant stock "" ""
build_variant sljit-wx "-DSLJIT_WX_EXECUTABLE_ALLOCATOR=1" ""
build_variant wxjit "$WXJIT_CFLAGS" "${WXJIT_LIBS[*]}"

say "== building pcre2_threads"
cc -std=c11 -O2 -g -pthread -Wall -Wextra -Wshadow -Wstrict-prototypes -Werror \
  -DPCRE2_STATIC -I"$WORK/build-wxjit" -I"$ROOT/integrations/sljit" \
  -I"$ROOT/include" -I"$ROOT/tools" \
  "$ROOT/integrations/sljit/pcre2_threads.c" "$WORK/build-wxjit/libpcre2-8.a" \
  "${WXJIT_LIBS[@]}" -o "$WORK/pcre2_threads" >"$LOGS/build-threads.log" 2>&1 \
  || { cat "$LOGS/build-threads.log"; die "building pcre2_threads failed"; }

# The same sources on stock PCRE2 and on PCRE2 on wxjit.
for prog in pcre2_compile_rate pcre2_fallback; do
  for v in stock wxjit; do
    libs=()
    [ $v = wxjit ] && libs=("${WXJIT_LIBS[@]}")
    cc -std=c11 -O2 -g -pthread -Wall -Wextra -Wshadow -Wstrict-prototypes -Werror \
      -DPCRE2_STATIC -I"$WORK/build-$v" "$ROOT/integrations/sljit/$prog.c" \
      "$WORK/build-$v/libpcre2-8.a" "${libs[@]}" -o "$WORK/$prog-$v" \
      >"$LOGS/build-$prog-$v.log" 2>&1 \
      || { cat "$LOGS/build-$prog-$v.log"; die "building $prog ($v) failed"; }
  done
done

# ---- 3. checks -----------------------------------------------------------
# Runs a test program of a variant; output to $LOGS/<label>.log. Returns
# the program's exit status.
run_jit_test() { # variant label [env/wx-run prefix...]
  local dir=$WORK/build-$1 label=$2
  shift 2
  (cd "$dir" && "$@" ./pcre2_jit_test) >"$LOGS/$label.log" 2>&1
}
run_runtest() { # variant label [prefix...]
  local dir=$WORK/build-$1 label=$2
  shift 2
  (cd "$dir" && srcdir=$SRC "$@" sh "$SRC/RunTest") >"$LOGS/$label.log" 2>&1
}
jit_test_clean() { # log: both halves of pcre2_jit_test passed
  grep -q "All JIT regression tests are successfully passed" "$1" &&
    grep -q "All invalid UTF8 JIT regression tests are successfully passed" "$1"
}

say "== negative control: stock PCRE2 (RWX allocator)"
if run_jit_test stock stock-jit-test && jit_test_clean "$LOGS/stock-jit-test.log"; then
  pass "stock pcre2_jit_test without the policy"
else
  fail "stock pcre2_jit_test fails even without the policy ($LOGS/stock-jit-test.log)"
fi
if run_jit_test stock stock-jit-test-wx "$WX_RUN"; then
  fail "stock pcre2_jit_test passed under W^X: the policy does not bite"
elif grep -q "cannot be compiled by the JIT compiler" "$LOGS/stock-jit-test-wx.log"; then
  pass "stock pcre2_jit_test under W^X fails as it must: $(grep -m1 'test ratio' "$LOGS/stock-jit-test-wx.log" | sed 's/^ *//')"
else
  fail "stock pcre2_jit_test under W^X failed for another reason ($LOGS/stock-jit-test-wx.log)"
fi
if run_runtest stock stock-runtest; then
  pass "stock RunTest without the policy"
else
  fail "stock RunTest fails even without the policy ($LOGS/stock-runtest.log)"
fi
if run_runtest stock stock-runtest-wx "$WX_RUN"; then
  fail "stock RunTest passed under W^X: the policy does not bite"
elif grep -q "JIT compilation was not successful" "$LOGS/stock-runtest-wx.log"; then
  pass "stock RunTest under W^X fails as it must (test 17: JIT compilation was not successful)"
else
  fail "stock RunTest under W^X failed for another reason ($LOGS/stock-runtest-wx.log)"
fi

say "== sljit's own W^X allocator"
if run_jit_test sljit-wx sljit-wx-jit-test "$WX_RUN" && jit_test_clean "$LOGS/sljit-wx-jit-test.log"; then
  pass "sljit-wx pcre2_jit_test under W^X"
else
  fail "sljit-wx pcre2_jit_test under W^X ($LOGS/sljit-wx-jit-test.log)"
fi
# The pattern pcre2_fallback checks on wxjit: stock JIT-compiles it, to
# more than a wxjit chunk.
if "$WORK/pcre2_fallback-stock" --expect jit >"$LOGS/stock-fallback.log" 2>&1; then
  pass "stock pcre2_fallback: $(grep -o 'JIT code [0-9]* bytes' "$LOGS/stock-fallback.log") for its pattern"
else
  fail "stock pcre2_fallback --expect jit:"
  sed 's/^/        /' "$LOGS/stock-fallback.log"
fi

for b in $BACKENDS; do
  say "== wxjit, backend $b"
  # shellcheck disable=SC2046 # wxjit_env prints two assignments
  if run_jit_test wxjit "wxjit-$b-jit-test" env $(wxjit_env "$b") WXJIT_SLJIT_STATS=1 "$WX_RUN" &&
     jit_test_clean "$LOGS/wxjit-$b-jit-test.log"; then
    stats=$(grep -o 'wxjit_sljit: backend=.*' "$LOGS/wxjit-$b-jit-test.log" || true)
    installs=$(sed -n 's/.* installs=\([0-9]*\).*/\1/p' <<<"$stats")
    if [[ $stats == "wxjit_sljit: backend=${b%-defer} "* ]] && [ "${installs:-0}" -gt 0 ]; then
      pass "pcre2_jit_test under W^X ($installs JIT functions from wxjit's $b heap)"
    else
      fail "pcre2_jit_test passed but did not use wxjit's $b heap: '${stats:-no stats}'"
    fi
  else
    fail "pcre2_jit_test under W^X ($LOGS/wxjit-$b-jit-test.log)"
  fi
  # shellcheck disable=SC2046 # as above
  if run_runtest wxjit "wxjit-$b-runtest" env $(wxjit_env "$b") "$WX_RUN"; then
    pass "RunTest under W^X ($(grep -c 'OK with JIT' "$LOGS/wxjit-$b-runtest.log") test files also with JIT)"
  else
    fail "RunTest under W^X ($LOGS/wxjit-$b-runtest.log)"
  fi
  t0=$(date +%s%N)
  # shellcheck disable=SC2046 # as above
  if env $(wxjit_env "$b") "$WX_RUN" "$WORK/pcre2_threads" --threads 4 --rounds "$THREADS_ROUNDS" \
       >"$LOGS/wxjit-$b-threads.log" 2>&1; then
    pass "pcre2_threads under W^X ($((($(date +%s%N) - t0) / 1000000)) ms):"
  else
    fail "pcre2_threads under W^X ($LOGS/wxjit-$b-threads.log):"
  fi
  sed 's/^/        /' "$LOGS/wxjit-$b-threads.log"
  # shellcheck disable=SC2046 # as above
  if env $(wxjit_env "$b") "$WX_RUN" "$WORK/pcre2_fallback-wxjit" --expect fallback \
       >"$LOGS/wxjit-$b-fallback.log" 2>&1; then
    pass "pcre2_fallback under W^X: JIT code over a chunk falls back to the interpreter"
  else
    fail "pcre2_fallback under W^X ($LOGS/wxjit-$b-fallback.log):"
    sed 's/^/        /' "$LOGS/wxjit-$b-fallback.log"
  fi
done

# ---- 4. figures ----------------------------------------------------------
field() { sed -n "s/.*\\b$2=\\([0-9]*\\).*/\\1/p" <<<"$1"; }
# The least time is the one least disturbed by the rest of the machine.
min_median() { tr ' ' '\n' <<<"$1" | grep . | sort -n | awk '{a[NR]=$1} END {print a[1] " / " a[int((NR+1)/2)]}'; }
median() { tr ' ' '\n' <<<"$1" | grep . | sort -n | awk '{a[NR]=$1} END {print (a[int((NR+1)/2)] + a[int(NR/2)+1]) / 2}'; }

figures() {
  local variants="stock sljit-wx toggle dualmap procmem"
  declare -A dir env maps stats
  dir[stock]=stock; dir[sljit-wx]=sljit-wx
  env[stock]=; env[sljit-wx]=
  for b in $BACKENDS; do dir[$b]=wxjit; env[$b]=$(wxjit_env "$b"); done
  say "== figures: pcre2_jit_test per variant (not under the policy, which stock cannot run under)"
  for v in $variants; do
    # shellcheck disable=SC2086 # env[v] is assignments, or none
    (cd "$WORK/build-${dir[$v]}" && env ${env[$v]} WXJIT_SLJIT_STATS=1 \
      strace -f -qq -e trace=mmap,munmap,mprotect,pwritev -o "$LOGS/strace-$v.txt" \
      ./pcre2_jit_test) >"$LOGS/figures-$v.log" 2>&1 || return 1
    maps[$v]=$(perl "$ROOT/tools/code-mappings.pl" "$LOGS/strace-$v.txt")
    stats[$v]=$(grep -o 'wxjit_sljit: backend=.*' "$LOGS/figures-$v.log" || true)
  done
  declare -A times
  for ((i = 0; i < TIMING_RUNS; i++)); do
    for v in $variants; do
      local t0 t1
      t0=$(date +%s%N)
      # shellcheck disable=SC2086 # as above
      (cd "$WORK/build-${dir[$v]}" && env ${env[$v]} ./pcre2_jit_test) >/dev/null 2>&1 || return 1
      t1=$(date +%s%N)
      times[$v]+="$(((t1 - t0) / 1000000)) "
    done
  done
  {
    say "| pcre2_jit_test | stock (RWX) | sljit W^X | wxjit toggle | wxjit dualmap | wxjit procmem |"
    say "|---|---|---|---|---|---|"
    local row
    row="| JIT functions |"
    for v in $variants; do
      case $v in
        toggle|dualmap|procmem) row+=" $(field "${stats[$v]}" installs) |" ;;
        *) row+=" — |" ;;
      esac
    done
    say "$row"
    row="| code pages written |"
    for v in $variants; do
      case $v in
        stock) row+=" ≤ $(field "${maps[$v]}" code_pages) (one RWX chunk) |" ;;
        sljit-wx) row+=" $(field "${maps[$v]}" code_pages) |" ;;
        *) row+=" $(field "${stats[$v]}" pages) |" ;;
      esac
    done
    say "$row"
    row="| code pages at most at once |"
    for v in $variants; do
      case $v in
        stock|sljit-wx) row+=" $(field "${maps[$v]}" peak_pages) |" ;;
        *) row+=" $(field "${stats[$v]}" pages) |" ;;
      esac
    done
    say "$row"
    row="| mappings created for code |"
    for v in $variants; do
      local m a
      m=$(field "${maps[$v]}" code_mmaps); a=$(field "${maps[$v]}" alias_mmaps)
      if [ "$a" -gt 0 ]; then row+=" $m RX + $a RW alias |"; else row+=" $m |"; fi
    done
    say "$row"
    row="| code VMAs at most at once |"
    for v in $variants; do row+=" $(field "${maps[$v]}" peak_vmas) |"; done
    say "$row"
    row="| code address space at most (KiB) |"
    for v in $variants; do row+=" $(($(field "${maps[$v]}" peak_pages) * 4)) |"; done
    say "$row"
    for c in mmap mprotect munmap pwritev; do
      row="| $c calls (whole process) |"
      for v in $variants; do row+=" $(field "${maps[$v]}" $c) |"; done
      say "$row"
    done
    row="| wall time, least / median of $TIMING_RUNS (ms) |"
    for v in $variants; do row+=" $(min_median "${times[$v]}") |"; done
    say "$row"
  } >"$WORK/figures.md"
  {
    say ""
    say "Measured $(date -u +%Y-%m-%d) on $(nproc) CPUs ($(uname -r)), PCRE2 $PCRE2_DEB; raw:"
    for v in $variants; do
      say "- $v: ${maps[$v]}${stats[$v]:+; ${stats[$v]#wxjit_sljit: }}"
      say "  times (ms): ${times[$v]}"
    done
  } >>"$WORK/figures.md"
  cat "$WORK/figures.md"
}
# The regex-server case: compiles per second of pcre2_compile_rate, stock
# PCRE2 (RWX) against PCRE2 on each wxjit backend, runs interleaved;
# medians, and wxjit's system calls and faults retried per compile from
# its own counters (WXJIT_SLJIT_STATS), over all runs.
compile_rate_figures() {
  local variants="stock dualmap procmem procmem-defer toggle" load
  load=$(cut -d' ' -f1-3 /proc/loadavg)
  declare -A rates cpu_rates syscalls installs faults bytes
  say "== figures: pcre2_compile_rate, $COMPILE_THREADS threads, $COMPILE_RUNS runs of $COMPILE_SECONDS s"
  for ((i = 0; i < COMPILE_RUNS; i++)); do
    for v in $variants; do
      local bin=$WORK/pcre2_compile_rate-wxjit out
      [ "$v" = stock ] && bin=$WORK/pcre2_compile_rate-stock
      # shellcheck disable=SC2046 # wxjit_env prints two assignments
      out=$(env $(wxjit_env "$v") WXJIT_SLJIT_STATS=1 \
              "$bin" --threads "$COMPILE_THREADS" --seconds "$COMPILE_SECONDS" 2>&1) \
        || { say "$out"; return 1; }
      say "   $v: $(grep compile_rate: <<<"$out")"
      rates[$v]+="$(field "$out" per_s) "
      cpu_rates[$v]+="$(field "$out" per_cpu_s) "
      bytes[$v]=$(field "$out" jit_bytes_mean)
      if [ "$v" != stock ]; then
        grep -q "wxjit_sljit: backend=${v%-defer} " <<<"$out" || { say "$v: not on wxjit's ${v%-defer} heap"; return 1; }
        syscalls[$v]=$((${syscalls[$v]:-0} + $(field "$out" syscalls)))
        installs[$v]=$((${installs[$v]:-0} + $(field "$out" installs)))
        faults[$v]=$((${faults[$v]:-0} + $(field "$out" faults_retried)))
      fi
    done
  done
  local base cpu_base row
  base=$(median "${rates[stock]}")
  cpu_base=$(median "${cpu_rates[stock]}")
  {
    say ""
    say "| pcre2_compile_rate, $COMPILE_THREADS threads | stock (RWX) | wxjit dualmap | wxjit procmem | wxjit procmem, deferred trap fill | wxjit toggle |"
    say "|---|---|---|---|---|---|"
    row="| compiles/s, median of $COMPILE_RUNS runs of $COMPILE_SECONDS s |"
    for v in $variants; do row+=" $(median "${rates[$v]}") |"; done
    say "$row"
    row="| x stock |"
    for v in $variants; do row+=" $(awk -v r="$(median "${rates[$v]}")" -v b="$base" 'BEGIN {printf "%.2f", r / b}') |"; done
    say "$row"
    row="| compiles per CPU second (user + system), median |"
    for v in $variants; do row+=" $(median "${cpu_rates[$v]}") |"; done
    say "$row"
    row="| x stock, per CPU second |"
    for v in $variants; do row+=" $(awk -v r="$(median "${cpu_rates[$v]}")" -v b="$cpu_base" 'BEGIN {printf "%.2f", r / b}') |"; done
    say "$row"
    row="| system calls per compile (wxjit's count) |"
    for v in $variants; do
      if [ "$v" = stock ]; then row+=" — |"; else
        row+=" $(awk -v s="${syscalls[$v]}" -v n="${installs[$v]}" 'BEGIN {printf "%.3f", s / n}') |"; fi
    done
    say "$row"
    row="| faults retried (all runs) |"
    for v in $variants; do row+=" ${faults[$v]:-—} |"; done
    say "$row"
    row="| JIT code per compile (bytes, mean) |"
    for v in $variants; do row+=" ${bytes[$v]} |"; done
    say "$row"
    say ""
    say "Compile rates per run (interleaved), $(date -u +%Y-%m-%d), load average before: $load:"
    for v in $variants; do say "- $v: ${rates[$v]}(per CPU second: ${cpu_rates[$v]})"; done
  } >>"$WORK/figures.md"
  sed -n '/pcre2_compile_rate, /,$p' "$WORK/figures.md"
}
if [ "$FIGURES" != 0 ]; then
  figures || fail "figures: a measured run failed (logs in $LOGS)"
  compile_rate_figures || fail "compile-rate figures: a measured run failed"
fi

say ""
if [ "$failures" -eq 0 ]; then
  say "check-pcre2: all checks passed (logs in $LOGS)"
else
  say "check-pcre2: $failures check(s) FAILED (logs in $LOGS)"
  exit 1
fi
