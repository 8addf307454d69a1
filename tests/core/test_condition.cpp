#include <strata/core/condition.hpp>

#include <catch2/catch.hpp>

#include <chrono>
#include <exception>
#include <string>
#include <vector>

#include <strata/core/coro.hpp>
#include <strata/core/errors.hpp>
#include <strata/core/future.hpp>
#include <strata/core/lock.hpp>
#include <strata/core/sleep.hpp>
#include <strata/core/task.hpp>

#include "loop_test.hpp"

using namespace std::chrono_literals;
using strata::Condition;
using strata::Coro;
using strata::Future;
using strata::Lock;
using strata::LockGuard;
using strata::Task;
using Log = std::vector<std::string>;

namespace {

/// Yields one loop iteration (an ordering step, not a timed wait).
Coro<void> next_iteration() { co_await strata::sleep(0s); }

/// Awaits @p aw and returns the exception it ended with (nullptr when none): the only
/// try/catch in this file's coroutines.
template <class A>
Coro<std::exception_ptr> exception_of(A aw) {
  std::exception_ptr error;
  try {
    co_await aw;
  } catch (...) {
    error = std::current_exception();
  }
  co_return error;
}

std::string describe(const std::exception_ptr& e) {
  if (!e) return "returned";
  try {
    std::rethrow_exception(e);
  } catch (const strata::CancelledError&) {
    return "CancelledError";
  } catch (const strata::InvalidStateError&) {
    return "InvalidStateError";
  } catch (...) {
    return "other exception";
  }
}

std::string held(const Condition& c) { return c.locked() ? "lock held" : "lock free"; }

/// Acquires, waits once, records how wait() ended and whether the lock was held then;
/// rethrows what wait() threw.
Coro<void> waiter(Condition* cond, Log* log, std::string name) {
  LockGuard guard = co_await cond->acquire();
  log->push_back(name + " waits");
  std::exception_ptr e = co_await exception_of(cond->wait());
  log->push_back(name + " " + describe(e) + ", " + held(*cond));
  if (e) std::rethrow_exception(e);
}

template <class T>
Future<void> when_done(Task<T>& t) {
  Future<void> f = t.get_loop().create_future();
  t.add_done_callback([f](Future<T>&) mutable { f.set_result(); });
  return f;
}

}  // namespace

STRATA_LOOP_TEST_CASE("Condition: wait and notify without the lock throw InvalidStateError",
                      "[core][condition]") {
  strata::testing::TestLoop loop(TestType::kind);
  Condition cond;
  Log log;
  auto body = [&]() -> Coro<void> {
    std::exception_ptr e = co_await exception_of(cond.wait());
    log.push_back("wait: " + describe(e) + ", " + held(cond));
  };
  loop.run(body());
  CHECK(log == Log{"wait: InvalidStateError, lock free"});
  CHECK_THROWS_AS(cond.notify(), strata::InvalidStateError);
  CHECK_THROWS_AS(cond.notify_all(), strata::InvalidStateError);
  CHECK_THROWS_WITH(cond.notify(), Catch::Matchers::Contains("not acquired"));
}

STRATA_LOOP_TEST_CASE("Condition: notify wakes waiters in FIFO order, each holding the lock on return",
                      "[core][condition]") {
  strata::testing::TestLoop loop(TestType::kind);
  Condition cond;
  Log log;
  auto body = [&]() -> Coro<void> {
    Task<void> a = strata::create_task(waiter(&cond, &log, "A"));
    Task<void> b = strata::create_task(waiter(&cond, &log, "B"));
    Task<void> c = strata::create_task(waiter(&cond, &log, "C"));
    co_await next_iteration();
    {
      LockGuard guard = co_await cond.acquire();
      cond.notify(2);
      co_await next_iteration();  // the woken waiters cannot return while we hold the lock
      log.push_back("main releases");
    }
    co_await a;
    co_await b;
    log.push_back(std::string("C still waiting: ") + (c.done() ? "no" : "yes"));
    {
      LockGuard guard = co_await cond.acquire();
      cond.notify_all();
    }
    co_await c;
  };
  loop.run(body());
  CHECK(log == Log{"A waits", "B waits", "C waits", "main releases", "A returned, lock held",
                   "B returned, lock held", "C still waiting: yes", "C returned, lock held"});
  CHECK_FALSE(cond.locked());
}

