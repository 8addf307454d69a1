#pragma once
// The loop's pending timers: a 4-ary min-heap of (deadline, timer) entries, 16 bytes each.
//
// Cancellation is lazy, with two cheap exceptions: a cancelled timer at the end of the heap
// (the usual call_later-then-cancel of a timeout that did not fire) or at its top is removed
// at once. Others stay in place, flagged, until they reach the top or until cancelled timers
// make up half the heap, when one linear pass removes them all and rebuilds the heap. So
// cancel() is O(1) and touches no other timer (an eager O(log n) removal would touch one
// timer object per level, a cache miss each at a million timers), and cancelled timers never
// hold more than half the queue. Their callbacks are released by cancel() itself.

#include <cstdint>
#include <optional>
#include <vector>

#include "strata/core/detail/assert.hpp"
#include "strata/core/handle.hpp"

namespace strata::detail {

class TimerQueue {
 public:
  TimerQueue() = default;
  TimerQueue(const TimerQueue&) = delete;
  TimerQueue& operator=(const TimerQueue&) = delete;

  /// Timers that are queued and not cancelled.
  std::size_t live_size() const noexcept { return heap_.size() - cancelled_; }
  bool empty() const noexcept { return live_size() == 0; }

  /// Adds @p timer; the queue holds the reference the caller passes in.
  void push(TimerHandleImpl* timer);

  /// @p timer, which is queued, was just cancelled.
  void cancelled(TimerHandleImpl* timer) noexcept;

  /// The earliest deadline of a live timer, if any.
  std::optional<TimePoint> next_deadline() noexcept {
    drop_cancelled_top();
    if (heap_.empty()) return std::nullopt;
    return TimePoint(Duration(heap_.front().when));
  }

  /// Removes and returns the earliest live timer if it is due at @p now, else nullptr; the
  /// caller takes over the queue's reference.
  TimerHandleImpl* pop_due(TimePoint now) noexcept;

  /// Removes every timer, handing each to @p f (which takes over the queue's reference).
  template <class F>
  void clear(F&& f) {
    auto heap = std::move(heap_);
    heap_.clear();
    cancelled_ = 0;
    for (auto& e : heap) {
      e.timer->queued_ = false;
      f(e.timer);
    }
  }

 private:
  struct Entry {
    Duration::rep when;  // nanoseconds on the loop's clock; ties broken by sequence
    TimerHandleImpl* timer;
  };
  static constexpr std::size_t arity = 4;
  static constexpr std::size_t compact_floor = 64;  // below this, compaction is not worth it

  static bool before(const Entry& a, const Entry& b) noexcept {
    // Sequences wrap; their difference orders two timers of one deadline correctly unless
    // 2^31 timers were scheduled between them.
    return a.when < b.when ||
           (a.when == b.when &&
            static_cast<std::int32_t>(a.timer->sequence_ - b.timer->sequence_) < 0);
  }
  void sift_up(std::size_t i, Entry e) noexcept;
  void sift_down(std::size_t i, Entry e) noexcept;
  /// Removes the top entry and returns its timer (the queue's reference goes with it).
  TimerHandleImpl* pop_top() noexcept;
  void drop_cancelled_top() noexcept;
  void compact() noexcept;

  std::vector<Entry> heap_;
  std::size_t cancelled_ = 0;  // cancelled timers still in heap_
  std::uint32_t next_sequence_ = 0;
};

}  // namespace strata::detail
