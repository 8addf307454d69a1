#!/usr/bin/python3
"""Coordination micro-benchmarks for Python asyncio / uvloop.

Reference numbers for Strata's coordination micro-benchmarks (bench/coord_micro.cpp):
the same operations, measured on CPython's stdlib asyncio loop or on uvloop. Each
benchmark below measures exactly what its C++ counterpart measures (same task
structure, same batch sizes, same timed region); the docstrings say what that is.

Usage:
    /usr/bin/python3 bench/python/coord_micro.py [--loop asyncio|uvloop] [--quick] [--json]

Output (text mode), one line per benchmark:
    # python <version> loop=<asyncio|uvloop>
    lock_uncontended <ns_per_op> ns/op
    lock_100_waiters <ns_per_op> ns/op
    queue_put_get_unbounded <ns_per_op> ns/op
    queue_put_get_maxsize1 <ns_per_op> ns/op
    queue_put_get_maxsize64 <ns_per_op> ns/op
    run_in_executor_roundtrip <ns_per_op> ns/op
    call_soon_threadsafe_1thread <ns_per_op> ns/op
    call_soon_threadsafe_4threads <ns_per_op> ns/op

With --json a single JSON object {name: value} is printed instead (the header
information goes into "python" and "loop" keys).

Methodology (as bench/python/core_micro.py):
  * Timings use time.perf_counter_ns() around the timed region and are reported
    as elapsed / number of operations.
  * Each benchmark runs one untimed warm-up repetition, then several timed
    repetitions; the minimum (best) repetition is reported.
  * The cyclic garbage collector is disabled inside repetitions and a collection
    is run between them.
  * Each benchmark runs on a fresh event loop, closed afterwards.
  * The figures include the interpreter's overhead of driving the operations
    from Python; that is inherent to using these APIs from Python.

Works with Debian bookworm's python3 (3.11) and python3-uvloop (0.17).
"""

import argparse
import asyncio
import gc
import json
import sys
import threading
import time

perf_counter_ns = time.perf_counter_ns


# ---------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------

# The per-round sizes are part of the benchmark definitions and match the C++ side:
LOCK_TASKS = 100               # lock_100_waiters: tasks contending for the lock
LOCK_ACQUIRES_PER_TASK = 100   # ... acquire/release pairs per task and round
THREADSAFE_PER_THREAD = 10_000  # call_soon_threadsafe: callbacks posted per thread and round

# Operations (or rounds) per timed repetition, and number of timed repetitions.
FULL_CONFIG = {
    "reps": 7,
    "lock_uncontended_n": 500_000,
    "lock_waiters_rounds": 10,      # × 10,000 handoffs
    "queue_n": 200_000,             # items
    "executor_n": 20_000,           # round trips
    "threadsafe_rounds": 4,         # × threads × 10,000 callbacks
}

QUICK_CONFIG = {
    "reps": 3,
    "lock_uncontended_n": 100_000,
    "lock_waiters_rounds": 2,
    "queue_n": 50_000,
    "executor_n": 3_000,
    "threadsafe_rounds": 1,
}


# ---------------------------------------------------------------------------
# Harness
# ---------------------------------------------------------------------------

def best_ns_per_op(run_once, reps):
    """Run `run_once()` once for warm-up and `reps` more times. `run_once()`
    returns (elapsed_ns, operations) for the part that should be timed; return
    the best (minimum) elapsed / operations, in nanoseconds per operation."""
    gc_was_enabled = gc.isenabled()
    best = None
    try:
        for rep in range(reps + 1):  # rep 0 is the warm-up
            gc.collect()
            gc.disable()
            elapsed, ops = run_once()
            gc.enable()
            per_op = elapsed / ops
            if rep > 0 and (best is None or per_op < best):
                best = per_op
    finally:
        if gc_was_enabled:
            gc.enable()
        else:
            gc.disable()
    return best


