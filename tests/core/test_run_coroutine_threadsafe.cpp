#include <strata/core/run_coroutine_threadsafe.hpp>

#include <catch2/catch.hpp>

#include <atomic>
#include <chrono>
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

#include "loop_test.hpp"

using namespace std::chrono_literals;
using strata::CancelledError;
using strata::ConcurrentFuture;
using strata::Coro;
using strata::EventLoop;
using strata::EventLoopError;
using strata::Future;
using strata::run_coroutine_threadsafe;
using strata::testing::TestLoop;

namespace {

/// Runs @p loop until something calls stop(); stops it after @p deadline and returns false.
bool run_until_stopped(EventLoop& loop, strata::Duration deadline = 20s) {
  bool timed_out = false;
  strata::TimerHandle watchdog = loop.call_later(deadline, [&] {
    timed_out = true;
    loop.stop();
  });
  loop.run_forever();
  watchdog.cancel();
  return !timed_out;
}

void stop_from_thread(EventLoop& loop) {
  loop.call_soon_threadsafe([&loop] { loop.stop(); });
}

Coro<int> doubled(int v, std::thread::id* ran_on) {
  *ran_on = std::this_thread::get_id();
  co_return v * 2;
}

Coro<int> failing() {
  throw std::runtime_error("coroutine failed");
  co_return 0;
}

/// Records its task, signals @p started, then waits on @p f; notes a CancelledError.
Coro<int> wait_on(Future<int> f, strata::TaskRef* task, std::latch* started,
                  std::atomic<bool>* saw_cancel) {
  *task = strata::current_task();
  started->count_down();
  try {
    co_return co_await f;
  } catch (const CancelledError&) {
    *saw_cancel = true;
    throw;
  }
}

Coro<void> nothing() { co_return; }

}  // namespace

STRATA_LOOP_TEST_CASE("run_coroutine_threadsafe: a foreign thread gets the result, computed on "
                      "the loop thread",
                      "[core][run_coroutine_threadsafe]") {
  TestLoop loop(TestType::kind);
  std::thread::id ran_on;
  int result = 0;
  bool done_after_get = false;
  std::thread client([&] {
    ConcurrentFuture<int> h = run_coroutine_threadsafe(doubled(21, &ran_on), *loop);
    result = h.get();
    done_after_get = h.done() && !h.cancelled();
    stop_from_thread(*loop);
  });
  CHECK(run_until_stopped(*loop));
  client.join();
  CHECK(result == 42);
  CHECK(done_after_get);
  CHECK(ran_on == std::this_thread::get_id());
}

STRATA_LOOP_TEST_CASE("run_coroutine_threadsafe: get rethrows the coroutine's exception",
                      "[core][run_coroutine_threadsafe]") {
  TestLoop loop(TestType::kind);
  std::string what;
  std::thread client([&] {
    ConcurrentFuture<int> h = run_coroutine_threadsafe(failing(), *loop);
    try {
      h.get();
      what = "no exception";
    } catch (const std::runtime_error& e) {
      what = e.what();
    }
    stop_from_thread(*loop);
  });
  CHECK(run_until_stopped(*loop));
  client.join();
  CHECK(what == "coroutine failed");
  CHECK(loop.errors().empty());  // the task's exception was retrieved
}

STRATA_LOOP_TEST_CASE("run_coroutine_threadsafe: a task cancelled on the loop makes get throw "
                      "CancelledError",
                      "[core][run_coroutine_threadsafe]") {
  TestLoop loop(TestType::kind);
  Future<int> never(*loop);
  strata::TaskRef task;
  std::latch started(1);
  std::atomic<bool> saw_cancel{false};
  std::string outcome;
  bool handle_cancelled = false;
  std::thread client([&] {
    ConcurrentFuture<int> h =
        run_coroutine_threadsafe(wait_on(never, &task, &started, &saw_cancel), *loop);
    started.wait();
    loop->call_soon_threadsafe([&] { task.cancel("from the loop"); });
    try {
      h.get();
      outcome = "no exception";
    } catch (const CancelledError& e) {
      outcome = "cancelled: " + e.message();
    }
    handle_cancelled = h.cancelled();
    stop_from_thread(*loop);
  });
  CHECK(run_until_stopped(*loop));
  client.join();
  CHECK(outcome == "cancelled: from the loop");
  CHECK(handle_cancelled);
  CHECK(saw_cancel);
}

