#pragma once
/// @file
/// AsyncGenerator<T>: a coroutine that co_yields values and may co_await between them
/// (Python's async generator).

#include <coroutine>
#include <exception>
#include <optional>
#include <utility>

#include "strata/core/coro.hpp"
#include "strata/core/errors.hpp"

namespace strata {

/// A coroutine that produces a sequence with `co_yield` and may `co_await` in between.
///
/// Consume it from a task with `while (auto v = co_await gen.next()) use(*v);` or with
/// `for (auto it = co_await gen.begin(); it != gen.end(); co_await ++it) use(*it);`.
/// The body runs only while the consumer awaits next(), inside the consumer's task, so a
/// cancellation of that task reaches the body's current co_await. An exception escaping the
/// body is rethrown by the next() that was waiting. Destroying the generator early destroys
/// its frame: the locals of a suspended body are destroyed, nothing leaks.
///
/// @par Thread safety  Loop thread only.
/// @par Cancellation  As cancel-safe as the body: a cancelled next() reaches the co_await the
/// body is suspended in. If the body lets CancelledError escape, the generator ends: that
/// next() throws it, and later ones return std::nullopt; a value the body was producing is
/// lost with its unwinding. (A body may catch it, clean up and rethrow.)
template <class T>
class [[nodiscard]] AsyncGenerator {
 public:
  /// @cond INTERNAL
  /// The coroutine's promise: used by the compiler, not by callers.
  class promise_type {
   public:
    AsyncGenerator get_return_object() noexcept {
      return AsyncGenerator(std::coroutine_handle<promise_type>::from_promise(*this));
    }
    /// Suspends at once and checks the frame's layout, as CoroPromiseBase::InitialAwaiter
    /// does (GCC bug 106188): consumer_, the promise's first member, is null in a sound frame.
    struct InitialAwaiter {
      bool await_ready() const noexcept { return false; }
      void await_suspend(std::coroutine_handle<promise_type> h) const noexcept {
        if (h.promise().consumer_) [[unlikely]] detail::coroutine_frame_miscompiled();
      }
      void await_resume() const noexcept {}
    };
    InitialAwaiter initial_suspend() const noexcept { return {}; }

    struct ToConsumer {
      bool await_ready() const noexcept { return false; }
      std::coroutine_handle<> await_suspend(std::coroutine_handle<promise_type> h) const noexcept {
        return h.promise().consumer_;
      }
      void await_resume() const noexcept {}
    };

    ToConsumer final_suspend() noexcept {
      finished_ = true;
      return {};
    }
    template <class U = T>
    ToConsumer yield_value(U&& value) noexcept(std::is_nothrow_constructible_v<T, U&&>) {
      value_.emplace(std::forward<U>(value));
      return {};
    }
    void return_void() const noexcept {}
    void unhandled_exception() noexcept { exception_ = std::current_exception(); }

    /// As CoroPromiseBase::await_transform: records each co_await for task dumps.
    template <class A>
    auto await_transform(A&& awaitable, detail::AwaitSite at = detail::AwaitSite::current()) {
      return detail::record_await(frame_, static_cast<A&&>(awaitable), at);
    }

   private:
    friend class AsyncGenerator;
    std::coroutine_handle<> consumer_;  // first: InitialAwaiter relies on it
    std::optional<T> value_;
    std::exception_ptr exception_;
    bool finished_ = false;
    bool active_ = false;  // a next() is in progress
    detail::AwaitFrame frame_;
  };

  using handle_type = std::coroutine_handle<promise_type>;
  /// @endcond

  /// An empty generator: done() is true; awaiting next() throws InvalidStateError.
  AsyncGenerator() noexcept = default;
  /// @cond INTERNAL
  /// Takes ownership of the coroutine frame @p h (called by promise_type).
  explicit AsyncGenerator(handle_type h) noexcept : h_(h) {}
  /// @endcond
  /// Takes over @p other's frame; @p other becomes empty.
  AsyncGenerator(AsyncGenerator&& other) noexcept : h_(std::exchange(other.h_, {})) {}
  /// Destroys this generator's frame (if any), then takes over @p other's.
  AsyncGenerator& operator=(AsyncGenerator&& other) noexcept {
    if (this != &other) {
      if (h_) h_.destroy();
      h_ = std::exchange(other.h_, {});
    }
    return *this;
  }
  /// Destroys the frame, with the locals of a suspended body.
  ~AsyncGenerator() {
    if (h_) h_.destroy();
  }

