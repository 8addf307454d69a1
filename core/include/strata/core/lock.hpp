#pragma once
/// @file
/// Lock: a mutual-exclusion lock for tasks (asyncio.Lock), with its scoped LockGuard.

#include <coroutine>

#include "strata/core/detail/waiter_queue.hpp"

namespace strata {

class Lock;

/// Owns an acquired Lock and releases it when destroyed (what `co_await lock.acquire()`
/// returns; asyncio's `async with lock:`). Movable, not copyable.
///
/// The guard does not know whether someone else released the lock meanwhile: do not mix a
/// guard with a manual Lock::release() of the same acquisition (use detach() for that).
///
/// @par Thread safety  Loop thread only.
/// @par Cancellation  Not a suspension point; destroying the guard never suspends.
class [[nodiscard]] LockGuard {
 public:
  /// An empty guard that owns nothing.
  LockGuard() noexcept = default;
  /// Takes over ownership of the acquired @p lock.
  explicit LockGuard(Lock& lock) noexcept : lock_(&lock) {}
  /// Takes over @p other's lock; @p other becomes empty.
  LockGuard(LockGuard&& other) noexcept : lock_(other.lock_) { other.lock_ = nullptr; }
  /// Releases what this guard owned, then takes over @p other's lock.
  LockGuard& operator=(LockGuard&& other) noexcept;
  LockGuard(const LockGuard&) = delete;
  LockGuard& operator=(const LockGuard&) = delete;
  /// Releases the lock if the guard still owns it and it is still locked.
  ~LockGuard();

  /// Whether the guard owns a lock.
  bool owns_lock() const noexcept { return lock_ != nullptr; }

  /// Releases the lock now, before the guard is destroyed; the first waiter is woken.
  /// @throws InvalidStateError  the guard owns nothing (moved from, unlocked or detached).
  /// @par Thread safety  Loop thread only.
  void unlock();

  /// Stops managing the lock and leaves it locked; the caller must Lock::release() it.
  /// @return the lock that was owned, or nullptr.
  /// @par Thread safety  Loop thread only.
  Lock* detach() noexcept {
    Lock* l = lock_;
    lock_ = nullptr;
    return l;
  }

 private:
  Lock* lock_ = nullptr;
};

/// The awaitable that Lock::acquire() returns; `co_await` it for a LockGuard.
///
/// Awaiting it takes the lock at once when it is free and nobody is queued (no suspension);
/// otherwise the task queues, FIFO, until the lock is handed to it.
///
/// @par Thread safety  Loop thread only.
/// @par Cancellation  Cancel-safe: a cancelled acquire throws CancelledError and holds
/// nothing. If the lock had already been handed to it (release() and the cancel in the same
/// loop iteration), the next waiter is woken instead, or the lock is left free.
class [[nodiscard]] LockAcquire {
 public:
  /// What a task dump calls this await.
  static constexpr const char* await_name = "Lock::acquire";
  /// An acquisition of @p lock, started when awaited; @p lock must outlive it.
  explicit LockAcquire(Lock& lock) noexcept : lock_(&lock) {}
  LockAcquire(const LockAcquire&) = delete;
  LockAcquire& operator=(const LockAcquire&) = delete;

  /// Takes the lock without suspending when it is free and no live waiter is queued.
  bool await_ready() noexcept;
  /// Queues the current task. @throws InvalidStateError  not awaited from a task.
  void await_suspend(std::coroutine_handle<> h);
  /// @return the guard owning the lock.  @throws CancelledError  the task was cancelled.
  LockGuard await_resume();

 private:
  Lock* lock_;
  detail::Waiter waiter_;
  bool suspended_ = false;
};

/// A mutual-exclusion lock for tasks (asyncio.Lock): not owned by a task, fair, FIFO.
///
/// `LockGuard g = co_await lock.acquire();` takes the lock, waiting when it is held; the guard
/// releases it. release() wakes the first waiter, which takes the lock when it next runs; in
/// between, locked() is false but a newcomer still queues behind the woken waiter (no barging),
/// as in asyncio 3.12.
///
/// @par Thread safety  Loop thread only: not thread-safe, as asyncio's is not.
/// @par Cancellation  Cancelling a waiting task leaves the lock consistent: a waiter cancelled
/// after the lock was passed to it passes it on to the next waiter.
/// @par Lifetime  Must outlive its waiters and guards.
class Lock {
 public:
  Lock() noexcept = default;
  Lock(const Lock&) = delete;
  Lock& operator=(const Lock&) = delete;

  /// Acquires the lock: `co_await` the result for a LockGuard. Nothing happens until awaited.
  /// @par Thread safety  Loop thread only.
  /// @par Cancellation  Cancel-safe (see LockAcquire).
  LockAcquire acquire() noexcept { return LockAcquire(*this); }

  /// Releases the lock and wakes the first waiter (it resumes on a later loop iteration).
  ///
  /// Any task may release, not only the one that acquired (asyncio's rule). Prefer the guard.
  /// @throws InvalidStateError  the lock is not locked ("Lock is not acquired").
  /// @par Thread safety  Loop thread only.
  /// @par Cancellation  Not a suspension point.
  void release();

  /// Whether the lock is held.
  /// @par Thread safety  Loop thread only.
  bool locked() const noexcept { return locked_; }

 private:
  friend class LockAcquire;
  /// Free, and every queued waiter is being cancelled: a newcomer may take it at once.
  bool can_take_now() const noexcept;
  /// Wakes the first waiter, unless it is done already (woken or being cancelled).
  void wake_up_first();

  detail::WaiterQueue waiters_;
  bool locked_ = false;
};

}  // namespace strata
