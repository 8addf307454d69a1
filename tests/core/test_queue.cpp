#include <strata/core/queue.hpp>

#include <catch2/catch.hpp>

#include <algorithm>
#include <chrono>
#include <exception>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include <strata/core/coro.hpp>
#include <strata/core/errors.hpp>
#include <strata/core/future.hpp>
#include <strata/core/sleep.hpp>
#include <strata/core/task.hpp>

#include "loop_test.hpp"

using namespace std::chrono_literals;
using strata::Coro;
using strata::Queue;
using strata::Task;
using Log = std::vector<std::string>;

namespace {

/// Awaits @p aw and returns the exception it ended with (nullptr when none). With get_into(),
/// the only try/catch in this file's coroutines (g++ 12 miscompiles some coroutines that mix
/// try/catch with other constructs), so the others record what these return.
template <class A>
Coro<std::exception_ptr> exception_of(A aw) {
  std::exception_ptr error;
  try {
    co_await aw;
  } catch (...) {
    error = std::current_exception();
  }
  co_return error;
}

/// co_await q.get() into @p out; returns the exception it ended with (nullptr when none).
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
  } catch (const strata::QueueEmpty&) {
    return "QueueEmpty";
  } catch (const strata::QueueFull&) {
    return "QueueFull";
  } catch (const strata::InvalidStateError& x) {
    return std::string("InvalidStateError: ") + x.what();
  } catch (const std::exception& x) {
    return x.what();
  }
  return "unknown";
}

/// The outcome of a get: "got <value>" or the exception's description.
std::string outcome(const std::exception_ptr& error, const std::optional<int>& value) {
  if (error) return describe(error);
  return value ? "got " + std::to_string(*value) : "nothing";
}

/// The exception that @p fn throws, described; "none" if it returns.
template <class F>
std::string thrown_by(F fn) {
  try {
    fn();
  } catch (...) {
    return describe(std::current_exception());
  }
  return "none";
}

Coro<void> getter(Queue<int>& q, Log* log, std::string name) {
  int v = co_await q.get();
  log->push_back(name + " got " + std::to_string(v));
}

Coro<void> putter(Queue<int>& q, Log* log, int v) {
  log->push_back("put " + std::to_string(v) + " starts");
  co_await q.put(v);
  log->push_back("put " + std::to_string(v) + " done");
}

}  // namespace

// ---- Non-blocking operations ----------------------------------------------------------------

TEST_CASE("Queue: put_nowait and get_nowait hand items out first in, first out",
          "[core][queue]") {
  Queue<int> q(3);
  CHECK(q.maxsize() == 3);
  CHECK(q.empty());
  CHECK_FALSE(q.full());
  q.put_nowait(1);
  q.put_nowait(2);
  int three = 3;
  q.put_nowait(three);  // a copy
  CHECK(q.qsize() == 3);
  CHECK(q.full());
  CHECK_FALSE(q.empty());
  CHECK(q.get_nowait() == 1);
  CHECK(q.get_nowait() == 2);
  CHECK(q.get_nowait() == 3);
  CHECK(q.empty());
}

TEST_CASE("Queue: a maxsize of 0 means unbounded and never full", "[core][queue]") {
  Queue<int> q;
  CHECK(q.maxsize() == 0);
  for (int i = 0; i < 1000; ++i) q.put_nowait(i);
  CHECK(q.qsize() == 1000);
  CHECK_FALSE(q.full());
}

TEST_CASE("Queue: get_nowait on an empty queue throws QueueEmpty and put_nowait on a full one "
          "QueueFull",
          "[core][queue]") {
  Queue<std::unique_ptr<int>> q(1);
  CHECK(thrown_by([&] { (void)q.get_nowait(); }) == "QueueEmpty");
  q.put_nowait(std::make_unique<int>(1));
  auto second = std::make_unique<int>(2);
  CHECK(thrown_by([&] { q.put_nowait(std::move(second)); }) == "QueueFull");
  // The refused item is left with the caller.
  REQUIRE(second != nullptr);
  CHECK(*second == 2);
  CHECK(q.qsize() == 1);
  CHECK(*q.get_nowait() == 1);
}

