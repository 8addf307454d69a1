#pragma once
/// @file
/// WaiterQueue: the FIFO of suspended tasks behind Lock, Event, Condition, Semaphore and the
/// streams (asyncio's deque of waiter futures, made intrusive and future-free).

#include <coroutine>
#include <cstddef>

#include "strata/core/detail/assert.hpp"
#include "strata/core/task.hpp"

namespace strata::detail {

class WaiterQueue;

/// One suspended task's place in a WaiterQueue. The node lives in the awaiter, inside the
/// waiting coroutine's frame, and unlinks itself when destroyed.
///
/// A waiting task is parked on its node (TaskCore::park()), not on a Future: waking it
/// schedules its next step directly, and Task::cancel() marks the node cancelled and schedules
/// the step that throws CancelledError. What asyncio does with a waiter future, without
/// allocating one per wait.
class Waiter {
 public:
  Waiter() noexcept = default;
  Waiter(const Waiter&) = delete;
  Waiter& operator=(const Waiter&) = delete;
  inline ~Waiter();

  /// Woken or cancelled: its task's step is scheduled, or has run.
  bool done() const noexcept { return state_ == State::woken || state_ == State::cancelled; }
  /// Cancelled: the waiting task is being cancelled.
  bool cancelled() const noexcept { return state_ == State::cancelled; }
  /// Woken: it was chosen, and must act on it or pass it on.
  bool woken() const noexcept { return state_ == State::woken; }
  /// Wakes the waiting task; it resumes through call_soon, never inside this call.
  /// Precondition: it waits (not done()).
  void wake() {
    STRATA_ASSERT(state_ == State::waiting);
    state_ = State::woken;
    task_->unpark();
  }
  /// Wakes the waiting task from a plain callback of its loop that hands it what it waited for
  /// (an I/O callback: the streams' data_received): it resumes inside this call when no task is
  /// running on this thread (TaskCore::unpark_now()), through call_soon otherwise. Loop thread,
  /// loop running. Precondition: it waits (not done()).
  void wake_now() {
    STRATA_ASSERT(state_ == State::waiting);
    state_ = State::woken;
    task_->unpark_now();
  }

 private:
  friend class WaiterQueue;
  friend class TaskCore;
  enum class State : unsigned char { idle, waiting, woken, cancelled };

  TaskCore* task_ = nullptr;
  WaiterQueue* queue_ = nullptr;
  Waiter* prev_ = nullptr;
  Waiter* next_ = nullptr;
  State state_ = State::idle;
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

  /// Queues @p w last and parks the current task on it until it is woken or cancelled.
  /// @throws InvalidStateError  not in a task.
  void suspend(Waiter& w, std::coroutine_handle<> h) {
    TaskCore* task = TaskCore::current();
    if (task == nullptr) {
      throw InvalidStateError(
          "a wait outside a Task; run the coroutine with create_task(), run_until_complete() "
          "or strata::run()");
    }
    push_back(w);
    try {
      task->park(w, h);
    } catch (...) {
      remove(w);
      throw;
    }
  }

  /// After the task resumes from suspend(): unlinks @p w, then throws CancelledError if the
  /// task was cancelled (while it waited, or after it was woken). woken() and cancelled() keep
  /// their answers for the caller's clean-up.
  void resume(Waiter& w) {
    remove(w);
    deliver_pending_cancel();
    if (w.cancelled()) TaskCore::current()->throw_parked_cancel();
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
  // Destroyed while its task is parked on it (the task's frame is being destroyed).
  if (state_ == State::waiting && task_ != nullptr) task_->forget_parked(*this);
}

}  // namespace strata::detail
