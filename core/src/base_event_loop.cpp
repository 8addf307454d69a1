#include "base_event_loop.hpp"

#include <time.h>

#include <stdexcept>
#include <string>

#include "strata/core/errors.hpp"
#include "strata/core/future.hpp"
#include "strata/core/task.hpp"
#include "strata/core/log.hpp"
#include "task_registry.hpp"

namespace strata::detail {

namespace {
thread_local EventLoop* running_loop = nullptr;

/// The stall detector's clock: CLOCK_MONOTONIC_COARSE, the kernel's last tick (1-4 ms) read
/// from the vDSO without touching the TSC: a few instructions per callback, exact enough for a
/// threshold of tens of milliseconds.
TimePoint coarse_now() noexcept {
  timespec ts{};
  ::clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
  return TimePoint(std::chrono::seconds(ts.tv_sec) + std::chrono::nanoseconds(ts.tv_nsec));
}

std::string seconds(Duration d) {
  return std::to_string(std::chrono::duration<double>(d).count()) + " seconds";
}
}  // namespace

EventLoop* current_running_loop() noexcept { return running_loop; }

void BaseEventLoop::check_open() const {
  if (is_closed()) throw EventLoopError("Event loop is closed");
}

Handle BaseEventLoop::do_call_soon(Callback&& callback) {
  check_open();
  if (debug_) check_thread("call_soon");
  auto* h = HandleImpl::create(std::move(callback));
  h->add_ref();  // one for the ready queue, one for the returned Handle
  ready_.push_back(h);
  return Handle(h);
}

void BaseEventLoop::do_call_soon_handle(HandleImpl& handle) {
  check_open();
  if (debug_) check_thread("call_soon");
  push_ready(&handle);
}

TimerHandle BaseEventLoop::do_call_at(TimePoint when, Callback&& callback) {
  check_open();
  if (debug_) check_thread("call_later/call_at");
  auto* t = TimerHandleImpl::create(std::move(callback), when, this);
  t->add_ref();  // one for the timer queue, one for the returned TimerHandle
  timers_.push(t);
  return TimerHandle(t);
}

Handle BaseEventLoop::do_call_soon_threadsafe(Callback&& callback) {
  auto* h = HandleImpl::create(std::move(callback), /*threadsafe=*/true);
  h->add_ref();
  {
    std::lock_guard lock(inbox_mutex_);
    if (is_closed()) {
      h->release();
      h->release();
      throw EventLoopError("Event loop is closed");
    }
    inbox_.push_back(h);
  }
  if (!inbox_pending_.exchange(true, std::memory_order_acq_rel)) wake_up();
  return Handle(h);
}

void BaseEventLoop::take_threadsafe() {
  if (!inbox_pending_.load(std::memory_order_acquire)) return;
  inbox_pending_.store(false, std::memory_order_release);
  std::vector<HandleImpl*> batch;
  {
    std::lock_guard lock(inbox_mutex_);
    batch.swap(inbox_);
  }
  for (HandleImpl* h : batch) ready_.push_back(h);  // the inbox's reference moves over
}

void BaseEventLoop::timer_cancelled(TimerHandleImpl& timer) noexcept {
  if (timer.queued_) timers_.cancelled(&timer);
}

void BaseEventLoop::stop() noexcept {
  stopping_.store(true, std::memory_order_release);
  // Always wake: reading running_ or thread_id_ here would race with the loop's thread, and
  // a spare wake-up costs the loop one empty poll.
  wake_up();
}

void BaseEventLoop::run_forever() {
  check_can_run();
  thread_id_ = std::this_thread::get_id();
  running_ = true;
  running_loop = this;
  struct Restore {
    BaseEventLoop* self;
    ~Restore() {
      self->running_ = false;
      self->stopping_.store(false, std::memory_order_relaxed);
      running_loop = nullptr;
    }
  } restore{this};
  for (;;) {
    run_once();
    if (stopping_.load(std::memory_order_acquire)) break;
  }
}

void BaseEventLoop::poll_io() {
  // While callbacks are queued, the loop does not wait, and looks at I/O only every
  // io_poll_interval iterations (Tokio's event_interval): a task yielding with sleep(0) then
  // costs no system call, and I/O still gets its turn within a bounded number of iterations.
  if (!ready_.empty()) {
    if (++iterations_without_io_ >= io_poll_interval) {
      wait_for_events(Duration::zero());
      iterations_without_io_ = 0;
    }
    return;
  }
  iterations_without_io_ = 0;
  std::optional<Duration> timeout;
  if (stopping_.load(std::memory_order_relaxed) || inbox_pending_.load(std::memory_order_relaxed)) {
    timeout = Duration::zero();
  } else if (auto next = timers_.next_deadline()) {
    timeout = std::max(*next - time(), Duration::zero());
  }
  if (virtual_time_ && timeout && *timeout > Duration::zero()) {
    // Virtual time never sleeps for a timer: when a look at I/O finds nothing to do, the
    // clock jumps to the next deadline.
    wait_for_events(Duration::zero());
    if (ready_.empty() && !inbox_pending_.load(std::memory_order_relaxed)) virtual_now_ += *timeout;
    return;
  }
  wait_for_events(timeout);
}

void BaseEventLoop::run_once() {
  // Phase 1: wait for I/O, no longer than until the next timer.
  poll_io();
  take_threadsafe();

  // Phase 2: due timers join the ready queue; how late each one is feeds the lag histogram.
  // The precise clock is read only when there are timers; the coarse one (a few instructions)
  // dates the iteration otherwise, and times the callbacks for the stall detector.
  const TimePoint coarse = coarse_now();
  if (virtual_time_) {
    iteration_time_ = virtual_now_;
  } else {
    iteration_time_ = timers_.empty() ? coarse : Clock::now();
  }
  while (TimerHandleImpl* t = timers_.pop_due(iteration_time_)) {
    stats_.timer_fired(iteration_time_ - t->when());
    ready_.push_back(t);
  }

  // Phase 3: run what was ready when this phase began; what those callbacks schedule runs on
  // the next iteration, after a fresh look at I/O. With the stall detector on, one read of the
  // coarse clock after each callback measures it (its start is the previous one's end).
  std::size_t n = ready_.size();
  ++stats_.iterations;
  stats_.callbacks += n;
  if (n > stats_.ready_max) stats_.ready_max = n;
  const Duration threshold = stall_threshold_;
  TimePoint start = coarse;
  for (; n > 0; --n) {
    HandleImpl* h = ready_.pop_front();
    if (!h->cancelled()) {
      if (debug_) [[unlikely]] {
        run_handle(h);  // timed, for the slow-callback warning
      } else {
        // run_handle() without the timing, here rather than in a call: a task's step and an
        // I/O callback per request each save the call.
        try {
          h->run();
        } catch (...) {
          callback_failed(*h);
        }
      }
      if (threshold > Duration::zero()) {
        const TimePoint end = coarse_now();
        if (end - start >= threshold) stalled(*h, end - start);
        start = end;
        if (stepped_task_ != nullptr) std::exchange(stepped_task_, nullptr)->release();
      }
    }
    h->drop_threadsafe_callback();
    h->release();
  }
  if (stepped_task_ != nullptr) std::exchange(stepped_task_, nullptr)->release();
}

void BaseEventLoop::stalled(HandleImpl& handle, Duration held) noexcept {
  try {
    StallReport report;
    report.held = held;
    report.callback = handle.describe();
    if (stepped_task_ != nullptr) {
      TaskCore* task = stepped_task_->as_task();
      report.task = task->name();
      report.resumed_from = format_await_site(stepped_from_);
      if (!stepped_task_->done()) report.now_awaiting = format_await_chain(*task, "    ");
    }
    report_stall(report);
  } catch (...) {
    log(LogLevel::error, "the stall detector could not describe a stall");
  }
}

LoopMetrics BaseEventLoop::metrics() const {
  LoopMetrics m = EventLoop::metrics();
  m.ready_now = ready_.size();
  m.timers_pending = timers_.live_size();
  return m;
}

void BaseEventLoop::enable_virtual_time() noexcept {
  if (virtual_time_) return;
  virtual_now_ = Clock::now();
  virtual_time_ = true;
}

void enable_virtual_time(EventLoop& loop) {
  auto* base = dynamic_cast<BaseEventLoop*>(&loop);
  if (base == nullptr) throw std::invalid_argument("virtual time needs one of Strata's loops");
  base->enable_virtual_time();
}

void advance_virtual_time(EventLoop& loop, Duration d) {
  auto* base = dynamic_cast<BaseEventLoop*>(&loop);
  if (base == nullptr || !base->uses_virtual_time()) {
    throw std::invalid_argument("advance_virtual_time(): the loop is not on virtual time");
  }
  base->advance_virtual_time(d);
}

void BaseEventLoop::callback_failed(HandleImpl& h) {
  call_exception_handler({"Exception in callback " + h.describe(), std::current_exception(),
                          h.describe(), {}});
}

void BaseEventLoop::run_handle(HandleImpl* h) {
  TimePoint start{};
  if (debug_) start = Clock::now();
  try {
    h->run();
  } catch (...) {
    callback_failed(*h);
  }
  if (debug_) {
    Duration took = Clock::now() - start;
    if (took >= slow_callback_duration_) {
      log(LogLevel::warning, "Executing " + h->describe() + " took " + seconds(took));
    }
  }
}

void BaseEventLoop::close() {
  if (running_) throw EventLoopError("Cannot close a running event loop");
  if (is_closed()) return;
  if (debug_) log(LogLevel::debug, "Close " + std::string(backend_name()) + " event loop");
  remove_all_signal_handlers();
  // Open transports and servers first: their connection_lost() callbacks may still schedule.
  close_resources();
  // Destroying task frames and callbacks runs user destructors, which may schedule more; keep
  // going until nothing is left, with the loop still open so that scheduling does not throw.
  for (int round = 0; round < 100; ++round) {
    abandon_pending_tasks(*this);
    bool empty = ready_.empty() && timers_.empty();
    drop_ready();
    timers_.clear([](TimerHandleImpl* t) { t->release(); });
    // What other threads posted before close() began; taking the inbox every round would never
    // end while they keep posting (each batch outgrows the last). Later posts are released below.
    if (round == 0) {
      inbox_pending_.store(true);
      take_threadsafe();
    }
    if (empty && ready_.empty() && !has_pending_tasks(*this)) break;
  }
  // Jobs still running on the default executor post their results; wait for them while posting
  // is still accepted, so that what they post is released below, on this thread.
  close_default_executor();
  // From here on posting is refused: release what other threads posted since the first round,
  // and anything left if the rounds ran out, or it would never be freed.
  std::vector<HandleImpl*> late;
  {
    std::lock_guard lock(inbox_mutex_);
    closed_.store(true);
    late.swap(inbox_);
  }
  for (HandleImpl* h : late) {
    h->drop_threadsafe_callback();
    h->release();
  }
  drop_ready();
  timers_.clear([](TimerHandleImpl* t) { t->release(); });
  close_backend();
}

void BaseEventLoop::drop_ready() noexcept {
  while (!ready_.empty()) {
    HandleImpl* h = ready_.pop_front();
    h->drop_threadsafe_callback();
    h->release();
  }
}

void BaseEventLoop::close_in_destructor() noexcept {
  if (running_) {
    log(LogLevel::error, "an event loop was destroyed while running");
    // Nothing may call into the half-destroyed loop: the signal pipe's watch is left behind.
    static_cast<void>(signal_watch_.release());
    return;
  }
  try {
    close();
  } catch (const std::exception& e) {
    log(LogLevel::error, std::string("closing an event loop in its destructor: ") + e.what());
  }
}

}  // namespace strata::detail
