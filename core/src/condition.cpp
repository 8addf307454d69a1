#include "strata/core/condition.hpp"

#include <coroutine>
#include <exception>

#include "strata/core/errors.hpp"

namespace strata {

namespace {

/// Suspends the current task in @p queue until woken; throws CancelledError if cancelled.
class NotifyWait {
 public:
  explicit NotifyWait(detail::WaiterQueue& queue) noexcept : queue_(&queue) {}
  bool await_ready() const noexcept { return false; }
  void await_suspend(std::coroutine_handle<> h) { queue_->suspend(waiter_, h); }
  void await_resume() { queue_->resume(waiter_); }

 private:
  detail::WaiterQueue* queue_;
  detail::Waiter waiter_;
};

}  // namespace

Coro<void> Condition::wait() {
  if (!lock_->locked()) {
    throw InvalidStateError("Condition::wait(): the lock is not acquired; co_await acquire() first");
  }
  lock_->release();
  std::exception_ptr error;
  try {
    NotifyWait notified(waiters_);
    co_await notified;
  } catch (...) {
    error = std::current_exception();
  }
  // Re-acquire the lock even when cancelled: the caller's lock discipline depends on it.
  for (;;) {
    try {
      LockAcquire acquiring(*lock_);
      LockGuard guard = co_await acquiring;
      guard.detach();
      break;
    } catch (const CancelledError&) {
      error = std::current_exception();
    }
  }
  if (error) {
    // We may have been notified before the error: pass the notification on (Python 3.13).
    wake(1);
    std::rethrow_exception(error);
  }
}

void Condition::notify(std::size_t n) {
  if (!lock_->locked()) {
    throw InvalidStateError("Condition::notify(): the lock is not acquired; co_await acquire() first");
  }
  wake(n);
}

void Condition::notify_all() {
  if (!lock_->locked()) {
    throw InvalidStateError(
        "Condition::notify_all(): the lock is not acquired; co_await acquire() first");
  }
  wake(waiters_.size());
}

void Condition::wake(std::size_t n) {
  std::size_t woken = 0;
  for (detail::Waiter* w = waiters_.front(); w && woken < n; w = detail::WaiterQueue::next(*w)) {
    if (!w->done()) {
      ++woken;
      w->wake();
    }
  }
}

}  // namespace strata
