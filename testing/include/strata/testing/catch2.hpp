#pragma once
/// @file
/// Catch2 (v2) helpers: TestLoop runs a coroutine test body with a deadline and checks that
/// nothing is left pending; STRATA_LOOP_TEST_CASE runs a test once per loop backend.
/// Header-only: include it after your Catch2 setup, in a test linked to strata::core.

#include <catch2/catch.hpp>

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include <strata/core/diagnostics.hpp>
#include <strata/core/event_loop.hpp>
#include <strata/core/task.hpp>
#include <strata/testing/virtual_time.hpp>

namespace strata::testing {

/// Tag types for STRATA_LOOP_TEST_CASE: TestType::kind is the backend.
struct EpollLoop {
  static constexpr LoopKind kind = LoopKind::epoll;  ///< the backend
};
/// Tag type: the poll backend.
struct PollLoop {
  static constexpr LoopKind kind = LoopKind::poll;  ///< the backend
};
/// Tag type: the select backend.
struct SelectLoop {
  static constexpr LoopKind kind = LoopKind::select;  ///< the backend
};
/// Tag type: the proactor loop.
struct ProactorLoop {
  static constexpr LoopKind kind = LoopKind::proactor;  ///< the backend
};

/// Which clock a TestLoop runs on.
enum class TestClock {
  real,     ///< the real clock: deadlines in real time
  virtual_  ///< virtual time (new_virtual_time_loop()): timeouts take no real time
};

/// A fresh loop of one backend for one test: it records what reaches its exception handler,
/// runs coroutines with a deadline (a hung test fails with a dump of its pending tasks and
/// their await chains instead of hanging), and on destruction closes the loop and fails the
/// test if a task was left pending, or if a connection kept a buffer of the loop's receive pool
/// (LoopMetrics::receive_buffers_held) past the close.
class TestLoop {
 public:
  /// A loop of backend @p kind on @p clock.
  explicit TestLoop(LoopKind kind, TestClock clock = TestClock::real)
      : loop_(clock == TestClock::virtual_ ? new_virtual_time_loop(kind) : new_event_loop(kind)),
        clock_(clock) {
    loop_->set_exception_handler(
        [this](EventLoop&, const ExceptionContext& context) { errors_.push_back(context); });
  }
  TestLoop(const TestLoop&) = delete;
  TestLoop& operator=(const TestLoop&) = delete;
  ~TestLoop() {
    std::vector<std::string> pending;
    for (TaskRef& t : all_tasks(*loop_)) pending.push_back(t.get_name());
    if (!loop_->is_running()) loop_->close();
    // Transports close with their loop: a pool receive buffer still held now was lost.
    if (const std::size_t held = loop_->metrics().receive_buffers_held; held != 0) {
      FAIL_CHECK(held << " receive buffer(s) of the loop's pool still held at teardown");
    }
    if (!pending.empty()) {
      std::string names;
      for (auto& n : pending) names += " " + n;
      FAIL_CHECK("tasks left pending at teardown:" << names);
    }
  }

  /// The loop.
  EventLoop& operator*() const noexcept { return *loop_; }
  /// The loop's members.
  EventLoop* operator->() const noexcept { return loop_.get(); }
  /// The loop.
  EventLoop& get() const noexcept { return *loop_; }
  /// Whether the loop runs on virtual time.
  bool virtual_time() const noexcept { return clock_ == TestClock::virtual_; }

  /// What the loop's exception handler received so far.
  const std::vector<ExceptionContext>& errors() const noexcept { return errors_; }

  /// The default deadline of run(): 10 s of real time, or an hour of virtual time (where a
  /// deadlocked test reaches it at once, and a long timeout costs nothing).
  Duration default_deadline() const noexcept {
    return virtual_time() ? Duration(std::chrono::hours(1)) : Duration(std::chrono::seconds(10));
  }

  /// Runs @p coro as a task named "test-main" until it is done, and returns its result. If
  /// @p deadline passes first (on the loop's clock; zero: default_deadline()), the test fails
  /// with the pending tasks and their await chains, and every task is cancelled.
  template <class T>
  T run(Coro<T> coro, Duration deadline = Duration::zero()) {
    Task<T> task = loop_->create_task(std::move(coro), "test-main");
    arm_deadline(deadline == Duration::zero() ? default_deadline() : deadline);
    struct Disarm {
      TestLoop* self;
      ~Disarm() { self->deadline_.cancel(); }
    } disarm{this};
    return loop_->run_until_complete(Future<T>(task));
  }

  /// Virtual time only: runs the loop until its clock has moved forward by @p d (see
  /// strata::testing::advance()).
  void advance(Duration d) { testing::advance(*loop_, d); }

