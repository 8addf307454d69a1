#pragma once
/// @file
/// EventLoop: the interface every loop implements (asyncio.AbstractEventLoop), and the
/// factory that makes one.

#include <exception>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "strata/core/clock.hpp"
#include "strata/core/detail/await_frame.hpp"
#include "strata/core/detail/io_channel.hpp"
#include "strata/core/detail/io_ops.hpp"
#include "strata/core/handle.hpp"
#include "strata/core/loop_metrics.hpp"

namespace strata {

template <class T>
class Future;
template <class T>
class Task;
template <class T>
class Coro;

class EventLoop;
class Executor;
class SocketAddress;  // strata/core/socket_address.hpp
struct AddrInfo;      // strata/core/resolver.hpp
struct NameInfo;      // strata/core/resolver.hpp

namespace detail {
class TaskCore;
class FutureStateBase;
class BaseEventLoop;

/// Something a higher layer keeps open on a loop (a transport, a server) that must be released
/// when the loop closes: close() calls loop_closing() on each one still attached, first thing,
/// while the loop still accepts callbacks. Attached with EventLoop::attach_resource(); an
/// object detaches itself before it is destroyed.
class LoopResource {
 public:
  /// The loop is closing: release everything now (abort, report, detach, free).
  virtual void loop_closing() noexcept = 0;
  /// Bytes held for writing and not yet sent, for LoopMetrics::write_buffered.
  virtual std::size_t write_buffered() const noexcept { return 0; }

 protected:
  LoopResource() = default;
  ~LoopResource() = default;
  LoopResource(const LoopResource&) = delete;
  LoopResource& operator=(const LoopResource&) = delete;

 private:
  friend class strata::EventLoop;
  LoopResource* prev_ = nullptr;
  LoopResource* next_ = nullptr;
};
/// Deletes the default executor (defined with it, so that Executor may stay incomplete here).
struct ExecutorDeleter {
  void operator()(Executor* executor) const noexcept;
};
}

/// The loops: the readiness backends of the selector loop, best first, and the proactor.
enum class LoopKind {
  epoll,    ///< selector loop on Linux epoll: O(ready) per wait; the default
  poll,     ///< selector loop on POSIX poll: O(registered) per wait
  select,   ///< selector loop on POSIX select: descriptors below FD_SETSIZE only
  proactor  ///< completion loop: io_uring (liburing) when the build has it, else Asio's reactor
};

/// "epoll", "poll", "select" or "proactor".
std::string_view to_string(LoopKind kind) noexcept;

/// Parses a LoopKind name.
/// @throws std::invalid_argument naming the bad value and listing the valid names.
LoopKind parse_loop_kind(std::string_view name);

/// The kinds this build and this kernel support, best first (probed once).
const std::vector<LoopKind>& available_loop_kinds();

/// What an exception handler is told (asyncio's context dict).
struct ExceptionContext {
  std::string message;           ///< what happened, e.g. "Exception in callback"
  std::exception_ptr exception;  ///< the exception, if there is one
  std::string callback;          ///< the callback or handle involved, if any
  std::string task;              ///< the task involved, if any
};

/// Receives errors that have no caller to go to: exceptions escaping callbacks, task
/// exceptions that were never retrieved.
using ExceptionHandler = std::function<void(class EventLoop&, const ExceptionContext&)>;

/// An event loop: runs callbacks, timers and tasks on one thread (asyncio's event loop).
///
/// Every completion is delivered through the loop: nothing scheduled runs inside the call that
/// scheduled it. Callbacks run in the order they were scheduled; timers run once due, in
/// deadline order (ties in scheduling order).
///
/// @par Thread safety  One thread runs the loop. Only call_soon_threadsafe() and stop() may be
/// called from other threads; in debug mode, the others check and throw EventLoopError.
///
/// @par Lifetime  Close the loop before destroying it; the destructor closes it if not.
/// Futures and tasks must not outlive their loop.
class EventLoop {
 public:
  /// A scheduled callback: a move-only `void()` callable, like std::move_only_function.
  using Callback = detail::UniqueFunction<void()>;

  EventLoop(const EventLoop&) = delete;
  EventLoop& operator=(const EventLoop&) = delete;
  virtual ~EventLoop();

  // ---- Scheduling --------------------------------------------------------------------

