#pragma once
/// @file
/// Executor: where blocking work goes (concurrent.futures.Executor), and the bridges from the
/// loop to it: run_in_executor() (loop.run_in_executor) and to_thread() (asyncio.to_thread).

#include <exception>
#include <functional>
#include <optional>
#include <thread>
#include <type_traits>
#include <utility>

#include "strata/core/coro.hpp"
#include "strata/core/detail/unique_function.hpp"
#include "strata/core/errors.hpp"
#include "strata/core/event_loop.hpp"
#include "strata/core/future.hpp"

namespace strata {

/// Runs jobs on other threads (concurrent.futures.Executor). ThreadPoolExecutor is the one
/// Strata ships; run_in_executor() takes any.
///
/// @par Thread safety  submit() and shutdown() may be called from any thread, concurrently.
/// @par Lifetime  The destructor of an implementation shuts it down and waits for its jobs.
class Executor {
 public:
  /// A job as stored: a move-only callable, called at most once.
  using Job = detail::UniqueFunction<void()>;

  Executor() = default;
  Executor(const Executor&) = delete;
  Executor& operator=(const Executor&) = delete;
  virtual ~Executor();

  /// Queues @p job to run on one of the executor's threads, and returns at once.
  ///
  /// The job is called once, then destroyed, on a worker thread. A job that is never called
  /// (shutdown(..., cancel_futures=true) dropped it) is destroyed without being called: what
  /// it captures learns of the drop in its destructor, as run_in_executor() does. An
  /// exception escaping the job is logged through strata::log and otherwise ignored; catch
  /// inside the job to report it (run_in_executor() does).
  ///
  /// @throws ExecutorShutdownError  shutdown() was called; nothing was queued.
  /// @throws std::system_error  no thread could be started and none runs.
  /// @par Thread safety  Any thread.
  template <class F>
  void submit(F&& job) {
    do_submit(Job(std::forward<F>(job)));
  }

  /// Refuses new jobs from now on (concurrent.futures.Executor.shutdown).
  ///
  /// Jobs already queued still run, unless @p cancel_futures, which destroys them uncalled.
  /// Calling it again is harmless; a later call with @p wait still waits.
  ///
  /// @param wait  block until every job has finished and every worker thread has exited.
  /// @param cancel_futures  drop the jobs that have not started.
  /// @par Thread safety  Any thread but a worker of this executor when @p wait is true (a
  /// worker cannot wait for itself; it is then not waited for).
  virtual void shutdown(bool wait = true, bool cancel_futures = false) = 0;

 protected:
  /// The implementation's submit(), with the callable already type-erased: queues @p job or
  /// throws as submit() documents.
  virtual void do_submit(Job&& job) = 0;
};

namespace detail {

/// One reference to a loop-thread future state, carried through other threads. The count is
/// not atomic, so the reference is released only on the thread that took it (the loop's);
/// destroyed anywhere else it is leaked, which happens only when the loop was closed first.
template <class R>
class PostedState {
 public:
  explicit PostedState(FutureState<R>* state) noexcept
      : state_(state), owner_(std::this_thread::get_id()) {
    state_->add_ref();
  }
  PostedState(PostedState&& other) noexcept
      : state_(std::exchange(other.state_, nullptr)), owner_(other.owner_) {}
  PostedState& operator=(PostedState&&) = delete;
  ~PostedState() {
    if (state_ != nullptr && std::this_thread::get_id() == owner_) state_->release();
  }

  FutureState<R>* get() const noexcept { return state_; }
  explicit operator bool() const noexcept { return state_ != nullptr; }

 private:
  FutureState<R>* state_;
  std::thread::id owner_;
};

/// The job that run_in_executor() submits: calls fn on a worker, then posts the outcome to
/// the loop. Destroyed uncalled, it posts a cancellation instead.
template <class R, class F>
class ExecutorJob {
 public:
  ExecutorJob(EventLoop& loop, F fn, FutureState<R>* state)
      : loop_(&loop), fn_(std::move(fn)), state_(state) {}
  // As noexcept as F's move: clang-tidy flags the instantiations where that is false.
  // NOLINTNEXTLINE(performance-noexcept-move-constructor)
  ExecutorJob(ExecutorJob&&) noexcept(std::is_nothrow_move_constructible_v<F>) = default;
  ExecutorJob& operator=(ExecutorJob&&) = delete;
  ~ExecutorJob() {
    if (state_) {
      post([s = std::move(state_)]() mutable {
        if (!s.get()->done()) s.get()->cancel("the executor dropped the job before it ran");
      });
    }
  }

