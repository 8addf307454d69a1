#include <strata/core/wait.hpp>

#include <catch2/catch.hpp>

#include <algorithm>

#include <chrono>
#include <exception>
#include <stdexcept>
#include <string>
#include <vector>

#include <strata/core/sleep.hpp>

#include "loop_test.hpp"

using namespace std::chrono_literals;

namespace {

using Events = std::vector<std::string>;

strata::Coro<int> value_after(int value, strata::Duration delay, Events* events) {
  co_await strata::sleep(delay);
  events->push_back("done " + std::to_string(value));
  co_return value;
}

/// Waits for @p gate to open, then returns @p value.
strata::Coro<int> gated(strata::Future<void> gate, int value, Events* events) {
  co_await gate;
  events->push_back("done " + std::to_string(value));
  co_return value;
}

strata::Coro<int> fail_after(strata::Duration delay, std::string what, Events* events) {
  co_await strata::sleep(delay);
  events->push_back("fail " + what);
  throw std::runtime_error(what);
}

/// Awaits @p aw and returns the exception it ended with (nullptr when none). The only
/// try/catch in this file's coroutines (g++ 12 miscompiles some coroutines that mix
/// try/catch with other constructs), so the others assert on what it returns.
template <class A>
strata::Coro<std::exception_ptr> exception_of(A aw) {
  std::exception_ptr error;
  try {
    co_await aw;
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
  } catch (const std::exception& x) {
    return x.what();
  }
  return "unknown";
}

/// A vector of futures, built in a plain function: g++ 12 cannot compile a braced
/// initializer list inside a co_await expression ("array used as initializer").
template <class T, class... More>
std::vector<strata::Future<T>> futures_of(const strata::Future<T>& first, const More&... more) {
  return {first, more...};
}

/// The values of done futures, "cancelled" or the exception's message for the others.
std::vector<std::string> outcomes(const std::vector<strata::Future<int>>& futures) {
  std::vector<std::string> out;
  for (const auto& f : futures) {
    if (f.cancelled()) {
      out.push_back("cancelled");
    } else if (std::exception_ptr e = f.exception()) {
      out.push_back(describe(e));
    } else {
      out.push_back(std::to_string(f.result()));
    }
  }
  return out;
}

std::vector<std::string> close_and_collect_errors(strata::testing::TestLoop& loop) {
  loop->close();
  std::vector<std::string> out;
  for (const auto& e : loop.errors()) out.push_back(e.message + " / " + describe(e.exception));
  return out;
}

struct Split {
  std::vector<std::string> done;
  std::size_t pending = 0;
  bool pending_cancelled = true;
  std::vector<std::string> finally;  // every future's outcome once all are done
};

// ---- first_completed ------------------------------------------------------------------------

strata::Coro<void> first_completed(Split* out, Events* events) {
  strata::EventLoop& loop = strata::get_running_loop();
  strata::Future<void> open_slow(loop);
  strata::Future<void> open_middle(loop);
  strata::Task<int> slow = strata::create_task(gated(open_slow, 1, events));
  strata::Task<int> fast = strata::create_task(value_after(2, 1ms, events));
  strata::Task<int> middle = strata::create_task(gated(open_middle, 3, events));
  auto [done, pending] = co_await strata::wait(futures_of(slow, fast, middle),
                                                strata::ReturnWhen::first_completed);
  events->push_back("wait returned");
  out->done = outcomes(done);
  out->pending = pending.size();
  out->pending_cancelled = pending[0].cancelled() || pending[1].cancelled();
  open_middle.set_result();
  open_slow.set_result();
  co_await strata::wait(std::move(pending));
  out->finally = outcomes(futures_of(slow, fast, middle));
}

}  // namespace

STRATA_LOOP_TEST_CASE("wait: first_completed returns once one future is done, others pending",
                      "[core][wait]") {
  strata::testing::TestLoop loop(TestType::kind, strata::testing::TestClock::virtual_);
  Events events;
  Split out;
  loop.run(first_completed(&out, &events));
  CHECK(out.done == std::vector<std::string>{"2"});
  CHECK(out.pending == 2);
  CHECK_FALSE(out.pending_cancelled);
  CHECK(out.finally == std::vector<std::string>{"1", "2", "3"});
  CHECK(events == Events{"done 2", "wait returned", "done 3", "done 1"});
}

// ---- first_exception ------------------------------------------------------------------------

