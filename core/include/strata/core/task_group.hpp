#pragma once
/// @file
/// TaskGroup and task_group(): structured concurrency (asyncio.TaskGroup).

#include <exception>
#include <memory>
#include <optional>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "strata/core/coro.hpp"
#include "strata/core/future.hpp"
#include "strata/core/task.hpp"

namespace strata {

template <class Body>
auto task_group(Body body);

/// The tasks of one task_group() scope (asyncio.TaskGroup). Only task_group() makes one.
///
/// The scope ends when its body has returned and every task created in it has finished:
/// nothing outlives the group. If a task fails, the others and the body are cancelled, and
/// the scope throws an ExceptionGroup of every failure (cancellations excepted).
///
/// @par Thread safety  Loop thread only.
class TaskGroup {
 public:
  /// Starts @p coro as a task of this group.
  /// @throws InvalidStateError  the group is finished, or shutting down after a failure.
  template <class T>
  Task<T> create_task(Coro<T> coro, std::string name = {}) {
    check_can_create();
    Task<T> task = state_->loop->create_task(std::move(coro), std::move(name));
    adopt(*task.state());
    return task;
  }

  /// How many of the group's tasks are not done yet.
  std::size_t size() const noexcept { return state_->tasks.size(); }

 private:
  template <class Body>
  friend auto task_group(Body body);

  struct State {
    EventLoop* loop = nullptr;
    TaskRef parent;
    std::vector<detail::Ref<detail::FutureStateBase>> tasks;  // not yet done
    std::vector<std::exception_ptr> errors;
    Future<void> on_completed;
    bool exiting = false;
    bool aborting = false;
    bool parent_cancel_requested = false;
  };

  TaskGroup();  // the current task is the parent; throws outside a task
  void check_can_create() const;
  void adopt(detail::FutureStateBase& task);
  static void on_task_done(const std::shared_ptr<State>& state, detail::FutureStateBase& task);
  static void abort(State& state);
  /// asyncio's __aexit__: waits for the tasks, then throws what the scope must throw.
  Coro<void> exit(std::exception_ptr body_error);

  std::shared_ptr<State> state_;
};

/// Runs @p body with a TaskGroup, then waits for every task it created (asyncio's
/// `async with TaskGroup() as tg:`). Returns what the body returns.
///
/// ```
/// co_await strata::task_group([&](strata::TaskGroup& tg) -> strata::Coro<void> {
///   tg.create_task(fetch("a"));
///   tg.create_task(fetch("b"));
///   co_return;
/// });
/// ```
///
/// @param body  a callable taking TaskGroup& and returning a Coro; it is kept alive until
/// the scope ends, so a lambda's captures stay valid in its coroutine.
///
/// @warning g++ 12 miscompiles a lambda temporary with captures that have destructors (a
/// std::string, a Future) written inside a co_await expression: the captures are destroyed
/// twice. With g++ 12, capture by reference (`[&]`), or bind the lambda to a local first:
/// `auto body = [s](TaskGroup& tg) -> Coro<void> {...}; co_await task_group(std::move(body));`.
/// clang has no such problem.
/// @throws ExceptionGroup  one or more tasks (or the body) failed; holds every failure.
/// @throws CancelledError  the awaiting task was cancelled from outside.
/// @par Cancellation  Not cancel-safe: cancelling the awaiting task cancels the body and every
/// task of the group, waits for them all to finish (nothing outlives the scope), then throws
/// CancelledError; what the body would have returned is lost, the tasks' results stay in
/// their Task handles.
template <class Body>
auto task_group(Body body) {
  using C = std::invoke_result_t<Body&, TaskGroup&>;
  using T = typename C::value_type;
  return [](Body body) -> Coro<T> {
    TaskGroup group;
    std::exception_ptr body_error;
    if constexpr (std::is_void_v<T>) {
      try {
        co_await body(group);
      } catch (...) {
        body_error = std::current_exception();
      }
      co_await group.exit(body_error);
    } else {
      std::optional<T> result;
      try {
        result.emplace(co_await body(group));
      } catch (...) {
        body_error = std::current_exception();
      }
      co_await group.exit(body_error);
      co_return std::move(*result);
    }
  }(std::move(body));
}

}  // namespace strata
