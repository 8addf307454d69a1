#include "strata/core/semaphore.hpp"

#include <stdexcept>
#include <string>
#include <utility>

#include "strata/core/errors.hpp"

namespace strata {

SemaphoreGuard& SemaphoreGuard::operator=(SemaphoreGuard&& other) noexcept {
  if (this != &other) {
    SemaphoreGuard old(std::move(*this));
    sem_ = std::exchange(other.sem_, nullptr);
  }
  return *this;
}

SemaphoreGuard::~SemaphoreGuard() {
  if (!sem_) return;
  try {
    sem_->release();
  } catch (const InvalidStateError&) {
    // A BoundedSemaphore released by hand as well: the unit is back already.
  }
}

void SemaphoreGuard::release() {
  if (!sem_) throw InvalidStateError("SemaphoreGuard::release(): the guard owns nothing");
  std::exchange(sem_, nullptr)->release();
}

bool SemaphoreAcquire::await_ready() noexcept {
  if (sem_->locked()) return false;
  --sem_->value_;
  return true;
}

void SemaphoreAcquire::await_suspend(std::coroutine_handle<> h) {
  sem_->waiters_.suspend(waiter_, h);
  suspended_ = true;
}

SemaphoreGuard SemaphoreAcquire::await_resume() {
  if (!suspended_) return SemaphoreGuard(*sem_);
  try {
    sem_->waiters_.resume(waiter_);
  } catch (const CancelledError&) {
    // Woken (a unit was handed to us) but cancelled before running: give the unit back.
    if (waiter_.woken()) ++sem_->value_;
    while (sem_->value_ > 0 && sem_->wake_up_next()) {
    }
    throw;
  }
  // Waiters that arrived meanwhile had to queue (FIFO): wake as many as there are units.
  while (sem_->value_ > 0 && sem_->wake_up_next()) {
  }
  return SemaphoreGuard(*sem_);
}

Semaphore::Semaphore(std::int64_t value) : Semaphore(value, std::nullopt) {}

Semaphore::Semaphore(std::int64_t value, std::optional<std::int64_t> bound)
    : value_(value), bound_(bound) {
  if (value < 0) {
    throw std::invalid_argument("Semaphore initial value must be >= 0, got " +
                                std::to_string(value));
  }
}

void Semaphore::release() {
  if (bound_ && value_ >= *bound_) {
    throw InvalidStateError("BoundedSemaphore released too many times (bound " +
                            std::to_string(*bound_) + ")");
  }
  ++value_;
  wake_up_next();
}

bool Semaphore::locked() const noexcept {
  if (value_ == 0) return true;
  for (detail::Waiter* w = waiters_.front(); w; w = detail::WaiterQueue::next(*w)) {
    if (!w->cancelled()) return true;
  }
  return false;
}

bool Semaphore::wake_up_next() {
  for (detail::Waiter* w = waiters_.front(); w; w = detail::WaiterQueue::next(*w)) {
    if (!w->done()) {
      --value_;
      w->wake();
      return true;
    }
  }
  return false;
}

}  // namespace strata
