// Core micro-benchmarks: the per-operation cost of Strata's event-loop primitives.
//
// Each benchmark mirrors one in bench/python/core_micro.py (asyncio / uvloop), so that the
// figures can be quoted as ratios against those peers measured in the same run:
//
//   call_soon_dispatch          loop.call_soon(noop) + the loop dispatching it
//   timer_call_later_cancel_1M  call_later(far future) + cancel(), 1M other timers pending
//     ..._random_older          (Strata only) call_later + cancel a random *older* pending
//                               timer, which the new one replaces: pending count stays 1M
//   create_task_run             loop.create_task(trivial Coro<void>) + running it to completion
//   sleep0_roundtrip            co_await strata::sleep(0s) inside one task
//   await_done_future           co_await of an already-done Future<int> inside one task
//
// Every benchmark reports the counter "ns_per_op": wall-clock nanoseconds per operation over
// the timed region (the Google Benchmark "Time" column is per *iteration*, which for the
// batched benchmarks is a batch of operations), and "cpu_ns_per_op", the same on the thread's
// CPU clock. The timer benchmarks also report the memory
// that one pending timer costs ("bytes_per_timer") and the size of the callback storage
// inside it ("callback_bytes"). bench/README.md explains how to run and quote these.
//
// Run all loop backends: bench_core_micro; one: bench_core_micro --benchmark_filter=/epoll.
// bench/run_core_micro.sh builds, runs this and the Python peers, and prints a table.

#include <benchmark/benchmark.h>
#include <malloc.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "strata/core/coro.hpp"
#include "strata/core/event_loop.hpp"
#include "strata/core/future.hpp"
#include "strata/core/handle.hpp"
#include "strata/core/sleep.hpp"
#include "strata/core/task.hpp"

namespace {

using namespace std::chrono_literals;
using strata::Coro;
using strata::EventLoop;
using strata::LoopKind;
using strata::TimerHandle;
using BenchClock = std::chrono::steady_clock;

// ---- Helpers ---------------------------------------------------------------------------

/// CPU time of the calling thread, in nanoseconds.
double thread_cpu_ns() noexcept {
  timespec ts{};
  ::clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) * 1e9 + static_cast<double>(ts.tv_nsec);
}

/// Times a region and reports it per operation: "ns_per_op" on the wall clock (the figure to
/// quote, as the Python peers measure), and "cpu_ns_per_op" on the thread's CPU clock, which
/// time spent descheduled on a loaded machine does not inflate.
class OpTimer {
 public:
  void start() noexcept {
    cpu0_ = thread_cpu_ns();
    t0_ = BenchClock::now();
  }

  /// Stops the clocks; @p ops operations ran since start().
  void report(benchmark::State& state, double ops) const {
    const double ns = std::chrono::duration<double, std::nano>(BenchClock::now() - t0_).count();
    const double cpu_ns = thread_cpu_ns() - cpu0_;
    state.counters["ns_per_op"] = ops > 0 ? ns / ops : 0.0;
    state.counters["cpu_ns_per_op"] = ops > 0 ? cpu_ns / ops : 0.0;
    state.SetItemsProcessed(static_cast<std::int64_t>(ops));
  }

 private:
  BenchClock::time_point t0_{};
  double cpu0_ = 0;
};

/// The minimum over repetitions: the least noisy estimate of the steady-state cost, and what
/// the Python peers report (best of N repetitions).
double min_of(const std::vector<double>& v) {
  return v.empty() ? 0.0 : *std::min_element(v.begin(), v.end());
}

void noop() {}

/// Bytes in use in the malloc heap, including chunks served by mmap (large vectors).
std::size_t heap_in_use() {
  struct mallinfo2 mi = ::mallinfo2();
  return mi.uordblks + mi.hblkhd;
}

/// Resident set size in bytes (what the Python script measures).
std::size_t rss_bytes() {
  std::ifstream statm("/proc/self/statm");
  std::size_t size = 0, resident = 0;
  statm >> size >> resident;
  return resident * static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
}

// ---- 1. call_soon_dispatch ------------------------------------------------------------

constexpr int kCallSoonBatch = 1000;

struct CallSoonBench {
  EventLoop& loop;
  benchmark::State& state;
  OpTimer timer;
  bool started = false;

  /// As in the Python script: one callback schedules a batch of noops followed by itself;
  /// each benchmark iteration is one batch, and the whole run is a single run_forever().
  void schedule_batch() {
    if (!started) {
      started = true;
      timer.start();
    }
    if (!state.KeepRunning()) {
      timer.report(state, static_cast<double>(state.iterations()) * kCallSoonBatch);
      loop.stop();
      return;
    }
    for (int i = 0; i < kCallSoonBatch; ++i) loop.call_soon(noop);
    loop.call_soon([this] { schedule_batch(); });
  }
};