TEST_CASE("Queue: task_done more times than items were put throws InvalidStateError",
          "[core][queue]") {
  Queue<int> q;
  CHECK(thrown_by([&] { q.task_done(); }) ==
        "InvalidStateError: task_done() called too many times");
  q.put_nowait(1);
  (void)q.get_nowait();
  CHECK(thrown_by([&] { q.task_done(); }) == "none");
  CHECK_THROWS_AS(q.task_done(), strata::InvalidStateError);
  CHECK_THROWS_AS(q.task_done(), std::logic_error);
}

// ---- Blocking get and put -------------------------------------------------------------------

namespace {
Coro<void> getters_in_order(Log* log) {
  Queue<int> q;
  Task<void> g1 = strata::create_task(getter(q, log, "g1"));
  Task<void> g2 = strata::create_task(getter(q, log, "g2"));
  Task<void> g3 = strata::create_task(getter(q, log, "g3"));
  co_await strata::sleep(0s);  // the three wait, in creation order
  log->push_back("putting");
  q.put_nowait(1);
  q.put_nowait(2);
  q.put_nowait(3);
  co_await g1;
  co_await g2;
  co_await g3;
  log->push_back("left " + std::to_string(q.qsize()));
}
}  // namespace

STRATA_LOOP_TEST_CASE("Queue: get waits for a put and waiting getters are served in order",
                      "[core][queue]") {
  strata::testing::TestLoop loop(TestType::kind);
  Log log;
  loop.run(getters_in_order(&log), 5s);
  CHECK(log == Log{"putting", "g1 got 1", "g2 got 2", "g3 got 3", "left 0"});
}

namespace {
Coro<void> put_waits_for_space(Log* log) {
  Queue<int> q(1);
  q.put_nowait(1);
  Task<void> p2 = strata::create_task(putter(q, log, 2));
  Task<void> p3 = strata::create_task(putter(q, log, 3));
  co_await strata::sleep(0s);
  log->push_back("size " + std::to_string(q.qsize()));
  log->push_back("took " + std::to_string(q.get_nowait()));
  co_await p2;
  int second = co_await q.get();
  log->push_back("took " + std::to_string(second));
  co_await p3;
  int third = co_await q.get();
  log->push_back("took " + std::to_string(third));
}
}  // namespace

STRATA_LOOP_TEST_CASE("Queue: put on a full queue waits for a get, putters served in order",
                      "[core][queue]") {
  strata::testing::TestLoop loop(TestType::kind);
  Log log;
  loop.run(put_waits_for_space(&log), 5s);
  CHECK(log == Log{"put 2 starts", "put 3 starts", "size 1", "took 1", "put 2 done", "took 2",
                   "put 3 done", "took 3"});
}

namespace {
Coro<void> move_only_items(std::vector<int>* out) {
  Queue<std::unique_ptr<int>> q(1);
  std::optional<std::unique_ptr<int>> got;
  Task<std::exception_ptr> g = strata::create_task(get_into(q, &got));
  co_await strata::sleep(0s);
  auto one = std::make_unique<int>(1);
  co_await q.put(std::move(one));  // wakes the getter
  auto two = std::make_unique<int>(2);
  co_await q.put(std::move(two));  // waits until the getter took 1
  std::exception_ptr error = co_await g;
  out->push_back(error ? -1 : **got);
  std::unique_ptr<int> last = co_await q.get();
  out->push_back(*last);
}
}  // namespace

STRATA_LOOP_TEST_CASE("Queue: move-only items go through put and get", "[core][queue]") {
  strata::testing::TestLoop loop(TestType::kind);
  std::vector<int> out;
  loop.run(move_only_items(&out), 5s);
  CHECK(out == std::vector<int>{1, 2});
}

// ---- task_done and join ---------------------------------------------------------------------

namespace {
Coro<void> joiner(Queue<int>& q, Log* log, std::string name) {
  co_await q.join();
  log->push_back(name + " joined");
}

Coro<void> join_waits_for_task_done(Log* log) {
  Queue<int> q;
  co_await q.join();  // nothing unfinished: returns at once
  log->push_back("empty join returned");
  q.put_nowait(1);
  q.put_nowait(2);
  Task<void> j1 = strata::create_task(joiner(q, log, "j1"));
  Task<void> j2 = strata::create_task(joiner(q, log, "j2"));
  (void)q.get_nowait();
  (void)q.get_nowait();
  co_await strata::sleep(0s);
  log->push_back("task_done 1");
  q.task_done();
  co_await strata::sleep(0s);
  log->push_back("task_done 2");
  q.task_done();
  co_await j1;
  co_await j2;
}
}  // namespace

