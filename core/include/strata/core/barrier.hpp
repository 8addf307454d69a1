#pragma once
/// @file
/// Barrier: lets a fixed number of tasks wait for each other (asyncio.Barrier).

#include <cstdint>

#include "strata/core/condition.hpp"
#include "strata/core/coro.hpp"

namespace strata {

/// Lets parties() tasks wait until all of them have arrived (asyncio.Barrier).
///
/// A cycle fills until the last party arrives, then drains: every waiting task returns, and
/// newcomers wait until the draining is over before they count towards the next cycle.
/// abort() breaks the barrier for good; reset() breaks only the current cycle.
///
/// @par Thread safety  Loop thread only: not thread-safe, as asyncio's is not.
/// @par Cancellation  A task cancelled while waiting leaves the cycle (n_waiting() drops by
/// one) and the barrier stays usable; the others keep waiting (asyncio's semantics).
/// @par Lifetime  Must outlive its waiters.
class Barrier {
 public:
  /// A barrier for @p parties tasks.
  /// @throws std::invalid_argument  @p parties < 1 ("... got 0").
  explicit Barrier(std::int64_t parties);
  Barrier(const Barrier&) = delete;
  Barrier& operator=(const Barrier&) = delete;

  /// Waits until parties() tasks are waiting, then returns for all of them. Waits first if
  /// the barrier is draining or resetting.
  /// @return the arrival index, 0 for the first task to arrive and parties() - 1 for the last.
  /// @throws BrokenBarrierError  the barrier is broken (abort()), or was reset or aborted
  /// while this task waited.
  /// @par Thread safety  Loop thread only.
  /// @par Cancellation  Cancel-safe: a cancelled waiter leaves the cycle and counts no more.
  /// Cancelled in the loop iteration the barrier passes (after it was released, before it
  /// resumed), it throws CancelledError; the pass stands for the others, and the barrier is
  /// ready for the next cycle.
  Coro<std::int64_t> wait();

  /// Returns the barrier to its empty state; tasks waiting in it get BrokenBarrierError.
  /// A coroutine, as asyncio's: it takes the barrier's internal lock.
  /// @par Thread safety  Loop thread only.
  /// @par Cancellation  Cancel-safe: cancelled before it takes the lock, it changes nothing.
  Coro<void> reset();

  /// Breaks the barrier: waiting and later wait()s throw BrokenBarrierError until reset().
  /// A coroutine, as asyncio's: it takes the barrier's internal lock.
  /// @par Thread safety  Loop thread only.
  /// @par Cancellation  Cancel-safe: cancelled before it takes the lock, it changes nothing.
  Coro<void> abort();

  /// The number of tasks it takes to pass the barrier.
  std::int64_t parties() const noexcept { return parties_; }

  /// The number of tasks waiting in the current filling cycle (0 while draining).
  std::int64_t n_waiting() const noexcept { return state_ == State::filling ? count_ : 0; }

  /// Whether the barrier is broken (aborted and not reset).
  bool broken() const noexcept { return state_ == State::broken; }

 private:
  enum class State : std::uint8_t { filling, draining, resetting, broken };

  /// Waits while the barrier drains or resets; throws BrokenBarrierError if it is broken.
  Coro<void> block();
  /// The last party arrived: release every waiter.
  void release_all();
  /// Waits in the barrier until released; throws if reset or aborted meanwhile.
  Coro<void> wait_released();
  /// A task leaves: the last to leave ends the draining or resetting.
  void leave();

  Condition cond_;
  std::int64_t parties_;
  std::int64_t count_ = 0;
  State state_ = State::filling;
};

}  // namespace strata
