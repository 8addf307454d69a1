#!/usr/bin/env bash
# Echo servers side by side: Strata's echo server (examples/echo_server, --api protocol and
# --api streams), hand-written C echoes on epoll and on io_uring (the floors of the selector
# and proactor loops), Asio (callbacks and C++20 coroutines), libuv, and Python's asyncio and uvloop (protocols and streams), all loaded by
# bench/echo/echo_load. See bench/README.md.
#
# Usage: bench/run_echo.sh [--quick] [--streams] [--servers a,b] [--sizes 64,1024]
#                          [--connections 10,50] [--reps N] [--loops selector,poll]
#                          [--skip pingpong,stream,strace,callgrind,idle]
#   --quick    smoke run (about 3 minutes): fewer repetitions, shorter windows, 10 connections
#   --streams  the streams comparison: strata, strata_streams, uvloop, uvloop_streams and
#              asyncio_streams at 64 B and 1 KiB, 10 connections, no idle phase (about 5
#              minutes; --quick: under a minute, counts at 64 B, callgrind for Strata only)
#   --loops    the loops Strata's two servers run on (echo_server --loop; default selector,
#              i.e. epoll): each loop after the first adds strata_LOOP and strata_streams_LOOP;
#              with proactor, the report compares it with c_uring, with c_uring_apart and
#              with the first other loop; a loop echo_server refuses is skipped with a note
#   servers: c_epoll c_uring c_uring_apart strata strata_streams libuv asio_cb asio_coro
#            uvloop uvloop_streams asyncio asyncio_streams (default: all)
#
# Results: build/bench/echo.json and build/bench/echo.md (STRATA_BENCH_BUILD overrides
# build/bench). Progress goes to stderr, the Markdown tables to stdout.
set -euo pipefail

args=()
streams=0
servers_given=0
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) args+=(--quick) ;;
    --streams) args+=(--streams); streams=1 ;;
    -h|--help) awk 'NR > 1 && !/^#/ { exit } NR > 1' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    --servers|--sizes|--connections|--reps|--skip|--loops)
      [ $# -ge 2 ] || { echo "$1 needs a value" >&2; exit 2; }
      [ "$1" = --servers ] && servers_given=1
      if [ "$1" = --skip ]; then
        for phase in ${2//,/ }; do
          case "$phase" in
            pingpong|stream|strace|callgrind|idle) ;;
            *) echo "unknown phase for --skip: $phase (pingpong, stream, strace, callgrind, idle)" >&2
               exit 2 ;;
          esac
        done
      fi
      args+=("$1" "$2"); shift ;;
    *) echo "unknown option: $1 (try --help)" >&2; exit 2 ;;
  esac
  shift
done

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
build="${STRATA_BENCH_BUILD:-build/bench}"
mkdir -p "$build"
build="$(cd "$build" && pwd)"

# Debug mode (thread checks, slow-callback timing) must not skew the figures.
unset STRATA_DEBUG

echo "== dependencies" >&2
scripts/deps.sh bench

if [ "$(nproc)" -lt 2 ]; then
  echo "error: needs 2 CPUs (server pinned to CPU 0, load generator to CPU 1)" >&2
  exit 1
fi

echo "== configure and build ($build, Release)" >&2
# Examples on, for Strata's echo_server. If the examples do not configure (work in progress
# elsewhere), the peers are still built and Strata's row is left out with a note.
strata_note=""
if ! cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DSTRATA_BUILD_TESTS=OFF \
    -DSTRATA_BUILD_EXAMPLES=ON -DSTRATA_BUILD_BENCH=ON >"$build/echo.configure.log" 2>&1; then
  strata_note="the tree did not configure with examples on (see $build/echo.configure.log)"
  echo "warning: $strata_note; trying without the examples" >&2
  cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DSTRATA_BUILD_TESTS=OFF \
    -DSTRATA_BUILD_EXAMPLES=OFF -DSTRATA_BUILD_BENCH=ON >"$build/echo.configure.log" 2>&1 ||
    { cat "$build/echo.configure.log" >&2; exit 1; }
fi
peers=(echo_load c_epoll_echo)
# The streams comparison (--streams without --servers) needs none of the C++ and libuv peers.
if [ "$streams" = 0 ] || [ "$servers_given" = 1 ]; then
  for t in c_uring_echo asio_echo_callbacks asio_echo_coro libuv_echo; do
    if cmake --build "$build" --target help 2>/dev/null | grep -q "^$t:"; then peers+=("$t"); fi
  done
fi
cmake --build "$build" --target "${peers[@]}" >&2
# Strata's server: a missing target or a failed build leaves it out (never a stale binary).
if [ -z "$strata_note" ]; then
  if ! cmake --build "$build" --target help 2>/dev/null | grep -q '^echo_server:'; then
    strata_note="the build has no echo_server target yet (examples/echo_server)"
  elif ! cmake --build "$build" --target echo_server >"$build/echo.strata-build.log" 2>&1; then
    strata_note="the echo_server target failed to build (see $build/echo.strata-build.log)"
  fi
fi
if [ -n "$strata_note" ]; then
  echo "warning: Strata's echo server will not be measured: $strata_note" >&2
fi

# 10,000 idle connections need that many descriptors in the server and in echo_load.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
if [ "$(ulimit -n)" -lt 10100 ]; then
  echo "warning: only $(ulimit -n) file descriptors: the idle-connection figure will fail" >&2
fi
load=$(cut -d' ' -f1 /proc/loadavg 2>/dev/null || echo 0)
if awk -v l="$load" 'BEGIN { exit !(l > 0.5) }'; then
  echo "warning: load average $load: CPU/request and rps will be noisy (counts are not)" >&2
fi

# The driver ends every process it started; this trap ends the driver if we are interrupted.
driver=""
cleanup() { [ -n "$driver" ] && kill -TERM "$driver" 2>/dev/null; wait 2>/dev/null || true; }
trap cleanup EXIT
trap 'exit 130' INT TERM
/usr/bin/python3 bench/echo/run_echo.py --build "$build" --strata-note "$strata_note" \
  "${args[@]}" &
driver=$!
status=0
wait "$driver" || status=$?
driver=""
exit "$status"
