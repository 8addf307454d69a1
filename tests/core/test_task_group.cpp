#include <strata/core/task_group.hpp>

#include <catch2/catch.hpp>

#include <chrono>
#include <coroutine>
#include <exception>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include <strata/core/sleep.hpp>
#include <strata/core/timeout.hpp>

#include "loop_test.hpp"

using namespace std::chrono_literals;

namespace {

using Events = std::vector<std::string>;

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

/// One exception in words: "CancelledError", "InvalidStateError: <what>", "ExceptionGroup" or
/// its what().
std::string kind(const std::exception_ptr& e) {
  if (!e) return "none";
  try {
    std::rethrow_exception(e);
  } catch (const strata::CancelledError&) {
    return "CancelledError";
  } catch (const strata::ExceptionGroup&) {
    return "ExceptionGroup";
  } catch (const strata::InvalidStateError& x) {
    return std::string("InvalidStateError: ") + x.what();
  } catch (const std::exception& x) {
    return x.what();
  }
  return "unknown";
}

/// The members of an ExceptionGroup, in words; empty if @p e is not one.
std::vector<std::string> members(const std::exception_ptr& e) {
  std::vector<std::string> out;
  try {
    std::rethrow_exception(e);
  } catch (const strata::ExceptionGroup& g) {
    for (const auto& m : g.exceptions()) out.push_back(kind(m));
  } catch (...) {
  }
  return out;
}

strata::Coro<void> record_after(std::string name, strata::Duration delay, Events* events) {
  co_await strata::sleep(delay);
  events->push_back(name + " done");
}

strata::Coro<int> value_after(int value, strata::Duration delay) {
  co_await strata::sleep(delay);
  co_return value;
}

strata::Coro<void> fail_after(strata::Duration delay, std::string what, Events* events) {
  co_await strata::sleep(delay);
  events->push_back(what);
  throw std::runtime_error(what);
}

strata::Coro<void> fail_now(std::string what, Events* events) {
  events->push_back(what);
  throw std::runtime_error(what);
  co_return;
}

strata::Coro<void> sleep_forever() { co_await strata::sleep(1h); }

/// Signals @p started (if valid), sleeps until cancelled, records "<name> cancelled" and ends
/// cancelled.
strata::Coro<void> until_cancelled(std::string name, Events* events,
                                   strata::Future<void> started = {}) {
  if (started.valid() && !started.done()) started.set_result();
  std::exception_ptr error = co_await exception_of(sleep_forever());
  events->push_back(name + " " + (error ? kind(error) : "woke"));
  if (error) std::rethrow_exception(error);
}

/// Sleeps until cancelled, then fails with @p what instead of ending cancelled.
strata::Coro<void> fails_when_cancelled(std::string what, Events* events) {
  std::exception_ptr error = co_await exception_of(sleep_forever());
  events->push_back(what);
  throw std::runtime_error(what);
}

struct Scope {
  std::string error = "not run";
  std::vector<std::string> members;
  int cancelling_after = -1;
  std::string after;  // what the parent could still do after the scope
};

/// Awaits the task_group @p scope and records how it ended; then checks that the parent is
/// not left cancelled by awaiting once more.
strata::Coro<void> run_scope(strata::Coro<void> scope, Scope* out, Events* events) {
  std::exception_ptr error = co_await exception_of(std::move(scope));
  out->error = kind(error);
  out->members = members(error);
  out->cancelling_after = strata::current_task().cancelling();
  events->push_back("scope " + out->error);
  out->after = kind(co_await exception_of(strata::sleep(1ms)));
}

// ---- waiting for the children ------------------------------------------------------------------

strata::Coro<void> waits_for_children(Events* events) {
  co_await strata::task_group([events](strata::TaskGroup& tg) -> strata::Coro<void> {
    tg.create_task(record_after("child 1", 5ms, events));
    tg.create_task(record_after("child 2", 1ms, events));
    events->push_back("body done, size " + std::to_string(tg.size()));
    co_return;
  });
  events->push_back("group done");
}

}  // namespace

STRATA_LOOP_TEST_CASE("task_group: the scope ends only once every child has finished",
                      "[core][task_group]") {
  strata::testing::TestLoop loop(TestType::kind);
  Events events;
  loop.run(waits_for_children(&events));
  CHECK(events == Events{"body done, size 2", "child 2 done", "child 1 done", "group done"});
}

