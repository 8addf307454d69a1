#include <strata/core/timeout.hpp>

#include <catch2/catch.hpp>

#include <chrono>
#include <coroutine>
#include <exception>
#include <optional>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

#include <strata/core/sleep.hpp>
#include <strata/core/wait.hpp>

#include "loop_test.hpp"

using namespace std::chrono_literals;

namespace {

using Events = std::vector<std::string>;

strata::Coro<int> value_after(int value, strata::Duration delay, Events* events) {
  co_await strata::sleep(delay);
  events->push_back("done " + std::to_string(value));
  co_return value;
}

strata::Coro<void> sleep_forever() { co_await strata::sleep(1h); }

/// Awaits @p aw and returns the exception it ended with (nullptr when none). The only
/// try/catch in most of this file's coroutines (g++ 12 miscompiles some coroutines that mix
/// try/catch with other constructs), so the others assert on what it returns.
template <class A>
strata::Coro<std::exception_ptr> exception_of(A aw) {
  std::exception_ptr error;
  try {
    co_await std::move(aw);
  } catch (...) {
    error = std::current_exception();
  }
  co_return error;
}

/// The kind of @p e: "none", "CancelledError", "TimeoutError", "InvalidStateError" or its what().
std::string kind(const std::exception_ptr& e) {
  if (!e) return "none";
  try {
    std::rethrow_exception(e);
  } catch (const strata::CancelledError&) {
    return "CancelledError";
  } catch (const strata::TimeoutError&) {
    return "TimeoutError";
  } catch (const strata::InvalidStateError&) {
    return "InvalidStateError";
  } catch (const std::exception& x) {
    return x.what();
  }
  return "unknown";
}

/// Sleeps for @p delay; records "<name> cancelled" if cancelled and rethrows, else
/// "<name> done" and returns @p value.
strata::Coro<int> recorded_sleep(std::string name, strata::Duration delay, int value,
                                 Events* events) {
  std::exception_ptr error = co_await exception_of(strata::sleep(delay));
  if (error) {
    events->push_back(name + " " + kind(error));
    std::rethrow_exception(error);
  }
  events->push_back(name + " done");
  co_return value;
}

/// Sleeps until cancelled, then spends @p cleanup on asynchronous clean-up before ending
/// cancelled; records each stage.
strata::Coro<int> slow_to_cancel(strata::Duration cleanup, Events* events) {
  std::exception_ptr error = co_await exception_of(sleep_forever());
  events->push_back("inner " + kind(error));
  co_await strata::sleep(cleanup);
  events->push_back("inner cleanup done");
  std::rethrow_exception(error);
}

/// Sleeps until cancelled, swallows the cancellation and returns @p value.
strata::Coro<int> swallows_cancel(int value, Events* events) {
  std::exception_ptr error = co_await exception_of(sleep_forever());
  events->push_back("swallowed " + kind(error));
  co_return value;
}

template <class T, class... More>
std::vector<strata::Future<T>> futures_of(const strata::Future<T>& first, const More&... more) {
  return {first, more...};
}

struct Result {
  std::string error = "not run";
  int value = 0;
  int cancelling_after = -1;
};

/// Awaits @p aw and records its value or error and the task's cancelling() count afterwards.
template <class T>
strata::Coro<void> record(strata::Coro<T> aw, Result* out) {
  std::exception_ptr error;
  try {
    if constexpr (std::is_void_v<T>) {
      co_await std::move(aw);
    } else {
      out->value = co_await std::move(aw);
    }
  } catch (...) {
    error = std::current_exception();
  }
  out->error = kind(error);
  out->cancelling_after = strata::current_task().cancelling();
}

/// timeout() reads the running loop's clock when called (as asyncio.timeout() does), so the
/// tests call it from inside the loop.
strata::Coro<void> record_timeout(std::optional<strata::Duration> delay, strata::Coro<int> aw,
                                  Result* out) {
  co_await record(strata::timeout(delay, std::move(aw)), out);
}

}  // namespace

// ---- timeout ---------------------------------------------------------------------------------

STRATA_LOOP_TEST_CASE("timeout: returns the awaited value when it finishes in time",
                      "[core][timeout]") {
  strata::testing::TestLoop loop(TestType::kind, strata::testing::TestClock::virtual_);
  Events events;
  Result out;
  loop.run(record_timeout(1h, value_after(5, 1ms, &events), &out));
  CHECK(out.error == "none");
  CHECK(out.value == 5);
  CHECK(out.cancelling_after == 0);
}

