#pragma once
/// @file
/// Queue<T>: a first-in, first-out queue for coroutines (asyncio.Queue), the exceptions that
/// every queue throws, and the machinery that PriorityQueue and LifoQueue share with it.

#include <algorithm>
#include <coroutine>
#include <cstddef>
#include <deque>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>

#include "strata/core/coro.hpp"
#include "strata/core/detail/waiter_queue.hpp"
#include "strata/core/errors.hpp"
#include "strata/core/event_loop.hpp"

namespace strata {

/// Thrown by get_nowait() on an empty queue that is not shut down (asyncio.QueueEmpty).
class QueueEmpty : public std::runtime_error {
 public:
  /// With a message that says what to do instead.
  QueueEmpty() : std::runtime_error("get_nowait() on an empty queue: co_await get() to wait") {}
  /// With the message @p what.
  using std::runtime_error::runtime_error;
};

/// Thrown by put_nowait() on a full queue (asyncio.QueueFull).
class QueueFull : public std::runtime_error {
 public:
  /// With a message that says what to do instead.
  QueueFull() : std::runtime_error("put_nowait() on a full queue: co_await put() to wait") {}
  /// With the message @p what.
  using std::runtime_error::runtime_error;
};

/// Thrown by a queue that was shut down (asyncio.QueueShutDown): by every put, and by get once
/// the queue is empty.
class QueueShutDown : public std::runtime_error {
 public:
  /// With a message that says what to do instead.
  QueueShutDown() : std::runtime_error("the queue is shut down") {}
  /// With the message @p what.
  using std::runtime_error::runtime_error;
};

namespace detail {

/// The storage policy of Queue: a deque, first in first out.
template <class T>
class FifoStore {
 public:
  void push(T&& item) { items_.push_back(std::move(item)); }
  T pop() {
    T item = std::move(items_.front());
    items_.pop_front();
    return item;
  }
  std::size_t size() const noexcept { return items_.size(); }

 private:
  std::deque<T> items_;
};

/// asyncio.Queue parameterised by its storage (asyncio's _init/_put/_get overrides): what
/// Queue, PriorityQueue and LifoQueue share. @p Store has push(T&&), T pop() (called only when
/// not empty) and size().
///
/// Blocked coroutines wait in FIFO WaiterQueues, as asyncio's _getters and _putters deques of
/// futures (their tasks parked on the queue's nodes: no future allocated per wait); a put wakes
/// the oldest getter, a get wakes the oldest putter.
template <class T, class Store>
class BasicQueue {
 public:
  static_assert(std::is_move_constructible_v<T>, "a queue's items must be movable");
  using value_type = T;

  /// A queue holding at most @p maxsize items; 0 means unbounded.
  ///
  /// The queue binds itself to the running loop the first time a coroutine has to wait on it.
  /// @par Thread safety  Loop thread only.
  explicit BasicQueue(std::size_t maxsize = 0, Store store = Store())
      : store_(std::move(store)), maxsize_(maxsize) {}

  /// Waiting coroutines hold a pointer to the queue: it neither copies nor moves.
  BasicQueue(const BasicQueue&) = delete;
  BasicQueue& operator=(const BasicQueue&) = delete;

  /// The number of items in the queue.
  /// @par Thread safety  Loop thread only.
  std::size_t qsize() const noexcept { return store_.size(); }

  /// The bound given to the constructor; 0 means unbounded.
  /// @par Thread safety  Loop thread only.
  std::size_t maxsize() const noexcept { return maxsize_; }

  /// True when the queue holds no item.
  /// @par Thread safety  Loop thread only.
  bool empty() const noexcept { return store_.size() == 0; }

  /// True when the queue holds maxsize() items; never true for an unbounded queue.
  /// @par Thread safety  Loop thread only.
  bool full() const noexcept { return maxsize_ > 0 && store_.size() >= maxsize_; }

  /// True once shutdown() was called.
  /// @par Thread safety  Loop thread only.
  bool is_shutdown() const noexcept { return is_shutdown_; }

  /// Puts @p item into the queue, first waiting for a free slot while the queue is full.
  ///
  /// The oldest waiting getter is woken (through call_soon, when the item is in). Each item
  /// put counts as one unfinished task for join() until task_done() is called for it.
  /// @param item  moved into the coroutine's frame when put() is called.
  /// @throws QueueShutDown  the queue is shut down, before or while waiting; the item is
  /// dropped.
  /// @par Thread safety  Loop thread only.
  /// @par Cancellation  Cancel-safe for the queue: a cancelled put() has not put its item and
  /// takes no slot; if a get had already woken it for a free slot (the get and the cancel in
  /// the same loop iteration), the next waiting putter is woken in its place, or the slot
  /// stays free. The item itself, moved into the coroutine at the call, is destroyed with it:
  /// put a copy, or keep what you need to put it again (asyncio's caller keeps a reference).
  /// @par Lifetime  The queue must outlive the coroutine.
  Coro<void> put(T item) {
    while (full()) {
      if (is_shutdown_) throw QueueShutDown();
      co_await wait_turn(Role::putter);
    }
    put_nowait(std::move(item));
  }

