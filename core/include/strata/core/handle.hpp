#pragma once
/// @file
/// Handle and TimerHandle: what call_soon, call_later and call_at return.

#include <atomic>
#include <cstdint>
#include <string>
#include <utility>

#include "strata/core/clock.hpp"
#include "strata/core/detail/small_alloc.hpp"
#include "strata/core/detail/unique_function.hpp"

namespace strata {

namespace detail {

class TimerHandleImpl;

/// The loop calls this when a pending timer is cancelled, to take it out of its queue.
class TimerOwner {
 public:
  virtual void timer_cancelled(TimerHandleImpl& timer) noexcept = 0;

 protected:
  ~TimerOwner() = default;
};

/// The shared state behind a Handle: the callback, a cancel flag and a reference count.
///
/// The count is plain (no atomic read-modify-write) for handles made on the loop's thread, and
/// atomic for those made by call_soon_threadsafe, which two threads release.
class HandleImpl {
 public:
  explicit HandleImpl(UniqueFunction<void()>&& callback, bool threadsafe = false,
                      bool is_timer = false) noexcept
      : callback_(std::move(callback)), threadsafe_(threadsafe), is_timer_(is_timer) {}

  /// Tag of the constructor of an embedded handle.
  struct Embedded {};
  /// A handle that lives inside its owner (a task's step) and is queued again and again: its
  /// count starts at 0, each queueing takes one reference, and the last release calls
  /// release_embedded_handle() (which drops the owner's reference) instead of freeing it.
  template <class F>
  HandleImpl(F&& callback, Embedded) noexcept
      : callback_(std::forward<F>(callback)), refs_(0), threadsafe_(false), is_timer_(false),
        embedded_(true) {}

  /// Whether a queue holds it (embedded handles: it must not be queued twice).
  bool queued() const noexcept { return refs_.load(std::memory_order_relaxed) != 0; }

  /// Makes a handle: from the thread's small-object cache, except for thread-safe handles,
  /// which foreign (possibly short-lived) threads make.
  static HandleImpl* create(UniqueFunction<void()>&& callback, bool threadsafe = false) {
    void* p = threadsafe ? ::operator new(sizeof(HandleImpl)) : small_allocate(sizeof(HandleImpl));
    return ::new (p) HandleImpl(std::move(callback), threadsafe);
  }

  void add_ref() noexcept {
    if (threadsafe_) {
      refs_.fetch_add(1, std::memory_order_relaxed);
    } else {
      refs_.store(refs_.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
    }
  }

  void release() noexcept {
    std::uint32_t left;
    if (threadsafe_) {
      left = refs_.fetch_sub(1, std::memory_order_acq_rel) - 1;
    } else {
      left = refs_.load(std::memory_order_relaxed) - 1;
      refs_.store(left, std::memory_order_relaxed);
    }
    if (left == 0) destroy();
  }

  bool cancelled() const noexcept { return cancelled_.load(std::memory_order_relaxed); }
  bool is_timer() const noexcept { return is_timer_; }

  /// Runs the callback unless cancelled. The loop catches what it throws.
  void run() {
    running_ = true;
    struct Reset {
      HandleImpl* h;
      ~Reset() { h->running_ = false; }
    } reset{this};
    callback_();
  }

  /// Marks the handle cancelled and, unless it is running, releases the callback now.
  void cancel() noexcept;

  /// For the loop, once it has run or skipped a handle from call_soon_threadsafe: destroys
  /// the callback here, on the loop's thread. The poster's Handle may hold the last reference,
  /// and what the callback captured (a loop-thread Future, say) must not die on its thread.
  void drop_threadsafe_callback() noexcept {
    if (threadsafe_) callback_.reset();
  }

  std::string describe() const { return callback_.describe(); }

 private:
  void destroy() noexcept;

  UniqueFunction<void()> callback_;
  std::atomic<std::uint32_t> refs_{1};
  std::atomic<bool> cancelled_{false};
  bool threadsafe_;
  bool is_timer_;
  bool embedded_ = false;
  bool running_ = false;
};

/// The last release of an embedded handle (HandleImpl::Embedded): its owner lets go of the
/// reference it took when it queued the handle. Defined by the owner's kind (task.cpp).
void release_embedded_handle(HandleImpl& handle) noexcept;

/// A HandleImpl with a deadline and its place in the owner's timer queue.
class TimerHandleImpl final : public HandleImpl {
 public:
  TimerHandleImpl(UniqueFunction<void()>&& callback, TimePoint when, TimerOwner* owner) noexcept
      : HandleImpl(std::move(callback), false, true), when_(when), owner_(owner) {}

