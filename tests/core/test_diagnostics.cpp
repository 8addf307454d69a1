// Observability: task dumps with await chains, the stall detector, loop metrics, and the test
// kit's virtual time they are checked with.

#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include <strata/core/diagnostics.hpp>
#include <strata/core/errors.hpp>
#include <strata/core/event.hpp>
#include <strata/core/future.hpp>
#include <strata/core/lock.hpp>
#include <strata/core/queue.hpp>
#include <strata/core/sleep.hpp>
#include <strata/core/task.hpp>
#include <strata/core/timeout.hpp>

#include "loop_test.hpp"

using namespace std::chrono_literals;
using strata::Coro;
using strata::Duration;
using strata::testing::TestClock;
using strata::testing::TestLoop;

namespace {

// The lines of these co_awaits are part of the expected dumps: each stays on one line with its
// line number beside it.
Coro<void> leaf_sleep(Duration d) { co_await strata::sleep(d); }  constexpr unsigned leaf_line = __LINE__;
Coro<void> middle(Duration d) { co_await leaf_sleep(d); }  constexpr unsigned middle_line = __LINE__;
Coro<int> worker(Duration d) { co_await middle(d); co_return 7; }  constexpr unsigned worker_line = __LINE__;
Coro<int> parent(strata::Task<int> w) { int v = co_await w; co_return v + 1; }  constexpr unsigned parent_line = __LINE__;
Coro<void> take_lock(strata::Lock& lock) { auto guard = co_await lock.acquire(); }  constexpr unsigned lock_line = __LINE__;
Coro<int> get_item(strata::Queue<int>& q) { int v = co_await q.get(); co_return v; }  constexpr unsigned get_line = __LINE__;

std::string at(const char* function, unsigned line) {
  return std::string(function) + " at test_diagnostics.cpp:" + std::to_string(line);
}

}  // namespace

STRATA_LOOP_TEST_CASE("virtual time: a sleep of 30 s takes no real time, timers keep their order",
                      "[diagnostics][virtual-time]") {
  TestLoop loop(TestType::kind, TestClock::virtual_);
  const auto real_start = std::chrono::steady_clock::now();
  const strata::TimePoint start = loop->time();
  std::vector<std::pair<int, Duration>> fired;
  for (int i : {3, 1, 2}) {
    loop->call_later(i * 10s, [&, i] { fired.emplace_back(i, loop->time() - start); });
  }
  loop.run([]() -> Coro<void> { co_await strata::sleep(30s); }());
  CHECK(loop->time() - start == 30s);
  REQUIRE(fired.size() == 3);
  CHECK(fired[0] == std::pair<int, Duration>{1, 10s});
  CHECK(fired[1] == std::pair<int, Duration>{2, 20s});
  CHECK(fired[2] == std::pair<int, Duration>{3, 30s});
  // Far below the 30 s a real clock would take (a bound, not a measurement).
  CHECK(std::chrono::steady_clock::now() - real_start < 10s);

  loop.advance(90s);
  CHECK(loop->time() - start == 120s);
}

STRATA_LOOP_TEST_CASE("virtual time: wait_for() times out at its virtual deadline",
                      "[diagnostics][virtual-time]") {
  TestLoop loop(TestType::kind, TestClock::virtual_);
  const strata::TimePoint start = loop->time();
  strata::Future<int> never(*loop);
  bool timed_out = false;
  loop.run([](strata::Future<int> f, bool& out) -> Coro<void> {
    try {
      co_await strata::wait_for(f, 45s);
    } catch (const strata::TimeoutError&) {
      out = true;
    }
  }(never, timed_out));
  CHECK(timed_out);
  CHECK(loop->time() - start == 45s);
}

