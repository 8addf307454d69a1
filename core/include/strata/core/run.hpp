#pragma once
/// @file
/// strata::run(): run a coroutine on a fresh loop (asyncio.run).

#include <optional>
#include <utility>

#include "strata/core/event_loop.hpp"
#include "strata/core/task.hpp"

namespace strata {

/// How strata::run() sets up its loop.
struct RunOptions {
  /// The backend; the best available when empty.
  std::optional<LoopKind> loop;
  /// Debug mode for the loop; the STRATA_DEBUG environment variable when empty.
  std::optional<bool> debug;
};

namespace detail {
/// After the main task: cancels every remaining task, runs the loop until they are done and
/// reports their exceptions to the exception handler (asyncio's _cancel_all_tasks).
void cancel_remaining_tasks(EventLoop& loop) noexcept;
}  // namespace detail

/// Runs @p main on a new event loop and returns its result (asyncio.run()).
///
/// Creates a loop, runs @p main as a task until it is done, then cancels whatever tasks are
/// left and lets them finish, and closes the loop. The result or exception of @p main is
/// what run() returns or throws.
///
/// @throws EventLoopError  a loop is already running on this thread.
template <class T>
T run(Coro<T> main, RunOptions options = {}) {
  if (try_get_running_loop() != nullptr) {
    throw EventLoopError("strata::run() cannot be called while an event loop is running");
  }
  auto loop = new_event_loop(options.loop.value_or(available_loop_kinds().front()));
  if (options.debug) loop->set_debug(*options.debug);
  struct Shutdown {
    EventLoop& loop;
    ~Shutdown() {
      detail::cancel_remaining_tasks(loop);
      loop.close();
    }
  } shutdown{*loop};
  Task<T> task = loop->create_task(std::move(main), "main");
  return loop->run_until_complete(Future<T>(task));
}

}  // namespace strata
