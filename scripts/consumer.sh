#!/usr/bin/env bash
# Builds and runs tests/consumer (a program outside the tree that subclasses Protocol) against
# Strata as a user gets it:
#   scripts/consumer.sh         installed: `cmake --install` into build/consumer/prefix, then
#                               find_package(Strata), and pkg-config with plain g++
#   scripts/consumer.sh --all   also through add_subdirectory and FetchContent (each builds
#                               the library again, in its own directory)
# The installed libraries come from STRATA_CONSUMER_BUILD (a configured build directory) if set,
# else from build/test when scripts/test.sh has built it (CI), else from a library-only build
# in build/consumer/strata. Installs the Debian packages it needs.
set -euo pipefail
cd "$(dirname "$0")/.."

all=0
case "${1:-}" in
  "") ;;
  --all) all=1 ;;
  *) echo "usage: scripts/consumer.sh [--all]" >&2; exit 2 ;;
esac

scripts/deps.sh build
root=$PWD
out=build/consumer
prefix=$root/$out/prefix

lib_build=${STRATA_CONSUMER_BUILD:-build/test}
if [ ! -f "$lib_build/CMakeCache.txt" ]; then
  lib_build=$out/strata
  cmake -S . -B "$lib_build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DSTRATA_BUILD_TESTS=OFF -DSTRATA_BUILD_EXAMPLES=OFF -DSTRATA_BUILD_BENCH=OFF >/dev/null
fi
cmake --build "$lib_build" --target strata_core strata_transports strata_protocols strata_streams \
  strata_llhttp
rm -rf "$prefix"
cmake --install "$lib_build" --prefix "$prefix" >/dev/null

# Runs one build of the consumer; its output line is the proof.
run() {
  local what=$1 exe=$2
  echo "consumer ($what): $("$exe")"
}

cmake -S tests/consumer -B "$out/package" -G Ninja -DSTRATA_CONSUMER_MODE=package \
  -DCMAKE_PREFIX_PATH="$prefix" >/dev/null
cmake --build "$out/package" >/dev/null
run "find_package" "$out/package/consumer"

# shellcheck disable=SC2046  # pkg-config's output is meant to be split into arguments
g++ -std=c++20 -Wall -Wextra -Werror tests/consumer/consumer.cpp -o "$out/pkg-config-consumer" \
  $(PKG_CONFIG_PATH="$prefix/lib/pkgconfig" pkg-config --cflags --libs strata)
run "pkg-config" "$out/pkg-config-consumer"

if [ $all -eq 1 ]; then
  for mode in subdirectory fetchcontent; do
    cmake -S tests/consumer -B "$out/$mode" -G Ninja -DSTRATA_CONSUMER_MODE=$mode \
      -DSTRATA_SOURCE_DIR="$root" >/dev/null
    cmake --build "$out/$mode" >/dev/null
    run "$mode" "$out/$mode/consumer"
  done
fi
