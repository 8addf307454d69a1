#include <strata/core/future.hpp>

#include <catch2/catch.hpp>

#include <coroutine>
#include <exception>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include <strata/core/coro.hpp>
#include <strata/core/errors.hpp>
#include <strata/core/sleep.hpp>
#include <strata/core/task.hpp>

#include "loop_test.hpp"

using namespace std::chrono_literals;
using Catch::Matchers::Contains;
using strata::CancelledError;
using strata::Coro;
using strata::Future;
using strata::InvalidStateError;
using Log = std::vector<std::string>;

namespace {

/// Runs one iteration of @p loop: what is scheduled now runs, then the loop stops.
void run_once(strata::EventLoop& loop) {
  loop.call_soon([&loop] { loop.stop(); });
  loop.run_forever();
}

std::string what_of(const std::exception_ptr& e) {
  try {
    std::rethrow_exception(e);
  } catch (const std::exception& x) {
    return x.what();
  } catch (...) {
    return "not a std::exception";
  }
}

/// An eager coroutine with no Task behind it: what a user gets when awaiting outside a task.
struct Detached {
  struct promise_type {
    Detached get_return_object() noexcept { return {}; }
    std::suspend_never initial_suspend() const noexcept { return {}; }
    std::suspend_never final_suspend() const noexcept { return {}; }
    void return_void() const noexcept {}
    void unhandled_exception() const noexcept { std::terminate(); }
  };
};

/// Awaits @p f and records how that went in @p log.
Detached await_without_task(Future<int> f, Log* log) {
  try {
    int v = co_await f;
    log->push_back("resumed with " + std::to_string(v));
  } catch (const InvalidStateError& e) {
    log->push_back(std::string("InvalidStateError: ") + e.what());
  }
}

}  // namespace

// ---- State ------------------------------------------------------------------------------

STRATA_LOOP_TEST_CASE("Future: a new future is pending", "[core][future]") {
  strata::testing::TestLoop loop(TestType::kind);
  Future<int> f = loop->create_future<int>();
  CHECK(f.valid());
  CHECK_FALSE(f.done());
  CHECK_FALSE(f.cancelled());
  CHECK(&f.get_loop() == &loop.get());
  CHECK_FALSE(Future<int>().valid());
}

STRATA_LOOP_TEST_CASE("Future: set_result makes it done with that result", "[core][future]") {
  strata::testing::TestLoop loop(TestType::kind);
  Future<std::string> f(loop.get());
  f.set_result("value");
  CHECK(f.done());
  CHECK_FALSE(f.cancelled());
  CHECK(f.result() == "value");
  CHECK(f.result() == "value");  // result() does not consume
  CHECK(f.exception() == nullptr);
}

STRATA_LOOP_TEST_CASE("Future<void>: set_result makes it done", "[core][future]") {
  strata::testing::TestLoop loop(TestType::kind);
  Future<void> f = loop->create_future();
  f.set_result();
  CHECK(f.done());
  CHECK_FALSE(f.cancelled());
  CHECK_NOTHROW(f.result());
  CHECK(f.exception() == nullptr);
}

STRATA_LOOP_TEST_CASE("Future: set_exception makes result() rethrow it and exception() return it",
                      "[core][future]") {
  strata::testing::TestLoop loop(TestType::kind);
  Future<int> f = loop->create_future<int>();
  f.set_exception(std::runtime_error("boom"));
  CHECK(f.done());
  CHECK_FALSE(f.cancelled());
  CHECK_THROWS_WITH(f.result(), "boom");
  CHECK_THROWS_AS(f.result(), std::runtime_error);
  std::exception_ptr e = f.exception();
  REQUIRE(e != nullptr);
  CHECK(what_of(e) == "boom");
  CHECK(loop.errors().empty());
}

STRATA_LOOP_TEST_CASE("Future<void>: set_exception makes result() rethrow it", "[core][future]") {
  strata::testing::TestLoop loop(TestType::kind);
  Future<void> f = loop->create_future();
  f.set_exception(std::make_exception_ptr(std::out_of_range("range")));
  CHECK(f.done());
  CHECK_THROWS_AS(f.result(), std::out_of_range);
  CHECK(what_of(f.exception()) == "range");
}

