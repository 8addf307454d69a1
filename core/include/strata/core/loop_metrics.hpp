#pragma once
/// @file
/// What a loop can tell about itself: LoopMetrics (EventLoop::metrics()) and the stall
/// detector's StallReport (EventLoop::set_stall_handler()).

#include <array>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>

#include "strata/core/clock.hpp"

namespace strata {

/// A snapshot of a loop's counters (EventLoop::metrics()). The counters are kept whether or
/// not anybody reads them: a few increments per iteration and per I/O operation.
struct LoopMetrics {
  /// The upper bounds of the loop-lag histogram's buckets; the last bucket has no bound.
  static constexpr std::array<Duration, 5> lag_bounds{
      std::chrono::microseconds(100), std::chrono::milliseconds(1), std::chrono::milliseconds(10),
      std::chrono::milliseconds(100), std::chrono::seconds(1)};

  std::uint64_t iterations = 0;       ///< loop iterations run
  std::uint64_t callbacks = 0;        ///< callbacks run (task steps included)
  std::size_t ready_now = 0;          ///< callbacks queued to run now
  std::size_t ready_max = 0;          ///< the most callbacks one iteration found queued
  std::size_t timers_pending = 0;     ///< timers scheduled and not cancelled
  /// Timers fired, by how late they ran (loop lag): bucket i counts lateness below
  /// lag_bounds[i] (and at or above the bound before it); the last bucket, 1 s or more.
  std::array<std::uint64_t, lag_bounds.size() + 1> lag_histogram{};
  Duration lag_max{};                 ///< the latest any timer ran
  std::uint64_t stalls = 0;           ///< callbacks that held the loop past the stall threshold
  std::size_t tasks_alive = 0;        ///< tasks created and not yet destroyed
  std::size_t transports_open = 0;    ///< transports and servers open on the loop
  std::size_t write_buffered = 0;     ///< bytes the transports hold, not yet sent
  std::uint64_t bytes_read = 0;       ///< bytes the transports received
  std::uint64_t bytes_written = 0;    ///< bytes the transports handed to the kernel
  /// Buffers of the loop's shared receive pool that connections hold, their bytes not yet
  /// delivered (or, on the proactor loop on io_uring, being sent back from there); 0 on the
  /// other loops, which have no pool. A count near the pool's 256 means connections fall back
  /// to receive buffers of their own.
  std::size_t receive_buffers_held = 0;

  /// The snapshot as readable lines ("iterations 1234", ...), for logs and SIGUSR2.
  std::string format() const;
};

/// What the stall detector reports: one callback or task step that held the loop longer than
/// the stall threshold (EventLoop::set_stall_threshold()). Reported once, when it returns.
struct StallReport {
  Duration held{};            ///< how long the callback ran
  std::string callback;       ///< the callback, as Handle::describe() names it
  std::string task;           ///< for a task step, the task's name; empty otherwise
  /// For a task step: the co_await the task resumed from ("file:line in function"), so the
  /// code that held the loop lies between it and the task's next suspension.
  std::string resumed_from;
  /// For a task step: the task's await chain after the step, one frame per line; empty when
  /// the step ended the task.
  std::string now_awaiting;

  /// One readable message with all of the above.
  std::string format() const;
};

/// Receives each StallReport (EventLoop::set_stall_handler()). Runs on the loop's thread.
using StallHandler = std::function<void(const StallReport&)>;

namespace detail {
/// The counters behind LoopMetrics (the rest is computed when a snapshot is taken): the loop
/// keeps most, the transports add the bytes they read and write (EventLoop::stats()).
struct LoopStats {
  std::uint64_t iterations = 0;
  std::uint64_t callbacks = 0;
  std::size_t ready_max = 0;
  std::array<std::uint64_t, LoopMetrics::lag_bounds.size() + 1> lag_histogram{};
  Duration lag_max{};
  std::uint64_t stalls = 0;
  std::size_t tasks_alive = 0;
  std::uint64_t bytes_read = 0;
  std::uint64_t bytes_written = 0;
  std::size_t receive_buffers_held = 0;

  /// Counts a timer that ran @p late after its deadline.
  void timer_fired(Duration late) noexcept {
    std::size_t i = 0;
    while (i < LoopMetrics::lag_bounds.size() && late >= LoopMetrics::lag_bounds[i]) ++i;
    ++lag_histogram[i];
    if (late > lag_max) lag_max = late;
  }
};
}  // namespace detail

}  // namespace strata
