// Coordination micro-benchmarks: what Strata's task-coordination primitives and its bridges
// to other threads cost per operation.
//
// Each benchmark mirrors one in bench/python/coord_micro.py (asyncio / uvloop) and measures
// exactly the same thing, so that the figures can be quoted as ratios against those peers:
//
//   lock_uncontended              `{ LockGuard g = co_await lock.acquire(); }` in one task
//                                 (Python: `async with lock: pass`): one acquire/release pair,
//                                 never suspending
//   lock_100_waiters              100 tasks each acquire and release the lock 100 times, with
//                                 nothing in the critical section; the other 99 are queued on
//                                 the lock all along, so every release hands the lock to the
//                                 next waiter (FIFO) and every re-acquire queues: one operation
//                                 is one handoff (an acquire/release pair)
//   queue_put_get_unbounded       a producer task puts ints into a Queue<int>, a consumer task
//   queue_put_get_maxsize1        gets them; one operation is one item (put + get). Unbounded,
//   queue_put_get_maxsize64       the producer never waits; with maxsize 1 every item costs two
//                                 task switches; with 64, the tasks switch once per ~64 items
//   run_in_executor_roundtrip     `co_await loop.run_in_executor(nullptr, trivial)` (the default
//                                 executor) in one task, sequentially: submit to a worker thread,
//                                 the worker's call_soon_threadsafe back, the task resuming
//   call_soon_threadsafe_1thread  K other threads (1 or 4) each post 10,000 callbacks with
//   call_soon_threadsafe_4threads call_soon_threadsafe(); each increments a counter on the loop,
//                                 and the last one stops it. One operation is one callback
//                                 (wall time from releasing the threads to the loop stopping,
//                                 divided by K × 10,000)
//
// Every benchmark reports the counter "ns_per_op": wall-clock nanoseconds per operation over
// the timed region (Google Benchmark's "Time" column is per *iteration*, which for most of
// these is a batch of operations), and "cpu_ns_per_op", the same on the loop thread's CPU
// clock (for the executor and threadsafe benchmarks it leaves out the other threads' CPU).
// Untimed per-round setup (creating the 100 lock tasks, starting the posting threads) is kept
// out of the timed region, as in the Python script.
//
// Run all loop backends: bench_coord_micro; one: bench_coord_micro --benchmark_filter=/epoll.
// bench/run_coord_micro.sh builds, runs this and the Python peers, and prints a table.
//
// g++ 12: lambda temporaries with non-trivial captures (and braced init lists) inside a
// co_await expression miscompile; every awaited expression below is a plain call or a local.

#include <benchmark/benchmark.h>
#include <time.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "strata/core/coro.hpp"
#include "strata/core/event_loop.hpp"
#include "strata/core/executor.hpp"
#include "strata/core/future.hpp"
#include "strata/core/lock.hpp"
#include "strata/core/queue.hpp"
#include "strata/core/sleep.hpp"
#include "strata/core/task.hpp"

namespace {

using namespace std::chrono_literals;
using strata::Coro;
using strata::EventLoop;
using strata::LoopKind;
using BenchClock = std::chrono::steady_clock;

// ---- Helpers ---------------------------------------------------------------------------

/// CPU time of the calling thread, in nanoseconds.
double thread_cpu_ns() noexcept {
  timespec ts{};
  ::clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) * 1e9 + static_cast<double>(ts.tv_nsec);
}

/// Accumulates the time spent between resume() and pause() calls, on the wall clock and on
/// the thread's CPU clock, and reports it per operation: "ns_per_op" (the figure to quote, as
/// the Python peers measure it) and "cpu_ns_per_op" (not inflated by time spent descheduled).
class OpTimer {
 public:
  void resume() noexcept {
    cpu0_ = thread_cpu_ns();
    t0_ = BenchClock::now();
  }

  void pause() noexcept {
    wall_ns_ += std::chrono::duration<double, std::nano>(BenchClock::now() - t0_).count();
    cpu_ns_ += thread_cpu_ns() - cpu0_;
  }

  /// @p ops operations ran in the timed regions.
  void report(benchmark::State& state, double ops) const {
    state.counters["ns_per_op"] = ops > 0 ? wall_ns_ / ops : 0.0;
    state.counters["cpu_ns_per_op"] = ops > 0 ? cpu_ns_ / ops : 0.0;
    state.SetItemsProcessed(static_cast<std::int64_t>(ops));
  }

