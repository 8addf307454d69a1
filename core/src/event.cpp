#include "strata/core/event.hpp"

namespace strata {

bool EventWait::await_ready() const noexcept { return event_->value_; }

void EventWait::await_suspend(std::coroutine_handle<> h) {
  event_->waiters_.suspend(waiter_, h);
  suspended_ = true;
}

void EventWait::await_resume() {
  if (suspended_) event_->waiters_.resume(waiter_);
}

void Event::set() {
  if (value_) return;
  value_ = true;
  for (detail::Waiter* w = waiters_.front(); w; w = detail::WaiterQueue::next(*w)) {
    if (!w->done()) w->wake();
  }
}

}  // namespace strata
