#pragma once
/// @file
/// WaiterQueue: the FIFO of suspended tasks behind Lock, Event, Condition and Semaphore
/// (asyncio's deque of waiter futures, made intrusive).

#include <coroutine>
#include <cstddef>

#include "strata/core/detail/ref.hpp"
#include "strata/core/event_loop.hpp"
#include "strata/core/future.hpp"

namespace strata::detail {

class WaiterQueue;

/// One suspended task's place in a WaiterQueue: the future it awaits. The node lives in the
/// awaiter, inside the waiting coroutine's frame, and unlinks itself when destroyed.
class Waiter {
 public:
  Waiter() noexcept = default;
  Waiter(const Waiter&) = delete;
  Waiter& operator=(const Waiter&) = delete;
  inline ~Waiter();

  /// Its future is done: woken, or cancelled.
  bool done() const noexcept { return future_ && future_->done(); }
  /// Its future is cancelled: the waiting task is being cancelled.
  bool cancelled() const noexcept { return future_ && future_->cancelled(); }
  /// Woken (its future has a result): it was chosen, and must act on it or pass it on.
  bool woken() const noexcept { return done() && !cancelled(); }
  /// Completes the future; the task resumes through call_soon, never inside this call.
  void wake() { future_->set_result(); }

 private:
  friend class WaiterQueue;
  Ref<FutureState<void>> future_;
  WaiterQueue* queue_ = nullptr;
  Waiter* prev_ = nullptr;
  Waiter* next_ = nullptr;
};

/// An intrusive FIFO of Waiter nodes; removal is O(1). Loop thread only.
class WaiterQueue {
 public:
  WaiterQueue() noexcept = default;
  WaiterQueue(const WaiterQueue&) = delete;
  WaiterQueue& operator=(const WaiterQueue&) = delete;
  /// Forgets the nodes still queued (their tasks will never be woken by this queue).
  ~WaiterQueue() {
    while (head_) remove(*head_);
  }

  bool empty() const noexcept { return head_ == nullptr; }
  std::size_t size() const noexcept { return size_; }
  Waiter* front() const noexcept { return head_; }
  static Waiter* next(const Waiter& w) noexcept { return w.next_; }

  /// Gives @p w a fresh future on the running loop, queues it last and suspends the current
  /// task on that future.
  /// @throws EventLoopError  no loop is running.  @throws InvalidStateError  not in a task.
  void suspend(Waiter& w, std::coroutine_handle<> h) {
    w.future_ = Ref<FutureState<void>>(new FutureState<void>(get_running_loop()));
    push_back(w);
    try {
      suspend_on_future(*w.future_, h);
    } catch (...) {
      remove(w);
      throw;
    }
  }

  /// After the task resumes from suspend(): unlinks @p w, then throws CancelledError if the
  /// task was cancelled (its future cancelled, or a cancel arrived after it was woken).
  void resume(Waiter& w) {
    remove(w);
    deliver_pending_cancel();
    w.future_->take();
  }

  /// Unlinks @p w; a no-op when it is not queued.
  void remove(Waiter& w) noexcept {
    if (w.queue_ != this) return;
    (w.prev_ ? w.prev_->next_ : head_) = w.next_;
    (w.next_ ? w.next_->prev_ : tail_) = w.prev_;
    w.prev_ = w.next_ = nullptr;
    w.queue_ = nullptr;
    --size_;
  }

 private:
  void push_back(Waiter& w) noexcept {
    w.queue_ = this;
    w.prev_ = tail_;
    w.next_ = nullptr;
    (tail_ ? tail_->next_ : head_) = &w;
    tail_ = &w;
    ++size_;
  }

  Waiter* head_ = nullptr;
  Waiter* tail_ = nullptr;
  std::size_t size_ = 0;
};

inline Waiter::~Waiter() {
  if (queue_) queue_->remove(*this);
}

}  // namespace strata::detail
