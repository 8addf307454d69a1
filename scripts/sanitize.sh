#!/usr/bin/env bash
# Builds the tests under sanitizers and runs them through CTest.
#   scripts/sanitize.sh address   AddressSanitizer + UndefinedBehaviorSanitizer (with leak
#                                 detection) on every test and the example programs' tests,
#                                 built with clang (build/asan); the loop tests on the epoll
#                                 backend and the proactor (poll and select share epoll's code
#                                 above the selector, and run in scripts/test.sh; set
#                                 STRATA_SANITIZE_ALL_BACKENDS=1 to run them here too)
#   scripts/sanitize.sh thread    ThreadSanitizer on the thread-facing tests (build/tsan)
# Installs the Debian packages it needs first. Any report fails the run.
#
# The address build uses clang at -O1: it compiles the suite in a third of g++'s time under
# ASan, and -O1 keeps the reports' stacks exact. The fault-injection tests are left out (their
# LD_PRELOAD shim and the sanitizers' interceptors conflict); so is the one test that takes
# every descriptor (tests/transports/test_server.cpp says why).
set -euo pipefail
cd "$(dirname "$0")/.."
exclude=()

case "${1:-}" in
  address)
    scripts/deps.sh clang
    build=build/asan
    cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
      -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ \
      -DCMAKE_C_FLAGS_RELWITHDEBINFO="-O1 -g1" -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -g1" \
      -DSTRATA_SANITIZE=address,undefined -DSTRATA_BUILD_BENCH=OFF
    cmake --build "$build"
    export ASAN_OPTIONS="detect_leaks=1 strict_string_checks=1 ${ASAN_OPTIONS:-}"
    export UBSAN_OPTIONS="halt_on_error=1 print_stacktrace=1 ${UBSAN_OPTIONS:-}"
    if [ -z "${STRATA_SANITIZE_ALL_BACKENDS:-}" ]; then
      exclude=(-E '::strata::testing::(Poll|Select)Loop$')
    fi
    ;;
  thread)
    scripts/deps.sh build
    build=build/tsan
    cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSTRATA_SANITIZE=thread \
      -DSTRATA_TEST_SET=threads -DSTRATA_BUILD_EXAMPLES=OFF -DSTRATA_BUILD_BENCH=OFF
    cmake --build "$build" --target strata_core_tests
    export TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1 ${TSAN_OPTIONS:-}"
    ;;
  *) echo "usage: scripts/sanitize.sh address|thread" >&2; exit 2 ;;
esac

ctest --test-dir "$build" --output-on-failure -j "$(nproc)" --timeout 300 "${exclude[@]}"
