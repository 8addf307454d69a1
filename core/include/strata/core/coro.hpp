#pragma once
/// @file
/// Coro<T>: the return type of Strata coroutines. Lazy, awaitable once.

#include <coroutine>
#include <exception>
#include <optional>
#include <type_traits>
#include <utility>

#include "strata/core/detail/await_frame.hpp"
#include "strata/core/detail/small_alloc.hpp"
#include "strata/core/errors.hpp"

namespace strata {

template <class T>
class Coro;

namespace detail {

/// Logs why and aborts: the coroutine at whose initial suspend it is called was miscompiled
/// (see CoroPromiseBase::InitialAwaiter).
[[noreturn]] void coroutine_frame_miscompiled() noexcept;

/// What every Strata coroutine promise shares: who to resume when it ends, and its exception.
class CoroPromiseBase : public SmallObject {
 public:
  /// Suspends at once (a Coro is lazy) and checks that the frame has the layout that
  /// std::coroutine_handle assumes.
  ///
  /// GCC before 13 (GCC bug 106188) miscompiles a coroutine that declares no variable and has
  /// a co_await in the condition of an if, while, for, do-while or switch statement: the
  /// condition's temporary becomes the frame's first member, so the coroutine's own code sees
  /// every member 8 bytes further on than std::coroutine_handle does. resume() through a handle
  /// then hands the code a wrong frame address: it resumes at a garbage point, corrupts its
  /// frame or crashes (a Task reports "suspended on an awaitable that is not a Strata
  /// awaitable", or hangs). Such a frame shows itself here, when the coroutine is created and
  /// before any of its body runs: the handle's view of the promise falls on the coroutine's
  /// destroy (or resume) function pointer, so continuation_ reads non-null, while in a sound
  /// frame it is still null. The check costs a load and a branch, and no frame space.
  struct InitialAwaiter {
    bool await_ready() const noexcept { return false; }
    template <class P>
    void await_suspend(std::coroutine_handle<P> h) const noexcept {
      if (h.promise().continuation_) [[unlikely]] coroutine_frame_miscompiled();
    }
    void await_resume() const noexcept {}
  };
  InitialAwaiter initial_suspend() const noexcept { return {}; }

  struct FinalAwaiter {
    bool await_ready() const noexcept { return false; }
    template <class P>
    std::coroutine_handle<> await_suspend(std::coroutine_handle<P> h) const noexcept {
      // Symmetric transfer: the awaiting coroutine resumes in place of this one, so a chain
      // of co_awaits of any depth runs in constant stack.
      std::coroutine_handle<> next = h.promise().continuation_;
      return next ? next : std::noop_coroutine();
    }
    void await_resume() const noexcept {}
  };
  FinalAwaiter final_suspend() const noexcept { return {}; }

  void unhandled_exception() noexcept { exception_ = std::current_exception(); }

  /// Every co_await in a Strata coroutine passes here: records what is awaited and where
  /// (for task dumps and stall reports; a few stores), then awaits @p awaitable unchanged.
  template <class A>
  auto await_transform(A&& awaitable, AwaitSite at = AwaitSite::current()) {
    return record_await(frame_, static_cast<A&&>(awaitable), at);
  }

  /// What this coroutine awaits now, and where (valid while it is suspended).
  const AwaitFrame* await_frame() const noexcept { return &frame_; }
  AwaitFrame* await_frame() noexcept { return &frame_; }

  std::coroutine_handle<> continuation_;  // first: InitialAwaiter relies on it
  std::exception_ptr exception_;
  AwaitFrame frame_;
};

template <class T>
class CoroPromise final : public CoroPromiseBase {
 public:
  Coro<T> get_return_object() noexcept;

  template <class U = T>
    requires std::is_convertible_v<U&&, T>
  void return_value(U&& value) noexcept(std::is_nothrow_constructible_v<T, U&&>) {
    value_.emplace(std::forward<U>(value));
  }

  /// The result: the value moved out, or the exception rethrown.
  T take_result() { return std::move(result()); }
  /// The result in place, or the exception rethrown: for a caller that moves it on once
  /// (a task into its future) without a temporary in between.
  T& result() {
    if (exception_) std::rethrow_exception(exception_);
    return *value_;
  }

