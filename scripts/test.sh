#!/usr/bin/env bash
# Builds Strata with its tests and runs every test through CTest.
# Installs the Debian packages it needs first. Build output goes to build/test.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/deps.sh build
cmake -S . -B build/test -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSTRATA_BUILD_BENCH=OFF
cmake --build build/test
ctest --test-dir build/test --output-on-failure -j "$(nproc)" --timeout 120