STRATA_LOOP_TEST_CASE("Future: cancel makes it cancelled and result() throw CancelledError with the message",
                      "[core][future]") {
  strata::testing::TestLoop loop(TestType::kind);
  Future<int> f = loop->create_future<int>();
  CHECK(f.cancel("shutting down"));
  CHECK(f.done());
  CHECK(f.cancelled());
  std::string message = "not thrown";
  try {
    (void)f.result();
  } catch (const CancelledError& e) {
    message = e.message();
    CHECK(std::string(e.what()) == "cancelled: shutting down");
  }
  CHECK(message == "shutting down");
  CHECK_THROWS_AS(f.exception(), CancelledError);
  CHECK_FALSE(f.cancel("again"));  // already done: no effect, the first message stays
  try {
    (void)f.result();
  } catch (const CancelledError& e) {
    message = e.message();
  }
  CHECK(message == "shutting down");
}

STRATA_LOOP_TEST_CASE("Future<void>: cancel without a message gives an empty message",
                      "[core][future]") {
  strata::testing::TestLoop loop(TestType::kind);
  Future<void> f = loop->create_future();
  CHECK(f.cancel());
  std::string what;
  std::string message = "not thrown";
  try {
    f.result();
  } catch (const CancelledError& e) {
    message = e.message();
    what = e.what();
  }
  CHECK(message.empty());
  CHECK(what == "cancelled");
}

STRATA_LOOP_TEST_CASE("Future: cancel of a done future returns false and keeps its result",
                      "[core][future]") {
  strata::testing::TestLoop loop(TestType::kind);
  Future<int> f = loop->create_future<int>();
  f.set_result(3);
  CHECK_FALSE(f.cancel("late"));
  CHECK_FALSE(f.cancelled());
  CHECK(f.result() == 3);
}

STRATA_LOOP_TEST_CASE("Future: copies share one state", "[core][future]") {
  strata::testing::TestLoop loop(TestType::kind);
  Future<int> a = loop->create_future<int>();
  Future<int> b = a;
  Future<int> other = loop->create_future<int>();
  CHECK(a == b);
  CHECK_FALSE(a == other);
  b.set_result(9);
  CHECK(a.done());
  CHECK(a.result() == 9);
  CHECK_FALSE(other.done());
}

// ---- Done callbacks -----------------------------------------------------------------------

STRATA_LOOP_TEST_CASE("Future: done callbacks run through call_soon, in order, once",
                      "[core][future]") {
  strata::testing::TestLoop loop(TestType::kind);
  Log log;
  Future<int> f = loop->create_future<int>();
  f.add_done_callback([&log](Future<int>& g) { log.push_back("first " + std::to_string(g.result())); });
  f.add_done_callback([&log](Future<int>&) { log.push_back("second"); });
  f.add_done_callback([&log](Future<int>&) { log.push_back("third"); });
  loop->call_soon([&log] { log.push_back("scheduled before set_result"); });
  f.set_result(5);
  log.push_back("set_result returned");
  CHECK(log == Log{"set_result returned"});
  run_once(*loop);
  CHECK(log == Log{"set_result returned", "scheduled before set_result", "first 5", "second", "third"});
  run_once(*loop);
  run_once(*loop);
  CHECK(log.size() == 5);
}

STRATA_LOOP_TEST_CASE("Future: a done callback receives the future it was added to",
                      "[core][future]") {
  strata::testing::TestLoop loop(TestType::kind);
  Future<int> f = loop->create_future<int>();
  bool same = false;
  int seen = 0;
  f.add_done_callback([&, f](Future<int>& g) {
    same = (g == f);
    seen = g.result();
  });
  f.set_result(11);
  run_once(*loop);
  CHECK(same);
  CHECK(seen == 11);
}

STRATA_LOOP_TEST_CASE("Future: set_exception and cancel schedule the done callbacks too",
                      "[core][future]") {
  strata::testing::TestLoop loop(TestType::kind);
  Log log;
  Future<int> failed = loop->create_future<int>();
  Future<int> cancelled = loop->create_future<int>();
  failed.add_done_callback([&log](Future<int>& g) { log.push_back("failed: " + what_of(g.exception())); });
  cancelled.add_done_callback([&log](Future<int>& g) {
    log.push_back(std::string("cancelled: ") + (g.cancelled() ? "yes" : "no"));
  });
  cancelled.cancel();
  failed.set_exception(std::runtime_error("bad"));
  CHECK(log.empty());
  run_once(*loop);
  CHECK(log == Log{"cancelled: yes", "failed: bad"});
}

