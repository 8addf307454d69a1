#pragma once
/// @file
/// What the combinators accept (a Coro, a Task or a Future) and ensure_future().

#include <concepts>
#include <type_traits>

#include "strata/core/coro.hpp"
#include "strata/core/future.hpp"
#include "strata/core/task.hpp"

namespace strata {

namespace detail {
template <class A>
struct awaitable_traits {};
template <class T>
struct awaitable_traits<Coro<T>> {
  using result = T;
};
template <class T>
struct awaitable_traits<Future<T>> {
  using result = T;
};
template <class T>
struct awaitable_traits<Task<T>> {
  using result = T;
};
/// Any other awaitable that names its result type as `await_result_type` (StreamReader's
/// reads, StreamWriter's drain): usable with the combinators like a Coro.
template <class A>
  requires requires { typename A::await_result_type; }
struct awaitable_traits<A> {
  using result = typename A::await_result_type;
};

template <class A>
Coro<typename A::await_result_type> awaitable_coro(A aw) {
  if constexpr (std::is_void_v<typename A::await_result_type>) {
    co_await std::move(aw);
  } else {
    auto result = co_await std::move(aw);
    co_return result;
  }
}
}  // namespace detail

/// A Coro<T>, Task<T> or Future<T>, or an awaitable that names its `await_result_type`: what
/// gather, wait_for, timeout and shield take.
template <class A>
concept Awaitable = requires { typename detail::awaitable_traits<std::remove_cvref_t<A>>::result; };

/// The T of a Coro<T>, Task<T> or Future<T>.
template <Awaitable A>
using await_result_t = typename detail::awaitable_traits<std::remove_cvref_t<A>>::result;

/// A Future for @p future itself (asyncio.ensure_future()).
template <class T>
Future<T> ensure_future(Future<T> future) noexcept {
  return future;
}

/// A Future for an awaitable that names its `await_result_type`: it runs in a Task on the
/// running loop.
/// @throws EventLoopError  no loop is running on this thread.
template <class A>
  requires requires { typename A::await_result_type; }
Future<typename A::await_result_type> ensure_future(A aw) {
  return create_task(detail::awaitable_coro(std::move(aw)));
}

/// A Future for @p coro: it is wrapped in a Task on the running loop.
/// @throws EventLoopError  no loop is running on this thread.
template <class T>
Future<T> ensure_future(Coro<T> coro) {
  return create_task(std::move(coro));
}

}  // namespace strata
