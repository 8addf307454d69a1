#pragma once
/// @file
/// Task<T>: a Future<T> that drives a Coro<T> on the loop (asyncio.Task).

#include <coroutine>
#include <string>
#include <utility>
#include <vector>

#include "strata/core/coro.hpp"
#include "strata/core/future.hpp"

namespace strata {

namespace detail {

class Waiter;
class TaskCore;

/// A task's step: the handle embedded in the task that schedule_step() queues, so that waking
/// a task allocates nothing.
class TaskStepHandle final : public HandleImpl {
 public:
  explicit TaskStepHandle(TaskCore& task) noexcept;
  TaskStepHandle(const TaskStepHandle&) = delete;
  TaskStepHandle& operator=(const TaskStepHandle&) = delete;
  ~TaskStepHandle() = default;

  TaskCore& task() const noexcept { return *task_; }

 private:
  TaskCore* task_;
};

/// The task whose coroutine is running on this thread, or nullptr (TaskCore::current()).
/// Constant-initialized, so that reading it from another translation unit is one load.
extern constinit thread_local TaskCore* running_task;

/// The untyped machinery of a task: stepping its coroutine, what it waits on, cancellation.
class TaskCore {
 public:
  TaskCore(FutureStateBase& self, std::string&& name);
  TaskCore(const TaskCore&) = delete;
  TaskCore& operator=(const TaskCore&) = delete;

  /// asyncio's Task.cancel(): cancels what the task awaits, or arranges for CancelledError to
  /// be thrown at its next resumption.
  bool cancel(std::string message);
  int cancelling() const noexcept { return cancels_requested_; }
  int uncancel() noexcept;

  /// The task's name; "Task-N" (formatted on first use) when none was given.
  const std::string& name() const {
    if (name_.empty()) name_ = "Task-" + std::to_string(id_);
    return name_;
  }
  void set_name(std::string name) { name_ = std::move(name); }
  FutureStateBase& future() const noexcept { return *self_; }

  /// Runs the coroutine until its next suspension (asyncio's __step).
  void step();
  /// The awaited future is done: forget it and step.
  void wakeup();
  /// Suspends on @p f: resumes @p h when @p f is done.
  void await_future(FutureStateBase& f, std::coroutine_handle<> h);
  /// Suspends on @p w (WaiterQueue::suspend()): resumes @p h once the waiter is woken or the
  /// task cancelled. No future: waking schedules the next step directly.
  void park(Waiter& w, std::coroutine_handle<> h);
  /// The waiter this task is parked on was woken: schedules the next step.
  void unpark();
  /// As unpark(), from a plain callback of the task's loop that hands the task what it waited
  /// for (an I/O callback): runs the next step inside this call when no task is running on this
  /// thread and the step is not queued already, saving the trip through the ready queue and a
  /// loop iteration. Schedules it as unpark() does otherwise.
  void unpark_now() {
    if (running_task != nullptr || step_handle_.queued()) {
      unpark();
      return;
    }
    parked_ = nullptr;
    const Ref<FutureStateBase> keep = std::move(parked_keep_);
    step();
  }
  /// @p w, which this task is parked on, is being destroyed (so is the task's frame).
  void forget_parked(const Waiter& w) noexcept {
    if (parked_ != &w) return;
    parked_ = nullptr;
    parked_keep_ = nullptr;
  }
  /// Throws the CancelledError of a cancel that found this task parked.
  [[noreturn]] void throw_parked_cancel();
  /// Throws the CancelledError whose delivery this step owes (deliver_pending_cancel()).
  [[noreturn]] void throw_pending_cancel();
  /// Suspends for one loop iteration (sleep(0)): resumes @p h through call_soon.
  void yield(std::coroutine_handle<> h);
  /// Whether a cancel request awaits delivery (deliver_pending_cancel() would throw).
  bool cancel_pending() const noexcept { return deliver_cancel_; }
  /// Throws CancelledError if a cancel request awaits delivery.
  void deliver_pending_cancel() {
    if (deliver_cancel_) [[unlikely]] throw_pending_cancel();
  }
  /// Destroys the coroutine of a pending task (the loop is closing).
  void abandon() noexcept;

