// ChildWatch: a pidfd watched by the loop, or the per-loop SIGCHLD reaper; waitpid(pid) only.

#include "child_watch.hpp"

#include <fcntl.h>
#include <signal.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <mutex>
#include <string>
#include <system_error>
#include <unordered_map>
#include <vector>

#include "strata/core/detail/sigchld.hpp"
#include "strata/core/log.hpp"

namespace strata::detail {

namespace {

int pidfd_open(pid_t pid) noexcept { return static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)); }

int pidfd_send_signal(int pidfd, int sig) noexcept {
  return static_cast<int>(::syscall(SYS_pidfd_send_signal, pidfd, sig, nullptr, 0));
}

bool kernel_has_pidfd() noexcept {
  static const bool has = [] {
    // pidfd_open(2) of ourselves: ENOSYS on kernels before 5.3.
    const int fd = pidfd_open(::getpid());
    if (fd < 0) return errno != ENOSYS;
    ::close(fd);
    return true;
  }();
  return has;
}

// 0: the kernel's best; else 1 + ChildWatchMethod.
std::atomic<int> forced_method{0};

int returncode_of(int status) noexcept {
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return -WTERMSIG(status);
  return 255;
}

/// waitpid(pid, WNOHANG) without EINTR: the pid when reaped (status set), 0 while it runs,
/// -1 with errno (ECHILD: somebody else reaped it).
pid_t wait_nohang(pid_t pid, int& status) noexcept {
  for (;;) {
    const pid_t r = ::waitpid(pid, &status, WNOHANG);
    if (r < 0 && errno == EINTR) continue;
    return r;
  }
}

}  // namespace

ChildWatchMethod child_watch_method() noexcept {
  const int forced = forced_method.load();
  if (forced != 0) return static_cast<ChildWatchMethod>(forced - 1);
  return kernel_has_pidfd() ? ChildWatchMethod::pidfd : ChildWatchMethod::sigchld;
}

void set_child_watch_method(std::optional<ChildWatchMethod> method) {
  if (method == ChildWatchMethod::pidfd && !kernel_has_pidfd()) {
    throw std::system_error(std::make_error_code(std::errc::function_not_supported),
                            "set_child_watch_method: this kernel has no pidfd_open(2)");
  }
  forced_method.store(method ? static_cast<int>(*method) + 1 : 0);
}

// ---- The SIGCHLD reaper --------------------------------------------------------------------

/// The children of one loop that are watched with SIGCHLD: a pipe that the SIGCHLD handler
/// writes to (add_sigchld_listener), watched by the loop; on each wake, waitpid(pid, WNOHANG)
/// for each of its children. Made for a loop's first such child, destroyed with its last.
class SigchldReaper {
 public:
  /// The reaper of @p loop, made if it has none.
  static SigchldReaper& of(EventLoop& loop) {
    std::lock_guard lock(registry_mutex());
    SigchldReaper*& reaper = registry()[&loop];
    if (reaper == nullptr) {
      try {
        reaper = new SigchldReaper(loop);
      } catch (...) {
        registry().erase(&loop);
        throw;
      }
    }
    return *reaper;
  }

  /// Watches @p child from now on; a pass over the children follows in the next iteration,
  /// for a child that exited before the pipe was listening.
  void add(ChildWatch& child) {
    children_.push_back(&child);
    wake();
  }

  /// Forgets @p child; the reaper is destroyed with its last child.
  void remove(ChildWatch& child) noexcept {
    std::erase(children_, &child);
    if (children_.empty() && !polling_) destroy();
  }

 private:
  explicit SigchldReaper(EventLoop& loop) : loop_(&loop) {
    int fds[2];
    if (::pipe2(fds, O_NONBLOCK | O_CLOEXEC) != 0) {
      throw std::system_error(errno, std::generic_category(), "child watcher: pipe2");
    }
    read_fd_ = fds[0];
    write_fd_ = fds[1];
    try {
      watch_ = loop.open_watch(read_fd_);
      watch_->set_reader([this] { on_readable(); });
      add_sigchld_listener(write_fd_);
    } catch (...) {
      watch_.reset();
      ::close(read_fd_);
      ::close(write_fd_);
      throw;
    }
  }

  ~SigchldReaper() {
    remove_sigchld_listener(write_fd_);
    watch_.reset();
    ::close(read_fd_);
    ::close(write_fd_);
  }

  void destroy() noexcept {
    {
      std::lock_guard lock(registry_mutex());
      registry().erase(loop_);
    }
    delete this;
  }

  void wake() noexcept {
    const unsigned char byte = 0;
    [[maybe_unused]] ssize_t n = ::write(write_fd_, &byte, 1);
  }

