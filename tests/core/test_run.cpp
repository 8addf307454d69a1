#include <strata/core/run.hpp>

#include <catch2/catch.hpp>

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