  /// The awaiter of next(): yields the next value, or std::nullopt once the body returned.
  class NextAwaiter {
   public:
    /// @cond INTERNAL
    explicit NextAwaiter(handle_type h) noexcept : h_(h) {}
    bool await_ready() const {
      if (!h_) throw InvalidStateError("next() on an empty AsyncGenerator");
      if (h_.promise().active_) {
        throw InvalidStateError("AsyncGenerator::next() awaited while another next() is pending");
      }
      return h_.promise().finished_;
    }
    std::coroutine_handle<> await_suspend(std::coroutine_handle<> consumer) noexcept {
      auto& p = h_.promise();
      p.consumer_ = consumer;
      p.value_.reset();
      p.active_ = true;
      return h_;
    }
    std::optional<T> await_resume() {
      auto& p = h_.promise();
      p.active_ = false;
      if (p.exception_) std::rethrow_exception(std::exchange(p.exception_, nullptr));
      if (p.finished_) return std::nullopt;
      return std::move(p.value_);
    }
    /// The body runs in the awaiting task: a task dump follows the chain into it.
    detail::AwaitFrame* await_frame() const noexcept { return h_ ? &h_.promise().frame_ : nullptr; }
    /// @endcond

   private:
    handle_type h_;
  };

  /// Runs the body to its next co_yield: the value, or std::nullopt when the body is done.
  /// @throws InvalidStateError  another next() on this generator is still pending.
  /// @par Cancellation  As cancel-safe as the body (see the class); a CancelledError that
  /// escapes the body ends the generator.
  NextAwaiter next() noexcept { return NextAwaiter(h_); }

  /// True once the body has returned or thrown.
  bool done() const noexcept { return !h_ || h_.promise().finished_; }

  /// An input iterator for an awaited range-for: `co_await gen.begin()`, `co_await ++it`.
  class iterator {
   public:
    /// A singular iterator, equal to end().
    iterator() noexcept = default;
    /// The current value; valid until the iterator is advanced.
    T& operator*() const noexcept { return *gen_->current_; }
    /// A pointer to the current value; valid until the iterator is advanced.
    T* operator->() const noexcept { return &*gen_->current_; }
    /// True once the body is done (compares equal to end()).
    bool operator==(std::default_sentinel_t) const noexcept { return !gen_ || !gen_->current_; }

    /// Advances; await the result: `co_await ++it`.
    auto operator++() { return gen_->advance(*this); }

   private:
    friend class AsyncGenerator;
    explicit iterator(AsyncGenerator* gen) noexcept : gen_(gen) {}
    AsyncGenerator* gen_ = nullptr;
  };

  /// Starts the iteration; await it: `auto it = co_await gen.begin()`.
  auto begin() { return advance(iterator(this)); }
  /// The end sentinel: an iterator equals it once the body is done.
  std::default_sentinel_t end() const noexcept { return {}; }

 private:
  struct AdvanceAwaiter {
    NextAwaiter next;
    iterator it;
    bool await_ready() const { return next.await_ready(); }
    std::coroutine_handle<> await_suspend(std::coroutine_handle<> c) noexcept {
      return next.await_suspend(c);
    }
    iterator await_resume() {
      it.gen_->current_ = next.await_resume();
      return it;
    }
    detail::AwaitFrame* await_frame() const noexcept { return next.await_frame(); }
  };
  AdvanceAwaiter advance(iterator it) { return AdvanceAwaiter{NextAwaiter(h_), it}; }

  handle_type h_;
  std::optional<T> current_;  // the iterator's value
};

}  // namespace strata
