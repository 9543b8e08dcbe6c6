# Cross build for riscv64 Linux (gcc-riscv64-linux-gnu, qemu-riscv64).
set(WXJIT_CROSS_CPU riscv64)
include(${CMAKE_CURRENT_LIST_DIR}/cross-linux.cmake)
# Debian's cross gcc also searches /usr/include, where the host's
# <valgrind/valgrind.h> may be; Valgrind 3.19 (Debian 12) has no riscv64
# port and its client requests compile to nothing there: no Valgrind build.
set(WXJIT_HAVE_VALGRIND_H "" CACHE INTERNAL "no Valgrind on riscv64")
