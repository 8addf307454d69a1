// The code of docs/guides/coroutines-tasks-cancellation.md: Coro, Task, Future, the combinators
// (gather, wait, as_completed, wait_for, timeout), TaskGroup, cancellation and shield. Each
// demo checks what the guide says with expect(); the program exits 0 when every one holds.
// [snippet:includes]
#include <strata/core/as_completed.hpp>
#include <strata/core/gather.hpp>
#include <strata/core/run.hpp>
#include <strata/core/shield.hpp>
#include <strata/core/sleep.hpp>
#include <strata/core/task_group.hpp>
#include <strata/core/timeout.hpp>
#include <strata/core/wait.hpp>
// [/snippet:includes]

#include <chrono>
#include <cstdio>
#include <exception>
#include <stdexcept>
#include <string>
#include <tuple>
#include <vector>

using namespace std::chrono_literals;

namespace {

/// Throws when a claim of the guide does not hold; main() reports it and exits 1.
void expect(bool holds, const char* claim) {
  if (!holds) throw std::logic_error(std::string("expected: ") + claim);
}

int started = 0;  // how many times double_it() began to run

// [snippet:coro]
strata::Coro<int> double_it(int x) {
  ++started;
  co_await strata::sleep(1ms);
  co_return 2 * x;
}

strata::Coro<void> lazy() {
  strata::Coro<int> c = double_it(21);  // makes the coroutine; none of its body runs yet
  expect(started == 0, "a Coro does nothing until it is awaited");
  int value = co_await c;  // runs the body here, in this task, to its end
  expect(value == 42 && started == 1, "awaiting a Coro runs it and gives its result");
}
// [/snippet:coro]

// [snippet:task]
strata::Coro<void> tasks() {
  strata::Task<int> t = strata::create_task(double_it(5), "double-5");
  expect(!t.done(), "a task starts on the next loop iteration, not inside create_task");
  int value = co_await t;  // a Task is a Future<int>: awaiting it waits for the result
  expect(value == 10 && t.done() && t.result() == 10, "the task's result");
  expect(t.get_name() == "double-5", "a task has a name, for logs and task dumps");

  // Nobody holds this one: it runs anyway, to completion (asyncio would need a reference).
  strata::create_task(double_it(1));
  co_await strata::sleep(5ms);
}
// [/snippet:task]

// [snippet:future]
strata::Coro<void> futures() {
  strata::EventLoop& loop = strata::get_running_loop();
  strata::Future<std::string> reply = loop.create_future<std::string>();
  loop.call_later(2ms, [reply]() mutable { reply.set_result("pong"); });
  std::string value = co_await reply;  // suspends until set_result(), then gets a copy
  expect(value == "pong", "a Future gives what set_result() set");
}
// [/snippet:future]

strata::Coro<int> fail_after(std::chrono::milliseconds delay) {
  co_await strata::sleep(delay);
  throw std::runtime_error("boom");
}

// [snippet:gather]
strata::Coro<void> gathering() {
  // Each Coro becomes a Task at once; the Future's value is a tuple in argument order.
  auto [a, b] = co_await strata::gather(double_it(1), double_it(2));
  expect(a == 2 && b == 4, "gather() gives the results in argument order");

  std::vector<strata::Coro<int>> many;
  many.reserve(3);
  for (int i = 0; i < 3; ++i) many.push_back(double_it(i));
  std::vector<int> all = co_await strata::gather(std::move(many));
  expect(all == std::vector<int>{0, 2, 4}, "gather() over a vector gives a vector");

  // With return_exceptions, a failure is one Outcome among the others instead of the result.
  auto [ok, failed] =
      co_await strata::gather(strata::return_exceptions, double_it(3), fail_after(1ms));
  expect(ok.value() == 6 && failed.has_exception(), "return_exceptions keeps every outcome");
}
// [/snippet:gather]

// [snippet:wait]
strata::Coro<void> waiting() {
  std::vector<strata::Task<int>> jobs;
  jobs.push_back(strata::create_task(double_it(1)));
  jobs.push_back(strata::create_task(fail_after(50ms)));
  strata::WaitResult<int> first =
      co_await strata::wait(jobs, strata::ReturnWhen::first_completed);
  expect(first.done.size() == 1 && first.pending.size() == 1, "one done, one still running");

  // wait() cancels nothing, even with a timeout: the pending task is still ours to handle.
  strata::WaitResult<int> rest = co_await strata::wait(first.pending,
                                                       strata::ReturnWhen::all_completed, 1ms);
  expect(rest.pending.size() == 1, "a wait() timeout only reports what is pending");
  rest.pending.front().cancel();
}
// [/snippet:wait]

strata::Coro<int> double_later(int x, std::chrono::milliseconds delay) {
  co_await strata::sleep(delay);
  co_return 2 * x;
}

// [snippet:as_completed]
strata::Coro<void> in_finishing_order() {
  std::vector<strata::Task<int>> jobs;
  jobs.push_back(strata::create_task(double_later(1, 20ms)));
  jobs.push_back(strata::create_task(double_later(2, 1ms)));
  auto finished = strata::as_completed(jobs);
  std::vector<int> order;
  while (std::optional<strata::Future<int>> next = co_await finished.next()) {
    order.push_back(co_await *next);  // done already: this does not suspend
  }
  expect(order == std::vector<int>{4, 2}, "as_completed() yields the futures as they finish");
}
// [/snippet:as_completed]

strata::Coro<std::string> slow_lookup() {
  co_await strata::sleep(10s);
  co_return "found";
}

// [snippet:wait_for]
strata::Coro<void> deadlines() {
  bool timed_out = false;
  try {
    std::string found = co_await strata::wait_for(slow_lookup(), 5ms);
    std::printf("found: %s\n", found.c_str());  // not reached: the lookup takes 10 s
  } catch (const strata::TimeoutError&) {
    timed_out = true;  // slow_lookup() was cancelled, and has finished unwinding
  }
  expect(timed_out, "wait_for() throws TimeoutError when the delay passes first");

  // timeout(): the same limit, no limit when it is std::nullopt.
  int value = co_await strata::timeout(1s, double_it(4));
  int unlimited = co_await strata::timeout(std::nullopt, double_it(5));
  expect(value == 8 && unlimited == 10, "within its deadline, timeout() gives the result");
}
// [/snippet:wait_for]

std::vector<std::string> events;  // what the cancellation demos saw, in order

// [snippet:cancel]
strata::Coro<void> worker() {
  try {
    co_await strata::sleep(10s);
  } catch (const strata::CancelledError& e) {
    events.push_back("worker cleans up: " + e.message());
    throw;  // rethrown: the task ends cancelled
  }
}

strata::Coro<void> cancelling() {
  strata::Task<> t = strata::create_task(worker());
  co_await strata::sleep(1ms);  // the worker starts and reaches its sleep
  t.cancel("shutting down");    // its sleep throws CancelledError on the next iteration
  try {
    co_await t;
  } catch (const strata::CancelledError&) {
    events.push_back("the task ended cancelled");
  }
  expect(t.cancelled() && events.size() == 2 &&
             events[0] == "worker cleans up: shutting down",
         "cancel() throws CancelledError, with its message, at the task's co_await");
}
// [/snippet:cancel]

// [snippet:cancel_early]
strata::Coro<void> cancelled_before_it_ran() {
  int before = started;
  strata::Task<int> t = strata::create_task(double_it(1));
  t.cancel();  // the task has not run yet: its body never starts
  auto outcome = co_await strata::gather(strata::return_exceptions, t);
  expect(std::get<0>(outcome).cancelled() && started == before,
         "a task cancelled before its first step never runs");
}
// [/snippet:cancel_early]

// [snippet:swallow]
strata::Coro<int> stubborn() {
  try {
    co_await strata::sleep(10s);
  } catch (const strata::CancelledError&) {
    co_return -1;  // not rethrown: the task ends with this result, not cancelled
  }
  co_return 0;
}
// [/snippet:swallow]

strata::Coro<void> swallowing() {
  strata::Task<int> t = strata::create_task(stubborn());
  co_await strata::sleep(1ms);
  t.cancel();
  int value = co_await t;
  expect(value == -1 && !t.cancelled() && t.cancelling() == 1,
         "a task that swallows CancelledError ends with its result");
}

strata::Coro<int> wait_for_payment(strata::Task<int> payment) {
  int value = co_await payment;
  co_return value;
}

// [snippet:shield]
strata::Coro<int> wait_for_payment_shielded(strata::Task<int> payment) {
  strata::Future<int> shielded = strata::shield(payment);
  int value = co_await shielded;
  co_return value;
}

strata::Coro<void> shielding() {
  // Without shield, cancelling the waiter cancels what it awaits.
  strata::Task<int> payment = strata::create_task(double_later(7, 5ms));
  strata::Task<int> waiter = strata::create_task(wait_for_payment(payment));
  co_await strata::sleep(1ms);
  waiter.cancel();
  auto both = co_await strata::gather(strata::return_exceptions, waiter, payment);
  expect(std::get<0>(both).cancelled() && std::get<1>(both).cancelled(),
         "cancelling a task cancels the task it awaits");

  // With shield, the waiter ends cancelled and the payment runs on to its result.
  payment = strata::create_task(double_later(7, 5ms));
  waiter = strata::create_task(wait_for_payment_shielded(payment));
  co_await strata::sleep(1ms);
  waiter.cancel();
  both = co_await strata::gather(strata::return_exceptions, waiter, payment);
  expect(std::get<0>(both).cancelled() && std::get<1>(both).value() == 14,
         "shield() keeps the awaiter's cancellation from reaching what it protects");
}
// [/snippet:shield]

// [snippet:task_group]
strata::Coro<void> grouped() {
  int sum = co_await strata::task_group([](strata::TaskGroup& tg) -> strata::Coro<int> {
    strata::Task<int> a = tg.create_task(double_it(1));
    strata::Task<int> b = tg.create_task(double_it(2));
    co_return co_await a + co_await b;
  });
  expect(sum == 6, "task_group() returns what its body returns");

  // One task fails: its siblings and the body are cancelled, and the scope throws every
  // failure (cancellations aside) in an ExceptionGroup once all of them have finished.
  std::size_t failures = 0;
  try {
    co_await strata::task_group([](strata::TaskGroup& tg) -> strata::Coro<void> {
      tg.create_task(slow_lookup());  // cancelled when its sibling fails
      tg.create_task(fail_after(1ms));
      co_await strata::sleep(10s);  // the body is cancelled too
    });
  } catch (const strata::ExceptionGroup& group) {
    failures = group.exceptions().size();
  }
  expect(failures == 1, "the ExceptionGroup holds the one failure, not the cancellations");
}
// [/snippet:task_group]

}  // namespace

int main() {
  try {
    return strata::run([]() -> strata::Coro<int> {
      co_await lazy();
      co_await tasks();
      co_await futures();
      co_await gathering();
      co_await waiting();
      co_await in_finishing_order();
      co_await deadlines();
      co_await cancelling();
      co_await cancelled_before_it_ran();
      co_await swallowing();
      co_await shielding();
      co_await grouped();
      co_return 0;
    }());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "snippet_coroutines: %s\n", e.what());
    return 1;
  }
}