STRATA_LOOP_TEST_CASE("Future: add_done_callback on a done future schedules the callback",
                      "[core][future]") {
  strata::testing::TestLoop loop(TestType::kind);
  Log log;
  Future<void> f = loop->create_future();
  f.set_result();
  loop->call_soon([&log] { log.push_back("earlier callback"); });
  f.add_done_callback([&log](Future<void>&) { log.push_back("done callback"); });
  CHECK(log.empty());  // not called inside add_done_callback
  run_once(*loop);
  CHECK(log == Log{"earlier callback", "done callback"});
  run_once(*loop);
  CHECK(log.size() == 2);
}

STRATA_LOOP_TEST_CASE("Future: remove_done_callback returns the count removed and prevents the call",
                      "[core][future]") {
  strata::testing::TestLoop loop(TestType::kind);
  Log log;
  Future<int> f = loop->create_future<int>();
  strata::CallbackId a = f.add_done_callback([&log](Future<int>&) { log.push_back("a"); });
  strata::CallbackId b = f.add_done_callback([&log](Future<int>&) { log.push_back("b"); });
  strata::CallbackId c = f.add_done_callback([&log](Future<int>&) { log.push_back("c"); });
  CHECK(a != b);
  CHECK(b != c);
  CHECK(f.remove_done_callback(b) == 1);
  CHECK(f.remove_done_callback(b) == 0);
  CHECK(f.remove_done_callback(c + 1000) == 0);
  f.set_result(1);
  run_once(*loop);
  CHECK(log == Log{"a", "c"});
}

STRATA_LOOP_TEST_CASE("Future: remove_done_callback once the callback is scheduled returns 0",
                      "[core][future]") {
  strata::testing::TestLoop loop(TestType::kind);
  Log log;
  Future<int> f = loop->create_future<int>();
  strata::CallbackId id = f.add_done_callback([&log](Future<int>&) { log.push_back("called"); });
  f.set_result(1);
  CHECK(f.remove_done_callback(id) == 0);  // already handed to call_soon, as in asyncio
  run_once(*loop);
  CHECK(log == Log{"called"});
}

// ---- co_await ------------------------------------------------------------------------------

STRATA_LOOP_TEST_CASE("Future: co_await of a pending future resumes with its value once set",
                      "[core][future]") {
  strata::testing::TestLoop loop(TestType::kind);
  Log log;
  auto body = [&]() -> Coro<int> {
    Future<int> f = loop->create_future<int>();
    loop->call_soon([&log, f]() mutable {
      log.push_back("set_result");
      f.set_result(42);
      log.push_back("set_result returned");
    });
    log.push_back("awaiting");
    int v = co_await f;
    log.push_back("resumed with " + std::to_string(v));
    co_return v;
  };
  CHECK(loop.run(body()) == 42);
  CHECK(log == Log{"awaiting", "set_result", "set_result returned", "resumed with 42"});
}

STRATA_LOOP_TEST_CASE("Future<void>: co_await of a pending future resumes once it is set",
                      "[core][future]") {
  strata::testing::TestLoop loop(TestType::kind);
  Log log;
  auto body = [&]() -> Coro<void> {
    Future<void> f = loop->create_future();
    loop->call_soon([&log, f]() mutable {
      log.push_back("set_result");
      f.set_result();
    });
    log.push_back("awaiting");
    co_await f;
    log.push_back("resumed");
  };
  loop.run(body());
  CHECK(log == Log{"awaiting", "set_result", "resumed"});
}

STRATA_LOOP_TEST_CASE("Future: co_await of a done future continues without suspending",
                      "[core][future]") {
  strata::testing::TestLoop loop(TestType::kind);
  Log log;
  auto body = [&]() -> Coro<void> {
    Future<int> f = loop->create_future<int>();
    f.set_result(7);
    loop->call_soon([&log] { log.push_back("next iteration"); });
    int v = co_await f;
    log.push_back("got " + std::to_string(v));
    co_await strata::sleep(0s);
    log.push_back("after yield");
  };
  loop.run(body());
  CHECK(log == Log{"got 7", "next iteration", "after yield"});
}