STRATA_LOOP_TEST_CASE("Queue: join waits until task_done was called for every item put",
                      "[core][queue]") {
  strata::testing::TestLoop loop(TestType::kind);
  Log log;
  loop.run(join_waits_for_task_done(&log), 5s);
  CHECK(log == Log{"empty join returned", "task_done 1", "task_done 2", "j1 joined",
                   "j2 joined"});
}

namespace {
Coro<void> cancelled_join(Log* log) {
  Queue<int> q;
  q.put_nowait(1);
  Task<void> j1 = strata::create_task(joiner(q, log, "j1"));
  Task<void> j2 = strata::create_task(joiner(q, log, "j2"));
  co_await strata::sleep(0s);
  j1.cancel();
  std::exception_ptr e1 = co_await exception_of(j1);
  log->push_back("j1 " + describe(e1));
  (void)q.get_nowait();
  q.task_done();
  co_await j2;
}
}  // namespace

STRATA_LOOP_TEST_CASE("Queue: a cancelled join leaves the other joiners waiting",
                      "[core][queue]") {
  strata::testing::TestLoop loop(TestType::kind);
  Log log;
  loop.run(cancelled_join(&log), 5s);
  CHECK(log == Log{"j1 CancelledError", "j2 joined"});
}

// ---- Cancellation ---------------------------------------------------------------------------

namespace {
struct TwoGetters {
  std::string first;
  std::string second;
  std::size_t left = 99;
};

Coro<void> woken_getter_cancelled(TwoGetters* out) {
  Queue<int> q;
  std::optional<int> v1;
  std::optional<int> v2;
  Task<std::exception_ptr> g1 = strata::create_task(get_into(q, &v1));
  Task<std::exception_ptr> g2 = strata::create_task(get_into(q, &v2));
  co_await strata::sleep(0s);  // both wait
  q.put_nowait(7);             // reserves the wake-up for g1...
  g1.cancel();                 // ...which is cancelled before it runs
  std::exception_ptr e1 = co_await g1;
  std::exception_ptr e2 = co_await g2;  // hangs if the item's wake-up was lost
  out->first = outcome(e1, v1);
  out->second = outcome(e2, v2);
  out->left = q.qsize();
}

Coro<void> waiting_getter_cancelled(TwoGetters* out) {
  Queue<int> q;
  std::optional<int> v1;
  std::optional<int> v2;
  Task<std::exception_ptr> g1 = strata::create_task(get_into(q, &v1));
  Task<std::exception_ptr> g2 = strata::create_task(get_into(q, &v2));
  co_await strata::sleep(0s);
  g1.cancel();
  std::exception_ptr e1 = co_await g1;
  q.put_nowait(7);
  std::exception_ptr e2 = co_await g2;
  out->first = outcome(e1, v1);
  out->second = outcome(e2, v2);
  out->left = q.qsize();
}
}  // namespace

STRATA_LOOP_TEST_CASE("Queue: a getter woken for an item then cancelled passes it to the next getter",
                      "[core][queue]") {
  strata::testing::TestLoop loop(TestType::kind);
  TwoGetters out;
  loop.run(woken_getter_cancelled(&out), 5s);
  CHECK(out.first == "CancelledError");
  CHECK(out.second == "got 7");
  CHECK(out.left == 0);
}

STRATA_LOOP_TEST_CASE("Queue: a getter cancelled while waiting takes no item and is skipped",
                      "[core][queue]") {
  strata::testing::TestLoop loop(TestType::kind);
  TwoGetters out;
  loop.run(waiting_getter_cancelled(&out), 5s);
  CHECK(out.first == "CancelledError");
  CHECK(out.second == "got 7");
  CHECK(out.left == 0);
}