  /// The task whose coroutine is running on this thread, or nullptr.
  static TaskCore* current() noexcept { return running_task; }

  /// The live tasks of a loop, as an intrusive list: first(loop), then next_live().
  static TaskCore* first(const EventLoop& loop) noexcept;
  TaskCore* next_live() const noexcept { return next_; }

  // For task dumps and stall reports (src/diagnostics.cpp).
  /// The await record of the task's root coroutine: the head of its await chain.
  const AwaitFrame* root_frame() const noexcept { return root_frame_; }
  /// The future the task is suspended on, or nullptr (parked on a waiter, scheduled, running
  /// or not started).
  FutureStateBase* waiting_on() const noexcept { return waiter_.get(); }
  /// Whether the task waits: on a future, or parked on a waiter.
  bool suspended() const noexcept { return waiter_ || parked_ != nullptr; }
  /// Whether the coroutine has started.
  bool started() const noexcept { return started_; }
  /// The innermost co_await of the task's last suspension, and the loop's time then.
  const AwaitSite& suspended_at() const noexcept { return suspended_at_; }
  TimePoint suspended_since() const noexcept { return suspended_since_; }

 protected:
  ~TaskCore();
  /// The root coroutine returned or threw: store its outcome in the future.
  virtual void finish_from_coroutine() = 0;
  virtual void destroy_coroutine() noexcept = 0;
  void schedule_step();
  /// Called once by the task state: the root coroutine's await record.
  void set_root_frame(const AwaitFrame* frame) noexcept { root_frame_ = frame; }
  /// Takes a cancel request that no co_await received (the coroutine returned first).
  bool take_pending_cancel(std::string& message) noexcept {
    if (!must_cancel_) return false;
    must_cancel_ = false;
    message = std::move(cancel_message_);
    return true;
  }

  std::coroutine_handle<> resume_point_;  // where the next step resumes

 private:
  void link() noexcept;
  void unlink() noexcept;
  /// Notes where and when the task suspends: the leaf of its await chain.
  void record_suspension() noexcept;
  /// Marks the waiter this task is parked on cancelled and schedules the step that throws.
  void cancel_parked();

  FutureStateBase* self_;
  const AwaitFrame* root_frame_ = nullptr;
  AwaitSite suspended_at_;
  TimePoint suspended_since_{};
  mutable std::string name_;
  std::uint64_t id_;
  Ref<FutureStateBase> waiter_;   // the future being awaited (asyncio's _fut_waiter)
  CallbackId waiter_callback_ = 0;  // this task's wake-up on waiter_
  Waiter* parked_ = nullptr;      // the waiter it is parked on (instead of a future)
  TaskStepHandle step_handle_;     // the step, queued by schedule_step()
  Ref<FutureStateBase> parked_keep_;  // while parked: keeps the task alive, as a future's
                                      // done callback would (nobody may hold the Task)
  TaskCore* prev_ = nullptr;      // the loop's list of live tasks
  TaskCore* next_ = nullptr;
  int cancels_requested_ = 0;
  bool must_cancel_ = false;      // cancel requested while not waiting on a future
  bool deliver_cancel_ = false;   // this step must throw CancelledError at its resume point
  bool started_ = false;
  bool stepping_ = false;
  std::string cancel_message_;
};

/// A task's shared state: a FutureState<T> that owns and steps a Coro<T>.
template <class T>
class TaskState final : public FutureState<T>, public TaskCore {
 public:
  TaskState(EventLoop& loop, Coro<T>&& coro, std::string&& name)
      : FutureState<T>(loop), TaskCore(*this, std::move(name)), coro_(coro.release()) {
    resume_point_ = coro_;
    set_root_frame(coro_.promise().await_frame());
  }
  ~TaskState() override {
    if (coro_) coro_.destroy();
    if (this->has_unretrieved_exception()) {
      this->report_unretrieved("Task exception was never retrieved", name());
    }
  }