STRATA_LOOP_TEST_CASE("Future: co_await of a future that fails rethrows its exception",
                      "[core][future]") {
  strata::testing::TestLoop loop(TestType::kind);
  Log log;
  auto body = [&]() -> Coro<void> {
    Future<int> f = loop->create_future<int>();
    loop->call_soon([f]() mutable { f.set_exception(std::runtime_error("remote failure")); });
    try {
      (void)co_await f;
      log.push_back("no exception");
    } catch (const std::runtime_error& e) {
      log.push_back(std::string("caught ") + e.what());
    }
  };
  loop.run(body());
  CHECK(log == Log{"caught remote failure"});
  CHECK(loop.errors().empty());  // retrieved by co_await: not reported
}

STRATA_LOOP_TEST_CASE("Future: co_await of a cancelled future throws CancelledError with the message",
                      "[core][future]") {
  strata::testing::TestLoop loop(TestType::kind);
  Log log;
  bool cancel_first = false;
  SECTION("cancelled while awaited") { cancel_first = false; }
  SECTION("cancelled before the co_await") { cancel_first = true; }
  auto body = [&]() -> Coro<int> {
    Future<int> f = loop->create_future<int>();
    if (cancel_first) {
      f.cancel("no longer needed");
    } else {
      loop->call_soon([f]() mutable { f.cancel("no longer needed"); });
    }
    try {
      (void)co_await f;
      log.push_back("no exception");
    } catch (const CancelledError& e) {
      log.push_back("CancelledError: " + e.message());
    }
    co_return 1;  // the task itself was not cancelled and carries on
  };
  strata::Task<int> t = loop->create_task(body());
  CHECK(loop->run_until_complete(Future<int>(t)) == 1);
  CHECK_FALSE(t.cancelled());
  CHECK(log == Log{"CancelledError: no longer needed"});
}

STRATA_LOOP_TEST_CASE("Future: a move-only result is moved out through co_await", "[core][future]") {
  strata::testing::TestLoop loop(TestType::kind);
  auto body = [&]() -> Coro<int> {
    Future<std::unique_ptr<int>> f = loop->create_future<std::unique_ptr<int>>();
    loop->call_soon([f]() mutable { f.set_result(std::make_unique<int>(42)); });
    std::unique_ptr<int> p = co_await f;
    REQUIRE(p != nullptr);
    CHECK(f.result() == nullptr);  // moved out of the shared state
    co_return *p;
  };
  CHECK(loop.run(body()) == 42);
}

STRATA_LOOP_TEST_CASE("Future: every task awaiting one future resumes, in the order they awaited",
                      "[core][future]") {
  strata::testing::TestLoop loop(TestType::kind);
  Log log;
  auto waiter = [&log](Future<int> f, std::string name) -> Coro<void> {
    int v = co_await f;
    log.push_back(name + " got " + std::to_string(v));
  };
  auto body = [&]() -> Coro<void> {
    Future<int> f = loop->create_future<int>();
    auto a = loop->create_task(waiter(f, "a"));
    auto b = loop->create_task(waiter(f, "b"));
    auto c = loop->create_task(waiter(f, "c"));
    co_await strata::sleep(0s);  // all three are now waiting
    CHECK(log.empty());
    f.set_result(8);
    co_await a;
    co_await b;
    co_await c;
  };
  loop.run(body());
  CHECK(log == Log{"a got 8", "b got 8", "c got 8"});
}

// ---- Unretrieved exceptions -----------------------------------------------------------------

STRATA_LOOP_TEST_CASE("Future: an exception never retrieved is reported when the future is destroyed",
                      "[core][future]") {
  strata::testing::TestLoop loop(TestType::kind);
  {
    Future<int> f = loop->create_future<int>();
    f.set_exception(std::runtime_error("lost"));
    CHECK(loop.errors().empty());  // not while the future lives
  }
  REQUIRE(loop.errors().size() == 1);
  const strata::ExceptionContext& ctx = loop.errors()[0];
  CHECK(ctx.message == "Future exception was never retrieved");
  REQUIRE(ctx.exception != nullptr);
  CHECK(what_of(ctx.exception) == "lost");
  CHECK(ctx.task.empty());
}

