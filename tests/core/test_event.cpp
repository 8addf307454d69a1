#include <strata/core/event.hpp>

#include <catch2/catch.hpp>

#include <chrono>
#include <string>
#include <vector>

#include <strata/core/coro.hpp>
#include <strata/core/future.hpp>
#include <strata/core/sleep.hpp>
#include <strata/core/task.hpp>

#include "loop_test.hpp"

using namespace std::chrono_literals;
using strata::Coro;
using strata::Event;
using strata::Future;
using strata::Task;
using Log = std::vector<std::string>;

namespace {

/// Yields one loop iteration (an ordering step, not a timed wait).
Coro<void> next_iteration() { co_await strata::sleep(0s); }

Coro<void> waiter(Event* event, Log* log, std::string name) {
  log->push_back(name + " waits");
  co_await event->wait();
  log->push_back(name + " woke");
}

template <class T>
Future<void> when_done(Task<T>& t) {
  Future<void> f = t.get_loop().create_future();
  t.add_done_callback([f](Future<T>&) mutable { f.set_result(); });
  return f;
}

}  // namespace

STRATA_LOOP_TEST_CASE("Event: set wakes every waiter and later waits return at once",
                      "[core][event]") {
  strata::testing::TestLoop loop(TestType::kind);
  Event event;
  Log log;
  auto body = [&]() -> Coro<void> {
    log.push_back(std::string("initially ") + (event.is_set() ? "set" : "clear"));
    Task<void> a = strata::create_task(waiter(&event, &log, "A"));
    Task<void> b = strata::create_task(waiter(&event, &log, "B"));
    co_await next_iteration();
    log.push_back("set");
    event.set();
    event.set();  // a no-op
    log.push_back("set returned");
    co_await a;
    co_await b;
    loop->call_soon([&log] { log.push_back("callback"); });
    co_await event.wait();  // no suspension: the callback has not run yet
    log.push_back(std::string("main passed, ") + (event.is_set() ? "set" : "clear"));
    co_await next_iteration();
  };
  loop.run(body());
  CHECK(log == Log{"initially clear", "A waits", "B waits", "set", "set returned", "A woke",
                   "B woke", "main passed, set", "callback"});
}

STRATA_LOOP_TEST_CASE("Event: a waiting task that nobody holds lives until it is woken",
                      "[core][event]") {
  // A waiting task is parked on its waiter, not on a future: the park itself must keep the
  // task alive, as a future's done callback keeps asyncio's.
  strata::testing::TestLoop loop(TestType::kind);
  Event event;
  Event finished;
  Log log;
  auto body = [&]() -> Coro<void> {
    auto forgotten = [](Event* e, Event* done, Log* l) -> Coro<void> {
      co_await waiter(e, l, "A");
      done->set();
    };
    {
      Task<void> dropped = strata::create_task(forgotten(&event, &finished, &log));
    }
    co_await next_iteration();
    CHECK(strata::all_tasks().size() == 2);
    event.set();
    co_await finished.wait();
  };
  loop.run(body());
  CHECK(log == Log{"A waits", "A woke"});
}

STRATA_LOOP_TEST_CASE("Event: waiters woken by set return even if clear follows at once",
                      "[core][event]") {
  strata::testing::TestLoop loop(TestType::kind);
  Event event;
  Log log;
  auto body = [&]() -> Coro<void> {
    Task<void> a = strata::create_task(waiter(&event, &log, "A"));
    co_await next_iteration();
    event.set();
    event.clear();
    log.push_back(std::string("cleared: ") + (event.is_set() ? "set" : "clear"));
    co_await a;
    Task<void> b = strata::create_task(waiter(&event, &log, "B"));
    co_await next_iteration();
    log.push_back(std::string("B done after clear: ") + (b.done() ? "yes" : "no"));
    event.set();
    co_await b;
  };
  loop.run(body());
  CHECK(log == Log{"A waits", "cleared: clear", "A woke", "B waits", "B done after clear: no",
                   "B woke"});
}

STRATA_LOOP_TEST_CASE("Event: a cancelled waiter leaves the other waiters to be woken",
                      "[core][event]") {
  strata::testing::TestLoop loop(TestType::kind);
  Event event;
  Log log;
  Task<void> a;
  Task<void> c;
  auto body = [&]() -> Coro<void> {
    a = strata::create_task(waiter(&event, &log, "A"));
    Task<void> b = strata::create_task(waiter(&event, &log, "B"));
    c = strata::create_task(waiter(&event, &log, "C"));
    co_await next_iteration();
    a.cancel();
    co_await when_done(a);
    event.set();
    c.cancel();  // woken, then cancelled before it runs
    co_await b;
    co_await when_done(c);
  };
  loop.run(body());
  CHECK(log == Log{"A waits", "B waits", "C waits", "B woke"});
  CHECK(a.cancelled());
  CHECK(c.cancelled());
}

STRATA_LOOP_TEST_CASE("Event: a cancel reaches a waiting task as it reaches one awaiting a future",
                      "[core][event][cancel]") {
  // The waiting task is parked on its waiter, not on a future: the messages, the count and
  // uncancel() must still behave as asyncio's (see the Task test with a future).
  strata::testing::TestLoop loop(TestType::kind);
  Event event;
  Log log;
  auto worker = [&log](Event* e) -> Coro<void> {
    try {
      co_await e->wait();
      log.push_back("woke");
    } catch (const strata::CancelledError& error) {
      log.push_back("caught " + error.message() + ", cancelling " +
                    std::to_string(strata::current_task().cancelling()));
    }
  };
  auto body = [&]() -> Coro<void> {
    // Two requests before the task runs: the latest message wins.
    Task<void> twice = strata::create_task(worker(&event));
    co_await next_iteration();
    CHECK(twice.cancel("first"));
    CHECK(twice.cancel("second"));
    CHECK(twice.cancelling() == 2);
    co_await twice;
    // A request taken back before the task runs: the wait was cancelled already, so the
    // task still gets its CancelledError (asyncio: the waiter future stays cancelled).
    Task<void> taken_back = strata::create_task(worker(&event));
    co_await next_iteration();
    CHECK(taken_back.cancel("only"));
    CHECK(taken_back.uncancel() == 0);
    co_await taken_back;
    // Woken first, cancelled before it runs: the cancel wins, and set() is not lost for the
    // other waiter.
    Task<void> woken = strata::create_task(worker(&event));
    Task<void> other = strata::create_task(worker(&event));
    co_await next_iteration();
    event.set();
    CHECK(woken.cancel("late"));
    co_await woken;
    co_await other;
  };
  loop.run(body());
  CHECK(log == Log{"caught second, cancelling 2", "caught only, cancelling 0",
                   "caught late, cancelling 1", "woke"});
}
