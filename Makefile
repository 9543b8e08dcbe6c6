# Convenience front end to CMake. The two commands a newcomer needs:
#   make demo   build and run the demo
#   make test   build and run the test suite (ctest)
BUILD ?= build
BUILD_TYPE ?= RelWithDebInfo
CMAKE_FLAGS ?=
STRESS_SECONDS ?= 300
PREFIX ?= /usr/local
JOBS ?= $(shell nproc 2>/dev/null || echo 2)

.PHONY: all build test demo bench stress install clean check-tools

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