namespace {
strata::Coro<void> after_gate(strata::Future<void> gate, std::string name, Events* events) {
  co_await gate;
  co_await strata::sleep(1ms);
  events->push_back(name + " done");
}

strata::Coro<int> returns_body_value(Events* events) {
  int v = co_await strata::task_group([events](strata::TaskGroup& tg) -> strata::Coro<int> {
    strata::Future<void> gate(strata::get_running_loop());
    strata::Task<int> a = tg.create_task(value_after(20, 1ms));
    tg.create_task(after_gate(gate, "child", events));
    int x = co_await a;
    events->push_back("body has " + std::to_string(x));
    gate.set_result();  // the child finishes only after the body has returned
    co_return x + 1;
  });
  events->push_back("group returned " + std::to_string(v));
  co_return v;
}
}  // namespace

STRATA_LOOP_TEST_CASE("task_group: returns the body's value once the children are done",
                      "[core][task_group]") {
  strata::testing::TestLoop loop(TestType::kind);
  Events events;
  CHECK(loop.run(returns_body_value(&events)) == 21);
  CHECK(events == Events{"body has 20", "child done", "group returned 21"});
}

// ---- a failing child -------------------------------------------------------------------------

namespace {
strata::Coro<void> failing_child(Events* events) {
  co_await strata::task_group([events](strata::TaskGroup& tg) -> strata::Coro<void> {
    tg.create_task(fail_after(2ms, "child failed", events));
    tg.create_task(until_cancelled("sibling", events));
    co_await until_cancelled("body", events);
  });
}
}  // namespace

STRATA_LOOP_TEST_CASE(
    "task_group: a failing child cancels its siblings and the body, and the scope throws an "
    "ExceptionGroup of that error",
    "[core][task_group]") {
  strata::testing::TestLoop loop(TestType::kind);
  Events events;
  Scope out;
  loop.run(run_scope(failing_child(&events), &out, &events));
  CHECK(out.error == "ExceptionGroup");
  CHECK(out.members == std::vector<std::string>{"child failed"});  // no CancelledErrors
  CHECK(out.cancelling_after == 0);
  CHECK(out.after == "none");  // the parent task goes on, uncancelled
  CHECK(events == Events{"child failed", "sibling CancelledError", "body CancelledError",
                         "scope ExceptionGroup"});
}

namespace {
strata::Coro<void> two_failures(Events* events) {
  co_await strata::task_group([events](strata::TaskGroup& tg) -> strata::Coro<void> {
    tg.create_task(fail_after(2ms, "first failed", events));
    tg.create_task(fails_when_cancelled("second failed while cancelled", events));
    co_return;
  });
}

strata::Coro<void> simultaneous_failures(Events* events) {
  co_await strata::task_group([events](strata::TaskGroup& tg) -> strata::Coro<void> {
    tg.create_task(fail_now("a failed", events));
    tg.create_task(fail_now("b failed", events));
    co_return;
  });
}
}  // namespace

STRATA_LOOP_TEST_CASE("task_group: two failing children both end up in the ExceptionGroup",
                      "[core][task_group]") {
  strata::testing::TestLoop loop(TestType::kind);
  Events events;
  Scope out;
  loop.run(run_scope(two_failures(&events), &out, &events));
  CHECK(out.error == "ExceptionGroup");
  CHECK(out.members == std::vector<std::string>{"first failed", "second failed while cancelled"});
  CHECK(out.cancelling_after == 0);
  CHECK(events ==
        Events{"first failed", "second failed while cancelled", "scope ExceptionGroup"});
}

STRATA_LOOP_TEST_CASE(
    "task_group: children failing in the same iteration both end up in the ExceptionGroup",
    "[core][task_group]") {
  strata::testing::TestLoop loop(TestType::kind);
  Events events;
  Scope out;
  loop.run(run_scope(simultaneous_failures(&events), &out, &events));
  CHECK(out.members == std::vector<std::string>{"a failed", "b failed"});
  CHECK(out.cancelling_after == 0);
}

namespace {
strata::Coro<void> child_fails_after_body(Events* events) {
  co_await strata::task_group([events](strata::TaskGroup& tg) -> strata::Coro<void> {
    tg.create_task(fail_after(2ms, "late child failed", events));
    tg.create_task(until_cancelled("sibling", events));
    events->push_back("body returned");
    co_return;
  });
}
}  // namespace

