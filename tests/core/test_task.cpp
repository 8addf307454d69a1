#include <strata/core/task.hpp>
#include <strata/core/detail/waiter_queue.hpp>

#include <catch2/catch.hpp>

#include <algorithm>
#include <coroutine>
#include <exception>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include <strata/core/coro.hpp>
#include <strata/core/errors.hpp>
#include <strata/core/event_loop.hpp>
#include <strata/core/future.hpp>
#include <strata/core/sleep.hpp>

#include "loop_test.hpp"

using namespace std::chrono_literals;
using Catch::Matchers::Contains;
using Catch::Matchers::Matches;
using strata::CancelledError;
using strata::Coro;
using strata::Future;
using strata::InvalidStateError;
using strata::Task;
using Log = std::vector<std::string>;

namespace {

std::string what_of(const std::exception_ptr& e) {
  try {
    std::rethrow_exception(e);
  } catch (const std::exception& x) {
    return x.what();
  } catch (...) {
    return "not a std::exception";
  }
}

std::vector<std::string> names_of(const std::vector<strata::TaskRef>& tasks) {
  std::vector<std::string> names;
  names.reserve(tasks.size());
  for (const strata::TaskRef& t : tasks) names.push_back(t.get_name());
  std::sort(names.begin(), names.end());
  return names;
}

/// Appends "<name> destroyed" to the log when it goes out of scope.
struct Guard {
  Log* log;
  std::string name;
  ~Guard() { log->push_back(name + " destroyed"); }
};

Coro<int> value(int v) { co_return v; }

Coro<void> record(Log* log, std::string entry) {
  log->push_back(std::move(entry));
  co_return;
}

/// Keeps @p token in its frame; records if the body runs.
Coro<void> holds([[maybe_unused]] std::shared_ptr<int> token, Log* log) {
  log->push_back("body ran");
  co_return;
}

/// Waits for @p f; records a CancelledError and rethrows it.
Coro<void> wait_on(Future<void> f, Log* log, std::string who) {
  try {
    co_await f;
    log->push_back(who + ": resumed normally");
  } catch (const CancelledError& e) {
    log->push_back(who + ": CancelledError " + e.message());
    throw;
  }
}

Coro<void> fails(std::string message) {
  co_await strata::sleep(0s);
  throw std::runtime_error(message);
}

/// A Future<void> that becomes done when @p t is done (without retrieving its outcome).
template <class T>
Future<void> when_done(Task<T>& t) {
  Future<void> f = t.get_loop().create_future();
  t.add_done_callback([f](Future<T>&) mutable { f.set_result(); });
  return f;
}

}  // namespace

// ---- Starting and results -------------------------------------------------------------------

STRATA_LOOP_TEST_CASE("Task: create_task schedules the coroutine for the next iteration",
                      "[core][task]") {
  strata::testing::TestLoop loop(TestType::kind);
  Log log;
  auto child = [&log]() -> Coro<int> {
    log.push_back("child runs");
    co_return 1;
  };
  SECTION("from inside a task") {
    auto body = [&]() -> Coro<void> {
      loop->call_soon([&log] { log.push_back("callback scheduled before create_task"); });
      Task<int> t = strata::create_task(child());
      log.push_back("create_task returned");
      CHECK_FALSE(t.done());
      int v = co_await t;
      log.push_back("result " + std::to_string(v));
    };
    loop.run(body());
    CHECK(log == Log{"create_task returned", "callback scheduled before create_task", "child runs",
                     "result 1"});
  }
  SECTION("before the loop runs") {
    Task<int> t = loop->create_task(child());
    CHECK(log.empty());
    CHECK_FALSE(t.done());
    CHECK(loop->run_until_complete(Future<int>(t)) == 1);
    CHECK(log == Log{"child runs"});
  }
}