STRATA_LOOP_TEST_CASE("Condition: a waiter cancelled while waiting re-acquires the lock before CancelledError leaves",
                      "[core][condition]") {
  strata::testing::TestLoop loop(TestType::kind);
  Condition cond;
  Log log;
  Task<void> a;
  auto body = [&]() -> Coro<void> {
    a = strata::create_task(waiter(&cond, &log, "A"));
    co_await next_iteration();
    {
      LockGuard guard = co_await cond.acquire();
      a.cancel();
      co_await next_iteration();
      log.push_back("main releases");
    }
    co_await when_done(a);
  };
  loop.run(body());
  CHECK(log == Log{"A waits", "main releases", "A CancelledError, lock held"});
  CHECK(a.cancelled());
  CHECK_FALSE(cond.locked());
}

STRATA_LOOP_TEST_CASE("Condition: a waiter cancelled during its re-acquire still holds the lock when it leaves",
                      "[core][condition]") {
  strata::testing::TestLoop loop(TestType::kind);
  Condition cond;
  Log log;
  Task<void> a;
  auto body = [&]() -> Coro<void> {
    a = strata::create_task(waiter(&cond, &log, "A"));
    co_await next_iteration();
    {
      LockGuard guard = co_await cond.acquire();
      cond.notify();
      co_await next_iteration();  // A is notified and now queues for the lock
      a.cancel();                 // cancels A's lock acquisition
      co_await next_iteration();
      log.push_back("main releases");
    }
    co_await when_done(a);
  };
  loop.run(body());
  CHECK(log == Log{"A waits", "main releases", "A CancelledError, lock held"});
  CHECK(a.cancelled());
  CHECK_FALSE(cond.locked());
}

STRATA_LOOP_TEST_CASE("Condition: a waiter cancelled after being notified passes the notification on",
                      "[core][condition]") {
  strata::testing::TestLoop loop(TestType::kind);
  Condition cond;
  Log log;
  Task<void> a;
  auto body = [&]() -> Coro<void> {
    a = strata::create_task(waiter(&cond, &log, "A"));
    Task<void> b = strata::create_task(waiter(&cond, &log, "B"));
    co_await next_iteration();
    {
      LockGuard guard = co_await cond.acquire();
      cond.notify(1);  // A is chosen...
      a.cancel();      // ...and cancelled before it runs
    }
    co_await when_done(a);
    co_await b;
  };
  loop.run(body());
  CHECK(log == Log{"A waits", "B waits", "A CancelledError, lock held", "B returned, lock held"});
  CHECK(a.cancelled());
}

STRATA_LOOP_TEST_CASE("Condition: wait_for returns the predicate's value once it holds",
                      "[core][condition]") {
  strata::testing::TestLoop loop(TestType::kind);
  Lock lock;
  Condition cond(lock);  // shares the lock
  Log log;
  int counter = 0;
  auto consumer = [&]() -> Coro<void> {
    LockGuard guard = co_await cond.acquire();
    auto predicate = [&] {
      log.push_back("check " + std::to_string(counter));
      return counter >= 2 ? counter : 0;
    };
    int value = co_await cond.wait_for(predicate);
    log.push_back("got " + std::to_string(value) + ", " + held(cond));
  };
  auto body = [&]() -> Coro<void> {
    Task<void> t = strata::create_task(consumer());
    co_await next_iteration();
    for (int i = 0; i < 2; ++i) {
      LockGuard guard = co_await lock.acquire();
      ++counter;
      cond.notify_all();
      guard.unlock();
      co_await next_iteration();
      co_await next_iteration();
    }
    co_await t;
  };
  loop.run(body());
  CHECK(log == Log{"check 0", "check 1", "check 2", "got 2, lock held"});
  CHECK_FALSE(lock.locked());
}
