#pragma once
/// @file
/// Event: a flag that tasks can wait for (asyncio.Event).

#include <coroutine>

#include "strata/core/detail/waiter_queue.hpp"

namespace strata {

class Event;

/// The awaitable that Event::wait() returns.
///
/// Completes without suspending when the flag is set; otherwise the task waits until set().
///
/// @par Thread safety  Loop thread only.
/// @par Cancellation  Cancel-safe: a cancelled wait throws CancelledError and leaves no trace
/// in the Event. A wait woken by set() and cancelled before it resumes throws CancelledError
/// too; the event stays set, and the other waiters were woken all the same.
class [[nodiscard]] EventWait {
 public:
  /// What a task dump calls this await.
  static constexpr const char* await_name = "Event::wait";
  /// A wait on @p event, started when awaited; @p event must outlive it.
  explicit EventWait(Event& event) noexcept : event_(&event) {}
  EventWait(const EventWait&) = delete;
  EventWait& operator=(const EventWait&) = delete;

  /// True when the flag is set already.
  bool await_ready() const noexcept;
  /// Queues the current task. @throws InvalidStateError  not awaited from a task.
  void await_suspend(std::coroutine_handle<> h);
  /// @throws CancelledError  the task was cancelled.
  void await_resume();

 private:
  Event* event_;
  detail::Waiter waiter_;
  bool suspended_ = false;
};

/// A flag that tasks can wait for (asyncio.Event); it starts clear.
///
/// set() wakes every task waiting at that moment; each of them returns from wait() even if
/// clear() is called before it runs (asyncio's semantics).
///
/// @par Thread safety  Loop thread only: not thread-safe, as asyncio's is not.
/// @par Cancellation  Cancelling a waiter affects no other waiter.
/// @par Lifetime  Must outlive its waiters.
class Event {
 public:
  Event() noexcept = default;
  Event(const Event&) = delete;
  Event& operator=(const Event&) = delete;

  /// Waits until the flag is set: `co_await event.wait();`. Returns at once if it is set.
  /// @par Thread safety  Loop thread only.
  /// @par Cancellation  Cancel-safe (see EventWait).
  EventWait wait() noexcept { return EventWait(*this); }

  /// Sets the flag and wakes every waiting task (each resumes on a later loop iteration).
  /// A no-op when the flag is set already.
  /// @par Thread safety  Loop thread only.
  /// @par Cancellation  Not a suspension point.
  void set();

  /// Clears the flag: later wait()s suspend until the next set(). Tasks already woken by
  /// set() still return from their wait().
  /// @par Thread safety  Loop thread only.
  /// @par Cancellation  Not a suspension point.
  void clear() noexcept { value_ = false; }

  /// Whether the flag is set.
  /// @par Thread safety  Loop thread only.
  bool is_set() const noexcept { return value_; }

 private:
  friend class EventWait;
  detail::WaiterQueue waiters_;
  bool value_ = false;
};

}  // namespace strata