  /// Puts @p item into the queue without waiting.
  ///
  /// Wakes the oldest waiting getter, as put() does. On an exception, @p item is left as it
  /// was (for an rvalue, not moved from).
  /// @throws QueueShutDown  the queue is shut down (checked first, as asyncio does).
  /// @throws QueueFull  the queue is full.
  /// @par Thread safety  Loop thread only.
  void put_nowait(T&& item) {
    check_can_put();
    store_.push(std::move(item));
    after_put();
  }
  /// @copydoc put_nowait(T&&)
  void put_nowait(const T& item)
    requires std::is_copy_constructible_v<T>
  {
    check_can_put();
    T copy(item);
    store_.push(std::move(copy));
    after_put();
  }

  /// Removes and returns the next item (the oldest for Queue), first waiting while the queue
  /// is empty.
  ///
  /// The oldest waiting putter is woken, as by get_nowait().
  /// @return the item, moved out of the queue.
  /// @throws QueueShutDown  the queue is shut down and empty, before or while waiting (after
  /// shutdown(false) the remaining items are still handed out first).
  /// @par Thread safety  Loop thread only.
  /// @par Cancellation  Cancel-safe: no item is lost. A cancelled get() has taken no item;
  /// if a put had already woken it for an item (the put and the cancel in the same loop
  /// iteration), the next waiting getter is woken in its place (asyncio's _wakeup_next in
  /// get()'s except branch), and the item stays in the queue.
  /// @par Lifetime  The queue must outlive the coroutine.
  Coro<T> get() {
    while (empty()) {
      if (is_shutdown_) throw QueueShutDown();
      co_await wait_turn(Role::getter);
    }
    co_return get_nowait();
  }

  /// Removes and returns the next item without waiting; wakes the oldest waiting putter.
  /// @throws QueueShutDown  the queue is empty and shut down.
  /// @throws QueueEmpty  the queue is empty and not shut down.
  /// @par Thread safety  Loop thread only.
  T get_nowait() {
    if (empty()) {
      if (is_shutdown_) throw QueueShutDown();
      throw QueueEmpty();
    }
    T item = store_.pop();
    wakeup_next(putters_);
    return item;
  }

  /// Marks one item taken by a consumer as processed; when every item put has been marked,
  /// the coroutines waiting in join() are woken.
  /// @throws InvalidStateError  called more times than items were put (asyncio raises
  /// ValueError("task_done() called too many times")); the count is unchanged.
  /// @par Thread safety  Loop thread only.
  void task_done() {
    if (unfinished_ == 0) throw InvalidStateError("task_done() called too many times");
    if (--unfinished_ == 0) set_finished();
  }

  /// Waits until every item put into the queue has been marked by task_done(); returns at
  /// once if none is unfinished.
  ///
  /// A joiner once woken returns even if another item was put in between (asyncio's
  /// Event.wait()).
  /// @par Thread safety  Loop thread only.
  /// @par Cancellation  Cancel-safe: a cancelled join() changes nothing in the queue; the
  /// other joiners are woken by task_done() all the same.
  /// @par Lifetime  The queue must outlive the coroutine.
  Coro<void> join() {
    if (unfinished_ > 0) co_await wait_turn(Role::joiner);
  }

  /// Shuts the queue down (Python 3.13): every later put() and put_nowait() throws
  /// QueueShutDown, and get() and get_nowait() throw it once the queue is empty.
  ///
  /// Every blocked getter and putter is woken: a putter throws QueueShutDown, and a getter
  /// takes an item if one is left, else throws QueueShutDown. With @p immediate, the items
  /// still queued are dropped first, each counted as done for join() (so join() returns once
  /// the items already taken are marked). Calling it again is allowed (a later immediate call
  /// still drops the items).
  /// @par Thread safety  Loop thread only.
  void shutdown(bool immediate = false) {
    is_shutdown_ = true;
    if (immediate) {
      while (!empty()) {
        (void)store_.pop();
        if (unfinished_ > 0) --unfinished_;
      }
      if (unfinished_ == 0) set_finished();
    }
    wake_all(getters_);
    wake_all(putters_);
  }

 protected:
  ~BasicQueue() = default;

 private:
  enum class Role { getter, putter, joiner };

