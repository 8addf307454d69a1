#!/usr/bin/env bash
# Builds Strata in release mode and runs the main example: the HTTP server with its demo page
# (examples/http_server). Extra arguments go to the server; without any it listens on
# 127.0.0.1:8080. Installs the Debian packages it needs first. Build output: build/release.
#
#   scripts/main.sh                           http://127.0.0.1:8080/ (Ctrl-C stops it)
#   scripts/main.sh --port 0 --threads 2      an ephemeral port, two loops
#   scripts/main.sh --root ./public           static files instead of the demo page
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/deps.sh build
cmake -S . -B build/release -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DSTRATA_BUILD_TESTS=OFF -DSTRATA_BUILD_BENCH=OFF
cmake --build build/release --target http_server
if [ $# -eq 0 ]; then set -- --port 8080; fi
exec build/release/examples/http_server "$@"
