#pragma once
/// @file
/// Future<T>: a result that will be set later, awaitable from coroutines (asyncio.Future).

#include <coroutine>
#include <cstdint>
#include <exception>
#include <optional>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "strata/core/detail/ref.hpp"
#include "strata/core/detail/small_alloc.hpp"
#include "strata/core/detail/unique_function.hpp"
#include "strata/core/errors.hpp"
#include "strata/core/event_loop.hpp"

namespace strata {

/// Identifies a done callback for Future::remove_done_callback().
using CallbackId = std::uint64_t;

namespace detail {

class FutureStateBase;
class TaskCore;

/// A done callback as stored: small captures stay inline.
using DoneFn = UniqueFunction<void(FutureStateBase&), 24>;

/// The untyped part of a future's shared state: its status, exception, cancel message and
/// done callbacks. Reference-counted without atomics: loop thread only.
class FutureStateBase : public SmallObject {
 public:
  enum class Status : std::uint8_t { pending, cancelled, finished };

  explicit FutureStateBase(EventLoop& loop) noexcept : loop_(&loop) {}
  FutureStateBase(const FutureStateBase&) = delete;
  FutureStateBase& operator=(const FutureStateBase&) = delete;
  virtual ~FutureStateBase();

  void add_ref() noexcept { ++refs_; }
  void release() noexcept {
    if (--refs_ == 0) delete this;
  }

  bool done() const noexcept { return status_ != Status::pending; }
  bool cancelled() const noexcept { return status_ == Status::cancelled; }
  Status status() const noexcept { return status_; }
  EventLoop& loop() const noexcept { return *loop_; }

  /// Cancels a pending future and schedules its callbacks; false if it was done already.
  /// Tasks override this to cancel the coroutine instead.
  virtual bool cancel(std::string message);

  /// The task this state belongs to, if it is a task's.
  virtual TaskCore* as_task() noexcept { return nullptr; }

  /// For logs: "Future" or "Task 'name'".
  virtual std::string describe() const { return "Future"; }

  void set_exception(std::exception_ptr e);

  /// Returns the exception (nullptr if none) and marks it retrieved.
  /// @throws CancelledError if cancelled; InvalidStateError if pending.
  std::exception_ptr exception();

  /// Throws what result() must throw: InvalidStateError if pending, CancelledError if
  /// cancelled, the exception if one was set (marking it retrieved).
  void check_result() {
    if (status_ != Status::finished || exception_) throw_result_error();
  }

  CallbackId add_done_callback(DoneFn fn);
  std::size_t remove_done_callback(CallbackId id) noexcept;

  /// Whether it finished with an exception (without marking it retrieved).
  bool has_exception() const noexcept { return status_ == Status::finished && exception_ != nullptr; }

  /// Whether it holds an exception that nobody has retrieved.
  bool has_unretrieved_exception() const noexcept {
    return has_exception() && !exception_retrieved_;
  }

  /// Marks a never-retrieved exception as seen (no "never retrieved" report).
  void mark_retrieved() noexcept { exception_retrieved_ = true; }
  const std::string& cancel_message() const noexcept { return cancel_message_; }

 protected:
  /// Transitions pending → finished (the value, if any, is stored) and schedules callbacks.
  void mark_finished();
  /// Transitions pending → cancelled with @p message and schedules callbacks.
  void mark_cancelled(std::string message);
  /// Forgets the callbacks without running them (the loop is closing).
  void drop_callbacks() noexcept {
    first_callback_ = Entry{};
    more_callbacks_.clear();
  }
  void check_pending(const char* method) const;
  /// Reports an exception nobody retrieved to the loop's exception handler, once.
  void report_unretrieved(const char* message, const std::string& task) noexcept;

  EventLoop* loop_;

 private:
  [[noreturn]] void throw_result_error();
  void schedule_callbacks();

  struct Entry {
    CallbackId id = 0;
    DoneFn fn;  // empty: no callback
  };
  // The first callback lives inline: most futures (every task's await) get exactly one, and a
  // heap vector for it cost a malloc and a free per await.
  Entry first_callback_;
  std::vector<Entry> more_callbacks_;  // the later ones, in order
  std::exception_ptr exception_;
  std::string cancel_message_;
  std::uint32_t refs_ = 0;
  std::uint32_t next_callback_id_ = 1;
  Status status_ = Status::pending;
  bool exception_retrieved_ = false;

  friend class TaskCore;
};

/// Adds the value of a Future<T>.
template <class T>
class FutureState : public FutureStateBase {
 public:
  using FutureStateBase::FutureStateBase;

  template <class U>
  void set_result(U&& value) {
    check_pending("set_result");
    value_.emplace(std::forward<U>(value));
    mark_finished();
  }

  /// The value; throws as check_result() does.
  T& value() {
    check_result();
    return *value_;
  }

  /// For co_await: a copy when T is copyable, else the value moved out (once).
  T take() {
    check_result();
    if constexpr (std::is_copy_constructible_v<T>) {
      return *value_;
    } else {
      return std::move(*value_);
    }
  }

 private:
  std::optional<T> value_;
};

template <>
class FutureState<void> : public FutureStateBase {
 public:
  using FutureStateBase::FutureStateBase;

  void set_result() {
    check_pending("set_result");
    mark_finished();
  }
  void value() { check_result(); }
  void take() { check_result(); }
};

/// Suspends the current task on @p future; throws InvalidStateError outside a task.
void suspend_on_future(FutureStateBase& future, std::coroutine_handle<> h);

/// After a task resumes: throws CancelledError if a cancel request is waiting for delivery.
void deliver_pending_cancel();

/// The awaiter behind `co_await future`.
template <class T>
struct FutureAwaiter {
  FutureState<T>* state;
  bool suspended = false;