def make_loop_factory(name):
    """Return a zero-argument callable creating a new event loop of the kind
    requested on the command line."""
    if name == "uvloop":
        import uvloop  # imported lazily: only needed for --loop uvloop
        return uvloop.new_event_loop
    return asyncio.new_event_loop


def run_on_fresh_loop(new_loop, make_run_once, reps):
    """Make a loop, run best_ns_per_op(make_run_once(loop), reps), close it."""
    loop = new_loop()
    try:
        return best_ns_per_op(make_run_once(loop), reps)
    finally:
        loop.close()


# ---------------------------------------------------------------------------
# 1. lock_uncontended
# ---------------------------------------------------------------------------

def bench_lock_uncontended(new_loop, cfg):
    """`async with lock: pass` in one task: one acquire/release pair that never
    suspends (C++: `{ LockGuard g = co_await lock.acquire(); }`)."""
    n = cfg["lock_uncontended_n"]

    def make(loop):
        async def driver():
            lock = asyncio.Lock()
            t0 = perf_counter_ns()
            for _ in range(n):
                async with lock:
                    pass
            return perf_counter_ns() - t0, n

        return lambda: loop.run_until_complete(driver())

    return run_on_fresh_loop(new_loop, make, cfg["reps"])


# ---------------------------------------------------------------------------
# 2. lock_100_waiters
# ---------------------------------------------------------------------------

def bench_lock_100_waiters(new_loop, cfg):
    """100 tasks each acquire and release the lock 100 times (nothing inside
    the critical section); one operation is one handoff (acquire/release pair).

    Per round, the driver holds the lock while it creates the 100 tasks and
    lets each run up to its first acquire (so all queue behind the driver:
    otherwise the first task would take the lock 100 times uncontended). The
    timed region runs from the driver's release to the end of the last task.
    From then on 99 tasks stay queued: each release hands the lock to the next
    waiter (FIFO) and each re-acquire queues behind the others.
    """
    rounds = cfg["lock_waiters_rounds"]

    def make(loop):
        async def worker(lock, started):
            started[0] += 1
            for _ in range(LOCK_ACQUIRES_PER_TASK):
                async with lock:
                    pass

        async def driver():
            lock = asyncio.Lock()
            create_task = loop.create_task
            elapsed = 0
            for _ in range(rounds):
                await lock.acquire()
                started = [0]
                tasks = [create_task(worker(lock, started)) for _ in range(LOCK_TASKS)]
                while started[0] < LOCK_TASKS:
                    await asyncio.sleep(0)
                t0 = perf_counter_ns()
                lock.release()
                for t in tasks:
                    await t
                elapsed += perf_counter_ns() - t0
            return elapsed, rounds * LOCK_TASKS * LOCK_ACQUIRES_PER_TASK

        return lambda: loop.run_until_complete(driver())

    return run_on_fresh_loop(new_loop, make, cfg["reps"])


# ---------------------------------------------------------------------------
# 3. queue_put_get (unbounded, maxsize 1, maxsize 64)
# ---------------------------------------------------------------------------

def bench_queue_put_get(new_loop, cfg, maxsize):
    """A producer task (the driver) does `await q.put(i)` for n ints, then the
    sentinel -1; a consumer task does `await q.get()` until the sentinel. One
    operation is one item (put + get); the timed region runs from the first
    put to the end of the consumer. Unbounded, the producer never waits; with
    maxsize 1 every item costs two task switches."""
    n = cfg["queue_n"]

    def make(loop):
        async def consumer(q, received):
            while True:
                v = await q.get()
                if v < 0:
                    break
                received[0] += 1

        async def driver():
            q = asyncio.Queue(maxsize)
            received = [0]
            cons = loop.create_task(consumer(q, received))
            put = q.put
            t0 = perf_counter_ns()
            for i in range(n):
                await put(i)
            await put(-1)
            await cons
            elapsed = perf_counter_ns() - t0
            assert received[0] == n
            return elapsed, n

        return lambda: loop.run_until_complete(driver())

    return run_on_fresh_loop(new_loop, make, cfg["reps"])


