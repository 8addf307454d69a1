#!/usr/bin/env bash
# Soak and scale scenarios (opt-in, not in CI): long-running and many-connection checks of the
# example servers, each with a PASS/FAIL criterion. See docs/reliability.md and bench/README.md.
#
#   idle       15,000 concurrent idle connections held by echo_server, each echoing a byte:
#              all accepted, server RSS before/after and per connection (~15 s)
#   churn      60 s of connect / echo / close at full speed against echo_server: the server's
#              fd count and RSS at the end equal those at the start (~70 s)
#   slowloris  wrk -t1 -c50 against http_server alone, then beside 1,000 connections sending a
#              request head one byte every 2 s (--header-timeout 5): attacked req/s >= 0.8 x
#              unattacked, the slow heads cut by the header timeout (~50 s; ~100 s when the
#              ratio misses and the pair is repeated once)
#   shutdown   SIGTERM to http_server while 50 clients download a 24 MiB static file: every
#              started response completes, new connections are refused, exit 0 within 5 s (~6 s)
#
# Usage: bench/run_soak.sh [--echo-api protocol|streams] [--loop LOOP]
#                          [idle|churn|slowloris|shutdown]...
#   (default: all four, about 2.5-4 minutes once built)
#   --echo-api   the layer echo_server is written on for idle and churn (default protocol)
#   --loop       the loop every server runs on (selector, epoll, poll, proactor; default
#                selector)
#
# Results: build/soak/soak.json and build/soak/soak.md (STRATA_BENCH_BUILD overrides build/soak);
# the servers' stderr in build/soak/soak.servers.err. Progress goes to stderr, each scenario's
# figures and PASS/FAIL to stdout. Exit status 1 if any scenario failed.
set -euo pipefail

args=()
while [ $# -gt 0 ]; do
  case "$1" in
    -h|--help) awk 'NR > 1 && !/^#/ { exit } NR > 1' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    --echo-api)
      [ $# -ge 2 ] || { echo "$1 needs a value" >&2; exit 2; }
      case "$2" in protocol|streams) ;; *) echo "--echo-api: protocol or streams" >&2; exit 2 ;; esac
      args+=("$1" "$2"); shift ;;
    --loop)
      [ $# -ge 2 ] || { echo "$1 needs a value" >&2; exit 2; }
      case "$2" in selector|epoll|poll|proactor) ;;
        *) echo "--loop: selector, epoll, poll or proactor (select takes too few descriptors)" >&2
           exit 2 ;;
      esac
      args+=("$1" "$2"); shift ;;
    idle|churn|slowloris|shutdown) args+=("$1") ;;
    *) echo "unknown scenario or option: $1 (idle, churn, slowloris, shutdown; try --help)" >&2
       exit 2 ;;
  esac
  shift
done

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
build="${STRATA_BENCH_BUILD:-build/soak}"
mkdir -p "$build"
build="$(cd "$build" && pwd)"

# Debug mode (thread checks, slow-callback timing) is not what is being soaked.
unset STRATA_DEBUG

echo "== dependencies" >&2
scripts/deps.sh bench   # wrk, python3 (and the rest of the benchmark peers)

if [ "$(nproc)" -lt 2 ]; then
  echo "error: needs 2 CPUs (servers pinned to CPU 0, clients to CPU 1)" >&2
  exit 1
fi

echo "== configure and build ($build, Release: echo_server, http_server)" >&2
if ! cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DSTRATA_BUILD_TESTS=OFF \
    -DSTRATA_BUILD_EXAMPLES=ON -DSTRATA_BUILD_BENCH=OFF >"$build/soak.configure.log" 2>&1; then
  cat "$build/soak.configure.log" >&2
  echo "error: the tree did not configure (see $build/soak.configure.log)" >&2
  exit 1
fi
cmake --build "$build" --target echo_server http_server >&2

# 15,000 connections need that many descriptors in the server and in the client; the driver
# also sets each server's and client's limit to 20,000 itself (setrlimit before exec).
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
if [ "$(ulimit -Hn)" != unlimited ] && [ "$(ulimit -Hn)" -lt 20000 ]; then
  echo "warning: the hard limit on open files is $(ulimit -Hn), below 20,000: idle will fail" >&2
fi
load=$(cut -d' ' -f1 /proc/loadavg 2>/dev/null || echo 0)
if awk -v l="$load" 'BEGIN { exit !(l > 1.0) }'; then
  echo "warning: load average $load: connections/s and req/s will be noisy" >&2
fi

# The driver ends every process it started and bounds every wait; timeout bounds the whole.
limit=900
driver=""
cleanup() { [ -n "$driver" ] && kill -TERM "$driver" 2>/dev/null; wait 2>/dev/null || true; }
trap cleanup EXIT
trap 'exit 130' INT TERM
start=$(date +%s)
timeout -k 30 "$limit" /usr/bin/python3 bench/soak/soak.py --build "$build" "${args[@]}" &
driver=$!
status=0
wait "$driver" || status=$?
driver=""
[ "$status" = 124 ] && echo "error: the soak run did not finish within $limit s" >&2
echo "== run_soak.sh: $(( $(date +%s) - start )) s, exit status $status" >&2
exit "$status"