STRATA_LOOP_TEST_CASE("Task: create_eager_task runs the first step inside the call",
                      "[core][task]") {
  strata::testing::TestLoop loop(TestType::kind);
  Log log;
  std::vector<strata::TaskRef> seen;
  auto at_once = [&]() -> Coro<int> {
    seen.push_back(strata::current_task());
    log.push_back("at_once runs");
    co_return 7;
  };
  auto suspends = [&]() -> Coro<int> {
    log.push_back("suspends: first step");
    co_await strata::sleep(0s);
    seen.push_back(strata::current_task());
    log.push_back("suspends: second step");
    co_return 8;
  };
  auto throws = []() -> Coro<int> {
    throw std::runtime_error("eager failure");
    co_return 0;
  };
  SECTION("a coroutine that does not suspend gives a done task") {
    auto body = [&]() -> Coro<void> {
      strata::TaskRef self = strata::current_task();
      Task<int> t = loop->create_eager_task(at_once(), "eager");
      log.push_back("create_eager_task returned");
      CHECK(t.done());
      CHECK(t.result() == 7);
      REQUIRE(seen.size() == 1);
      CHECK(seen[0] == t.ref());
      CHECK(strata::current_task() == self);  // the caller's task is current again
      co_return;
    };
    loop.run(body());
    CHECK(log == Log{"at_once runs", "create_eager_task returned"});
  }
  SECTION("a coroutine that suspends goes on from the ready queue") {
    auto body = [&]() -> Coro<void> {
      Task<int> t = loop->create_eager_task(suspends());
      log.push_back("create_eager_task returned");
      CHECK_FALSE(t.done());
      int v = co_await t;
      CHECK(v == 8);
      REQUIRE(seen.size() == 1);
      CHECK(seen[0] == t.ref());
    };
    loop.run(body());
    CHECK(log == Log{"suspends: first step", "create_eager_task returned",
                     "suspends: second step"});
  }
  SECTION("an exception of the first step goes to the task") {
    auto body = [&]() -> Coro<void> {
      Task<int> t = loop->create_eager_task(throws());
      CHECK(t.done());
      CHECK(what_of(t.exception()) == "eager failure");
      co_return;
    };
    loop.run(body());
    CHECK(loop.errors().empty());
  }
  SECTION("from a plain callback of the running loop") {
    Task<int> t;
    loop->call_soon([&] {
      t = loop->create_eager_task(at_once());
      log.push_back(t.done() ? "done in the callback" : "pending in the callback");
    });
    auto body = [&]() -> Coro<void> { co_await strata::sleep(0s); };
    loop.run(body());
    CHECK(log == Log{"at_once runs", "done in the callback"});
    CHECK(t.result() == 7);
  }
  SECTION("before the loop runs it is scheduled like create_task") {
    Task<int> t = loop->create_eager_task(at_once());
    CHECK(log.empty());
    CHECK(loop->run_until_complete(Future<int>(t)) == 7);
    CHECK(log == Log{"at_once runs"});
  }
}

STRATA_LOOP_TEST_CASE("Task: co_await and result() give the coroutine's value", "[core][task]") {
  strata::testing::TestLoop loop(TestType::kind);
  Log log;
  auto make_text = []() -> Coro<std::string> {
    int v = co_await value(4);
    co_await strata::sleep(0s);
    co_return "v=" + std::to_string(v);
  };
  auto body = [&]() -> Coro<void> {
    Task<std::string> t = strata::create_task(make_text());
    Task<void> v = strata::create_task(record(&log, "void task ran"));
    std::string s = co_await t;
    CHECK(s == "v=4");
    CHECK(t.done());
    CHECK_FALSE(t.cancelled());
    CHECK(t.result() == "v=4");  // the value stays for later readers
    CHECK(t.exception() == nullptr);
    co_await v;
    CHECK(v.done());
    CHECK_NOTHROW(v.result());
  };
  loop.run(body());
  CHECK(log == Log{"void task ran"});
}

