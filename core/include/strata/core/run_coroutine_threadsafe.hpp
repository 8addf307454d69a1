#pragma once
/// @file
/// run_coroutine_threadsafe(): submit a coroutine to a loop from another thread
/// (asyncio.run_coroutine_threadsafe), and ConcurrentFuture<T>, the handle it returns
/// (concurrent.futures.Future).

#include <chrono>
#include <condition_variable>
#include <exception>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <type_traits>
#include <utility>

#include "strata/core/coro.hpp"
#include "strata/core/errors.hpp"
#include "strata/core/event_loop.hpp"
#include "strata/core/future.hpp"
#include "strata/core/outcome.hpp"
#include "strata/core/task.hpp"

namespace strata {

namespace detail {

/// The state a ConcurrentFuture shares with the loop side: guarded by a mutex, waited on with
/// a condition variable.
template <class T>
class ConcurrentState {
 public:
  explicit ConcurrentState(EventLoop& loop) noexcept : loop_(&loop) {}

  EventLoop& loop() const noexcept { return *loop_; }

  /// The set_* calls return false (and change nothing) once done.
  template <class... U>
  bool set_value(U&&... value) {
    std::lock_guard lock(mutex_);
    if (status_ != Status::pending) return false;
    value_.emplace(std::forward<U>(value)...);
    status_ = Status::finished;
    done_.notify_all();
    return true;
  }
  bool set_exception(std::exception_ptr e) {
    std::lock_guard lock(mutex_);
    if (status_ != Status::pending) return false;
    exception_ = std::move(e);
    status_ = Status::finished;
    done_.notify_all();
    return true;
  }
  bool set_cancelled(std::string message) {
    std::lock_guard lock(mutex_);
    if (status_ != Status::pending) return false;
    cancel_message_ = std::move(message);
    status_ = Status::cancelled;
    done_.notify_all();
    return true;
  }

  bool done() const {
    std::lock_guard lock(mutex_);
    return status_ != Status::pending;
  }
  bool cancelled() const {
    std::lock_guard lock(mutex_);
    return status_ == Status::cancelled;
  }

  void wait() const {
    std::unique_lock lock(mutex_);
    done_.wait(lock, [this] { return status_ != Status::pending; });
  }
  template <class Rep, class Period>
  bool wait_for(const std::chrono::duration<Rep, Period>& timeout) const {
    std::unique_lock lock(mutex_);
    return done_.wait_for(lock, timeout, [this] { return status_ != Status::pending; });
  }

  /// Waits, then returns the value (a copy, or moved out when T is not copyable) or throws.
  T get() {
    std::unique_lock lock(mutex_);
    done_.wait(lock, [this] { return status_ != Status::pending; });
    if (status_ == Status::cancelled) throw CancelledError(cancel_message_);
    if (exception_) std::rethrow_exception(exception_);
    if constexpr (std::is_void_v<T>) {
      return;
    } else if constexpr (std::is_copy_constructible_v<T>) {
      return *value_;
    } else {
      if (taken_) throw InvalidStateError("ConcurrentFuture::get(): the value was moved out already");
      taken_ = true;
      return std::move(*value_);
    }
  }

  /// The task running the coroutine while its frame lives; loop thread only.
  TaskCore* task_ = nullptr;

 private:
  enum class Status { pending, finished, cancelled };

  EventLoop* loop_;
  mutable std::mutex mutex_;
  mutable std::condition_variable done_;
  Status status_ = Status::pending;
  std::optional<value_or_monostate_t<T>> value_;
  std::exception_ptr exception_;
  std::string cancel_message_;
  bool taken_ = false;
};

/// Carries a ConcurrentState through the loop-side callbacks; if destroyed before delivering
/// (the loop closed first), fails it with EventLoopError so that no waiter hangs.
template <class T>
class ConcurrentSetter {
 public:
  explicit ConcurrentSetter(std::shared_ptr<ConcurrentState<T>> state) noexcept
      : state_(std::move(state)) {}
  ConcurrentSetter(ConcurrentSetter&&) noexcept = default;
  ConcurrentSetter& operator=(ConcurrentSetter&&) = delete;
  ~ConcurrentSetter() {
    if (!state_) return;
    state_->task_ = nullptr;
    state_->set_exception(std::make_exception_ptr(
        EventLoopError("the event loop was closed before the coroutine finished")));
  }

  ConcurrentState<T>& state() const noexcept { return *state_; }

  /// Copies the outcome of the finished task @p f; loop thread.
  void deliver(Future<T>& f) {
    auto state = std::move(state_);
    state->task_ = nullptr;
    if (f.cancelled()) {
      state->set_cancelled(f.state()->cancel_message());
    } else if (std::exception_ptr e = f.exception()) {
      state->set_exception(std::move(e));
    } else if constexpr (std::is_void_v<T>) {
      state->set_value();
    } else {
      state->set_value(f.state()->take());
    }
  }

  void fail(std::exception_ptr e) {
    auto state = std::move(state_);
    state->task_ = nullptr;
    state->set_exception(std::move(e));
  }

