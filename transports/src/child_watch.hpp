#pragma once
// Watching a child process until it exits, and reaping it: with a pidfd where the kernel has
// pidfd_open(2), else with SIGCHLD (see subprocess.hpp, "How its exit is watched").

#include <sys/types.h>

#include <optional>

#include "strata/core/detail/unique_function.hpp"
#include "strata/core/event_loop.hpp"
#include "strata/core/handle.hpp"
#include "strata/transports/subprocess.hpp"

namespace strata::detail {

class SigchldReaper;

/// One child of this process, watched on one loop until it exits; then reaped with
/// waitpid(pid) (never waitpid(-1)), and its returncode reported.
class ChildWatch {
 public:
  /// Called once, on the loop's thread, in its own loop iteration, with the returncode: the
  /// exit code, -N after signal N, or 255 when the child had been reaped by someone else
  /// (asyncio's "Unknown child process" rule; a warning is logged).
  using OnExit = UniqueFunction<void(int returncode)>;

  /// Starts watching @p pid, a child of this process not yet reaped, with the current
  /// child_watch_method().
  /// @throws std::system_error  pidfd_open(), a pipe or the loop refused; the child is then
  /// still the caller's to reap.
  ChildWatch(EventLoop& loop, pid_t pid, OnExit on_exit);
  ChildWatch(const ChildWatch&) = delete;
  ChildWatch& operator=(const ChildWatch&) = delete;
  /// Stops watching. A child not reaped yet is killed and reaped here (waiting for it), so
  /// that none is left a zombie; on_exit is then not called.
  ~ChildWatch();

  /// For the loop closing: kills the child if it is not reaped yet, reaps it (waiting for
  /// it), stops watching, and returns its returncode; on_exit is not called. A child reaped
  /// already gives std::nullopt.
  std::optional<int> kill_and_reap() noexcept;

  pid_t pid() const noexcept { return pid_; }
  /// Whether the child has been reaped (on_exit was called or is due).
  bool reaped() const noexcept { return reaped_; }
  /// Sends @p sig to the child: through the pidfd when there is one, else kill(pid), which
  /// cannot reach another process because the pid stays ours until we reap it. A child that
  /// exited but is not reaped yet takes no signal, and that is no error.
  /// @throws std::system_error  no_such_process once reaped; the kernel's refusal.
  void send_signal(int sig);

  /// For the SIGCHLD reaper: waitpid(pid, WNOHANG); reports the exit if the child is done.
  void poll() noexcept;

 private:
  void on_pidfd_readable() noexcept;
  void finish(int returncode) noexcept;
  /// 255, with a warning: the child was reaped by someone else (SIGCHLD set to SIG_IGN, or
  /// a waitpid(-1) elsewhere in the program).
  int unknown_status() const noexcept;
  void stop_watching() noexcept;

  pid_t pid_;
  int pidfd_ = -1;                     // the pidfd method
  IoWatchPtr pidfd_watch_;             // of pidfd_
  SigchldReaper* reaper_ = nullptr;    // the SIGCHLD method
  OnExit on_exit_;
  Handle late_exit_;  // the report of a child the kernel reaped before we could watch it
  bool reaped_ = false;
};

}  // namespace strata::detail
