#include <strata/core/thread_pool_executor.hpp>

#include <catch2/catch.hpp>

#include <algorithm>
#include <atomic>
#include <latch>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <strata/core/errors.hpp>
#include <strata/core/log.hpp>

using strata::ExecutorShutdownError;
using strata::ThreadPoolExecutor;

namespace {

/// Counts its live copies, and whether it was called.
struct Tracked {
  std::atomic<int>* live;
  std::atomic<int>* calls;
  Tracked(std::atomic<int>* l, std::atomic<int>* c) noexcept : live(l), calls(c) { ++*live; }
  Tracked(const Tracked& o) noexcept : live(o.live), calls(o.calls) { ++*live; }
  Tracked(Tracked&& o) noexcept : live(o.live), calls(o.calls) { ++*live; }
  Tracked& operator=(const Tracked&) = delete;
  ~Tracked() { --*live; }
  void operator()() const { ++*calls; }
};

}  // namespace

TEST_CASE("ThreadPoolExecutor: runs every submitted job exactly once",
          "[core][thread_pool_executor]") {
  std::atomic<int> calls{0};
  {
    ThreadPoolExecutor pool(4);
    for (int i = 0; i < 1000; ++i) pool.submit([&] { ++calls; });
    pool.shutdown(/*wait=*/true);
    CHECK(calls == 1000);
  }
  CHECK(calls == 1000);
}

TEST_CASE("ThreadPoolExecutor: starts no thread before the first submit",
          "[core][thread_pool_executor]") {
  ThreadPoolExecutor pool(8);
  CHECK(pool.worker_count() == 0);
  CHECK(pool.max_workers() == 8);
}

TEST_CASE("ThreadPoolExecutor: the default size is min(32, hardware threads + 4)",
          "[core][thread_pool_executor]") {
  const std::size_t expected =
      std::min<std::size_t>(32, std::size_t{std::thread::hardware_concurrency()} + 4);
  CHECK(ThreadPoolExecutor::default_max_workers() == expected);
  ThreadPoolExecutor pool;
  CHECK(pool.max_workers() == expected);
}

TEST_CASE("ThreadPoolExecutor: max_workers 0 throws invalid_argument",
          "[core][thread_pool_executor]") {
  CHECK_THROWS_AS(ThreadPoolExecutor(0), std::invalid_argument);
}

TEST_CASE("ThreadPoolExecutor: never runs more than max_workers jobs at once",
          "[core][thread_pool_executor]") {
  constexpr int max_workers = 3;
  constexpr int jobs = 12;
  std::atomic<int> running{0};
  std::atomic<int> peak{0};
  std::atomic<int> finished{0};
  std::latch all_busy(max_workers);  // the first max_workers jobs are all running at once
  std::latch gate(1);                // holds them until the main thread has looked
  ThreadPoolExecutor pool(max_workers);
  for (int i = 0; i < jobs; ++i) {
    pool.submit([&, i] {
      const int now = ++running;
      int seen = peak.load();
      while (now > seen && !peak.compare_exchange_weak(seen, now)) {
      }
      if (i < max_workers) all_busy.count_down();
      gate.wait();
      --running;
      ++finished;
    });
  }
  all_busy.wait();
  // Every worker is blocked in one of the first jobs: nobody can start another.
  const int running_while_blocked = running.load();
  const std::size_t workers_while_blocked = pool.worker_count();
  gate.count_down();
  pool.shutdown(/*wait=*/true);
  CHECK(running_while_blocked == max_workers);
  CHECK(workers_while_blocked == max_workers);
  CHECK(peak == max_workers);
  CHECK(finished == jobs);
  CHECK(pool.worker_count() == max_workers);
}

TEST_CASE("ThreadPoolExecutor: shutdown with wait returns after running and queued jobs finished",
          "[core][thread_pool_executor]") {
  std::latch started(1);
  std::latch gate(1);
  std::atomic<bool> first_finished{false};
  std::atomic<int> queued_ran{0};
  bool first_finished_at_return = false;
  int queued_ran_at_return = 0;
  ThreadPoolExecutor pool(1);
  pool.submit([&] {
    started.count_down();
    gate.wait();
    first_finished = true;
  });
  for (int i = 0; i < 5; ++i) pool.submit([&] { ++queued_ran; });
  started.wait();
  std::thread closer([&] {
    pool.shutdown(/*wait=*/true);
    first_finished_at_return = first_finished.load();
    queued_ran_at_return = queued_ran.load();
  });
  gate.count_down();
  closer.join();
  CHECK(first_finished_at_return);
  CHECK(queued_ran_at_return == 5);
}

