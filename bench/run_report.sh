#!/usr/bin/env bash
# The benchmark report: runs every benchmark with its peers side by side (core and coordination
# micro-benchmarks against asyncio and uvloop; echo servers, protocol and streams APIs, against a
# C floor, libuv, Asio, asyncio and uvloop; TLS against nginx, a C floor and the Python loops;
# HTTP against nginx and a C floor), Strata on each loop of --loops, all on 127.0.0.1, and writes
# one Markdown report with tables of absolute figures and same-run ratios, and PNG charts
# (gnuplot) of requests/s and server CPU per request by message size per server, and of HTTP.
# See bench/README.md, "The report".
#
# Usage: bench/run_report.sh [--quick] [--loops epoll,poll,select,proactor] [--docs]
#                            [--render-only] [--only core,coord,echo,tls,http]
#   --quick        smoke run: short windows, one repetition, no counted phases (2-3 minutes
#                  once built; the full run takes about 40 minutes on 2 CPUs)
#   --loops        the loops Strata runs on (default: every selector backend and the proactor,
#                  epoll,poll,select,proactor; the first is the one the ratio columns use; a
#                  loop echo_server refuses is left out of every runner, with a note)
#   --only         some of the benchmarks: core, coord, echo, tls, http (default: all)
#   --docs         also copy the charts into docs/bench/ (what README.md shows)
#   --render-only  redraw the report and charts from the results of the last run
#
# Results: build/bench/report/report.md, its charts in build/bench/report/charts/*.png, each
# runner's JSON in build/bench/report/raw/ and its own report and log in build/bench/report/logs/
# (STRATA_BENCH_BUILD overrides build/bench). Every runner is stopped after its time limit (the
# whole full run ends within 4.5 hours, --quick within 50 minutes, whatever happens).
set -euo pipefail

command="bench/run_report.sh${*:+ $*}"
args=()
quick=0
render_only=0
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) args+=("$1"); quick=1 ;;
    --render-only) args+=("$1"); render_only=1 ;;
    --docs) args+=(--docs docs/bench) ;;
    --loops|--only)
      [ $# -ge 2 ] || { echo "$1 needs a value" >&2; exit 2; }
      args+=("$1" "$2"); shift ;;
    -h|--help) awk 'NR > 1 && !/^#/ { exit } NR > 1' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
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
scripts/deps.sh bench   # the peers, strace, valgrind, nginx, wrk and gnuplot

if [ "$render_only" = 0 ]; then
  if [ "$(nproc)" -lt 2 ]; then
    echo "error: needs 2 CPUs (servers pinned to CPU 0, load generators to CPU 1)" >&2
    exit 1
  fi
  # Everything the runners need, built once here, gently (the runners then find it up to date).
  # A tree that does not configure or build is no reason to stop: each runner then measures
  # the peers and says why Strata is missing.
  echo "== configure and build ($build, Release)" >&2
  if cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DSTRATA_BUILD_TESTS=OFF \
      -DSTRATA_BUILD_EXAMPLES=ON -DSTRATA_BUILD_BENCH=ON >"$build/report.configure.log" 2>&1; then
    targets=()
    for t in bench_core_micro bench_coord_micro echo_server http_server crawler echo_load \
        c_epoll_echo c_uring_echo asio_echo_callbacks asio_echo_coro libuv_echo c_http_server http_count; do
      if cmake --build "$build" --target help 2>/dev/null | grep -q "^$t:"; then targets+=("$t"); fi
    done
    nice -n 10 cmake --build "$build" -j 2 --target "${targets[@]}" >&2 ||
      echo "warning: some targets did not build; the runners will say which" >&2
  else
    echo "warning: the tree did not configure (see $build/report.configure.log)" >&2
  fi
fi

# The driver stops each runner after its time limit; timeout bounds the whole.
limit=16200
[ "$quick" = 1 ] && limit=3000
driver=""
cleanup() { [ -n "$driver" ] && kill -TERM "$driver" 2>/dev/null; wait 2>/dev/null || true; }
trap cleanup EXIT
trap 'exit 130' INT TERM
timeout -k 60 "$limit" /usr/bin/python3 bench/report/report.py --build "$build" \
  --command "$command" ${args[@]+"${args[@]}"} &
driver=$!
status=0
wait "$driver" || status=$?
driver=""
[ "$status" = 124 ] && echo "error: the report did not finish within $limit s" >&2
exit "$status"