STRATA_LOOP_TEST_CASE("timeout: without a delay it waits as long as it takes",
                      "[core][timeout]") {
  strata::testing::TestLoop loop(TestType::kind, strata::testing::TestClock::virtual_);
  Events events;
  Result out;
  loop.run(record_timeout(std::nullopt, value_after(6, 2ms, &events), &out));
  CHECK(out.error == "none");
  CHECK(out.value == 6);
}

namespace {
strata::Coro<void> expires(Result* out, Events* events) {
  co_await record(strata::timeout(2ms, recorded_sleep("body", 1h, 1, events)), out);
  events->push_back(out->error);
  // The task is not left cancelled: it can await again.
  co_await strata::sleep(1ms);
  events->push_back("slept after");
}
}  // namespace

STRATA_LOOP_TEST_CASE(
    "timeout: when the delay passes the body sees CancelledError and the caller TimeoutError",
    "[core][timeout]") {
  strata::testing::TestLoop loop(TestType::kind, strata::testing::TestClock::virtual_);
  Events events;
  Result out;
  loop.run(expires(&out, &events));
  CHECK(out.error == "TimeoutError");
  CHECK(out.cancelling_after == 0);
  CHECK(events == Events{"body CancelledError", "TimeoutError", "slept after"});
}

namespace {
strata::Coro<void> swallowed(Result* out, Events* events) {
  co_await record(strata::timeout(2ms, swallows_cancel(-1, events)), out);
}
}  // namespace

STRATA_LOOP_TEST_CASE(
    "timeout: a body that swallows the cancellation returns its value and the count is restored",
    "[core][timeout]") {
  strata::testing::TestLoop loop(TestType::kind, strata::testing::TestClock::virtual_);
  Events events;
  Result out;
  loop.run(swallowed(&out, &events));
  CHECK(out.error == "none");
  CHECK(out.value == -1);
  CHECK(out.cancelling_after == 0);
  CHECK(events == Events{"swallowed CancelledError"});
}

namespace {
/// Swallows one outside cancellation (leaving cancelling() at 1), then lets a timeout expire.
strata::Coro<void> count_at_entry(strata::Future<void> started, std::vector<int>* counts,
                                  Result* out) {
  started.set_result();
  co_await exception_of(sleep_forever());  // cancelled from outside, swallowed
  counts->push_back(strata::current_task().cancelling());
  co_await record(strata::timeout(2ms, sleep_forever()), out);
  counts->push_back(strata::current_task().cancelling());
}

strata::Coro<void> cancel_once_then_time_out(std::vector<int>* counts, Result* out) {
  strata::Future<void> started(strata::get_running_loop());
  strata::Task<void> t = strata::create_task(count_at_entry(started, counts, out));
  co_await started;
  t.cancel();
  co_await t;
}
}  // namespace

STRATA_LOOP_TEST_CASE(
    "timeout: the cancelling() count returns to its value at entry, not to zero",
    "[core][timeout]") {
  strata::testing::TestLoop loop(TestType::kind, strata::testing::TestClock::virtual_);
  std::vector<int> counts;
  Result out;
  loop.run(cancel_once_then_time_out(&counts, &out));
  CHECK(out.error == "TimeoutError");
  CHECK(counts == std::vector<int>{1, 1});
}

namespace {
strata::Coro<int> guarded_forever(Events* events) {
  co_return co_await strata::timeout(1h, recorded_sleep("body", 1h, 0, events));
}

strata::Coro<void> cancel_from_outside(std::string* waiter_error, Events* events) {
  strata::Task<int> t = strata::create_task(guarded_forever(events));
  strata::get_running_loop().call_later(2ms, [t]() mutable { t.cancel(); });
  *waiter_error = kind(co_await exception_of(t));
}
}  // namespace

STRATA_LOOP_TEST_CASE("timeout: a cancellation from outside stays a CancelledError",
                      "[core][timeout]") {
  strata::testing::TestLoop loop(TestType::kind, strata::testing::TestClock::virtual_);
  Events events;
  std::string error;
  loop.run(cancel_from_outside(&error, &events));
  CHECK(error == "CancelledError");
  CHECK(events == Events{"body CancelledError"});
}

