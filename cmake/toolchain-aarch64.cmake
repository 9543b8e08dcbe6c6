# Cross build for aarch64 Linux (gcc-aarch64-linux-gnu, qemu-aarch64).
set(WXJIT_CROSS_CPU aarch64)
include(${CMAKE_CURRENT_LIST_DIR}/cross-linux.cmake)
