#include <strata/core/async_generator.hpp>

#include <catch2/catch.hpp>

#include <chrono>
#include <exception>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include <strata/core/coro.hpp>
#include <strata/core/sleep.hpp>
#include <strata/core/task.hpp>

#include "loop_test.hpp"

using namespace std::chrono_literals;

namespace {

using Events = std::vector<std::string>;

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
  } catch (const strata::InvalidStateError&) {
    return "InvalidStateError";
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

std::string show(const std::optional<int>& v) { return v ? std::to_string(*v) : "nullopt"; }

// ---- values in order ---------------------------------------------------------------------------

strata::AsyncGenerator<int> count_to(int n, Events* events) {
  for (int i = 1; i <= n; ++i) {
    events->push_back("yield " + std::to_string(i));
    co_yield i;
  }
  events->push_back("body returns");
}

strata::Coro<void> consume_all(Events* events) {
  auto gen = count_to(3, events);
  events->push_back("created");
  while (auto v = co_await gen.next()) events->push_back("got " + std::to_string(*v));
  events->push_back(gen.done() ? "done" : "not done");
  events->push_back("again " + show(co_await gen.next()));
  events->push_back("again " + show(co_await gen.next()));
}

}  // namespace

STRATA_LOOP_TEST_CASE(
    "AsyncGenerator: yields its values in order, lazily, then nullopt from every later next()",
    "[core][async_generator]") {
  strata::testing::TestLoop loop(TestType::kind);
  Events events;
  loop.run(consume_all(&events));
  CHECK(events == Events{"created", "yield 1", "got 1", "yield 2", "got 2", "yield 3", "got 3",
                         "body returns", "done", "again nullopt", "again nullopt"});
}

// ---- co_await inside the body -----------------------------------------------------------------

namespace {
strata::Coro<int> doubled_later(int v) {
  co_await strata::sleep(1ms);
  co_return v * 2;
}

strata::AsyncGenerator<int> awaiting_producer(strata::Future<int> external, Events* events) {
  events->push_back("body starts");
  co_yield co_await doubled_later(1);  // a Coro, run inside the consumer's task
  co_await strata::sleep(1ms);
  events->push_back("body slept");
  co_yield co_await external;  // a Future set by someone else
}

strata::Coro<void> consume_awaiting(Events* events) {
  strata::EventLoop& loop = strata::get_running_loop();
  strata::Future<int> external(loop);
  loop.call_later(2ms, [external]() mutable { external.set_result(7); });
  auto gen = awaiting_producer(external, events);
  while (auto v = co_await gen.next()) events->push_back("got " + std::to_string(*v));
  events->push_back("end");
}
}  // namespace

STRATA_LOOP_TEST_CASE("AsyncGenerator: the body may co_await Coros and Futures between yields",
                      "[core][async_generator]") {
  strata::testing::TestLoop loop(TestType::kind);
  Events events;
  loop.run(consume_awaiting(&events));
  CHECK(events == Events{"body starts", "got 2", "body slept", "got 7", "end"});
}

// ---- iteration -----------------------------------------------------------------------------------

namespace {
strata::Coro<std::vector<std::string>> iterate() {
  std::vector<std::string> out;
  Events ignored;
  auto gen = count_to(4, &ignored);
  for (auto it = co_await gen.begin(); it != gen.end(); co_await ++it) {
    out.push_back(std::to_string(*it));
  }
  co_return out;
}

strata::AsyncGenerator<std::unique_ptr<std::string>> words() {
  co_yield std::make_unique<std::string>("move");
  co_yield std::make_unique<std::string>("only");
}

strata::Coro<std::vector<std::string>> iterate_move_only() {
  std::vector<std::string> out;
  auto gen = words();
  for (auto it = co_await gen.begin(); it != gen.end(); co_await ++it) {
    std::unique_ptr<std::string> taken = std::move(*it);
    out.push_back(*taken + " (" + std::to_string(it->get() == nullptr) + ")");
  }
  co_return out;
}

strata::Coro<bool> iterate_empty() {
  Events ignored;
  auto gen = count_to(0, &ignored);
  auto it = co_await gen.begin();
  co_return it == gen.end();
}
}  // namespace

STRATA_LOOP_TEST_CASE("AsyncGenerator: begin(), ++ and end() iterate over every value",
                      "[core][async_generator]") {
  strata::testing::TestLoop loop(TestType::kind);
  CHECK(loop.run(iterate()) == std::vector<std::string>{"1", "2", "3", "4"});
  CHECK(loop.run(iterate_move_only()) == std::vector<std::string>{"move (1)", "only (1)"});
  CHECK(loop.run(iterate_empty()));
}

// ---- exceptions ----------------------------------------------------------------------------------

namespace {
strata::AsyncGenerator<int> one_then_throw() {
  co_yield 1;
  co_await strata::sleep(0s);
  throw std::runtime_error("generator failed");
}

strata::Coro<void> consume_failing(std::vector<std::string>* seen, bool* done) {
  auto gen = one_then_throw();
  seen->push_back(show(co_await gen.next()));
  std::exception_ptr error = co_await exception_of(next_of(&gen));
  seen->push_back(kind(error));
  *done = gen.done();
  seen->push_back(show(co_await gen.next()));  // the exception is reported once
}
}  // namespace

STRATA_LOOP_TEST_CASE(
    "AsyncGenerator: an exception escaping the body is thrown by next(), then the generator is "
    "done",
    "[core][async_generator]") {
  strata::testing::TestLoop loop(TestType::kind);
  std::vector<std::string> seen;
  bool done = false;
  loop.run(consume_failing(&seen, &done));
  CHECK(seen == std::vector<std::string>{"1", "generator failed", "nullopt"});
  CHECK(done);
}

