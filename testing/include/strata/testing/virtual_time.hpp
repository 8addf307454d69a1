#pragma once
/// @file
/// Loops on virtual time: tests of timeouts that take microseconds, not seconds.

#include <memory>

#include <strata/core/clock.hpp>
#include <strata/core/coro.hpp>
#include <strata/core/event_loop.hpp>
#include <strata/core/sleep.hpp>
#include <strata/core/task.hpp>

/// The test kit: virtual time, a mock transport, Catch2 helpers (strata/testing/catch2.hpp).
namespace strata::testing {

/// A new loop of @p kind whose clock is virtual: time() starts at the real clock's present and
/// moves only when the loop has nothing to do but wait for a timer; it then jumps straight to
/// that timer's deadline (after one look at I/O that found nothing ready). Everything that
/// schedules through the loop's clock follows: sleep(), wait_for(), timeout(), call_later(),
/// and the timeouts inside transports, TLS and HTTP. A test of a 30-second timeout so runs in
/// microseconds, and its timers still fire in deadline order, each at its own virtual time.
///
/// Real I/O still works: the loop only jumps when a zero-timeout poll finds nothing ready, so
/// connections between tasks of the same loop over 127.0.0.1 or Unix sockets behave as on a
/// real clock. A peer in another thread or process is not waited for before a jump: a test
/// that talks to one should keep real time.
///
/// Like trio's MockClock with autojump_threshold=0, or Tokio's paused clock with
/// auto-advance.
/// @throws std::system_error  the backend could not be created.
inline std::unique_ptr<EventLoop> new_virtual_time_loop(
    LoopKind kind = available_loop_kinds().front()) {
  std::unique_ptr<EventLoop> loop = new_event_loop(kind);
  strata::detail::enable_virtual_time(*loop);
  return loop;
}

/// Moves the clock of a virtual-time loop forward by @p d at once; timers that become due run
/// on the loop's next iteration, all in one batch (trio's MockClock.jump()). advance() is
/// usually what a test wants instead.
/// @throws std::invalid_argument  @p loop is not on virtual time.
inline void jump(EventLoop& loop, Duration d) { strata::detail::advance_virtual_time(loop, d); }

/// @cond INTERNAL
namespace testing_detail {
inline Coro<void> advance_by(Duration d) { co_await sleep(d); }
}  // namespace testing_detail
/// @endcond

/// Runs a virtual-time loop that is not running until its clock has moved forward by @p d:
/// every callback, timer and task step due in that span runs, in deadline order, at its own
/// virtual time, without real sleeping. Inside a task, `co_await strata::sleep(d)` does the
/// same.
/// @throws EventLoopError  the loop is running or closed.
inline void advance(EventLoop& loop, Duration d) {
  loop.run_until_complete(testing_detail::advance_by(d));
}

}  // namespace strata::testing
