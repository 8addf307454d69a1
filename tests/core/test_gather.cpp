#include <strata/core/gather.hpp>

#include <catch2/catch.hpp>

#include <algorithm>
#include <chrono>
#include <exception>
#include <stdexcept>
#include <string>
#include <tuple>
#include <type_traits>
#include <variant>
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

strata::Coro<std::string> text_after(std::string text, strata::Duration delay, Events* events) {
  co_await strata::sleep(delay);
  events->push_back("done " + text);
  co_return text;
}

/// Waits for @p gate to open, then returns @p value (or fails with @p what if not empty).
strata::Coro<int> gated(strata::Future<void> gate, int value, std::string what, Events* events) {
  co_await gate;
  if (!what.empty()) {
    events->push_back("fail " + what);
    throw std::runtime_error(what);
  }
  events->push_back("done " + std::to_string(value));
  co_return value;
}

strata::Coro<void> nothing_after(strata::Duration delay, Events* events) {
  co_await strata::sleep(delay);
  events->push_back("done void");
}

strata::Coro<int> fail_after(strata::Duration delay, std::string what, Events* events) {
  co_await strata::sleep(delay);
  events->push_back("fail " + what);
  throw std::runtime_error(what);
}

/// Awaits @p aw and returns the exception it ended with (nullptr when none). The only
/// try/catch in this file's coroutines: g++ 12 miscompiles some coroutines that mix try/catch
/// with string literals, so the others assert on what this returns.
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

/// The futures of @p tasks as one vector. A plain function, because g++ 12 cannot compile a
/// braced initializer list inside a co_await expression ("array used as initializer").
template <class T, class... More>
std::vector<strata::Future<T>> futures_of(const strata::Future<T>& first, const More&... more) {
  return {first, more...};
}

strata::Coro<void> sleep_forever() { co_await strata::sleep(1h); }

/// Signals @p started, sleeps until cancelled, records "<name> cancelled" and ends cancelled.
strata::Coro<int> until_cancelled(std::string name, strata::Future<void> started, Events* events) {
  if (started.valid() && !started.done()) started.set_result();
  std::exception_ptr error = co_await exception_of(sleep_forever());
  if (!error) co_return 0;
  events->push_back(name + " cancelled");
  std::rethrow_exception(error);
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

/// Closes the loop (destroying every future state, which reports exceptions never
/// retrieved) and returns what reached the exception handler.
std::vector<std::string> close_and_collect_errors(strata::testing::TestLoop& loop) {
  loop->close();
  std::vector<std::string> out;
  for (const auto& e : loop.errors()) out.push_back(e.message + " / " + describe(e.exception));
  return out;
}

// ---- argument order ------------------------------------------------------------------

strata::Coro<std::tuple<int, std::string, int>> gather_three(Events* events) {
  auto results = co_await strata::gather(value_after(1, 20ms, events), text_after("two", 1ms, events),
                                         value_after(3, 10ms, events));
  events->push_back("gathered");
  co_return results;
}

strata::Coro<std::vector<int>> gather_vector(Events* events) {
  std::vector<strata::Coro<int>> coros;
  coros.push_back(value_after(0, 15ms, events));
  coros.push_back(value_after(1, 1ms, events));
  coros.push_back(value_after(2, 8ms, events));
  auto results = co_await strata::gather(std::move(coros));
  events->push_back("gathered");
  co_return results;
}

strata::Coro<std::tuple<int, int, int>> gather_mixed(Events* events) {
  strata::EventLoop& loop = strata::get_running_loop();
  strata::Future<int> future(loop);
  loop.call_later(5ms, [future]() mutable { future.set_result(10); });
  strata::Task<int> task = strata::create_task(value_after(20, 1ms, events));
  co_return co_await strata::gather(future, task, value_after(30, 2ms, events));
}

}  // namespace

STRATA_LOOP_TEST_CASE("gather: results come in argument order whatever the completion order",
                      "[core][gather]") {
  strata::testing::TestLoop loop(TestType::kind);
  Events events;
  auto results = loop.run(gather_three(&events));
  CHECK(results == std::make_tuple(1, std::string("two"), 3));
  CHECK(events == Events{"done two", "done 3", "done 1", "gathered"});
}

STRATA_LOOP_TEST_CASE("gather: a vector of coroutines gives a vector of results in argument order",
                      "[core][gather]") {
  strata::testing::TestLoop loop(TestType::kind);
  Events events;
  auto results = loop.run(gather_vector(&events));
  CHECK(results == std::vector<int>{0, 1, 2});
  CHECK(events == Events{"done 1", "done 2", "done 0", "gathered"});
}

