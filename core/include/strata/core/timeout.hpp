#pragma once
/// @file
/// timeout(), timeout_at() and wait_for(): bound an await by a deadline (asyncio.timeout,
/// asyncio.timeout_at, asyncio.wait_for).

#include <optional>
#include <utility>

#include "strata/core/awaitable.hpp"
#include "strata/core/clock.hpp"

namespace strata {

namespace detail {

/// asyncio.Timeout's state machine, for the current task: when the deadline passes it
/// cancels the task; on the way out it turns that cancellation into TimeoutError.
class TimeoutScope {
 public:
  /// Arms the deadline (none when empty) for the current task.
  /// @throws InvalidStateError  outside a task.
  explicit TimeoutScope(std::optional<TimePoint> when);
  ~TimeoutScope() { timer_.cancel(); }
  TimeoutScope(const TimeoutScope&) = delete;
  TimeoutScope& operator=(const TimeoutScope&) = delete;

  /// Leaves the scope; returns true when a CancelledError leaving it must become TimeoutError
  /// (the deadline caused it and nobody else asked to cancel the task meanwhile).
  bool exit(bool leaving_with_cancelled_error) noexcept;

 private:
  enum class State { active, expiring, done };
  void expire();

  TaskRef task_;
  int cancelling_at_entry_ = 0;
  State state_ = State::active;
  TimerHandle timer_;
};

}  // namespace detail

/// Awaits @p aw, cancelling it if @p when (on the loop's clock) passes first (asyncio.timeout_at).
///
/// The awaitable runs in the current task; at the deadline the task is cancelled, and the
/// CancelledError that unwinds out of @p aw becomes TimeoutError. A cancellation from
/// elsewhere stays a CancelledError. No deadline when @p when is empty.
///
/// @throws TimeoutError  the deadline passed first.
/// @par Cancellation  As cancel-safe as @p aw, on timeout as on a cancel from outside: either
/// cancels @p aw (a Coro's current co_await throws CancelledError; an awaited Task or Future
/// is cancelled, as asyncio does). So a Queue::get() or a StreamReader read that times out
/// takes nothing, while a Coro that collects (HttpClientResponse::text()) loses what it had.
/// If the deadline passes after @p aw's result became ready but before the task resumed to
/// take it (one loop iteration), the deadline wins: TimeoutError. A cancel-safe @p aw then
/// gives the result back: the queue item stays queued, the bytes stay in the reader, a Task
/// or Future keeps its value.
template <Awaitable A>
Coro<await_result_t<A>> timeout_at(std::optional<TimePoint> when, A aw) {
  detail::TimeoutScope scope(when);
  try {
    if constexpr (std::is_void_v<await_result_t<A>>) {
      co_await std::move(aw);
      scope.exit(false);
      co_return;
    } else {
      auto result = co_await std::move(aw);
      scope.exit(false);
      co_return result;
    }
  } catch (const CancelledError&) {
    if (!scope.exit(true)) throw;
  } catch (...) {
    scope.exit(false);
    throw;
  }
  throw TimeoutError("timed out");
}

/// Awaits @p aw, cancelling it if @p delay passes first (asyncio.timeout). No deadline when
/// @p delay is empty. @throws TimeoutError  the delay passed first.
/// @par Cancellation  As timeout_at(): as cancel-safe as @p aw.
template <Awaitable A>
Coro<await_result_t<A>> timeout(std::optional<Duration> delay, A aw) {
  std::optional<TimePoint> when;
  if (delay) when = get_running_loop().time() + *delay;
  return timeout_at(when, std::move(aw));
}

/// Awaits @p aw for at most @p delay (asyncio.wait_for): on timeout, @p aw is cancelled,
/// awaited until it has finished unwinding, and TimeoutError is thrown. No limit when
/// @p delay is empty. A zero or negative delay still returns the result of an @p aw that is
/// done already.
///
/// @throws TimeoutError  the delay passed first.
/// @par Cancellation  As timeout_at(): as cancel-safe as @p aw, and a cancel from outside
/// stays a CancelledError. With a delay of zero or less, an @p aw not done already is
/// cancelled (a Coro is wrapped in a Task that never starts, so it consumes nothing) and
/// waited for, then TimeoutError is thrown even if it completed meanwhile.
template <Awaitable A>
Coro<await_result_t<A>> wait_for(A aw, std::optional<Duration> delay) {
  using T = await_result_t<A>;
  if (delay && *delay <= Duration::zero()) {
    Future<T> f = ensure_future(std::move(aw));
    if (f.done()) co_return co_await f;
    f.cancel();
    // Wait through a separate future (asyncio's _cancel_and_wait): a cancellation of this
    // task then stays a CancelledError here and does not reach f's clean-up a second time.
    Future<void> finished(f.get_loop());
    CallbackId id = f.add_done_callback([finished](Future<T>&) mutable {
      if (!finished.done()) finished.set_result();
    });
    try {
      co_await finished;
    } catch (...) {
      f.remove_done_callback(id);
      throw;
    }
    try {
      co_await f;
    } catch (const CancelledError&) {
    } catch (...) {
    }
    throw TimeoutError("timed out");
  }
  co_return co_await timeout(delay, std::move(aw));
}

}  // namespace strata
