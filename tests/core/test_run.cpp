#include <strata/core/run.hpp>

#include <catch2/catch.hpp>
#include <csignal>
#include <thread>

#include <strata/core/sleep.hpp>

#include "loop_test.hpp"

using namespace std::chrono_literals;

namespace {
strata::Coro<int> answer() {
  co_await strata::sleep(1ms);
  co_return 42;
}
strata::Coro<void> forever() {
  for (;;) co_await strata::sleep(1h);
}
strata::Coro<int> leaves_a_task_behind(bool* cancelled) {
  auto t = strata::create_task([](bool* flag) -> strata::Coro<void> {
    try {
      co_await forever();
    } catch (const strata::CancelledError&) {
      *flag = true;
      throw;
    }
  }(cancelled));
  co_await strata::sleep(0s);
  co_return 7;
}
}  // namespace

STRATA_LOOP_TEST_CASE("run: returns the main coroutine's result", "[core][run]") {
  CHECK(strata::run(answer(), {TestType::kind, {}}) == 42);
}

STRATA_LOOP_TEST_CASE("run: cancels tasks left running when main returns", "[core][run]") {
  bool cancelled = false;
  CHECK(strata::run(leaves_a_task_behind(&cancelled), {TestType::kind, {}}) == 7);
  CHECK(cancelled);
}

TEST_CASE("run: throws EventLoopError when called inside a running loop", "[core][run]") {
  auto inner = []() -> strata::Coro<void> {
    CHECK_THROWS_AS(strata::run(answer()), strata::EventLoopError);
    co_return;
  };
  strata::run(inner());
}

// ---- SIGINT ------------------------------------------------------------------------------
// Catch2 installs its own SIGINT handler while a test runs; these tests give SIGINT its
// default disposition first (strata::run only takes a SIGINT nobody else handles), and restore
// Catch's afterwards.

namespace {

class DefaultSigint {
 public:
  explicit DefaultSigint(void (*handler)(int) = SIG_DFL) {
    struct sigaction action {};
    action.sa_handler = handler;
    sigemptyset(&action.sa_mask);
    REQUIRE(::sigaction(SIGINT, &action, &previous_) == 0);
  }
  ~DefaultSigint() { ::sigaction(SIGINT, &previous_, nullptr); }

 private:
  struct sigaction previous_ {};
};

void (*sigint_disposition())(int) {
  struct sigaction current {};
  REQUIRE(::sigaction(SIGINT, nullptr, &current) == 0);
  return current.sa_handler;
}

struct Unwound {
  bool* flag;
  ~Unwound() { *flag = true; }
};

strata::Coro<int> interrupted_main(bool* inner_unwound, bool* main_saw_cancel) {
  bool* flag = inner_unwound;
  auto inner = strata::create_task([](bool* f) -> strata::Coro<void> {
    Unwound guard{f};
    co_await forever();
  }(flag));
  co_await strata::sleep(0s);
  REQUIRE(::raise(SIGINT) == 0);  // arrives through the loop's signal pipe
  try {
    co_await inner;
  } catch (const strata::CancelledError&) {
    *main_saw_cancel = true;
    throw;
  }
  co_return 1;
}

strata::Coro<int> swallows_sigint() {
  REQUIRE(::raise(SIGINT) == 0);
  try {
    co_await forever();
  } catch (const strata::CancelledError&) {
    co_return 5;  // cleaned up and decided to finish normally
  }
  co_return 0;
}

strata::Coro<void*> disposition_inside() { co_return reinterpret_cast<void*>(sigint_disposition()); }

}  // namespace

STRATA_LOOP_TEST_CASE("run: SIGINT cancels the main task; coroutines unwind and run throws "
                      "KeyboardInterrupt",
                      "[core][run][signals]") {
  DefaultSigint default_sigint;
  bool inner_unwound = false, main_saw_cancel = false;
  CHECK_THROWS_AS(
      strata::run(interrupted_main(&inner_unwound, &main_saw_cancel), {TestType::kind, {}}),
      strata::KeyboardInterrupt);
  CHECK(main_saw_cancel);
  CHECK(inner_unwound);
  CHECK(sigint_disposition() == SIG_DFL);  // a later Ctrl-C ends the process as usual
}

STRATA_LOOP_TEST_CASE("run: a main task that handles the SIGINT cancellation returns its result",
                      "[core][run][signals]") {
  DefaultSigint default_sigint;
  CHECK(strata::run(swallows_sigint(), {TestType::kind, {}}) == 5);
  CHECK(sigint_disposition() == SIG_DFL);
}

STRATA_LOOP_TEST_CASE("run: takes SIGINT only while it has its default disposition",
                      "[core][run][signals]") {
  {
    DefaultSigint default_sigint;
    void* inside = strata::run(disposition_inside(), {TestType::kind, {}});
    CHECK(inside != reinterpret_cast<void*>(SIG_DFL));  // strata::run's handler
    CHECK(sigint_disposition() == SIG_DFL);
  }
  {
    DefaultSigint ignored(SIG_IGN);  // the program's own choice stays
    void* inside = strata::run(disposition_inside(), {TestType::kind, {}});
    CHECK(inside == reinterpret_cast<void*>(SIG_IGN));
    CHECK(sigint_disposition() == SIG_IGN);
  }
  {
    DefaultSigint default_sigint;
    strata::RunOptions options{TestType::kind, {}};
    options.handle_sigint = false;
    void* inside = strata::run(disposition_inside(), options);
    CHECK(inside == reinterpret_cast<void*>(SIG_DFL));
  }
}

TEST_CASE("run: off the main thread, SIGINT is left alone", "[core][run][signals]") {
  DefaultSigint default_sigint;
  void* inside = nullptr;
  std::thread other([&] { inside = strata::run(disposition_inside()); });
  other.join();
  CHECK(inside == reinterpret_cast<void*>(SIG_DFL));
}