  static TimerHandleImpl* create(UniqueFunction<void()>&& callback, TimePoint when,
                                 TimerOwner* owner) {
    void* p = small_allocate(sizeof(TimerHandleImpl));
    return ::new (p) TimerHandleImpl(std::move(callback), when, owner);
  }

  TimePoint when() const noexcept { return when_; }

  TimePoint when_;
  TimerOwner* owner_;
  std::uint32_t sequence_ = 0;              ///< scheduling order (wrapping), breaks deadline ties
  bool queued_ = false;                     ///< in the owner's timer queue (maintained by it)
};

}  // namespace detail

/// A scheduled callback (asyncio.Handle): returned by EventLoop::call_soon and friends.
///
/// A Handle is a cheap shared reference; copies refer to the same callback. Dropping every
/// Handle does not cancel the callback: the loop keeps its own reference until it has run.
///
/// @par Thread safety  Loop thread only, except that a Handle returned by
/// call_soon_threadsafe may be copied and destroyed on any thread.
class Handle {
 public:
  Handle() noexcept = default;
  /// Adopts one reference to @p impl (the loop's factory functions use this).
  explicit Handle(detail::HandleImpl* impl) noexcept : impl_(impl) {}

  /// Another reference to @p other's callback.
  Handle(const Handle& other) noexcept : impl_(other.impl_) {
    if (impl_) impl_->add_ref();
  }
  /// Takes over @p other's reference; @p other becomes empty.
  Handle(Handle&& other) noexcept : impl_(std::exchange(other.impl_, nullptr)) {}
  /// Refers to @p other's callback instead; drops the reference held before.
  Handle& operator=(Handle other) noexcept {
    std::swap(impl_, other.impl_);
    return *this;
  }
  ~Handle() {
    if (impl_) impl_->release();
  }

  /// Cancels the callback: if it has not run yet, it will not run. Idempotent; a no-op on
  /// an empty Handle. The callback (and what it captured) is released at once unless it is
  /// running now or came from call_soon_threadsafe; those are released when the loop and
  /// every Handle have let go of them.
  void cancel() noexcept {
    if (impl_) impl_->cancel();
  }

  /// True once cancel() was called.
  bool cancelled() const noexcept { return impl_ && impl_->cancelled(); }

  /// True unless default-constructed or moved from.
  explicit operator bool() const noexcept { return impl_ != nullptr; }

  /// A name for logs, from the callback's type (or its describe() member).
  std::string describe() const { return impl_ ? impl_->describe() : "empty handle"; }

 protected:
  detail::HandleImpl* impl_ = nullptr;  ///< one counted reference, or null when empty
};

/// A Handle for a callback scheduled at a time (asyncio.TimerHandle): from call_later, call_at.
///
/// Cancelling a pending timer releases its callback at once; the loop's timer queue drops
/// the rest lazily and compacts itself before cancelled timers make up half of it.
class TimerHandle : public Handle {
 public:
  TimerHandle() noexcept = default;
  /// Adopts one reference to @p impl (the loop's call_at() uses this).
  explicit TimerHandle(detail::TimerHandleImpl* impl) noexcept : Handle(impl) {}

  /// When the callback is due, on the loop's clock.
  TimePoint when() const noexcept {
    return impl_ ? static_cast<detail::TimerHandleImpl*>(impl_)->when() : TimePoint{};
  }
};

}  // namespace strata