namespace {
strata::Coro<void> first_exception(Split* out, Events* events) {
  strata::Task<int> ok = strata::create_task(value_after(1, 1ms, events));
  strata::Task<int> failing = strata::create_task(fail_after(5ms, "broken", events));
  strata::Future<void> open_slow(strata::get_running_loop());
  strata::Task<int> slow = strata::create_task(gated(open_slow, 3, events));
  auto result = co_await strata::wait(futures_of(ok, failing, slow),
                                      strata::ReturnWhen::first_exception);
  events->push_back("wait returned");
  out->done = outcomes(result.done);  // retrieves the failure
  out->pending = result.pending.size();
  out->pending_cancelled = result.pending[0].cancelled();
  open_slow.set_result();
  co_await strata::wait(std::move(result.pending));
  out->finally = outcomes(futures_of(ok, failing, slow));
}

strata::Coro<void> first_exception_without_failure(Split* out, Events* events) {
  strata::Task<int> a = strata::create_task(value_after(1, 5ms, events));
  strata::Task<int> b = strata::create_task(value_after(2, 1ms, events));
  auto result = co_await strata::wait(futures_of(a, b), strata::ReturnWhen::first_exception);
  events->push_back("wait returned");
  out->done = outcomes(result.done);
  out->pending = result.pending.size();
}

strata::Coro<void> first_exception_ignores_cancellation(Split* out, Events* events) {
  strata::Task<int> victim = strata::create_task(value_after(1, 1h, events));
  strata::Task<int> b = strata::create_task(value_after(2, 5ms, events));
  strata::get_running_loop().call_soon([victim]() mutable { victim.cancel(); });
  auto result = co_await strata::wait(futures_of(victim, b), strata::ReturnWhen::first_exception);
  events->push_back("wait returned");
  out->done = outcomes(result.done);
  out->pending = result.pending.size();
}
}  // namespace

STRATA_LOOP_TEST_CASE("wait: first_exception returns once a future fails, others pending",
                      "[core][wait]") {
  strata::testing::TestLoop loop(TestType::kind, strata::testing::TestClock::virtual_);
  Events events;
  Split out;
  loop.run(first_exception(&out, &events));
  CHECK(out.done == std::vector<std::string>{"1", "broken"});
  CHECK(out.pending == 1);
  CHECK_FALSE(out.pending_cancelled);
  CHECK(out.finally == std::vector<std::string>{"1", "broken", "3"});
  CHECK(events == Events{"done 1", "fail broken", "wait returned", "done 3"});
}

STRATA_LOOP_TEST_CASE("wait: first_exception without a failure waits for every future",
                      "[core][wait]") {
  strata::testing::TestLoop loop(TestType::kind, strata::testing::TestClock::virtual_);
  Events events;
  Split out;
  loop.run(first_exception_without_failure(&out, &events));
  CHECK(out.done == std::vector<std::string>{"1", "2"});
  CHECK(out.pending == 0);
  // Both finished before wait() returned, in either order: a loaded machine may start the
  // 1 ms sleep late enough to end after the 5 ms one.
  REQUIRE(events.size() == 3);
  CHECK(std::is_permutation(events.begin(), events.begin() + 2,
                            Events{"done 1", "done 2"}.begin()));
  CHECK(events.back() == "wait returned");
}

STRATA_LOOP_TEST_CASE("wait: first_exception does not count a cancellation as a failure",
                      "[core][wait]") {
  strata::testing::TestLoop loop(TestType::kind, strata::testing::TestClock::virtual_);
  Events events;
  Split out;
  loop.run(first_exception_ignores_cancellation(&out, &events));
  CHECK(out.done == std::vector<std::string>{"cancelled", "2"});
  CHECK(out.pending == 0);
  CHECK(events == Events{"done 2", "wait returned"});
}

// ---- all_completed --------------------------------------------------------------------------

namespace {
strata::Coro<void> all_completed(Split* out, Events* events) {
  strata::Task<int> a = strata::create_task(value_after(1, 10ms, events));
  strata::Task<int> b = strata::create_task(fail_after(1ms, "b failed", events));
  strata::Task<int> c = strata::create_task(value_after(3, 5ms, events));
  // The default is all_completed; the task overload returns futures.
  std::vector<strata::Task<int>> tasks{a, b, c};
  strata::WaitResult<int> result = co_await strata::wait(std::move(tasks));
  events->push_back("wait returned");
  out->done = outcomes(result.done);
  out->pending = result.pending.size();
}
}  // namespace

STRATA_LOOP_TEST_CASE(
    "wait: all_completed waits for every future, failures included, and raises nothing",
    "[core][wait]") {
  strata::testing::TestLoop loop(TestType::kind, strata::testing::TestClock::virtual_);
  Events events;
  Split out;
  loop.run(all_completed(&out, &events));
  // done keeps the order the futures were given in, not the completion order.
  CHECK(out.done == std::vector<std::string>{"1", "b failed", "3"});
  CHECK(out.pending == 0);
  CHECK(events == Events{"fail b failed", "done 3", "done 1", "wait returned"});
}

