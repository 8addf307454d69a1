#include "strata/core/run.hpp"

#include <sys/syscall.h>
#include <unistd.h>

#include <csignal>

#include "strata/core/log.hpp"

namespace strata::detail {

void cancel_remaining_tasks(EventLoop& loop) noexcept {
  try {
    // Cancelled tasks may start new ones while unwinding; a few rounds catch those too.
    for (int round = 0; round < 10; ++round) {
      std::vector<TaskRef> tasks = all_tasks(loop);
      if (tasks.empty()) return;
      for (TaskRef& t : tasks) t.cancel();
      Future<void> all_done(loop);
      auto remaining = std::make_shared<std::size_t>(tasks.size());
      for (TaskRef& t : tasks) {
        t.future().add_done_callback([remaining, all_done](FutureStateBase&) mutable {
          if (--*remaining == 0 && !all_done.done()) all_done.set_result();
        });
      }
      loop.run_until_complete(all_done);
      for (TaskRef& t : tasks) {
        if (t.cancelled()) continue;
        if (std::exception_ptr e = t.future().exception()) {
          loop.call_exception_handler({"unhandled exception during strata::run() shutdown", e,
                                       {}, t.get_name()});
        }
      }
    }
  } catch (const std::exception& e) {
    log(LogLevel::error, std::string("strata::run() shutdown: ") + e.what());
  }
}

namespace {
bool on_main_thread() noexcept { return ::syscall(SYS_gettid) == ::getpid(); }

bool sigint_has_default_disposition() noexcept {
  struct sigaction current {};
  return ::sigaction(SIGINT, nullptr, &current) == 0 && !(current.sa_flags & SA_SIGINFO) &&
         current.sa_handler == SIG_DFL;
}
}  // namespace

SigintCancelsMain::SigintCancelsMain(EventLoop& loop, TaskRef main, bool enabled) : loop_(loop) {
  if (!enabled || !on_main_thread() || !sigint_has_default_disposition()) return;
  loop.add_signal_handler(SIGINT, [this, main]() mutable {
    interrupted_ = true;
    if (!main.done()) main.cancel("interrupted by SIGINT");
    // Back to the default: a second Ctrl-C ends the process even if the loop is stuck.
    loop_.remove_signal_handler(SIGINT);
    installed_ = false;
  });
  installed_ = true;
}

SigintCancelsMain::~SigintCancelsMain() {
  if (installed_ && !loop_.is_closed()) loop_.remove_signal_handler(SIGINT);
}

}  // namespace strata::detail
