#pragma once
/// @file
/// Condition: a condition variable for tasks (asyncio.Condition).

#include <cstddef>
#include <optional>
#include <type_traits>

#include "strata/core/coro.hpp"
#include "strata/core/detail/waiter_queue.hpp"
#include "strata/core/lock.hpp"

namespace strata {

/// A condition variable for tasks (asyncio.Condition): tasks holding its lock wait() to be
/// notified, and re-acquire the lock before wait() returns.
///
/// It owns a Lock, or shares one given to the constructor (several conditions may share a
/// lock). acquire(), release() and locked() are the lock's.
///
/// @par Thread safety  Loop thread only: not thread-safe, as asyncio's is not.
/// @par Cancellation  A waiter cancelled while waiting still re-acquires the lock before
/// CancelledError leaves wait(); a notification it had received is passed on to another
/// waiter (a spurious wake-up at worst, never a lost one).
/// @par Lifetime  Must outlive its waiters; a shared Lock must outlive the Condition.
class Condition {
 public:
  /// A condition with its own Lock.
  Condition() : own_lock_(std::in_place), lock_(&*own_lock_) {}
  /// A condition sharing @p lock, which must outlive it.
  explicit Condition(Lock& lock) noexcept : lock_(&lock) {}
  Condition(const Condition&) = delete;
  Condition& operator=(const Condition&) = delete;

  /// Acquires the underlying lock: `LockGuard g = co_await cond.acquire();`.
  /// @par Thread safety  Loop thread only.
  /// @par Cancellation  Cancel-safe (see LockAcquire).
  LockAcquire acquire() noexcept { return lock_->acquire(); }

  /// Releases the underlying lock. @throws InvalidStateError  it is not locked.
  /// @par Thread safety  Loop thread only.
  /// @par Cancellation  Not a suspension point.
  void release() { lock_->release(); }

  /// Whether the underlying lock is held.
  /// @par Thread safety  Loop thread only.
  bool locked() const noexcept { return lock_->locked(); }

  /// The underlying lock.
  Lock& lock() const noexcept { return *lock_; }

  /// Releases the lock, waits until notified, then re-acquires the lock (FIFO with other
  /// acquirers) and returns. The caller must hold the lock; it holds it again afterwards,
  /// whatever happens, so a LockGuard taken before stays valid.
  ///
  /// @throws InvalidStateError  the lock is not held (thrown at the co_await; nothing changes).
  /// @throws CancelledError  the task was cancelled; the lock is re-acquired first.
  /// @par Thread safety  Loop thread only.
  /// @par Cancellation  Cancel-safe: the lock is held again when CancelledError leaves
  /// (asyncio's rule: a cancel during the re-acquire is remembered, the re-acquire retried, and
  /// the most recent CancelledError rethrown). A notification this waiter received, also one
  /// that came in the loop iteration of the cancel, is passed on to the next waiter (as Python
  /// 3.13 does; 3.12 could lose it).
  Coro<void> wait();

  /// Waits until @p predicate() is true: evaluates it, then wait()s and re-evaluates until it
  /// is. The caller must hold the lock; @p predicate runs with the lock held.
  /// @return the final (true) value of the predicate.
  /// @throws InvalidStateError  the lock is not held and the predicate is false.
  /// @par Thread safety  Loop thread only.
  /// @par Cancellation  As wait(): the lock is held when CancelledError leaves.
  template <class Predicate>
    requires std::is_invocable_v<Predicate&>
  Coro<std::decay_t<std::invoke_result_t<Predicate&>>> wait_for(Predicate predicate) {
    auto result = predicate();
    while (!result) {
      co_await wait();
      result = predicate();
    }
    co_return result;
  }

  /// Wakes up to @p n tasks waiting on this condition (each returns from wait() once it has
  /// re-acquired the lock, so after the caller releases it). No-op without waiters.
  /// @throws InvalidStateError  the lock is not held.
  /// @par Thread safety  Loop thread only.
  /// @par Cancellation  Not a suspension point.
  void notify(std::size_t n = 1);

  /// Wakes every task waiting on this condition.
  /// @throws InvalidStateError  the lock is not held.
  /// @par Thread safety  Loop thread only.
  /// @par Cancellation  Not a suspension point.
  void notify_all();

 private:
  void wake(std::size_t n);

  std::optional<Lock> own_lock_;
  Lock* lock_;
  detail::WaiterQueue waiters_;
};

}  // namespace strata
