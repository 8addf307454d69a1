#pragma once
/// @file
/// shield(): protect an awaitable from the cancellation of whoever awaits it (asyncio.shield).

#include "strata/core/awaitable.hpp"

namespace strata {

/// A Future that mirrors @p aw's outcome but whose cancellation does not reach @p aw.
///
/// `co_await shield(t)` in a task that gets cancelled throws CancelledError in that task,
/// while `t` (a Coro is wrapped in a Task) keeps running to completion. If @p aw is done
/// already, its own Future is returned.
///
/// @throws EventLoopError  @p aw is a Coro and no loop is running on this thread.
/// @par Cancellation  Cancel-safe for @p aw: cancelling the returned Future, or a task awaiting
/// it, cancels only that Future: @p aw runs on, and its outcome stays in its own Task or
/// Future. For a Coro (or another awaitable), that Task is not yours: its result is lost, and
/// an exception it ends with is not reported. Keep a Task to shield when its result matters.
template <Awaitable A>
Future<await_result_t<A>> shield(A aw) {
  using T = await_result_t<A>;
  Future<T> inner = ensure_future(std::move(aw));
  if (inner.done()) return inner;
  Future<T> outer(inner.get_loop());
  inner.add_done_callback([outer](Future<T>& in) mutable {
    if (outer.cancelled()) {
      if (!in.cancelled()) in.state()->mark_retrieved();  // nobody is left to report to
      return;
    }
    if (in.cancelled()) {
      outer.cancel(in.state()->cancel_message());
    } else if (std::exception_ptr e = in.exception()) {
      outer.set_exception(e);
    } else if constexpr (std::is_void_v<T>) {
      outer.set_result();
    } else {
      outer.set_result(in.state()->take());
    }
  });
  return outer;
}

}  // namespace strata
