#include <strata/core/priority_queue.hpp>

#include <catch2/catch.hpp>

#include <chrono>
#include <cstdlib>
#include <exception>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <strata/core/coro.hpp>
#include <strata/core/errors.hpp>
#include <strata/core/sleep.hpp>
#include <strata/core/task.hpp>

#include "loop_test.hpp"

using namespace std::chrono_literals;
using strata::Coro;
using strata::PriorityQueue;
using strata::Task;

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

std::string describe(const std::exception_ptr& e) {
  if (!e) return "none";
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

struct ByValue {
  bool operator()(const std::unique_ptr<int>& a, const std::unique_ptr<int>& b) const {
    return *a < *b;
  }
};

}  // namespace

TEST_CASE("PriorityQueue: get_nowait returns the smallest item first", "[core][priority_queue]") {
  PriorityQueue<int> q;
  for (int v : {5, 1, 4, 1, 3, 2}) q.put_nowait(v);
  CHECK(q.qsize() == 6);
  std::vector<int> out;
  while (!q.empty()) out.push_back(q.get_nowait());
  CHECK(out == std::vector<int>{1, 1, 2, 3, 4, 5});
  CHECK_THROWS_AS(q.get_nowait(), strata::QueueEmpty);
}

TEST_CASE("PriorityQueue: the comparator sets the order", "[core][priority_queue]") {
  PriorityQueue<int, std::greater<int>> largest_first;
  for (int v : {2, 9, 4}) largest_first.put_nowait(v);
  CHECK(largest_first.get_nowait() == 9);
  CHECK(largest_first.get_nowait() == 4);

  // A stateful comparator given to the constructor: order by distance to 10.
  auto near_ten = [](int a, int b) { return std::abs(a - 10) < std::abs(b - 10); };
  PriorityQueue<int, decltype(near_ten)> q(0, near_ten);
  for (int v : {1, 12, 30, 9}) q.put_nowait(v);
  CHECK(q.get_nowait() == 9);
  CHECK(q.get_nowait() == 12);
  CHECK(q.get_nowait() == 1);
  CHECK(q.get_nowait() == 30);
}

TEST_CASE("PriorityQueue: (priority, data) pairs come out by priority", "[core][priority_queue]") {
  PriorityQueue<std::pair<int, std::string>> q(3);
  q.put_nowait({2, "two"});
  q.put_nowait({1, "one"});
  q.put_nowait({3, "three"});
  CHECK(q.full());
  CHECK_THROWS_AS(q.put_nowait({0, "zero"}), strata::QueueFull);
  CHECK(q.get_nowait().second == "one");
  CHECK(q.get_nowait().second == "two");
  CHECK(q.get_nowait().second == "three");
}

namespace {
struct Waited {
  std::vector<int> got;
  std::string end;
};

Coro<void> getter_gets_smallest(Waited* out) {
  PriorityQueue<std::unique_ptr<int>, ByValue> q(2);
  std::optional<std::unique_ptr<int>> first;
  Task<std::exception_ptr> g = strata::create_task(get_into(q, &first));
  co_await strata::sleep(0s);  // g waits
  auto five = std::make_unique<int>(5);
  auto three = std::make_unique<int>(3);
  q.put_nowait(std::move(five));   // wakes g...
  q.put_nowait(std::move(three));  // ...which runs after this put: it takes the smallest
  auto four = std::make_unique<int>(4);
  Task<void> p = strata::create_task(q.put(std::move(four)));  // waits: full
  std::exception_ptr e = co_await g;
  if (!e) out->got.push_back(**first);
  co_await p;
  while (!q.empty()) out->got.push_back(*q.get_nowait());
  q.shutdown();
  std::optional<std::unique_ptr<int>> last;
  e = co_await get_into(q, &last);
  out->end = describe(e);
}
}  // namespace

STRATA_LOOP_TEST_CASE("PriorityQueue: a woken getter takes the smallest item queued when it runs",
                      "[core][priority_queue]") {
  strata::testing::TestLoop loop(TestType::kind);
  Waited out;
  loop.run(getter_gets_smallest(&out), 5s);
  CHECK(out.got == std::vector<int>{3, 4, 5});
  CHECK(out.end == "QueueShutDown");
}

namespace {
Coro<void> woken_getter_cancelled(std::vector<std::string>* out) {
  PriorityQueue<int> q;
  std::optional<int> v1;
  std::optional<int> v2;
  Task<std::exception_ptr> g1 = strata::create_task(get_into(q, &v1));
  Task<std::exception_ptr> g2 = strata::create_task(get_into(q, &v2));
  co_await strata::sleep(0s);
  q.put_nowait(7);  // wakes g1...
  g1.cancel();      // ...which is cancelled before it runs
  std::exception_ptr e1 = co_await g1;
  std::exception_ptr e2 = co_await g2;
  out->push_back(describe(e1));
  out->push_back(e2 ? describe(e2) : std::to_string(*v2));
  out->push_back(std::to_string(q.qsize()));
}
}  // namespace

STRATA_LOOP_TEST_CASE(
    "PriorityQueue: a getter woken then cancelled passes the item to the next getter",
    "[core][priority_queue]") {
  strata::testing::TestLoop loop(TestType::kind);
  std::vector<std::string> out;
  loop.run(woken_getter_cancelled(&out), 5s);
  CHECK(out == std::vector<std::string>{"CancelledError", "7", "0"});
}
