#include "timer_queue.hpp"

#include <algorithm>

namespace strata::detail {

void TimerQueue::push(TimerHandleImpl* timer) {
  timer->sequence_ = next_sequence_++;
  timer->queued_ = true;
  heap_.emplace_back();
  sift_up(heap_.size() - 1, Entry{timer->when().time_since_epoch().count(), timer});
}

void TimerQueue::cancelled(TimerHandleImpl* timer) noexcept {
  STRATA_ASSERT(timer->queued_ && timer->cancelled());
  if (heap_.back().timer == timer) {  // the newest deadline: nothing to re-sort
    heap_.pop_back();
    timer->queued_ = false;
    timer->release();
    return;
  }
  ++cancelled_;
  if (heap_.front().timer == timer) {
    drop_cancelled_top();
  } else if (cancelled_ >= compact_floor && cancelled_ * 2 >= heap_.size()) {
    compact();
  }
}

TimerHandleImpl* TimerQueue::pop_due(TimePoint now) noexcept {
  drop_cancelled_top();
  if (heap_.empty() || heap_.front().when > now.time_since_epoch().count()) return nullptr;
  return pop_top();
}

TimerHandleImpl* TimerQueue::pop_top() noexcept {
  TimerHandleImpl* timer = heap_.front().timer;
  timer->queued_ = false;
  Entry last = heap_.back();
  heap_.pop_back();
  if (!heap_.empty()) sift_down(0, last);
  return timer;
}

void TimerQueue::drop_cancelled_top() noexcept {
  while (!heap_.empty() && heap_.front().timer->cancelled()) {
    --cancelled_;
    pop_top()->release();
  }
}

void TimerQueue::compact() noexcept {
  auto live_end = std::partition(heap_.begin(), heap_.end(),
                                 [](const Entry& e) { return !e.timer->cancelled(); });
  for (auto it = live_end; it != heap_.end(); ++it) {
    it->timer->queued_ = false;
    it->timer->release();
  }
  heap_.erase(live_end, heap_.end());
  cancelled_ = 0;
  // Floyd's heap construction: sift down every inner node, last first.
  if (heap_.size() > 1) {
    for (std::size_t i = (heap_.size() - 2) / arity + 1; i-- > 0;) sift_down(i, heap_[i]);
  }
}

void TimerQueue::sift_up(std::size_t i, Entry e) noexcept {
  while (i > 0) {
    std::size_t parent = (i - 1) / arity;
    if (!before(e, heap_[parent])) break;
    heap_[i] = heap_[parent];
    i = parent;
  }
  heap_[i] = e;
}

void TimerQueue::sift_down(std::size_t i, Entry e) noexcept {
  const std::size_t n = heap_.size();
  for (;;) {
    std::size_t first = i * arity + 1;
    if (first >= n) break;
    std::size_t last = first + arity < n ? first + arity : n;
    std::size_t best = first;
    for (std::size_t c = first + 1; c < last; ++c) {
      if (before(heap_[c], heap_[best])) best = c;
    }
    if (!before(heap_[best], e)) break;
    heap_[i] = heap_[best];
    i = best;
  }
  heap_[i] = e;
}

}  // namespace strata::detail
