#include <strata/core/semaphore.hpp>

#include <catch2/catch.hpp>

#include <chrono>
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
using strata::BoundedSemaphore;
using strata::Coro;
using strata::Future;
using strata::Semaphore;
using strata::SemaphoreGuard;
using strata::Task;
using Log = std::vector<std::string>;

namespace {

/// Yields one loop iteration (an ordering step, not a timed wait).
Coro<void> next_iteration() { co_await strata::sleep(0s); }

/// Takes a unit, holds it until @p done, then releases it through the guard.
Coro<void> holder(Semaphore* sem, Log* log, std::string name, Future<void> done) {
  log->push_back(name + " waits");
  SemaphoreGuard guard = co_await sem->acquire();
  log->push_back(name + " acquired");
  co_await done;
  log->push_back(name + " releases");
}

template <class T>
Future<void> when_done(Task<T>& t) {
  Future<void> f = t.get_loop().create_future();
  t.add_done_callback([f](Future<T>&) mutable { f.set_result(); });
  return f;
}

std::string state(const Semaphore& sem) {
  return "value " + std::to_string(sem.value()) + (sem.locked() ? " locked" : " unlocked");
}

}  // namespace

STRATA_LOOP_TEST_CASE("Semaphore: at most value holders run and the rest wait in FIFO order",
                      "[core][semaphore]") {
  strata::testing::TestLoop loop(TestType::kind);
  Semaphore sem(2);
  Log log;
  auto body = [&]() -> Coro<void> {
    Future<void> fa = loop->create_future<void>();
    Future<void> fb = loop->create_future<void>();
    Future<void> fc = loop->create_future<void>();
    Future<void> fd = loop->create_future<void>();
    Task<void> a = strata::create_task(holder(&sem, &log, "A", fa));
    Task<void> b = strata::create_task(holder(&sem, &log, "B", fb));
    Task<void> c = strata::create_task(holder(&sem, &log, "C", fc));
    Task<void> d = strata::create_task(holder(&sem, &log, "D", fd));
    co_await next_iteration();
    log.push_back(state(sem));
    fb.set_result();
    co_await b;
    log.push_back(state(sem));
    fa.set_result();
    fc.set_result();
    fd.set_result();
    co_await a;
    co_await c;
    co_await d;
    log.push_back(state(sem));
  };
  loop.run(body());
  CHECK(log == Log{"A waits", "A acquired", "B waits", "B acquired", "C waits", "D waits",
                   "value 0 locked", "B releases", "C acquired", "value 0 locked", "A releases",
                   "C releases", "D acquired", "D releases", "value 2 unlocked"});
}

STRATA_LOOP_TEST_CASE("Semaphore: a newcomer queues behind waiters even when a unit is free",
                      "[core][semaphore]") {
  strata::testing::TestLoop loop(TestType::kind);
  Semaphore sem(0);
  Log log;
  auto body = [&]() -> Coro<void> {
    Future<void> fa = loop->create_future<void>();
    fa.set_result();
    Task<void> a = strata::create_task(holder(&sem, &log, "A", fa));
    co_await next_iteration();
    sem.release();  // the unit goes to A at once
    log.push_back("released, " + state(sem));
    sem.release();
    log.push_back("released again, " + state(sem));
    {
      SemaphoreGuard g = co_await sem.acquire();
      log.push_back("main acquired, " + state(sem));
    }
    co_await a;
    log.push_back("end, " + state(sem));
  };
  loop.run(body());
  CHECK(log == Log{"A waits", "released, value 0 locked", "released again, value 1 locked",
                   "A acquired", "A releases", "main acquired, value 1 unlocked",
                   "end, value 2 unlocked"});
}

STRATA_LOOP_TEST_CASE("Semaphore: a waiter cancelled after being handed a unit gives it to the next",
                      "[core][semaphore]") {
  strata::testing::TestLoop loop(TestType::kind);
  Semaphore sem(1);
  Log log;
  Task<void> b;
  auto body = [&]() -> Coro<void> {
    Future<void> fa = loop->create_future<void>();
    Future<void> fc = loop->create_future<void>();
    fc.set_result();
    Task<void> a = strata::create_task(holder(&sem, &log, "A", fa));
    b = strata::create_task(holder(&sem, &log, "B", fa));
    Task<void> c = strata::create_task(holder(&sem, &log, "C", fc));
    co_await next_iteration();
    log.push_back(state(sem));
    sem.release();  // an extra unit: handed to B at once
    log.push_back("released, " + state(sem));
    b.cancel();  // B was woken but has not run: its unit must go to C
    co_await when_done(b);
    co_await c;
    log.push_back("C done, " + state(sem));
    fa.set_result();
    co_await a;
    log.push_back("end, " + state(sem));
  };
  loop.run(body());
  CHECK(log == Log{"A waits", "A acquired", "B waits", "C waits", "value 0 locked",
                   "released, value 0 locked", "C acquired", "C releases",
                   "C done, value 1 unlocked", "A releases", "end, value 2 unlocked"});
  CHECK(b.cancelled());
}

STRATA_LOOP_TEST_CASE("Semaphore: a waiter cancelled while queued keeps nothing",
                      "[core][semaphore]") {
  strata::testing::TestLoop loop(TestType::kind);
  Semaphore sem(0);
  Log log;
  Task<void> a;
  auto body = [&]() -> Coro<void> {
    Future<void> done = loop->create_future<void>();
    done.set_result();
    a = strata::create_task(holder(&sem, &log, "A", done));
    Task<void> b = strata::create_task(holder(&sem, &log, "B", done));
    co_await next_iteration();
    a.cancel();
    log.push_back("A cancelled, " + state(sem));
    co_await when_done(a);
    sem.release();
    co_await b;
    log.push_back("end, " + state(sem));
  };
  loop.run(body());
  CHECK(log == Log{"A waits", "B waits", "A cancelled, value 0 locked", "B acquired",
                   "B releases", "end, value 1 unlocked"});
  CHECK(a.cancelled());
}

STRATA_LOOP_TEST_CASE("Semaphore: a negative initial value throws std::invalid_argument",
                      "[core][semaphore]") {
  (void)TestType::kind;
  CHECK_THROWS_AS(Semaphore(-1), std::invalid_argument);
  CHECK_THROWS_WITH(Semaphore(-1), Catch::Matchers::Contains("got -1"));
  CHECK_THROWS_AS(BoundedSemaphore(-3), std::invalid_argument);
  Semaphore zero(0);
  CHECK(zero.locked());
  CHECK(zero.value() == 0);
}

STRATA_LOOP_TEST_CASE("Semaphore: a plain Semaphore may be released past its initial value",
                      "[core][semaphore]") {
  (void)TestType::kind;
  Semaphore sem(1);
  sem.release();
  CHECK(sem.value() == 2);
}

STRATA_LOOP_TEST_CASE("BoundedSemaphore: releasing past the initial value throws InvalidStateError",
                      "[core][semaphore]") {
  strata::testing::TestLoop loop(TestType::kind);
  BoundedSemaphore sem(1);
  Log log;
  auto body = [&]() -> Coro<void> {
    SemaphoreGuard g = co_await sem.acquire();
    log.push_back(state(sem));
    g.release();
    log.push_back(state(sem));
  };
  loop.run(body());
  CHECK(log == Log{"value 0 locked", "value 1 unlocked"});
  CHECK_THROWS_AS(sem.release(), strata::InvalidStateError);
  CHECK_THROWS_WITH(sem.release(), Catch::Matchers::Contains("released too many times"));
  CHECK(sem.value() == 1);
}
