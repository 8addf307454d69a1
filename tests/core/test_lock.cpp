#include <strata/core/lock.hpp>

#include <catch2/catch.hpp>

#include <chrono>
#include <string>
#include <utility>
#include <vector>

#include <strata/core/coro.hpp>
#include <strata/core/errors.hpp>
#include <strata/core/future.hpp>
#include <strata/core/sleep.hpp>
#include <strata/core/task.hpp>

#include "loop_test.hpp"

using namespace std::chrono_literals;
using strata::Coro;
using strata::Future;
using strata::Lock;
using strata::LockGuard;
using strata::Task;
using Log = std::vector<std::string>;

namespace {

/// Yields one loop iteration: lets the tasks already scheduled run up to their next
/// suspension. An ordering step on the loop, not a timed wait.
Coro<void> next_iteration() { co_await strata::sleep(0s); }

/// Acquires @p lock, holds it for one loop iteration, and releases it through the guard.
Coro<void> locker(Lock* lock, Log* log, std::string name) {
  log->push_back(name + " waits");
  LockGuard guard = co_await lock->acquire();
  log->push_back(name + " acquired");
  co_await next_iteration();
  log->push_back(name + " releases");
}

/// A Future<void> that becomes done when @p t is done (without retrieving its outcome).
template <class T>
Future<void> when_done(Task<T>& t) {
  Future<void> f = t.get_loop().create_future();
  t.add_done_callback([f](Future<T>&) mutable { f.set_result(); });
  return f;
}

}  // namespace

STRATA_LOOP_TEST_CASE("Lock: acquiring a free lock takes it without suspending",
                      "[core][lock]") {
  strata::testing::TestLoop loop(TestType::kind);
  Lock lock;
  Log log;
  auto body = [&]() -> Coro<void> {
    loop->call_soon([&log] { log.push_back("callback"); });
    log.push_back(std::string("before: ") + (lock.locked() ? "locked" : "free"));
    {
      LockGuard guard = co_await lock.acquire();
      log.push_back(std::string("acquired: ") + (lock.locked() ? "locked" : "free"));
      log.push_back(std::string("guard owns: ") + (guard.owns_lock() ? "yes" : "no"));
    }
    log.push_back(std::string("after guard: ") + (lock.locked() ? "locked" : "free"));
    co_await next_iteration();
  };
  loop.run(body());
  CHECK(log == Log{"before: free", "acquired: locked", "guard owns: yes", "after guard: free",
                   "callback"});
}

STRATA_LOOP_TEST_CASE("Lock: waiters acquire one at a time in FIFO order", "[core][lock]") {
  strata::testing::TestLoop loop(TestType::kind);
  Lock lock;
  Log log;
  auto body = [&]() -> Coro<void> {
    LockGuard guard = co_await lock.acquire();
    Task<void> a = strata::create_task(locker(&lock, &log, "A"));
    Task<void> b = strata::create_task(locker(&lock, &log, "B"));
    Task<void> c = strata::create_task(locker(&lock, &log, "C"));
    co_await next_iteration();
    log.push_back("main releases");
    guard.unlock();
    co_await a;
    co_await b;
    co_await c;
  };
  loop.run(body());
  CHECK(log == Log{"A waits", "B waits", "C waits", "main releases", "A acquired", "A releases",
                   "B acquired", "B releases", "C acquired", "C releases"});
  CHECK_FALSE(lock.locked());
}

STRATA_LOOP_TEST_CASE("Lock: a newcomer queues behind a woken waiter instead of barging",
                      "[core][lock]") {
  strata::testing::TestLoop loop(TestType::kind);
  Lock lock;
  Log log;
  auto body = [&]() -> Coro<void> {
    LockGuard guard = co_await lock.acquire();
    Task<void> a = strata::create_task(locker(&lock, &log, "A"));
    co_await next_iteration();
    guard.unlock();  // A is woken but has not run yet
    log.push_back(std::string("after release: ") + (lock.locked() ? "locked" : "free"));
    {
      LockGuard again = co_await lock.acquire();  // must queue behind A
      log.push_back("main acquired again");
    }
    co_await a;
  };
  loop.run(body());
  CHECK(log == Log{"A waits", "after release: free", "A acquired", "A releases",
                   "main acquired again"});
}

