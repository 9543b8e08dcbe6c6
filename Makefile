# Convenience front end to CMake. The two commands a newcomer needs:
#   make demo   build and run the demo
#   make test   build and run the test suite (ctest)
BUILD ?= build
BUILD_TYPE ?= RelWithDebInfo
CMAKE_FLAGS ?=
STRESS_SECONDS ?= 300
PREFIX ?= /usr/local
JOBS ?= $(shell nproc 2>/dev/null || echo 2)

.PHONY: all build test demo bench stress install clean check-tools profile

all: build

check-tools:
	@command -v cmake >/dev/null || { echo "cmake is missing: sudo apt-get install -y cmake build-essential"; exit 1; }
	@command -v cc >/dev/null || { echo "a C compiler is missing: sudo apt-get install -y build-essential"; exit 1; }

$(BUILD)/CMakeCache.txt: | check-tools
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=$(BUILD_TYPE) $(CMAKE_FLAGS)

build: $(BUILD)/CMakeCache.txt
	cmake --build $(BUILD) -j$(JOBS)

test: build
	cd $(BUILD) && ctest --output-on-failure

demo: build
	$(BUILD)/demo/wxjit-demo

# The demo under perf with jitdump: perf report names its JIT functions
# (README "Profiling and debugging"; needs perf: apt-get install linux-perf).
PROFILE_DIR ?= $(BUILD)/profile
profile: build
	bash tools/profile-demo.sh $(BUILD) $(PROFILE_DIR)

# Every workload on every strategy, side by side (BENCH_ARGS=--csv for CSV).
bench: build
	$(BUILD)/bench/wxjit-bench $(BENCH_ARGS)

# The concurrency stress for minutes, per backend (STRESS_SECONDS each,
# default 300).
stress: build
	WXJIT_BACKEND=toggle $(BUILD)/tests/test_stress --seconds $(STRESS_SECONDS) --installers 2 --executors 2
	WXJIT_BACKEND=dualmap $(BUILD)/tests/test_stress --seconds $(STRESS_SECONDS) --installers 2 --executors 2

install: build
	cmake --install $(BUILD) --prefix $(PREFIX)

clean:
	rm -rf $(BUILD)

# ---- fuzzing (fuzz/README.md) ------------------------------------------------
# The libFuzzer harness (clang, ASan, UBSan) in FUZZ_BUILD: replays
# fuzz/regressions/, then fuzzes FUZZ_SECONDS per backend from the seed
# corpus fuzz/corpus/ and prints executions and coverage; fails on any
# crash. Installs clang and libclang-rt-14-dev with apt-get when missing.
FUZZ_BUILD ?= build-fuzz
FUZZ_SECONDS ?= 60

.PHONY: fuzz
fuzz:
	FUZZ_BUILD=$(FUZZ_BUILD) FUZZ_SECONDS=$(FUZZ_SECONDS) bash fuzz/run.sh

# ---- PCRE2's JIT on wxjit (integrations/sljit, tools/check-pcre2.sh) -----
# Fetches Debian's pcre2 source package, builds it against wxjit and runs
# PCRE2's own tests under the W^X policy once per backend, plus a negative
# control, a multi-threaded check and the figures of BENCHMARKS.md. A few
# minutes; PCRE2 is built outside the repository (PCRE2_WORK, default
# /tmp/wxjit-pcre2).
.PHONY: check-pcre2
check-pcre2: build
	bash tools/check-pcre2.sh $(BUILD)

# ---- sljit's own regex test and allocation failures on wxjit -------------
# Needs sljit's source (SLJIT_SRC, default ../shared/third_party/sljit).
.PHONY: check-sljit
check-sljit: build
	bash tools/check-sljit.sh $(BUILD)

# ---- cross builds under qemu-user (tools/check-cross.sh) -------------------
# aarch64 and riscv64: cross-built with Debian's gcc-<arch>-linux-gnu, the
# whole ctest suite under qemu-user once per backend, in
# $(CROSS_BUILD)-<arch>. Installs the cross compilers and qemu-user with
# apt-get when missing (as root). A couple of minutes.
CROSS_BUILD ?= build-cross

.PHONY: check-cross
check-cross:
	CROSS_BUILD=$(CROSS_BUILD) bash tools/check-cross.sh

# ---- aarch64 on a real kernel (tools/check-arm64-system.sh) -----------------
# The whole ctest suite once per backend, statically cross-built, on
# Debian's arm64 kernel under qemu-system-aarch64 (2 vCPUs, initramfs only),
# in $(ARM64_SYSTEM_BUILD). Installs the cross compiler, qemu-system-arm and
# cpio, and downloads the kernel package, with apt-get when missing (as
# root). README: "aarch64 on a real kernel".
ARM64_SYSTEM_BUILD ?= build-arm64-system

.PHONY: check-arm64-system
check-arm64-system:
	ARM64_SYSTEM_BUILD=$(ARM64_SYSTEM_BUILD) bash tools/check-arm64-system.sh

# ---- sanitizers and Valgrind (tools/check-sanitizers.sh) ------------------
# The whole ctest suite, every heap test once per backend, built with
# clang's ASan+UBSan (build-asan) or TSan (build-tsan), or run under
# Valgrind memcheck (build-valgrind). Any report, memcheck error or leak
# fails; what a tool makes impossible is printed SKIPPED with its reason
# and listed at the end. Installs clang and libclang-rt-14-dev, or
# valgrind, with apt-get when missing (as root).
.PHONY: check-asan check-tsan check-valgrind
check-asan check-tsan check-valgrind:
	bash tools/check-sanitizers.sh $(@:check-%=%)