namespace {
/// The deadline and an outside cancel() fall due in the same loop iteration.
strata::Coro<void> deadline_and_cancel(strata::TimePoint when, Events* events) {
  strata::TaskRef self = strata::current_task();
  strata::get_running_loop().call_at(when, [self]() mutable { self.cancel(); });
  co_await recorded_sleep("body", 1h, 0, events);
}

strata::Coro<void> timed_and_cancelled(strata::TimePoint when, Events* events, Result* out) {
  // The scope's timer is armed first, so it fires first; the cancel() comes right after.
  std::exception_ptr error =
      co_await exception_of(strata::timeout_at(when, deadline_and_cancel(when, events)));
  out->error = kind(error);
  out->cancelling_after = strata::current_task().cancelling();
  if (error) std::rethrow_exception(error);
}

strata::Coro<void> both_at_once(Result* out, std::string* task_error, Events* events) {
  strata::TimePoint when = strata::get_running_loop().time() + 3ms;
  strata::Task<void> t = strata::create_task(timed_and_cancelled(when, events, out));
  *task_error = kind(co_await exception_of(t));
}
}  // namespace

STRATA_LOOP_TEST_CASE(
    "timeout: a deadline and an outside cancel in the same iteration give CancelledError",
    "[core][timeout]") {
  strata::testing::TestLoop loop(TestType::kind, strata::testing::TestClock::virtual_);
  Events events;
  Result out;
  std::string task_error;
  loop.run(both_at_once(&out, &task_error, &events));
  CHECK(events == Events{"body CancelledError"});
  CHECK(out.error == "CancelledError");  // the outside request wins over the deadline
  CHECK(out.cancelling_after == 1);      // the deadline's own request was taken back
  CHECK(task_error == "CancelledError");
}

// ---- nesting ---------------------------------------------------------------------------------

namespace {
strata::Coro<int> inner_expires(Events* events) {
  std::exception_ptr error = co_await exception_of(strata::timeout(2ms, sleep_forever()));
  events->push_back("inner " + kind(error));
  co_await strata::sleep(1ms);  // still inside the outer timeout, which must not fire
  events->push_back("after inner");
  co_return 3;
}

strata::Coro<void> nested_inner_expires(Result* out, Events* events) {
  co_await record(strata::timeout(1h, inner_expires(events)), out);
}

strata::Coro<int> outer_expires_body(Events* events) {
  std::exception_ptr error = co_await exception_of(strata::timeout(1h, sleep_forever()));
  events->push_back("inner scope let through " + kind(error));
  std::rethrow_exception(error);
}

strata::Coro<void> nested_outer_expires(Result* out, Events* events) {
  co_await record(strata::timeout(2ms, outer_expires_body(events)), out);
}
}  // namespace

STRATA_LOOP_TEST_CASE("timeout: an inner timeout expiring does not make the outer one raise",
                      "[core][timeout]") {
  strata::testing::TestLoop loop(TestType::kind, strata::testing::TestClock::virtual_);
  Events events;
  Result out;
  loop.run(nested_inner_expires(&out, &events));
  CHECK(out.error == "none");
  CHECK(out.value == 3);
  CHECK(out.cancelling_after == 0);
  CHECK(events == Events{"inner TimeoutError", "after inner"});
}

STRATA_LOOP_TEST_CASE(
    "timeout: an outer timeout expiring passes CancelledError through the inner scope",
    "[core][timeout]") {
  strata::testing::TestLoop loop(TestType::kind, strata::testing::TestClock::virtual_);
  Events events;
  Result out;
  loop.run(nested_outer_expires(&out, &events));
  CHECK(out.error == "TimeoutError");
  CHECK(out.cancelling_after == 0);
  CHECK(events == Events{"inner scope let through CancelledError"});
}

// ---- awaiting a task -------------------------------------------------------------------------

namespace {
strata::Coro<void> timeout_on_task(Result* out, bool* task_cancelled, Events* events) {
  strata::Task<int> t = strata::create_task(recorded_sleep("task", 1h, 0, events));
  co_await record(strata::timeout(2ms, t), out);
  *task_cancelled = t.cancelled();
}
}  // namespace

STRATA_LOOP_TEST_CASE("timeout: an awaited Task is cancelled when the deadline passes",
                      "[core][timeout]") {
  strata::testing::TestLoop loop(TestType::kind, strata::testing::TestClock::virtual_);
  Events events;
  Result out;
  bool task_cancelled = false;
  loop.run(timeout_on_task(&out, &task_cancelled, &events));
  CHECK(out.error == "TimeoutError");
  CHECK(task_cancelled);
  CHECK(events == Events{"task CancelledError"});
}

