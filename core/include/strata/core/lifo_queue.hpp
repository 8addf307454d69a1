#pragma once
/// @file
/// LifoQueue<T>: a last-in, first-out queue for coroutines (asyncio.LifoQueue).

#include <cstddef>
#include <utility>
#include <vector>

#include "strata/core/queue.hpp"

namespace strata {

namespace detail {

/// The storage policy of LifoQueue: a stack on a vector.
template <class T>
class StackStore {
 public:
  void push(T&& item) { items_.push_back(std::move(item)); }
  T pop() {
    T item = std::move(items_.back());
    items_.pop_back();
    return item;
  }
  std::size_t size() const noexcept { return items_.size(); }

 private:
  std::vector<T> items_;
};

}  // namespace detail

/// A last-in, first-out queue for coroutines (asyncio.LifoQueue): get() returns the item put
/// most recently.
///
/// The interface and every contract are Queue's (put, get, the _nowait forms, task_done,
/// join, shutdown); only the order in which items come out differs. Blocked getters and
/// putters are still served oldest first.
///
/// @tparam T  the item type; movable.
/// @par Thread safety  Loop thread only: not thread-safe, as asyncio's queues are not.
/// @par Cancellation  As Queue's: get(), put() and join() are cancel-safe and lose no item.
/// @par Lifetime  Must outlive every put(), get() and join() coroutine made from it.
template <class T>
class LifoQueue : public detail::BasicQueue<T, detail::StackStore<T>> {
 public:
  /// A queue holding at most @p maxsize items; 0 (the default) means unbounded.
  explicit LifoQueue(std::size_t maxsize = 0)
      : detail::BasicQueue<T, detail::StackStore<T>>(maxsize) {}
};

}  // namespace strata