  bool cancel(std::string message) override { return TaskCore::cancel(std::move(message)); }
  TaskCore* as_task() noexcept override { return this; }
  std::string describe() const override { return "Task '" + name() + "'"; }

  void start() { this->schedule_step(); }

 private:
  void finish_from_coroutine() override {
    auto h = std::exchange(coro_, {});
    if (!h.done()) {
      // The coroutine suspended on something that is not Strata's and will never be resumed
      // by this task: fail loudly rather than hang.
      h.destroy();
      this->set_exception(std::make_exception_ptr(InvalidStateError(
          "Task '" + name() + "' suspended on an awaitable that is not a Strata awaitable")));
      return;
    }
    struct Destroy {
      std::coroutine_handle<CoroPromise<T>> h;
      ~Destroy() { h.destroy(); }
    } destroy{h};
    try {
      std::string message;
      if constexpr (std::is_void_v<T>) {
        h.promise().take_result();
        // A cancel() that no co_await received still ends the task cancelled (asyncio).
        if (this->take_pending_cancel(message)) throw CancelledError(std::move(message));
        this->set_result();
      } else {
        T& value = h.promise().result();  // moved once, from the frame into the future
        if (this->take_pending_cancel(message)) throw CancelledError(std::move(message));
        this->set_result(std::move(value));
      }
    } catch (const CancelledError& e) {
      this->mark_cancelled(e.message());
    } catch (...) {
      this->set_exception(std::current_exception());
    }
  }
  void destroy_coroutine() noexcept override {
    if (coro_) std::exchange(coro_, {}).destroy();
  }

  std::coroutine_handle<CoroPromise<T>> coro_;
};

}  // namespace detail

/// A reference to any task, whatever its result type: what current_task() and all_tasks()
/// return.
class TaskRef {
 public:
  /// An empty reference (no task); only operator bool and == may be used on it.
  TaskRef() noexcept = default;
  /// @cond INTERNAL
  explicit TaskRef(detail::TaskCore* task) noexcept
      : task_(task), state_(task ? &task->future() : nullptr) {}
  /// @endcond

  /// Whether it refers to a task.
  explicit operator bool() const noexcept { return task_ != nullptr; }
  /// As Task::get_name().
  const std::string& get_name() const { return task_->name(); }
  /// As Future::done().
  bool done() const noexcept { return state_->done(); }
  /// As Future::cancelled().
  bool cancelled() const noexcept { return state_->cancelled(); }
  /// As Future::cancel(): requests the task's cancellation; false if it is done.
  bool cancel(std::string message = {}) { return task_->cancel(std::move(message)); }
  /// As Task::cancelling().
  int cancelling() const noexcept { return task_->cancelling(); }
  /// As Task::uncancel().
  int uncancel() noexcept { return task_->uncancel(); }

  /// @cond INTERNAL
  detail::FutureStateBase& future() const noexcept { return *state_; }
  /// @endcond

  friend bool operator==(const TaskRef& a, const TaskRef& b) noexcept {
    return a.task_ == b.task_;
  }

 private:
  detail::TaskCore* task_ = nullptr;
  detail::Ref<detail::FutureStateBase> state_;
};

/// A Future<T> that runs a Coro<T> on the loop (asyncio.Task). Copies share the task.
///
/// The task starts on the next loop iteration. It keeps itself alive while scheduled or
/// waiting, so dropping every Task handle does not stop it (unlike asyncio, no reference
/// needs to be kept).
///
/// @par Cancellation  cancel() makes the coroutine's current co_await throw CancelledError;
/// if it awaits another task or future, that one is cancelled in turn. The coroutine may
/// catch, clean up and rethrow (the task ends cancelled) or swallow it (the task ends with
/// its result). cancelling() counts the requests; uncancel() takes one back.
/// @par Thread safety  Loop thread only.
template <class T = void>
class Task : public Future<T> {
 public:
  /// An empty Task with no state; valid() is false.
  Task() noexcept = default;

