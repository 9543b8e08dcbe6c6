# Cross build for aarch64 Linux with Debian's gcc-aarch64-linux-gnu. The tests
# run under qemu-user (Debian's qemu-user): tests/CMakeLists.txt puts
# CMAKE_CROSSCOMPILING_EMULATOR in front of every test command, and -L
# points qemu's dynamic loader at the cross libc (libc6-arm64-cross)
# instead of the host's. Driven by tools/check-cross.sh (make check-cross).
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)
set(WXJIT_CROSS_TRIPLE aarch64-linux-gnu)
set(CMAKE_C_COMPILER ${WXJIT_CROSS_TRIPLE}-gcc)
set(CMAKE_FIND_ROOT_PATH /usr/${WXJIT_CROSS_TRIPLE})
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE ONLY)
set(CMAKE_CROSSCOMPILING_EMULATOR qemu-aarch64 -L /usr/${WXJIT_CROSS_TRIPLE})
