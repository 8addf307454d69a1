#pragma once
/// @file
/// gather(): run awaitables concurrently and collect their results (asyncio.gather).

#include <cstddef>
#include <tuple>
#include <utility>
#include <vector>

#include "strata/core/awaitable.hpp"
#include "strata/core/outcome.hpp"

namespace strata {

/// Tag for gather(return_exceptions, ...): collect each child's Outcome instead of failing.
struct ReturnExceptions {
  explicit ReturnExceptions() = default;
};
/// Pass as gather()'s first argument to get every child's Outcome (asyncio's
/// `gather(..., return_exceptions=True)`).
inline constexpr ReturnExceptions return_exceptions{};

namespace detail {

/// The future gather() returns. Cancelling it cancels every child; it then ends cancelled.
template <class R>
class GatherState : public FutureState<R> {
 public:
  GatherState(EventLoop& loop, bool settled) : FutureState<R>(loop), settled_(settled) {}

  bool cancel(std::string message) override {
    if (this->done()) return false;
    bool any = false;
    for (auto& child : children_) {
      if (child->cancel(message)) any = true;
    }
    // The result arrives through the children's callbacks; it will be a cancellation.
    if (any) cancel_requested_ = true;
    cancel_message_ = std::move(message);
    return any;
  }

  /// Registers the children; call once, after filling the typed futures in the subclass.
  void watch(std::vector<Ref<FutureStateBase>> children) {
    children_ = std::move(children);
    if (children_.empty()) {
      this->set_result(collect());
      return;
    }
    for (auto& child : children_) {
      child->add_done_callback([self = Ref<GatherState>(this)](FutureStateBase& c) {
        self->child_done(c);
      });
    }
  }

 protected:
  virtual R collect() = 0;

 private:
  void child_done(FutureStateBase& child) {
    ++finished_;
    if (this->done()) {
      if (!child.cancelled()) child.mark_retrieved();  // reported through the outer already
      return;
    }
    if (!settled_) {
      if (child.cancelled()) {
        this->mark_cancelled(child.cancel_message());
        return;
      }
      if (std::exception_ptr e = child.exception()) {
        this->set_exception(e);
        return;
      }
    }
    if (finished_ == children_.size()) {
      if (cancel_requested_) {
        this->mark_cancelled(cancel_message_);
      } else {
        this->set_result(collect());
      }
    }
  }

  std::vector<Ref<FutureStateBase>> children_;
  std::size_t finished_ = 0;
  bool settled_;
  bool cancel_requested_ = false;
  std::string cancel_message_;
};

template <bool Settled, class T>
using gather_element_t = std::conditional_t<Settled, Outcome<T>, value_or_monostate_t<T>>;

template <bool Settled, class T>
gather_element_t<Settled, T> gather_extract(Future<T>& f) {
  if constexpr (Settled) {
    if (f.cancelled()) return Outcome<T>(std::make_exception_ptr(CancelledError(f.state()->cancel_message())));
    if (std::exception_ptr e = f.exception()) return Outcome<T>(e);
  }
  if constexpr (std::is_void_v<T>) {
    f.state()->take();
    return std::monostate{};
  } else {
    return f.state()->take();
  }
}

template <bool Settled, class... Ts>
class TupleGather final : public GatherState<std::tuple<gather_element_t<Settled, Ts>...>> {
 public:
  using Result = std::tuple<gather_element_t<Settled, Ts>...>;
  TupleGather(EventLoop& loop, Future<Ts>... futures)
      : GatherState<Result>(loop, Settled), futures_(std::move(futures)...) {}

  void start() {
    std::vector<Ref<FutureStateBase>> children;
    std::apply([&](auto&... f) { (children.emplace_back(f.state()), ...); }, futures_);
    this->watch(std::move(children));
  }

 private:
  Result collect() override {
    return std::apply([](auto&... f) { return Result(gather_extract<Settled>(f)...); }, futures_);
  }
  std::tuple<Future<Ts>...> futures_;
};

template <bool Settled, class T>
class VectorGather final : public GatherState<std::vector<gather_element_t<Settled, T>>> {
 public:
  using Result = std::vector<gather_element_t<Settled, T>>;
  VectorGather(EventLoop& loop, std::vector<Future<T>> futures)
      : GatherState<Result>(loop, Settled), futures_(std::move(futures)) {}

  void start() {
    std::vector<Ref<FutureStateBase>> children;
    children.reserve(futures_.size());
    for (auto& f : futures_) children.emplace_back(f.state());
    this->watch(std::move(children));
  }

 private:
  Result collect() override {
    Result out;
    out.reserve(futures_.size());
    for (auto& f : futures_) out.push_back(gather_extract<Settled>(f));
    return out;
  }
  std::vector<Future<T>> futures_;
};

template <class State, class... Args>
Future<typename State::Result> start_gather(Args&&... args) {
  auto* state = new State(get_running_loop(), std::forward<Args>(args)...);
  Future<typename State::Result> outer{Ref<FutureState<typename State::Result>>(state)};
  state->start();
  return outer;
}

template <bool Settled, class A>
auto gather_range(std::vector<A> aws) {
  using T = await_result_t<A>;
  std::vector<Future<T>> futures;
  futures.reserve(aws.size());
  for (auto& a : aws) futures.push_back(ensure_future(std::move(a)));
  return start_gather<VectorGather<Settled, T>>(std::move(futures));
}

}  // namespace detail

/// Runs @p aws concurrently and gathers their results in argument order (asyncio.gather).
///
/// Each argument is a Coro (wrapped in a Task at once), a Task or a Future. The returned
/// Future's value is a std::tuple of the results (std::monostate for void ones). If one
/// fails, the Future fails with that exception at once and the others keep running; if one
/// is cancelled, the Future ends cancelled. With no arguments the Future is done at once.
///
/// @par Cancellation  Not cancel-safe: cancelling the returned Future, or a task awaiting it,
/// cancels every child that is not done, and the Future ends cancelled once they have
/// finished; the results of the children done already are lost with it. A child given as a
/// Task or a Future keeps its own result; one given as a Coro (or another awaitable) runs in a
/// Task that nobody else holds, so its result is gone.
/// @throws EventLoopError  no loop is running on this thread.
template <Awaitable... As>
auto gather(As&&... aws) {
  return detail::start_gather<detail::TupleGather<false, await_result_t<As>...>>(
      ensure_future(std::forward<As>(aws))...);
}

/// Like gather(aws...), but never fails: the tuple holds each child's Outcome, its value or
/// its exception (CancelledError for a cancelled child), as return_exceptions=True does.
template <Awaitable... As>
auto gather(ReturnExceptions, As&&... aws) {
  return detail::start_gather<detail::TupleGather<true, await_result_t<As>...>>(
      ensure_future(std::forward<As>(aws))...);
}

/// gather() over a vector of Coros, Tasks or Futures of one type: the value is a vector of
/// results in the same order.
template <Awaitable A>
auto gather(std::vector<A> aws) {
  return detail::gather_range<false>(std::move(aws));
}

/// gather(return_exceptions, ...) over a vector: the value is a vector of Outcomes.
template <Awaitable A>
auto gather(ReturnExceptions, std::vector<A> aws) {
  return detail::gather_range<true>(std::move(aws));
}

}  // namespace strata
