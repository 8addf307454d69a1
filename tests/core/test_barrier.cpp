#include <strata/core/barrier.hpp>

#include <catch2/catch.hpp>

#include <chrono>
#include <cstdint>
#include <exception>
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
using strata::Barrier;
using strata::Coro;
using strata::Future;
using strata::Task;
using Log = std::vector<std::string>;

namespace {

/// Yields one loop iteration (an ordering step, not a timed wait).
Coro<void> next_iteration() { co_await strata::sleep(0s); }

struct Outcome {
  std::int64_t index = -1;
  std::exception_ptr error;
};

/// Awaits @p c and returns its value or exception: the only try/catch in this file's
/// coroutines.
Coro<Outcome> outcome_of(Coro<std::int64_t> c) {
  Outcome o;
  try {
    o.index = co_await c;
  } catch (...) {
    o.error = std::current_exception();
  }
  co_return o;
}

std::string describe(const std::exception_ptr& e) {
  try {
    std::rethrow_exception(e);
  } catch (const strata::CancelledError&) {
    return "CancelledError";
  } catch (const strata::BrokenBarrierError&) {
    return "BrokenBarrierError";
  } catch (...) {
    return "other exception";
  }
}

/// Waits at @p barrier and records the arrival index or the exception.
Coro<void> party(Barrier* barrier, Log* log, std::string name) {
  log->push_back(name + " arrives");
  Outcome o = co_await outcome_of(barrier->wait());
  log->push_back(name + (o.error ? " " + describe(o.error) : " index " + std::to_string(o.index)));
}

/// Waits at @p barrier with no handling: a cancellation ends the task cancelled.
Coro<void> plain_party(Barrier* barrier, Log* log, std::string name) {
  log->push_back(name + " arrives");
  std::int64_t index = co_await barrier->wait();
  log->push_back(name + " index " + std::to_string(index));
}

template <class T>
Future<void> when_done(Task<T>& t) {
  Future<void> f = t.get_loop().create_future();
  t.add_done_callback([f](Future<T>&) mutable { f.set_result(); });
  return f;
}

std::string state(const Barrier& b) {
  return "waiting " + std::to_string(b.n_waiting()) + (b.broken() ? " broken" : "");
}

}  // namespace

STRATA_LOOP_TEST_CASE("Barrier: wait returns each task's arrival index once all parties arrived",
                      "[core][barrier]") {
  strata::testing::TestLoop loop(TestType::kind);
  Barrier barrier(3);
  Log log;
  auto body = [&]() -> Coro<void> {
    Task<void> a = strata::create_task(party(&barrier, &log, "A"));
    Task<void> b = strata::create_task(party(&barrier, &log, "B"));
    co_await next_iteration();
    log.push_back(state(barrier));
    Task<void> c = strata::create_task(party(&barrier, &log, "C"));
    co_await a;
    co_await b;
    co_await c;
    log.push_back(state(barrier));
  };
  loop.run(body());
  CHECK(log == Log{"A arrives", "B arrives", "waiting 2", "C arrives", "C index 2", "A index 0",
                   "B index 1", "waiting 0"});
  CHECK(barrier.parties() == 3);
}

STRATA_LOOP_TEST_CASE("Barrier: a newcomer during draining waits for the next cycle",
                      "[core][barrier]") {
  strata::testing::TestLoop loop(TestType::kind);
  Barrier barrier(2);
  Log log;
  auto body = [&]() -> Coro<void> {
    Task<void> a = strata::create_task(party(&barrier, &log, "A"));
    Task<void> b = strata::create_task(party(&barrier, &log, "B"));
    // Started while A is still draining: it must not count towards the first cycle.
    Task<void> c = strata::create_task(party(&barrier, &log, "C"));
    co_await a;
    co_await b;
    log.push_back(state(barrier));
    Task<void> d = strata::create_task(party(&barrier, &log, "D"));
    co_await c;
    co_await d;
    log.push_back(state(barrier));
  };
  loop.run(body());
  CHECK(log == Log{"A arrives", "B arrives", "B index 1", "C arrives", "A index 0", "waiting 1",
                   "D arrives", "D index 1", "C index 0", "waiting 0"});
}