  void operator()() {
    std::exception_ptr error;
    if constexpr (std::is_void_v<R>) {
      try {
        fn_();
      } catch (...) {
        error = std::current_exception();
      }
      post([s = std::move(state_), error = std::move(error)]() mutable {
        if (s.get()->done()) return;  // cancelled meanwhile: the outcome is dropped
        if (error) {
          s.get()->set_exception(error);
        } else {
          s.get()->set_result();
        }
      });
    } else {
      std::optional<R> value;
      try {
        value.emplace(fn_());
      } catch (...) {
        error = std::current_exception();
      }
      post([s = std::move(state_), value = std::move(value), error = std::move(error)]() mutable {
        if (s.get()->done()) return;
        if (error) {
          s.get()->set_exception(error);
        } else {
          s.get()->set_result(std::move(*value));
        }
      });
    }
  }

 private:
  template <class G>
  void post(G&& deliver) noexcept {
    try {
      loop_->call_soon_threadsafe(std::forward<G>(deliver));
    } catch (...) {
      // The loop is closed (or memory ran out): nobody can receive the outcome.
    }
  }

  EventLoop* loop_;
  F fn_;
  PostedState<R> state_;
};

}  // namespace detail

/// Runs `fn(args...)` on @p executor and returns a Future for its result, completed on the
/// loop's thread (asyncio's loop.run_in_executor()).
///
/// The awaiter gets what `fn` returns, or the exception it throws. @p fn and @p args are moved
/// into the job; they are called and destroyed on a worker thread, so they must not touch
/// loop-thread objects (post back with call_soon_threadsafe()).
///
/// @param loop  the loop whose thread completes the Future.
/// @param executor  where to run; nullptr means loop.default_executor().
/// @param fn  the callable, moved into the job.
/// @param args  its arguments, moved into the job and passed to @p fn as lvalues.
/// @return  a Future<R>, R being what `fn(args...)` returns (void allowed).
/// @throws ExecutorShutdownError  @p executor was shut down; nothing was scheduled.
/// @throws EventLoopError  the loop is closed.
/// @par Thread safety  Loop thread only. The Future completes on the loop's thread, through
/// call_soon_threadsafe(), never inside this call.
/// @par Cancellation  Cancel-safe for the loop, not for `fn`'s work: cancelling the Future (or
/// a task awaiting it) does not stop `fn` (a thread cannot be interrupted); its result or
/// exception is then dropped without report. If the executor
/// drops the job unstarted (shutdown with cancel_futures), the Future is cancelled.
/// @par Lifetime  With your own executor, let its jobs finish (shut it down with wait) before
/// destroying the loop: a job posts its outcome to the loop. The default executor is shut
/// down by close(), which waits for the jobs already running.
template <class F, class... Args>
auto run_in_executor(EventLoop& loop, Executor* executor, F fn, Args... args)
    -> Future<std::invoke_result_t<F&, Args&...>> {
  using R = std::invoke_result_t<F&, Args&...>;
  if (loop.is_closed()) throw EventLoopError("Event loop is closed");
  Executor& target = executor != nullptr ? *executor : loop.default_executor();
  Future<R> future(loop);
  auto call = [fn = std::move(fn), ... args = std::move(args)]() mutable -> R {
    return std::invoke(fn, args...);
  };
  target.submit(detail::ExecutorJob<R, decltype(call)>(loop, std::move(call), future.state()));
  return future;
}

template <class F, class... Args>
auto EventLoop::run_in_executor(Executor* executor, F fn, Args... args) {
  return strata::run_in_executor(*this, executor, std::move(fn), std::move(args)...);
}

/// Runs `fn(args...)` on the running loop's default executor and returns its result
/// (asyncio.to_thread()).
///
/// Lazy, like every Coro: nothing is submitted until it is awaited.
///
/// @throws EventLoopError  awaited where no loop is running.
/// @throws whatever `fn` throws.
/// @par Thread safety  Await on the loop thread; `fn` runs on a worker thread.
/// @par Cancellation  As run_in_executor(): cancelling the awaiting task makes the await throw
/// CancelledError at once, while `fn` runs to its end and its result is dropped.
template <class F, class... Args>
Coro<std::invoke_result_t<F&, Args&...>> to_thread(F fn, Args... args) {
  using R = std::invoke_result_t<F&, Args&...>;
  Future<R> future = run_in_executor(get_running_loop(), nullptr, std::move(fn), std::move(args)...);
  if constexpr (std::is_void_v<R>) {
    co_await future;
  } else {
    co_return co_await future;
  }
}

}  // namespace strata