  /// One wait of a getter, putter or joiner: its node in the queue of its role. On any
  /// exception (a cancellation), undoes the wait as asyncio's except branches do.
  class WaitAwaiter {
   public:
    /// What a task dump calls this await.
    static constexpr const char* await_name = "queue wait";
    WaitAwaiter(BasicQueue& queue, Role role) noexcept : queue_(&queue), role_(role) {}
    WaitAwaiter(const WaitAwaiter&) = delete;
    WaitAwaiter& operator=(const WaitAwaiter&) = delete;

    bool await_ready() const noexcept { return false; }
    void await_suspend(std::coroutine_handle<> h) {
      queue_->waiters_of(role_).suspend(waiter_, h);
    }
    void await_resume() {
      try {
        queue_->waiters_of(role_).resume(waiter_);
      } catch (...) {
        queue_->abandon(role_, waiter_);
        throw;
      }
    }

   private:
    BasicQueue* queue_;
    Role role_;
    detail::Waiter waiter_;
  };

  detail::WaiterQueue& waiters_of(Role role) noexcept {
    switch (role) {
      case Role::getter:
        return getters_;
      case Role::putter:
        return putters_;
      case Role::joiner:
        break;
    }
    return joiners_;
  }

  /// The awaiter of one wait for @p role, on the loop the queue is bound to.
  WaitAwaiter wait_turn(Role role) {
    bind_loop();
    return WaitAwaiter(*this, role);
  }

  /// Binds the queue to the running loop on first use (asyncio's _LoopBoundMixin).
  void bind_loop() {
    EventLoop& loop = get_running_loop();
    if (loop_ == nullptr) {
      loop_ = &loop;
    } else if (loop_ != &loop) {
      throw EventLoopError("the queue is bound to a different event loop");
    }
  }

  /// A waiting coroutine leaves with an exception (a cancellation): if it had been woken for
  /// an item or a slot it will not take, wake the next one in its place.
  void abandon(Role role, const detail::Waiter& waiter) {
    if (!waiter.woken()) return;
    if (role == Role::getter && !empty()) wakeup_next(getters_);
    if (role == Role::putter && !full()) wakeup_next(putters_);
  }

  /// Wakes the oldest waiter that still waits (asyncio's _wakeup_next), taking it out of the
  /// queue as asyncio pops its future: later wake-ups never walk past it.
  static void wakeup_next(detail::WaiterQueue& waiters) {
    while (detail::Waiter* w = waiters.front()) {
      waiters.remove(*w);
      if (!w->done()) {
        w->wake();
        break;
      }
    }
  }

  static void wake_all(detail::WaiterQueue& waiters) {
    while (detail::Waiter* w = waiters.front()) {
      waiters.remove(*w);
      if (!w->done()) w->wake();
    }
  }

  void check_can_put() const {
    if (is_shutdown_) throw QueueShutDown();
    if (full()) throw QueueFull();
  }

  void after_put() {
    ++unfinished_;
    wakeup_next(getters_);
  }

  void set_finished() { wake_all(joiners_); }

  Store store_;
  std::size_t maxsize_;
  std::size_t unfinished_ = 0;
  detail::WaiterQueue getters_;
  detail::WaiterQueue putters_;
  detail::WaiterQueue joiners_;
  EventLoop* loop_ = nullptr;
  bool is_shutdown_ = false;
};

}  // namespace detail

/// A first-in, first-out queue for coroutines on one loop (asyncio.Queue, Python 3.13).
///
/// Producers `co_await put(item)` (waiting while a bounded queue is full) and consumers
/// `co_await get()` (waiting while it is empty); blocked coroutines are served in the order
/// they started waiting. put_nowait() and get_nowait() never wait and throw QueueFull or
/// QueueEmpty instead. task_done() and join() count processed items; shutdown() ends the
/// queue with QueueShutDown. Move-only item types are supported. No timeout parameter: wrap
/// an operation in wait_for() or timeout(), as in asyncio. PriorityQueue and LifoQueue share
/// this interface, with another order.
///
/// @tparam T  the item type; movable.
/// @par Thread safety  Loop thread only: not thread-safe, as asyncio's queues are not.
/// @par Cancellation  get(), put() and join() are cancel-safe: a cancelled get() takes no
/// item and a cancelled put() puts none (its item is destroyed with it), and neither makes
/// another waiter miss a wake-up.
/// @par Lifetime  Must outlive every put(), get() and join() coroutine made from it.
template <class T>
class Queue : public detail::BasicQueue<T, detail::FifoStore<T>> {
 public:
  /// A queue holding at most @p maxsize items; 0 (the default) means unbounded.
  explicit Queue(std::size_t maxsize = 0)
      : detail::BasicQueue<T, detail::FifoStore<T>>(maxsize) {}
};

}  // namespace strata
