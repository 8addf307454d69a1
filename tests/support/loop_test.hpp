#pragma once
// Test support: run each loop-facing test on every backend, with a deadline instead of a hang.

#include <catch2/catch.hpp>

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include <strata/core/event_loop.hpp>
#include <strata/core/task.hpp>

namespace strata::testing {

struct EpollLoop {
  static constexpr LoopKind kind = LoopKind::epoll;
};
struct PollLoop {
  static constexpr LoopKind kind = LoopKind::poll;
};
struct SelectLoop {
  static constexpr LoopKind kind = LoopKind::select;
};

/// A fresh loop of the test's backend that records what reaches its exception handler, and
/// on destruction closes the loop and checks that no task was left pending.
class TestLoop {
 public:
  explicit TestLoop(LoopKind kind);
  ~TestLoop();

  EventLoop& operator*() const noexcept { return *loop_; }
  EventLoop* operator->() const noexcept { return loop_.get(); }
  EventLoop& get() const noexcept { return *loop_; }

  /// Messages given to the exception handler so far.
  const std::vector<ExceptionContext>& errors() const noexcept { return errors_; }

  /// Runs @p coro as a task until done, or fails the test with the names of the pending
  /// tasks once @p deadline passes.
  template <class T>
  T run(Coro<T> coro, Duration deadline = std::chrono::seconds(10)) {
    Task<T> task = loop_->create_task(std::move(coro), "test-main");
    arm_deadline(deadline);
    struct Disarm {
      TestLoop* self;
      ~Disarm() { self->disarm_deadline(); }
    } disarm{this};
    return loop_->run_until_complete(Future<T>(task));
  }

 private:
  void arm_deadline(Duration deadline);
  void disarm_deadline();

  std::unique_ptr<EventLoop> loop_;
  std::vector<ExceptionContext> errors_;
  TimerHandle deadline_;
};

}  // namespace strata::testing

/// A test case that runs once per selector backend; TestType::kind is the LoopKind.
/// Lists in CTest as "<name> - EpollLoop", "<name> - PollLoop", "<name> - SelectLoop".
#define STRATA_LOOP_TEST_CASE(name, tags)                                               \
  TEMPLATE_TEST_CASE(name, tags, ::strata::testing::EpollLoop, ::strata::testing::PollLoop, \
                     ::strata::testing::SelectLoop)
