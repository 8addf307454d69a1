#pragma once
// A FIFO of trivially copyable items in one growable power-of-two ring: no allocation in the
// steady state, unlike std::deque's chunk churn.

#include <cstddef>
#include <memory>
#include <type_traits>

#include "strata/core/detail/assert.hpp"

namespace strata::detail {

template <class T>
class RingQueue {
  static_assert(std::is_trivially_copyable_v<T>);

 public:
  bool empty() const noexcept { return head_ == tail_; }
  std::size_t size() const noexcept { return tail_ - head_; }

  void push_back(T item) {
    if (size() == capacity_) [[unlikely]] {
      grow_and_push(item);  // (a call that ends push_back(): a caller that ends with it saves
      return;               // no registers for it)
    }
    items_[tail_++ & (capacity_ - 1)] = item;
  }

  T pop_front() noexcept {
    STRATA_ASSERT(!empty());
    return items_[head_++ & (capacity_ - 1)];
  }

 private:
  // Out of line: an inlined copy loop would make every caller of push_back() save registers.
  [[gnu::noinline]] void grow_and_push(T item) {
    grow();
    items_[tail_++ & (capacity_ - 1)] = item;
  }
  void grow() {
    std::size_t next = capacity_ ? capacity_ * 2 : 64;
    auto fresh = std::make_unique<T[]>(next);
    std::size_t n = size();
    for (std::size_t i = 0; i < n; ++i) fresh[i] = items_[(head_ + i) & (capacity_ - 1)];
    items_ = std::move(fresh);
    capacity_ = next;
    head_ = 0;
    tail_ = n;
  }

  std::unique_ptr<T[]> items_;
  std::size_t capacity_ = 0;
  std::size_t head_ = 0;  // monotonically increasing; masked on access
  std::size_t tail_ = 0;
};

}  // namespace strata::detail
