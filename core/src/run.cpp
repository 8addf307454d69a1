#include "strata/core/run.hpp"

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

}  // namespace strata::detail
