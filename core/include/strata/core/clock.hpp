#pragma once
/// @file
/// The loop's clock: monotonic, nanosecond resolution.

#include <chrono>

namespace strata {

/// The clock every loop reads: std::chrono::steady_clock (monotonic).
using Clock = std::chrono::steady_clock;
/// A point on the loop's clock, as returned by EventLoop::time().
using TimePoint = Clock::time_point;
/// A span of time on the loop's clock (nanoseconds).
using Duration = Clock::duration;

}  // namespace strata