TEST_CASE("ThreadPoolExecutor: shutdown with cancel_futures destroys queued jobs without calling "
          "them",
          "[core][thread_pool_executor]") {
  std::atomic<int> live{0};
  std::atomic<int> calls{0};
  std::latch started(1);
  std::latch gate(1);
  std::atomic<bool> first_finished{false};
  int live_after_cancel = -1;
  {
    ThreadPoolExecutor pool(1);
    pool.submit([&] {
      started.count_down();
      gate.wait();
      first_finished = true;
    });
    for (int i = 0; i < 5; ++i) pool.submit(Tracked(&live, &calls));
    started.wait();
    pool.shutdown(/*wait=*/false, /*cancel_futures=*/true);
    live_after_cancel = live.load();
    gate.count_down();
    pool.shutdown(/*wait=*/true);
  }
  CHECK(live_after_cancel == 0);
  CHECK(calls == 0);
  CHECK(first_finished);
}

TEST_CASE("ThreadPoolExecutor: submit after shutdown throws ExecutorShutdownError and queues "
          "nothing",
          "[core][thread_pool_executor]") {
  std::atomic<int> live{0};
  std::atomic<int> calls{0};
  ThreadPoolExecutor pool(2);
  pool.submit([] {});
  pool.shutdown(/*wait=*/false);
  CHECK_THROWS_AS(pool.submit(Tracked(&live, &calls)), ExecutorShutdownError);
  CHECK_THROWS_WITH(pool.submit([] {}), Catch::Matchers::Contains("after shutdown"));
  pool.shutdown(/*wait=*/true);
  CHECK(calls == 0);
  CHECK(live == 0);
}

TEST_CASE("ThreadPoolExecutor: shutdown is idempotent and a later wait still waits",
          "[core][thread_pool_executor]") {
  std::atomic<int> calls{0};
  ThreadPoolExecutor pool(2);
  for (int i = 0; i < 10; ++i) pool.submit([&] { ++calls; });
  pool.shutdown(/*wait=*/false);
  pool.shutdown(/*wait=*/false);
  pool.shutdown(/*wait=*/true);
  CHECK(calls == 10);
  pool.shutdown(/*wait=*/true);
}

TEST_CASE("ThreadPoolExecutor: concurrent shutdowns with wait all return after the jobs finished",
          "[core][thread_pool_executor]") {
  std::latch started(1);
  std::latch gate(1);
  std::atomic<bool> finished{false};
  std::atomic<int> saw_finished{0};
  ThreadPoolExecutor pool(1);
  pool.submit([&] {
    started.count_down();
    gate.wait();
    finished = true;
  });
  started.wait();
  std::vector<std::thread> closers;
  for (int i = 0; i < 3; ++i) {
    closers.emplace_back([&] {
      pool.shutdown(/*wait=*/true);
      if (finished) ++saw_finished;
    });
  }
  gate.count_down();
  for (auto& t : closers) t.join();
  CHECK(saw_finished == 3);
}

TEST_CASE("ThreadPoolExecutor: an exception escaping a job is logged and the worker goes on",
          "[core][thread_pool_executor]") {
  std::mutex mutex;
  std::vector<std::string> records;
  strata::set_log_handler([&](strata::LogLevel level, std::string_view message) {
    std::lock_guard lock(mutex);
    if (level == strata::LogLevel::error) records.emplace_back(message);
  });
  std::atomic<int> calls{0};
  {
    ThreadPoolExecutor pool(1);
    pool.submit([] { throw std::runtime_error("job failed"); });
    pool.submit([&] { ++calls; });
    pool.shutdown(/*wait=*/true);
  }
  strata::set_log_handler({});
  CHECK(calls == 1);
  REQUIRE(records.size() == 1);
  CHECK_THAT(records[0], Catch::Matchers::Contains("job failed"));
}

TEST_CASE("ThreadPoolExecutor: the destructor runs queued jobs and joins",
          "[core][thread_pool_executor]") {
  std::atomic<int> calls{0};
  {
    ThreadPoolExecutor pool(2);
    for (int i = 0; i < 100; ++i) pool.submit([&] { ++calls; });
  }
  CHECK(calls == 100);
}