  bool await_ready() const noexcept { return state->done(); }
  void await_suspend(std::coroutine_handle<> h) {
    suspend_on_future(*state, h);
    suspended = true;
  }
  T await_resume() {
    if (suspended) deliver_pending_cancel();
    return state->take();
  }
};

}  // namespace detail

/// A result that will be set later (asyncio.Future). Copies share one state.
///
/// A coroutine that does `co_await future` suspends until the future is done, then gets
/// its value (a copy, or the value moved out when T is not copyable), or the exception, or
/// CancelledError. Done callbacks run through call_soon, never inside set_result().
///
/// @par Thread safety  Loop thread only.
/// @par Cancellation  cancel() makes every awaiter throw CancelledError. Awaiting is not
/// cancel-safe for the future: a task cancelled while it awaits the future cancels the future
/// (asyncio's semantics), so its value is lost to every holder. A future that became done
/// before the cancelled task resumed keeps its value for its other holders (the await throws
/// CancelledError all the same). Await shield(future) to keep the future out of it.
/// @par Lifetime  Must not outlive its loop.
template <class T = void>
class Future {
 public:
  /// The type of the result.
  using value_type = T;
  /// @cond INTERNAL
  using State = detail::FutureState<T>;
  /// @endcond

  /// An empty Future with no state; valid() is false. Assign to it before use.
  Future() noexcept = default;
  /// A pending Future bound to @p loop.
  explicit Future(EventLoop& loop) : state_(new State(loop)) {}
  /// Shares an existing state (used by Task and the combinators).
  explicit Future(detail::Ref<State> state) noexcept : state_(std::move(state)) {}

  /// Whether the Future has a state; every other member requires one.
  bool valid() const noexcept { return static_cast<bool>(state_); }
  /// Whether a result or an exception was set, or the future was cancelled.
  bool done() const noexcept { return state_->done(); }
  /// Whether the future was cancelled.
  bool cancelled() const noexcept { return state_->cancelled(); }

  /// The value (a reference into the shared state for non-void T).
  /// @throws InvalidStateError  still pending.
  /// @throws CancelledError  cancelled.
  /// @throws the exception that was set.
  decltype(auto) result() const {
    if constexpr (std::is_void_v<T>) {
      state_->value();
    } else {
      return static_cast<const T&>(state_->value());
    }
  }

  /// The exception that was set, or nullptr if a value was set.
  /// @throws InvalidStateError  still pending.  @throws CancelledError  cancelled.
  std::exception_ptr exception() const { return state_->exception(); }

  /// Sets the value and schedules the done callbacks.
  /// @throws InvalidStateError  already done.
  template <class U = T>
    requires(!std::is_void_v<T>)
  void set_result(U&& value) {
    state_->set_result(std::forward<U>(value));
  }
  /// Completes a Future<void> and schedules the done callbacks.
  /// @throws InvalidStateError  already done.
  void set_result()
    requires std::is_void_v<T>
  {
    state_->set_result();
  }

  /// Sets the exception and schedules the done callbacks.
  /// @throws InvalidStateError  already done.  @throws std::invalid_argument  null @p e.
  void set_exception(std::exception_ptr e) { state_->set_exception(std::move(e)); }
  /// Sets @p e, an exception object, as the exception. (Anything convertible to
  /// std::exception_ptr, nullptr included, takes the overload above, so a null one is refused.)
  template <class E>
    requires(!std::is_convertible_v<E &&, std::exception_ptr>)
  void set_exception(E&& e) {
    state_->set_exception(std::make_exception_ptr(std::forward<E>(e)));
  }

  /// Cancels the future if pending, with an optional message for CancelledError.
  /// @return false if it was already done.
  bool cancel(std::string message = {}) { return state_->cancel(std::move(message)); }

  /// Calls @p fn(Future&) through call_soon once the future is done (at once, through
  /// call_soon, if it is done already).
  template <class F>
  CallbackId add_done_callback(F fn) {
    static_assert(std::is_invocable_v<F&, Future&>, "a done callback takes (Future<T>&)");
    return state_->add_done_callback(
        [fn = std::move(fn)](detail::FutureStateBase& s) mutable {
          Future f(detail::Ref<State>(static_cast<State*>(&s)));
          fn(f);
        });
  }

  /// Removes a done callback that has not been scheduled yet; returns how many were removed.
  std::size_t remove_done_callback(CallbackId id) noexcept {
    return state_->remove_done_callback(id);
  }

  /// The loop the future is bound to (asyncio's Future.get_loop()).
  EventLoop& get_loop() const noexcept { return state_->loop(); }

  /// Suspends the awaiting task until the future is done; the result is its value, or its
  /// exception (CancelledError if it was cancelled) rethrown.
  /// @par Cancellation  Not cancel-safe: cancelling the awaiting task cancels the future (see
  /// the class).
  detail::FutureAwaiter<T> operator co_await() const noexcept { return {state_.get()}; }

  /// @cond INTERNAL
  State* state() const noexcept { return state_.get(); }
  /// @endcond

  friend bool operator==(const Future& a, const Future& b) noexcept {
    return a.state_ == b.state_;
  }

 protected:
  /// The shared state; null only in a default-constructed (or moved-from) Future.
  detail::Ref<State> state_;
};

template <class T>
Future<T> EventLoop::create_future() {
  return Future<T>(*this);
}

}  // namespace strata
