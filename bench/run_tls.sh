#!/usr/bin/env bash
# TLS side by side: Strata's TLS echo server (examples/echo_server --tls-cert/--tls-key) against
# nginx (`return 200`, full handshakes), a hand-written C epoll + OpenSSL echo (the floor), and
# Python's asyncio and uvloop with stdlib ssl, all loaded by bench/tls/tls_load, with
# `openssl speed` (AES-128-GCM) measured in the same run. See bench/README.md.
#
# Usage: bench/run_tls.sh [--quick] [--reps N] [--servers a,b] [--key ec|rsa] [--tls 1.3|1.2]
#                         [--skip handshake,echo,bulk,callgrind] [--callgrind] [--profile]
#                         [--bulk-window BYTES] [--loops selector,poll]
#   --quick    smoke run: under a minute once built (1 repetition of 1 s windows, no callgrind
#              unless --callgrind)
#   --bulk-window  bulk: the most bytes unechoed at a time (default 262144)
#   --key      certificate key: ec (P-256, default) or rsa (2048 bits); same for every server
#   --profile  then perf-record Strata's server under each load and print its top symbols
#   --loops    the loops echo_server runs on (--loop; default selector, i.e. epoll): each loop
#              after the first adds a server strata_LOOP, measured in every phase
#   servers: strata nginx c_floor uvloop asyncio (default: all)
#
# Results: build/bench-tls/tls.json and build/bench-tls/tls.md (STRATA_BENCH_TLS_BUILD overrides
# build/bench-tls). Progress goes to stderr, the Markdown tables to stdout.
set -euo pipefail

args=()
key_type=ec
while [ $# -gt 0 ]; do
  case "$1" in
    --quick|--profile|--callgrind) args+=("$1") ;;
    -h|--help) awk 'NR > 1 && !/^#/ { exit } NR > 1' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    --reps|--servers|--skip|--tls|--bulk-window|--loops)
      [ $# -ge 2 ] || { echo "$1 needs a value" >&2; exit 2; }
      args+=("$1" "$2"); shift ;;
    --key)
      [ $# -ge 2 ] || { echo "$1 needs a value" >&2; exit 2; }
      case "$2" in ec|rsa) key_type=$2 ;; *) echo "--key: ec or rsa" >&2; exit 2 ;; esac
      shift ;;
    *) echo "unknown option: $1 (try --help)" >&2; exit 2 ;;
  esac
  shift
done

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
build="${STRATA_BENCH_TLS_BUILD:-build/bench-tls}"
mkdir -p "$build"
build="$(cd "$build" && pwd)"

# Debug mode (thread checks, slow-callback timing) must not skew the figures.
unset STRATA_DEBUG

echo "== dependencies" >&2
scripts/deps.sh bench

if [ "$(nproc)" -lt 2 ]; then
  echo "error: needs 2 CPUs (servers pinned to CPU 0, load generator to CPU 1)" >&2
  exit 1
fi

tmp="$(mktemp -d /tmp/strata-tls-bench.XXXXXX)"
driver=""
cleanup() {
  [ -n "$driver" ] && kill -TERM "$driver" 2>/dev/null
  wait 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "== certificate ($key_type) in $tmp" >&2
if [ "$key_type" = ec ]; then
  key_desc="EC P-256 (ECDSA)"
  keyopts=(-newkey ec -pkeyopt ec_paramgen_curve:P-256)
else
  key_desc="RSA 2048"
  keyopts=(-newkey rsa:2048)
fi
openssl req -x509 "${keyopts[@]}" -nodes -keyout "$tmp/key.pem" -out "$tmp/cert.pem" -days 2 \
  -subj /CN=localhost -addext subjectAltName=DNS:localhost,IP:127.0.0.1 2>"$tmp/req.log" ||
  { cat "$tmp/req.log" >&2; exit 1; }

echo "== build ($build, Release)" >&2
# The load generator and the C floor are plain C on OpenSSL.
cc -O2 -Wall -Wextra -Werror bench/tls/tls_load.c -o "$build/tls_load" -lssl -lcrypto
cc -O2 -Wall -Wextra -Werror bench/tls/c_tls_echo.c -o "$build/c_tls_echo" -lssl -lcrypto
# Strata's echo_server in a Release build; a tree that does not configure or build leaves
# Strata out with a note (never a stale binary).
strata_note=""
rm -f "$build/examples/echo_server"
if ! cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DSTRATA_BUILD_TESTS=OFF \
    -DSTRATA_BUILD_EXAMPLES=ON -DSTRATA_BUILD_BENCH=OFF >"$build/configure.log" 2>&1; then
  strata_note="the tree did not configure (see $build/configure.log)"
elif ! cmake --build "$build" --target echo_server -j2 >"$build/strata-build.log" 2>&1; then
  strata_note="the echo_server target failed to build (see $build/strata-build.log)"
fi
if [ -n "$strata_note" ]; then
  echo "warning: Strata's echo server will not be measured: $strata_note" >&2
fi

ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
load=$(cut -d' ' -f1 /proc/loadavg 2>/dev/null || echo 0)
if awk -v l="$load" 'BEGIN { exit !(l > 0.5) }'; then
  echo "warning: load average $load: rates and CPU per operation will be noisy" >&2
fi

echo "== run" >&2
/usr/bin/python3 bench/tls/run_tls.py --build "$build" --cert "$tmp/cert.pem" \
  --key "$tmp/key.pem" --key-desc "$key_desc" --tmp "$tmp" --strata-note "$strata_note" \
  ${args[@]+"${args[@]}"} &
driver=$!
status=0
wait "$driver" || status=$?
driver=""
exit "$status"