  /// The name given to create_task() or set_name(); "Task-N" when none was.
  const std::string& get_name() const { return core()->name(); }
  /// Renames the task (for logs and task dumps).
  void set_name(std::string name) { core()->set_name(std::move(name)); }
  /// How many cancellation requests are pending: cancel() calls on the pending task, less
  /// uncancel() calls (asyncio's Task.cancelling()).
  int cancelling() const noexcept { return core()->cancelling(); }
  /// Takes back one cancellation request and returns how many remain; at 0, a cancel()
  /// not yet delivered to the coroutine is dropped (asyncio's Task.uncancel()).
  int uncancel() noexcept { return core()->uncancel(); }
  /// A type-erased reference to this task, as current_task() returns.
  TaskRef ref() const noexcept { return TaskRef(core()); }

  /// @cond INTERNAL
  explicit Task(detail::TaskState<T>* state) noexcept
      : Future<T>(detail::Ref<detail::FutureState<T>>(state)) {}
  /// @endcond

 private:
  detail::TaskState<T>* core() const noexcept {
    return static_cast<detail::TaskState<T>*>(this->state_.get());
  }
};

namespace detail {
/// The state of a new task of @p loop, not started yet; @p caller names the API in errors.
template <class T>
TaskState<T>* new_task_state(EventLoop& loop, Coro<T>&& coro, std::string&& name,
                             const char* caller) {
  if (loop.is_closed()) throw EventLoopError("Event loop is closed");
  if (!coro.valid()) {
    throw InvalidStateError(std::string(caller) + "() needs a Coro that has not run");
  }
  return new TaskState<T>(loop, std::move(coro), std::move(name));
}
}  // namespace detail

template <class T>
Task<T> EventLoop::create_task(Coro<T> coro, std::string name) {
  auto* state = detail::new_task_state(*this, std::move(coro), std::move(name), "create_task");
  Task<T> task(state);
  state->start();
  return task;
}

template <class T>
Task<T> EventLoop::create_eager_task(Coro<T> coro, std::string name) {
  auto* state =
      detail::new_task_state(*this, std::move(coro), std::move(name), "create_eager_task");
  Task<T> task(state);
  if (try_get_running_loop() == this) {
    state->step();
  } else {
    state->start();
  }
  return task;
}

/// Wraps @p coro in a Task on the running loop (asyncio.create_task()).
/// @throws EventLoopError  no loop is running on this thread.
template <class T>
Task<T> create_task(Coro<T> coro, std::string name = {}) {
  return get_running_loop().create_task(std::move(coro), std::move(name));
}

/// The task running on this thread, or an empty TaskRef (asyncio.current_task()).
TaskRef current_task() noexcept;

/// The tasks of @p loop that are not done yet (asyncio.all_tasks()).
std::vector<TaskRef> all_tasks(EventLoop& loop);
/// The tasks of the running loop that are not done yet.
std::vector<TaskRef> all_tasks();

template <class T>
T EventLoop::run_until_complete(Future<T> future) {
  if (!future.valid()) throw std::invalid_argument("run_until_complete() needs a valid Future");
  if (&future.get_loop() != this) {
    throw std::invalid_argument("run_until_complete(): the Future belongs to another loop");
  }
  check_can_run();  // before the done callback: a refused call must not stop a running loop
  CallbackId id = future.add_done_callback([this](Future<T>&) { stop(); });
  try {
    run_forever();
  } catch (...) {
    future.remove_done_callback(id);
    throw;
  }
  future.remove_done_callback(id);
  if (!future.done()) throw EventLoopError("Event loop stopped before Future completed.");
  if constexpr (std::is_void_v<T>) {
    future.state()->take();
  } else {
    return future.state()->take();
  }
}

template <class T>
T EventLoop::run_until_complete(Coro<T> coro) {
  check_can_run();  // before create_task: a refused call schedules nothing
  return run_until_complete(Future<T>(create_task(std::move(coro))));
}

}  // namespace strata