namespace {
struct TwoPutters {
  std::string first;
  std::string second;
  std::vector<int> left;
};

Coro<void> woken_putter_cancelled(TwoPutters* out) {
  Queue<int> q(1);
  q.put_nowait(1);
  Task<std::exception_ptr> p1 = strata::create_task(exception_of(q.put(2)));
  Task<std::exception_ptr> p2 = strata::create_task(exception_of(q.put(3)));
  co_await strata::sleep(0s);  // both wait for a slot
  (void)q.get_nowait();        // frees a slot and wakes p1...
  p1.cancel();                 // ...which is cancelled before it runs
  std::exception_ptr e1 = co_await p1;
  std::exception_ptr e2 = co_await p2;  // hangs if the slot's wake-up was lost
  out->first = describe(e1);
  out->second = describe(e2);
  while (!q.empty()) out->left.push_back(q.get_nowait());
}
}  // namespace

STRATA_LOOP_TEST_CASE("Queue: a putter woken for a slot then cancelled passes it to the next putter",
                      "[core][queue]") {
  strata::testing::TestLoop loop(TestType::kind);
  TwoPutters out;
  loop.run(woken_putter_cancelled(&out), 5s);
  CHECK(out.first == "CancelledError");
  CHECK(out.second == "none");
  CHECK(out.left == std::vector<int>{3});
}

namespace {
struct Flow {
  std::vector<int> produced;  // items whose put() completed
  std::vector<int> consumed;  // items a get() returned
  std::vector<int> left;      // items still queued at the end
  int producers_cancelled = 0;
  int consumers_cancelled = 0;
};

Coro<void> producer(Queue<int>& q, Flow* flow, int first, int count) {
  for (int i = first; i < first + count; ++i) {
    co_await q.put(i);
    flow->produced.push_back(i);
    if (i % 3 == 0) co_await strata::sleep(0s);
  }
}

Coro<void> consumer(Queue<int>& q, Flow* flow, int pace) {
  for (int n = 0;; ++n) {
    int v = co_await q.get();
    flow->consumed.push_back(v);
    q.task_done();
    if (n % pace == 0) co_await strata::sleep(0s);
  }
}

Coro<void> produce_consume_cancel(Flow* flow) {
  Queue<int> q(2);
  std::vector<Task<void>> producers;
  std::vector<Task<void>> consumers;
  for (int p = 0; p < 3; ++p) producers.push_back(strata::create_task(producer(q, flow, p * 100, 40)));
  for (int c = 0; c < 4; ++c) consumers.push_back(strata::create_task(consumer(q, flow, c + 1)));
  // Cancel consumers and a producer at different moments, some right after a put or a get
  // has woken them.
  for (int round = 0; round < 30; ++round) {
    co_await strata::sleep(0s);
    if (round == 3) {
      q.put_nowait(-1);  // may wake a waiting consumer; cancel them all but two at once
      consumers[0].cancel();
      consumers[1].cancel();
    }
    if (round == 7) producers[1].cancel();
    if (round == 11) {
      int v = co_await q.get();  // may wake a waiting producer; cancel one right away
      flow->consumed.push_back(v);
      q.task_done();
      producers[2].cancel();
    }
  }
  for (auto& p : producers) {
    if (co_await exception_of(p)) ++flow->producers_cancelled;
  }
  co_await q.join();  // the two remaining consumers take everything that was put
  for (auto& c : consumers) c.cancel();
  for (auto& c : consumers) {
    if (co_await exception_of(c)) ++flow->consumers_cancelled;
  }
  while (!q.empty()) flow->left.push_back(q.get_nowait());
}
}  // namespace

STRATA_LOOP_TEST_CASE(
    "Queue: producers and consumers cancelled midway lose and duplicate no item",
    "[core][queue]") {
  strata::testing::TestLoop loop(TestType::kind);
  Flow flow;
  loop.run(produce_consume_cancel(&flow), 10s);
  CHECK(flow.consumers_cancelled == 4);
  CHECK(flow.producers_cancelled == 2);
  std::vector<int> expected = flow.produced;
  expected.push_back(-1);
  std::vector<int> got = flow.consumed;
  got.insert(got.end(), flow.left.begin(), flow.left.end());
  std::sort(expected.begin(), expected.end());
  std::sort(got.begin(), got.end());
  // Every item that was put was taken exactly once: none lost, none duplicated.
  CHECK(got == expected);
  CHECK(flow.left.empty());
  // The uncancelled producer put all its 40 items; the cancelled ones fewer.
  CHECK(std::count_if(flow.produced.begin(), flow.produced.end(),
                      [](int v) { return v >= 0 && v < 100; }) == 40);
  CHECK(flow.produced.size() < 120);
}

