#include "strata/core/future.hpp"

#include <algorithm>
#include <stdexcept>

#include "strata/core/task.hpp"

namespace strata::detail {

namespace {

/// The call_soon callback that runs one done callback.
struct DoneCall {
  Ref<FutureStateBase> future;
  DoneFn fn;
  void operator()() { fn(*future); }
  std::string describe() const { return "done callback of " + future->describe(); }
};

}  // namespace

FutureStateBase::~FutureStateBase() {
  if (has_unretrieved_exception()) report_unretrieved("Future exception was never retrieved", {});
}

void FutureStateBase::report_unretrieved(const char* message, const std::string& task) noexcept {
  if (status_ != Status::finished || !exception_ || exception_retrieved_) return;
  exception_retrieved_ = true;
  try {
    loop_->call_exception_handler({message, exception_, {}, task});
  } catch (...) {
  }
}

bool FutureStateBase::cancel(std::string message) {
  if (done()) return false;
  mark_cancelled(std::move(message));
  return true;
}

void FutureStateBase::check_pending(const char* method) const {
  if (!done()) return;
  throw InvalidStateError(std::string(method) + "() on a " + describe() + " that is already " +
                          (cancelled() ? "cancelled" : "done"));
}

void FutureStateBase::set_exception(std::exception_ptr e) {
  if (!e) throw std::invalid_argument("set_exception() needs a non-null exception_ptr");
  check_pending("set_exception");
  exception_ = std::move(e);
  mark_finished();
}

std::exception_ptr FutureStateBase::exception() {
  if (status_ == Status::pending) throw InvalidStateError("Exception is not set: " + describe() + " is pending");
  if (status_ == Status::cancelled) throw CancelledError(cancel_message_);
  exception_retrieved_ = true;
  return exception_;
}

void FutureStateBase::throw_result_error() {
  if (status_ == Status::pending) throw InvalidStateError("Result is not set: " + describe() + " is pending");
  if (status_ == Status::cancelled) throw CancelledError(cancel_message_);
  exception_retrieved_ = true;
  std::rethrow_exception(exception_);
}

CallbackId FutureStateBase::add_done_callback(DoneFn fn) {
  CallbackId id = next_callback_id_++;
  if (done()) {
    loop_->call_soon(DoneCall{Ref<FutureStateBase>(this), std::move(fn)});
  } else if (!first_callback_.fn && more_callbacks_.empty()) {
    first_callback_ = Entry{id, std::move(fn)};
  } else {
    more_callbacks_.push_back(Entry{id, std::move(fn)});  // after every earlier one
  }
  return id;
}

std::size_t FutureStateBase::remove_done_callback(CallbackId id) noexcept {
  std::size_t n = 0;
  if (first_callback_.fn && first_callback_.id == id) {
    first_callback_ = Entry{};
    n = 1;
  }
  auto it = std::remove_if(more_callbacks_.begin(), more_callbacks_.end(),
                           [id](const Entry& e) { return e.id == id; });
  n += static_cast<std::size_t>(more_callbacks_.end() - it);
  more_callbacks_.erase(it, more_callbacks_.end());
  return n;
}

void FutureStateBase::mark_finished() {
  status_ = Status::finished;
  schedule_callbacks();
}

void FutureStateBase::mark_cancelled(std::string message) {
  status_ = Status::cancelled;
  cancel_message_ = std::move(message);
  schedule_callbacks();
}

void FutureStateBase::schedule_callbacks() {
  if (first_callback_.fn) {
    DoneFn first = std::move(first_callback_.fn);
    first_callback_ = Entry{};
    loop_->call_soon(DoneCall{Ref<FutureStateBase>(this), std::move(first)});
  }
  if (more_callbacks_.empty()) return;
  auto callbacks = std::move(more_callbacks_);
  more_callbacks_.clear();
  for (Entry& e : callbacks) {
    loop_->call_soon(DoneCall{Ref<FutureStateBase>(this), std::move(e.fn)});
  }
}

void suspend_on_future(FutureStateBase& future, std::coroutine_handle<> h) {
  TaskCore* task = TaskCore::current();
  if (task == nullptr) {
    throw InvalidStateError(
        "co_await on a pending Future outside a Task; run the coroutine with create_task(), "
        "run_until_complete() or strata::run()");
  }
  task->await_future(future, h);
}

void deliver_pending_cancel() {
  if (TaskCore* task = running_task) task->deliver_pending_cancel();
}

}  // namespace strata::detail