// ---- timeout --------------------------------------------------------------------------------

namespace {
strata::Coro<void> wait_with_timeout(Split* out, Events* events) {
  strata::Task<int> fast = strata::create_task(value_after(1, 1ms, events));
  strata::Task<int> slow = strata::create_task(value_after(2, 30ms, events));
  auto result = co_await strata::wait(futures_of(fast, slow), strata::ReturnWhen::all_completed,
                                      10ms);
  events->push_back("wait returned");
  out->done = outcomes(result.done);
  out->pending = result.pending.size();
  out->pending_cancelled = slow.cancelled() || slow.done();
  // Not cancelled: it still delivers its result.
  int late = co_await slow;
  out->finally.push_back(std::to_string(late));
}
}  // namespace

STRATA_LOOP_TEST_CASE("wait: on timeout the unfinished futures are returned pending, not cancelled",
                      "[core][wait]") {
  strata::testing::TestLoop loop(TestType::kind, strata::testing::TestClock::virtual_);
  Events events;
  Split out;
  loop.run(wait_with_timeout(&out, &events));
  CHECK(out.done == std::vector<std::string>{"1"});
  CHECK(out.pending == 1);
  CHECK_FALSE(out.pending_cancelled);
  CHECK(out.finally == std::vector<std::string>{"2"});
  CHECK(events == Events{"done 1", "wait returned", "done 2"});
}

// ---- already done ---------------------------------------------------------------------------

namespace {
strata::Coro<void> wait_on_done_futures(Split* out) {
  strata::EventLoop& loop = strata::get_running_loop();
  strata::Future<int> a(loop);
  strata::Future<int> b(loop);
  a.set_result(1);
  b.set_exception(std::runtime_error("b"));
  auto result = co_await strata::wait(futures_of(a, b), strata::ReturnWhen::first_completed);
  out->done = outcomes(result.done);
  out->pending = result.pending.size();
}
}  // namespace

STRATA_LOOP_TEST_CASE("wait: futures done before the call are all reported done",
                      "[core][wait]") {
  strata::testing::TestLoop loop(TestType::kind, strata::testing::TestClock::virtual_);
  Split out;
  loop.run(wait_on_done_futures(&out));
  CHECK(out.done == std::vector<std::string>{"1", "b"});
  CHECK(out.pending == 0);
}

// ---- misuse ---------------------------------------------------------------------------------

TEST_CASE("wait: an empty vector throws std::invalid_argument at the call", "[core][wait]") {
  CHECK_THROWS_WITH((void)strata::wait(std::vector<strata::Future<int>>()),
                    "wait() needs at least one future");
  CHECK_THROWS_AS((void)strata::wait(std::vector<strata::Task<void>>()), std::invalid_argument);
}

// ---- cancellation ---------------------------------------------------------------------------

namespace {
strata::Coro<void> waiter(strata::Future<int> future, strata::Task<int> task,
                          strata::Future<void> started, Events* events) {
  started.set_result();
  co_await strata::wait(futures_of(future, task));
  events->push_back("waiter finished");  // never: it is cancelled first
}

struct CancelWaiter {
  bool waiter_cancelled = false;
  bool future_untouched = false;
  bool task_untouched = false;
  int future_value = 0;
  int task_value = 0;
};

strata::Coro<void> cancel_the_waiter(CancelWaiter* out, Events* events) {
  strata::EventLoop& loop = strata::get_running_loop();
  strata::Future<int> future(loop);
  strata::Future<void> started(loop);
  strata::Task<int> task = strata::create_task(value_after(2, 5ms, events));
  strata::Task<void> w = strata::create_task(waiter(future, task, started, events), "waiter");
  co_await started;  // the waiter suspends in wait() within the step that set this
  w.cancel();
  events->push_back("waiter cancel requested");
  co_await exception_of(w);
  out->waiter_cancelled = w.cancelled();
  out->future_untouched = !future.done();
  out->task_untouched = !task.done();
  future.set_result(1);  // the removed wait() callbacks must not fire
  out->future_value = co_await future;
  out->task_value = co_await task;
}
}  // namespace

STRATA_LOOP_TEST_CASE("wait: cancelling the waiting task leaves the futures running",
                      "[core][wait]") {
  strata::testing::TestLoop loop(TestType::kind, strata::testing::TestClock::virtual_);
  Events events;
  CancelWaiter out;
  loop.run(cancel_the_waiter(&out, &events));
  CHECK(out.waiter_cancelled);
  CHECK(out.future_untouched);
  CHECK(out.task_untouched);
  CHECK(out.future_value == 1);
  CHECK(out.task_value == 2);
  CHECK(events == Events{"waiter cancel requested", "done 2"});
  CHECK(close_and_collect_errors(loop).empty());
}
