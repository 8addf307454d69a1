#pragma once
/// @file
/// PriorityQueue<T, Compare>: a queue for coroutines that hands out its smallest item first
/// (asyncio.PriorityQueue).

#include <algorithm>
#include <cstddef>
#include <functional>
#include <utility>
#include <vector>

#include "strata/core/queue.hpp"

namespace strata {

namespace detail {

/// The storage policy of PriorityQueue: a binary heap whose top is the smallest item under
/// @p Compare (heapq's order; std::push_heap keeps the largest on top, hence the swapped
/// arguments).
template <class T, class Compare>
class HeapStore {
 public:
  explicit HeapStore(Compare compare = Compare()) : compare_(std::move(compare)) {}

  void push(T&& item) {
    items_.push_back(std::move(item));
    std::push_heap(items_.begin(), items_.end(), Greater{&compare_});
  }
  T pop() {
    std::pop_heap(items_.begin(), items_.end(), Greater{&compare_});
    T item = std::move(items_.back());
    items_.pop_back();
    return item;
  }
  std::size_t size() const noexcept { return items_.size(); }

 private:
  struct Greater {
    Compare* compare;
    bool operator()(const T& a, const T& b) const { return (*compare)(b, a); }
  };

  std::vector<T> items_;
  Compare compare_;
};

}  // namespace detail

/// A queue for coroutines that hands out the smallest item first (asyncio.PriorityQueue).
///
/// The interface and every contract are Queue's (put, get, the _nowait forms, task_done,
/// join, shutdown); only the order differs: get() returns the item that is smallest under
/// @p Compare, as heapq does. Items that compare equal come out in no particular order: to
/// keep insertion order among equal priorities, put (priority, sequence number, data) tuples,
/// as asyncio's documentation advises.
///
/// @tparam T  the item type; movable.
/// @tparam Compare  a strict weak order on T, `std::less<T>` by default (smallest first);
/// `std::greater<T>` gives largest first.
/// @par Thread safety  Loop thread only: not thread-safe, as asyncio's queues are not.
/// @par Cancellation  As Queue's: get(), put() and join() are cancel-safe and lose no item.
/// @par Lifetime  Must outlive every put(), get() and join() coroutine made from it.
template <class T, class Compare = std::less<T>>
class PriorityQueue : public detail::BasicQueue<T, detail::HeapStore<T, Compare>> {
 public:
  /// A queue holding at most @p maxsize items (0, the default, means unbounded), ordered by
  /// @p compare.
  explicit PriorityQueue(std::size_t maxsize = 0, Compare compare = Compare())
      : detail::BasicQueue<T, detail::HeapStore<T, Compare>>(
            maxsize, detail::HeapStore<T, Compare>(std::move(compare))) {}
};

}  // namespace strata
