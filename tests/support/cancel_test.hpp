#pragma once
// Test support for the cancel-safety tests: start a task suspended in an awaitable, cancel it,
// and compare how its await ended as a string ("ok 7", "CancelledError", "TimeoutError").

#include <catch2/catch.hpp>

#include <exception>
#include <memory>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>

#include <strata/core/coro.hpp>
#include <strata/core/errors.hpp>
#include <strata/core/event.hpp>
#include <strata/core/future.hpp>
#include <strata/core/task.hpp>

namespace strata::testing {

/// The name of the exception @p e holds, for comparing outcomes as strings.
inline std::string name_of(const std::exception_ptr& e) {
  try {
    std::rethrow_exception(e);
  } catch (const strata::CancelledError&) {
    return "CancelledError";
  } catch (const strata::TimeoutError&) {
    return "TimeoutError";
  } catch (const std::exception& x) {
    return std::string("exception: ") + x.what();
  } catch (...) {
    return "unknown exception";
  }
}

/// What awaiting an awaitable of type A yields.
template <class A>
struct result_of_await {
  using type = decltype(std::declval<A&>().await_resume());
};
template <class T>
struct result_of_await<strata::Coro<T>> {
  using type = T;
};
template <class T>
struct result_of_await<strata::Future<T>> {
  using type = T;
};

/// "ok", followed by the value when it prints.
template <class T>
std::string show(const T& value) {
  if constexpr (std::is_arithmetic_v<T>) {
    return "ok " + std::to_string(value);
  } else if constexpr (std::is_convertible_v<const T&, std::string>) {
    return "ok " + std::string(value);
  } else {
    return "ok";
  }
}

/// Sets @p ready, then awaits what @p make returns, and returns how that ended: "ok", "ok
/// <value>", or the name of the exception (CancelledError...). Once the test has seen @p ready
/// set, this task is suspended in that await (or done with it): set() wakes the test's task
/// only on a later iteration, and this one runs on to its await first.
///
/// A value the await returns (a LockGuard, a SemaphoreGuard) is destroyed before this returns.
template <class F>
strata::Coro<std::string> await_after(std::shared_ptr<strata::Event> ready, F make) {
  ready->set();
  auto op = make();
  using R = typename result_of_await<decltype(op)>::type;
  std::string out;
  try {
    if constexpr (std::is_void_v<R>) {
      co_await op;
      out = "ok";
    } else {
      auto value = co_await op;
      out = show(value);
    }
  } catch (...) {
    out = name_of(std::current_exception());
  }
  co_return out;
}

/// Starts a task that awaits what @p make returns, and returns it once it is suspended there.
template <class F>
strata::Coro<strata::Task<std::string>> suspended_in(F make, std::string name) {
  auto ready = std::make_shared<strata::Event>();
  strata::Task<std::string> task =
      strata::create_task(await_after(ready, std::move(make)), std::move(name));
  auto started = ready->wait();
  co_await started;
  REQUIRE_FALSE(task.done());
  co_return task;
}

}  // namespace strata::testing