  /// Schedules @p callback to run on the next loop iteration, after those already scheduled.
  /// @throws EventLoopError  the loop is closed.
  template <class F>
  Handle call_soon(F&& callback) {
    return do_call_soon(Callback(std::forward<F>(callback)));
  }

  /// Schedules @p callback to run once @p delay has passed (at the earliest).
  /// @throws EventLoopError  the loop is closed.
  template <class F>
  TimerHandle call_later(Duration delay, F&& callback) {
    return do_call_at(time() + delay, Callback(std::forward<F>(callback)));
  }

  /// Schedules @p callback to run at @p when on the loop's clock (at the earliest).
  /// @throws EventLoopError  the loop is closed.
  template <class F>
  TimerHandle call_at(TimePoint when, F&& callback) {
    return do_call_at(when, Callback(std::forward<F>(callback)));
  }

  /// Like call_soon, from any thread: queues @p callback and wakes the loop if it waits.
  /// @par Thread safety  Any thread.
  /// @throws EventLoopError  the loop is closed.
  template <class F>
  Handle call_soon_threadsafe(F&& callback) {
    return do_call_soon_threadsafe(Callback(std::forward<F>(callback)));
  }

  /// Now, on the loop's monotonic clock.
  virtual TimePoint time() const = 0;

  // ---- Running -----------------------------------------------------------------------

  /// Runs until stop() is called. Callbacks scheduled before stop() in the same iteration
  /// still run.
  /// @throws EventLoopError  the loop is closed, already running, or another loop runs on
  /// this thread.
  virtual void run_forever() = 0;

  /// Runs until @p future is done; returns its result or throws its exception
  /// (CancelledError if it was cancelled).
  /// @throws EventLoopError  as run_forever(), or the loop was stopped before @p future was done.
  template <class T>
  T run_until_complete(Future<T> future);

  /// Wraps @p coro in a Task, runs until it is done and returns its result.
  template <class T>
  T run_until_complete(Coro<T> coro);

  /// Stops run_forever() at the end of the current iteration; before the loop runs, makes
  /// the next run_forever() do one iteration.
  /// @par Thread safety  Any thread.
  virtual void stop() noexcept = 0;

  /// Whether the loop is running: inside run_forever() or run_until_complete().
  virtual bool is_running() const noexcept = 0;
  /// Whether close() was called.
  virtual bool is_closed() const noexcept = 0;

  /// Closes the loop: drops pending callbacks and timers, destroys pending tasks (logging each
  /// as destroyed while pending) and releases the backend. Idempotent.
  /// @throws EventLoopError  the loop is running.
  virtual void close() = 0;

  /// The backend in use: "epoll", "poll" or "select" for the selector loop; for the proactor
  /// loop, "proactor/io_uring" (Strata's io_uring loop) or "proactor/epoll" (Asio's reactor).
  virtual std::string_view backend_name() const noexcept = 0;

  /// The kind of loop this is: what new_event_loop() was asked for (LoopKind::proactor for
  /// either proactor backend).
  virtual LoopKind kind() const noexcept = 0;

  // ---- File descriptors ------------------------------------------------------------------

  /// Calls @p callback whenever @p fd is readable (or has an error or hang-up), until
  /// remove_reader(). Replaces an earlier reader of @p fd. The loop does not own @p fd.
  /// @throws std::invalid_argument  @p fd is negative (or, on select, not below FD_SETSIZE).
  /// @throws std::system_error  the backend refused the descriptor.
  /// @throws EventLoopError  the loop is closed.
  template <class F>
  void add_reader(int fd, F&& callback) {
    do_add_reader(fd, Callback(std::forward<F>(callback)));
  }
  /// Stops watching @p fd for reading; returns whether a reader was registered.
  virtual bool remove_reader(int fd) = 0;

  /// Calls @p callback whenever @p fd is writable (or has an error), until remove_writer().
  template <class F>
  void add_writer(int fd, F&& callback) {
    do_add_writer(fd, Callback(std::forward<F>(callback)));
  }
  /// Stops watching @p fd for writing; returns whether a writer was registered.
  virtual bool remove_writer(int fd) = 0;

  // ---- Futures and tasks -----------------------------------------------------------------

  /// A new pending Future bound to this loop (asyncio's loop.create_future()).
  template <class T = void>
  Future<T> create_future();

