#pragma once
// BaseEventLoop: the machinery every loop shares (asyncio's base_events.py): the ready queue,
// the timer queue, the thread-safe inbox, the run phases, exception reporting and debug checks.
// A backend supplies how to wait for I/O and how to wake a waiting loop from another thread.

#include <atomic>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <vector>

#include "ring_queue.hpp"
#include "strata/core/event_loop.hpp"
#include "timer_queue.hpp"

namespace strata::detail {

class BaseEventLoop : public EventLoop, public TimerOwner {
 public:
  TimePoint time() const override { return virtual_time_ ? virtual_now_ : Clock::now(); }
  void run_forever() override;
  void stop() noexcept override;
  bool is_running() const noexcept override { return running_; }
  bool is_closed() const noexcept override { return closed_.load(std::memory_order_relaxed); }
  void close() override;

  void timer_cancelled(TimerHandleImpl& timer) noexcept override;

  bool remove_signal_handler(int sig) override;

  /// Pending timers, for tests and metrics.
  std::size_t timer_count() const noexcept { return timers_.live_size(); }

  LoopMetrics metrics() const override;

  /// Switches the loop to virtual time (for tests): time() starts at the clock's present and
  /// moves only when the loop would otherwise wait for a timer, straight to that timer's
  /// deadline, after a look at I/O that finds nothing ready (see strata::testing).
  void enable_virtual_time() noexcept;
  /// Moves virtual time forward by @p d; timers now due run on the next iteration.
  void advance_virtual_time(Duration d) noexcept { virtual_now_ += d; }
  bool uses_virtual_time() const noexcept { return virtual_time_; }

 protected:
  BaseEventLoop() = default;

  Handle do_call_soon(Callback&& callback) override;
  void do_call_soon_handle(HandleImpl& handle) override;
  TimerHandle do_call_at(TimePoint when, Callback&& callback) override;
  Handle do_call_soon_threadsafe(Callback&& callback) override;
  void do_add_signal_handler(int sig, Callback&& callback) override;

  /// Waits for I/O up to @p timeout (nullopt: no limit; zero: poll) and queues the handles
  /// of what became ready with push_ready().
  virtual void wait_for_events(std::optional<Duration> timeout) = 0;
  /// Interrupts wait_for_events() from any thread.
  virtual void wake_up() noexcept = 0;
  /// Releases the backend's resources; called once, by close().
  virtual void close_backend() noexcept = 0;

  /// Queues @p handle to run this iteration, taking a new reference to it.
  void push_ready(HandleImpl* handle) {
    handle->add_ref();
    ready_.push_back(handle);
  }

  void check_open() const;

  /// Closes the loop unless closed already; for the destructor of the concrete loop.
  void close_in_destructor() noexcept;

 private:
  void run_once();
  /// Phase 1 of run_once(): waits for I/O, or on virtual time jumps to the next timer.
  void poll_io();
  void run_handle(HandleImpl* handle);
  /// Reports the exception in flight, which escaped @p h's callback, to the exception handler.
  void callback_failed(HandleImpl& h);
  /// The stall detector: @p handle ran for @p held, more than the threshold.
  void stalled(HandleImpl& handle, Duration held) noexcept;
  void take_threadsafe();
  /// Releases what the ready queue holds, destroying thread-safe callbacks on this thread.
  void drop_ready() noexcept;

  // Signals (src/signals.cpp): the process-wide handler writes each signal's number to this
  // loop's self-pipe; the pipe's reader runs the handlers on the loop's thread.
  void read_signals();
  void close_signal_pipe() noexcept;
  void remove_all_signal_handlers() noexcept;

  RingQueue<HandleImpl*> ready_;
  TimerQueue timers_;

  std::mutex inbox_mutex_;
  std::vector<HandleImpl*> inbox_;           // from call_soon_threadsafe, guarded by the mutex
  std::atomic<bool> inbox_pending_{false};   // set by producers, cleared by the loop

  static constexpr unsigned io_poll_interval = 61;
  unsigned iterations_without_io_ = 0;

  std::map<int, std::shared_ptr<Callback>> signal_handlers_;
  int signal_read_fd_ = -1;
  IoWatchPtr signal_watch_;  // of signal_read_fd_
  int signal_write_fd_ = -1;

  bool virtual_time_ = false;
  TimePoint virtual_now_{};

  std::atomic<bool> stopping_{false};
  std::atomic<bool> closed_{false};
  bool running_ = false;
};

}  // namespace strata::detail