STRATA_LOOP_TEST_CASE("Future: a retrieved exception is not reported when the future is destroyed",
                      "[core][future]") {
  strata::testing::TestLoop loop(TestType::kind);
  SECTION("through exception()") {
    Future<int> f = loop->create_future<int>();
    f.set_exception(std::runtime_error("seen"));
    CHECK(f.exception() != nullptr);
  }
  SECTION("through result()") {
    Future<void> f = loop->create_future();
    f.set_exception(std::runtime_error("seen"));
    CHECK_THROWS_AS(f.result(), std::runtime_error);
  }
  SECTION("through a done callback that calls exception()") {
    Future<int> f = loop->create_future<int>();
    f.add_done_callback([](Future<int>& g) { (void)g.exception(); });
    f.set_exception(std::runtime_error("seen"));
    run_once(*loop);
  }
  SECTION("a cancelled future has nothing to report") {
    Future<int> f = loop->create_future<int>();
    f.cancel();
  }
  CHECK(loop.errors().empty());
}

// ---- Misuse --------------------------------------------------------------------------------

STRATA_LOOP_TEST_CASE("Future: set_result or set_exception on a done future throws InvalidStateError",
                      "[core][future]") {
  strata::testing::TestLoop loop(TestType::kind);
  Log log;
  Future<int> f = loop->create_future<int>();
  f.add_done_callback([&log](Future<int>& g) { log.push_back("done " + std::to_string(g.result())); });
  f.set_result(1);
  CHECK_THROWS_AS(f.set_result(2), InvalidStateError);
  CHECK_THROWS_AS(f.set_exception(std::runtime_error("x")), InvalidStateError);
  CHECK(f.result() == 1);
  run_once(*loop);
  CHECK(log == Log{"done 1"});  // the refused calls scheduled nothing

  Future<void> c = loop->create_future();
  c.cancel();
  CHECK_THROWS_AS(c.set_result(), InvalidStateError);
  CHECK_THROWS_AS(c.set_exception(std::runtime_error("x")), InvalidStateError);
  CHECK(c.cancelled());
  CHECK(loop.errors().empty());
}

STRATA_LOOP_TEST_CASE("Future: result() and exception() of a pending future throw InvalidStateError",
                      "[core][future]") {
  strata::testing::TestLoop loop(TestType::kind);
  Future<int> f = loop->create_future<int>();
  CHECK_THROWS_AS(f.result(), InvalidStateError);
  CHECK_THROWS_AS(f.exception(), InvalidStateError);
  Future<void> v = loop->create_future();
  CHECK_THROWS_AS(v.result(), InvalidStateError);
  CHECK_FALSE(f.done());
}

STRATA_LOOP_TEST_CASE("Future: set_exception with a null exception throws std::invalid_argument",
                      "[core][future]") {
  strata::testing::TestLoop loop(TestType::kind);
  Future<int> f = loop->create_future<int>();
  CHECK_THROWS_AS(f.set_exception(nullptr), std::invalid_argument);
  CHECK_THROWS_AS(f.set_exception(std::exception_ptr{}), std::invalid_argument);
  std::exception_ptr none;
  CHECK_THROWS_AS(f.set_exception(none), std::invalid_argument);
  CHECK_FALSE(f.done());  // still pending: the refused call changed nothing
}

STRATA_LOOP_TEST_CASE("Future: co_await of a pending future outside a task throws InvalidStateError",
                      "[core][future]") {
  strata::testing::TestLoop loop(TestType::kind);
  Log log;
  Future<int> f = loop->create_future<int>();
  SECTION("with no loop running") {
    await_without_task(f, &log);
  }
  SECTION("in a plain callback of the running loop") {
    loop->call_soon([&] {
      CHECK_FALSE(strata::current_task());
      await_without_task(f, &log);
    });
    run_once(*loop);
  }
  REQUIRE(log.size() == 1);
  CHECK_THAT(log[0], Contains("InvalidStateError") && Contains("outside a Task"));
  // The refused await registered nothing on the future.
  f.set_result(3);
  run_once(*loop);
  CHECK(log.size() == 1);
}

STRATA_LOOP_TEST_CASE("Future: co_await of a done future outside a task gives its value",
                      "[core][future]") {
  strata::testing::TestLoop loop(TestType::kind);
  Log log;
  Future<int> f = loop->create_future<int>();
  f.set_result(5);
  await_without_task(f, &log);
  CHECK(log == Log{"resumed with 5"});
}
