#pragma once
// What the loop needs from the task machinery when it closes (implemented in task.cpp).

#include <string>

#include "strata/core/detail/await_frame.hpp"

namespace strata {
class EventLoop;
}

namespace strata::detail {

/// Destroys the coroutine of every pending task of @p loop, reporting each as
/// "Task was destroyed but it is pending!" through the loop's exception handler.
void abandon_pending_tasks(EventLoop& loop) noexcept;

/// Whether @p loop still has tasks that are not done.
bool has_pending_tasks(const EventLoop& loop) noexcept;

/// The loop running on this thread, or nullptr.
EventLoop* current_running_loop() noexcept;

class TaskCore;
/// @p task's await chain, one frame per line, each line starting with @p indent
/// (src/diagnostics.cpp; the task must be suspended or scheduled, not running).
std::string format_await_chain(TaskCore& task, const std::string& indent);
/// "function at file:line", or empty for a site never set.
std::string format_await_site(const AwaitSite& site);

}  // namespace strata::detail