STRATA_LOOP_TEST_CASE("gather: accepts Futures, Tasks and Coros in one call", "[core][gather]") {
  strata::testing::TestLoop loop(TestType::kind);
  Events events;
  CHECK(loop.run(gather_mixed(&events)) == std::make_tuple(10, 20, 30));
}

// ---- void children -------------------------------------------------------------------------

namespace {
strata::Coro<std::tuple<std::monostate, int>> gather_void(Events* events) {
  auto gathered = strata::gather(nothing_after(1ms, events), value_after(4, 2ms, events));
  static_assert(
      std::is_same_v<decltype(gathered), strata::Future<std::tuple<std::monostate, int>>>);
  co_return co_await gathered;
}
}  // namespace

STRATA_LOOP_TEST_CASE("gather: a void child contributes std::monostate", "[core][gather]") {
  strata::testing::TestLoop loop(TestType::kind);
  Events events;
  auto results = loop.run(gather_void(&events));
  CHECK(std::get<1>(results) == 4);
  CHECK(events == Events{"done void", "done 4"});
}

// ---- first exception ------------------------------------------------------------------------

namespace {
struct FirstError {
  std::string caught;
  bool slow_done_when_caught = true;
  bool late_done_when_caught = true;
  int slow_result = 0;
  bool late_done_at_end = false;
  bool late_cancelled = true;
};

strata::Coro<void> first_error(FirstError* out, Events* events) {
  strata::Future<void> gate(strata::get_running_loop());
  strata::Task<int> slow = strata::create_task(gated(gate, 2, "", events), "slow");
  strata::Task<int> late = strata::create_task(gated(gate, 0, "late", events), "late");
  auto gathered = strata::gather(fail_after(1ms, "first", events), slow, late);
  out->caught = describe(co_await exception_of(gathered));
  events->push_back("gather failed");
  out->slow_done_when_caught = slow.done();
  out->late_done_when_caught = late.done();
  gate.set_result();  // now let the others finish, the second failure included
  // wait() does not retrieve exceptions: the late failure stays unretrieved by this test.
  co_await strata::wait(futures_of(slow, late));
  out->slow_result = slow.result();
  out->late_done_at_end = late.done();
  out->late_cancelled = late.cancelled();
}
}  // namespace

STRATA_LOOP_TEST_CASE(
    "gather: the first exception fails the gather at once while the other children keep running",
    "[core][gather]") {
  strata::testing::TestLoop loop(TestType::kind);
  Events events;
  FirstError out;
  loop.run(first_error(&out, &events));
  CHECK(out.caught == "first");
  CHECK_FALSE(out.slow_done_when_caught);
  CHECK_FALSE(out.late_done_when_caught);
  CHECK(out.slow_result == 2);
  CHECK(out.late_done_at_end);
  CHECK_FALSE(out.late_cancelled);
  CHECK(events == Events{"fail first", "gather failed", "done 2", "fail late"});
  // The later failure went to the gather, which had already failed: it is not reported as
  // "exception was never retrieved".
  CHECK(close_and_collect_errors(loop).empty());
}

// ---- cancellation ---------------------------------------------------------------------------

namespace {
struct CancelledChild {
  bool gather_cancelled = false;
  bool future_cancelled = false;
  bool other_done_when_cancelled = true;
  int other_result = 0;
};

strata::Coro<void> cancelled_child(CancelledChild* out, Events* events) {
  strata::Future<void> started(strata::get_running_loop());
  strata::Future<void> gate(strata::get_running_loop());
  strata::Task<int> victim = strata::create_task(until_cancelled("victim", started, events));
  strata::Task<int> other = strata::create_task(gated(gate, 5, "", events));
  auto gathered = strata::gather(victim, other);
  co_await started;
  victim.cancel();
  out->gather_cancelled = describe(co_await exception_of(gathered)) == "CancelledError";
  events->push_back("gather cancelled");
  out->future_cancelled = gathered.cancelled();
  out->other_done_when_cancelled = other.done();
  gate.set_result();
  out->other_result = co_await other;
}
}  // namespace

STRATA_LOOP_TEST_CASE("gather: a cancelled child cancels the gather and leaves the others running",
                      "[core][gather]") {
  strata::testing::TestLoop loop(TestType::kind);
  Events events;
  CancelledChild out;
  loop.run(cancelled_child(&out, &events));
  CHECK(out.gather_cancelled);
  CHECK(out.future_cancelled);
  CHECK_FALSE(out.other_done_when_cancelled);
  CHECK(out.other_result == 5);
  CHECK(events == Events{"victim cancelled", "gather cancelled", "done 5"});
}