STRATA_LOOP_TEST_CASE("Task: an exception escaping the coroutine is the task's exception",
                      "[core][task]") {
  strata::testing::TestLoop loop(TestType::kind);
  Log log;
  auto body = [&]() -> Coro<void> {
    Task<void> t = strata::create_task(fails("bad input"));
    try {
      co_await t;
      log.push_back("no exception");
    } catch (const std::runtime_error& e) {
      log.push_back(std::string("caught ") + e.what());
    }
    CHECK(t.done());
    CHECK_FALSE(t.cancelled());
    CHECK(what_of(t.exception()) == "bad input");
    CHECK_THROWS_WITH(t.result(), "bad input");
  };
  loop.run(body());
  CHECK(log == Log{"caught bad input"});
  CHECK(loop.errors().empty());
}

// ---- current_task, all_tasks, names ---------------------------------------------------------

STRATA_LOOP_TEST_CASE("Task: current_task() is the running task inside a task and empty outside",
                      "[core][task]") {
  strata::testing::TestLoop loop(TestType::kind);
  std::vector<strata::TaskRef> seen;
  Log log;
  CHECK_FALSE(strata::current_task());
  auto child = [&]() -> Coro<void> {
    seen.push_back(strata::current_task());
    co_await strata::sleep(0s);
    seen.push_back(strata::current_task());
  };
  auto body = [&]() -> Coro<void> {
    strata::TaskRef self = strata::current_task();
    REQUIRE(self);
    log.push_back("main is " + self.get_name());
    loop->call_soon([&log] {
      log.push_back(std::string("in a callback: ") + (strata::current_task() ? "a task" : "none"));
    });
    Task<void> c = strata::create_task(child(), "child");
    co_await c;
    REQUIRE(seen.size() == 2);
    CHECK(seen[0] == c.ref());
    CHECK(seen[1] == c.ref());
    CHECK(seen[0].get_name() == "child");
    CHECK(strata::current_task() == self);  // back in main after the await
  };
  loop.run(body());
  CHECK_FALSE(strata::current_task());
  CHECK(log == Log{"main is test-main", "in a callback: none"});
}

STRATA_LOOP_TEST_CASE("Task: all_tasks() lists the tasks that are not done", "[core][task]") {
  strata::testing::TestLoop loop(TestType::kind);
  Future<void> release_a = loop->create_future();
  Future<void> release_b = loop->create_future();
  auto waits = [](Future<void> f) -> Coro<void> { co_await f; };
  Task<void> a = loop->create_task(waits(release_a), "a");
  Task<void> b = loop->create_task(waits(release_b), "b");
  CHECK(names_of(strata::all_tasks(*loop)) == Log{"a", "b"});  // created, not started
  CHECK_THROWS_AS(strata::all_tasks(), strata::EventLoopError);  // no loop running
  auto body = [&]() -> Coro<void> {
    co_await strata::sleep(0s);
    CHECK(names_of(strata::all_tasks()) == Log{"a", "b", "test-main"});
    CHECK(names_of(strata::all_tasks(*loop)) == Log{"a", "b", "test-main"});
    release_a.set_result();
    co_await a;
    CHECK(names_of(strata::all_tasks()) == Log{"b", "test-main"});
    release_b.set_result();
    co_await b;
    CHECK(names_of(strata::all_tasks()) == Log{"test-main"});
  };
  loop.run(body());
  CHECK(strata::all_tasks(*loop).empty());
}

STRATA_LOOP_TEST_CASE("Task: tasks are named Task-N by default, or by the name given",
                      "[core][task]") {
  strata::testing::TestLoop loop(TestType::kind);
  Log log;
  Task<void> a = loop->create_task(record(&log, "a"));
  Task<void> b = loop->create_task(record(&log, "b"));
  Task<void> named = loop->create_task(record(&log, "named"), "worker");
  CHECK_THAT(a.get_name(), Matches("Task-[1-9][0-9]*"));
  CHECK_THAT(b.get_name(), Matches("Task-[1-9][0-9]*"));
  // Numbered in creation order.
  CHECK(std::stoull(b.get_name().substr(5)) == std::stoull(a.get_name().substr(5)) + 1);
  CHECK(named.get_name() == "worker");
  CHECK(a.ref().get_name() == a.get_name());
  loop->run_until_complete(Future<void>(named));
  loop->run_until_complete(Future<void>(b));
  CHECK(log == Log{"a", "b", "named"});
}

