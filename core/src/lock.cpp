#include "strata/core/lock.hpp"

#include <utility>

#include "strata/core/detail/assert.hpp"
#include "strata/core/errors.hpp"

namespace strata {

LockGuard& LockGuard::operator=(LockGuard&& other) noexcept {
  if (this != &other) {
    LockGuard old(std::move(*this));
    lock_ = std::exchange(other.lock_, nullptr);
  }
  return *this;
}

LockGuard::~LockGuard() {
  if (lock_ && lock_->locked()) lock_->release();
}

void LockGuard::unlock() {
  if (!lock_) throw InvalidStateError("LockGuard::unlock(): the guard does not own a lock");
  std::exchange(lock_, nullptr)->release();
}

bool LockAcquire::await_ready() noexcept {
  if (!lock_->can_take_now()) return false;
  lock_->locked_ = true;
  return true;
}

void LockAcquire::await_suspend(std::coroutine_handle<> h) {
  lock_->waiters_.suspend(waiter_, h);
  suspended_ = true;
}

LockGuard LockAcquire::await_resume() {
  if (!suspended_) return LockGuard(*lock_);
  try {
    lock_->waiters_.resume(waiter_);
  } catch (const CancelledError&) {
    // Keep the invariant: if the lock is free (possibly because it was passed to us), make
    // sure the first waiter runs.
    if (!lock_->locked_) lock_->wake_up_first();
    throw;
  }
  STRATA_ASSERT(!lock_->locked_);
  lock_->locked_ = true;
  return LockGuard(*lock_);
}

bool Lock::can_take_now() const noexcept {
  if (locked_) return false;
  for (detail::Waiter* w = waiters_.front(); w; w = detail::WaiterQueue::next(*w)) {
    if (!w->cancelled()) return false;
  }
  return true;
}

void Lock::release() {
  if (!locked_) throw InvalidStateError("Lock::release(): the lock is not acquired");
  locked_ = false;
  wake_up_first();
}

void Lock::wake_up_first() {
  detail::Waiter* first = waiters_.front();
  if (first && !first->done()) first->wake();
}

}  // namespace strata
