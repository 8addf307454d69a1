#!/usr/bin/env bash
# Builds the libFuzzer targets (fuzz/) with clang and runs each for a while.
#   scripts/fuzz.sh [SECONDS] [TARGET...]   SECONDS per target (default 60); default every target
#   STRATA_FUZZ_SEED=N   libFuzzer's -seed: the same N explores the same inputs first (CI sets
#                        it, so that a landing does not hinge on what a random seed finds)
# Targets: http_server http_parser http_chunked stream_reader static_path chat_line tls_records (see
# fuzz/README.md).
#
# Build directory build/fuzz: the whole library with -fsanitize=address,undefined,fuzzer-no-link,
# the targets with -fsanitize=fuzzer,address,undefined. For each target, first the inputs of
# fuzz/regressions/<target>/ are replayed (a crash found earlier must stay fixed), then the
# fuzzer runs on a copy of fuzz/corpus/<target>/ in build/fuzz/corpus-run/<target> (the repo is
# never written to), two targets at a time. Any crash, leak, timeout (-timeout=10) or
# out-of-memory (-rss_limit_mb=2048) fails the run (exit 1), with the input saved under
# build/fuzz/artifacts/<target>/ and the command that reproduces it.
set -euo pipefail
cd "$(dirname "$0")/.."

all_targets=(http_server http_parser http_chunked stream_reader static_path chat_line tls_records)
seconds=60
if [ $# -gt 0 ] && [[ $1 =~ ^[0-9]+$ ]]; then
  seconds=$1
  shift
fi
targets=("$@")
[ ${#targets[@]} -eq 0 ] && targets=("${all_targets[@]}")
for t in "${targets[@]}"; do
  if [[ ! " ${all_targets[*]} " =~ " $t " ]]; then
    echo "usage: scripts/fuzz.sh [SECONDS] [TARGET...]; targets: ${all_targets[*]}" >&2
    exit 2
  fi
done

# The longest input worth trying, per target: a few pipelined requests; a few heads (each
# parsed three ways); a chunked body past its 1 KiB limit; a long script; a long path; some dozens of chat lines; a script of records
# (each command is a few bytes; the big writes come from one byte).
declare -A max_len=([http_server]=4096 [http_parser]=1024 [http_chunked]=2048 [stream_reader]=1024 [static_path]=512
  [chat_line]=2048 [tls_records]=1024)

scripts/deps.sh fuzz
build=build/fuzz
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ \
  -DSTRATA_SANITIZE=address,undefined,fuzzer-no-link -DSTRATA_BUILD_FUZZ=ON \
  -DSTRATA_BUILD_TESTS=OFF -DSTRATA_BUILD_BENCH=OFF -DSTRATA_BUILD_EXAMPLES=OFF >/dev/null
cmake --build "$build" --target "${targets[@]/#/fuzz_}"

# UBSan reports are errors; ASan's leak check runs at exit.
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1${UBSAN_OPTIONS:+:$UBSAN_OPTIONS}"
export ASAN_OPTIONS="detect_leaks=1${ASAN_OPTIONS:+:$ASAN_OPTIONS}"

mkdir -p "$build/logs"

# Runs one target; its summary goes to $build/logs/<target>.summary, its status is the result.
fuzz_one() {
  local t=$1
  local bin="$build/fuzz/fuzz_$t"
  local run="$build/corpus-run/$t"
  local artifacts="$build/artifacts/$t"
  local log="$build/logs/$t.log"
  local summary="$build/logs/$t.summary"
  rm -rf "$run" "$artifacts"
  mkdir -p "$run" "$artifacts"
  : >"$summary"

  # 1. The crashes found before.
  local regressions=()
  if [ -d "fuzz/regressions/$t" ]; then
    mapfile -t regressions < <(find "fuzz/regressions/$t" -type f ! -name '*.md' | sort)
  fi
  local failed=0
  for input in "${regressions[@]}"; do
    if ! "$bin" -timeout=10 -rss_limit_mb=2048 -artifact_prefix="$artifacts/" "$input" \
        >"$log.replay" 2>&1; then
      {
        echo "$t: FAILED: regression input $input still crashes"
        grep -m1 -E "fuzz invariant broken|ERROR: (AddressSanitizer|libFuzzer|LeakSanitizer)|runtime error" "$log.replay" || true
        echo "  reproduce: $bin $input"
      } >>"$summary"
      failed=1
    fi
  done
  if [ $failed -ne 0 ]; then
    echo "  (not fuzzed: it would find the same crash; fix it first)" >>"$summary"
    return 1
  fi

  # 2. Fuzzing, on a copy of the seed corpus (libFuzzer adds what it finds to the first
  # directory it is given).
  cp "fuzz/corpus/$t"/* "$run"/
  local dict=()
  [ -f "fuzz/$t.dict" ] && dict=("-dict=fuzz/$t.dict")
  [ -n "${STRATA_FUZZ_SEED:-}" ] && dict+=("-seed=$STRATA_FUZZ_SEED")
  local status=0
  "$bin" "$run" "${dict[@]}" -max_total_time="$seconds" -max_len="${max_len[$t]}" -timeout=10 \
    -rss_limit_mb=2048 -artifact_prefix="$artifacts/" -print_final_stats=1 >"$log" 2>&1 || status=$?
  local last stats
  last=$(grep -E '^#[0-9]+' "$log" | tail -n 1 || true)
  stats=$(grep -E '^stat::(number_of_executed_units|average_exec_per_sec|peak_rss_mb)' "$log" |
          sed -E 's/^stat::([a-z_]+): */\1=/' | tr '\n' ' ' || true)
  if [ $status -eq 0 ]; then
    echo "$t: ok: ${last#*	}; ${stats% }" >>"$summary"
    return 0
  fi
  local crash
  crash=$(find "$artifacts" -type f | head -n 1)
  {
    echo "$t: FAILED (libFuzzer exit status $status) after ${last%%	*}"
    grep -m1 -E "fuzz invariant broken|ERROR: (AddressSanitizer|libFuzzer|LeakSanitizer)|runtime error" "$log" || true
    if [ -n "$crash" ]; then
      echo "  input:     $crash"
      echo "  reproduce: $bin $crash"
      echo "  keep it:   cp $crash fuzz/regressions/$t/<what-it-shows>"
    fi
    echo "  log:       $log"
  } >>"$summary"
  return 1
}

# Two targets at a time (the machines this runs on have two cores or more).
echo "Fuzzing ${targets[*]} for ${seconds}s each (logs in $build/logs)..."
pids=()
names=()
result=0
for t in "${targets[@]}"; do
  if [ ${#pids[@]} -ge 2 ]; then
    wait "${pids[0]}" || result=1
    pids=("${pids[@]:1}")
  fi
  fuzz_one "$t" &
  pids+=($!)
  names+=("$t")
done
for pid in "${pids[@]}"; do
  wait "$pid" || result=1
done
for t in "${names[@]}"; do
  cat "$build/logs/$t.summary"
done
exit $result
