#include "strata/core/task_group.hpp"

#include <algorithm>

namespace strata {

namespace {
bool is_cancelled_error(const std::exception_ptr& e) {
  if (!e) return false;
  try {
    std::rethrow_exception(e);
  } catch (const CancelledError&) {
    return true;
  } catch (...) {
    return false;
  }
}
}  // namespace

TaskGroup::TaskGroup() : state_(std::make_shared<State>()) {
  detail::TaskCore* parent = detail::TaskCore::current();
  if (parent == nullptr) throw InvalidStateError("task_group() used outside a Task");
  state_->parent = TaskRef(parent);
  state_->loop = &parent->future().loop();
}

void TaskGroup::check_can_create() const {
  if (state_->exiting && state_->tasks.empty()) throw InvalidStateError("TaskGroup is finished");
  if (state_->aborting) throw InvalidStateError("TaskGroup is shutting down");
}

void TaskGroup::adopt(detail::FutureStateBase& task) {
  state_->tasks.emplace_back(&task);
  task.add_done_callback(
      [state = state_](detail::FutureStateBase& t) { on_task_done(state, t); });
}

void TaskGroup::on_task_done(const std::shared_ptr<State>& state, detail::FutureStateBase& task) {
  auto& tasks = state->tasks;
  tasks.erase(std::remove_if(tasks.begin(), tasks.end(),
                             [&](const auto& t) { return t.get() == &task; }),
              tasks.end());
  if (state->on_completed.valid() && tasks.empty() && !state->on_completed.done()) {
    state->on_completed.set_result();
  }
  if (task.cancelled()) return;
  std::exception_ptr e = task.exception();
  if (!e) return;
  state->errors.push_back(e);
  if (state->parent.done()) {
    state->loop->call_exception_handler(
        {"Task error after its TaskGroup's parent task finished", e, {}, task.describe()});
    return;
  }
  if (!state->aborting && !state->parent_cancel_requested) {
    abort(*state);
    state->parent_cancel_requested = true;
    state->parent.cancel();
  }
}

void TaskGroup::abort(State& state) {
  state.aborting = true;
  for (auto& t : std::vector(state.tasks)) t->cancel({});
}

Coro<void> TaskGroup::exit(std::exception_ptr body_error) {
  State& s = *state_;
  s.exiting = true;
  const bool body_cancelled = is_cancelled_error(body_error);
  std::exception_ptr propagate_cancel = body_cancelled ? body_error : nullptr;
  if (body_error && !s.aborting) abort(s);

  while (!s.tasks.empty()) {
    s.on_completed = Future<void>(*s.loop);
    try {
      co_await s.on_completed;
    } catch (const CancelledError&) {
      if (!s.aborting) {
        propagate_cancel = std::current_exception();
        abort(s);
      }
    }
    s.on_completed = Future<void>();
  }

  if (s.parent_cancel_requested) {
    // We cancelled the parent because a task failed: take that request back, and swallow the
    // CancelledError it caused unless somebody else cancelled the parent too. Only now: a task
    // may fail, and so cancel the parent, while the loop above waits (CPython 3.13's fix).
    if (s.parent.uncancel() == 0) propagate_cancel = nullptr;
  }
  if (propagate_cancel && s.errors.empty()) std::rethrow_exception(propagate_cancel);
  if (body_error && !body_cancelled) s.errors.push_back(body_error);
  if (!s.errors.empty()) {
    auto errors = std::exchange(s.errors, {});
    throw ExceptionGroup("unhandled errors in a TaskGroup", std::move(errors));
  }
}

}  // namespace strata
