#include "strata/core/timeout.hpp"

namespace strata::detail {

TimeoutScope::TimeoutScope(std::optional<TimePoint> when) : task_(TaskCore::current()) {
  if (!task_) throw InvalidStateError("timeout() used outside a Task");
  cancelling_at_entry_ = task_.cancelling();
  if (when) {
    timer_ = task_.future().loop().call_at(*when, [this] { expire(); });
  }
}

void TimeoutScope::expire() {
  if (state_ != State::active) return;
  state_ = State::expiring;
  task_.cancel();
}

bool TimeoutScope::exit(bool leaving_with_cancelled_error) noexcept {
  timer_.cancel();
  if (state_ == State::expiring) {
    state_ = State::done;
    return task_.uncancel() <= cancelling_at_entry_ && leaving_with_cancelled_error;
  }
  state_ = State::done;
  return false;
}

}  // namespace strata::detail
