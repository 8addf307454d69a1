#!/usr/bin/env bash
# HTTP servers side by side: Strata's examples/http_server, nginx (one worker, `return 200`)
# and a hand-written C epoll HTTP/1.1 responder (the floor, bench/http/c_http_server.c), all
# serving GET /plaintext ("Hello, World!") to wrk (one thread, 50 keep-alive connections), not
# pipelined and pipelined 16 deep; then system calls and user-space instructions per request
# (strace, callgrind) over an exact request count (bench/http/http_count); then examples/crawler's
# pages/s over a generated static site served by http_server --root and by nginx (phase
# crawler). See bench/README.md.
#
# Usage: bench/run_http.sh [--quick] [--servers a,b] [--reps N]
#                          [--skip load,strace,callgrind,crawler] [--threads2] [--duration S]
#                          [--crawl-pages N] [--loops selector,poll]
#   --quick     smoke run: under a minute once built (1 repetition of 1 s + 1 s, small counts,
#               a 400-page site for the crawler)
#   --servers   strata nginx c_floor (default: all; the crawler phase uses strata and nginx)
#   --reps      repetitions of the load and crawler phases (default 5; --quick 1)
#   --skip      phases to leave out: load (wrk), strace, callgrind, crawler
#   --threads2  also start `http_server --threads 2` and show that both loops serve requests
#               (per-thread CPU time from /proc/PID/task/*/stat during a wrk run)
#   --duration  measured seconds per wrk run (default 3; --quick 1)
#   --crawl-pages  HTML pages of the crawler phase's site (default 2000; --quick 400)
#   --loops     the loops http_server runs on (--loop; default selector, i.e. epoll): each loop
#               after the first adds a server strata_LOOP to the load, strace and callgrind phases
#
# Results: build/bench-http/http.json and build/bench-http/http.md (STRATA_BENCH_BUILD
# overrides build/bench-http). Progress goes to stderr, the Markdown tables to stdout.
set -euo pipefail

args=()
quick=0
skip_crawler=0
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) args+=(--quick); quick=1 ;;
    --threads2) args+=(--threads2) ;;
    -h|--help) awk 'NR > 1 && !/^#/ { exit } NR > 1' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    --servers|--reps|--skip|--duration|--crawl-pages|--loops)
      [ $# -ge 2 ] || { echo "$1 needs a value" >&2; exit 2; }
      if [ "$1" = --skip ]; then
        for phase in ${2//,/ }; do
          case "$phase" in
            load|strace|callgrind) ;;
            crawler) skip_crawler=1 ;;
            *) echo "unknown phase for --skip: $phase (load, strace, callgrind, crawler)" >&2
               exit 2 ;;
          esac
        done
      fi
      if [ "$1" = --servers ]; then
        for s in ${2//,/ }; do
          case "$s" in
            strata|strata_*|nginx|c_floor) ;;
            *) echo "unknown server: $s (strata, strata_LOOP, nginx, c_floor)" >&2; exit 2 ;;
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
build="${STRATA_BENCH_BUILD:-build/bench-http}"
mkdir -p "$build"
build="$(cd "$build" && pwd)"

# Debug mode (thread checks, slow-callback timing) must not skew the figures.
unset STRATA_DEBUG

echo "== dependencies" >&2
scripts/deps.sh bench

if [ "$(nproc)" -lt 2 ]; then
  echo "error: needs 2 CPUs (server pinned to CPU 0, wrk to CPU 1)" >&2
  exit 1
fi

echo "== configure and build ($build, Release)" >&2
# Examples on, for Strata's http_server. If the tree does not configure with them (work in
# progress elsewhere), the C programs are still built and Strata's row is left out with a note.
strata_note=""
cmake_ok=1
if ! cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DSTRATA_BUILD_TESTS=OFF \
    -DSTRATA_BUILD_EXAMPLES=ON -DSTRATA_BUILD_BENCH=ON >"$build/http.configure.log" 2>&1; then
  strata_note="the tree did not configure with examples on (see $build/http.configure.log)"
  echo "warning: $strata_note; trying without the examples" >&2
  if ! cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DSTRATA_BUILD_TESTS=OFF \
      -DSTRATA_BUILD_EXAMPLES=OFF -DSTRATA_BUILD_BENCH=ON >>"$build/http.configure.log" 2>&1; then
    cmake_ok=0
  fi
fi
mkdir -p "$build/bench/http"
if [ "$cmake_ok" = 1 ] &&
    cmake --build "$build" --target help 2>/dev/null | grep -q '^c_http_server:'; then
  cmake --build "$build" --target c_http_server http_count >&2
else
  # The tree does not configure at all: the C programs need nothing of it.
  echo "warning: no CMake build (see $build/http.configure.log); building the C programs with cc" >&2
  for t in c_http_server http_count; do
    cc -O2 -Wall -Wextra -Werror "bench/http/$t.c" -o "$build/bench/http/$t"
  done
fi
# Strata's server: a missing target or a failed build leaves it out (never a stale binary).
if [ -z "$strata_note" ]; then
  if ! cmake --build "$build" --target help 2>/dev/null | grep -q '^http_server:'; then
    strata_note="the build has no http_server target yet (examples/http_server)"
  elif ! cmake --build "$build" --target http_server >"$build/http.strata-build.log" 2>&1; then
    strata_note="the http_server target failed to build (see $build/http.strata-build.log)"
  fi
fi
if [ -n "$strata_note" ]; then
  echo "warning: Strata's http_server will not be measured: $strata_note" >&2
fi
# The crawler phase's client (examples/crawler): the same rules, a note instead of the phase.
crawler_note=""
if [ "$skip_crawler" = 0 ]; then
  if [ "$cmake_ok" != 1 ] || ! cmake --build "$build" --target help 2>/dev/null |
      grep -q '^crawler:'; then
    crawler_note="the build has no crawler target (examples/crawler)"
  elif ! cmake --build "$build" --target crawler >"$build/http.crawler-build.log" 2>&1; then
    crawler_note="the crawler target failed to build (see $build/http.crawler-build.log)"
  fi
  if [ -n "$crawler_note" ]; then
    echo "warning: the crawler phase will not run: $crawler_note" >&2
  fi
fi

ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
load=$(cut -d' ' -f1 /proc/loadavg 2>/dev/null || echo 0)
if awk -v l="$load" 'BEGIN { exit !(l > 0.5) }'; then
  echo "warning: load average $load: CPU/request and req/s will be noisy (counts are not)" >&2
fi

# The driver ends every process it started (and is itself bounded in time: 10 minutes for
# --quick, 40 otherwise); this trap ends the driver if we are interrupted.
limit=2400
[ "$quick" = 1 ] && limit=600
driver=""
cleanup() { [ -n "$driver" ] && kill -TERM "$driver" 2>/dev/null; wait 2>/dev/null || true; }
trap cleanup EXIT
trap 'exit 130' INT TERM
timeout -k 30 "$limit" /usr/bin/python3 bench/http/run_http.py --build "$build" \
  --strata-note "$strata_note" --crawler-note "$crawler_note" "${args[@]}" &
driver=$!
status=0
wait "$driver" || status=$?
driver=""
[ "$status" = 124 ] && echo "error: the benchmark did not finish within $limit s" >&2
exit "$status"
