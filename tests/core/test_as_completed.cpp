#include <strata/core/as_completed.hpp>

#include <catch2/catch.hpp>

#include <algorithm>
#include <chrono>
#include <exception>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
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

strata::Coro<int> fail_after(strata::Duration delay, std::string what) {
  co_await strata::sleep(delay);
  throw std::runtime_error(what);
}

/// Awaits @p aw and returns the exception it ended with (nullptr when none). The only
/// try/catch in this file's coroutines (g++ 12 miscompiles some coroutines that mix
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

std::string kind(const std::exception_ptr& e) {
  if (!e) return "none";
  try {
    std::rethrow_exception(e);
  } catch (const strata::CancelledError&) {
    return "CancelledError";
  } catch (const strata::TimeoutError&) {
    return "TimeoutError";
  } catch (const std::exception& x) {
    return x.what();
  }
  return "unknown";
}

/// next() as an awaitable Coro, so exception_of() can observe what it throws.
template <class T>
strata::Coro<std::optional<T>> next_of(strata::AsyncGenerator<T>* gen) {
  co_return co_await gen->next();
}

/// The value of a done future, or what it failed with.
std::string outcome(const strata::Future<int>& f) {
  if (f.cancelled()) return "cancelled";
  if (std::exception_ptr e = f.exception()) return kind(e);
  return std::to_string(f.result());
}

std::vector<std::string> close_and_collect_errors(strata::testing::TestLoop& loop) {
  loop->close();
  std::vector<std::string> out;
  for (const auto& e : loop.errors()) out.push_back(e.message + " / " + kind(e.exception));
  return out;
}

// ---- completion order ------------------------------------------------------------------------

strata::Coro<void> in_completion_order(std::vector<std::string>* yielded, Events* events) {
  std::vector<strata::Task<int>> tasks;
  tasks.push_back(strata::create_task(value_after(0, 20ms, events)));
  tasks.push_back(strata::create_task(fail_after(5ms, "one failed")));
  tasks.push_back(strata::create_task(value_after(2, 10ms, events)));
  tasks.push_back(strata::create_task(value_after(3, 1ms, events)));
  auto gen = strata::as_completed(std::move(tasks));
  while (auto f = co_await gen.next()) {
    yielded->push_back(f->done() ? outcome(*f) : "yielded while pending");
    events->push_back("yielded");
  }
  events->push_back("end");
}

}  // namespace

STRATA_LOOP_TEST_CASE("as_completed: yields each future once it is done, in completion order",
                      "[core][as_completed]") {
  strata::testing::TestLoop loop(TestType::kind, strata::testing::TestClock::virtual_);
  Events events;
  std::vector<std::string> yielded;
  loop.run(in_completion_order(&yielded, &events));
  CHECK(yielded == std::vector<std::string>{"3", "one failed", "2", "0"});
  CHECK(events.front() == "done 3");  // nothing is yielded before it is done
  CHECK(events.back() == "end");
  CHECK(std::count(events.begin(), events.end(), "yielded") == 4);
}

namespace {
strata::Coro<void> done_before(std::vector<std::string>* yielded) {
  strata::EventLoop& loop = strata::get_running_loop();
  strata::Future<int> a(loop);
  strata::Future<int> b(loop);
  b.set_result(2);
  a.set_result(1);
  std::vector<strata::Future<int>> futures{a, b};
  auto gen = strata::as_completed(std::move(futures));
  while (auto f = co_await gen.next()) yielded->push_back(outcome(*f));
}

strata::Coro<bool> over_nothing() {
  auto gen = strata::as_completed(std::vector<strata::Future<int>>());
  auto first = co_await gen.next();
  co_return !first.has_value() && gen.done();
}
}  // namespace

STRATA_LOOP_TEST_CASE("as_completed: futures already done are all yielded",
                      "[core][as_completed]") {
  strata::testing::TestLoop loop(TestType::kind, strata::testing::TestClock::virtual_);
  std::vector<std::string> yielded;
  loop.run(done_before(&yielded));
  REQUIRE(yielded.size() == 2);
  std::sort(yielded.begin(), yielded.end());
  CHECK(yielded == std::vector<std::string>{"1", "2"});
}

STRATA_LOOP_TEST_CASE("as_completed: an empty set yields nothing", "[core][as_completed]") {
  strata::testing::TestLoop loop(TestType::kind, strata::testing::TestClock::virtual_);
  CHECK(loop.run(over_nothing()));
}

// ---- timeout --------------------------------------------------------------------------------