  void on_readable() noexcept {
    unsigned char buffer[64];
    while (::read(read_fd_, buffer, sizeof buffer) > 0) {
    }
    // A child's on_exit may end other children's watches: poll those still here.
    polling_ = true;
    const std::vector<ChildWatch*> snapshot = children_;
    for (ChildWatch* child : snapshot) {
      if (std::find(children_.begin(), children_.end(), child) != children_.end()) child->poll();
    }
    polling_ = false;
    if (children_.empty()) destroy();
  }

  static std::mutex& registry_mutex() {
    static std::mutex mutex;
    return mutex;
  }
  static std::unordered_map<EventLoop*, SigchldReaper*>& registry() {
    static std::unordered_map<EventLoop*, SigchldReaper*> map;
    return map;
  }

  EventLoop* loop_;
  int read_fd_ = -1;
  int write_fd_ = -1;
  IoWatchPtr watch_;  // of read_fd_
  std::vector<ChildWatch*> children_;
  bool polling_ = false;
};

// ---- ChildWatch ----------------------------------------------------------------------------

ChildWatch::ChildWatch(EventLoop& loop, pid_t pid, OnExit on_exit)
    : pid_(pid), on_exit_(std::move(on_exit)) {
  if (child_watch_method() == ChildWatchMethod::pidfd) {
    pidfd_ = pidfd_open(pid);  // close-on-exec by the kernel's own rule
    if (pidfd_ < 0 && errno == ESRCH) {
      // Reaped already: SIGCHLD is SIG_IGN (or SA_NOCLDWAIT) and the kernel reaped it at exit.
      // Its status is lost; report it as the SIGCHLD method would, in an iteration of its own.
      reaped_ = true;
      late_exit_ = loop.call_soon([this] { finish(unknown_status()); });
      return;
    }
    if (pidfd_ < 0) {
      throw std::system_error(errno, std::generic_category(),
                              "pidfd_open of child " + std::to_string(pid));
    }
    try {
      pidfd_watch_ = loop.open_watch(pidfd_);
      pidfd_watch_->set_reader([this] { on_pidfd_readable(); });
    } catch (...) {
      pidfd_watch_.reset();
      ::close(pidfd_);
      throw;
    }
  } else {
    reaper_ = &SigchldReaper::of(loop);
    reaper_->add(*this);
  }
}

ChildWatch::~ChildWatch() {
  // Nobody will hear of this child any more: end it now rather than leave a zombie.
  kill_and_reap();
}

std::optional<int> ChildWatch::kill_and_reap() noexcept {
  late_exit_.cancel();
  std::optional<int> returncode;
  if (!reaped_) {
    if (pidfd_ >= 0) {
      pidfd_send_signal(pidfd_, SIGKILL);
    } else {
      ::kill(pid_, SIGKILL);
    }
    int status = 0;
    pid_t r;
    while ((r = ::waitpid(pid_, &status, 0)) < 0 && errno == EINTR) {
    }
    returncode = r == pid_ ? returncode_of(status) : 255;
    reaped_ = true;
  }
  stop_watching();
  on_exit_ = {};
  return returncode;
}

void ChildWatch::stop_watching() noexcept {
  if (pidfd_ >= 0) {
    pidfd_watch_.reset();
    ::close(pidfd_);
    pidfd_ = -1;
  }
  if (SigchldReaper* reaper = std::exchange(reaper_, nullptr)) reaper->remove(*this);
}

void ChildWatch::send_signal(int sig) {
  if (reaped_) {
    throw std::system_error(std::make_error_code(std::errc::no_such_process),
                            "send_signal: process " + std::to_string(pid_) + " has exited");
  }
  const int r = pidfd_ >= 0 ? pidfd_send_signal(pidfd_, sig) : ::kill(pid_, sig);
  if (r == 0 || errno == ESRCH) return;  // ESRCH: it exited; the reaping is on its way
  throw std::system_error(errno, std::generic_category(),
                          "send_signal " + std::to_string(sig) + " to process " +
                              std::to_string(pid_));
}

void ChildWatch::on_pidfd_readable() noexcept { poll(); }

void ChildWatch::poll() noexcept {
  if (reaped_) return;
  int status = 0;
  const pid_t r = wait_nohang(pid_, status);
  if (r == 0) return;  // still running (a SIGCHLD for another child, or a stop)
  if (r < 0) {
    finish(unknown_status());
    return;
  }
  finish(returncode_of(status));
}

int ChildWatch::unknown_status() const noexcept {
  log(LogLevel::warning, "Unknown child process pid " + std::to_string(pid_) +
                             ", will report returncode 255 (it was reaped elsewhere)");
  return 255;
}

void ChildWatch::finish(int returncode) noexcept {
  reaped_ = true;
  stop_watching();
  OnExit on_exit = std::move(on_exit_);
  if (on_exit) on_exit(returncode);
}

}  // namespace strata::detail
