#!/usr/bin/env bash
# Builds the libFuzzer harness and runs it per backend and mode; `make
# fuzz` calls this. Per backend and mode (serial: ops one at a time on
# five threads; concurrent: executor threads call published code
# meanwhile, see fuzz/README.md): replays fuzz/regressions/ (inputs that
# once crashed), then fuzzes from the seed corpus fuzz/corpus/ and prints
# executions and coverage. FUZZ_SECONDS is the total per backend, split
# between the modes. Exits non-zero on any crash, leak or failed check;
# the input is then in $FUZZ_BUILD/artifacts-<backend>-<mode>/.
#   FUZZ_BUILD     build directory (default build-fuzz)
#   FUZZ_SECONDS   seconds per backend, both modes together (default 60)
#   FUZZ_BACKENDS  default "toggle dualmap procmem"
#   FUZZ_MODES     default "serial concurrent"
#   FUZZ_ARGS      more libFuzzer flags (e.g. -jobs=2)
set -euo pipefail
cd "$(dirname "$0")/.."
build=${FUZZ_BUILD:-build-fuzz}
seconds=${FUZZ_SECONDS:-60}
backends=${FUZZ_BACKENDS:-toggle dualmap procmem}
modes=${FUZZ_MODES:-serial concurrent}
nmodes=$(wc -w <<<"$modes")
per_mode=$(( seconds / nmodes > 0 ? seconds / nmodes : 1 ))
packages="clang libclang-rt-14-dev"

# libFuzzer comes with clang's runtime libraries (Debian: libclang-rt-14-dev).
mkdir -p "$build"
probe() {
    printf 'int LLVMFuzzerTestOneInput(const char *d, unsigned long n)\n{ (void)d; (void)n; return 0; }\n' >"$build/probe.c"
    clang -fsanitize=fuzzer "$build/probe.c" -o "$build/probe" 2>/dev/null
}
if ! command -v clang >/dev/null || ! probe; then
    if [ "$(id -u)" != 0 ]; then
        echo "fuzz: clang with libFuzzer is missing: sudo apt-get install -y $packages" >&2
        exit 1
    fi
    echo "== fuzz: installing $packages =="
    export DEBIAN_FRONTEND=noninteractive
    apt-get update
    apt-get install -y --no-install-recommends $packages
    probe || { echo "fuzz: clang cannot link libFuzzer" >&2; exit 1; }
fi

cmake -S fuzz -B "$build" -DCMAKE_C_COMPILER=clang -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$build" -j"$(nproc 2>/dev/null || echo 2)"

summary=()
for backend in $backends; do
  for mode in $modes; do
    tag=$backend-$mode
    corpus="$build/corpus-$tag" artifacts="$build/artifacts-$tag"
    log="$build/fuzz-$tag.log"
    mkdir -p "$corpus" "$artifacts"
    echo "== fuzz $tag: replaying fuzz/regressions/ =="
    WXJIT_BACKEND=$backend FUZZ_MODE=$mode "$build/fuzz_api" fuzz/regressions/* >"$log.replay" 2>&1 || {
        tail -40 "$log.replay"; echo "fuzz $tag: a regression input fails" >&2; exit 1; }
    echo "== fuzz $tag: ${per_mode} s (log: $log) =="
    # New inputs go to the first directory only: fuzz/corpus/ stays as is.
    if ! WXJIT_BACKEND=$backend FUZZ_MODE=$mode "$build/fuzz_api" \
        -max_total_time="$per_mode" -print_final_stats=1 -timeout=30 \
        -rss_limit_mb=4096 -artifact_prefix="$artifacts/" ${FUZZ_ARGS:-} \
        "$corpus" fuzz/corpus >"$log" 2>&1; then
        grep -E "check failed|ERROR|SUMMARY|Test unit written" "$log" | head -20
        echo "fuzz $tag: FAILED (input saved in $artifacts/; replay with" \
             "WXJIT_BACKEND=$backend FUZZ_MODE=$mode FUZZ_TRACE=1" \
             "$build/fuzz_api <input>)" >&2
        exit 1
    fi
    done_line=$(grep -E '^#[0-9]+[[:space:]]+DONE' "$log" | tail -1)
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    rate=$(sed -n 's/.* exec\/s: \([0-9]*\) .*/\1/p' <<<"$done_line")
    cov=$(sed -n 's/.* cov: \([0-9]*\) .*/\1/p' <<<"$done_line")
    ft=$(sed -n 's/.* ft: \([0-9]*\) .*/\1/p' <<<"$done_line")
    corp=$(sed -n 's/.* corp: \([0-9]*\)\/.*/\1/p' <<<"$done_line")
    line="fuzz $tag: $execs executions in $per_mode s ($rate/s), cov $cov, ft $ft, corpus $corp inputs, no crash"
    echo "$line"
    summary+=("$line")
  done
done
echo "== fuzz summary =="
printf '%s\n' "${summary[@]}"