  /// Wraps @p coro in a Task scheduled to start on the next iteration.
  /// @param coro  the coroutine; the Task owns it from here.
  /// @param name  for logs and task dumps; "Task-N" when empty.
  template <class T>
  Task<T> create_task(Coro<T> coro, std::string name = {});

  /// Wraps @p coro in a Task and, when this loop is running on the calling thread, runs the
  /// task's first step inside this call, up to its first suspension (asyncio's
  /// `Task(coro, eager_start=True)`, Python 3.12). A coroutine that finishes without
  /// suspending gives a Task that is already done and never went through the ready queue:
  /// what a server uses to run a request handler that usually answers at once. Inside the
  /// step, current_task() is the new task; the caller's task is current again afterwards.
  /// When the loop is not running, the task is scheduled as create_task() does.
  /// @throws  as create_task(); the coroutine's own exceptions go to the Task, not the caller.
  template <class T>
  Task<T> create_eager_task(Coro<T> coro, std::string name = {});

  // ---- Executors (defined in executor.hpp and src/executor.cpp) ---------------------------

  /// Runs `fn(args...)` on @p executor (the default executor when null); returns a Future
  /// completed on this loop's thread. See strata::run_in_executor() for the contract.
  template <class F, class... Args>
  auto run_in_executor(Executor* executor, F fn, Args... args);

  /// The executor that run_in_executor(nullptr, ...) and to_thread() use: a ThreadPoolExecutor
  /// of default size, made on first use. close() shuts it down, waiting for its running jobs.
  /// @throws EventLoopError  the loop is closed.
  /// @par Thread safety  Loop thread only.
  Executor& default_executor();

  // ---- Signals (defined in src/signals.cpp) -----------------------------------------------

  /// Calls @p callback on this loop's thread each time signal @p sig arrives, until
  /// remove_signal_handler() or close() (loop.add_signal_handler). Replaces an earlier
  /// handler of @p sig on this loop. Arrivals close together may be coalesced into one call,
  /// as the kernel coalesces pending signals.
  /// @throws std::invalid_argument  @p sig cannot be caught (SIGKILL, SIGSTOP, out of range).
  /// @throws EventLoopError  the loop is closed, or another live loop handles @p sig.
  /// @par Thread safety  Loop thread only.
  template <class F>
  void add_signal_handler(int sig, F&& callback) {
    do_add_signal_handler(sig, Callback(std::forward<F>(callback)));
  }
  /// Removes this loop's handler of @p sig and restores the disposition @p sig had before
  /// add_signal_handler(); returns whether a handler was registered.
  /// @throws std::invalid_argument  @p sig is out of range.
  virtual bool remove_signal_handler(int sig) = 0;

  // ---- Name resolution (defined in src/resolver.cpp; types in strata/core/resolver.hpp) ----

  /// Resolves @p host and @p port (loop.getaddrinfo): %getaddrinfo(3) on the default executor,
  /// or on the spot, without a thread hop, when @p host is a numeric address (or empty) and
  /// @p port numeric (or empty). The arguments are those of %getaddrinfo(3): AF_*, SOCK_*,
  /// IPPROTO_* and AI_* flags; 0 for any.
  /// The future fails with std::system_error in strata::resolver_category() (EAI_* codes) when
  /// the name does not resolve.
  /// @par Cancellation  Cancel-safe: cancelling the Future (or a task awaiting it) drops the
  /// result; a lookup already running on the executor runs to its end (see resolver.hpp).
  Future<std::vector<AddrInfo>> getaddrinfo(std::string host, std::string port, int family = 0,
                                            int type = 0, int protocol = 0, int flags = 0);

  /// The host and service names of @p address (loop.getnameinfo), on the default executor;
  /// @p flags are NI_* flags. Fails as getaddrinfo() does.
  /// @par Cancellation  As getaddrinfo().
  Future<NameInfo> getnameinfo(const SocketAddress& address, int flags = 0);

  // ---- Resources of higher layers ------------------------------------------------------