namespace {
struct CancelGather {
  bool accepted = false;
  bool awaiter_got_cancelled = false;
  bool gather_cancelled = false;
  bool a_cancelled = false;
  bool b_cancelled = false;
};

strata::Coro<void> cancel_the_gather(CancelGather* out, Events* events) {
  strata::EventLoop& loop = strata::get_running_loop();
  strata::Future<void> a_started(loop);
  strata::Future<void> b_started(loop);
  strata::Task<int> a = strata::create_task(until_cancelled("a", a_started, events));
  strata::Task<int> b = strata::create_task(until_cancelled("b", b_started, events));
  auto gathered = strata::gather(a, b);
  co_await a_started;
  co_await b_started;
  out->accepted = gathered.cancel();
  events->push_back("cancel requested");
  out->awaiter_got_cancelled = describe(co_await exception_of(gathered)) == "CancelledError";
  events->push_back("gather done");
  co_await strata::wait(futures_of(a, b));
  out->gather_cancelled = gathered.cancelled();
  out->a_cancelled = a.cancelled();
  out->b_cancelled = b.cancelled();
}
}  // namespace

STRATA_LOOP_TEST_CASE("gather: cancelling the gather cancels every child", "[core][gather]") {
  strata::testing::TestLoop loop(TestType::kind);
  Events events;
  CancelGather out;
  loop.run(cancel_the_gather(&out, &events));
  CHECK(out.accepted);
  CHECK(out.awaiter_got_cancelled);
  CHECK(out.gather_cancelled);
  CHECK(out.a_cancelled);
  CHECK(out.b_cancelled);
  CHECK(events == Events{"cancel requested", "a cancelled", "b cancelled", "gather done"});
}

namespace {
strata::Coro<int> sum_of_gather(strata::Task<int> a, strata::Task<int> b, Events* events) {
  auto [x, y] = co_await strata::gather(a, b);
  events->push_back("awaiter resumed");
  co_return x + y;
}

struct CancelAwaiter {
  bool awaiter_cancelled = false;
  bool a_cancelled = false;
  bool b_cancelled = false;
};

strata::Coro<void> cancel_the_awaiting_task(CancelAwaiter* out, Events* events) {
  strata::EventLoop& loop = strata::get_running_loop();
  strata::Future<void> a_started(loop);
  strata::Future<void> b_started(loop);
  strata::Task<int> a = strata::create_task(until_cancelled("a", a_started, events));
  strata::Task<int> b = strata::create_task(until_cancelled("b", b_started, events));
  strata::Task<int> awaiter = strata::create_task(sum_of_gather(a, b, events), "awaiter");
  co_await a_started;  // a, b and the awaiter have all taken their first step by now
  co_await b_started;
  awaiter.cancel();
  events->push_back("awaiter cancel requested");
  co_await strata::wait(futures_of(awaiter, a, b));
  out->awaiter_cancelled = awaiter.cancelled();
  out->a_cancelled = a.cancelled();
  out->b_cancelled = b.cancelled();
}
}  // namespace

STRATA_LOOP_TEST_CASE("gather: cancelling the task awaiting the gather cancels every child",
                      "[core][gather]") {
  strata::testing::TestLoop loop(TestType::kind);
  Events events;
  CancelAwaiter out;
  loop.run(cancel_the_awaiting_task(&out, &events));
  CHECK(out.awaiter_cancelled);
  CHECK(out.a_cancelled);
  CHECK(out.b_cancelled);
  CHECK(events == Events{"awaiter cancel requested", "a cancelled", "b cancelled"});
}

// ---- return_exceptions ------------------------------------------------------------------------

namespace {
struct Settled {
  int ok_value = 0;
  std::string failed;
  bool failed_has_value = true;
  bool victim_cancelled = false;
  bool victim_is_cancelled_error = false;
  bool void_has_value = false;
};

strata::Coro<void> settle_all(Settled* out, Events* events) {
  strata::Future<void> started(strata::get_running_loop());
  strata::Task<int> victim = strata::create_task(until_cancelled("victim", started, events));
  auto gathered = strata::gather(strata::return_exceptions, value_after(1, 12ms, events),
                                 fail_after(4ms, "bad", events), victim,
                                 nothing_after(8ms, events));
  static_assert(std::is_same_v<decltype(gathered),
                               strata::Future<std::tuple<strata::Outcome<int>, strata::Outcome<int>,
                                                         strata::Outcome<int>, strata::Outcome<void>>>>);
  co_await started;
  victim.cancel();
  auto [ok, failed, cancelled, nothing] = co_await gathered;
  events->push_back("gathered");
  out->ok_value = ok.value();
  out->failed = describe(failed.exception());
  out->failed_has_value = failed.has_value();
  out->victim_cancelled = cancelled.cancelled();
  out->victim_is_cancelled_error = describe(cancelled.exception()) == "CancelledError";
  out->void_has_value = nothing.has_value();
}
}  // namespace