STRATA_LOOP_TEST_CASE("Task: set_name renames the task", "[core][task]") {
  strata::testing::TestLoop loop(TestType::kind);
  Log log;
  auto child = [&log]() -> Coro<void> {
    log.push_back("running as " + strata::current_task().get_name());
    co_await strata::sleep(0s);
    log.push_back("then as " + strata::current_task().get_name());
  };
  auto body = [&]() -> Coro<void> {
    Task<void> t = strata::create_task(child(), "before");
    t.set_name("renamed");
    CHECK(t.get_name() == "renamed");
    co_await strata::sleep(0s);
    t.set_name("renamed again");
    co_await t;
  };
  loop.run(body());
  CHECK(log == Log{"running as renamed", "then as renamed again"});
}

// ---- Cancellation -------------------------------------------------------------------------

STRATA_LOOP_TEST_CASE("Task: cancel makes the current co_await throw CancelledError with the message",
                      "[core][task]") {
  strata::testing::TestLoop loop(TestType::kind);
  Log log;
  auto body = [&]() -> Coro<void> {
    Future<void> f = loop->create_future();
    Task<void> t = strata::create_task(wait_on(f, &log, "worker"), "worker");
    co_await strata::sleep(0s);  // the worker now waits on f
    CHECK(t.cancel("stop now"));
    log.push_back("cancel returned");
    CHECK_FALSE(t.done());  // the CancelledError is delivered on a later iteration
    try {
      co_await t;
      log.push_back("main: worker finished");
    } catch (const CancelledError& e) {
      log.push_back("main: CancelledError " + e.message());
    }
    CHECK(t.cancelled());
    CHECK(f.cancelled());  // what the task awaited was cancelled, as in asyncio
    CHECK(t.cancelling() == 1);
  };
  loop.run(body());
  CHECK(log == Log{"cancel returned", "worker: CancelledError stop now", "main: CancelledError stop now"});
}

STRATA_LOOP_TEST_CASE("Task: a coroutine that catches CancelledError, cleans up and rethrows ends cancelled",
                      "[core][task]") {
  strata::testing::TestLoop loop(TestType::kind);
  Log log;
  auto worker = [&log]() -> Coro<int> {
    std::exception_ptr cancelled;
    try {
      co_await strata::sleep(1h);
    } catch (const CancelledError& e) {
      log.push_back("caught " + e.message());
      cancelled = std::current_exception();
    }
    co_await strata::sleep(0s);  // cleanup may itself await
    log.push_back("cleaned up");
    std::rethrow_exception(cancelled);
  };
  auto body = [&]() -> Coro<void> {
    Task<int> t = strata::create_task(worker());
    co_await strata::sleep(0s);
    t.cancel("deadline");
    try {
      (void)co_await t;
    } catch (const CancelledError& e) {
      log.push_back("main: CancelledError " + e.message());
    }
    CHECK(t.cancelled());
    std::string message = "not thrown";
    try {
      (void)t.result();
    } catch (const CancelledError& e) {
      message = e.message();
    }
    CHECK(message == "deadline");
  };
  loop.run(body());
  CHECK(log == Log{"caught deadline", "cleaned up", "main: CancelledError deadline"});
}

STRATA_LOOP_TEST_CASE("Task: a coroutine that swallows CancelledError ends with its result",
                      "[core][task]") {
  strata::testing::TestLoop loop(TestType::kind);
  Log log;
  auto worker = [&log]() -> Coro<int> {
    try {
      co_await strata::sleep(1h);
    } catch (const CancelledError& e) {
      log.push_back("swallowed " + e.message());
    }
    co_await strata::sleep(0s);  // no second CancelledError
    log.push_back("carried on");
    co_return 5;
  };
  auto body = [&]() -> Coro<void> {
    Task<int> t = strata::create_task(worker());
    co_await strata::sleep(0s);
    CHECK(t.cancel("please"));
    int v = co_await t;
    CHECK(v == 5);
    CHECK_FALSE(t.cancelled());
    CHECK(t.result() == 5);
    CHECK(t.cancelling() == 1);  // the request is still counted
  };
  loop.run(body());
  CHECK(log == Log{"swallowed please", "carried on"});
}

