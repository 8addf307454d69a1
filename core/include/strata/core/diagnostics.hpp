#pragma once
/// @file
/// Task dumps: every pending task of a loop with its await chain, as data (task_tree()) or as
/// text (format_tasks(), dump_tasks()).

#include <string>
#include <vector>

#include "strata/core/clock.hpp"

namespace strata {

class EventLoop;

/// One co_await of a task's await chain: where a coroutine of the task is suspended.
struct AwaitFrameInfo {
  std::string function;  ///< the coroutine's function name (unqualified)
  std::string file;      ///< its source file, as the compiler was given it
  unsigned line = 0;     ///< the line of the co_await
  std::string awaiting;  ///< what it awaits: "sleep", "Lock::acquire", a type name...
};

/// A pending task as task_tree() sees it.
struct TaskInfo {
  /// Where the task is: not started yet, scheduled to run (woken, or yielding with
  /// sleep(0)), running now (the caller's own task), or suspended on a future.
  enum class State { not_started, scheduled, running, suspended };

  std::string name;                  ///< the task's name
  State state = State::not_started;  ///< where the task is
  /// How long since the task last suspended, on the loop's clock (measured from the
  /// iteration in which it suspended).
  Duration suspended_for{};
  /// The task's await chain, from its root coroutine to the leaf co_await; empty when the
  /// task has not started or is running.
  std::vector<AwaitFrameInfo> chain;
  /// The future the task waits on, when suspended: "Task 'name'" or "Future".
  std::string waiting_on;
  /// The tasks this task awaits directly, with their own chains (a tree).
  std::vector<TaskInfo> awaited_tasks;
};

/// "not started", "scheduled", "running" or "suspended".
const char* to_string(TaskInfo::State state) noexcept;

/// Every pending task of @p loop as a forest: a task awaited by another task appears under it,
/// not at the top. Loop thread only.
std::vector<TaskInfo> task_tree(EventLoop& loop);

/// task_tree() as text: per task a line "Task 'name' (state for 1.234 s)", then its chain one
/// frame per line ("function at file:line", the leaf with "awaiting ..."), awaited tasks
/// indented under it. Files are shown by their base name. Loop thread only.
std::string format_tasks(EventLoop& loop);

/// Writes format_tasks() to standard error with a header naming the loop and the number of
/// pending tasks (what the example servers do on SIGUSR1). Loop thread only.
void dump_tasks(EventLoop& loop);

}  // namespace strata
