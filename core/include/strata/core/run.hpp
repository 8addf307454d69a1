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
  /// Turn SIGINT (Ctrl-C) into cancellation of the main task, as asyncio.run() does. Applies
  /// only on the process's main thread, and only while SIGINT has its default disposition
  /// (a program that set its own SIGINT handler keeps it).
  bool handle_sigint = true;
};

namespace detail {
/// After the main task: cancels every remaining task, runs the loop until they are done and
/// reports their exceptions to the exception handler (asyncio's _cancel_all_tasks).
void cancel_remaining_tasks(EventLoop& loop) noexcept;

/// For the length of a strata::run(): the first SIGINT cancels the main task and restores
/// SIGINT's default disposition, so that a second Ctrl-C ends the process even if the loop is
/// stuck in a callback that does not return.
class SigintCancelsMain {
 public:
  SigintCancelsMain(EventLoop& loop, TaskRef main, bool enabled);
  ~SigintCancelsMain();
  SigintCancelsMain(const SigintCancelsMain&) = delete;
  SigintCancelsMain& operator=(const SigintCancelsMain&) = delete;

  /// Whether SIGINT arrived.
  bool interrupted() const noexcept { return interrupted_; }

 private:
  EventLoop& loop_;
  bool installed_ = false;
  bool interrupted_ = false;
};
}  // namespace detail

/// Runs @p main on a new event loop and returns its result (asyncio.run()).
///
/// Creates a loop, runs @p main as a task until it is done, then cancels whatever tasks are
/// left and lets them finish, and closes the loop. The result or exception of @p main is
/// what run() returns or throws.
///
/// While it runs, SIGINT cancels the main task (see RunOptions::handle_sigint): the
/// coroutines unwind, and if the main task ends cancelled, run() throws KeyboardInterrupt once
/// the loop is closed. A main task that catches the cancellation and returns has its result
/// returned.
///
/// @throws EventLoopError  a loop is already running on this thread.
/// @throws KeyboardInterrupt  SIGINT cancelled the main task.
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
  detail::SigintCancelsMain sigint(*loop, task.ref(), options.handle_sigint);
  try {
    return loop->run_until_complete(Future<T>(task));
  } catch (const CancelledError&) {
    if (sigint.interrupted()) throw KeyboardInterrupt();
    throw;
  }
}

}  // namespace strata