 private:
  std::optional<T> value_;
};

template <>
class CoroPromise<void> final : public CoroPromiseBase {
 public:
  Coro<void> get_return_object() noexcept;
  void return_void() const noexcept {}
  void take_result() const {
    if (exception_) std::rethrow_exception(exception_);
  }
};

}  // namespace detail

/// The return type of a Strata coroutine (like a Python coroutine object).
///
/// Lazy: nothing runs until the Coro is awaited or wrapped in a Task. Awaiting it runs the
/// body in the awaiting task and yields its value or rethrows its exception; the hand-over is
/// a symmetric transfer, so deep await chains use constant stack. A Coro owns its frame and
/// destroys it when destroyed; one that never ran just frees its frame.
///
/// @throws InvalidStateError  when awaited a second time: a Coro runs once. To share a
/// result, wrap the Coro in a Task, which is a Future.
/// @par Thread safety  Loop thread only.
/// @par Cancellation  As cancel-safe as its body: awaiting a Coro runs the body in the
/// awaiting task, so a cancel reaches the co_await the body is suspended in (each Strata
/// coroutine documents its own).
/// @par GCC before 13  A Strata coroutine that declares no variable and has a co_await in the
/// condition of an if, while, for, do-while or switch statement (`while (co_await q.get() >= 0)
/// ++n;`) is miscompiled (GCC bug 106188); creating it logs the reason and aborts. Declaring
/// any variable in it avoids the bug: `for (;;) { int v = co_await q.get(); if (v < 0) break;
/// ++n; }`.
template <class T = void>
class [[nodiscard]] Coro {
 public:
  /// @cond INTERNAL
  using promise_type = detail::CoroPromise<T>;
  using handle_type = std::coroutine_handle<promise_type>;
  /// @endcond
  /// The type `co_await` on this Coro yields.
  using value_type = T;

  /// An empty Coro: valid() is false; awaiting it throws InvalidStateError.
  Coro() noexcept = default;
  /// @cond INTERNAL
  /// Takes ownership of the coroutine frame @p h (called by the promise).
  explicit Coro(handle_type h) noexcept : h_(h) {}
  /// @endcond
  /// Takes over @p other's frame; @p other becomes empty.
  Coro(Coro&& other) noexcept : h_(std::exchange(other.h_, {})), awaited_(other.awaited_) {}
  /// Destroys this Coro's frame (if any), then takes over @p other's.
  Coro& operator=(Coro&& other) noexcept {
    if (this != &other) {
      reset();
      h_ = std::exchange(other.h_, {});
      awaited_ = other.awaited_;
    }
    return *this;
  }
  /// Destroys the frame: a Coro that never ran just frees it.
  ~Coro() { reset(); }

  /// True when the Coro holds a coroutine that has not been awaited yet.
  bool valid() const noexcept { return h_ && !awaited_; }

  /// @cond INTERNAL
  struct Awaiter {
    handle_type h;
    bool await_ready() const noexcept { return false; }
    std::coroutine_handle<> await_suspend(std::coroutine_handle<> awaiting) noexcept {
      h.promise().continuation_ = awaiting;
      return h;
    }
    T await_resume() { return h.promise().take_result(); }
  };
  /// @endcond

  /// Runs the body in the awaiting task; the result is its value, or its exception rethrown.
  /// @throws InvalidStateError  the Coro is empty (moved from or default) or was awaited
  /// before.
  Awaiter operator co_await() {
    if (!h_) throw InvalidStateError("co_await on an empty Coro (moved from or default)");
    if (awaited_) {
      throw InvalidStateError(
          "Coro awaited twice: a Coro runs once; wrap it in a Task to share its result");
    }
    awaited_ = true;
    return Awaiter{h_};
  }

  /// @cond INTERNAL
  /// The coroutine's await record: a task dump follows it into this Coro's body.
  detail::AwaitFrame* await_frame() const noexcept { return h_ ? h_.promise().await_frame() : nullptr; }
  /// Gives up ownership of the frame (a Task takes it over).
  handle_type release() noexcept { return std::exchange(h_, {}); }
  /// @endcond

 private:
  void reset() noexcept {
    if (h_) h_.destroy();
    h_ = {};
  }

  handle_type h_;
  bool awaited_ = false;
};

namespace detail {
template <class T>
Coro<T> CoroPromise<T>::get_return_object() noexcept {
  return Coro<T>(std::coroutine_handle<CoroPromise<T>>::from_promise(*this));
}
inline Coro<void> CoroPromise<void>::get_return_object() noexcept {
  return Coro<void>(std::coroutine_handle<CoroPromise<void>>::from_promise(*this));
}
}  // namespace detail

}  // namespace strata
