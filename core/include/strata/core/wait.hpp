#pragma once
/// @file
/// wait(): wait for some or all of a set of futures (asyncio.wait).

#include <memory>
#include <optional>
#include <stdexcept>
#include <vector>

#include "strata/core/clock.hpp"
#include "strata/core/coro.hpp"
#include "strata/core/future.hpp"
#include "strata/core/task.hpp"

namespace strata {

/// When wait() returns (asyncio's FIRST_COMPLETED, FIRST_EXCEPTION, ALL_COMPLETED).
enum class ReturnWhen {
  first_completed,  ///< as soon as any future is done (or cancelled)
  first_exception,  ///< as soon as any future fails; else when all are done
  all_completed,    ///< when every future is done
};

/// What wait() returns: the futures that are done and those still pending, each in the
/// order they were given.
template <class T>
struct WaitResult {
  std::vector<Future<T>> done;     ///< the futures that are done (or cancelled)
  std::vector<Future<T>> pending;  ///< the futures still pending; wait() does not cancel them
};

namespace detail {
template <class T>
Coro<WaitResult<T>> wait_impl(std::vector<Future<T>> futures, ReturnWhen when,
                              std::optional<Duration> timeout);

struct WaitState {
  std::size_t remaining;
  ReturnWhen when;
  Future<void> waiter;
};
}  // namespace detail

/// Waits until the futures (or tasks) meet @p when, or @p timeout passes, and returns which
/// are done and which are pending (asyncio.wait). Nothing is cancelled or raised on timeout:
/// the pending ones are just reported as pending.
///
/// @throws std::invalid_argument  @p futures is empty.
/// @par Cancellation  Cancel-safe: cancelling the waiting task leaves the futures untouched
/// and running; only the wait is undone.
template <class T>
Coro<WaitResult<T>> wait(std::vector<Future<T>> futures, ReturnWhen when = ReturnWhen::all_completed,
                         std::optional<Duration> timeout = std::nullopt) {
  // Checked here, at the call, rather than when the coroutine first runs.
  if (futures.empty()) throw std::invalid_argument("wait() needs at least one future");
  return detail::wait_impl(std::move(futures), when, timeout);
}

namespace detail {
template <class T>
Coro<WaitResult<T>> wait_impl(std::vector<Future<T>> futures, ReturnWhen when,
                              std::optional<Duration> timeout) {
  EventLoop& loop = futures.front().get_loop();
  auto state = std::make_shared<detail::WaitState>(
      detail::WaitState{futures.size(), when, Future<void>(loop)});

  struct Cleanup {
    std::vector<Future<T>>& futures;
    std::vector<CallbackId> ids;
    TimerHandle timer;
    ~Cleanup() {
      timer.cancel();
      for (std::size_t i = 0; i < ids.size(); ++i) futures[i].remove_done_callback(ids[i]);
    }
  } cleanup{futures, {}, {}};

  if (timeout) {
    cleanup.timer = loop.call_later(*timeout, [state] {
      if (!state->waiter.done()) state->waiter.set_result();
    });
  }
  cleanup.ids.reserve(futures.size());
  for (auto& f : futures) {
    cleanup.ids.push_back(f.state()->add_done_callback([state](detail::FutureStateBase& f) {
      --state->remaining;
      bool release = state->remaining == 0 || state->when == ReturnWhen::first_completed ||
                     (state->when == ReturnWhen::first_exception && f.has_exception());
      if (release && !state->waiter.done()) state->waiter.set_result();
    }));
  }
  co_await state->waiter;

  WaitResult<T> result;
  for (auto& f : futures) (f.done() ? result.done : result.pending).push_back(f);
  co_return result;
}
}  // namespace detail

/// wait() over tasks.
template <class T>
Coro<WaitResult<T>> wait(std::vector<Task<T>> tasks, ReturnWhen when = ReturnWhen::all_completed,
                         std::optional<Duration> timeout = std::nullopt) {
  std::vector<Future<T>> futures(tasks.begin(), tasks.end());
  return wait(std::move(futures), when, timeout);
}

}  // namespace strata