// ---- early destruction ---------------------------------------------------------------------------

namespace {
struct Tracker {
  Events* events;
  std::string name;
  Tracker(Events* e, std::string n) : events(e), name(std::move(n)) {
    events->push_back(name + " made");
  }
  Tracker(const Tracker&) = delete;
  Tracker& operator=(const Tracker&) = delete;
  ~Tracker() { events->push_back(name + " destroyed"); }
};

strata::AsyncGenerator<int> holds_locals(Events* events) {
  Tracker outer(events, "outer");
  for (int i = 0;; ++i) {
    Tracker inner(events, "inner " + std::to_string(i));
    co_await strata::sleep(0s);
    co_yield i;
  }
}

strata::Coro<void> take_two_and_drop(Events* events) {
  {
    auto gen = holds_locals(events);
    events->push_back("got " + show(co_await gen.next()));
    events->push_back("got " + show(co_await gen.next()));
    events->push_back("dropping");
  }
  events->push_back("dropped");
}

strata::Coro<void> never_started(Events* events) {
  {
    auto gen = holds_locals(events);
    events->push_back(gen.done() ? "done" : "not done");
  }
  events->push_back("dropped");
  co_return;
}
}  // namespace

STRATA_LOOP_TEST_CASE(
    "AsyncGenerator: destroying a suspended generator destroys the locals of its body",
    "[core][async_generator]") {
  strata::testing::TestLoop loop(TestType::kind);
  Events events;
  loop.run(take_two_and_drop(&events));
  CHECK(events == Events{"outer made", "inner 0 made", "got 0", "inner 0 destroyed",
                         "inner 1 made", "got 1", "dropping", "inner 1 destroyed",
                         "outer destroyed", "dropped"});
}

STRATA_LOOP_TEST_CASE("AsyncGenerator: a generator destroyed before its first next() never runs",
                      "[core][async_generator]") {
  strata::testing::TestLoop loop(TestType::kind);
  Events events;
  loop.run(never_started(&events));
  CHECK(events == Events{"not done", "dropped"});
}

// ---- concurrent next() -------------------------------------------------------------------------

namespace {
strata::AsyncGenerator<int> gated(strata::Future<void> entered, strata::Future<int> gate) {
  entered.set_result();
  co_yield co_await gate;
}

strata::Coro<std::string> first_next(strata::AsyncGenerator<int>* gen) {
  co_return show(co_await gen->next());
}

struct Concurrent {
  std::string second;
  std::string first;
  std::string after;
};

strata::Coro<void> two_consumers(Concurrent* out) {
  strata::EventLoop& loop = strata::get_running_loop();
  strata::Future<void> entered(loop);
  strata::Future<int> gate(loop);
  auto gen = gated(entered, gate);
  strata::Task<std::string> first = strata::create_task(first_next(&gen));
  co_await entered;  // the first consumer is inside next(), suspended on the gate
  out->second = kind(co_await exception_of(next_of(&gen)));
  gate.set_result(5);
  out->first = co_await first;
  out->after = show(co_await gen.next());
}
}  // namespace

STRATA_LOOP_TEST_CASE(
    "AsyncGenerator: next() while another next() is pending throws InvalidStateError",
    "[core][async_generator]") {
  strata::testing::TestLoop loop(TestType::kind);
  Concurrent out;
  loop.run(two_consumers(&out));
  CHECK(out.second == "InvalidStateError");
  CHECK(out.first == "5");  // the pending next() was not disturbed
  CHECK(out.after == "nullopt");
}

// ---- cancellation --------------------------------------------------------------------------------

namespace {
strata::AsyncGenerator<int> sleepy(strata::Future<void> entered, Events* events) {
  Tracker local(events, "local");
  entered.set_result();
  std::exception_ptr error = co_await exception_of(strata::sleep(1h));
  events->push_back("body " + kind(error));
  if (error) std::rethrow_exception(error);
  co_yield 1;
}

strata::Coro<void> consume_one(strata::AsyncGenerator<int>* gen, Events* events) {
  std::exception_ptr error = co_await exception_of(next_of(gen));
  events->push_back("consumer " + kind(error));
  if (error) std::rethrow_exception(error);
}

struct Cancelled {
  bool consumer_cancelled = false;
  bool generator_done = false;
};

strata::Coro<void> cancel_consumer(Cancelled* out, Events* events) {
  strata::Future<void> entered(strata::get_running_loop());
  auto gen = sleepy(entered, events);
  strata::Task<void> consumer = strata::create_task(consume_one(&gen, events), "consumer");
  co_await entered;
  consumer.cancel();
  events->push_back("cancel requested");
  co_await exception_of(consumer);
  out->consumer_cancelled = consumer.cancelled();
  out->generator_done = gen.done();
}
}  // namespace

STRATA_LOOP_TEST_CASE(
    "AsyncGenerator: cancelling the consuming task throws CancelledError at the body's co_await",
    "[core][async_generator]") {
  strata::testing::TestLoop loop(TestType::kind);
  Events events;
  Cancelled out;
  loop.run(cancel_consumer(&out, &events));
  CHECK(out.consumer_cancelled);
  CHECK(out.generator_done);
  CHECK(events == Events{"local made", "cancel requested", "body CancelledError",
                         "local destroyed", "consumer CancelledError"});
}
