#!/usr/bin/env bash
# Builds the tests under a sanitizer and runs them through CTest.
#   scripts/sanitize.sh thread   ThreadSanitizer on the thread-facing tests (build/tsan)
# Installs the Debian packages it needs first. Any report fails the run.
set -euo pipefail
cd "$(dirname "$0")/.."

case "${1:-}" in
  thread) build=build/tsan; sanitize=thread; test_set=threads ;;
  *) echo "usage: scripts/sanitize.sh thread" >&2; exit 2 ;;
esac

scripts/deps.sh build
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSTRATA_SANITIZE="$sanitize" \
  -DSTRATA_TEST_SET="$test_set" -DSTRATA_BUILD_EXAMPLES=OFF -DSTRATA_BUILD_BENCH=OFF
cmake --build "$build" --target strata_core_tests
export TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1 ${TSAN_OPTIONS:-}"
ctest --test-dir "$build" --output-on-failure -j "$(nproc)" --timeout 300
