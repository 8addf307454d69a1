#include <strata/core/sleep.hpp>

#include <catch2/catch.hpp>

#include <chrono>
#include <coroutine>
#include <exception>
#include <string>
#include <vector>

#include <strata/core/coro.hpp>
#include <strata/core/errors.hpp>
#include <strata/core/future.hpp>
#include <strata/core/task.hpp>

#include "loop_test.hpp"

using namespace std::chrono_literals;
using Catch::Matchers::Contains;
using strata::CancelledError;
using strata::Coro;
using strata::Duration;
using strata::Task;
using Log = std::vector<std::string>;

namespace {

/// An eager coroutine with no Task behind it.
struct Detached {
  struct promise_type {
    Detached get_return_object() noexcept { return {}; }
    std::suspend_never initial_suspend() const noexcept { return {}; }
    std::suspend_never final_suspend() const noexcept { return {}; }
    void return_void() const noexcept {}
    void unhandled_exception() const noexcept { std::terminate(); }
  };
};

Detached sleep_without_task(Duration d, Log* log) {
  try {
    co_await strata::sleep(d);
    log->push_back("slept");
  } catch (const strata::InvalidStateError& e) {
    log->push_back(std::string("InvalidStateError: ") + e.what());
  }
}

/// The pattern that shows how many loop iterations a sleep takes: a callback scheduled before
/// the sleep ("before"), and one it schedules in turn for the iteration after ("after").
Coro<void> yield_between_callbacks(Duration d, Log* log) {
  strata::EventLoop& loop = strata::get_running_loop();
  loop.call_soon([&loop, log] {
    log->push_back("before");
    loop.call_soon([log] { log->push_back("after"); });
  });
  co_await strata::sleep(d);
  log->push_back("resumed");
  co_await strata::sleep(0s);
  co_await strata::sleep(0s);  // let "after" run before the task ends
}

}  // namespace

STRATA_LOOP_TEST_CASE("sleep: waits at least the given duration", "[core][sleep]") {
  strata::testing::TestLoop loop(TestType::kind);
  auto body = [&]() -> Coro<void> {
    for (Duration d : {Duration(1ms), Duration(20ms), Duration(50ms)}) {
      const strata::TimePoint start = loop->time();
      co_await strata::sleep(d);
      const Duration took = loop->time() - start;
      CHECK(took >= d);
      CHECK(took < d + 2s);  // and it does wake up
    }
  };
  loop.run(body());
}

STRATA_LOOP_TEST_CASE("sleep: sleep(0) yields to the loop for exactly one iteration",
                      "[core][sleep]") {
  strata::testing::TestLoop loop(TestType::kind);
  Log log;
  loop.run(yield_between_callbacks(0s, &log));
  // "before" was ready when the task yielded, so it runs first; the task resumes in that same
  // iteration, before "after", which "before" scheduled for the next one.
  CHECK(log == Log{"before", "resumed", "after"});
}

STRATA_LOOP_TEST_CASE("sleep: a negative duration acts as zero", "[core][sleep]") {
  strata::testing::TestLoop loop(TestType::kind);
  Log log;
  const strata::TimePoint start = loop->time();
  loop.run(yield_between_callbacks(-5s, &log));
  CHECK(log == Log{"before", "resumed", "after"});
  CHECK(loop->time() - start < 1s);
}

STRATA_LOOP_TEST_CASE("sleep: a positive duration takes at least one iteration", "[core][sleep]") {
  strata::testing::TestLoop loop(TestType::kind);
  Log log;
  loop.run(yield_between_callbacks(1ns, &log));
  REQUIRE(log.size() == 3);
  CHECK(log[0] == "before");  // never resumes inside the awaiting step
}

