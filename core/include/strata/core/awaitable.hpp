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
}  // namespace detail

/// A Coro<T>, Task<T> or Future<T>: what gather, wait_for, timeout and shield take.
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

/// A Future for @p coro: it is wrapped in a Task on the running loop.
/// @throws EventLoopError  no loop is running on this thread.
template <class T>
Future<T> ensure_future(Coro<T> coro) {
  return create_task(std::move(coro));
}

}  // namespace strata