void BM_call_soon_dispatch(benchmark::State& state, LoopKind kind) {
  auto loop = strata::new_event_loop(kind);
  CallSoonBench bench{*loop, state};
  loop->call_soon([&bench] { bench.schedule_batch(); });
  loop->run_forever();
  loop->close();
}

// ---- 2. timer_call_later_cancel_1M ----------------------------------------------------

constexpr std::size_t kPendingTimers = 1'000'000;
constexpr auto kFarFuture = std::chrono::seconds(3600);  // never fires during the run

/// A loop holding 1M pending far-future timers, shared by the timer benchmarks of one backend
/// and built once (Google Benchmark calls a benchmark function several times).
struct TimerFixture {
  std::unique_ptr<EventLoop> loop;
  std::vector<TimerHandle> handles;  // one per pending timer, for the random-older variant
  std::vector<strata::Duration> delays;  // precomputed "random-ish" far-future delays
  double bytes_per_timer = 0;
  double rss_bytes_per_timer = 0;

  explicit TimerFixture(LoopKind kind) : loop(strata::new_event_loop(kind)) {
    handles.reserve(kPendingTimers);  // not part of the timers' cost
    // As the Python script: delays multiplicatively scrambled modulo a prime, spread over
    // ~1000 s, so new timers land at varied heap positions among the pending ones.
    constexpr std::size_t kPrime = 100'003;
    delays.reserve(kPrime);
    for (std::size_t i = 0; i < kPrime; ++i) {
      delays.push_back(kFarFuture + ((i * 7919) % kPrime) * 10ms);
    }
    ::malloc_trim(0);
    const std::size_t heap_before = heap_in_use();
    const std::size_t rss_before = rss_bytes();
    for (std::size_t i = 0; i < kPendingTimers; ++i) {
      // Deadlines spread over ~1000 s so the heap is not degenerate.
      handles.push_back(loop->call_later(kFarFuture + i * 1ms, noop));
    }
    bytes_per_timer = static_cast<double>(heap_in_use() - heap_before) / kPendingTimers;
    rss_bytes_per_timer = static_cast<double>(rss_bytes() - rss_before) / kPendingTimers;
  }

  ~TimerFixture() {
    handles.clear();
    loop->close();
  }

  void report_memory(benchmark::State& state) const {
    state.counters["bytes_per_timer"] = bytes_per_timer;
    state.counters["rss_bytes_per_timer"] = rss_bytes_per_timer;
    state.counters["callback_bytes"] =
        static_cast<double>(sizeof(strata::detail::UniqueFunction<void()>));
    state.counters["timer_handle_impl_bytes"] =
        static_cast<double>(sizeof(strata::detail::TimerHandleImpl));
    state.counters["bytes_per_timer_excl_callback"] =
        bytes_per_timer - static_cast<double>(sizeof(strata::detail::UniqueFunction<void()>));
  }
};

std::unique_ptr<TimerFixture> g_timer_fixture;  // torn down in main()

TimerFixture& timer_fixture(LoopKind kind) {
  if (!g_timer_fixture || g_timer_fixture->loop->backend_name() != strata::to_string(kind)) {
    g_timer_fixture.reset();
    g_timer_fixture = std::make_unique<TimerFixture>(kind);
  }
  return *g_timer_fixture;
}

/// Runs @p body from a callback of the fixture's loop (timers are made inside a running loop,
/// as in practice and in the Python script).
template <class F>
void run_in_loop(EventLoop& loop, F&& body) {
  loop.call_soon([&] {
    body();
    loop.stop();
  });
  loop.run_forever();
}

void BM_timer_call_later_cancel(benchmark::State& state, LoopKind kind) {
  TimerFixture& fx = timer_fixture(kind);
  EventLoop& loop = *fx.loop;
  run_in_loop(loop, [&] {
    const std::size_t n_delays = fx.delays.size();
    std::size_t i = 0;
    OpTimer timer;
    timer.start();
    for (auto _ : state) {
      loop.call_later(fx.delays[i], noop).cancel();
      if (++i == n_delays) i = 0;
    }
    timer.report(state, static_cast<double>(state.iterations()));
  });
  fx.report_memory(state);
}

