#pragma once
/// @file
/// Semaphore and BoundedSemaphore: a counter that tasks acquire and release (asyncio.Semaphore,
/// asyncio.BoundedSemaphore), with the scoped SemaphoreGuard.

#include <coroutine>
#include <cstdint>
#include <optional>

#include "strata/core/detail/waiter_queue.hpp"

namespace strata {

class Semaphore;

/// Owns one acquisition of a Semaphore and releases it when destroyed (what
/// `co_await sem.acquire()` returns; asyncio's `async with sem:`). Movable, not copyable.
///
/// @par Thread safety  Loop thread only.
/// @par Cancellation  Not a suspension point.
class [[nodiscard]] SemaphoreGuard {
 public:
  /// An empty guard that owns nothing.
  SemaphoreGuard() noexcept = default;
  /// Takes over one acquisition of @p sem.
  explicit SemaphoreGuard(Semaphore& sem) noexcept : sem_(&sem) {}
  /// Takes over @p other's acquisition; @p other becomes empty.
  SemaphoreGuard(SemaphoreGuard&& other) noexcept : sem_(other.sem_) { other.sem_ = nullptr; }
  /// Releases what this guard owned, then takes over @p other's acquisition.
  SemaphoreGuard& operator=(SemaphoreGuard&& other) noexcept;
  SemaphoreGuard(const SemaphoreGuard&) = delete;
  SemaphoreGuard& operator=(const SemaphoreGuard&) = delete;
  /// Releases the acquisition if the guard still owns one.
  ~SemaphoreGuard();

  /// Whether the guard owns an acquisition.
  bool owns() const noexcept { return sem_ != nullptr; }

  /// Releases now, before the guard is destroyed.
  /// @throws InvalidStateError  the guard owns nothing (moved from, released or detached).
  /// @par Thread safety  Loop thread only.
  void release();

  /// Stops managing the acquisition; the caller must Semaphore::release() it.
  /// @return the semaphore, or nullptr if the guard owned nothing.
  Semaphore* detach() noexcept {
    Semaphore* s = sem_;
    sem_ = nullptr;
    return s;
  }

 private:
  Semaphore* sem_ = nullptr;
};

/// The awaitable that Semaphore::acquire() returns; `co_await` it for a SemaphoreGuard.
///
/// Takes a unit at once when the semaphore is not locked(); otherwise queues, FIFO.
///
/// @par Thread safety  Loop thread only.
/// @par Cancellation  Cancel-safe: a cancelled acquire throws CancelledError and holds nothing;
/// a unit already handed to it (release() and the cancel in the same loop iteration) goes back
/// to the semaphore and on to the next waiter, so value() is as if it had never waited.
class [[nodiscard]] SemaphoreAcquire {
 public:
  /// What a task dump calls this await.
  static constexpr const char* await_name = "Semaphore::acquire";
  /// An acquisition of @p sem, started when awaited; @p sem must outlive it.
  explicit SemaphoreAcquire(Semaphore& sem) noexcept : sem_(&sem) {}
  SemaphoreAcquire(const SemaphoreAcquire&) = delete;
  SemaphoreAcquire& operator=(const SemaphoreAcquire&) = delete;

  /// Takes a unit without suspending when the semaphore is not locked().
  bool await_ready() noexcept;
  /// Queues the current task. @throws InvalidStateError  not awaited from a task.
  void await_suspend(std::coroutine_handle<> h);
  /// @return the guard owning the unit.  @throws CancelledError  the task was cancelled.
  SemaphoreGuard await_resume();

 private:
  Semaphore* sem_;
  detail::Waiter waiter_;
  bool suspended_ = false;
};

/// A counter of available units (asyncio.Semaphore): acquire() takes one, waiting while none
/// is free; release() gives one back.
///
/// FIFO: while tasks wait, a newcomer queues behind them even if a unit is free. release()
/// hands the unit to the first waiter at once (value() counts it as taken).
///
/// @par Thread safety  Loop thread only: not thread-safe, as asyncio's is not.
/// @par Cancellation  Cancelling a waiting task leaves the count consistent: a unit handed to a
/// waiter that is then cancelled is given back and passed to the next waiter.
/// @par Lifetime  Must outlive its waiters and guards.
class Semaphore {
 public:
  /// A semaphore with @p value free units.
  /// @throws std::invalid_argument  @p value is negative ("... got -1").
  explicit Semaphore(std::int64_t value = 1);
  Semaphore(const Semaphore&) = delete;
  Semaphore& operator=(const Semaphore&) = delete;

  /// Takes one unit: `co_await` the result for a SemaphoreGuard. Nothing happens until awaited.
  /// @par Thread safety  Loop thread only.
  /// @par Cancellation  Cancel-safe (see SemaphoreAcquire).
  SemaphoreAcquire acquire() noexcept { return SemaphoreAcquire(*this); }

  /// Gives back one unit and wakes the first waiter. Unlike a BoundedSemaphore, a Semaphore
  /// may be released more often than acquired (the count grows).
  /// @throws InvalidStateError  a BoundedSemaphore released past its initial value.
  /// @par Thread safety  Loop thread only.
  /// @par Cancellation  Not a suspension point.
  void release();

  /// Whether acquire() would wait: no unit is free, or tasks are queued (FIFO).
  /// @par Thread safety  Loop thread only.
  bool locked() const noexcept;

  /// The number of free units (units handed to woken waiters are not free).
  /// @par Thread safety  Loop thread only.
  std::int64_t value() const noexcept { return value_; }

 protected:
  /// For BoundedSemaphore: release() refuses to go past @p bound.
  Semaphore(std::int64_t value, std::optional<std::int64_t> bound);

 private:
  friend class SemaphoreAcquire;
  /// Hands a unit to the first waiter not yet woken; false if there is none.
  bool wake_up_next();

  detail::WaiterQueue waiters_;
  std::int64_t value_;
  std::optional<std::int64_t> bound_;
};

/// A Semaphore that refuses to be released past its initial value (asyncio.BoundedSemaphore):
/// a release without a matching acquire is a bug, and it throws.
///
/// @par Thread safety  Loop thread only.
/// @par Cancellation  As Semaphore.
class BoundedSemaphore : public Semaphore {
 public:
  /// A bounded semaphore with @p value free units, which is also its bound.
  /// @throws std::invalid_argument  @p value is negative.
  explicit BoundedSemaphore(std::int64_t value = 1) : Semaphore(value, value) {}
};

}  // namespace strata
