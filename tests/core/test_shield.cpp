#include <strata/core/shield.hpp>

#include <catch2/catch.hpp>

#include <chrono>
#include <exception>
#include <stdexcept>
#include <string>
#include <vector>

#include <strata/core/sleep.hpp>

#include "loop_test.hpp"

using namespace std::chrono_literals;

namespace {

using Events = std::vector<std::string>;

strata::Coro<int> value_after(int value, strata::Duration delay, Events* events) {
  co_await strata::sleep(delay);
  events->push_back("inner done " + std::to_string(value));
  co_return value;
}

strata::Coro<int> fail_after(strata::Duration delay, std::string what, Events* events) {
  co_await strata::sleep(delay);
  events->push_back("inner failed");
  throw std::runtime_error(what);
}

/// Waits for @p gate to open, then returns @p value (or fails with @p what if not empty).
strata::Coro<int> gated(strata::Future<void> gate, int value, std::string what, Events* events) {
  co_await gate;
  if (!what.empty()) {
    events->push_back("inner failed");
    throw std::runtime_error(what);
  }
  events->push_back("inner done " + std::to_string(value));
  co_return value;
}

strata::Coro<void> nothing_after(strata::Duration delay, Events* events) {
  co_await strata::sleep(delay);
  events->push_back("inner done");
}

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
  } catch (const std::exception& x) {
    return x.what();
  }
  return "unknown";
}

std::vector<std::string> close_and_collect_errors(strata::testing::TestLoop& loop) {
  loop->close();
  std::vector<std::string> out;
  for (const auto& e : loop.errors()) out.push_back(e.message + " / " + kind(e.exception));
  return out;
}

// ---- the awaiting task is cancelled ------------------------------------------------------------

strata::Coro<int> await_shielded(strata::Task<int> inner, strata::Future<void> started,
                                 Events* events) {
  started.set_result();
  std::exception_ptr error = co_await exception_of(strata::shield(inner));
  events->push_back("outer " + kind(error));
  if (error) std::rethrow_exception(error);
  co_return 0;
}

struct Shielded {
  bool outer_cancelled = false;
  bool inner_running_when_outer_done = false;
  int inner_result = 0;
};

strata::Coro<void> cancel_outer(Shielded* out, Events* events) {
  strata::Future<void> started(strata::get_running_loop());
  strata::Future<void> gate(strata::get_running_loop());
  strata::Task<int> inner = strata::create_task(gated(gate, 9, "", events), "inner");
  strata::Task<int> outer = strata::create_task(await_shielded(inner, started, events), "outer");
  co_await started;  // the outer task suspends on the shield within the step that set this
  outer.cancel();
  co_await exception_of(outer);
  out->outer_cancelled = outer.cancelled();
  out->inner_running_when_outer_done = !inner.done() && !inner.cancelled();
  gate.set_result();
  out->inner_result = co_await inner;
}

}  // namespace

STRATA_LOOP_TEST_CASE(
    "shield: a cancelled awaiting task gets CancelledError while the shielded task completes",
    "[core][shield]") {
  strata::testing::TestLoop loop(TestType::kind);
  Events events;
  Shielded out;
  loop.run(cancel_outer(&out, &events));
  CHECK(out.outer_cancelled);
  CHECK(out.inner_running_when_outer_done);
  CHECK(out.inner_result == 9);
  CHECK(events == Events{"outer CancelledError", "inner done 9"});
}

namespace {
strata::Coro<int> signal_and_await(strata::Future<int> shielded, strata::Future<void> started) {
  started.set_result();
  co_return co_await shielded;
}

strata::Coro<void> cancel_outer_then_inner_fails(bool* outer_cancelled, Events* events) {
  strata::Future<void> started(strata::get_running_loop());
  strata::Future<void> gate(strata::get_running_loop());
  strata::Task<int> inner = strata::create_task(gated(gate, 0, "late", events), "inner");
  strata::Task<int> outer = strata::create_task(signal_and_await(strata::shield(inner), started));
  co_await started;
  outer.cancel();
  co_await exception_of(outer);
  *outer_cancelled = outer.cancelled();
  gate.set_result();  // the inner task fails only now, after the outer was cancelled
  // Wait for the inner task without retrieving its exception. This callback runs after the
  // shield's own, which was added first.
  strata::Future<void> inner_done(strata::get_running_loop());
  inner.add_done_callback([inner_done](strata::Future<int>&) mutable { inner_done.set_result(); });
  co_await inner_done;
}
}  // namespace

STRATA_LOOP_TEST_CASE(
    "shield: a failure of the inner task after the outer was cancelled is not reported",
    "[core][shield]") {
  strata::testing::TestLoop loop(TestType::kind);
  Events events;
  bool outer_cancelled = false;
  loop.run(cancel_outer_then_inner_fails(&outer_cancelled, &events));
  CHECK(outer_cancelled);
  CHECK(events == Events{"inner failed"});
  // Nobody is left to take the exception: asyncio marks it retrieved rather than log it.
  CHECK(close_and_collect_errors(loop).empty());
}

// ---- pass-through ----------------------------------------------------------------------------

namespace {
struct PassThrough {
  int value = 0;
  std::string error;
  bool void_done = false;
};

strata::Coro<void> pass_through(PassThrough* out, Events* events) {
  out->value = co_await strata::shield(value_after(3, 1ms, events));
  out->error = kind(co_await exception_of(strata::shield(fail_after(1ms, "broken", events))));
  co_await strata::shield(nothing_after(1ms, events));
  out->void_done = true;
}
}  // namespace

STRATA_LOOP_TEST_CASE("shield: the result and the exception pass through unchanged",
                      "[core][shield]") {
  strata::testing::TestLoop loop(TestType::kind);
  Events events;
  PassThrough out;
  loop.run(pass_through(&out, &events));
  CHECK(out.value == 3);
  CHECK(out.error == "broken");
  CHECK(out.void_done);
  CHECK(events == Events{"inner done 3", "inner failed", "inner done"});
  CHECK(close_and_collect_errors(loop).empty());
}

namespace {
struct InnerCancelled {
  std::string outer_error;
  bool shield_cancelled = false;
};

strata::Coro<void> inner_cancelled(InnerCancelled* out, Events* events) {
  strata::Task<int> inner = strata::create_task(value_after(1, 1h, events));
  strata::Future<int> shielded = strata::shield(inner);
  strata::get_running_loop().call_later(1ms, [inner]() mutable { inner.cancel(); });
  out->outer_error = kind(co_await exception_of(shielded));
  out->shield_cancelled = shielded.cancelled();
}

strata::Coro<bool> already_done() {
  strata::Future<int> f(strata::get_running_loop());
  f.set_result(4);
  strata::Future<int> shielded = strata::shield(f);
  co_return shielded == f && co_await shielded == 4;
}
}  // namespace

STRATA_LOOP_TEST_CASE("shield: cancelling the shielded task itself cancels the shield",
                      "[core][shield]") {
  strata::testing::TestLoop loop(TestType::kind);
  Events events;
  InnerCancelled out;
  loop.run(inner_cancelled(&out, &events));
  CHECK(out.outer_error == "CancelledError");
  CHECK(out.shield_cancelled);
  CHECK(events.empty());
}

STRATA_LOOP_TEST_CASE("shield: shielding a done future returns that future", "[core][shield]") {
  strata::testing::TestLoop loop(TestType::kind);
  CHECK(loop.run(already_done()));
}
