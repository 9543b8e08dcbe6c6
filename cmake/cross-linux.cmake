# The part of a cross toolchain file both CPUs share: Debian's cross gcc
# for WXJIT_CROSS_TRIPLE, its libc under /usr/<triple>, and qemu-user as
# the emulator tests/CMakeLists.txt puts in front of every test command
# (-L points qemu's dynamic loader at the cross libc instead of the host's).
# Driven by tools/check-cross.sh (make check-cross).
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR ${WXJIT_CROSS_CPU})
set(WXJIT_CROSS_TRIPLE ${WXJIT_CROSS_CPU}-linux-gnu)
set(CMAKE_C_COMPILER ${WXJIT_CROSS_TRIPLE}-gcc)
set(CMAKE_FIND_ROOT_PATH /usr/${WXJIT_CROSS_TRIPLE})
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE ONLY)
set(CMAKE_CROSSCOMPILING_EMULATOR qemu-${WXJIT_CROSS_CPU} -L /usr/${WXJIT_CROSS_TRIPLE})