STRATA_LOOP_TEST_CASE("Task: a task cancelled before it starts never runs its body and ends cancelled",
                      "[core][task]") {
  strata::testing::TestLoop loop(TestType::kind);
  Log log;
  auto token = std::make_shared<int>(0);
  Task<void> t = loop->create_task(holds(token, &log));
  CHECK(token.use_count() == 2);
  CHECK(t.cancel("too early"));
  CHECK_FALSE(t.done());  // done once the loop has run its first step
  std::string message = "not thrown";
  try {
    loop->run_until_complete(Future<void>(t));
  } catch (const CancelledError& e) {
    message = e.message();
  }
  CHECK(message == "too early");
  CHECK(t.cancelled());
  CHECK(log.empty());              // the body never ran
  CHECK(token.use_count() == 1);   // and its frame is gone
}

STRATA_LOOP_TEST_CASE("Task: cancelling a task that awaits another task cancels the inner one",
                      "[core][task]") {
  strata::testing::TestLoop loop(TestType::kind);
  Log log;
  auto inner = [&log]() -> Coro<int> {
    try {
      co_await strata::sleep(1h);
    } catch (const CancelledError& e) {
      log.push_back("inner: CancelledError " + e.message());
      throw;
    }
    co_return 1;
  };
  auto outer = [&log](Task<int> in) -> Coro<int> {
    try {
      co_return co_await in;
    } catch (const CancelledError& e) {
      log.push_back("outer: CancelledError " + e.message());
      throw;
    }
  };
  auto body = [&]() -> Coro<void> {
    Task<int> in = strata::create_task(inner(), "inner");
    Task<int> out = strata::create_task(outer(in), "outer");
    co_await strata::sleep(0s);  // both are now waiting
    CHECK(out.cancel("shutdown"));
    try {
      (void)co_await out;
    } catch (const CancelledError& e) {
      log.push_back("main: CancelledError " + e.message());
    }
    CHECK(in.cancelled());
    CHECK(out.cancelled());
    CHECK(in.cancelling() == 1);
    CHECK(out.cancelling() == 1);
  };
  loop.run(body());
  CHECK(log == Log{"inner: CancelledError shutdown", "outer: CancelledError shutdown",
                   "main: CancelledError shutdown"});
}

STRATA_LOOP_TEST_CASE("Task: cancelling() counts cancel requests and uncancel() takes one back",
                      "[core][task]") {
  strata::testing::TestLoop loop(TestType::kind);
  Log log;
  auto worker = [&log](Future<void> f) -> Coro<int> {
    try {
      co_await f;
    } catch (const CancelledError& e) {
      strata::TaskRef self = strata::current_task();
      log.push_back("caught " + e.message() + ", cancelling " + std::to_string(self.cancelling()));
      int a = self.uncancel();
      int b = self.uncancel();
      int c = self.uncancel();  // not below zero
      log.push_back("uncancel " + std::to_string(a) + " " + std::to_string(b) + " " +
                    std::to_string(c));
    }
    co_await strata::sleep(0s);  // both requests were delivered as one CancelledError
    log.push_back("carried on");
    co_return 7;
  };
  auto body = [&]() -> Coro<void> {
    Future<void> f = loop->create_future();
    Task<int> t = strata::create_task(worker(f));
    CHECK(t.cancelling() == 0);
    co_await strata::sleep(0s);
    CHECK(t.cancel("first"));
    CHECK(t.cancel("second"));
    CHECK(t.cancelling() == 2);
    CHECK(co_await t == 7);
    CHECK_FALSE(t.cancelled());
    CHECK(t.cancelling() == 0);
  };
  loop.run(body());
  // As in asyncio: the latest message wins when the awaited future was already cancelled.
  CHECK(log == Log{"caught second, cancelling 2", "uncancel 1 0 0", "carried on"});
}