// ---- Shutdown -------------------------------------------------------------------------------

namespace {
Coro<void> shutdown_drains(Log* log) {
  Queue<int> q;
  q.put_nowait(1);
  q.put_nowait(2);
  q.shutdown();
  log->push_back(q.is_shutdown() ? "shut down" : "open");
  std::exception_ptr put_error = co_await exception_of(q.put(3));
  log->push_back("put: " + describe(put_error));
  log->push_back("put_nowait: " + thrown_by([&q] { q.put_nowait(3); }));
  for (int i = 0; i < 3; ++i) {
    std::optional<int> v;
    std::exception_ptr e = co_await get_into(q, &v);
    log->push_back("get: " + outcome(e, v));
  }
  log->push_back("get_nowait: " + thrown_by([&q] { (void)q.get_nowait(); }));
}
}  // namespace

STRATA_LOOP_TEST_CASE(
    "Queue: after shutdown put throws QueueShutDown and get hands out the items left, then throws",
    "[core][queue]") {
  strata::testing::TestLoop loop(TestType::kind);
  Log log;
  loop.run(shutdown_drains(&log), 5s);
  CHECK(log == Log{"shut down", "put: QueueShutDown", "put_nowait: QueueShutDown", "get: got 1",
                   "get: got 2", "get: QueueShutDown", "get_nowait: QueueShutDown"});
}

namespace {
Coro<void> shutdown_wakes_getters(Log* log, bool immediate) {
  Queue<int> q;
  std::optional<int> v1;
  std::optional<int> v2;
  Task<std::exception_ptr> g1 = strata::create_task(get_into(q, &v1));
  Task<std::exception_ptr> g2 = strata::create_task(get_into(q, &v2));
  co_await strata::sleep(0s);
  q.shutdown(immediate);
  std::exception_ptr e1 = co_await g1;
  std::exception_ptr e2 = co_await g2;
  log->push_back("g1 " + outcome(e1, v1));
  log->push_back("g2 " + outcome(e2, v2));
}
}  // namespace

STRATA_LOOP_TEST_CASE("Queue: shutdown wakes every blocked getter with QueueShutDown",
                      "[core][queue]") {
  strata::testing::TestLoop loop(TestType::kind);
  Log log;
  bool immediate = GENERATE(false, true);
  loop.run(shutdown_wakes_getters(&log, immediate), 5s);
  CHECK(log == Log{"g1 QueueShutDown", "g2 QueueShutDown"});
}

namespace {
Coro<void> shutdown_wakes_putters(Log* log) {
  Queue<int> q(1);
  q.put_nowait(1);
  Task<std::exception_ptr> p1 = strata::create_task(exception_of(q.put(2)));
  Task<std::exception_ptr> p2 = strata::create_task(exception_of(q.put(3)));
  co_await strata::sleep(0s);
  q.shutdown();
  std::exception_ptr e1 = co_await p1;
  std::exception_ptr e2 = co_await p2;
  log->push_back("p1 " + describe(e1));
  log->push_back("p2 " + describe(e2));
  log->push_back("size " + std::to_string(q.qsize()));
  std::optional<int> v;
  std::exception_ptr e = co_await get_into(q, &v);
  log->push_back("get " + outcome(e, v));
  v.reset();
  e = co_await get_into(q, &v);
  log->push_back("get " + outcome(e, v));
}
}  // namespace

STRATA_LOOP_TEST_CASE(
    "Queue: shutdown wakes every blocked putter with QueueShutDown and keeps the queued items",
    "[core][queue]") {
  strata::testing::TestLoop loop(TestType::kind);
  Log log;
  loop.run(shutdown_wakes_putters(&log), 5s);
  CHECK(log ==
        Log{"p1 QueueShutDown", "p2 QueueShutDown", "size 1", "get got 1", "get QueueShutDown"});
}