 private:
  void arm_deadline(Duration deadline) {
    deadline_ = loop_->call_later(deadline, [this] {
      FAIL_CHECK("test deadline passed; pending tasks:\n" << format_tasks(*loop_));
      for (TaskRef& t : all_tasks(*loop_)) t.cancel("test deadline");
    });
  }

  std::unique_ptr<EventLoop> loop_;
  TestClock clock_;
  std::vector<ExceptionContext> errors_;
  TimerHandle deadline_;
};

}  // namespace strata::testing

namespace strata::testing {
/// The backend that the running STRATA_LOOP_TEST_CASE was registered for: the test body's
/// TestType. Set before each run of the body; a test runs on one thread at a time.
struct CurrentLoop {
  static inline LoopKind kind = LoopKind::epoll;  ///< the backend  // NOLINT(*-non-const-global-variables)
};
}  // namespace strata::testing

/// @cond INTERNAL
// One registration of a loop test's body for one backend: its name is "<name> - <tag type>".
#define STRATA_LOOP_TEST_REGISTER_(fn, registrar, name, tags, tag_type)                       \
  namespace {                                                                                \
  const ::Catch::AutoReg registrar(/* NOLINT(cert-err58-cpp) */                              \
                                   ::Catch::makeTestInvoker(+[] {                            \
                                     ::strata::testing::CurrentLoop::kind = tag_type::kind;  \
                                     fn<>();                                                 \
                                   }),                                                       \
                                   CATCH_INTERNAL_LINEINFO, ::Catch::StringRef(),            \
                                   ::Catch::NameAndTags{name " - " #tag_type, tags});        \
  }

// The body is a function template whose TestType defaults to CurrentLoop: it is compiled once
// (a TEMPLATE_TEST_CASE would compile it once per backend) and registered once per backend.
#define STRATA_LOOP_TEST_DECLARE_(fn) \
  template <class TestType = ::strata::testing::CurrentLoop>    \
  static void fn();

// Expands the unique function name before the macros that paste it.
#define STRATA_LOOP_TEST_EXPAND_(macro, fn, name, tags) macro(fn, name, tags)

#define STRATA_LOOP_TEST_CASE_(fn, name, tags)                                               \
  STRATA_LOOP_TEST_DECLARE_(fn)                                                              \
  STRATA_LOOP_TEST_REGISTER_(fn, fn##_epoll, name, tags, ::strata::testing::EpollLoop)       \
  STRATA_LOOP_TEST_REGISTER_(fn, fn##_poll, name, tags, ::strata::testing::PollLoop)         \
  STRATA_LOOP_TEST_REGISTER_(fn, fn##_select, name, tags, ::strata::testing::SelectLoop)     \
  STRATA_LOOP_TEST_REGISTER_(fn, fn##_proactor, name, tags, ::strata::testing::ProactorLoop) \
  template <class TestType>                                                                  \
  static void fn()

#define STRATA_SELECTOR_LOOP_TEST_CASE_(fn, name, tags)                                    \
  STRATA_LOOP_TEST_DECLARE_(fn)                                                            \
  STRATA_LOOP_TEST_REGISTER_(fn, fn##_epoll, name, tags, ::strata::testing::EpollLoop)     \
  STRATA_LOOP_TEST_REGISTER_(fn, fn##_poll, name, tags, ::strata::testing::PollLoop)       \
  STRATA_LOOP_TEST_REGISTER_(fn, fn##_select, name, tags, ::strata::testing::SelectLoop)   \
  template <class TestType>                                                                \
  static void fn()
/// @endcond

/// A Catch2 test case that runs once per loop: the selector loop's three backends and the
/// proactor loop; in its body, TestType::kind is the LoopKind of the run. Lists as
/// "<name> - ::strata::testing::EpollLoop", "... PollLoop", "... SelectLoop",
/// "... ProactorLoop". The body is compiled once (TestType is strata::testing::CurrentLoop,
/// whose kind is set before each run), not once per backend.
#define STRATA_LOOP_TEST_CASE(name, tags) \
  STRATA_LOOP_TEST_EXPAND_(STRATA_LOOP_TEST_CASE_, INTERNAL_CATCH_UNIQUE_NAME(strata_loop_test_), name, tags)

/// A Catch2 test case that runs once per backend of the selector loop only: for what only
/// readiness has, e.g. faults injected at the C library's recv()/send(), which the proactor's
/// io_uring operations never call. Lists as STRATA_LOOP_TEST_CASE does, without the proactor.
#define STRATA_SELECTOR_LOOP_TEST_CASE(name, tags)                                     \
  STRATA_LOOP_TEST_EXPAND_(STRATA_SELECTOR_LOOP_TEST_CASE_,                             \
                           INTERNAL_CATCH_UNIQUE_NAME(strata_loop_test_), name, tags)
