// Signal handlers on the loop (asyncio's add_signal_handler), through a self-pipe.
//
// A process-wide table maps each signal to the write end of the pipe of the loop that handles
// it. The C handler only writes the signal's number to that pipe, which is async-signal-safe
// and works whichever thread the kernel picks to take the signal. The loop watches the read
// end like any descriptor and runs the handlers on its own thread.

#include <fcntl.h>
#include <sched.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <csignal>
#include <mutex>
#include <stdexcept>
#include <string>
#include <system_error>

#include "base_event_loop.hpp"
#include "strata/core/detail/sigchld.hpp"
#include "strata/core/errors.hpp"

namespace strata::detail {

namespace {

struct SignalSlot {
  std::atomic<int> write_fd{-1};    // read by the C handler
  const EventLoop* owner = nullptr;  // guarded by table_mutex
  struct sigaction previous {};      // the disposition to restore; guarded by table_mutex
};

SignalSlot slots[NSIG];
std::mutex table_mutex;
// C handlers between reading a write_fd and finishing their write(): a pipe is closed only
// once none may still write to it.
std::atomic<int> handlers_running{0};

// The SIGCHLD listeners of the child watcher (add_sigchld_listener): pipes that hear every
// SIGCHLD, whichever loop, if any, handles the signal itself.
constexpr int max_sigchld_listeners = 64;
// Each holds a listener's descriptor + 1, so that the zero of static storage means free.
std::atomic<int> sigchld_listeners[max_sigchld_listeners];  // read by the C handler
int sigchld_listener_count = 0;                              // guarded by table_mutex
// Whether the listeners installed the handler of SIGCHLD themselves (no loop handled it then,
// or the loop that did has let go since), and the disposition to restore when the last goes.
bool sigchld_held = false;           // guarded by table_mutex
struct sigaction sigchld_previous {};  // guarded by table_mutex

static_assert(std::atomic<int>::is_always_lock_free, "the signal handler needs lock-free atomics");
static_assert(NSIG <= 256, "a signal number travels through the pipe as one byte");

extern "C" void strata_signal_handler(int sig) {
  const int saved_errno = errno;
  handlers_running.fetch_add(1);
  const int fd = slots[sig].write_fd.load();
  if (fd >= 0) {
    const auto byte = static_cast<unsigned char>(sig);
    // A full pipe already holds wake-ups enough; the loss of this byte only coalesces.
    [[maybe_unused]] ssize_t n = ::write(fd, &byte, 1);
  }
  if (sig == SIGCHLD) {
    for (std::atomic<int>& listener : sigchld_listeners) {
      const int listener_fd = listener.load() - 1;
      if (listener_fd < 0) continue;
      const unsigned char byte = 0;
      [[maybe_unused]] ssize_t n = ::write(listener_fd, &byte, 1);
    }
  }
  handlers_running.fetch_sub(1);
  errno = saved_errno;
}

void check_signal_number(int sig) {
  if (sig <= 0 || sig >= NSIG) {
    throw std::invalid_argument("signal number " + std::to_string(sig) + " is out of range");
  }
}

void wait_for_running_handlers() noexcept {
  while (handlers_running.load() != 0) sched_yield();
}

struct sigaction strata_action(int flags) noexcept {
  struct sigaction action {};
  action.sa_handler = strata_signal_handler;
  sigemptyset(&action.sa_mask);
  action.sa_flags = flags;
  return action;
}

// A loop stops handling @p sig (table_mutex held): restores the disposition it found, unless
// SIGCHLD listeners still need the handler; they then take over the disposition to restore.
void release_slot(int sig, SignalSlot& slot) noexcept {
  slot.write_fd.store(-1);
  slot.owner = nullptr;
  if (sig == SIGCHLD && sigchld_listener_count > 0) {
    if (!sigchld_held) {
      sigchld_previous = slot.previous;
      sigchld_held = true;
    }
    return;  // the handler stays installed
  }
  ::sigaction(sig, &slot.previous, nullptr);  // cannot fail: it was read by sigaction itself
}

}  // namespace

void BaseEventLoop::do_add_signal_handler(int sig, Callback&& callback) {
  check_signal_number(sig);
  if (sig == SIGKILL || sig == SIGSTOP) {
    throw std::invalid_argument("signal " + std::to_string(sig) + " cannot be caught");
  }
  check_open();
  if (debug_) check_thread("add_signal_handler");
  auto handler = std::make_shared<Callback>(std::move(callback));

  std::lock_guard lock(table_mutex);
  SignalSlot& slot = slots[sig];
  if (slot.owner == this) {
    signal_handlers_[sig] = std::move(handler);
    return;
  }
  if (slot.owner != nullptr) {
    throw EventLoopError("signal " + std::to_string(sig) + " is handled by another event loop");
  }
  if (signal_read_fd_ < 0) {
    int fds[2];
    if (::pipe2(fds, O_NONBLOCK | O_CLOEXEC) != 0) {
      throw std::system_error(errno, std::generic_category(), "add_signal_handler: pipe2");
    }
    try {
      signal_watch_ = open_watch(fds[0]);
      signal_watch_->set_reader([this] { read_signals(); });
    } catch (...) {
      signal_watch_.reset();
      ::close(fds[0]);
      ::close(fds[1]);
      throw;
    }
    signal_read_fd_ = fds[0];
    signal_write_fd_ = fds[1];
  }
  // The slot points at the pipe before the handler is installed, so that no signal is lost.
  slot.write_fd.store(signal_write_fd_);
  // System calls the signal interrupts resume, as asyncio asks.
  const struct sigaction action = strata_action(SA_RESTART);
  if (sig == SIGCHLD && sigchld_held) {
    // The listeners' handler is the same function: the loop takes over the disposition that
    // was there before them, to restore when both are gone.
    ::sigaction(sig, &action, nullptr);
    slot.previous = sigchld_previous;
    sigchld_held = false;
  } else if (::sigaction(sig, &action, &slot.previous) != 0) {
    const int error = errno;
    slot.write_fd.store(-1);
    if (signal_handlers_.empty()) close_signal_pipe();
    throw std::system_error(error, std::generic_category(),
                            "add_signal_handler: sigaction(" + std::to_string(sig) + ")");
  }
  slot.owner = this;
  signal_handlers_[sig] = std::move(handler);
}

bool BaseEventLoop::remove_signal_handler(int sig) {
  check_signal_number(sig);
  if (debug_) check_thread("remove_signal_handler");
  std::lock_guard lock(table_mutex);
  SignalSlot& slot = slots[sig];
  if (slot.owner != this) return false;
  release_slot(sig, slot);
  signal_handlers_.erase(sig);
  if (signal_handlers_.empty()) close_signal_pipe();
  return true;
}

void BaseEventLoop::remove_all_signal_handlers() noexcept {
  std::lock_guard lock(table_mutex);
  for (auto& [sig, handler] : signal_handlers_) release_slot(sig, slots[sig]);
  signal_handlers_.clear();
  close_signal_pipe();
}

// Called with table_mutex held, once no slot points at the pipe.
void BaseEventLoop::close_signal_pipe() noexcept {
  if (signal_read_fd_ < 0) return;
  wait_for_running_handlers();  // a handler that read the descriptor before it was unhooked
  signal_watch_.reset();
  ::close(signal_read_fd_);
  ::close(signal_write_fd_);
  signal_read_fd_ = signal_write_fd_ = -1;
}

void BaseEventLoop::read_signals() {
  unsigned char buffer[64];
  for (;;) {
    const ssize_t n = ::read(signal_read_fd_, buffer, sizeof buffer);
    if (n <= 0) {
      if (n < 0 && errno == EINTR) continue;
      return;  // drained (EAGAIN)
    }
    for (ssize_t i = 0; i < n; ++i) {
      // Looked up per arrival: a handler may remove or replace another, or itself, or close
      // the pipe this loop reads from.
      auto it = signal_handlers_.find(buffer[i]);
      if (it == signal_handlers_.end()) continue;
      std::shared_ptr<Callback> handler = it->second;
      try {
        (*handler)();
      } catch (...) {
        call_exception_handler({"Exception in signal handler for signal " +
                                    std::to_string(buffer[i]),
                                std::current_exception(), {}, {}});
      }
      if (signal_read_fd_ < 0) return;
    }
    if (static_cast<std::size_t>(n) < sizeof buffer) return;
  }
}

// ---- SIGCHLD listeners -----------------------------------------------------------------

void add_sigchld_listener(int write_fd) {
  std::lock_guard lock(table_mutex);
  std::atomic<int>* free_slot = nullptr;
  for (std::atomic<int>& listener : sigchld_listeners) {
    if (listener.load() == 0) {
      free_slot = &listener;
      break;
    }
  }
  if (free_slot == nullptr) {
    throw std::system_error(std::make_error_code(std::errc::too_many_files_open),
                            "add_sigchld_listener: " + std::to_string(max_sigchld_listeners) +
                                " event loops watch children already");
  }
  if (sigchld_listener_count == 0 && slots[SIGCHLD].owner == nullptr) {
    const struct sigaction action = strata_action(SA_RESTART | SA_NOCLDSTOP);
    if (::sigaction(SIGCHLD, &action, &sigchld_previous) != 0) {
      throw std::system_error(errno, std::generic_category(),
                              "add_sigchld_listener: sigaction(SIGCHLD)");
    }
    sigchld_held = true;
  }
  free_slot->store(write_fd + 1);
  ++sigchld_listener_count;
}

void remove_sigchld_listener(int write_fd) noexcept {
  std::lock_guard lock(table_mutex);
  bool found = false;
  for (std::atomic<int>& listener : sigchld_listeners) {
    if (listener.load() == write_fd + 1) {
      listener.store(0);
      found = true;
      break;
    }
  }
  if (!found) return;
  wait_for_running_handlers();  // a handler that read the descriptor before it was unhooked
  if (--sigchld_listener_count > 0 || !sigchld_held) return;
  sigchld_held = false;
  SignalSlot& slot = slots[SIGCHLD];
  if (slot.owner != nullptr) {
    slot.previous = sigchld_previous;  // the loop's handler stays; it restores this later
  } else {
    ::sigaction(SIGCHLD, &sigchld_previous, nullptr);
  }
}

}  // namespace strata::detail
