#!/usr/bin/env bash
# Builds and runs Strata's coordination micro-benchmarks (Lock, Queue, run_in_executor,
# call_soon_threadsafe), runs the same benchmarks on Python's asyncio and uvloop, and prints
# one Markdown table comparing them.
#
# Usage: bench/run_coord_micro.sh [--quick] [-- extra Google Benchmark flags]
#   --quick  short runs (a smoke test, about a minute once built)
#
# Results: build/bench/coord_micro.json (Google Benchmark JSON), build/bench/coord_micro_asyncio.json,
# build/bench/coord_micro_uvloop.json (bench/python/coord_micro.py --json), and the table in
# build/bench/coord_micro.md. Progress goes to stderr, the table to stdout. STRATA_BENCH_BUILD
# names another build directory than build/bench.
set -euo pipefail

quick=0
extra=()
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) quick=1 ;;
    -h|--help) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    --) shift; extra=("$@"); break ;;
    *) echo "unknown option: $1 (try --help)" >&2; exit 2 ;;
  esac
  shift
done

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
build="${STRATA_BENCH_BUILD:-build/bench}"
python=/usr/bin/python3

# Debug mode (thread checks, slow-callback timing) must not skew the figures.
unset STRATA_DEBUG

echo "== dependencies" >&2
scripts/deps.sh bench

echo "== configure and build ($build, Release)" >&2
mkdir -p "$(dirname "$build")"
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DSTRATA_BUILD_TESTS=OFF -DSTRATA_BUILD_EXAMPLES=OFF -DSTRATA_BUILD_BENCH=ON \
  >"$build.configure.log" 2>&1 ||
  { cat "$build.configure.log" >&2; exit 1; }
cmake --build "$build" --target bench_coord_micro >&2

if [ "$quick" = 1 ]; then
  gb_args=(--benchmark_min_time=0.05 --benchmark_repetitions=3)
  py_args=(--quick)
else
  gb_args=(--benchmark_min_time=0.5 --benchmark_repetitions=7)
  py_args=()
fi

load=$(cut -d' ' -f1 /proc/loadavg 2>/dev/null || echo 0)
cpus=$(nproc 2>/dev/null || echo 1)
if awk -v l="$load" -v n="$cpus" 'BEGIN { exit !(l > n / 2) }'; then
  echo "warning: load average $load on $cpus CPUs: the figures will be noisy" >&2
fi

echo "== strata (bench_coord_micro ${gb_args[*]})" >&2
"$build/bench/bench_coord_micro" "${gb_args[@]}" --benchmark_report_aggregates_only=true \
  --benchmark_out="$build/coord_micro.json" --benchmark_out_format=json "${extra[@]}" >&2

for loop in asyncio uvloop; do
  echo "== python $loop (bench/python/coord_micro.py --loop $loop ${py_args[*]})" >&2
  if ! "$python" bench/python/coord_micro.py --loop "$loop" --json "${py_args[@]}" \
      >"$build/coord_micro_$loop.json"; then
    echo "warning: the $loop run failed; its column stays empty" >&2
    echo '{}' >"$build/coord_micro_$loop.json"
  fi
done

echo "== table" >&2
"$python" - "$build/coord_micro.json" "$build/coord_micro_asyncio.json" \
  "$build/coord_micro_uvloop.json" <<'EOF' | tee "$build/coord_micro.md"
import json
import sys

strata_path, asyncio_path, uvloop_path = sys.argv[1:4]
with open(strata_path) as f:
    gb = json.load(f)
peers = {}
for name, path in (("asyncio", asyncio_path), ("uvloop", uvloop_path)):
    with open(path) as f:
        peers[name] = json.load(f)

# Per benchmark run (name without the "/real_time" suffix): the minimum over repetitions
# (the custom "min" statistic), as the Python script reports its best repetition. Without
# repetitions, the single run.
results = {}
for b in gb["benchmarks"]:
    if b.get("error_occurred"):
        continue
    run = b.get("run_name", b["name"]).replace("/real_time", "")
    if b.get("run_type") == "aggregate":
        if b.get("aggregate_name") == "min":
            results[run] = b
    else:
        results.setdefault(run, b)


def strata(run, counter="ns_per_op"):
    b = results.get(run)
    return None if b is None or counter not in b else float(b[counter])


def fmt(v, digits=1):
    return "—" if v is None else f"{v:.{digits}f}"


def ratio(peer, ours):
    if peer is None or ours is None or ours <= 0:
        return "—"
    return f"{peer / ours:.1f}×"


loops = []
for run in results:
    parts = run.split("/")
    if len(parts) == 2 and parts[1] not in loops:
        loops.append(parts[1])
default = loops[0] if loops else "epoll"

benches = [
    "lock_uncontended",
    "lock_100_waiters",
    "queue_put_get_unbounded",
    "queue_put_get_maxsize1",
    "queue_put_get_maxsize64",
    "run_in_executor_roundtrip",
    "call_soon_threadsafe_1thread",
    "call_soon_threadsafe_4threads",
]

print("| benchmark | strata ns/op | asyncio ns/op | uvloop ns/op | asyncio/strata | uvloop/strata |")
print("|---|---:|---:|---:|---:|---:|")
for bench in benches:
    for loop in loops:
        run = f"{bench}/{loop}"
        if run not in results:
            continue
        ours = strata(run)
        # Python's asyncio and uvloop both run on epoll: compare on the default backend.
        a = peers["asyncio"].get(bench) if loop == default else None
        u = peers["uvloop"].get(bench) if loop == default else None
        digits = 2 if ours is not None and ours < 10 else 1
        print(f"| {bench} ({loop}) | {fmt(ours, digits)} | {fmt(a)} | {fmt(u)} | "
              f"{ratio(a, ours)} | {ratio(u, ours)} |")

ctx = gb.get("context", {})
notes = []
cpu = [(b, strata(f"{b}/{default}", "cpu_ns_per_op")) for b in benches]
if all(v is not None for _, v in cpu):
    notes.append(
        f"strata on the loop thread's CPU clock ({default}; not inflated by time spent "
        "descheduled on a loaded machine, unlike the wall-clock figures above; for "
        "run_in_executor and call_soon_threadsafe it leaves out the other threads' CPU): "
        + ", ".join(f"{b} {v:.{2 if v < 10 else 1}f}" for b, v in cpu) + " ns/op.")
load = ctx.get("load_avg")
load = ", ".join(f"{x:.2f}" for x in load) if isinstance(load, list) else "?"
notes.append(
    f"strata: min over repetitions; {ctx.get('host_name', '?')}, {ctx.get('num_cpus', '?')} CPUs "
    f"@ {ctx.get('mhz_per_cpu', '?')} MHz, load average {load}. "
    f"Python {peers['asyncio'].get('python', '?')}: best of N repetitions. Ratios > 1 mean "
    "Strata is faster; quote ratios from one run, not absolute figures across machines."
)
print()
for n in notes:
    print(f"- {n}")
EOF