STRATA_LOOP_TEST_CASE("Barrier: abort makes waiting and later waits throw BrokenBarrierError",
                      "[core][barrier]") {
  strata::testing::TestLoop loop(TestType::kind);
  Barrier barrier(3);
  Log log;
  auto body = [&]() -> Coro<void> {
    Task<void> a = strata::create_task(party(&barrier, &log, "A"));
    co_await next_iteration();
    co_await barrier.abort();
    log.push_back(state(barrier));
    co_await a;
    Task<void> b = strata::create_task(party(&barrier, &log, "B"));
    co_await b;
    co_await barrier.reset();
    log.push_back("reset, " + state(barrier));
    Task<void> c = strata::create_task(party(&barrier, &log, "C"));
    Task<void> d = strata::create_task(party(&barrier, &log, "D"));
    Task<void> e = strata::create_task(party(&barrier, &log, "E"));
    co_await c;
    co_await d;
    co_await e;
  };
  loop.run(body());
  CHECK(log == Log{"A arrives", "waiting 0 broken", "A BrokenBarrierError", "B arrives",
                   "B BrokenBarrierError", "reset, waiting 0", "C arrives", "D arrives",
                   "E arrives", "E index 2", "C index 0", "D index 1"});
}

STRATA_LOOP_TEST_CASE("Barrier: reset breaks the current cycle and leaves the barrier usable",
                      "[core][barrier]") {
  strata::testing::TestLoop loop(TestType::kind);
  Barrier barrier(2);
  Log log;
  auto body = [&]() -> Coro<void> {
    Task<void> a = strata::create_task(party(&barrier, &log, "A"));
    co_await next_iteration();
    co_await barrier.reset();
    co_await a;
    log.push_back(state(barrier));
    Task<void> b = strata::create_task(party(&barrier, &log, "B"));
    Task<void> c = strata::create_task(party(&barrier, &log, "C"));
    co_await b;
    co_await c;
  };
  loop.run(body());
  CHECK(log == Log{"A arrives", "A BrokenBarrierError", "waiting 0", "B arrives", "C arrives",
                   "C index 1", "B index 0"});
}

STRATA_LOOP_TEST_CASE("Barrier: a waiter cancelled while waiting leaves the cycle",
                      "[core][barrier]") {
  strata::testing::TestLoop loop(TestType::kind);
  Barrier barrier(2);
  Log log;
  Task<void> a;
  auto body = [&]() -> Coro<void> {
    a = strata::create_task(plain_party(&barrier, &log, "A"));
    co_await next_iteration();
    log.push_back(state(barrier));
    a.cancel();
    co_await when_done(a);
    log.push_back("A cancelled, " + state(barrier));
    Task<void> b = strata::create_task(party(&barrier, &log, "B"));
    Task<void> c = strata::create_task(party(&barrier, &log, "C"));
    co_await b;
    co_await c;
  };
  loop.run(body());
  CHECK(log == Log{"A arrives", "waiting 1", "A cancelled, waiting 0", "B arrives", "C arrives",
                   "C index 1", "B index 0"});
  CHECK(a.cancelled());
}

STRATA_LOOP_TEST_CASE("Barrier: fewer than one party throws std::invalid_argument",
                      "[core][barrier]") {
  (void)TestType::kind;
  CHECK_THROWS_AS(Barrier(0), std::invalid_argument);
  CHECK_THROWS_WITH(Barrier(-2), Catch::Matchers::Contains("got -2"));
  Barrier one(1);
  CHECK(one.parties() == 1);
  CHECK_FALSE(one.broken());
}