STRATA_LOOP_TEST_CASE("Task: cancel of a done task returns false", "[core][task]") {
  strata::testing::TestLoop loop(TestType::kind);
  auto body = [&]() -> Coro<void> {
    Task<int> finished = strata::create_task(value(1));
    Task<void> failed = strata::create_task(fails("x"));
    Task<int> cancelled = strata::create_task(value(2));
    cancelled.cancel("once");
    co_await strata::sleep(0s);
    co_await strata::sleep(0s);
    REQUIRE(finished.done());
    REQUIRE(failed.done());
    REQUIRE(cancelled.done());
    CHECK_FALSE(finished.cancel("late"));
    CHECK_FALSE(failed.cancel("late"));
    CHECK_FALSE(cancelled.cancel("late"));
    CHECK(finished.cancelling() == 0);
    CHECK(failed.cancelling() == 0);
    CHECK(cancelled.cancelling() == 1);
    CHECK(finished.result() == 1);
    CHECK_THROWS_WITH(failed.result(), "x");
    CHECK(cancelled.cancelled());
  };
  loop.run(body());
}

STRATA_LOOP_TEST_CASE("Task: a task that cancels itself gets CancelledError at its next co_await",
                      "[core][task]") {
  strata::testing::TestLoop loop(TestType::kind);
  Log log;
  int kind = 0;
  SECTION("awaiting a future") { kind = 0; }
  SECTION("awaiting sleep") { kind = 1; }
  SECTION("yielding with sleep(0)") { kind = 2; }
  auto worker = [&]() -> Coro<void> {
    CHECK(strata::current_task().cancel("by itself"));
    log.push_back("cancel returned");
    try {
      if (kind == 0) {
        Future<void> never = loop->create_future();
        co_await never;
      } else if (kind == 1) {
        co_await strata::sleep(1h);
      } else {
        co_await strata::sleep(0s);
      }
      log.push_back("resumed normally");
    } catch (const CancelledError& e) {
      log.push_back("CancelledError " + e.message());
      throw;
    }
  };
  auto body = [&]() -> Coro<void> {
    Task<void> t = strata::create_task(worker());
    try {
      co_await t;
    } catch (const CancelledError&) {
    }
    CHECK(t.cancelled());
  };
  loop.run(body(), 5s);
  CHECK(log == Log{"cancel returned", "CancelledError by itself"});
}

// ---- Misuse -------------------------------------------------------------------------------

STRATA_LOOP_TEST_CASE("Task: a task awaiting itself throws InvalidStateError", "[core][task]") {
  strata::testing::TestLoop loop(TestType::kind);
  Log log;
  std::string name;
  SECTION("a named task") { name = "narcissus"; }
  SECTION("a task with the default name") { name = ""; }
  Task<int> self;
  auto body = [&]() -> Coro<int> {
    try {
      (void)co_await self;
      log.push_back("returned");
    } catch (const InvalidStateError& e) {
      log.push_back(std::string("InvalidStateError: ") + e.what());
    }
    co_return 3;  // the task is not harmed
  };
  self = loop->create_task(body(), name);
  CHECK(loop->run_until_complete(Future<int>(self)) == 3);
  REQUIRE(log.size() == 1);
  // The message names the task.
  CHECK_THAT(log[0], Contains("InvalidStateError") && Contains("'" + self.get_name() + "'") &&
                         Contains("itself"));
}

STRATA_LOOP_TEST_CASE("Task: create_task refuses a Coro that is empty or already awaited",
                      "[core][task]") {
  strata::testing::TestLoop loop(TestType::kind);
  Log log;
  CHECK_THROWS_AS(loop->create_task(Coro<int>()), InvalidStateError);
  auto body = [&]() -> Coro<void> {
    Coro<void> c = record(&log, "ran");
    co_await c;
    try {
      (void)strata::create_task(std::move(c));
      log.push_back("accepted");
    } catch (const InvalidStateError&) {
      log.push_back("refused");
    }
  };
  loop.run(body());
  CHECK(log == Log{"ran", "refused"});
}

