#include <strata/core/executor.hpp>

#include <catch2/catch.hpp>

#include <atomic>
#include <latch>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>

#include <strata/core/coro.hpp>
#include <strata/core/errors.hpp>
#include <strata/core/event_loop.hpp>
#include <strata/core/future.hpp>
#include <strata/core/task.hpp>
#include <strata/core/thread_pool_executor.hpp>

#include "loop_test.hpp"

using strata::CancelledError;
using strata::Coro;
using strata::EventLoop;
using strata::EventLoopError;
using strata::ExecutorShutdownError;
using strata::Future;
using strata::ThreadPoolExecutor;
using strata::testing::TestLoop;

namespace {

struct ThreadIds {
  std::thread::id fn;       // where fn ran
  std::thread::id resumed;  // where the awaiter resumed
};

Coro<ThreadIds> await_thread_ids(EventLoop& loop, strata::Executor* executor) {
  Future<std::thread::id> f = loop.run_in_executor(executor, [] { return std::this_thread::get_id(); });
  ThreadIds ids;
  ids.fn = co_await f;
  ids.resumed = std::this_thread::get_id();
  co_return ids;
}

Coro<std::string> await_error(Future<int> f) {
  try {
    co_await f;
  } catch (const std::runtime_error& e) {
    co_return e.what();
  }
  co_return "no exception";
}

Coro<std::string> await_cancel(Future<void> f) {
  try {
    co_await f;
  } catch (const CancelledError& e) {
    co_return "cancelled: " + e.message();
  }
  co_return "not cancelled";
}

template <class T>
Coro<T> await_future(Future<T> f) {
  co_return co_await f;
}

int add(int a, int b) { return a + b; }

Coro<int> to_thread_add(int a, int b) { co_return co_await strata::to_thread(add, a, b); }

Coro<std::string> to_thread_error() {
  try {
    co_await strata::to_thread([]() -> int { throw std::runtime_error("worker failed"); });
  } catch (const std::runtime_error& e) {
    co_return e.what();
  }
  co_return "no exception";
}

Coro<std::thread::id> to_thread_id() {
  co_return co_await strata::to_thread([] { return std::this_thread::get_id(); });
}

}  // namespace

STRATA_LOOP_TEST_CASE("run_in_executor: fn runs on a worker and the result arrives on the loop "
                      "thread",
                      "[core][executor]") {
  TestLoop loop(TestType::kind);
  ThreadPoolExecutor pool(2);
  ThreadIds ids = loop.run(await_thread_ids(*loop, &pool));
  CHECK(ids.fn != std::this_thread::get_id());
  CHECK(ids.resumed == std::this_thread::get_id());
  CHECK(loop.errors().empty());
}

STRATA_LOOP_TEST_CASE("run_in_executor: done callbacks run on the loop thread",
                      "[core][executor]") {
  TestLoop loop(TestType::kind);
  ThreadPoolExecutor pool(1);
  Future<int> f = strata::run_in_executor(*loop, &pool, [] { return 7; });
  std::thread::id callback_thread;
  f.add_done_callback([&](Future<int>&) { callback_thread = std::this_thread::get_id(); });
  CHECK(loop->run_until_complete(f) == 7);
  loop.run(await_future(f));  // one more iteration: the done callback has run
  CHECK(callback_thread == std::this_thread::get_id());
}

STRATA_LOOP_TEST_CASE("run_in_executor: an exception thrown by fn arrives at the awaiter",
                      "[core][executor]") {
  TestLoop loop(TestType::kind);
  ThreadPoolExecutor pool(1);
  Future<int> f =
      loop->run_in_executor(&pool, []() -> int { throw std::runtime_error("fn failed"); });
  CHECK(loop.run(await_error(f)) == "fn failed");
  CHECK(loop.errors().empty());
}

STRATA_LOOP_TEST_CASE("run_in_executor: arguments are passed to fn and void results work",
                      "[core][executor]") {
  TestLoop loop(TestType::kind);
  ThreadPoolExecutor pool(1);
  auto sum = std::make_shared<std::atomic<int>>(0);
  Future<void> f = loop->run_in_executor(
      &pool, [](std::shared_ptr<std::atomic<int>> s, int a, int b) { *s += a + b; }, sum, 2, 3);
  loop.run(await_future(f));
  CHECK(*sum == 5);
  Future<std::unique_ptr<int>> g =
      loop->run_in_executor(&pool, [](int v) { return std::make_unique<int>(v); }, 9);
  std::unique_ptr<int> p = loop.run(await_future(g));
  REQUIRE(p);
  CHECK(*p == 9);
}

STRATA_LOOP_TEST_CASE("run_in_executor: nullptr uses the default executor, made once and shut "
                      "down by close",
                      "[core][executor]") {
  TestLoop loop(TestType::kind);
  ThreadIds ids = loop.run(await_thread_ids(*loop, nullptr));
  CHECK(ids.fn != std::this_thread::get_id());
  CHECK(ids.resumed == std::this_thread::get_id());
  strata::Executor& first = loop->default_executor();
  CHECK(&first == &loop->default_executor());
  auto* pool = dynamic_cast<ThreadPoolExecutor*>(&first);
  REQUIRE(pool != nullptr);
  CHECK(pool->max_workers() == ThreadPoolExecutor::default_max_workers());
  loop->close();
  CHECK_THROWS_AS(loop->default_executor(), EventLoopError);
  CHECK_THROWS_AS(loop->run_in_executor(nullptr, [] {}), EventLoopError);
}

