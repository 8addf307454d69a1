#!/usr/bin/python3
"""Event-loop core micro-benchmarks for Python asyncio / uvloop.

Reference numbers for Strata's own core micro-benchmarks: the same five
operations, measured on CPython's stdlib asyncio loop or on uvloop.

Usage:
    /usr/bin/python3 bench/python/core_micro.py [--loop asyncio|uvloop] [--quick] [--json]

Output (text mode), one line per benchmark:
    # python <version> loop=<asyncio|uvloop>
    call_soon_dispatch <ns_per_op> ns/op
    timer_call_later_cancel_1M <ns_per_op> ns/op
    timer_memory_per_pending <bytes> bytes
    create_task_run <ns_per_op> ns/op
    sleep0_roundtrip <ns_per_op> ns/op
    await_done_future <ns_per_op> ns/op

With --json a single JSON object {name: value} is printed instead (the
header information goes into "python" and "loop" keys).

Methodology:
  * Every timing is taken with time.perf_counter_ns() around a batch of N
    operations and reported as elapsed / N.
  * Each benchmark first runs one untimed warm-up repetition, then several
    timed repetitions; the minimum (best) repetition is reported, which is
    the least noisy estimate of the steady-state cost.
  * The cyclic garbage collector is disabled inside timed regions (as
    `timeit` does) and a collection is run between repetitions, so that a
    full GC pass over a million objects does not land at a random spot in
    one repetition.
  * Each benchmark runs on a fresh event loop, which is closed afterwards.
  * The numbers include the CPython interpreter overhead of the driving
    Python loop (a `for` iteration is roughly 10-20 ns); that is inherent
    to using these APIs from Python and is deliberately not subtracted.
"""

import argparse
import asyncio
import gc
import json
import os
import sys
import time

perf_counter_ns = time.perf_counter_ns


# ---------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------

# Operations per timed repetition, and number of timed repetitions.
# The warm-up repetition uses the same N.
FULL_CONFIG = {
    "reps": 7,
    "call_soon_n": 1_000_000,
    "timer_pending": 1_000_000,
    "timer_pairs": 200_000,
    "task_n": 200_000,
    "sleep0_n": 500_000,
    "await_done_n": 2_000_000,
}

QUICK_CONFIG = {
    "reps": 3,
    "call_soon_n": 200_000,
    "timer_pending": 1_000_000,  # the "1M" is part of the benchmark definition
    "timer_pairs": 50_000,
    "task_n": 50_000,
    "sleep0_n": 100_000,
    "await_done_n": 500_000,
}

# Far-future delay (seconds) for the pending timers: they must never fire
# while the benchmark runs.
FAR_FUTURE = 3600.0


def noop():
    """Trivial callback used by all scheduling benchmarks."""


# ---------------------------------------------------------------------------
# Harness
# ---------------------------------------------------------------------------

def best_ns_per_op(run_once, n, reps):
    """Run `run_once(n)` once for warm-up and `reps` more times; return the
    best (minimum) elapsed time divided by n, in nanoseconds per operation.

    `run_once(n)` performs n operations and returns the elapsed time in ns
    measured around exactly the part that should be timed.
    """
    gc_was_enabled = gc.isenabled()
    best = None
    try:
        for rep in range(reps + 1):  # rep 0 is the warm-up
            gc.collect()
            gc.disable()
            elapsed = run_once(n)
            gc.enable()
            if rep > 0 and (best is None or elapsed < best):
                best = elapsed
    finally:
        if gc_was_enabled:
            gc.enable()
        else:
            gc.disable()
    return best / n


def rss_bytes():
    """Resident set size of this process in bytes (Linux /proc/self/statm,
    second field, in pages)."""
    with open("/proc/self/statm") as f:
        resident_pages = int(f.read().split()[1])
    return resident_pages * os.sysconf("SC_PAGE_SIZE")


def make_loop_factory(name):
    """Return a zero-argument callable creating a new event loop of the kind
    requested on the command line."""
    if name == "uvloop":
        import uvloop  # imported lazily: only needed for --loop uvloop
        return uvloop.new_event_loop
    return asyncio.new_event_loop