  /// @cond INTERNAL
  /// Opens the I/O channel of the connected, non-blocking descriptor @p fd for @p client (see
  /// detail::IoChannel): the interface the transports are written against. The channel owns
  /// @p fd from here on. The default waits for readiness with add_reader()/add_writer(); the
  /// proactor loop starts completion operations instead.
  virtual detail::IoChannelPtr open_channel(int fd, detail::ChannelKind kind,
                                            detail::IoClient& client);
  /// Opens the acceptor of the listening, non-blocking socket @p fd for @p client (see
  /// detail::IoAcceptor); @p fd stays the caller's. The default accepts up to @p batch
  /// connections per readiness report of add_reader(); the proactor loop on io_uring keeps a
  /// multishot accept in flight instead.
  virtual detail::IoAcceptorPtr open_acceptor(int fd, int batch, detail::AcceptClient& client);
  /// Connects the non-blocking stream socket @p fd to @p address (see detail::ConnectStart);
  /// @p fd stays the caller's. The default calls connect(2) and waits with add_writer(); the
  /// proactor loop on io_uring starts a connect operation.
  virtual detail::ConnectStart start_connect(int fd, const SocketAddress& address,
                                             detail::ConnectClient& client);
  /// Opens a readiness watch of @p fd (see detail::IoWatch); @p fd stays the caller's. The
  /// default is add_reader()/add_writer(); the proactor loop on io_uring starts poll
  /// operations that the watch owns.
  virtual detail::IoWatchPtr open_watch(int fd);
  /// Keeps @p resource on the list close() releases. Loop thread only.
  void attach_resource(detail::LoopResource& resource) noexcept;
  /// Takes @p resource off that list; a no-op if it is not on it.
  void detach_resource(detail::LoopResource& resource) noexcept;
  /// @endcond

  // ---- Errors ----------------------------------------------------------------------------

  /// Replaces the exception handler; an empty one restores the default.
  void set_exception_handler(ExceptionHandler handler);
  /// The handler set by set_exception_handler(); empty when the default is in use.
  const ExceptionHandler& get_exception_handler() const noexcept { return exception_handler_; }
  /// Reports @p context to the exception handler. An exception thrown by the handler itself
  /// is logged, never propagated.
  void call_exception_handler(const ExceptionContext& context) noexcept;
  /// The default handler: logs the context at error level through strata::log.
  void default_exception_handler(const ExceptionContext& context) noexcept;

  // ---- Debug mode ------------------------------------------------------------------------

  /// Debug mode logs callbacks slower than slow_callback_duration(), and makes the
  /// non-threadsafe methods check that they run on the loop's thread. On by default when the
  /// environment variable STRATA_DEBUG is set to a non-empty value other than "0".
  void set_debug(bool enabled) noexcept { debug_ = enabled; }
  /// Whether debug mode is on (see set_debug()).
  bool get_debug() const noexcept { return debug_; }
  /// Sets the threshold @p d above which debug mode logs a callback as slow
  /// (loop.slow_callback_duration).
  void set_slow_callback_duration(Duration d) noexcept { slow_callback_duration_ = d; }
  /// The slow-callback threshold of debug mode; 100 ms by default.
  Duration slow_callback_duration() const noexcept { return slow_callback_duration_; }

  /// The thread that runs (or last ran) the loop; empty before the first run.
  std::thread::id thread_id() const noexcept { return thread_id_; }

  // ---- Observability ---------------------------------------------------------------------

  /// Sets the stall threshold @p d: a callback or task step that holds the loop longer is
  /// reported once, when it returns, to the stall handler, with its name and, for a task,
  /// where it resumed and what it awaits now (see StallReport). Zero turns the detector off.
  /// 100 ms by default, or the environment variable STRATA_STALL_MS (milliseconds; 0: off).
  /// The detector reads the coarse monotonic clock (the kernel's last tick, 1-4 ms) once per
  /// callback, a few instructions; debug mode's slow-callback log is separate and stays on
  /// top of it.
  void set_stall_threshold(Duration d) noexcept { stall_threshold_ = d; }
  /// The stall threshold (zero: the detector is off).
  Duration stall_threshold() const noexcept { return stall_threshold_; }
  /// Replaces what receives stall reports; an empty handler restores the default, which logs
  /// StallReport::format() at warning level.
  void set_stall_handler(StallHandler handler) { stall_handler_ = std::move(handler); }

  /// A snapshot of the loop's counters: iterations, callbacks, queue depths, loop lag, tasks,
  /// transports and their bytes. Cheap; loop thread only.
  virtual LoopMetrics metrics() const;

