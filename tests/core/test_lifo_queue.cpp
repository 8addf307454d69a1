#include <strata/core/lifo_queue.hpp>

#include <catch2/catch.hpp>

#include <chrono>
#include <exception>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <strata/core/coro.hpp>
#include <strata/core/errors.hpp>
#include <strata/core/sleep.hpp>
#include <strata/core/task.hpp>

#include "loop_test.hpp"

using namespace std::chrono_literals;
using strata::Coro;
using strata::LifoQueue;
using strata::Task;
using Log = std::vector<std::string>;

namespace {

/// co_await q.get() into @p out; returns the exception it ended with (nullptr when none).
/// The only try/catch in this file's coroutines (g++ 12 miscompiles some coroutines that mix
/// try/catch with other constructs).
template <class Q, class T>
Coro<std::exception_ptr> get_into(Q& q, std::optional<T>* out) {
  std::exception_ptr error;
  try {
    out->emplace(co_await q.get());
  } catch (...) {
    error = std::current_exception();
  }
  co_return error;
}

std::string outcome(const std::exception_ptr& e, const std::optional<int>& v) {
  if (!e) return v ? "got " + std::to_string(*v) : "nothing";
  try {
    std::rethrow_exception(e);
  } catch (const strata::CancelledError&) {
    return "CancelledError";
  } catch (const strata::QueueShutDown&) {
    return "QueueShutDown";
  } catch (const std::exception& x) {
    return x.what();
  }
  return "unknown";
}

}  // namespace

TEST_CASE("LifoQueue: get_nowait returns the item put last", "[core][lifo_queue]") {
  LifoQueue<int> q(3);
  q.put_nowait(1);
  q.put_nowait(2);
  q.put_nowait(3);
  CHECK(q.full());
  CHECK_THROWS_AS(q.put_nowait(4), strata::QueueFull);
  CHECK(q.get_nowait() == 3);
  q.put_nowait(5);
  CHECK(q.get_nowait() == 5);
  CHECK(q.get_nowait() == 2);
  CHECK(q.get_nowait() == 1);
  CHECK_THROWS_AS(q.get_nowait(), strata::QueueEmpty);
}

namespace {
Coro<void> getters_take_newest(Log* log) {
  LifoQueue<int> q;
  std::optional<int> v1;
  std::optional<int> v2;
  Task<std::exception_ptr> g1 = strata::create_task(get_into(q, &v1));
  Task<std::exception_ptr> g2 = strata::create_task(get_into(q, &v2));
  co_await strata::sleep(0s);  // both wait
  q.put_nowait(1);             // wakes g1
  q.put_nowait(2);             // wakes g2; g1 runs first and takes the newest item
  std::exception_ptr e1 = co_await g1;
  std::exception_ptr e2 = co_await g2;
  log->push_back("g1 " + outcome(e1, v1));
  log->push_back("g2 " + outcome(e2, v2));
  q.task_done();
  q.task_done();
  co_await q.join();
  log->push_back("joined");
}
}  // namespace

STRATA_LOOP_TEST_CASE("LifoQueue: getters are served oldest first, each taking the newest item",
                      "[core][lifo_queue]") {
  strata::testing::TestLoop loop(TestType::kind);
  Log log;
  loop.run(getters_take_newest(&log), 5s);
  CHECK(log == Log{"g1 got 2", "g2 got 1", "joined"});
}

namespace {
Coro<void> move_only_bounded(Log* log) {
  LifoQueue<std::unique_ptr<int>> q(1);
  auto one = std::make_unique<int>(1);
  co_await q.put(std::move(one));
  auto two = std::make_unique<int>(2);
  Task<void> p = strata::create_task(q.put(std::move(two)));  // waits: full
  co_await strata::sleep(0s);
  log->push_back(p.done() ? "put done" : "put waits");
  std::unique_ptr<int> a = co_await q.get();
  co_await p;
  std::unique_ptr<int> b = co_await q.get();
  log->push_back(std::to_string(*a) + " " + std::to_string(*b));
  q.shutdown(true);
  std::optional<std::unique_ptr<int>> none;
  std::exception_ptr e = co_await get_into(q, &none);
  log->push_back(outcome(e, std::nullopt));
}
}  // namespace

STRATA_LOOP_TEST_CASE("LifoQueue: move-only items wait for space and come out newest first",
                      "[core][lifo_queue]") {
  strata::testing::TestLoop loop(TestType::kind);
  Log log;
  loop.run(move_only_bounded(&log), 5s);
  CHECK(log == Log{"put waits", "1 2", "QueueShutDown"});
}

namespace {
Coro<void> woken_getter_cancelled(Log* log) {
  LifoQueue<int> q;
  std::optional<int> v1;
  std::optional<int> v2;
  Task<std::exception_ptr> g1 = strata::create_task(get_into(q, &v1));
  Task<std::exception_ptr> g2 = strata::create_task(get_into(q, &v2));
  co_await strata::sleep(0s);
  q.put_nowait(7);  // wakes g1...
  g1.cancel();      // ...which is cancelled before it runs
  std::exception_ptr e1 = co_await g1;
  std::exception_ptr e2 = co_await g2;
  log->push_back("g1 " + outcome(e1, v1));
  log->push_back("g2 " + outcome(e2, v2));
}
}  // namespace

STRATA_LOOP_TEST_CASE("LifoQueue: a getter woken then cancelled passes the item to the next getter",
                      "[core][lifo_queue]") {
  strata::testing::TestLoop loop(TestType::kind);
  Log log;
  loop.run(woken_getter_cancelled(&log), 5s);
  CHECK(log == Log{"g1 CancelledError", "g2 got 7"});
}