void BM_timer_call_later_cancel_random_older(benchmark::State& state, LoopKind kind) {
  TimerFixture& fx = timer_fixture(kind);
  EventLoop& loop = *fx.loop;
  run_in_loop(loop, [&] {
    const std::size_t n_delays = fx.delays.size();
    const std::uint64_t n_handles = fx.handles.size();
    std::size_t i = 0;
    std::uint64_t x = 0x9E3779B97F4A7C15ull;  // xorshift64 state
    OpTimer timer;
    timer.start();
    for (auto _ : state) {
      TimerHandle fresh = loop.call_later(fx.delays[i], noop);
      if (++i == n_delays) i = 0;
      x ^= x << 13;
      x ^= x >> 7;
      x ^= x << 17;
      // Uniform index in [0, n) without a division.
      auto k = static_cast<std::size_t>((static_cast<unsigned __int128>(x) * n_handles) >> 64);
      fx.handles[k].cancel();
      fx.handles[k] = std::move(fresh);  // frees the cancelled timer
    }
    timer.report(state, static_cast<double>(state.iterations()));
  });
  fx.report_memory(state);
}

// ---- 3. create_task_run ----------------------------------------------------------------

constexpr int kTaskBatch = 1000;

Coro<void> trivial_coro() { co_return; }

/// As the Python script: create a batch of tasks, await the last one (tasks start in FIFO
/// order, so the whole batch is done then); one benchmark iteration is one batch.
Coro<void> create_task_driver(EventLoop& loop, benchmark::State& state) {
  OpTimer timer;
  timer.start();
  for (auto _ : state) {
    strata::Task<void> last;
    for (int i = 0; i < kTaskBatch; ++i) last = loop.create_task(trivial_coro());
    co_await last;
  }
  timer.report(state, static_cast<double>(state.iterations()) * kTaskBatch);
}

void BM_create_task_run(benchmark::State& state, LoopKind kind) {
  auto loop = strata::new_event_loop(kind);
  loop->run_until_complete(create_task_driver(*loop, state));
  loop->close();
}

// ---- 4. sleep0_roundtrip ---------------------------------------------------------------

Coro<void> sleep0_driver(benchmark::State& state) {
  OpTimer timer;
  timer.start();
  for (auto _ : state) {
    co_await strata::sleep(0s);
  }
  timer.report(state, static_cast<double>(state.iterations()));
}

void BM_sleep0_roundtrip(benchmark::State& state, LoopKind kind) {
  auto loop = strata::new_event_loop(kind);
  loop->run_until_complete(sleep0_driver(state));
  loop->close();
}

// ---- 5. await_done_future --------------------------------------------------------------

Coro<void> await_done_driver(EventLoop& loop, benchmark::State& state) {
  strata::Future<int> fut = loop.create_future<int>();
  fut.set_result(42);
  OpTimer timer;
  timer.start();
  for (auto _ : state) {
    int v = co_await fut;
    benchmark::DoNotOptimize(v);
  }
  timer.report(state, static_cast<double>(state.iterations()));
}

void BM_await_done_future(benchmark::State& state, LoopKind kind) {
  auto loop = strata::new_event_loop(kind);
  loop->run_until_complete(await_done_driver(*loop, state));
  loop->close();
}

// ---- Registration ----------------------------------------------------------------------

void configure(benchmark::internal::Benchmark* b) {
  b->UseRealTime()->ComputeStatistics("min", min_of)->Unit(benchmark::kNanosecond);
}

void register_all() {
  const std::vector<LoopKind>& kinds = strata::available_loop_kinds();
  auto each_kind = [&](const char* name, void (*fn)(benchmark::State&, LoopKind)) {
    for (LoopKind kind : kinds) {
      std::string full(name);
      full.append("/").append(strata::to_string(kind));
      configure(benchmark::RegisterBenchmark(full.c_str(), fn, kind));
    }
  };
  // Same order as the Python script.
  each_kind("call_soon_dispatch", BM_call_soon_dispatch);
  // The timer queue is shared by every backend and the pairs never wait for I/O: the timer
  // benchmarks run on the default backend only (each 1M-timer fixture costs ~150 MB).
  const LoopKind timer_kind = kinds.front();
  std::string suffix("/");
  suffix.append(strata::to_string(timer_kind));
  configure(benchmark::RegisterBenchmark(("timer_call_later_cancel_1M" + suffix).c_str(),
                                         BM_timer_call_later_cancel, timer_kind));
  configure(
      benchmark::RegisterBenchmark(("timer_call_later_cancel_1M_random_older" + suffix).c_str(),
                                   BM_timer_call_later_cancel_random_older, timer_kind));
  each_kind("create_task_run", BM_create_task_run);
  each_kind("sleep0_roundtrip", BM_sleep0_roundtrip);
  each_kind("await_done_future", BM_await_done_future);
}

}  // namespace

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::AddCustomContext("strata_callback_bytes",
                              std::to_string(sizeof(strata::detail::UniqueFunction<void()>)));
  benchmark::AddCustomContext("strata_timer_handle_impl_bytes",
                              std::to_string(sizeof(strata::detail::TimerHandleImpl)));
  register_all();
  benchmark::RunSpecifiedBenchmarks();
  g_timer_fixture.reset();
  benchmark::Shutdown();
  return 0;
}
