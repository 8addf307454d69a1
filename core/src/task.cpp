#include "strata/core/task.hpp"

#include <atomic>
#include <cstdlib>
#include <string>

#if __has_include(<execinfo.h>)
#include <execinfo.h>
#endif

#include "strata/core/detail/assert.hpp"
#include "strata/core/detail/waiter_queue.hpp"
#include "strata/core/log.hpp"
#include "task_registry.hpp"

namespace strata {

namespace detail {

constinit thread_local TaskCore* running_task = nullptr;

namespace {

std::atomic<std::uint64_t> task_counter{0};



/// The callback of a task's step handle; names the task in logs. The handle's queueing holds
/// the task's reference (schedule_step(), release_embedded_handle()).
struct TaskStep {
  TaskCore* task;
  void operator()() const { task->step(); }
  std::string describe() const { return "step of Task '" + task->name() + "'"; }
};

/// The fallback when the step handle is queued already: a fresh handle holding its own
/// reference.
struct TaskStepOnce {
  Ref<FutureStateBase> keep;
  TaskCore* task;
  void operator()() const { task->step(); }
  std::string describe() const { return "step of Task '" + task->name() + "'"; }
};

/// The done callback that wakes a task whose awaited future is done.
struct TaskWakeup {
  Ref<FutureStateBase> keep;
  TaskCore* task;
  void operator()(FutureStateBase&) const { task->wakeup(); }
};

}  // namespace

void coroutine_frame_miscompiled() noexcept {
  std::string message =
      "a coroutine was miscompiled and cannot run (GCC bug 106188, GCC before 13): it declares "
      "no variable and has a co_await in the condition of an if, while, for, do-while or switch "
      "statement. Declare a variable in it (e.g. `int v = co_await q.get(); if (v < 0) ...`) or "
      "build with GCC 13 or later. The call stack starts in that coroutine (resolve "
      "module(+offset) with addr2line -f -C -e module offset):";
#if __has_include(<execinfo.h>)
  void* frames[8];
  int n = ::backtrace(frames, 8);
  if (char** symbols = ::backtrace_symbols(frames, n)) {
    for (int i = 1; i < n; ++i) message.append("\n  ").append(symbols[i]);
    std::free(symbols);
  }
#endif
  log(LogLevel::error, message);
  std::abort();
}

TaskCore::TaskCore(FutureStateBase& self, std::string&& name)
    : self_(&self),
      id_(task_counter.fetch_add(1, std::memory_order_relaxed) + 1),
      step_handle_(*this) {
  if (!name.empty()) name_ = std::move(name);  // most tasks keep the default, made lazily
  link();
}

TaskCore::~TaskCore() { unlink(); }


TaskCore* TaskCore::first(const EventLoop& loop) noexcept { return loop.tasks_; }

void TaskCore::link() noexcept {
  EventLoop& loop = self_->loop();
  ++loop.stats_.tasks_alive;
  next_ = loop.tasks_;
  if (next_) next_->prev_ = this;
  loop.tasks_ = this;
}

void TaskCore::unlink() noexcept {
  --self_->loop().stats_.tasks_alive;
  if (prev_) {
    prev_->next_ = next_;
  } else {
    self_->loop().tasks_ = next_;
  }
  if (next_) next_->prev_ = prev_;
  prev_ = next_ = nullptr;
}

void TaskCore::schedule_step() {
  // The step handle is queued or running: the task was woken inside its own step (DrainOp's
  // yield does that). A fresh handle then, with its own reference.
  if (step_handle_.queued()) {
    self_->loop().call_soon(TaskStepOnce{Ref<FutureStateBase>(self_), this});
    return;
  }
  // The queue's reference to the handle stands for one on the task, dropped by
  // release_embedded_handle() once the loop has run (or dropped) the step.
  self_->add_ref();
  try {
    self_->loop().do_call_soon_handle(step_handle_);
  } catch (...) {
    self_->release();
    throw;
  }
}

TaskStepHandle::TaskStepHandle(TaskCore& task) noexcept
    : HandleImpl(TaskStep{&task}, Embedded{}), task_(&task) {}

void release_embedded_handle(HandleImpl& handle) noexcept {
  // The only embedded handles are tasks' steps.
  static_cast<TaskStepHandle&>(handle).task().future().release();
}

bool TaskCore::cancel(std::string message) {
  if (self_->done()) return false;
  ++cancels_requested_;
  if (waiter_ && waiter_->cancel(message)) return true;
  if (parked_ != nullptr) {
    // asyncio cancels the waiter future: the task resumes and the wait throws CancelledError.
    cancel_message_ = std::move(message);
    cancel_parked();
    return true;
  }
  must_cancel_ = true;
  cancel_message_ = std::move(message);
  return true;
}

int TaskCore::uncancel() noexcept {
  if (cancels_requested_ > 0) {
    if (--cancels_requested_ == 0) must_cancel_ = false;
  }
  return cancels_requested_;
}

void TaskCore::step() {
  if (self_->done()) return;
  STRATA_ASSERT(!stepping_);
  Ref<FutureStateBase> keep(self_);  // the coroutine may drop every other reference
  if (!started_) {
    started_ = true;
    if (must_cancel_) {  // cancelled before it ran: the body never starts
      must_cancel_ = false;
      destroy_coroutine();
      self_->mark_cancelled(std::move(cancel_message_));
      return;
    }
  } else if (must_cancel_) {
    must_cancel_ = false;
    deliver_cancel_ = true;
  }
  EventLoop& loop = self_->loop();
  if (loop.stall_threshold_ > Duration::zero()) {
    // For the stall detector: which task this callback stepped, and where it resumed.
    self_->add_ref();
    if (loop.stepped_task_ != nullptr) loop.stepped_task_->release();
    loop.stepped_task_ = self_;
    loop.stepped_from_ = suspended_at_;
  }
  TaskCore* previous = std::exchange(running_task, this);
  stepping_ = true;
  std::exchange(resume_point_, {}).resume();
  stepping_ = false;
  deliver_cancel_ = false;
  running_task = previous;
  if (!resume_point_) finish_from_coroutine();
}

void TaskCore::wakeup() {
  waiter_ = nullptr;
  step();
}

void TaskCore::record_suspension() noexcept {
  const AwaitFrame* leaf = root_frame_;
  while (leaf->child) leaf = leaf->child;
  suspended_at_ = leaf->site;
  suspended_since_ = self_->loop().iteration_time();
}

void TaskCore::await_future(FutureStateBase& f, std::coroutine_handle<> h) {
  if (&f == self_) throw InvalidStateError("Task '" + name() + "' cannot await on itself");
  if (&f.loop() != &self_->loop()) {
    throw InvalidStateError("Task '" + name() + "' got a Future attached to a different loop");
  }
  waiter_callback_ = f.add_done_callback(TaskWakeup{Ref<FutureStateBase>(self_), this});
  waiter_ = Ref<FutureStateBase>(&f);
  resume_point_ = h;
  record_suspension();
  // A cancel() made while this task was running (it cancelled itself) found nothing to cancel
  // and no step to deliver it: hand it to the future just awaited (asyncio's __step does so).
  if (must_cancel_ && f.cancel(cancel_message_)) must_cancel_ = false;
}

void TaskCore::park(Waiter& w, std::coroutine_handle<> h) {
  w.task_ = this;
  w.state_ = Waiter::State::waiting;
  parked_ = &w;
  parked_keep_ = Ref<FutureStateBase>(self_);
  resume_point_ = h;
  record_suspension();
  // A cancel() made while this task was running (it cancelled itself) found nothing to cancel:
  // it cancels this wait, as await_future() hands it to the awaited future.
  if (must_cancel_) {
    must_cancel_ = false;
    cancel_parked();
  }
}

void TaskCore::cancel_parked() {
  parked_->state_ = Waiter::State::cancelled;
  unpark();
}

void TaskCore::unpark() {
  parked_ = nullptr;
  const Ref<FutureStateBase> keep = std::move(parked_keep_);  // the step takes its own
  schedule_step();
}

void TaskCore::throw_parked_cancel() { throw CancelledError(std::move(cancel_message_)); }

void TaskCore::yield(std::coroutine_handle<> h) {
  schedule_step();
  resume_point_ = h;
  record_suspension();
}

void TaskCore::throw_pending_cancel() {
  deliver_cancel_ = false;
  throw CancelledError(std::move(cancel_message_));
}

void TaskCore::abandon() noexcept {
  if (self_->done()) return;
  destroy_coroutine();
  resume_point_ = {};
  if (waiter_) waiter_->remove_done_callback(waiter_callback_);  // it would keep us alive
  waiter_ = nullptr;
  parked_ = nullptr;
  parked_keep_ = nullptr;
  self_->status_ = FutureStateBase::Status::cancelled;
  self_->drop_callbacks();
}

void abandon_pending_tasks(EventLoop& loop) noexcept {
  std::vector<Ref<FutureStateBase>> pending;
  for (TaskCore* t = TaskCore::first(loop); t; t = t->next_live()) {
    if (!t->future().done()) pending.emplace_back(&t->future());
  }
  for (auto& f : pending) {
    TaskCore* t = f->as_task();
    loop.call_exception_handler({"Task was destroyed but it is pending!", nullptr, {}, t->name()});
    t->abandon();
  }
}

bool has_pending_tasks(const EventLoop& loop) noexcept {
  for (TaskCore* t = TaskCore::first(loop); t; t = t->next_live()) {
    if (!t->future().done()) return true;
  }
  return false;
}

}  // namespace detail

TaskRef current_task() noexcept { return TaskRef(detail::TaskCore::current()); }

std::vector<TaskRef> all_tasks(EventLoop& loop) {
  std::vector<TaskRef> out;
  for (auto* t = detail::TaskCore::first(loop); t; t = t->next_live()) {
    if (!t->future().done()) out.emplace_back(t);
  }
  return out;
}

std::vector<TaskRef> all_tasks() { return all_tasks(get_running_loop()); }

}  // namespace strata
