#pragma once
// The loop's pending timers: a 4-ary min-heap on the deadline, each timer knowing its slot so
// that cancel() removes it at once in O(log n). Cancelled timers therefore never pile up (no
// lazy deletion, no compaction pass), and a heap entry is 16 bytes.

#include <cstdint>
#include <optional>
#include <vector>

#include "strata/core/detail/assert.hpp"
#include "strata/core/handle.hpp"

namespace strata::detail {

class TimerQueue {
 public:
  bool empty() const noexcept { return heap_.empty(); }
  std::size_t size() const noexcept { return heap_.size(); }

  /// Adds @p timer; the queue holds the reference the caller passes in.
  void push(TimerHandleImpl* timer);

  /// Removes @p timer from anywhere in the queue and returns the queue's reference to the caller.
  void remove(TimerHandleImpl* timer) noexcept;

  /// The earliest deadline, if any.
  std::optional<TimePoint> next_deadline() const noexcept {
    if (heap_.empty()) return std::nullopt;
    return TimePoint(Duration(heap_.front().when));
  }

  /// Removes and returns the earliest timer if it is due at @p now; else nullptr.
  TimerHandleImpl* pop_due(TimePoint now) noexcept;

  /// Removes every timer, handing each to @p f (which takes over the queue's reference).
  template <class F>
  void clear(F&& f) {
    auto heap = std::move(heap_);
    heap_.clear();
    for (auto& e : heap) {
      e.timer->queue_index_ = TimerHandleImpl::not_queued;
      f(e.timer);
    }
  }

 private:
  struct Entry {
    Duration::rep when;  // nanoseconds on the loop's clock; ties broken by sequence
    TimerHandleImpl* timer;
  };
  static constexpr std::size_t arity = 4;

  static bool before(const Entry& a, const Entry& b) noexcept {
    // Sequences wrap; their difference orders two timers of one deadline correctly unless
    // 2^31 timers were scheduled between them.
    return a.when < b.when ||
           (a.when == b.when &&
            static_cast<std::int32_t>(a.timer->sequence_ - b.timer->sequence_) < 0);
  }
  void place(std::size_t i, Entry e) noexcept {
    heap_[i] = e;
    e.timer->queue_index_ = static_cast<std::uint32_t>(i);
  }
  void sift_up(std::size_t i, Entry e) noexcept;
  void sift_down(std::size_t i, Entry e) noexcept;

  std::vector<Entry> heap_;
  std::uint32_t next_sequence_ = 0;
};

}  // namespace strata::detail