 private:
  std::shared_ptr<ConcurrentState<T>> state_;
};

/// The callback run_coroutine_threadsafe() posts: starts the task on the loop thread.
template <class T>
struct StartThreadsafeTask {
  Coro<T> coro;
  ConcurrentSetter<T> setter;

  void operator()() {
    ConcurrentState<T>& state = setter.state();
    if (state.cancelled()) return;  // cancelled before it started: never run the coroutine
    try {
      Task<T> task = state.loop().create_task(std::move(coro));
      state.task_ = static_cast<TaskState<T>*>(task.state());
      task.add_done_callback(
          [s = std::move(setter)](Future<T>& f) mutable { s.deliver(f); });
    } catch (...) {
      setter.fail(std::current_exception());
    }
  }
};

}  // namespace detail

/// The handle run_coroutine_threadsafe() returns: a result that a foreign thread can wait
/// for (concurrent.futures.Future, std::shared_future). Copies share one state.
///
/// @par Thread safety  Every member may be called from any thread, concurrently. get() and
/// wait() block, so do not call them on the loop's own thread: the loop could never finish
/// the coroutine (get() and wait() throw EventLoopError there instead of hanging).
/// @par Cancellation  cancel() marks the handle cancelled at once and cancels the task on its
/// loop; the task may still clean up, and its eventual result is dropped.
template <class T = void>
class ConcurrentFuture {
 public:
  /// An empty handle; valid() is false.
  ConcurrentFuture() noexcept = default;

  /// Whether the handle has a state; every other member requires one.
  bool valid() const noexcept { return static_cast<bool>(state_); }

  /// Whether the coroutine finished, failed, or the handle was cancelled.
  bool done() const { return state_->done(); }
  /// Whether cancel() was called on the handle (or the task ended cancelled).
  bool cancelled() const { return state_->cancelled(); }

  /// Blocks until done.
  /// @throws EventLoopError  called on the thread running the loop.
  void wait() const {
    check_not_loop_thread("wait");
    state_->wait();
  }

  /// Blocks until done or until @p timeout has passed; returns done().
  template <class Rep, class Period>
  bool wait_for(const std::chrono::duration<Rep, Period>& timeout) const {
    return state_->wait_for(timeout);
  }

  /// Blocks until done, then returns the coroutine's result (a copy; moved out, once, when T
  /// is not copyable) or throws its exception.
  /// @throws CancelledError  the handle or the task was cancelled.
  /// @throws EventLoopError  called on the thread running the loop, or the loop was closed
  /// before the coroutine finished.
  /// @throws InvalidStateError  a move-only value was taken already.
  T get() const {
    check_not_loop_thread("get");
    return state_->get();
  }

  /// Cancels: the handle is cancelled at once (waiters wake and get() throws CancelledError),
  /// and the task is cancelled on its loop through call_soon_threadsafe().
  /// @return false if it was done already.
  bool cancel(std::string message = {}) {
    if (!state_->set_cancelled(message)) return false;
    try {
      state_->loop().call_soon_threadsafe(
          [s = state_, message = std::move(message)]() mutable {
            if (s->task_ != nullptr) s->task_->cancel(std::move(message));
          });
    } catch (const EventLoopError&) {
      // The loop is closed: its tasks are gone already.
    }
    return true;
  }

  /// @cond INTERNAL
  explicit ConcurrentFuture(std::shared_ptr<detail::ConcurrentState<T>> state) noexcept
      : state_(std::move(state)) {}
  /// @endcond

 private:
  void check_not_loop_thread(const char* method) const {
    if (try_get_running_loop() == &state_->loop()) {
      throw EventLoopError(std::string("ConcurrentFuture::") + method +
                           "() on the thread running its loop would never return; co_await "
                           "the coroutine there instead");
    }
  }

  std::shared_ptr<detail::ConcurrentState<T>> state_;
};

/// Submits @p coro to @p loop from any thread, and returns a handle to wait on
/// (asyncio.run_coroutine_threadsafe()).
///
/// The coroutine runs as a Task on @p loop's thread, started through call_soon_threadsafe().
/// If the loop is closed before the coroutine finishes, the handle fails with EventLoopError
/// rather than leaving its waiters blocked.
///
/// @throws EventLoopError  @p loop is closed; nothing was scheduled.
/// @par Thread safety  Any thread; meant for threads other than the loop's.
/// @par Cancellation  ConcurrentFuture::cancel() cancels the task; cancelling the task on the
/// loop makes the handle cancelled.
/// @par Lifetime  @p loop must outlive the call and any cancel() on the handle; the handle
/// itself may outlive the loop.
template <class T>
ConcurrentFuture<T> run_coroutine_threadsafe(Coro<T> coro, EventLoop& loop) {
  if (!coro.valid()) throw InvalidStateError("run_coroutine_threadsafe() needs a Coro that has not run");
  auto state = std::make_shared<detail::ConcurrentState<T>>(loop);
  loop.call_soon_threadsafe(
      detail::StartThreadsafeTask<T>{std::move(coro), detail::ConcurrentSetter<T>(state)});
  return ConcurrentFuture<T>(std::move(state));
}

}  // namespace strata
