#!/usr/bin/env bash
# make check-asan, check-tsan, check-valgrind: the whole ctest suite, every
# heap test once per backend, under a checking tool:
#   asan      clang -fsanitize=address,undefined (LeakSanitizer included)
#   tsan      clang -fsanitize=thread
#   valgrind  Valgrind memcheck (--leak-check=full), gcc build
#
#   tools/check-sanitizers.sh asan|tsan|valgrind [BUILD_DIR]
#
# BUILD_DIR defaults to build-asan, build-tsan, build-valgrind. As root,
# installs what is missing with apt-get; otherwise prints the command. Any
# sanitizer report, memcheck error or definite/indirect leak fails the test
# it happens in. What a tool makes impossible, tests print as "SKIPPED
# under <tool>: <check>: <reason>" (tests/wxtest.h), never as a pass; the
# list is printed at the end. ASAN_OPTIONS, UBSAN_OPTIONS and TSAN_OPTIONS
# from the environment are kept.
set -euo pipefail
cd "$(dirname "$0")/.."

tool=${1:-}
case "$tool" in
asan) flags=(-DCMAKE_C_COMPILER=clang -DWXJIT_SANITIZE=address,undefined) ;;
tsan) flags=(-DCMAKE_C_COMPILER=clang -DWXJIT_SANITIZE=thread) ;;
valgrind) flags=(-DWXJIT_VALGRIND=ON) ;;
*)
    echo "usage: $0 asan|tsan|valgrind [BUILD_DIR]" >&2
    exit 2
    ;;
esac
build=${2:-build-$tool}
jobs=$(nproc 2>/dev/null || echo 2)

# Whether the tool works here: a sanitizer must link and run a program
# (clang alone is not enough: its runtimes are libclang-rt-14-dev), Valgrind
# must run and have its header (client requests, src/code_changed.h).
probe() {
    local dir
    dir=$(mktemp -d)
    printf 'int main(void) { return 0; }\n' >"$dir/probe.c"
    local ok=0
    case "$tool" in
    asan) clang -fsanitize=address,undefined "$dir/probe.c" -o "$dir/p" \
        2>/dev/null && "$dir/p" || ok=1 ;;
    tsan) clang -fsanitize=thread "$dir/probe.c" -o "$dir/p" \
        2>/dev/null && "$dir/p" || ok=1 ;;
    valgrind) cc "$dir/probe.c" -o "$dir/p" 2>/dev/null &&
        [ -f /usr/include/valgrind/valgrind.h ] &&
        valgrind -q "$dir/p" 2>/dev/null || ok=1 ;;
    esac
    rm -rf "$dir"
    return $ok
}

case "$tool" in
valgrind) packages="build-essential cmake valgrind" ;;
*) packages="build-essential cmake clang libclang-rt-14-dev" ;;
esac
if ! command -v cmake >/dev/null || ! probe; then
    if [ "$(id -u)" != 0 ]; then
        echo "check-$tool: missing tools:" \
            "sudo apt-get install -y --no-install-recommends $packages" >&2
        exit 1
    fi
    echo "== check-$tool: apt-get install $packages"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    # shellcheck disable=SC2086
    apt-get install -y -q --no-install-recommends $packages
    probe || { echo "check-$tool: the tool still does not work" >&2; exit 1; }
fi

# Reports fail the run: UBSan aborts (-fno-sanitize-recover, CMakeLists),
# ASan and TSan exit non-zero on any report, LeakSanitizer at exit.
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_stack_use_after_return=1:strict_string_checks=1:check_initialization_order=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1}
export TSAN_OPTIONS=${TSAN_OPTIONS:-second_deadlock_stack=1}

echo "== check-$tool: configure and build in $build"
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DWXJIT_WERROR=ON \
    "${flags[@]}" >/dev/null
cmake --build "$build" -j"$jobs"

echo "== check-$tool: ctest"
status=0
(cd "$build" && ctest --output-on-failure -j"$jobs") || status=$?

# Every check skipped under this tool, once, with its reason.
log="$build/Testing/Temporary/LastTest.log"
if [ -f "$log" ]; then
    echo "== check-$tool: checks skipped under this tool (reason after the last colon)"
    grep -ho "SKIPPED under [A-Za-z]*: .*" "$log" | sort | uniq -c || echo "   none"
fi
if [ "$status" -ne 0 ]; then
    echo "check-$tool: FAILED" >&2
    exit "$status"
fi
echo "check-$tool: clean"
