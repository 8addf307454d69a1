#pragma once
/// @file
/// as_completed(): the futures of a set in the order they finish (asyncio.as_completed).

#include <deque>
#include <memory>
#include <optional>
#include <vector>

#include "strata/core/async_generator.hpp"
#include "strata/core/clock.hpp"
#include "strata/core/future.hpp"
#include "strata/core/task.hpp"

namespace strata {

namespace detail {
template <class T>
struct AsCompletedState {
  std::deque<Future<T>> finished;
  Future<void> wake;
  bool timed_out = false;

  void notify() {
    if (wake.valid() && !wake.done()) wake.set_result();
  }
};
}  // namespace detail

/// Yields each of @p futures once it is done, in the order they finish (Python 3.13's
/// `async for f in as_completed(...)`). Await the yielded future for its result.
///
/// @throws TimeoutError  (from next()) when @p timeout passes before all are done; the
/// futures themselves are not cancelled.
/// @par Cancellation  Not cancel-safe: a next() cancelled with its task throws
/// CancelledError, which ends the generator's body, so later next() calls return std::nullopt
/// (asyncio 3.13's iterator survives a cancelled __anext__; an AsyncGenerator cannot). The
/// futures are neither cancelled nor changed, the finished ones keep their results: use wait()
/// or a new as_completed() over those not yet seen to go on.
template <class T>
AsyncGenerator<Future<T>> as_completed(std::vector<Future<T>> futures,
                                       std::optional<Duration> timeout = std::nullopt) {
  auto state = std::make_shared<detail::AsCompletedState<T>>();
  struct Cleanup {
    std::vector<Future<T>>& futures;
    std::vector<CallbackId> ids;
    TimerHandle timer;
    ~Cleanup() {
      timer.cancel();
      for (std::size_t i = 0; i < ids.size(); ++i) futures[i].remove_done_callback(ids[i]);
    }
  } cleanup{futures, {}, {}};
  if (futures.empty()) co_return;

  EventLoop& loop = futures.front().get_loop();
  if (timeout) {
    cleanup.timer = loop.call_later(*timeout, [state] {
      state->timed_out = true;
      state->notify();
    });
  }
  for (auto& f : futures) {
    cleanup.ids.push_back(f.add_done_callback([state](Future<T>& done) {
      state->finished.push_back(done);
      state->notify();
    }));
  }
  for (std::size_t yielded = 0; yielded < futures.size(); ++yielded) {
    while (state->finished.empty()) {
      if (state->timed_out) throw TimeoutError("as_completed() timed out");
      state->wake = Future<void>(loop);
      co_await state->wake;
    }
    Future<T> next = std::move(state->finished.front());
    state->finished.pop_front();
    co_yield std::move(next);
  }
}

/// as_completed() over tasks.
template <class T>
AsyncGenerator<Future<T>> as_completed(std::vector<Task<T>> tasks,
                                       std::optional<Duration> timeout = std::nullopt) {
  return as_completed(std::vector<Future<T>>(tasks.begin(), tasks.end()), timeout);
}

}  // namespace strata
