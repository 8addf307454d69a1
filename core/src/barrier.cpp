#include "strata/core/barrier.hpp"

#include <exception>
#include <stdexcept>
#include <string>

#include "strata/core/errors.hpp"
#include "strata/core/lock.hpp"

namespace strata {

Barrier::Barrier(std::int64_t parties) : parties_(parties) {
  if (parties < 1) {
    throw std::invalid_argument("Barrier parties must be > 0, got " + std::to_string(parties));
  }
}

Coro<std::int64_t> Barrier::wait() {
  LockGuard guard = co_await cond_.acquire();
  co_await block();
  const std::int64_t index = count_++;
  std::exception_ptr error;
  try {
    if (index + 1 == parties_) {
      release_all();
    } else {
      co_await wait_released();
    }
  } catch (...) {
    error = std::current_exception();
  }
  --count_;
  leave();
  if (error) std::rethrow_exception(error);
  co_return index;
}

Coro<void> Barrier::block() {
  auto ready = [this] { return state_ != State::draining && state_ != State::resetting; };
  co_await cond_.wait_for(ready);
  if (state_ == State::broken) throw BrokenBarrierError("Barrier aborted");
}

void Barrier::release_all() {
  state_ = State::draining;
  cond_.notify_all();
}

Coro<void> Barrier::wait_released() {
  auto released = [this] { return state_ != State::filling; };
  co_await cond_.wait_for(released);
  if (state_ == State::broken || state_ == State::resetting) {
    throw BrokenBarrierError("Barrier aborted or reset while waiting");
  }
}

void Barrier::leave() {
  if (count_ == 0) {
    if (state_ == State::resetting || state_ == State::draining) state_ = State::filling;
    cond_.notify_all();
  }
}

Coro<void> Barrier::reset() {
  LockGuard guard = co_await cond_.acquire();
  if (count_ > 0) {
    state_ = State::resetting;
  } else {
    state_ = State::filling;
  }
  cond_.notify_all();
}

Coro<void> Barrier::abort() {
  LockGuard guard = co_await cond_.acquire();
  state_ = State::broken;
  cond_.notify_all();
}

}  // namespace strata