namespace {
Coro<void> immediate_shutdown(Log* log) {
  Queue<int> q(3);
  q.put_nowait(1);
  q.put_nowait(2);
  q.put_nowait(3);
  Task<void> j = strata::create_task(joiner(q, log, "j"));
  Task<std::exception_ptr> p = strata::create_task(exception_of(q.put(4)));
  Task<std::exception_ptr> p2 = strata::create_task(exception_of(q.put(5)));
  co_await strata::sleep(0s);  // j, p and p2 wait
  (void)q.get_nowait();        // taken, not marked done; wakes p, which has not run yet
  q.shutdown(true);            // drops 2 and 3: one unfinished item left
  log->push_back("size " + std::to_string(q.qsize()));
  std::exception_ptr e = co_await p;
  log->push_back("put " + describe(e));
  e = co_await p2;
  log->push_back("put " + describe(e));
  log->push_back(j.done() ? "j done" : "j waits");
  q.task_done();  // the item taken before the shutdown
  co_await j;
  log->push_back("task_done: " + thrown_by([&q] { q.task_done(); }));
}
}  // namespace

STRATA_LOOP_TEST_CASE(
    "Queue: shutdown(immediate) drops the items, counts them done, and fails blocked putters",
    "[core][queue]") {
  strata::testing::TestLoop loop(TestType::kind);
  Log log;
  loop.run(immediate_shutdown(&log), 5s);
  CHECK(log == Log{"size 0", "put QueueShutDown", "put QueueShutDown", "j waits", "j joined",
                   "task_done: InvalidStateError: task_done() called too many times"});
}

namespace {
Coro<void> drain(Queue<int>& q, Flow* flow, std::string* end) {
  for (;;) {
    std::optional<int> v;
    std::exception_ptr e = co_await get_into(q, &v);
    if (e) {
      *end = describe(e);
      co_return;
    }
    flow->consumed.push_back(*v);
    q.task_done();
    co_await strata::sleep(0s);
  }
}

Coro<void> produce_then_shut_down(Flow* flow, std::vector<std::string>* ends) {
  Queue<int> q(3);
  ends->resize(3);
  std::vector<Task<void>> consumers;
  for (int c = 0; c < 3; ++c) consumers.push_back(strata::create_task(drain(q, flow, &(*ends)[c])));
  for (int i = 0; i < 30; ++i) {
    co_await q.put(i);
    flow->produced.push_back(i);
    if (i == 10) consumers[0].cancel();  // a consumer leaves in the middle
  }
  q.shutdown();
  for (std::size_t c = 0; c < consumers.size(); ++c) {
    // A consumer cancelled outside get() ends cancelled instead of recording its end.
    std::exception_ptr e = co_await exception_of(consumers[c]);
    if (e) (*ends)[c] = describe(e);
  }
  flow->left.push_back(static_cast<int>(q.qsize()));
}
}  // namespace

STRATA_LOOP_TEST_CASE(
    "Queue: consumers drain every item put before shutdown, then get QueueShutDown",
    "[core][queue]") {
  strata::testing::TestLoop loop(TestType::kind);
  Flow flow;
  std::vector<std::string> ends;
  loop.run(produce_then_shut_down(&flow, &ends), 5s);
  std::vector<int> got = flow.consumed;
  std::sort(got.begin(), got.end());
  CHECK(got == flow.produced);
  CHECK(flow.produced.size() == 30);
  CHECK(flow.left == std::vector<int>{0});
  CHECK(ends == std::vector<std::string>{"CancelledError", "QueueShutDown", "QueueShutDown"});
}

// ---- Loop binding ---------------------------------------------------------------------------

namespace {
Coro<void> use_on_first_loop(Queue<int>& q, Log* log) {
  Task<void> g = strata::create_task(getter(q, log, "g"));
  co_await strata::sleep(0s);
  q.put_nowait(1);
  co_await g;
}

Coro<void> use_on_second_loop(Queue<int>& q, Log* log) {
  std::exception_ptr e = co_await exception_of(q.get());
  log->push_back(describe(e));
}
}  // namespace

STRATA_LOOP_TEST_CASE("Queue: waiting on a queue bound to another loop throws EventLoopError",
                      "[core][queue]") {
  strata::testing::TestLoop first(TestType::kind);
  strata::testing::TestLoop second(TestType::kind);
  Queue<int> q;
  Log log;
  first.run(use_on_first_loop(q, &log), 5s);
  second.run(use_on_second_loop(q, &log), 5s);
  CHECK(log == Log{"g got 1", "the queue is bound to a different event loop"});
}
