#!/usr/bin/env bash
# The task executor's throughput (examples/task_executor): a task_coordinator, --workers
# task_workers with --slots slots each (default 4 x 64), and task_submit sending --jobs
# `sleep 0` jobs (default 10,000) at once, --runs times (default 5) against the same processes.
# Prints per run: jobs/s (task_submit's own clock, connect to last result) and the coordinator's
# CPU per job, from /proc/PID/stat (utime + stime, in clock ticks: coarse) and from
# /proc/PID/schedstat (nanoseconds on the CPU: precise). Then the median run.
#
# Usage: bench/task_executor/run.sh [--bin DIR] [--jobs N] [--workers N] [--slots N] [--runs N]
#   --bin DIR   use the programs in DIR (e.g. build/dev/examples/task_executor); without it they
#               are built in STRATA_BENCH_BUILD (default build/bench-task-executor), Release.
set -euo pipefail

bin=""
jobs=10000
workers=4
slots=64
runs=5
while [ $# -gt 0 ]; do
  case "$1" in
    --bin) bin="$2"; shift ;;
    --jobs) jobs="$2"; shift ;;
    --workers) workers="$2"; shift ;;
    --slots) slots="$2"; shift ;;
    --runs) runs="$2"; shift ;;
    -h|--help) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown option: $1 (try --help)" >&2; exit 2 ;;
  esac
  shift
done

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"
unset STRATA_DEBUG  # debug mode's thread checks must not skew the figures

if [ -z "$bin" ]; then
  build="${STRATA_BENCH_BUILD:-build/bench-task-executor}"
  echo "== configure and build ($build, Release)" >&2
  mkdir -p "$(dirname "$build")"
  cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DSTRATA_BUILD_TESTS=OFF \
    -DSTRATA_BUILD_BENCH=OFF >"$build.configure.log" 2>&1 ||
    { cat "$build.configure.log" >&2; exit 1; }
  cmake --build "$build" --target task_coordinator task_worker task_submit >&2
  bin="$build/examples/task_executor"
fi
for program in task_coordinator task_worker task_submit; do
  [ -x "$bin/$program" ] || { echo "no $bin/$program" >&2; exit 1; }
done

tmp="$(mktemp -d)"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT

# Waits (up to 10 s) until FILE has COUNT lines matching PATTERN.
wait_lines() {
  local file="$1" pattern="$2" count="$3"
  for _ in $(seq 200); do
    [ "$(grep -c -- "$pattern" "$file" 2>/dev/null || true)" -ge "$count" ] && return 0
    sleep 0.05
  done
  echo "timed out waiting for $count x '$pattern' in $file:" >&2
  cat "$file" >&2
  exit 1
}

"$bin/task_coordinator" --port 0 >"$tmp/coordinator.out" \
  2>"$tmp/coordinator.err" &
coordinator=$!
pids+=("$coordinator")
wait_lines "$tmp/coordinator.out" '^listening on ' 1
address="$(sed -n 's/^listening on //p' "$tmp/coordinator.out")"
for i in $(seq "$workers"); do
  "$bin/task_worker" --connect "$address" --slots "$slots" --name "bench$i" 2>"$tmp/worker$i.err" &
  pids+=("$!")
done
wait_lines "$tmp/coordinator.err" 'joined' "$workers"

for _ in $(seq "$jobs"); do echo "sleep 0"; done >"$tmp/jobs"
ticks_per_s="$(getconf CLK_TCK)"
cpu_ticks() { awk '{print $14 + $15}' "/proc/$coordinator/stat"; }
cpu_ns() { awk '{print $1}' "/proc/$coordinator/schedstat"; }

echo "== $jobs x 'sleep 0', $workers workers x $slots slots, $runs runs ($(nproc) CPUs)" >&2
printf '%-4s %10s %12s %18s %18s\n' run seconds jobs/s "cpu us/job (stat)" "cpu us/job (sched)"
results=()
for run in $(seq "$runs"); do
  t0="$(cpu_ticks)"; n0="$(cpu_ns)"
  "$bin/task_submit" --connect "$address" --quiet --summary <"$tmp/jobs" 2>"$tmp/submit.err" ||
    { cat "$tmp/submit.err" >&2; exit 1; }
  t1="$(cpu_ticks)"; n1="$(cpu_ns)"
  # task_submit: N job(s), N ok, 0 not ok, in S s (R jobs/s)
  line="$(grep 'job(s)' "$tmp/submit.err")"
  ok="$(echo "$line" | awk '{print $4}')"
  [ "$ok" = "$jobs" ] || { echo "run $run: $line" >&2; exit 1; }
  seconds="$(echo "$line" | sed -n 's/.* in \([0-9.]*\) s .*/\1/p')"
  row="$(awk -v run="$run" -v s="$seconds" -v n="$jobs" -v dt="$((t1 - t0))" -v hz="$ticks_per_s" \
    -v dn="$((n1 - n0))" 'BEGIN {
      printf "%-4s %10.3f %12.0f %18.2f %18.2f", run, s, n / s, dt / hz * 1e6 / n, dn / 1e3 / n }')"
  echo "$row"
  results+=("$row")
done
echo "median (by jobs/s):"
printf '%s\n' "${results[@]}" | sort -k3 -n | awk -v mid="$(((runs + 1) / 2))" 'NR == mid'