 private:
  BenchClock::time_point t0_{};
  double cpu0_ = 0;
  double wall_ns_ = 0;
  double cpu_ns_ = 0;
};

/// The minimum over repetitions: the least noisy estimate of the steady-state cost, and what
/// the Python peers report (best of N repetitions).
double min_of(const std::vector<double>& v) {
  return v.empty() ? 0.0 : *std::min_element(v.begin(), v.end());
}

// ---- 1. lock_uncontended ---------------------------------------------------------------

Coro<void> lock_uncontended_driver(benchmark::State& state) {
  strata::Lock lock;
  OpTimer timer;
  timer.resume();
  for (auto _ : state) {
    strata::LockGuard guard = co_await lock.acquire();  // never suspends: nobody else wants it
  }
  timer.pause();
  timer.report(state, static_cast<double>(state.iterations()));
}

void BM_lock_uncontended(benchmark::State& state, LoopKind kind) {
  auto loop = strata::new_event_loop(kind);
  loop->run_until_complete(lock_uncontended_driver(state));
  loop->close();
}

// ---- 2. lock_100_waiters ---------------------------------------------------------------

constexpr int kLockTasks = 100;
constexpr int kLockAcquiresPerTask = 100;  // one round: 100 × 100 = 10,000 handoffs

Coro<void> lock_worker(strata::Lock& lock, int& started) {
  ++started;
  for (int i = 0; i < kLockAcquiresPerTask; ++i) {
    strata::LockGuard guard = co_await lock.acquire();
  }
}

/// One benchmark iteration is one round. The driver holds the lock while it starts the 100
/// tasks and lets each of them run up to its first acquire (all queue behind the driver); the
/// timed region runs from the driver's release to the end of the last task. Without the driver
/// holding the lock first, the first task would take it 100 times uncontended.
Coro<void> lock_waiters_driver(EventLoop& loop, benchmark::State& state) {
  strata::Lock lock;
  OpTimer timer;
  std::vector<strata::Task<void>> tasks;
  tasks.reserve(kLockTasks);
  for (auto _ : state) {
    strata::LockGuard guard = co_await lock.acquire();
    int started = 0;
    tasks.clear();
    for (int i = 0; i < kLockTasks; ++i) tasks.push_back(loop.create_task(lock_worker(lock, started)));
    while (started < kLockTasks) co_await strata::sleep(0s);
    timer.resume();
    guard.unlock();
    for (auto& t : tasks) co_await t;
    timer.pause();
  }
  timer.report(state, static_cast<double>(state.iterations()) * kLockTasks * kLockAcquiresPerTask);
}

void BM_lock_100_waiters(benchmark::State& state, LoopKind kind) {
  auto loop = strata::new_event_loop(kind);
  loop->run_until_complete(lock_waiters_driver(*loop, state));
  loop->close();
}

// ---- 3. queue_put_get ------------------------------------------------------------------

constexpr int kQueueBatch = 1000;

/// Gets items until the sentinel -1; counts them.
Coro<void> queue_consumer(strata::Queue<int>& q, std::int64_t& received) {
  for (;;) {
    int v = co_await q.get();  // (not in a loop condition: g++ 12 miscompiles that)
    if (v < 0) break;
    ++received;
  }
}

/// The driver task is the producer: one benchmark iteration puts a batch of 1000 items, then
/// the sentinel goes in and the timed region ends when the consumer has taken everything.
Coro<void> queue_driver(EventLoop& loop, benchmark::State& state, std::size_t maxsize) {
  strata::Queue<int> q(maxsize);
  std::int64_t received = 0;
  strata::Task<void> consumer = loop.create_task(queue_consumer(q, received));
  OpTimer timer;
  timer.resume();
  for (auto _ : state) {
    for (int i = 0; i < kQueueBatch; ++i) co_await q.put(i);
  }
  co_await q.put(-1);
  co_await consumer;
  timer.pause();
  const double items = static_cast<double>(state.iterations()) * kQueueBatch;
  if (static_cast<double>(received) != items) state.SkipWithError("the consumer lost items");
  timer.report(state, items);
}