# ---------------------------------------------------------------------------
# 4. run_in_executor_roundtrip
# ---------------------------------------------------------------------------

def trivial():
    return 1


def bench_run_in_executor_roundtrip(new_loop, cfg):
    """`await loop.run_in_executor(None, trivial)` (the default executor) in
    one task, sequentially: a submit to a worker thread, the worker posting the
    result back with call_soon_threadsafe, the task resuming. The default
    executor and its first thread are made in an untimed warm-up call."""
    n = cfg["executor_n"]

    def make(loop):
        async def driver():
            run = loop.run_in_executor
            await run(None, trivial)  # warm-up
            t0 = perf_counter_ns()
            for _ in range(n):
                await run(None, trivial)
            return perf_counter_ns() - t0, n

        return lambda: loop.run_until_complete(driver())

    loop = new_loop()
    try:
        return best_ns_per_op(make(loop), cfg["reps"])
    finally:
        loop.run_until_complete(loop.shutdown_default_executor())
        loop.close()


# ---------------------------------------------------------------------------
# 5. call_soon_threadsafe_throughput (1 and 4 threads)
# ---------------------------------------------------------------------------

def bench_call_soon_threadsafe(new_loop, cfg, threads):
    """Per round, `threads` threads are started and wait for a go signal
    (untimed); each then posts 10,000 callbacks with loop.call_soon_threadsafe.
    Each callback increments a counter on the loop; the last one stops it. One
    operation is one callback; the timed region runs from the go signal to the
    loop stopping."""
    rounds = cfg["threadsafe_rounds"]
    total = threads * THREADSAFE_PER_THREAD

    def make(loop):
        def run_once():
            count = 0

            def hit():
                nonlocal count
                count += 1
                if count == total:
                    loop.stop()

            elapsed = 0
            for _ in range(rounds):
                count = 0
                go = threading.Event()

                def post():
                    go.wait()
                    cst = loop.call_soon_threadsafe
                    for _ in range(THREADSAFE_PER_THREAD):
                        cst(hit)

                posters = [threading.Thread(target=post) for _ in range(threads)]
                for p in posters:
                    p.start()
                t0 = perf_counter_ns()
                go.set()
                loop.run_forever()
                elapsed += perf_counter_ns() - t0
                for p in posters:
                    p.join()
                assert count == total
            return elapsed, rounds * total

        return run_once

    return run_on_fresh_loop(new_loop, make, cfg["reps"])


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

    results = []  # (name, value, unit) in output order, rounded to 0.1

    def record(name, value, unit):
        results.append((name, round(value, 1), unit))
        if not args.json:
            print(f"{name} {value:.1f} {unit}", flush=True)

    if not args.json:
        print(f"# python {py_version} loop={args.loop}", flush=True)

    record("lock_uncontended", bench_lock_uncontended(new_loop, cfg), "ns/op")
    record("lock_100_waiters", bench_lock_100_waiters(new_loop, cfg), "ns/op")
    for label, maxsize in (("unbounded", 0), ("maxsize1", 1), ("maxsize64", 64)):
        record(f"queue_put_get_{label}", bench_queue_put_get(new_loop, cfg, maxsize), "ns/op")
    record("run_in_executor_roundtrip", bench_run_in_executor_roundtrip(new_loop, cfg), "ns/op")
    record("call_soon_threadsafe_1thread", bench_call_soon_threadsafe(new_loop, cfg, 1), "ns/op")
    record("call_soon_threadsafe_4threads", bench_call_soon_threadsafe(new_loop, cfg, 4), "ns/op")

    if args.json:
        obj = {"python": py_version, "loop": args.loop}
        obj.update({name: value for name, value, _ in results})
        print(json.dumps(obj, indent=2))


if __name__ == "__main__":
    main()