# ---------------------------------------------------------------------------
# 1. call_soon_dispatch
# ---------------------------------------------------------------------------

def bench_call_soon_dispatch(new_loop, cfg):
    """loop.call_soon(noop) plus the dispatch of that callback by the loop.

    A "batch" callback schedules BATCH trivial callbacks followed by itself;
    when it has run n / BATCH times it stops the loop. The timed region is a
    single run_forever() call, so it covers scheduling and dispatching all n
    callbacks (plus n / BATCH batch callbacks, negligible).
    """
    BATCH = 1000
    loop = new_loop()

    def run_once(n):
        call_soon = loop.call_soon
        batches_left = n // BATCH

        def schedule_batch():
            nonlocal batches_left
            if batches_left == 0:
                loop.stop()
                return
            batches_left -= 1
            for _ in range(BATCH):
                call_soon(noop)
            call_soon(schedule_batch)  # runs after the batch just queued

        call_soon(schedule_batch)
        t0 = perf_counter_ns()
        loop.run_forever()
        return perf_counter_ns() - t0

    try:
        n = cfg["call_soon_n"] // BATCH * BATCH
        return best_ns_per_op(run_once, n, cfg["reps"])
    finally:
        loop.close()


# ---------------------------------------------------------------------------
# 2. timer_call_later_cancel_1M (+ timer_memory_per_pending)
# ---------------------------------------------------------------------------

def bench_timers(new_loop, cfg):
    """call_later(far-future delay) + handle.cancel() pairs while a large
    number (1M) of other timers is pending.

    Returns (ns_per_pair, bytes_per_pending_timer).

    Memory is the growth of the process RSS (from /proc/self/statm) while
    the pending timers are created, divided by their number. This covers
    everything a pending timer costs: the Python handle objects, the
    loop's bookkeeping (asyncio's heap list, the per-handle context copy),
    uvloop's libuv uv_timer_t allocations and allocator overhead. Hundreds
    of MB are allocated, so memory left free by earlier benchmarks is
    negligible. (tracemalloc gives similar figures, within a few percent,
    but makes creating the timers 3-5x slower.)

    Notes on the pairs:
      * Delays are precomputed "random-ish" far-future values so that new
        timers land at varying heap positions among the pending ones.
      * asyncio cancels lazily (the handle stays in the heap, flagged, and
        is purged by the loop later); uvloop/libuv removes it from its heap
        at cancel time. Between repetitions the loop is run for one
        iteration (untimed) so it can do its usual housekeeping.
      * The pairs are timed inside a running loop (from a callback), which
        is how they are used in practice.
    """
    loop = new_loop()
    n_pending = cfg["timer_pending"]
    call_later = loop.call_later

    # --- Create the pending timers, measuring memory. ---
    gc.collect()
    rss_before = rss_bytes()
    for i in range(n_pending):
        # Spread deadlines over ~1000 s so the timer heap is not degenerate.
        call_later(FAR_FUTURE + i * 1e-3, noop)
    bytes_per_timer = (rss_bytes() - rss_before) / n_pending

    # Move the million long-lived objects out of the GC's way so the
    # gc.collect() between repetitions stays cheap.
    gc.collect()
    gc.freeze()

    # Precomputed pseudo-random delays in [FAR_FUTURE, FAR_FUTURE + 1000):
    # a multiplicative scramble of i modulo a prime.
    n_pairs = cfg["timer_pairs"]
    delays = [FAR_FUTURE + ((i * 7919) % 100_003) * 1e-2 for i in range(n_pairs)]

    def run_once(n):
        assert n == len(delays)
        result = []

        def timed_pairs():
            t0 = perf_counter_ns()
            for d in delays:
                call_later(d, noop).cancel()
            result.append(perf_counter_ns() - t0)
            loop.stop()

        loop.call_soon(timed_pairs)
        loop.run_forever()
        # One more (untimed) loop iteration for housekeeping, see docstring.
        loop.call_soon(loop.stop)
        loop.run_forever()
        return result[0]

    try:
        ns_per_pair = best_ns_per_op(run_once, n_pairs, cfg["reps"])
    finally:
        loop.close()  # drops all pending timers
        gc.unfreeze()
        gc.collect()
    return ns_per_pair, bytes_per_timer