STRATA_LOOP_TEST_CASE(
    "task_group: a child failing after the body returned leaves the parent's cancelling() at 0",
    "[core][task_group]") {
  strata::testing::TestLoop loop(TestType::kind);
  Events events;
  Scope out;
  loop.run(run_scope(child_fails_after_body(&events), &out, &events));
  CHECK(out.members == std::vector<std::string>{"late child failed"});
  CHECK(out.cancelling_after == 0);
  CHECK(out.after == "none");
  CHECK(events == Events{"body returned", "late child failed", "sibling CancelledError",
                         "scope ExceptionGroup"});
}

namespace {
/// A timeout around a task_group whose child fails: the group's own cancellation of the
/// parent must not disturb the timeout's bookkeeping.
strata::Coro<void> group_then_sleep(Events* events) {
  co_await exception_of(child_fails_after_body(events));
  co_await sleep_forever();
}

strata::Coro<void> timeout_around_group(std::string* error, Events* events) {
  *error = kind(co_await exception_of(strata::timeout(50ms, group_then_sleep(events))));
}
}  // namespace

STRATA_LOOP_TEST_CASE(
    "task_group: a timeout around a group whose child failed still ends in TimeoutError",
    "[core][task_group]") {
  strata::testing::TestLoop loop(TestType::kind);
  Events events;
  std::string error;
  loop.run(timeout_around_group(&error, &events));
  CHECK(error == "timed out");
}

// ---- the body fails -------------------------------------------------------------------------------

namespace {
strata::Coro<void> body_fails(Events* events) {
  co_await strata::task_group([events](strata::TaskGroup& tg) -> strata::Coro<void> {
    tg.create_task(until_cancelled("child", events));
    co_await strata::sleep(1ms);
    events->push_back("body throws");
    throw std::logic_error("body failed");
  });
}
}  // namespace

STRATA_LOOP_TEST_CASE(
    "task_group: a failing body cancels the children and its error is in the ExceptionGroup",
    "[core][task_group]") {
  strata::testing::TestLoop loop(TestType::kind);
  Events events;
  Scope out;
  loop.run(run_scope(body_fails(&events), &out, &events));
  CHECK(out.error == "ExceptionGroup");
  CHECK(out.members == std::vector<std::string>{"body failed"});
  CHECK(out.cancelling_after == 0);
  CHECK(events == Events{"body throws", "child CancelledError", "scope ExceptionGroup"});
}

// ---- the parent is cancelled from outside --------------------------------------------------------

namespace {
// These bodies capture a Future by copy, so they are bound to a local before the co_await:
// g++ 12 destroys the captures of a lambda passed as a temporary inside a co_await expression
// twice (a use-after-free; clang is fine). Captures of pointers, as elsewhere here, are safe.
strata::Coro<void> group_in_body(Events* events, strata::Future<void> started) {
  auto body = [events, started](strata::TaskGroup& tg) -> strata::Coro<void> {
    tg.create_task(until_cancelled("child 1", events));
    tg.create_task(until_cancelled("child 2", events));
    co_await until_cancelled("body", events, started);
  };
  co_await strata::task_group(std::move(body));
}

strata::Coro<void> group_waiting(Events* events, strata::Future<void> started) {
  auto body = [events, started](strata::TaskGroup& tg) -> strata::Coro<void> {
    tg.create_task(until_cancelled("child 1", events));
    tg.create_task(until_cancelled("child 2", events, started));
    events->push_back("body returned");
    co_return;
  };
  co_await strata::task_group(std::move(body));
}

strata::Coro<void> record_parent(strata::Coro<void> scope, std::string* error, Events* events) {
  std::exception_ptr e = co_await exception_of(std::move(scope));
  *error = kind(e);
  events->push_back("parent saw " + *error);
  if (e) std::rethrow_exception(e);
}

template <class MakeScope>
strata::Coro<void> cancel_parent(MakeScope make_scope, std::string* error, bool* cancelled,
                                 Events* events) {
  strata::Future<void> started(strata::get_running_loop());
  strata::Task<void> parent =
      strata::create_task(record_parent(make_scope(events, started), error, events), "parent");
  co_await started;
  parent.cancel();
  events->push_back("parent cancel requested");
  co_await exception_of(parent);
  *cancelled = parent.cancelled();
}
}  // namespace