// ---- timeout_at ------------------------------------------------------------------------------

namespace {
strata::Coro<void> at_deadlines(std::vector<std::string>* results, Events* events) {
  strata::EventLoop& loop = strata::get_running_loop();
  Result future_deadline;
  co_await record(strata::timeout_at(loop.time() + 2ms, sleep_forever()), &future_deadline);
  results->push_back(future_deadline.error);

  Result past_deadline;
  co_await record(strata::timeout_at(loop.time() - 1s, recorded_sleep("past", 1h, 0, events)),
                  &past_deadline);
  results->push_back(past_deadline.error);

  Result no_deadline;
  co_await record(strata::timeout_at(std::nullopt, value_after(8, 1ms, events)), &no_deadline);
  results->push_back(no_deadline.error + " " + std::to_string(no_deadline.value));

  Result in_time;
  co_await record(strata::timeout_at(loop.time() + 1h, value_after(9, 1ms, events)), &in_time);
  results->push_back(in_time.error + " " + std::to_string(in_time.value));
}
}  // namespace

STRATA_LOOP_TEST_CASE("timeout_at: a deadline on the loop clock bounds the await",
                      "[core][timeout]") {
  strata::testing::TestLoop loop(TestType::kind, strata::testing::TestClock::virtual_);
  Events events;
  std::vector<std::string> results;
  loop.run(at_deadlines(&results, &events));
  CHECK(results == std::vector<std::string>{"TimeoutError", "TimeoutError", "none 8", "none 9"});
  // A deadline already past still lets the body start; its first await is cancelled.
  CHECK(events == Events{"past CancelledError", "done 8", "done 9"});
}

// ---- outside a task --------------------------------------------------------------------------

namespace {
/// A bare eager coroutine, not a Task: awaiting inside it runs outside any task.
struct Detached {
  struct promise_type {
    Detached get_return_object() noexcept { return {}; }
    std::suspend_never initial_suspend() noexcept { return {}; }
    std::suspend_never final_suspend() noexcept { return {}; }
    void return_void() noexcept {}
    void unhandled_exception() noexcept { std::terminate(); }
  };
};

Detached timeout_outside_a_task(std::string* error) {
  *error = kind(co_await exception_of(strata::timeout_at(std::nullopt, sleep_forever())));
}
}  // namespace

TEST_CASE("timeout: used outside a task throws InvalidStateError", "[core][timeout]") {
  std::string error = "not run";
  timeout_outside_a_task(&error);
  CHECK(error == "InvalidStateError");
}

// ---- wait_for ----------------------------------------------------------------------------------

STRATA_LOOP_TEST_CASE("wait_for: returns the result when it comes in time", "[core][timeout]") {
  strata::testing::TestLoop loop(TestType::kind, strata::testing::TestClock::virtual_);
  Events events;
  Result out;
  loop.run(record(strata::wait_for(value_after(4, 1ms, &events), 1h), &out));
  CHECK(out.error == "none");
  CHECK(out.value == 4);
  CHECK(out.cancelling_after == 0);
}

STRATA_LOOP_TEST_CASE("wait_for: without a delay it waits as long as it takes", "[core][timeout]") {
  strata::testing::TestLoop loop(TestType::kind, strata::testing::TestClock::virtual_);
  Events events;
  Result out;
  loop.run(record(strata::wait_for(value_after(4, 2ms, &events), std::nullopt), &out));
  CHECK(out.error == "none");
  CHECK(out.value == 4);
}

namespace {
strata::Coro<void> wait_for_task_times_out(Result* out, bool* task_cancelled, Events* events) {
  strata::Task<int> t = strata::create_task(slow_to_cancel(3ms, events));
  co_await record(strata::wait_for(t, 2ms), out);
  events->push_back("wait_for " + out->error);
  *task_cancelled = t.cancelled();
}
}  // namespace

STRATA_LOOP_TEST_CASE(
    "wait_for: on timeout the task is cancelled and awaited through its clean-up, then "
    "TimeoutError",
    "[core][timeout]") {
  strata::testing::TestLoop loop(TestType::kind, strata::testing::TestClock::virtual_);
  Events events;
  Result out;
  bool task_cancelled = false;
  loop.run(wait_for_task_times_out(&out, &task_cancelled, &events));
  CHECK(out.error == "TimeoutError");
  CHECK(out.cancelling_after == 0);
  CHECK(task_cancelled);
  CHECK(events == Events{"inner CancelledError", "inner cleanup done", "wait_for TimeoutError"});
}