STRATA_LOOP_TEST_CASE(
    "gather: with return_exceptions every child's Outcome is collected, CancelledError included",
    "[core][gather]") {
  strata::testing::TestLoop loop(TestType::kind);
  Events events;
  Settled out;
  loop.run(settle_all(&out, &events));
  CHECK(out.ok_value == 1);
  CHECK(out.failed == "bad");
  CHECK_FALSE(out.failed_has_value);
  CHECK(out.victim_cancelled);
  CHECK(out.victim_is_cancelled_error);
  CHECK(out.void_has_value);
  // It waited for all of them, the failure and the cancellation included.
  REQUIRE(events.size() == 5);
  CHECK(events.back() == "gathered");
  Events timed(events.begin(), events.end() - 1);
  timed.erase(std::remove(timed.begin(), timed.end(), "victim cancelled"), timed.end());
  CHECK(timed == Events{"fail bad", "done void", "done 1"});
  CHECK(close_and_collect_errors(loop).empty());
}

namespace {
strata::Coro<std::vector<std::string>> settle_vector(Events* events) {
  std::vector<strata::Coro<int>> coros;
  coros.push_back(fail_after(2ms, "x", events));
  coros.push_back(value_after(7, 1ms, events));
  auto outcomes = co_await strata::gather(strata::return_exceptions, std::move(coros));
  std::vector<std::string> out;
  for (auto& o : outcomes) {
    out.push_back(o.has_value() ? std::to_string(o.value()) : describe(o.exception()));
  }
  co_return out;
}

strata::Coro<void> cancel_settled_gather(bool* cancelled, Events* events) {
  strata::EventLoop& loop = strata::get_running_loop();
  strata::Future<void> a_started(loop);
  strata::Future<void> b_started(loop);
  auto gathered = strata::gather(strata::return_exceptions, until_cancelled("a", a_started, events),
                                 until_cancelled("b", b_started, events));
  co_await a_started;
  co_await b_started;
  gathered.cancel();
  *cancelled = describe(co_await exception_of(gathered)) == "CancelledError";
  events->push_back("gather done");
}
}  // namespace

STRATA_LOOP_TEST_CASE("gather: a vector with return_exceptions gives Outcomes in argument order",
                      "[core][gather]") {
  strata::testing::TestLoop loop(TestType::kind);
  Events events;
  CHECK(loop.run(settle_vector(&events)) == std::vector<std::string>{"x", "7"});
  CHECK(events == Events{"done 7", "fail x"});
}

STRATA_LOOP_TEST_CASE(
    "gather: cancelling a return_exceptions gather ends it cancelled once every child is done",
    "[core][gather]") {
  strata::testing::TestLoop loop(TestType::kind);
  Events events;
  bool cancelled = false;
  loop.run(cancel_settled_gather(&cancelled, &events));
  CHECK(cancelled);
  CHECK(events == Events{"a cancelled", "b cancelled", "gather done"});
}

// ---- empty gather -------------------------------------------------------------------------------

namespace {
struct Empty {
  bool tuple_done_at_once = false;
  bool vector_done_at_once = false;
  std::size_t vector_size = 99;
};

strata::Coro<void> gather_nothing(Empty* out) {
  auto none = strata::gather();
  static_assert(std::is_same_v<decltype(none), strata::Future<std::tuple<>>>);
  out->tuple_done_at_once = none.done();
  co_await none;
  auto empty = strata::gather(std::vector<strata::Coro<int>>{});
  out->vector_done_at_once = empty.done();
  out->vector_size = (co_await empty).size();
}
}  // namespace

STRATA_LOOP_TEST_CASE("gather: an empty gather is done at once", "[core][gather]") {
  strata::testing::TestLoop loop(TestType::kind);
  Empty out;
  loop.run(gather_nothing(&out));
  CHECK(out.tuple_done_at_once);
  CHECK(out.vector_done_at_once);
  CHECK(out.vector_size == 0);
}