STRATA_LOOP_TEST_CASE(
    "task_group: cancelling the parent while the body runs cancels everything and throws "
    "CancelledError",
    "[core][task_group]") {
  strata::testing::TestLoop loop(TestType::kind);
  Events events;
  std::string error;
  bool cancelled = false;
  loop.run(cancel_parent(&group_in_body, &error, &cancelled, &events));
  CHECK(error == "CancelledError");  // not an ExceptionGroup
  CHECK(cancelled);
  CHECK(events == Events{"parent cancel requested", "body CancelledError",
                         "child 1 CancelledError", "child 2 CancelledError",
                         "parent saw CancelledError"});
}

STRATA_LOOP_TEST_CASE(
    "task_group: cancelling the parent while the scope waits for children cancels them and "
    "throws CancelledError",
    "[core][task_group]") {
  strata::testing::TestLoop loop(TestType::kind);
  Events events;
  std::string error;
  bool cancelled = false;
  loop.run(cancel_parent(&group_waiting, &error, &cancelled, &events));
  CHECK(error == "CancelledError");
  CHECK(cancelled);
  CHECK(events == Events{"body returned", "parent cancel requested", "child 1 CancelledError",
                         "child 2 CancelledError", "parent saw CancelledError"});
}

// ---- misuse -----------------------------------------------------------------------------------------

namespace {
strata::Coro<void> noop() { co_return; }

struct Misuse {
  std::string after_finish;
  std::size_t size_after = 99;
  std::string while_shutting_down;
};

strata::Coro<void> create_after_finish(Misuse* out) {
  std::optional<strata::TaskGroup> saved;
  co_await strata::task_group([&saved](strata::TaskGroup& tg) -> strata::Coro<void> {
    saved.emplace(tg);
    co_return;
  });
  out->size_after = saved->size();
  out->after_finish = kind(co_await exception_of(
      [](strata::TaskGroup* g) -> strata::Coro<void> { co_await g->create_task(noop()); }(&*saved)));
}

strata::Coro<void> create_while_shutting_down(Misuse* out, Events* events) {
  co_await exception_of(strata::task_group([out, events](strata::TaskGroup& tg) -> strata::Coro<void> {
    tg.create_task(fail_after(1ms, "child failed", events));
    co_await exception_of(sleep_forever());  // cancelled by the failure, swallowed
    out->while_shutting_down = kind(co_await exception_of(
        [](strata::TaskGroup* g) -> strata::Coro<void> { co_await g->create_task(noop()); }(&tg)));
  }));
}
}  // namespace

STRATA_LOOP_TEST_CASE("task_group: create_task after the group finished throws InvalidStateError",
                      "[core][task_group]") {
  strata::testing::TestLoop loop(TestType::kind);
  Misuse out;
  loop.run(create_after_finish(&out));
  CHECK(out.size_after == 0);
  CHECK(out.after_finish == "InvalidStateError: TaskGroup is finished");
}

STRATA_LOOP_TEST_CASE(
    "task_group: create_task while the group shuts down after a failure throws InvalidStateError",
    "[core][task_group]") {
  strata::testing::TestLoop loop(TestType::kind);
  Events events;
  Misuse out;
  loop.run(create_while_shutting_down(&out, &events));
  CHECK(out.while_shutting_down == "InvalidStateError: TaskGroup is shutting down");
}

namespace {
/// A bare eager coroutine, not a Task: awaiting inside it runs outside any task.
struct Detached {
  struct promise_type {
    Detached get_return_object() noexcept { return {}; }
    std::suspend_never initial_suspend() noexcept { return {}; }
    std::suspend_never final_suspend() noexcept { return {}; }
    void return_void() noexcept {}
    void unhandled_exception() noexcept { std::terminate(); }
  };
};

Detached group_outside_a_task(std::string* error, bool* body_ran) {
  *error = kind(co_await exception_of(
      strata::task_group([body_ran](strata::TaskGroup&) -> strata::Coro<void> {
        *body_ran = true;
        co_return;
      })));
}
}  // namespace

TEST_CASE("task_group: used outside a task throws InvalidStateError", "[core][task_group]") {
  std::string error = "not run";
  bool body_ran = false;
  group_outside_a_task(&error, &body_ran);
  CHECK(error == "InvalidStateError: task_group() used outside a Task");
  CHECK_FALSE(body_ran);
}