void BM_queue_put_get(benchmark::State& state, LoopKind kind, std::size_t maxsize) {
  auto loop = strata::new_event_loop(kind);
  loop->run_until_complete(queue_driver(*loop, state, maxsize));
  loop->close();
}

// ---- 4. run_in_executor_roundtrip ------------------------------------------------------

int trivial() { return 1; }

Coro<void> executor_driver(EventLoop& loop, benchmark::State& state) {
  {
    // Untimed warm-up: the default executor and its first worker thread are made lazily.
    strata::Future<int> warm = loop.run_in_executor(nullptr, &trivial);
    co_await warm;
  }
  OpTimer timer;
  timer.resume();
  for (auto _ : state) {
    strata::Future<int> f = loop.run_in_executor(nullptr, &trivial);
    int v = co_await f;
    benchmark::DoNotOptimize(v);
  }
  timer.pause();
  timer.report(state, static_cast<double>(state.iterations()));
}

void BM_run_in_executor_roundtrip(benchmark::State& state, LoopKind kind) {
  auto loop = strata::new_event_loop(kind);
  loop->run_until_complete(executor_driver(*loop, state));
  loop->close();
}

// ---- 5. call_soon_threadsafe_throughput ------------------------------------------------

constexpr int kThreadsafePerThread = 10'000;

struct ThreadsafeRound {
  EventLoop* loop;
  std::int64_t count = 0;  // touched by the callbacks, on the loop thread only
  std::int64_t total = 0;

  void hit() {
    if (++count == total) loop->stop();
  }
};

/// One benchmark iteration is one round: @p threads threads are started and wait for a go
/// signal (untimed); the timed region runs from the signal to the loop stopping after the
/// last of the threads × 10,000 callbacks.
void BM_call_soon_threadsafe(benchmark::State& state, LoopKind kind, int threads) {
  auto loop = strata::new_event_loop(kind);
  ThreadsafeRound round{loop.get()};
  round.total = static_cast<std::int64_t>(threads) * kThreadsafePerThread;
  OpTimer timer;
  for (auto _ : state) {
    round.count = 0;
    std::atomic<bool> go{false};
    std::vector<std::thread> posters;
    posters.reserve(static_cast<std::size_t>(threads));
    for (int t = 0; t < threads; ++t) {
      posters.emplace_back([&go, &round, &loop] {
        go.wait(false);
        ThreadsafeRound* r = &round;
        auto cb = [r] { r->hit(); };
        for (int i = 0; i < kThreadsafePerThread; ++i) loop->call_soon_threadsafe(cb);
      });
    }
    timer.resume();
    go.store(true);
    go.notify_all();
    loop->run_forever();
    timer.pause();
    for (auto& p : posters) p.join();
    if (round.count != round.total) state.SkipWithError("callbacks were lost");
  }
  timer.report(state, static_cast<double>(state.iterations()) * static_cast<double>(round.total));
  loop->close();
}

// ---- Registration ----------------------------------------------------------------------

void configure(benchmark::internal::Benchmark* b) {
  b->UseRealTime()->ComputeStatistics("min", min_of)->Unit(benchmark::kNanosecond);
}

void register_all() {
  const std::vector<LoopKind>& kinds = strata::available_loop_kinds();
  auto each_kind = [&](const std::string& name, auto fn, auto... args) {
    for (LoopKind kind : kinds) {
      const std::string full = name + "/" + std::string(strata::to_string(kind));
      configure(benchmark::RegisterBenchmark(full.c_str(), fn, kind, args...));
    }
  };
  // Same order as the Python script.
  each_kind("lock_uncontended", BM_lock_uncontended);
  each_kind("lock_100_waiters", BM_lock_100_waiters);
  each_kind("queue_put_get_unbounded", BM_queue_put_get, std::size_t{0});
  each_kind("queue_put_get_maxsize1", BM_queue_put_get, std::size_t{1});
  each_kind("queue_put_get_maxsize64", BM_queue_put_get, std::size_t{64});
  each_kind("run_in_executor_roundtrip", BM_run_in_executor_roundtrip);
  each_kind("call_soon_threadsafe_1thread", BM_call_soon_threadsafe, 1);
  each_kind("call_soon_threadsafe_4threads", BM_call_soon_threadsafe, 4);
}

}  // namespace

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  register_all();
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