STRATA_LOOP_TEST_CASE("run_in_executor: close waits for a running job of the default executor",
                      "[core][executor]") {
  TestLoop loop(TestType::kind);
  std::latch started(1);
  std::latch gate(1);
  std::atomic<bool> finished{false};
  {
    Future<int> f = loop->run_in_executor(nullptr, [&] {
      started.count_down();
      gate.wait();
      finished = true;
      return 1;
    });
    started.wait();
    std::thread opener([&] { gate.count_down(); });
    loop->close();
    opener.join();
    CHECK(finished);
    CHECK_FALSE(f.done());  // its result was posted to a closing loop, and dropped
  }
}

STRATA_LOOP_TEST_CASE("run_in_executor: cancelling the Future does not stop fn, and its result "
                      "is dropped without error",
                      "[core][executor]") {
  TestLoop loop(TestType::kind);
  ThreadPoolExecutor pool(1);
  std::latch gate(1);
  std::atomic<bool> fn_finished{false};
  Future<int> f = loop->run_in_executor(&pool, [&]() -> int {
    gate.wait();
    fn_finished = true;
    throw std::runtime_error("dropped");
  });
  Future<int> g = loop->run_in_executor(&pool, [&] { return 2; });
  CHECK(f.cancel());
  gate.count_down();
  // One worker, in order: by the time g's result arrives, f's has arrived and been dropped.
  CHECK(loop.run(await_future(g)) == 2);
  CHECK(fn_finished);
  CHECK(f.cancelled());
  CHECK(loop.errors().empty());
}

STRATA_LOOP_TEST_CASE("run_in_executor: a job dropped by shutdown(cancel_futures) cancels its "
                      "Future",
                      "[core][executor]") {
  TestLoop loop(TestType::kind);
  ThreadPoolExecutor pool(1);
  std::latch started(1);
  std::latch gate(1);
  std::atomic<bool> second_ran{false};
  Future<int> first = loop->run_in_executor(&pool, [&] {
    started.count_down();
    gate.wait();
    return 1;
  });
  Future<void> second = loop->run_in_executor(&pool, [&] { second_ran = true; });
  started.wait();
  pool.shutdown(/*wait=*/false, /*cancel_futures=*/true);
  CHECK_THAT(loop.run(await_cancel(second)), Catch::Matchers::StartsWith("cancelled: "));
  gate.count_down();
  CHECK(loop.run(await_future(first)) == 1);
  CHECK_FALSE(second_ran);
}

STRATA_LOOP_TEST_CASE("run_in_executor: a shut-down executor throws ExecutorShutdownError and "
                      "schedules nothing",
                      "[core][executor]") {
  TestLoop loop(TestType::kind);
  ThreadPoolExecutor pool(1);
  pool.shutdown();
  std::atomic<bool> ran{false};
  CHECK_THROWS_AS(loop->run_in_executor(&pool, [&] { ran = true; }), ExecutorShutdownError);
  CHECK_FALSE(ran);
}

STRATA_LOOP_TEST_CASE("to_thread: runs fn with its arguments on the default executor",
                      "[core][executor]") {
  TestLoop loop(TestType::kind);
  CHECK(loop.run(to_thread_add(20, 22)) == 42);
  CHECK(loop.run(to_thread_id()) != std::this_thread::get_id());
}

STRATA_LOOP_TEST_CASE("to_thread: an exception thrown by fn arrives at the awaiter",
                      "[core][executor]") {
  TestLoop loop(TestType::kind);
  CHECK(loop.run(to_thread_error()) == "worker failed");
}

STRATA_LOOP_TEST_CASE("to_thread: cancelling the awaiting task ends it cancelled while fn runs "
                      "to its end",
                      "[core][executor]") {
  TestLoop loop(TestType::kind);
  std::latch started(1);
  std::latch gate(1);
  std::atomic<bool> fn_finished{false};
  auto task = loop->create_task(strata::to_thread([&] {
    started.count_down();
    gate.wait();
    fn_finished = true;
    return 5;
  }));
  loop->call_soon([&] {
    started.wait();  // blocks the loop thread briefly: the job is on its way
    task.cancel();
  });
  CHECK_THROWS_AS(loop->run_until_complete(Future<int>(task)), CancelledError);
  gate.count_down();
  loop->close();  // waits for the running job
  CHECK(fn_finished);
}

TEST_CASE("to_thread: is lazy and submits nothing until awaited", "[core][executor]") {
  std::atomic<int> calls{0};
  {
    // No loop runs here: an eager to_thread would throw EventLoopError at once.
    Coro<int> c = strata::to_thread([&] { return ++calls; });
    CHECK(c.valid());
  }
  CHECK(calls == 0);
}
