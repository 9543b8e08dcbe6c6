#!/usr/bin/env bash
# Installs a build into a scratch prefix and builds README's embedding
# example against it twice: through pkg-config and through find_package.
set -euo pipefail
build=${1:?usage: check-install.sh BUILD_DIR}
root=$(pwd)
prefix=$(mktemp -d)
trap 'rm -rf "$prefix"' EXIT
cmake --install "$build" --prefix "$prefix" >/dev/null

export PKG_CONFIG_PATH="$(dirname "$(find "$prefix" -name wxjit.pc)")"
# shellcheck disable=SC2046
cc -o "$prefix/embed-pc" examples/embed.c $(pkg-config --cflags --libs wxjit)
LD_LIBRARY_PATH="$(pkg-config --variable=libdir wxjit)" "$prefix/embed-pc" | grep -q "returned 42"
echo "pkg-config consumer: ok"

mkdir -p "$prefix/consumer"
cat > "$prefix/consumer/CMakeLists.txt" <<CMAKE
cmake_minimum_required(VERSION 3.16)
project(consumer C)
find_package(wxjit REQUIRED)
add_executable(embed "$root/examples/embed.c")
target_link_libraries(embed PRIVATE wxjit::wxjit)
CMAKE
cmake -S "$prefix/consumer" -B "$prefix/consumer/build" -DCMAKE_PREFIX_PATH="$prefix" >/dev/null
cmake --build "$prefix/consumer/build" >/dev/null
"$prefix/consumer/build/embed" | grep -q "returned 42"
echo "CMake package consumer: ok"
