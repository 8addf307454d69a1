#!/usr/bin/env bash
# Builds Strata in release mode and runs the main example. Extra arguments go to the example.
# Installs the Debian packages it needs first. Build output goes to build/release.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/deps.sh build
cmake -S . -B build/release -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DSTRATA_BUILD_TESTS=OFF -DSTRATA_BUILD_BENCH=OFF
cmake --build build/release --target hello_loop
exec build/release/examples/hello_loop "$@"
