# Cross build for aarch64 Linux run under a real kernel (qemu-system-aarch64,
# tools/check-arm64-system.sh): statically linked, so that every test and the
# demo run from an initramfs with no libc in it, and no emulator in front of
# the test commands, so that ctest's command lines are what the guest runs.
include(${CMAKE_CURRENT_LIST_DIR}/toolchain-aarch64.cmake)
unset(CMAKE_CROSSCOMPILING_EMULATOR)
set(CMAKE_EXE_LINKER_FLAGS_INIT -static)
# No shared libwxjit to link test programs with (tests/CMakeLists.txt).
set(WXJIT_STATIC_PROGRAMS ON)
