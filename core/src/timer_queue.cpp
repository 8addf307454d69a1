#include "timer_queue.hpp"

namespace strata::detail {

void TimerQueue::push(TimerHandleImpl* timer) {
  timer->sequence_ = next_sequence_++;
  heap_.emplace_back();
  sift_up(heap_.size() - 1, Entry{timer->when().time_since_epoch().count(), timer});
}

void TimerQueue::remove(TimerHandleImpl* timer) noexcept {
  std::size_t i = timer->queue_index_;
  STRATA_ASSERT(i < heap_.size() && heap_[i].timer == timer);
  timer->queue_index_ = TimerHandleImpl::not_queued;
  Entry last = heap_.back();
  heap_.pop_back();
  if (i == heap_.size()) return;  // it was the last entry
  if (i > 0 && before(last, heap_[(i - 1) / arity])) {
    sift_up(i, last);
  } else {
    sift_down(i, last);
  }
}

TimerHandleImpl* TimerQueue::pop_due(TimePoint now) noexcept {
  if (heap_.empty() || heap_.front().when > now.time_since_epoch().count()) return nullptr;
  TimerHandleImpl* timer = heap_.front().timer;
  remove(timer);
  return timer;
}

void TimerQueue::sift_up(std::size_t i, Entry e) noexcept {
  while (i > 0) {
    std::size_t parent = (i - 1) / arity;
    if (!before(e, heap_[parent])) break;
    place(i, heap_[parent]);
    i = parent;
  }
  place(i, e);
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
    place(i, heap_[best]);
    i = best;
  }
  place(i, e);
}

}  // namespace strata::detail