namespace {
strata::Coro<void> zero_delay(std::vector<std::string>* results, Events* events) {
  strata::EventLoop& loop = strata::get_running_loop();
  strata::Future<int> ready(loop);
  ready.set_result(11);
  Result done_zero;
  co_await record(strata::wait_for(ready, 0s), &done_zero);
  results->push_back(done_zero.error + " " + std::to_string(done_zero.value));

  Result done_negative;
  co_await record(strata::wait_for(ready, -5ms), &done_negative);
  results->push_back(done_negative.error + " " + std::to_string(done_negative.value));

  strata::Task<int> pending = strata::create_task(slow_to_cancel(2ms, events));
  Result pending_zero;
  co_await record(strata::wait_for(pending, 0s), &pending_zero);
  events->push_back("wait_for " + pending_zero.error);
  results->push_back(pending_zero.error);
  results->push_back(pending.cancelled() ? "pending cancelled" : "pending not cancelled");
}
}  // namespace

STRATA_LOOP_TEST_CASE(
    "wait_for: a zero delay returns the result of a done future and times out a pending one",
    "[core][timeout]") {
  strata::testing::TestLoop loop(TestType::kind, strata::testing::TestClock::virtual_);
  Events events;
  std::vector<std::string> results;
  loop.run(zero_delay(&results, &events));
  CHECK(results == std::vector<std::string>{"none 11", "none 11", "TimeoutError",
                                            "pending cancelled"});
  // The task never ran before it was cancelled, so it has no clean-up to report.
  CHECK(events == Events{"wait_for TimeoutError"});
}

namespace {
strata::Coro<int> wait_for_task(strata::Task<int> t, std::optional<strata::Duration> delay) {
  co_return co_await strata::wait_for(t, delay);
}

strata::Coro<void> cancelled_while_waiting(std::string* error, bool* inner_cancelled,
                                           Events* events) {
  strata::Task<int> inner = strata::create_task(recorded_sleep("inner", 1h, 0, events));
  strata::Task<int> outer = strata::create_task(wait_for_task(inner, 1h));
  strata::get_running_loop().call_later(2ms, [outer]() mutable { outer.cancel(); });
  *error = kind(co_await exception_of(outer));
  co_await exception_of(inner);
  *inner_cancelled = inner.cancelled();
}

strata::Coro<int> signal_then_slow_to_cancel(strata::Future<void> started, Events* events) {
  started.set_result();
  co_return co_await slow_to_cancel(20ms, events);
}

strata::Coro<void> cancelled_while_zero_wait_cleans_up(std::string* error, Events* events) {
  strata::Future<void> started(strata::get_running_loop());
  strata::Task<int> inner = strata::create_task(signal_then_slow_to_cancel(started, events));
  co_await started;
  strata::Task<int> outer = strata::create_task(wait_for_task(inner, 0s));
  // While wait_for(…, 0s) waits for the inner task's clean-up, cancel the outer task.
  strata::get_running_loop().call_later(1ms, [outer]() mutable { outer.cancel(); });
  *error = kind(co_await exception_of(outer));
  events->push_back("outer " + *error);
  co_await exception_of(inner);
}
}  // namespace

STRATA_LOOP_TEST_CASE("wait_for: cancelling the waiting task gives CancelledError, not TimeoutError",
                      "[core][timeout]") {
  strata::testing::TestLoop loop(TestType::kind, strata::testing::TestClock::virtual_);
  Events events;
  std::string error;
  bool inner_cancelled = false;
  loop.run(cancelled_while_waiting(&error, &inner_cancelled, &events));
  CHECK(error == "CancelledError");
  CHECK(inner_cancelled);
  CHECK(events == Events{"inner CancelledError"});
}

STRATA_LOOP_TEST_CASE(
    "wait_for: cancelling the waiting task during a zero-delay wait gives CancelledError",
    "[core][timeout]") {
  strata::testing::TestLoop loop(TestType::kind, strata::testing::TestClock::virtual_);
  Events events;
  std::string error;
  loop.run(cancelled_while_zero_wait_cleans_up(&error, &events));
  CHECK(error == "CancelledError");
  // The inner task's clean-up is not cut short by the second cancellation.
  CHECK(events == Events{"inner CancelledError", "outer CancelledError", "inner cleanup done"});
}
