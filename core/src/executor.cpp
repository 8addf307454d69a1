#include "strata/core/executor.hpp"

#include <memory>

#include "strata/core/thread_pool_executor.hpp"

namespace strata {

Executor::~Executor() = default;

namespace detail {
void ExecutorDeleter::operator()(Executor* executor) const noexcept { delete executor; }
}  // namespace detail

Executor& EventLoop::default_executor() {
  if (is_closed()) throw EventLoopError("Event loop is closed");
  if (debug_) check_thread("default_executor");
  if (!default_executor_) default_executor_.reset(new ThreadPoolExecutor());
  return *default_executor_;
}

void EventLoop::close_default_executor() noexcept {
  if (!default_executor_) return;
  default_executor_->shutdown(/*wait=*/true, /*cancel_futures=*/true);
  default_executor_.reset();
}

}  // namespace strata
