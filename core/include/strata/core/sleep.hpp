#pragma once
/// @file
/// sleep(): suspend the current task for a while (asyncio.sleep).

#include <chrono>
#include <coroutine>

#include "strata/core/clock.hpp"
#include "strata/core/coro.hpp"
#include "strata/core/future.hpp"
#include "strata/core/handle.hpp"

namespace strata {

namespace detail {
/// Suspends the current task for one loop iteration; throws InvalidStateError outside a task.
void yield_task(std::coroutine_handle<> h);
}  // namespace detail

/// The awaitable that sleep() returns.
class [[nodiscard]] SleepAwaiter {
 public:
  /// What a task dump calls this await.
  static constexpr const char* await_name = "sleep";
  /// A sleep of @p delay, started when awaited.
  explicit SleepAwaiter(Duration delay) noexcept : delay_(delay) {}

  /// Always false: even a zero delay suspends, for one loop iteration.
  bool await_ready() const noexcept { return false; }
  /// Starts the timer (or, for a delay of zero or less, yields one iteration).
  /// @throws InvalidStateError  not awaited from a task.
  void await_suspend(std::coroutine_handle<> h);
  /// Removes the timer if still pending.
  /// @throws CancelledError  the task was cancelled while it slept.
  void await_resume();

 private:
  Duration delay_;
  Future<void> done_;
  TimerHandle timer_;
};

/// Suspends the current task for @p delay; `sleep(0s)` yields to the loop for one iteration,
/// letting every other ready callback run first. A negative delay counts as zero.
///
/// @par Cancellation  Cancel-safe: a cancelled sleep throws CancelledError and its timer is
/// removed at once.
/// @throws InvalidStateError  awaited outside a task.
template <class Rep, class Period>
SleepAwaiter sleep(std::chrono::duration<Rep, Period> delay) noexcept {
  return SleepAwaiter(std::chrono::duration_cast<Duration>(delay));
}

}  // namespace strata
