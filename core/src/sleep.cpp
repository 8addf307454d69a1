#include "strata/core/sleep.hpp"

#include "strata/core/task.hpp"

namespace strata {

namespace detail {
void yield_task(std::coroutine_handle<> h) {
  TaskCore* task = TaskCore::current();
  if (task == nullptr) throw InvalidStateError("sleep() awaited outside a Task");
  task->yield(h);
}
}  // namespace detail

void SleepAwaiter::await_suspend(std::coroutine_handle<> h) {
  if (detail::TaskCore::current() == nullptr) throw InvalidStateError("sleep() awaited outside a Task");
  if (delay_ <= Duration::zero()) {
    detail::yield_task(h);
    return;
  }
  EventLoop& loop = get_running_loop();
  done_ = Future<void>(loop);
  timer_ = loop.call_later(delay_, [done = done_]() mutable {
    if (!done.done()) done.set_result();
  });
  try {
    detail::suspend_on_future(*done_.state(), h);
  } catch (...) {
    timer_.cancel();
    throw;
  }
}

void SleepAwaiter::await_resume() {
  if (timer_) timer_.cancel();
  detail::deliver_pending_cancel();
  if (done_.valid()) done_.result();  // CancelledError if the sleep itself was cancelled
}

}  // namespace strata