STRATA_LOOP_TEST_CASE("dump_tasks: nested tasks show as a tree with their await chains",
                      "[diagnostics][dump]") {
  TestLoop loop(TestType::kind, TestClock::virtual_);
  strata::Lock lock;
  strata::Queue<int> queue;
  std::string dump;
  std::vector<strata::TaskInfo> tree;
  loop.run([](strata::EventLoop& l, strata::Lock& lk, strata::Queue<int>& q, std::string& out,
              std::vector<strata::TaskInfo>& tree_out) -> Coro<void> {
    auto w = l.create_task(worker(5s), "worker");
    auto p = l.create_task(parent(w), "parent");
    auto guard = co_await lk.acquire();
    auto blocked = l.create_task(take_lock(lk), "blocked");
    auto getter = l.create_task(get_item(q), "getter");
    co_await strata::sleep(2s);
    out = strata::format_tasks(l);
    tree_out = strata::task_tree(l);
    guard.unlock();
    q.put_nowait(1);
    const int from_parent = co_await p;
    CHECK(from_parent == 8);
    co_await blocked;
    const int item = co_await getter;
    CHECK(item == 1);
  }(*loop, lock, queue, dump, tree));

  const std::string expected =
      "Task 'test-main' (running)\n"
      "Task 'parent' (suspended for 2.000 s)\n"
      "    " + at("parent", parent_line) + " awaiting Task 'worker'\n"
      "  Task 'worker' (suspended for 2.000 s)\n"
      "      " + at("worker", worker_line) + "\n"
      "      " + at("middle", middle_line) + "\n"
      "      " + at("leaf_sleep", leaf_line) + " awaiting sleep\n"
      "Task 'blocked' (suspended for 2.000 s)\n"
      "    " + at("take_lock", lock_line) + " awaiting Lock::acquire\n"
      "Task 'getter' (suspended for 2.000 s)\n"
      "    " + at("get_item", get_line) + "\n";
  // The getter's chain continues into Queue::get's own coroutine (a header of core).
  REQUIRE(dump.substr(0, expected.size()) == expected);
  CHECK(dump.find("awaiting queue wait\n", expected.size()) != std::string::npos);

  REQUIRE(tree.size() == 4);
  CHECK(tree[0].state == strata::TaskInfo::State::running);
  CHECK(tree[1].name == "parent");
  REQUIRE(tree[1].awaited_tasks.size() == 1);
  const strata::TaskInfo& w = tree[1].awaited_tasks[0];
  CHECK(w.name == "worker");
  CHECK(w.state == strata::TaskInfo::State::suspended);
  CHECK(w.suspended_for == 2s);
  REQUIRE(w.chain.size() == 3);
  CHECK(w.chain[2].function == "leaf_sleep");
  CHECK(w.chain[2].line == leaf_line);
  CHECK(std::string(w.chain[2].awaiting) == "sleep");
}

STRATA_LOOP_TEST_CASE("dump_tasks: a task not started yet and one yielding are told apart",
                      "[diagnostics][dump]") {
  TestLoop loop(TestType::kind);
  std::vector<strata::TaskInfo> tree;
  loop.run([](strata::EventLoop& l, std::vector<strata::TaskInfo>& out) -> Coro<void> {
    auto yielder = l.create_task([]() -> Coro<void> {
      for (int i = 0; i < 3; ++i) co_await strata::sleep(0s);
    }(), "yielder");
    co_await strata::sleep(0s);  // the yielder runs to its first sleep(0)
    auto fresh = l.create_task([]() -> Coro<void> { co_return; }(), "fresh");
    out = strata::task_tree(l);
    co_await yielder;
    co_await fresh;
  }(*loop, tree));
  REQUIRE(tree.size() == 3);
  CHECK(tree[1].name == "yielder");
  CHECK(tree[1].state == strata::TaskInfo::State::scheduled);
  REQUIRE(tree[1].chain.size() == 1);
  CHECK(std::string(tree[1].chain[0].awaiting) == "sleep");
  CHECK(tree[2].name == "fresh");
  CHECK(tree[2].state == strata::TaskInfo::State::not_started);
  CHECK(tree[2].chain.empty());
}

STRATA_LOOP_TEST_CASE("stall detector: a callback that blocks the loop is reported once, named",
                      "[diagnostics][stall]") {
  TestLoop loop(TestType::kind);
  std::vector<strata::StallReport> reports;
  loop->set_stall_threshold(50ms);
  loop->set_stall_handler([&](const strata::StallReport& r) { reports.push_back(r); });
  loop.run([](strata::EventLoop& l) -> Coro<void> {
    strata::Future<void> done(l);
    l.call_soon([done]() mutable {
      std::this_thread::sleep_for(80ms);  // the blocking call under test
      done.set_result();
    });
    l.call_soon([] {});  // a quick one: not reported
    co_await done;
  }(*loop));
  REQUIRE(reports.size() == 1);
  CHECK(reports[0].held >= 50ms);
  CHECK(reports[0].task.empty());
  CHECK(reports[0].callback.find("lambda") != std::string::npos);
  CHECK(loop->metrics().stalls == 1);
}