STRATA_LOOP_TEST_CASE("sleep: cancelling a sleeping task throws CancelledError and removes the timer",
                      "[core][sleep]") {
  strata::testing::TestLoop loop(TestType::kind);
  Log log;
  auto sleeper = [&log]() -> Coro<void> {
    try {
      co_await strata::sleep(1h);
      log.push_back("woke up");
    } catch (const CancelledError& e) {
      log.push_back("CancelledError " + e.message());
      throw;
    }
  };
  auto body = [&]() -> Coro<void> {
    const strata::TimePoint start = loop->time();
    Task<void> t = strata::create_task(sleeper());
    co_await strata::sleep(0s);  // now asleep
    CHECK(t.cancel("wake up"));
    try {
      co_await t;
    } catch (const CancelledError& e) {
      log.push_back("main: CancelledError " + e.message());
    }
    CHECK(t.cancelled());
    CHECK(loop->time() - start < 1s);  // the hour-long timer did not hold anything up
  };
  loop.run(body());
  CHECK(log == Log{"CancelledError wake up", "main: CancelledError wake up"});
  // The timer's removal is not observable through the public interface (the timer count lives
  // in the private BaseEventLoop); what is: the loop closes at teardown with nothing pending.
}

STRATA_LOOP_TEST_CASE("sleep: a task cancelled during sleep(0) gets CancelledError when it resumes",
                      "[core][sleep]") {
  strata::testing::TestLoop loop(TestType::kind);
  Log log;
  auto yielder = [&log]() -> Coro<void> {
    try {
      co_await strata::sleep(0s);
      log.push_back("resumed normally");
    } catch (const CancelledError& e) {
      log.push_back("CancelledError " + e.message());
    }
    co_await strata::sleep(0s);  // swallowed: sleeping again works
    log.push_back("slept again");
  };
  auto body = [&]() -> Coro<void> {
    Task<void> t = strata::create_task(yielder());
    co_await strata::sleep(0s);  // t has yielded and waits for its next step
    CHECK_FALSE(t.done());
    CHECK(t.cancel("now"));
    co_await t;
    CHECK_FALSE(t.cancelled());
  };
  loop.run(body());
  CHECK(log == Log{"CancelledError now", "slept again"});
}

STRATA_LOOP_TEST_CASE("sleep: concurrent sleeps wake in deadline order", "[core][sleep]") {
  strata::testing::TestLoop loop(TestType::kind);
  Log log;
  auto sleeper = [&](Duration d, std::string name) -> Coro<void> {
    const strata::TimePoint start = loop->time();
    co_await strata::sleep(d);
    CHECK(loop->time() - start >= d);
    log.push_back(name);
  };
  auto body = [&]() -> Coro<void> {
    // Created out of order; deadlines 10 ms apart.
    std::vector<Task<void>> tasks;
    tasks.push_back(strata::create_task(sleeper(50ms, "50")));
    tasks.push_back(strata::create_task(sleeper(10ms, "10")));
    tasks.push_back(strata::create_task(sleeper(40ms, "40")));
    tasks.push_back(strata::create_task(sleeper(0ms, "0")));
    tasks.push_back(strata::create_task(sleeper(20ms, "20")));
    tasks.push_back(strata::create_task(sleeper(30ms, "30")));
    tasks.push_back(strata::create_task(sleeper(60ms, "60")));
    for (Task<void>& t : tasks) co_await t;
  };
  loop.run(body());
  CHECK(log == Log{"0", "10", "20", "30", "40", "50", "60"});
}

STRATA_LOOP_TEST_CASE("sleep: awaited outside a task throws InvalidStateError", "[core][sleep]") {
  strata::testing::TestLoop loop(TestType::kind);
  Log log;
  Duration d{};
  SECTION("sleep(0)") { d = 0s; }
  SECTION("a positive duration") { d = 10ms; }
  loop->call_soon([&] { sleep_without_task(d, &log); });
  loop->call_soon([&] { loop->stop(); });
  loop->run_forever();
  REQUIRE(log.size() == 1);
  CHECK_THAT(log[0], Contains("InvalidStateError") && Contains("outside a Task"));
}