TEST_CASE("Task: create_task with no running loop or on a closed loop throws EventLoopError",
          "[core][task]") {
  auto token = std::make_shared<int>(0);
  Log log;
  CHECK_THROWS_AS(strata::create_task(holds(token, &log)), strata::EventLoopError);
  auto loop = strata::new_event_loop();
  loop->close();
  CHECK_THROWS_AS(loop->create_task(holds(token, &log)), strata::EventLoopError);
  CHECK(token.use_count() == 1);  // the refused coroutines' frames were freed
  CHECK(log.empty());
}

// ---- Unobserved outcomes and lifetime -----------------------------------------------------

STRATA_LOOP_TEST_CASE("Task: an exception never retrieved is reported with the task name when the task is dropped",
                      "[core][task]") {
  strata::testing::TestLoop loop(TestType::kind);
  SECTION("handle kept until the task is done, then dropped") {
    auto body = [&]() -> Coro<void> {
      {
        Task<void> t = strata::create_task(fails("nobody looked"), "doomed");
        co_await when_done(t);
        CHECK(loop.errors().empty());  // not while a handle exists
      }
    };
    loop.run(body());
  }
  SECTION("handle dropped at once") {
    auto body = [&]() -> Coro<void> {
      (void)strata::create_task(fails("nobody looked"), "doomed");
      co_await strata::sleep(0s);
      co_await strata::sleep(0s);
    };
    loop.run(body());
  }
  REQUIRE(loop.errors().size() == 1);
  const strata::ExceptionContext& ctx = loop.errors()[0];
  CHECK(ctx.message == "Task exception was never retrieved");
  CHECK(ctx.task == "doomed");
  REQUIRE(ctx.exception != nullptr);
  CHECK(what_of(ctx.exception) == "nobody looked");
}

STRATA_LOOP_TEST_CASE("Task: a retrieved task exception is not reported", "[core][task]") {
  strata::testing::TestLoop loop(TestType::kind);
  auto body = [&]() -> Coro<void> {
    {
      Task<void> awaited = strata::create_task(fails("seen"));
      try {
        co_await awaited;
      } catch (const std::runtime_error&) {
      }
    }
    {
      Task<void> asked = strata::create_task(fails("seen"));
      co_await when_done(asked);
      CHECK(asked.exception() != nullptr);
    }
  };
  loop.run(body());
  CHECK(loop.errors().empty());
}

STRATA_LOOP_TEST_CASE("Task: a task pending at loop close is reported and its frame destroyed",
                      "[core][task]") {
  // A raw loop: TestLoop would (rightly) fail the test for the pending task.
  Log log;
  auto loop = strata::new_event_loop(TestType::kind);
  loop->set_exception_handler([&log](strata::EventLoop&, const strata::ExceptionContext& c) {
    log.push_back("handler: " + c.message + " [" + c.task + "]" + (c.exception ? " with exception" : ""));
  });
  auto inner = [&log]() -> Coro<void> {
    Guard g{&log, "inner local"};
    Future<void> never = strata::get_running_loop().create_future();
    log.push_back("inner waiting");
    co_await never;
    log.push_back("inner resumed");
  };
  auto outer = [&]() -> Coro<void> {
    Guard g{&log, "outer local"};
    co_await inner();
    log.push_back("outer resumed");
  };
  bool keep_handle = false;
  SECTION("with its handle dropped") { keep_handle = false; }
  SECTION("with its handle kept") { keep_handle = true; }
  Task<void> kept;
  {
    Task<void> t = loop->create_task(outer(), "stuck");
    if (keep_handle) kept = t;
  }
  loop->call_soon([&] { loop->stop(); });
  loop->run_forever();
  CHECK(log == Log{"inner waiting"});
  CHECK(names_of(strata::all_tasks(*loop)) == Log{"stuck"});
  loop->close();
  CHECK(log == Log{"inner waiting", "handler: Task was destroyed but it is pending! [stuck]",
                   "inner local destroyed", "outer local destroyed"});
  CHECK(strata::all_tasks(*loop).empty());
  if (keep_handle) CHECK(kept.done());
  kept = Task<void>();  // before the loop goes
}