# ---------------------------------------------------------------------------
# 3. create_task_run
# ---------------------------------------------------------------------------

async def trivial_coro():
    """Coroutine that completes on its first step."""


def bench_create_task_run(new_loop, cfg):
    """loop.create_task(trivial_coro()) and running the task to completion.

    A driver coroutine creates the tasks in batches of BATCH and awaits the
    last task of each batch; tasks run in FIFO order, so when the last one is
    done the whole batch is done. Timed: everything from the first
    create_task to the completion of the last task, divided by n.
    """
    BATCH = 1000
    loop = new_loop()

    async def driver(n):
        create_task = loop.create_task
        t0 = perf_counter_ns()
        for _ in range(n // BATCH):
            for _ in range(BATCH):
                last = create_task(trivial_coro())
            await last
        return perf_counter_ns() - t0

    def run_once(n):
        return loop.run_until_complete(driver(n))

    try:
        n = cfg["task_n"] // BATCH * BATCH
        return best_ns_per_op(run_once, n, cfg["reps"])
    finally:
        loop.close()


# ---------------------------------------------------------------------------
# 4. sleep0_roundtrip
# ---------------------------------------------------------------------------

def bench_sleep0_roundtrip(new_loop, cfg):
    """`await asyncio.sleep(0)` in a loop inside one task: one suspension,
    one trip through the loop's ready queue and one resumption per await."""
    loop = new_loop()

    async def driver(n):
        sleep = asyncio.sleep
        t0 = perf_counter_ns()
        for _ in range(n):
            await sleep(0)
        return perf_counter_ns() - t0

    def run_once(n):
        return loop.run_until_complete(driver(n))

    try:
        return best_ns_per_op(run_once, cfg["sleep0_n"], cfg["reps"])
    finally:
        loop.close()


# ---------------------------------------------------------------------------
# 5. await_done_future
# ---------------------------------------------------------------------------

def bench_await_done_future(new_loop, cfg):
    """`await fut` on an already-completed Future inside one task (the fast
    path: no suspension, the result is returned immediately)."""
    loop = new_loop()

    async def driver(n):
        fut = loop.create_future()
        fut.set_result(None)
        t0 = perf_counter_ns()
        for _ in range(n):
            await fut
        return perf_counter_ns() - t0

    def run_once(n):
        return loop.run_until_complete(driver(n))

    try:
        return best_ns_per_op(run_once, cfg["await_done_n"], cfg["reps"])
    finally:
        loop.close()


# ---------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------

def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--loop", choices=("asyncio", "uvloop"), default="asyncio",
                        help="event loop implementation (default: asyncio)")
    parser.add_argument("--quick", action="store_true",
                        help="fewer/smaller repetitions (a few seconds in total)")
    parser.add_argument("--json", action="store_true",
                        help="print one JSON object {name: value} instead of text lines")
    args = parser.parse_args()

    cfg = QUICK_CONFIG if args.quick else FULL_CONFIG
    new_loop = make_loop_factory(args.loop)
    py_version = sys.version.split()[0]

    # (name, value, unit) in output order. Values are rounded to 0.1.
    results = []

    def record(name, value, unit):
        results.append((name, round(value, 1), unit))
        if not args.json:
            print(f"{name} {value:.1f} {unit}", flush=True)

    if not args.json:
        print(f"# python {py_version} loop={args.loop}", flush=True)

    record("call_soon_dispatch", bench_call_soon_dispatch(new_loop, cfg), "ns/op")
    ns_pair, bytes_timer = bench_timers(new_loop, cfg)
    record("timer_call_later_cancel_1M", ns_pair, "ns/op")
    record("timer_memory_per_pending", bytes_timer, "bytes")
    record("create_task_run", bench_create_task_run(new_loop, cfg), "ns/op")
    record("sleep0_roundtrip", bench_sleep0_roundtrip(new_loop, cfg), "ns/op")
    record("await_done_future", bench_await_done_future(new_loop, cfg), "ns/op")

    if args.json:
        obj = {"python": py_version, "loop": args.loop}
        obj.update({name: value for name, value, _ in results})
        print(json.dumps(obj, indent=2))


if __name__ == "__main__":
    main()