STRATA_LOOP_TEST_CASE("run_coroutine_threadsafe: cancelling the handle cancels the task",
                      "[core][run_coroutine_threadsafe]") {
  TestLoop loop(TestType::kind);
  Future<int> never(*loop);
  strata::TaskRef task;
  std::latch started(1);
  std::atomic<bool> saw_cancel{false};
  bool cancel_returned = false;
  bool second_cancel_returned = true;
  bool get_threw_cancelled = false;
  std::thread client([&] {
    ConcurrentFuture<int> h =
        run_coroutine_threadsafe(wait_on(never, &task, &started, &saw_cancel), *loop);
    started.wait();
    cancel_returned = h.cancel("from the client");
    second_cancel_returned = h.cancel();
    try {
      h.get();
    } catch (const CancelledError& e) {
      get_threw_cancelled = e.message() == "from the client";
    }
    // The task's cancellation was posted before this stop: it has been delivered by then.
    stop_from_thread(*loop);
  });
  CHECK(run_until_stopped(*loop));
  client.join();
  CHECK(cancel_returned);
  CHECK_FALSE(second_cancel_returned);
  CHECK(get_threw_cancelled);
  // The cancel reached the task's co_await; let the task finish unwinding.
  loop.run(nothing());
  CHECK(saw_cancel);
  REQUIRE(task);
  CHECK(task.cancelled());
}

STRATA_LOOP_TEST_CASE("run_coroutine_threadsafe: wait_for reports whether the coroutine is done",
                      "[core][run_coroutine_threadsafe]") {
  TestLoop loop(TestType::kind);
  Future<int> gate(*loop);
  strata::TaskRef task;
  std::latch started(1);
  std::atomic<bool> saw_cancel{false};
  bool done_before = true;
  bool waited_before = true;
  bool waited_after = false;
  int result = 0;
  std::thread client([&] {
    ConcurrentFuture<int> h =
        run_coroutine_threadsafe(wait_on(gate, &task, &started, &saw_cancel), *loop);
    started.wait();
    done_before = h.done();
    waited_before = h.wait_for(0ms);
    loop->call_soon_threadsafe([&] { gate.set_result(8); });
    waited_after = h.wait_for(20s);
    result = h.get();
    stop_from_thread(*loop);
  });
  CHECK(run_until_stopped(*loop));
  client.join();
  CHECK_FALSE(done_before);
  CHECK_FALSE(waited_before);
  CHECK(waited_after);
  CHECK(result == 8);
  CHECK_FALSE(saw_cancel);
}

STRATA_LOOP_TEST_CASE("run_coroutine_threadsafe: get on the loop's own thread throws "
                      "EventLoopError instead of hanging",
                      "[core][run_coroutine_threadsafe]") {
  TestLoop loop(TestType::kind);
  std::thread::id ran_on;
  ConcurrentFuture<int> h;
  bool threw = false;
  loop->call_soon([&] {
    h = run_coroutine_threadsafe(doubled(2, &ran_on), *loop);
    try {
      h.get();
    } catch (const EventLoopError&) {
      threw = true;
    }
  });
  loop.run(nothing());  // runs the callback, and the coroutine in later iterations
  loop.run(nothing());
  CHECK(threw);
  REQUIRE(h.wait_for(0s));
  CHECK(h.get() == 4);  // no loop runs on this thread now
}

STRATA_LOOP_TEST_CASE("run_coroutine_threadsafe: closing the loop before the coroutine ran fails "
                      "the handle with EventLoopError",
                      "[core][run_coroutine_threadsafe]") {
  TestLoop loop(TestType::kind);
  std::thread::id ran_on;
  ConcurrentFuture<int> h = run_coroutine_threadsafe(doubled(1, &ran_on), *loop);
  loop->close();
  REQUIRE(h.done());
  CHECK_THROWS_AS(h.get(), EventLoopError);
  CHECK(ran_on == std::thread::id{});
}

STRATA_LOOP_TEST_CASE("run_coroutine_threadsafe: closing the loop while the task is pending "
                      "fails the handle with EventLoopError",
                      "[core][run_coroutine_threadsafe]") {
  TestLoop loop(TestType::kind);
  Future<int> never(*loop);
  strata::TaskRef task;
  std::latch started(1);
  std::atomic<bool> saw_cancel{false};
  ConcurrentFuture<int> h =
      run_coroutine_threadsafe(wait_on(never, &task, &started, &saw_cancel), *loop);
  loop->call_soon([&] { loop->call_soon([&] { loop->stop(); }); });
  loop->run_forever();  // the task starts and waits
  REQUIRE(task);
  task = {};
  never = {};
  loop->close();
  REQUIRE(h.done());
  CHECK_THROWS_AS(h.get(), EventLoopError);
}

STRATA_LOOP_TEST_CASE("run_coroutine_threadsafe: a closed loop throws EventLoopError",
                      "[core][run_coroutine_threadsafe]") {
  TestLoop loop(TestType::kind);
  loop->close();
  std::thread::id ran_on;
  CHECK_THROWS_AS(run_coroutine_threadsafe(doubled(1, &ran_on), *loop), EventLoopError);
}