STRATA_LOOP_TEST_CASE("Task: dropping every Task handle does not stop the task", "[core][task]") {
  strata::testing::TestLoop loop(TestType::kind);
  Log log;
  auto worker = [&log](Future<int> out) -> Coro<void> {
    co_await strata::sleep(0s);
    log.push_back("worker yielded");
    co_await strata::sleep(1ms);
    log.push_back("worker slept");
    out.set_result(99);
  };
  auto body = [&]() -> Coro<void> {
    Future<int> out = loop->create_future<int>();
    (void)strata::create_task(worker(out), "fire-and-forget");
    log.push_back("handle dropped");
    int v = co_await out;
    log.push_back("main got " + std::to_string(v));
  };
  loop.run(body());
  CHECK(log == Log{"handle dropped", "worker yielded", "worker slept", "main got 99"});
  CHECK(loop.errors().empty());
}

namespace {
strata::Coro<int> cancel_self_and_return() {
  strata::current_task().cancel("at the end");
  co_return 5;  // no co_await receives the request
}
}  // namespace

STRATA_LOOP_TEST_CASE("Task: a cancel request that no co_await received still ends the task cancelled",
                      "[core][task]") {
  strata::testing::TestLoop loop(TestType::kind);
  Task<int> task = loop->create_task(cancel_self_and_return());
  CHECK_THROWS_AS(loop->run_until_complete(strata::Future<int>(task)), strata::CancelledError);
  CHECK(task.cancelled());
  std::string message;
  try {
    task.result();
  } catch (const strata::CancelledError& e) {
    message = e.message();
  }
  CHECK(message == "at the end");
}

// ---- Waiter::wake_now(): the wake-up of an I/O callback ---------------------------------------

namespace {

/// A task parked on a Waiter, as a stream read parks: what wake() and wake_now() wake.
struct Parked {
  strata::detail::Waiter waiter;
  Log* log;
};

struct ParkOn {
  Parked* parked;
  bool await_ready() const noexcept { return false; }
  void await_suspend(std::coroutine_handle<> h) {
    strata::detail::TaskCore::current()->park(parked->waiter, h);
  }
  void await_resume() {
    if (parked->waiter.cancelled()) strata::detail::TaskCore::current()->throw_parked_cancel();
  }
};

Coro<void> park_and_log(Parked* parked) {
  co_await ParkOn{parked};
  parked->log->push_back("resumed");
}

/// From inside a task: wake_now() must not run the other task in this one's step.
Coro<void> wake_now_from_a_task(Parked* parked) {
  parked->waiter.wake_now();
  parked->log->push_back("waker done");
  co_await strata::sleep(0s);
  co_await strata::sleep(0s);
}

}  // namespace

STRATA_LOOP_TEST_CASE("Task: wake_now from a plain callback resumes the parked task inside the call",
                      "[core][task]") {
  strata::testing::TestLoop loop(TestType::kind);
  Log log;
  Parked parked{{}, &log};
  Task<void> task = loop->create_task(park_and_log(&parked));
  // Queued after the task's first step: it finds the task parked.
  loop->call_soon([&] {
    log.push_back("waking");
    parked.waiter.wake_now();
    log.push_back("woken");
  });
  loop->run_until_complete(Future<void>(task));
  CHECK(log == Log{"waking", "resumed", "woken"});
}

STRATA_LOOP_TEST_CASE("Task: wake_now inside another task's step schedules the parked task instead",
                      "[core][task]") {
  strata::testing::TestLoop loop(TestType::kind);
  Log log;
  Parked parked{{}, &log};
  Task<void> task = loop->create_task(park_and_log(&parked));
  Task<void> waker = loop->create_task(wake_now_from_a_task(&parked));
  loop->run_until_complete(Future<void>(waker));
  CHECK(task.done());
  CHECK(log == Log{"waker done", "resumed"});
}