  /// The loop's time() when it began running this iteration's callbacks: what task dumps
  /// measure suspensions against, at no cost of a clock read.
  TimePoint iteration_time() const noexcept { return iteration_time_; }

  /// @cond INTERNAL
  /// The counters that the transports keep up to date (bytes, buffers, open transports).
  detail::LoopStats& stats() noexcept { return stats_; }
  /// @endcond

 protected:
  EventLoop();

  /// The backend's call_soon(), with the callable already type-erased.
  virtual Handle do_call_soon(Callback&& callback) = 0;
  /// call_soon() of a handle that exists already (a task's embedded step): queues it, taking
  /// one reference.
  virtual void do_call_soon_handle(detail::HandleImpl& handle) = 0;
  /// The backend's call_at() (call_later() passes time() + delay).
  virtual TimerHandle do_call_at(TimePoint when, Callback&& callback) = 0;
  /// The backend's call_soon_threadsafe(); must be safe to call from any thread.
  virtual Handle do_call_soon_threadsafe(Callback&& callback) = 0;
  /// The backend's add_reader().
  virtual void do_add_reader(int fd, Callback&& callback) = 0;
  /// The backend's add_writer().
  virtual void do_add_writer(int fd, Callback&& callback) = 0;
  /// The backend's add_signal_handler().
  virtual void do_add_signal_handler(int sig, Callback&& callback) = 0;

  /// In debug mode, throws EventLoopError when called off the loop's thread while it runs.
  void check_thread(const char* method) const;
  /// Throws EventLoopError if run_forever() would: closed, running, or another loop running.
  void check_can_run() const;
  /// For close(): calls loop_closing() on every attached resource, including those attached
  /// meanwhile, until none is left.
  void close_resources() noexcept;
  /// For close(): shuts the default executor down (waiting for running jobs, dropping queued
  /// ones) and destroys it. A no-op when none was made.
  void close_default_executor() noexcept;

  /// Hands @p report to the stall handler (or logs it), counting it.
  void report_stall(const StallReport& report) noexcept;

  bool debug_ = false;  ///< debug mode; initialised from STRATA_DEBUG
  Duration slow_callback_duration_ = std::chrono::milliseconds(100);  ///< see set_debug()
  std::thread::id thread_id_{};  ///< the thread that runs (or last ran) the loop
  Duration stall_threshold_ = std::chrono::milliseconds(100);  ///< see set_stall_threshold()
  TimePoint iteration_time_{};  ///< see iteration_time()
  detail::LoopStats stats_;     ///< see metrics()
  /// The task that the current callback stepped (a counted reference), for a stall report.
  /// Set by TaskCore::step() while the detector is on.
  detail::FutureStateBase* stepped_task_ = nullptr;
  detail::AwaitSite stepped_from_;  ///< the co_await that stepped_task_ resumed from

 private:
  friend class detail::TaskCore;

  StallHandler stall_handler_;

  ExceptionHandler exception_handler_;
  detail::TaskCore* tasks_ = nullptr;  ///< intrusive list of this loop's live tasks
  detail::LoopResource* resources_ = nullptr;  ///< intrusive list of attached resources
  std::unique_ptr<Executor, detail::ExecutorDeleter> default_executor_;
};

namespace detail {
/// For strata::testing: switches @p loop, before it first runs, to virtual time (see
/// strata::testing::VirtualTimeLoop). @throws std::invalid_argument  not a Strata loop.
void enable_virtual_time(EventLoop& loop);
/// For strata::testing: moves @p loop's virtual time forward by @p d.
/// @throws std::invalid_argument  the loop is not on virtual time.
void advance_virtual_time(EventLoop& loop, Duration d);
}  // namespace detail

/// Makes a new loop of the given kind (asyncio.new_event_loop()).
/// @throws std::system_error  the backend could not be created (e.g. out of descriptors).
std::unique_ptr<EventLoop> new_event_loop(LoopKind kind = available_loop_kinds().front());

/// The loop running on this thread (asyncio.get_running_loop()).
/// @throws EventLoopError  no loop is running on this thread.
EventLoop& get_running_loop();

/// The loop running on this thread, or nullptr.
EventLoop* try_get_running_loop() noexcept;

}  // namespace strata