STRATA_LOOP_TEST_CASE("Lock: a waiter cancelled while queued is skipped", "[core][lock]") {
  strata::testing::TestLoop loop(TestType::kind);
  Lock lock;
  Log log;
  Task<void> b;
  auto body = [&]() -> Coro<void> {
    LockGuard guard = co_await lock.acquire();
    Task<void> a = strata::create_task(locker(&lock, &log, "A"));
    b = strata::create_task(locker(&lock, &log, "B"));
    Task<void> c = strata::create_task(locker(&lock, &log, "C"));
    co_await next_iteration();
    a.cancel();
    co_await when_done(a);
    log.push_back(std::string("A cancelled, lock ") + (lock.locked() ? "locked" : "free"));
    guard.unlock();
    b.cancel();  // the first live waiter is cancelled right after being chosen
    co_await when_done(b);
    co_await c;
    log.push_back(std::string("end, lock ") + (lock.locked() ? "locked" : "free"));
  };
  loop.run(body());
  CHECK(log == Log{"A waits", "B waits", "C waits", "A cancelled, lock locked", "C acquired",
                   "C releases", "end, lock free"});
  CHECK(b.cancelled());
}

STRATA_LOOP_TEST_CASE("Lock: a waiter cancelled after the lock was passed to it passes it on",
                      "[core][lock]") {
  strata::testing::TestLoop loop(TestType::kind);
  Lock lock;
  Log log;
  Task<void> a;
  Task<void> b;
  auto body = [&]() -> Coro<void> {
    LockGuard guard = co_await lock.acquire();
    a = strata::create_task(locker(&lock, &log, "A"));
    b = strata::create_task(locker(&lock, &log, "B"));
    co_await next_iteration();
    guard.unlock();  // A is chosen: its future is done, it has not run yet
    log.push_back(std::string("A cancel() returns ") + (a.cancel() ? "true" : "false"));
    co_await when_done(a);
    co_await b;
    log.push_back(std::string("end, lock ") + (lock.locked() ? "locked" : "free"));
  };
  loop.run(body());
  CHECK(log == Log{"A waits", "B waits", "A cancel() returns true", "B acquired", "B releases",
                   "end, lock free"});
  CHECK(a.cancelled());
  CHECK(b.done());
  CHECK_FALSE(b.cancelled());
}

STRATA_LOOP_TEST_CASE("Lock: a newcomer takes the lock at once when every waiter is cancelled",
                      "[core][lock]") {
  strata::testing::TestLoop loop(TestType::kind);
  Lock lock;
  Log log;
  auto body = [&]() -> Coro<void> {
    LockGuard guard = co_await lock.acquire();
    Task<void> a = strata::create_task(locker(&lock, &log, "A"));
    co_await next_iteration();
    a.cancel();  // A's future is cancelled; A has not unwound yet
    guard.unlock();
    {
      LockGuard mine = co_await lock.acquire();
      log.push_back("main re-acquired without waiting");
    }
    co_await when_done(a);
    log.push_back(std::string("end, lock ") + (lock.locked() ? "locked" : "free"));
  };
  loop.run(body());
  CHECK(log == Log{"A waits", "main re-acquired without waiting", "end, lock free"});
}

STRATA_LOOP_TEST_CASE("Lock: releasing an unlocked lock throws InvalidStateError",
                      "[core][lock]") {
  Lock lock;
  CHECK_THROWS_AS(lock.release(), strata::InvalidStateError);
  CHECK_THROWS_WITH(lock.release(), Catch::Matchers::Contains("not acquired"));
  CHECK_FALSE(lock.locked());
  (void)TestType::kind;
}

STRATA_LOOP_TEST_CASE("Lock: a guard can be moved, unlocked early and detached",
                      "[core][lock]") {
  strata::testing::TestLoop loop(TestType::kind);
  Lock lock;
  Log log;
  auto state = [&lock] { return std::string(lock.locked() ? "locked" : "free"); };
  auto body = [&]() -> Coro<void> {
    LockGuard first = co_await lock.acquire();
    LockGuard second = std::move(first);
    log.push_back("moved: " + std::string(first.owns_lock() ? "both" : "one") + ", " + state());
    second.unlock();
    log.push_back("unlocked early: " + state());
    LockGuard third = co_await lock.acquire();
    Lock* detached = third.detach();
    log.push_back("detached: " + state());
    detached->release();
    log.push_back("released by hand: " + state());
  };
  loop.run(body());
  CHECK(log == Log{"moved: one, locked", "unlocked early: free", "detached: locked",
                   "released by hand: free"});
  LockGuard empty;
  CHECK_THROWS_AS(empty.unlock(), strata::InvalidStateError);
}
