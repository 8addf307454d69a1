#pragma once
/// @file
/// What a suspended Strata coroutine is awaiting, and where: the records behind task dumps
/// (strata::format_tasks) and the stall detector's reports.

#include <coroutine>
#include <string>
#include <type_traits>
#include <typeinfo>

namespace strata::detail {

/// The source location of one `co_await`: file, enclosing function and line, taken from the
/// compiler's builtins at the co_await expression (std::source_location is not available in
/// clang 14 with libstdc++, and the builtins give the same in both compilers).
struct AwaitSite {
  const char* file = nullptr;
  const char* function = nullptr;
  unsigned line = 0;

  /// The location of the caller: as a default argument, that of the co_await expression.
  static constexpr AwaitSite current(const char* file = __builtin_FILE(),
                                     const char* function = __builtin_FUNCTION(),
                                     unsigned line = __builtin_LINE()) noexcept {
    return AwaitSite{file, function, line};
  }
  explicit operator bool() const noexcept { return file != nullptr; }
};

/// Demangles a type name from std::type_info::name(); the input when it cannot.
std::string demangle(const char* mangled);

/// A readable name for the awaitable type @p A: its `static constexpr const char* await_name`
/// when it declares one ("sleep", "Lock::acquire"), else its demangled type name. Called only
/// when a dump is made.
template <class A>
const char* awaitable_name() {
  if constexpr (requires { A::await_name; }) {
    return A::await_name;
  } else {
    static const std::string name = demangle(typeid(A).name());
    return name.c_str();
  }
}

/// One Strata coroutine frame's view of its current co_await: set by the promise's
/// await_transform on every co_await, so that while the frame is suspended it describes the
/// suspension point. A task's frames form a chain through `child` from the task's root
/// coroutine down to the leaf, which awaits a future, a sleep, a lock...
struct AwaitFrame {
  AwaitSite site;
  const char* (*awaiting)() = nullptr;  ///< names the awaitable; nullptr before the first co_await
  AwaitFrame* child = nullptr;          ///< the Strata coroutine being awaited, if one is

  /// Records a co_await of @p awaitable at @p at. An awaitable that runs another Strata
  /// coroutine in the awaiting task (a Coro, an AsyncGenerator's next()) says so with an
  /// `await_frame()` member returning that coroutine's frame.
  template <class A>
  void record(const A& awaitable, const AwaitSite& at) noexcept {
    site = at;
    awaiting = &awaitable_name<std::remove_cvref_t<A>>;
    if constexpr (requires { awaitable.await_frame(); }) {
      child = awaitable.await_frame();
    } else {
      child = nullptr;
    }
  }
};

/// The awaiter a promise's await_transform hands back: forwards to @p Awaiter, which is the
/// result of the awaitable's operator co_await (held by value) or the awaitable itself (held
/// by reference; it lives to the end of the full-expression, across the suspension).
/// await_transform cannot return the awaitable itself by reference: GCC 12 then tries to copy
/// it into the frame, which non-copyable awaiters refuse.
template <class Awaiter>
struct RecordedAwait {
  Awaiter awaiter;
  decltype(auto) await_ready() { return awaiter.await_ready(); }
  template <class P>
  decltype(auto) await_suspend(std::coroutine_handle<P> h) {
    return awaiter.await_suspend(h);
  }
  decltype(auto) await_resume() { return awaiter.await_resume(); }
};

/// What every Strata promise's await_transform does: records the co_await of @p awaitable at
/// @p at in @p frame, and returns the awaiter to use.
template <class A>
auto record_await(AwaitFrame& frame, A&& awaitable, const AwaitSite& at) {
  frame.record(awaitable, at);
  if constexpr (requires { static_cast<A&&>(awaitable).operator co_await(); }) {
    using Awaiter = decltype(static_cast<A&&>(awaitable).operator co_await());
    return RecordedAwait<Awaiter>{static_cast<A&&>(awaitable).operator co_await()};
  } else {
    return RecordedAwait<std::remove_reference_t<A>&>{awaitable};
  }
}

}  // namespace strata::detail