namespace {
constexpr unsigned blocking_resume_line = __LINE__ + 2;
Coro<void> blocking_step(strata::Event& go) {
  co_await go.wait();
  std::this_thread::sleep_for(80ms);  // the blocking call under test
  co_await strata::sleep(0s);         // blocking_resume_line + 2
}
constexpr unsigned blocking_next_line = blocking_resume_line + 2;
}  // namespace

STRATA_LOOP_TEST_CASE("stall detector: a task step is reported with where it resumed and waits",
                      "[diagnostics][stall]") {
  TestLoop loop(TestType::kind);
  std::vector<strata::StallReport> reports;
  loop->set_stall_threshold(50ms);
  loop->set_stall_handler([&](const strata::StallReport& r) { reports.push_back(r); });
  strata::Event go;
  loop.run([](strata::EventLoop& l, strata::Event& g) -> Coro<void> {
    auto t = l.create_task(blocking_step(g), "blocker");
    co_await strata::sleep(0s);
    g.set();
    co_await t;
  }(*loop, go));
  REQUIRE(reports.size() == 1);
  const strata::StallReport& r = reports[0];
  CHECK(r.held >= 50ms);
  CHECK(r.task == "blocker");
  CHECK(r.resumed_from == at("blocking_step", blocking_resume_line));
  CHECK(r.now_awaiting.find(at("blocking_step", blocking_next_line) + " awaiting sleep") !=
        std::string::npos);
  CHECK(r.format().find("held the loop for") != std::string::npos);
}

STRATA_LOOP_TEST_CASE("stall detector: off with a zero threshold", "[diagnostics][stall]") {
  TestLoop loop(TestType::kind);
  int reports = 0;
  loop->set_stall_threshold(Duration::zero());
  loop->set_stall_handler([&](const strata::StallReport&) { ++reports; });
  loop.run([](strata::EventLoop& l) -> Coro<void> {
    strata::Future<void> done(l);
    l.call_soon([done]() mutable {
      std::this_thread::sleep_for(20ms);
      done.set_result();
    });
    co_await done;
  }(*loop));
  CHECK(reports == 0);
  CHECK(loop->metrics().stalls == 0);
}

STRATA_LOOP_TEST_CASE("metrics: callbacks, queue depth, tasks and loop lag are counted",
                      "[diagnostics][metrics]") {
  TestLoop loop(TestType::kind, TestClock::virtual_);
  const strata::LoopMetrics before = loop->metrics();
  CHECK(before.tasks_alive == 0);
  loop.run([](strata::EventLoop& l) -> Coro<void> {
    const std::size_t timers_before = l.metrics().timers_pending;  // the test's deadline
    for (int i = 0; i < 5; ++i) l.call_soon([] {});
    for (int i = 1; i <= 4; ++i) l.call_later(i * 1s, [] {});
    auto t = l.create_task([]() -> Coro<void> { co_await strata::sleep(10s); }());
    CHECK(l.metrics().tasks_alive == 2);
    CHECK(l.metrics().timers_pending == timers_before + 4);
    co_await t;
  }(*loop));
  const strata::LoopMetrics m = loop->metrics();
  CHECK(m.iterations > before.iterations);
  CHECK(m.callbacks >= 5 + 4 + 2);
  CHECK(m.ready_max >= 6);  // the five callbacks and the new task's first step
  // On virtual time every timer runs exactly at its deadline: no lag.
  std::uint64_t fired = 0;
  for (auto n : m.lag_histogram) fired += n;
  CHECK(fired >= 5);  // the four timers and the sleep's
  CHECK(m.lag_histogram[0] == fired);
  CHECK(m.lag_max == Duration::zero());
  CHECK(m.format().find("callbacks ") != std::string::npos);
}