namespace {
struct TimedOut {
  std::string first;
  std::string second;
  bool slow_pending_after = false;
  bool generator_done = false;
  std::string slow_result;
};

strata::Coro<void> with_timeout(TimedOut* out, Events* events) {
  // Wide margins: a loaded CI machine may stall the loop for tens of milliseconds.
  strata::Task<int> fast = strata::create_task(value_after(1, 1ms, events));
  strata::Task<int> slow = strata::create_task(value_after(2, 400ms, events));
  std::vector<strata::Task<int>> tasks{fast, slow};
  auto gen = strata::as_completed(std::move(tasks), 150ms);
  auto first = co_await gen.next();
  out->first = first ? outcome(*first) : "nothing";
  out->second = kind(co_await exception_of(next_of(&gen)));
  events->push_back("next() " + out->second);
  out->slow_pending_after = !slow.done();  // not cancelled by the timeout
  out->generator_done = gen.done();
  out->slow_result = std::to_string(co_await slow);
}
}  // namespace

STRATA_LOOP_TEST_CASE(
    "as_completed: when the timeout passes next() throws TimeoutError and nothing is cancelled",
    "[core][as_completed]") {
  strata::testing::TestLoop loop(TestType::kind, strata::testing::TestClock::virtual_);
  Events events;
  TimedOut out;
  loop.run(with_timeout(&out, &events));
  CHECK(out.first == "1");
  CHECK(out.second == "TimeoutError");
  CHECK(out.slow_pending_after);
  CHECK(out.generator_done);
  CHECK(out.slow_result == "2");
  CHECK(events == Events{"done 1", "next() TimeoutError", "done 2"});
}

// ---- early destruction ------------------------------------------------------------------------

namespace {
struct Abandoned {
  int first = 0;
  bool payload_freed = false;
  int last = 0;
};

/// Destroys the generator while one finished future still waits in its queue and another is
/// still pending.
strata::Coro<void> destroy_early(Abandoned* out) {
  strata::EventLoop& loop = strata::get_running_loop();
  strata::Future<std::shared_ptr<int>> f1(loop);
  strata::Future<std::shared_ptr<int>> f2(loop);
  strata::Future<std::shared_ptr<int>> f3(loop);
  auto payload = std::make_shared<int>(2);
  std::weak_ptr<int> watch = payload;
  {
    std::vector<strata::Future<std::shared_ptr<int>>> futures{f1, f2, f3};
    auto gen = strata::as_completed(std::move(futures));
    f1.set_result(std::make_shared<int>(1));
    f2.set_result(std::move(payload));
    auto first = co_await gen.next();  // f1; f2 is queued inside the generator
    out->first = *(co_await *first);
  }
  // The generator is gone. Had it left its callback on f3, that callback would keep the
  // generator's queue, and so f2 and its payload, alive.
  f2 = strata::Future<std::shared_ptr<int>>();
  out->payload_freed = watch.expired();
  f3.set_result(std::make_shared<int>(3));
  co_await strata::sleep(0s);  // a callback left behind would run now
  out->last = *(co_await f3);
}
}  // namespace

STRATA_LOOP_TEST_CASE(
    "as_completed: destroying the generator early removes its callbacks from pending futures",
    "[core][as_completed]") {
  strata::testing::TestLoop loop(TestType::kind, strata::testing::TestClock::virtual_);
  Abandoned out;
  loop.run(destroy_early(&out));
  CHECK(out.first == 1);
  CHECK(out.payload_freed);
  CHECK(out.last == 3);
  CHECK(close_and_collect_errors(loop).empty());
}

// ---- cancellation -----------------------------------------------------------------------------

namespace {
struct CancelledNext {
  std::string first_next;
  std::string second_next;
  bool future_cancelled = true;
};

strata::Coro<void> consume_and_get_cancelled(strata::Future<int> f, strata::Future<void> started,
                                             CancelledNext* out) {
  std::vector<strata::Future<int>> futures{f};
  auto gen = strata::as_completed(std::move(futures));
  started.set_result();
  out->first_next = kind(co_await exception_of(next_of(&gen)));
  auto again = co_await next_of(&gen);
  out->second_next = again ? outcome(*again) : "end";
}

strata::Coro<void> cancel_a_next(CancelledNext* out) {
  strata::EventLoop& loop = strata::get_running_loop();
  strata::Future<int> f(loop);
  strata::Future<void> started(loop);
  strata::Task<void> consumer = strata::create_task(consume_and_get_cancelled(f, started, out));
  co_await started;  // the consumer suspends in next() within the step that set this
  consumer.cancel();
  co_await strata::sleep(0s);
  f.set_result(5);
  co_await consumer;
  out->future_cancelled = f.cancelled();
}
}  // namespace

STRATA_LOOP_TEST_CASE(
    "as_completed: a next() cancelled with its task ends the iteration and leaves the futures "
    "running",
    "[core][as_completed]") {
  strata::testing::TestLoop loop(TestType::kind, strata::testing::TestClock::virtual_);
  CancelledNext out;
  loop.run(cancel_a_next(&out));
  CHECK(out.first_next == "CancelledError");
  CHECK_FALSE(out.future_cancelled);
  // The CancelledError unwound the generator's body: the iteration is over (not cancel-safe).
  CHECK(out.second_next == "end");
}
