#include <strata/core/event_loop.hpp>

#include <catch2/catch.hpp>

#include <fcntl.h>
#include <sys/resource.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <fstream>
#include <latch>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <strata/core/errors.hpp>
#include <strata/core/log.hpp>
#include <strata/core/sleep.hpp>
#include <strata/core/task.hpp>

#include "loop_test.hpp"

using namespace std::chrono_literals;
using Catch::Matchers::Contains;
using Catch::Matchers::StartsWith;
using strata::Clock;
using strata::Duration;
using strata::EventLoop;
using strata::EventLoopError;
using strata::LogLevel;
using strata::TimePoint;
using strata::testing::TestLoop;

namespace {

// ---- Helpers ---------------------------------------------------------------------------------

/// Captures every strata::log record while alive; restores the default handler after.
/// Declare it before the loop so that it outlives the loop's close().
class LogCapture {
 public:
  struct Record {
    LogLevel level;
    std::string message;
  };

  LogCapture() {
    strata::set_log_handler([this](LogLevel level, std::string_view message) {
      std::lock_guard lock(mutex_);
      records_.push_back({level, std::string(message)});
    });
  }
  ~LogCapture() { strata::set_log_handler({}); }
  LogCapture(const LogCapture&) = delete;
  LogCapture& operator=(const LogCapture&) = delete;

  std::vector<Record> records() const {
    std::lock_guard lock(mutex_);
    return records_;
  }

  /// The first record at @p level whose message holds every one of @p needles.
  std::optional<std::string> find(LogLevel level, std::initializer_list<std::string_view> needles) const {
    for (const Record& r : records()) {
      if (r.level != level) continue;
      bool all = true;
      for (std::string_view n : needles) all = all && r.message.find(n) != std::string::npos;
      if (all) return r.message;
    }
    return std::nullopt;
  }

 private:
  mutable std::mutex mutex_;
  std::vector<Record> records_;
};

/// Sets (or, with nullptr, unsets) an environment variable, restoring the old value after.
class EnvVar {
 public:
  EnvVar(const char* name, const char* value) : name_(name) {
    if (const char* old = std::getenv(name)) old_ = old;
    if (value) {
      ::setenv(name, value, 1);
    } else {
      ::unsetenv(name);
    }
  }
  ~EnvVar() {
    if (old_) {
      ::setenv(name_, old_->c_str(), 1);
    } else {
      ::unsetenv(name_);
    }
  }
  EnvVar(const EnvVar&) = delete;
  EnvVar& operator=(const EnvVar&) = delete;

 private:
  const char* name_;
  std::optional<std::string> old_;
};

/// A connected pair of non-blocking Unix stream sockets, closed on destruction. Declare it
/// before the loop, so that the loop closes (and forgets the descriptors) first.
struct SocketPair {
  int a = -1;
  int b = -1;
  SocketPair() {
    int fds[2];
    REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, fds) == 0);
    a = fds[0];
    b = fds[1];
  }
  ~SocketPair() {
    close_a();
    close_b();
  }
  SocketPair(const SocketPair&) = delete;
  SocketPair& operator=(const SocketPair&) = delete;
  void close_a() {
    if (a >= 0) ::close(std::exchange(a, -1));
  }
  void close_b() {
    if (b >= 0) ::close(std::exchange(b, -1));
  }
};

void send_byte(int fd, char c = 'x') { REQUIRE(::write(fd, &c, 1) == 1); }

/// Reads what is there without blocking; returns the byte count (0 at EOF, -1 if none).
ssize_t drain(int fd) {
  char buf[65536];
  ssize_t total = -1;
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n > 0) {
      total = (total < 0 ? 0 : total) + n;
      continue;
    }
    if (n == 0) return total < 0 ? 0 : total;
    return total;
  }
}

/// Runs @p loop until a timer the test sets fires after @p d (or something stops it earlier).
void run_for(EventLoop& loop, Duration d) {
  strata::TimerHandle t = loop.call_later(d, [&loop] { loop.stop(); });
  loop.run_forever();
  t.cancel();
}

/// Runs @p loop until a callback stops it; fails the test if that takes longer than @p limit.
void run_until_stopped(EventLoop& loop, Duration limit = 10s) {
  bool expired = false;
  strata::TimerHandle t = loop.call_later(limit, [&] {
    expired = true;
    loop.stop();
  });
  loop.run_forever();
  t.cancel();
  CHECK_FALSE(expired);
}

/// A thread that stops @p loop if the test has not finished within @p limit: a bound for
/// tests that must not add a timer of their own to the loop.
class Watchdog {
 public:
  Watchdog(EventLoop& loop, Duration limit)
      : thread_([this, &loop, limit] {
          std::unique_lock lock(mutex_);
          if (!cv_.wait_for(lock, limit, [this] { return done_; })) {
            fired_ = true;
            loop.stop();
          }
        }) {}
  ~Watchdog() {
    {
      std::lock_guard lock(mutex_);
      done_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }
  Watchdog(const Watchdog&) = delete;
  Watchdog& operator=(const Watchdog&) = delete;
  bool fired() const noexcept { return fired_; }

 private:
  std::mutex mutex_;
  std::condition_variable cv_;
  bool done_ = false;
  std::atomic<bool> fired_{false};
  std::thread thread_;
};

/// Whether Linux reports thread @p tid of this process as sleeping ('S'): blocked in a
/// system call such as epoll_wait, poll or select.
bool thread_is_sleeping(pid_t tid) {
  std::ifstream in("/proc/self/task/" + std::to_string(tid) + "/stat");
  std::string stat;
  if (!std::getline(in, stat)) return false;
  auto paren = stat.rfind(')');
  return paren != std::string::npos && paren + 2 < stat.size() && stat[paren + 2] == 'S';
}

/// Waits (yielding, up to @p limit) until thread @p tid blocks; false if it never did.
bool wait_until_sleeping(pid_t tid, Duration limit = 5s) {
  const auto deadline = Clock::now() + limit;
  while (!thread_is_sleeping(tid)) {
    if (Clock::now() > deadline) return false;
    std::this_thread::yield();
  }
  return true;
}

void busy_wait(Duration d) {
  const auto end = Clock::now() + d;
  while (Clock::now() < end) {
  }
}

/// A named callable, so that log lines can be checked for its name.
struct SlowCallback {
  bool* ran;
  void operator()() const {
    busy_wait(5ms);
    *ran = true;
  }
};

struct ThrowingCallback {
  void operator()() const { throw std::runtime_error("boom from a callback"); }
};

strata::Coro<int> answer_after(Duration d) {
  co_await strata::sleep(d);
  co_return 42;
}

strata::Coro<void> set_flag(bool* flag) {
  *flag = true;
  co_return;
}

}  // namespace

// ---- Scheduling ------------------------------------------------------------------------------

STRATA_LOOP_TEST_CASE("EventLoop: call_soon callbacks run in the order they were scheduled",
                      "[core][event_loop]") {
  TestLoop loop(TestType::kind);
  std::vector<int> order;
  for (int i = 0; i < 100; ++i) {
    loop->call_soon([&order, i] { order.push_back(i); });
  }
  loop->call_soon([&] { loop->stop(); });
  run_until_stopped(*loop);
  REQUIRE(order.size() == 100);
  for (int i = 0; i < 100; ++i) CHECK(order[static_cast<std::size_t>(i)] == i);
  CHECK(loop.errors().empty());
}

STRATA_LOOP_TEST_CASE(
    "EventLoop: call_soon never runs the callback inside the call, and callbacks scheduled by a "
    "callback run after those already queued",
    "[core][event_loop]") {
  TestLoop loop(TestType::kind);
  std::vector<std::string> order;
  loop->call_soon([&] {
    order.push_back("a");
    loop->call_soon([&] {
      order.push_back("d");
      loop->stop();
    });
    order.push_back("a-after-call_soon");
  });
  loop->call_soon([&] { order.push_back("b"); });
  loop->call_soon([&] { order.push_back("c"); });
  CHECK(order.empty());  // nothing ran inside call_soon
  run_until_stopped(*loop);
  CHECK(order == std::vector<std::string>{"a", "a-after-call_soon", "b", "c", "d"});
}

STRATA_LOOP_TEST_CASE("EventLoop: call_later timers run in deadline order, never early",
                      "[core][event_loop]") {
  TestLoop loop(TestType::kind);
  std::vector<int> order;
  int early = 0;
  std::vector<strata::TimerHandle> handles;
  handles.reserve(4);
  auto at = [&](Duration delay, int id) {
    const std::size_t index = handles.size();
    handles.push_back(loop->call_later(delay, [&, index, id] {
      if (loop->time() < handles[index].when()) ++early;
      order.push_back(id);
      if (order.size() == 4) loop->stop();
    }));
  };
  at(30ms, 30);
  at(10ms, 10);
  at(20ms, 20);
  at(0ms, 0);
  run_until_stopped(*loop);
  CHECK(order == std::vector<int>{0, 10, 20, 30});
  CHECK(early == 0);
}

STRATA_LOOP_TEST_CASE("EventLoop: call_at timers with equal deadlines run in scheduling order",
                      "[core][event_loop]") {
  TestLoop loop(TestType::kind);
  std::vector<int> order;
  const TimePoint when = loop->time() + 5ms;
  // Interleave a later deadline, so that ties are not merely insertion order in a list.
  loop->call_at(when + 1ms, [&] {
    order.push_back(-1);
    loop->stop();
  });
  for (int i = 0; i < 50; ++i) {
    loop->call_at(when, [&order, i] { order.push_back(i); });
  }
  run_until_stopped(*loop);
  REQUIRE(order.size() == 51);
  for (int i = 0; i < 50; ++i) CHECK(order[static_cast<std::size_t>(i)] == i);
  CHECK(order.back() == -1);
}

STRATA_LOOP_TEST_CASE("EventLoop: call_at with a deadline in the past runs on the next iteration",
                      "[core][event_loop]") {
  TestLoop loop(TestType::kind);
  bool ran = false;
  loop->call_at(loop->time() - 1h, [&] { ran = true; });
  loop->stop();  // one iteration
  loop->run_forever();
  CHECK(ran);
}

STRATA_LOOP_TEST_CASE("EventLoop: time() is monotonic and follows the steady clock",
                      "[core][event_loop]") {
  TestLoop loop(TestType::kind);
  TimePoint previous = loop->time();
  int went_back = 0;
  for (int i = 0; i < 10000; ++i) {
    TimePoint now = loop->time();
    if (now < previous) ++went_back;
    previous = now;
  }
  CHECK(went_back == 0);
  const TimePoint before = Clock::now();
  const TimePoint t = loop->time();
  const TimePoint after = Clock::now();
  CHECK(before <= t);
  CHECK(t <= after);

  const TimePoint start = loop->time();
  Duration elapsed{};
  loop->call_later(10ms, [&] {
    elapsed = loop->time() - start;
    loop->stop();
  });
  run_until_stopped(*loop);
  CHECK(elapsed >= 10ms);
}

// ---- Running and stopping -------------------------------------------------------------------

STRATA_LOOP_TEST_CASE(
    "EventLoop: stop inside a callback lets the rest of that iteration run, then run_forever "
    "returns",
    "[core][event_loop]") {
  TestLoop loop(TestType::kind);
  std::vector<std::string> order;
  loop->call_soon([&] {
    order.push_back("a");
    loop->stop();
    loop->call_soon([&] {
      order.push_back("next");
      loop->stop();
    });
  });
  loop->call_soon([&] { order.push_back("b"); });
  loop->call_soon([&] { order.push_back("c"); });
  run_until_stopped(*loop);
  CHECK(order == std::vector<std::string>{"a", "b", "c"});
  CHECK_FALSE(loop->is_running());

  // What the stopping iteration scheduled runs on the next run.
  run_until_stopped(*loop);
  CHECK(order == std::vector<std::string>{"a", "b", "c", "next"});
}

STRATA_LOOP_TEST_CASE("EventLoop: stop before run_forever makes it run a single iteration",
                      "[core][event_loop]") {
  TestLoop loop(TestType::kind);
  std::vector<int> order;
  loop->call_soon([&] {
    order.push_back(1);
    loop->call_soon([&] { order.push_back(2); });
  });
  loop->stop();
  loop->run_forever();
  CHECK(order == std::vector<int>{1});
  CHECK_FALSE(loop->is_running());
  loop->stop();
  loop->run_forever();
  CHECK(order == std::vector<int>{1, 2});
}

STRATA_LOOP_TEST_CASE("EventLoop: is_running is true only while the loop runs",
                      "[core][event_loop]") {
  TestLoop loop(TestType::kind);
  CHECK_FALSE(loop->is_running());
  CHECK_FALSE(loop->is_closed());
  bool running_inside = false;
  loop->call_soon([&] {
    running_inside = loop->is_running();
    loop->stop();
  });
  run_until_stopped(*loop);
  CHECK(running_inside);
  CHECK_FALSE(loop->is_running());
  CHECK(loop->thread_id() == std::this_thread::get_id());
}

STRATA_LOOP_TEST_CASE("EventLoop: close marks the loop closed, drops what was pending, and is idempotent",
                      "[core][event_loop]") {
  TestLoop loop(TestType::kind);
  auto state = std::make_shared<int>(0);
  bool ran = false;
  loop->call_soon([&ran, state] { ran = true; });
  loop->call_later(1h, [&ran, state] { ran = true; });
  REQUIRE(state.use_count() == 3);
  loop->close();
  CHECK(loop->is_closed());
  CHECK_FALSE(loop->is_running());
  CHECK(state.use_count() == 1);  // the callbacks and their captures are gone
  CHECK_FALSE(ran);
  CHECK_NOTHROW(loop->close());
  CHECK(loop->is_closed());
}

STRATA_LOOP_TEST_CASE("EventLoop: run_until_complete returns the coroutine's result",
                      "[core][event_loop]") {
  TestLoop loop(TestType::kind);
  CHECK(loop->run_until_complete(answer_after(1ms)) == 42);
  CHECK_FALSE(loop->is_running());
  CHECK(strata::all_tasks(*loop).empty());
}

STRATA_LOOP_TEST_CASE("EventLoop: run_until_complete returns once a callback sets the Future",
                      "[core][event_loop]") {
  TestLoop loop(TestType::kind);
  strata::Future<int> f = loop->create_future<int>();
  const TimePoint start = loop->time();
  loop->call_later(5ms, [f]() mutable { f.set_result(7); });
  CHECK(loop->run_until_complete(f) == 7);
  CHECK(loop->time() - start >= 5ms);
  CHECK_FALSE(loop->is_running());
}

STRATA_LOOP_TEST_CASE("EventLoop: run_until_complete rethrows the Future's exception",
                      "[core][event_loop]") {
  TestLoop loop(TestType::kind);
  strata::Future<int> f = loop->create_future<int>();
  loop->call_soon([f]() mutable { f.set_exception(std::runtime_error("future failed")); });
  CHECK_THROWS_WITH(loop->run_until_complete(f), "future failed");
  CHECK_FALSE(loop->is_running());
}

STRATA_LOOP_TEST_CASE(
    "EventLoop: run_until_complete throws EventLoopError when the loop stops before the Future "
    "is done",
    "[core][event_loop]") {
  TestLoop loop(TestType::kind);
  strata::Future<int> f = loop->create_future<int>();
  loop->call_soon([&] { loop->stop(); });
  CHECK_THROWS_AS(loop->run_until_complete(f), EventLoopError);
  CHECK_FALSE(f.done());
  CHECK_FALSE(loop->is_running());
}

// ---- Threads ---------------------------------------------------------------------------------

STRATA_LOOP_TEST_CASE(
    "EventLoop: call_soon_threadsafe from another thread wakes a loop waiting with no timers",
    "[core][event_loop]") {
  TestLoop loop(TestType::kind);
  std::atomic<bool> poster_saw_sleep{false};
  bool ran = false;
  std::thread::id ran_on;
  std::thread poster;
  loop->call_soon([&] {
    const pid_t loop_tid = ::gettid();
    poster = std::thread([&, loop_tid] {
      // Post only once the loop thread is blocked in its selector (no timers: no timeout).
      poster_saw_sleep = wait_until_sleeping(loop_tid);
      loop->call_soon_threadsafe([&] {
        ran = true;
        ran_on = std::this_thread::get_id();
        loop->stop();
      });
    });
  });
  const TimePoint start = Clock::now();
  {
    Watchdog watchdog(*loop, 10s);
    loop->run_forever();
    CHECK_FALSE(watchdog.fired());
  }
  poster.join();
  CHECK(ran);
  CHECK(ran_on == std::this_thread::get_id());
  CHECK(Clock::now() - start < 5s);
  if (!poster_saw_sleep) WARN("could not observe the loop thread blocking; posted anyway");
}

STRATA_LOOP_TEST_CASE("EventLoop: stop from another thread wakes a loop waiting with no timers",
                      "[core][event_loop]") {
  TestLoop loop(TestType::kind);
  std::atomic<bool> poster_saw_sleep{false};
  std::thread stopper;
  loop->call_soon([&] {
    const pid_t loop_tid = ::gettid();
    stopper = std::thread([&, loop_tid] {
      poster_saw_sleep = wait_until_sleeping(loop_tid);
      loop->stop();
    });
  });
  const TimePoint start = Clock::now();
  {
    Watchdog watchdog(*loop, 10s);
    loop->run_forever();
    CHECK_FALSE(watchdog.fired());
  }
  stopper.join();
  CHECK_FALSE(loop->is_running());
  CHECK(Clock::now() - start < 5s);
  if (!poster_saw_sleep) WARN("could not observe the loop thread blocking; stopped anyway");
}

STRATA_LOOP_TEST_CASE(
    "EventLoop: call_soon_threadsafe from four threads loses no callback and keeps each thread's "
    "order",
    "[core][event_loop]") {
  constexpr int thread_count = 4;
  constexpr int per_thread = 10'000;
  TestLoop loop(TestType::kind);
  std::vector<int> next(thread_count, 0);  // loop thread only
  int total = 0;
  int out_of_order = 0;
  int off_thread = 0;
  const auto loop_thread = std::this_thread::get_id();
  std::latch start(thread_count);
  std::vector<std::thread> posters;
  loop->call_soon([&] {
    // Start the posters while the loop runs, so that posting races with draining.
    for (int t = 0; t < thread_count; ++t) {
      posters.emplace_back([&, t] {
        start.arrive_and_wait();
        for (int i = 0; i < per_thread; ++i) {
          loop->call_soon_threadsafe([&, t, i] {
            if (std::this_thread::get_id() != loop_thread) ++off_thread;
            auto slot = static_cast<std::size_t>(t);
            if (next[slot] != i) ++out_of_order;
            next[slot] = i + 1;
            if (++total == thread_count * per_thread) loop->stop();
          });
        }
      });
    }
  });
  run_until_stopped(*loop, 30s);
  for (auto& p : posters) p.join();
  CHECK(total == thread_count * per_thread);
  CHECK(out_of_order == 0);
  CHECK(off_thread == 0);
  for (int n : next) CHECK(n == per_thread);
}

STRATA_LOOP_TEST_CASE(
    "EventLoop: close while other threads call call_soon_threadsafe releases every callback",
    "[core][event_loop]") {
  struct Tracker {
    std::atomic<int>* live;
    explicit Tracker(std::atomic<int>* l) noexcept : live(l) { ++*live; }
    Tracker(const Tracker& o) noexcept : live(o.live) { ++*live; }
    Tracker(Tracker&& o) noexcept : live(o.live) { ++*live; }
    ~Tracker() { --*live; }
    Tracker& operator=(const Tracker&) = delete;
    void operator()() const {}
  };
  std::atomic<int> live{0};
  std::atomic<int> posted{0};
  std::atomic<int> refused{0};
  {
    TestLoop loop(TestType::kind);
    std::vector<std::thread> posters;
    posters.reserve(4);
    for (int t = 0; t < 4; ++t) {
      posters.emplace_back([&] {
        for (int i = 0; i < 1'000'000; ++i) {  // a bound, should close() never come
          try {
            loop->call_soon_threadsafe(Tracker(&live));
            ++posted;
          } catch (const EventLoopError&) {
            ++refused;
            return;
          }
        }
      });
    }
    const auto deadline = Clock::now() + 5s;
    while (posted < 4000 && Clock::now() < deadline) std::this_thread::yield();
    loop->close();
    for (auto& p : posters) p.join();
    CHECK(refused == 4);
    CHECK(live == 0);  // nothing posted around close() is left behind
  }
  CHECK(live == 0);
}

STRATA_LOOP_TEST_CASE("EventLoop: get_running_loop names the loop only on the thread running it",
                      "[core][event_loop]") {
  TestLoop loop(TestType::kind);
  CHECK(strata::try_get_running_loop() == nullptr);
  CHECK_THROWS_AS(strata::get_running_loop(), EventLoopError);
  EventLoop* inside = nullptr;
  EventLoop* inside_try = nullptr;
  EventLoop* other_thread = &*loop;  // overwritten by the other thread
  loop->call_soon([&] {
    inside = &strata::get_running_loop();
    inside_try = strata::try_get_running_loop();
    std::thread([&] { other_thread = strata::try_get_running_loop(); }).join();
    loop->stop();
  });
  run_until_stopped(*loop);
  CHECK(inside == &*loop);
  CHECK(inside_try == &*loop);
  CHECK(other_thread == nullptr);
  CHECK(strata::try_get_running_loop() == nullptr);
  CHECK_THROWS_AS(strata::get_running_loop(), EventLoopError);
}

// ---- File descriptors ------------------------------------------------------------------------

STRATA_LOOP_TEST_CASE("EventLoop: add_reader calls the reader once data arrives, and not before",
                      "[core][event_loop]") {
  SocketPair sp;
  TestLoop loop(TestType::kind);
  int calls = 0;
  ssize_t got = -1;
  loop->add_reader(sp.a, [&] {
    ++calls;
    got = drain(sp.a);
    loop->stop();
  });
  run_for(*loop, 20ms);
  CHECK(calls == 0);  // nothing to read yet
  loop->call_soon([&] { send_byte(sp.b); });
  run_until_stopped(*loop);
  CHECK(calls == 1);
  CHECK(got == 1);
  CHECK(loop->remove_reader(sp.a));
}

STRATA_LOOP_TEST_CASE(
    "EventLoop: remove_reader stops the reader and reports whether one was registered",
    "[core][event_loop]") {
  SocketPair sp;
  TestLoop loop(TestType::kind);
  int calls = 0;
  CHECK_FALSE(loop->remove_reader(sp.a));
  loop->add_reader(sp.a, [&] {
    ++calls;
    drain(sp.a);
    loop->stop();
  });
  send_byte(sp.b);
  run_until_stopped(*loop);
  REQUIRE(calls == 1);
  CHECK(loop->remove_reader(sp.a));
  CHECK_FALSE(loop->remove_reader(sp.a));
  send_byte(sp.b);  // readable again, but nobody is watching
  run_for(*loop, 20ms);
  CHECK(calls == 1);
}

STRATA_LOOP_TEST_CASE(
    "EventLoop: add_reader on a watched descriptor replaces the reader and releases the old one",
    "[core][event_loop]") {
  SocketPair sp;
  TestLoop loop(TestType::kind);
  auto old_state = std::make_shared<int>(0);
  int old_calls = 0;
  int new_calls = 0;
  loop->add_reader(sp.a, [&old_calls, old_state] { ++old_calls; });
  REQUIRE(old_state.use_count() == 2);
  loop->add_reader(sp.a, [&] {
    ++new_calls;
    drain(sp.a);
    loop->stop();
  });
  CHECK(old_state.use_count() == 1);
  send_byte(sp.b);
  run_until_stopped(*loop);
  CHECK(old_calls == 0);
  CHECK(new_calls == 1);
  CHECK(loop->remove_reader(sp.a));
  CHECK_FALSE(loop->remove_reader(sp.a));  // one reader per descriptor, not a stack
}

STRATA_LOOP_TEST_CASE(
    "EventLoop: add_writer calls the writer while the descriptor is writable, until remove_writer",
    "[core][event_loop]") {
  SocketPair sp;
  TestLoop loop(TestType::kind);
  int calls = 0;
  loop->add_writer(sp.b, [&] {
    if (++calls == 3) {
      CHECK(loop->remove_writer(sp.b));
      loop->stop();
    }
  });
  run_until_stopped(*loop);
  CHECK(calls == 3);  // level-triggered: once per iteration while writable
  run_for(*loop, 20ms);
  CHECK(calls == 3);
  CHECK_FALSE(loop->remove_writer(sp.b));
}

STRATA_LOOP_TEST_CASE("EventLoop: a writer on a full socket runs only once the peer drains it",
                      "[core][event_loop]") {
  SocketPair sp;
  TestLoop loop(TestType::kind);
  std::vector<char> chunk(65536, 'z');
  std::size_t filled = 0;
  for (;;) {
    ssize_t n = ::write(sp.b, chunk.data(), chunk.size());
    if (n <= 0) break;
    filled += static_cast<std::size_t>(n);
  }
  REQUIRE(filled > 0);
  int calls = 0;
  loop->add_writer(sp.b, [&] {
    ++calls;
    loop->remove_writer(sp.b);
    loop->stop();
  });
  run_for(*loop, 30ms);
  CHECK(calls == 0);
  loop->call_soon([&] { drain(sp.a); });
  run_until_stopped(*loop);
  CHECK(calls == 1);
}

STRATA_LOOP_TEST_CASE("EventLoop: a reader runs when the peer hangs up and then reads EOF",
                      "[core][event_loop]") {
  SocketPair sp;
  TestLoop loop(TestType::kind);
  ssize_t got = -1;
  loop->add_reader(sp.a, [&] {
    got = drain(sp.a);
    loop->remove_reader(sp.a);
    loop->stop();
  });
  sp.close_b();
  run_until_stopped(*loop);
  CHECK(got == 0);
}

STRATA_LOOP_TEST_CASE("EventLoop: a reader and a writer on one descriptor are independent",
                      "[core][event_loop]") {
  SocketPair sp;
  TestLoop loop(TestType::kind);
  int reads = 0;
  int writes = 0;
  loop->add_reader(sp.a, [&] {
    ++reads;
    drain(sp.a);
  });
  loop->add_writer(sp.a, [&] {
    if (++writes == 1) send_byte(sp.b);
  });
  run_for(*loop, 20ms);
  CHECK(reads == 1);
  CHECK(writes >= 2);
  CHECK(loop->remove_writer(sp.a));
  const int writes_before = writes;
  send_byte(sp.b);
  run_for(*loop, 20ms);
  CHECK(reads == 2);  // the reader survived the writer's removal
  CHECK(writes == writes_before);
  CHECK(loop->remove_reader(sp.a));
}

STRATA_LOOP_TEST_CASE(
    "EventLoop: remove_reader inside a callback stops a reader that is ready in the same iteration",
    "[core][event_loop]") {
  SocketPair first;
  SocketPair second;
  TestLoop loop(TestType::kind);
  int calls = 0;
  // Both descriptors are readable before the loop looks, so both readers become ready in one
  // iteration; whichever runs first removes the other, which must then not run.
  loop->add_reader(first.a, [&] {
    ++calls;
    drain(first.a);
    loop->remove_reader(second.a);
    loop->remove_reader(first.a);
  });
  loop->add_reader(second.a, [&] {
    ++calls;
    drain(second.a);
    loop->remove_reader(first.a);
    loop->remove_reader(second.a);
  });
  send_byte(first.b);
  send_byte(second.b);
  run_for(*loop, 20ms);
  CHECK(calls == 1);
}

STRATA_LOOP_TEST_CASE(
    "EventLoop: a reader added at once after another descriptor's remove_reader and close runs",
    "[core][event_loop]") {
  // The removed reader's wait may still be in the kernel (io_uring) when the new one is armed:
  // nothing of it may stand in the new one's way. The closed number goes to a socket that is
  // never readable.
  TestLoop loop(TestType::kind);
  SocketPair old;
  loop->add_reader(old.a, [] {});
  run_for(*loop, 20ms);  // its wait is in flight
  REQUIRE(loop->remove_reader(old.a));
  old.close_a();
  SocketPair idle;  // takes the closed number; nothing is ever sent to it
  SocketPair watched;
  int calls = 0;
  loop->add_reader(watched.a, [&] {
    ++calls;
    drain(watched.a);
    loop->stop();
  });
  send_byte(watched.b);
  run_until_stopped(*loop, 2s);
  CHECK(calls == 1);
  CHECK(loop->remove_reader(watched.a));
}

STRATA_LOOP_TEST_CASE("EventLoop: add_reader and add_writer throw std::invalid_argument for a negative descriptor",
                      "[core][event_loop]") {
  TestLoop loop(TestType::kind);
  CHECK_THROWS_AS(loop->add_reader(-1, [] {}), std::invalid_argument);
  CHECK_THROWS_AS(loop->add_writer(-1, [] {}), std::invalid_argument);
  CHECK_FALSE(loop->remove_reader(-1));
  CHECK_FALSE(loop->remove_writer(-1));
}

STRATA_LOOP_TEST_CASE("EventLoop: add_reader on a descriptor that is not open: epoll and the "
                      "proactor refuse it, poll and select accept it",
                      "[core][event_loop]") {
  TestLoop loop(TestType::kind);  // first: its own descriptors must not take the numbers
  int fds[2];
  REQUIRE(::pipe(fds) == 0);
  ::close(fds[0]);
  ::close(fds[1]);
  const strata::LoopKind kind = TestType::kind;
  if (kind == strata::LoopKind::epoll || kind == strata::LoopKind::proactor) {
    // epoll_ctl() refuses it; the proactor checks it the same way (a poll of it would fail
    // only later, and must not turn into a callback at every iteration).
    CHECK_THROWS_AS(loop->add_reader(fds[0], [] {}), std::system_error);
    CHECK_THROWS_AS(loop->add_writer(fds[0], [] {}), std::system_error);
    CHECK_FALSE(loop->remove_reader(fds[0]));
  } else {
    // poll(2) and select(2) take any number; what they report for it is the kernel's.
    CHECK_NOTHROW(loop->add_reader(fds[0], [] {}));
    CHECK(loop->remove_reader(fds[0]));
  }
}

STRATA_LOOP_TEST_CASE("EventLoop: close releases the reader and writer callbacks",
                      "[core][event_loop]") {
  SocketPair sp;
  TestLoop loop(TestType::kind);
  auto state = std::make_shared<int>(0);
  loop->add_reader(sp.a, [state] {});
  loop->add_writer(sp.a, [state] {});
  REQUIRE(state.use_count() == 3);
  loop->close();
  CHECK(state.use_count() == 1);
  CHECK_FALSE(loop->remove_reader(sp.a));
}

namespace {

/// A descriptor number at or above FD_SETSIZE referring to @p fd, or -1 (with the reason in
/// @p why) when the process may not open that many descriptors.
int dup_above_fd_setsize(int fd, std::string& why) {
  rlimit lim{};
  if (::getrlimit(RLIMIT_NOFILE, &lim) != 0) {
    why = "getrlimit failed";
    return -1;
  }
  const rlim_t want = FD_SETSIZE + 16;
  if (lim.rlim_cur < want) {
    if (lim.rlim_max != RLIM_INFINITY && lim.rlim_max < want) {
      why = "RLIMIT_NOFILE hard limit " + std::to_string(lim.rlim_max) + " is below FD_SETSIZE";
      return -1;
    }
    rlimit raised = lim;
    raised.rlim_cur = want;
    if (::setrlimit(RLIMIT_NOFILE, &raised) != 0) {
      why = "setrlimit failed";
      return -1;
    }
  }
  int high = ::fcntl(fd, F_DUPFD_CLOEXEC, FD_SETSIZE + 4);
  if (high < 0) why = "fcntl(F_DUPFD) failed";
  return high;
}

}  // namespace

STRATA_LOOP_TEST_CASE(
    "EventLoop: a descriptor at or above FD_SETSIZE is watched, except by select which throws "
    "std::invalid_argument",
    "[core][event_loop]") {
  SocketPair sp;
  std::string why;
  const int high = dup_above_fd_setsize(sp.a, why);
  if (high < 0) {
    WARN("skipped: cannot open a descriptor at FD_SETSIZE or above: " << why);
    return;
  }
  struct Close {
    int fd;
    ~Close() { ::close(fd); }
  } close_high{high};
  TestLoop loop(TestType::kind);
  int calls = 0;
  if (TestType::kind == strata::LoopKind::select) {
    CHECK_THROWS_AS(loop->add_reader(high, [&] { ++calls; }), std::invalid_argument);
    CHECK_THROWS_WITH(loop->add_reader(high, [&] { ++calls; }), Contains(std::to_string(high)));
    CHECK_THROWS_AS(loop->add_writer(high, [&] { ++calls; }), std::invalid_argument);
    CHECK_FALSE(loop->remove_reader(high));  // nothing was registered
    CHECK_FALSE(loop->remove_writer(high));
    send_byte(sp.b);
    run_for(*loop, 20ms);
    CHECK(calls == 0);
  } else {
    loop->add_reader(high, [&] {
      ++calls;
      drain(high);
      loop->stop();
    });
    send_byte(sp.b);
    run_until_stopped(*loop);
    CHECK(calls == 1);
    CHECK(loop->remove_reader(high));
  }
}

// ---- Errors and the exception handler --------------------------------------------------------

STRATA_LOOP_TEST_CASE(
    "EventLoop: an exception escaping a callback goes to the exception handler and the loop "
    "keeps running",
    "[core][event_loop]") {
  TestLoop loop(TestType::kind);
  std::vector<strata::ExceptionContext> seen;
  EventLoop* handler_loop = nullptr;
  loop->set_exception_handler([&](EventLoop& l, const strata::ExceptionContext& c) {
    handler_loop = &l;
    seen.push_back(c);
  });
  REQUIRE(loop->get_exception_handler());
  std::vector<std::string> order;
  loop->call_soon(ThrowingCallback{});
  loop->call_soon([&] {
    order.push_back("same iteration");
    loop->call_soon([&] {
      order.push_back("next iteration");
      loop->stop();
    });
  });
  run_until_stopped(*loop);
  CHECK(order == std::vector<std::string>{"same iteration", "next iteration"});
  REQUIRE(seen.size() == 1);
  CHECK(handler_loop == &*loop);
  CHECK_THAT(seen[0].message, StartsWith("Exception in callback"));
  CHECK_THAT(seen[0].message, Contains("ThrowingCallback"));
  CHECK_THAT(seen[0].callback, Contains("ThrowingCallback"));
  REQUIRE(seen[0].exception);
  CHECK(strata::describe_exception(seen[0].exception) == "boom from a callback");
  CHECK(seen[0].task.empty());
}

STRATA_LOOP_TEST_CASE(
    "EventLoop: with no exception handler set, an escaping exception is logged at error level",
    "[core][event_loop]") {
  LogCapture logs;
  TestLoop loop(TestType::kind);
  loop->set_exception_handler({});  // restores the default handler
  CHECK_FALSE(loop->get_exception_handler());
  bool after = false;
  loop->call_soon(ThrowingCallback{});
  loop->call_soon([&] {
    after = true;
    loop->stop();
  });
  run_until_stopped(*loop);
  CHECK(after);
  auto line = logs.find(LogLevel::error, {"Exception in callback", "ThrowingCallback",
                                          "boom from a callback"});
  CHECK(line.has_value());
}

STRATA_LOOP_TEST_CASE("EventLoop: default_exception_handler logs every field of the context",
                      "[core][event_loop]") {
  LogCapture logs;
  TestLoop loop(TestType::kind);
  loop->default_exception_handler({"something went wrong",
                                   std::make_exception_ptr(std::runtime_error("the cause")),
                                   "the-callback", "the-task"});
  auto line = logs.find(LogLevel::error,
                        {"something went wrong", "the cause", "the-callback", "the-task"});
  CHECK(line.has_value());
}

STRATA_LOOP_TEST_CASE(
    "EventLoop: an exception thrown by the exception handler is logged, not propagated",
    "[core][event_loop]") {
  LogCapture logs;
  TestLoop loop(TestType::kind);
  loop->set_exception_handler([](EventLoop&, const strata::ExceptionContext&) {
    throw std::runtime_error("handler broke");
  });
  bool after = false;
  loop->call_soon(ThrowingCallback{});
  loop->call_soon([&] {
    after = true;
    loop->stop();
  });
  CHECK_NOTHROW(run_until_stopped(*loop));
  CHECK(after);
  CHECK(logs.find(LogLevel::error, {"handler broke", "Exception in callback"}).has_value());
  CHECK_NOTHROW(loop->call_exception_handler({"direct call", nullptr, {}, {}}));
}

// ---- Debug mode ------------------------------------------------------------------------------

STRATA_LOOP_TEST_CASE(
    "EventLoop: in debug mode a callback slower than slow_callback_duration is logged with its "
    "name",
    "[core][event_loop]") {
  LogCapture logs;
  TestLoop loop(TestType::kind);
  CHECK(loop->slow_callback_duration() == 100ms);  // the default
  loop->set_debug(true);
  CHECK(loop->get_debug());
  loop->set_slow_callback_duration(1ms);
  CHECK(loop->slow_callback_duration() == 1ms);
  bool ran = false;
  loop->call_soon(SlowCallback{&ran});
  loop->call_soon([&] { loop->stop(); });
  run_until_stopped(*loop);
  CHECK(ran);
  auto line = logs.find(LogLevel::warning, {"SlowCallback", "took"});
  CHECK(line.has_value());
}

STRATA_LOOP_TEST_CASE("EventLoop: outside debug mode slow callbacks are not logged",
                      "[core][event_loop]") {
  LogCapture logs;
  TestLoop loop(TestType::kind);
  loop->set_debug(false);
  loop->set_slow_callback_duration(1ms);
  bool ran = false;
  loop->call_soon(SlowCallback{&ran});
  loop->call_soon([&] { loop->stop(); });
  run_until_stopped(*loop);
  CHECK(ran);
  CHECK_FALSE(logs.find(LogLevel::warning, {"SlowCallback"}).has_value());
}

STRATA_LOOP_TEST_CASE(
    "EventLoop: STRATA_DEBUG in the environment turns debug mode on for a new loop unless empty "
    "or 0",
    "[core][event_loop]") {
  LogCapture logs;  // a loop in debug mode logs its close
  {
    EnvVar env("STRATA_DEBUG", "1");
    TestLoop loop(TestType::kind);
    CHECK(loop->get_debug());
    loop->set_debug(false);  // the environment sets the default only
    CHECK_FALSE(loop->get_debug());
  }
  {
    EnvVar env("STRATA_DEBUG", "0");
    TestLoop loop(TestType::kind);
    CHECK_FALSE(loop->get_debug());
  }
  {
    EnvVar env("STRATA_DEBUG", "");
    TestLoop loop(TestType::kind);
    CHECK_FALSE(loop->get_debug());
  }
  {
    EnvVar env("STRATA_DEBUG", nullptr);
    TestLoop loop(TestType::kind);
    CHECK_FALSE(loop->get_debug());
  }
}

STRATA_LOOP_TEST_CASE(
    "EventLoop: in debug mode a non-threadsafe call from another thread while the loop runs "
    "throws EventLoopError and schedules nothing",
    "[core][event_loop]") {
  SocketPair sp;
  LogCapture logs;
  TestLoop loop(TestType::kind);
  loop->set_debug(true);
  bool stray = false;  // set only by callbacks that must never run
  std::atomic<int> threw{0};
  std::thread::id threadsafe_ran_on;
  std::thread other;
  loop->call_soon([&] {
    other = std::thread([&] {
      auto expect_refused = [&](auto&& call) {
        try {
          call();
        } catch (const EventLoopError&) {
          ++threw;
        }
      };
      expect_refused([&] { loop->call_soon([&] { stray = true; }); });
      expect_refused([&] { loop->call_later(0ms, [&] { stray = true; }); });
      expect_refused([&] { loop->call_at(loop->time() - 1s, [&] { stray = true; }); });
      expect_refused([&] { loop->add_reader(sp.a, [&] { stray = true; }); });
      loop->call_soon_threadsafe([&] {  // the way to do it
        threadsafe_ran_on = std::this_thread::get_id();
        loop->stop();
      });
    });
  });
  run_until_stopped(*loop);
  other.join();
  send_byte(sp.b);         // would wake a stray reader
  run_for(*loop, 20ms);    // and give any stray callback or timer its chance
  CHECK(threw == 4);
  CHECK_FALSE(stray);
  CHECK(threadsafe_ran_on == std::this_thread::get_id());
  CHECK(logs.find(LogLevel::error, {"call_soon_threadsafe"}).has_value());
}

// ---- Backends --------------------------------------------------------------------------------

TEST_CASE("EventLoop: available_loop_kinds lists the backends best first", "[core][event_loop]") {
  const auto& kinds = strata::available_loop_kinds();
  REQUIRE_FALSE(kinds.empty());
  auto has = [&](strata::LoopKind k) {
    return std::find(kinds.begin(), kinds.end(), k) != kinds.end();
  };
  CHECK(has(strata::LoopKind::poll));
  CHECK(has(strata::LoopKind::select));
  CHECK(has(strata::LoopKind::proactor));  // this build requires Asio; the kernel has io_uring
  if (has(strata::LoopKind::epoll)) CHECK(kinds.front() == strata::LoopKind::epoll);
  CHECK(kinds.back() == strata::LoopKind::proactor);  // the selector loop is the default
  CHECK(&strata::available_loop_kinds() == &kinds);  // probed once
  auto loop = strata::new_event_loop();
  CHECK(loop->backend_name() == strata::to_string(kinds.front()));
  CHECK(loop->kind() == kinds.front());
  loop->close();
}

STRATA_LOOP_TEST_CASE("EventLoop: new_event_loop makes a loop of the kind asked for",
                      "[core][event_loop]") {
  const auto& kinds = strata::available_loop_kinds();
  CHECK(std::find(kinds.begin(), kinds.end(), TestType::kind) != kinds.end());
  TestLoop loop(TestType::kind);
  CHECK(loop->kind() == TestType::kind);
  // The proactor names its I/O backend too: "proactor/io_uring" or "proactor/epoll".
  const std::string kind(strata::to_string(TestType::kind));
  const std::string name(loop->backend_name());
  if (TestType::kind == strata::LoopKind::proactor) {
    CHECK((name == kind + "/io_uring" || name == kind + "/epoll"));
  } else {
    CHECK(name == kind);
  }
  loop->close();
  CHECK(std::string(loop->backend_name()) == name);  // kept after close
  CHECK(loop->kind() == TestType::kind);
}

TEST_CASE("EventLoop: parse_loop_kind reads every name that to_string writes",
          "[core][event_loop]") {
  for (auto k : {strata::LoopKind::epoll, strata::LoopKind::poll, strata::LoopKind::select,
                 strata::LoopKind::proactor}) {
    CHECK(strata::parse_loop_kind(strata::to_string(k)) == k);
  }
  CHECK(strata::to_string(strata::LoopKind::proactor) == "proactor");
  CHECK(strata::to_string(strata::LoopKind::epoll) == "epoll");
  CHECK(strata::to_string(strata::LoopKind::poll) == "poll");
  CHECK(strata::to_string(strata::LoopKind::select) == "select");
}

TEST_CASE("EventLoop: parse_loop_kind throws std::invalid_argument naming the bad value and the valid ones",
          "[core][event_loop]") {
  CHECK_THROWS_AS(strata::parse_loop_kind("kqueue"), std::invalid_argument);
  CHECK_THROWS_WITH(strata::parse_loop_kind("kqueue"), Contains("kqueue") && Contains("epoll") &&
                                                           Contains("poll") && Contains("select"));
  CHECK_THROWS_AS(strata::parse_loop_kind(""), std::invalid_argument);
  CHECK_THROWS_AS(strata::parse_loop_kind("epoll "), std::invalid_argument);
}

// ---- Misuse ----------------------------------------------------------------------------------

STRATA_LOOP_TEST_CASE(
    "EventLoop: run_forever on a running loop throws EventLoopError and the loop keeps running",
    "[core][event_loop]") {
  TestLoop loop(TestType::kind);
  bool reached = false;
  loop->call_soon([&] {
    CHECK_THROWS_AS(loop->run_forever(), EventLoopError);
    CHECK(loop->is_running());
    CHECK(strata::try_get_running_loop() == &*loop);
    loop->call_soon([&] {
      reached = true;
      loop->stop();
    });
  });
  run_until_stopped(*loop);
  CHECK(reached);
  CHECK(loop.errors().empty());
}

STRATA_LOOP_TEST_CASE(
    "EventLoop: run_until_complete on a running loop throws EventLoopError and schedules nothing",
    "[core][event_loop]") {
  TestLoop loop(TestType::kind);
  bool body_ran = false;
  bool reached = false;
  strata::Future<int> pending = loop->create_future<int>();
  loop->call_soon([&] {
    CHECK_THROWS_AS(loop->run_until_complete(set_flag(&body_ran)), EventLoopError);
    CHECK(strata::all_tasks(*loop).empty());  // no task was made for the coroutine
    CHECK_THROWS_AS(loop->run_until_complete(pending), EventLoopError);
    pending.set_result(1);  // a done callback left behind would now stop the loop early
    loop->call_soon([&] {
      loop->call_soon([&] {
        reached = true;
        loop->stop();
      });
    });
  });
  run_until_stopped(*loop);
  CHECK(reached);
  CHECK_FALSE(body_ran);
}

STRATA_LOOP_TEST_CASE(
    "EventLoop: run_until_complete of a done Future on a running loop throws EventLoopError and "
    "does not stop the loop",
    "[core][event_loop]") {
  TestLoop loop(TestType::kind);
  bool reached = false;
  strata::Future<int> done = loop->create_future<int>();
  done.set_result(1);
  loop->call_soon([&] {
    CHECK_THROWS_AS(loop->run_until_complete(done), EventLoopError);
    loop->call_soon([&] {
      loop->call_soon([&] {
        reached = true;
        loop->stop();
      });
    });
  });
  run_until_stopped(*loop);
  CHECK(reached);
}

STRATA_LOOP_TEST_CASE("EventLoop: close on a running loop throws EventLoopError",
                      "[core][event_loop]") {
  TestLoop loop(TestType::kind);
  bool after = false;
  loop->call_soon([&] {
    CHECK_THROWS_AS(loop->close(), EventLoopError);
    CHECK_FALSE(loop->is_closed());
    loop->call_soon([&] {
      after = true;
      loop->stop();
    });
  });
  run_until_stopped(*loop);
  CHECK(after);
  CHECK_FALSE(loop->is_closed());
}

STRATA_LOOP_TEST_CASE("EventLoop: a closed loop refuses scheduling and running with EventLoopError",
                      "[core][event_loop]") {
  SocketPair sp;
  TestLoop loop(TestType::kind);
  loop->close();
  bool ran = false;
  CHECK_THROWS_AS(loop->call_soon([&] { ran = true; }), EventLoopError);
  CHECK_THROWS_AS(loop->call_later(1ms, [&] { ran = true; }), EventLoopError);
  CHECK_THROWS_AS(loop->call_at(loop->time(), [&] { ran = true; }), EventLoopError);
  CHECK_THROWS_AS(loop->call_soon_threadsafe([&] { ran = true; }), EventLoopError);
  CHECK_THROWS_AS(loop->add_reader(sp.a, [&] { ran = true; }), EventLoopError);
  CHECK_THROWS_AS(loop->add_writer(sp.a, [&] { ran = true; }), EventLoopError);
  CHECK_THROWS_AS(loop->run_forever(), EventLoopError);
  bool body_ran = false;
  CHECK_THROWS_AS(loop->create_task(set_flag(&body_ran)), EventLoopError);
  CHECK_THROWS_AS(loop->run_until_complete(set_flag(&body_ran)), EventLoopError);
  CHECK_FALSE(ran);
  CHECK_FALSE(body_ran);
  CHECK_FALSE(loop->is_running());
}

STRATA_LOOP_TEST_CASE(
    "EventLoop: running a second loop on a thread where one runs throws EventLoopError",
    "[core][event_loop]") {
  TestLoop outer(TestType::kind);
  TestLoop inner(TestType::kind);
  bool body_ran = false;
  bool checked = false;
  outer->call_soon([&] {
    CHECK_THROWS_AS(inner->run_forever(), EventLoopError);
    CHECK_THROWS_WITH(inner->run_forever(), Contains("another loop"));
    CHECK_THROWS_AS(inner->run_until_complete(set_flag(&body_ran)), EventLoopError);
    CHECK_FALSE(inner->is_running());
    CHECK(strata::try_get_running_loop() == &*outer);  // untouched by the refused run
    checked = true;
    outer->stop();
  });
  run_until_stopped(*outer);
  CHECK(checked);
  CHECK_FALSE(body_ran);
  CHECK(strata::all_tasks(*inner).empty());
  // Once the first loop has stopped, the second runs normally.
  CHECK(inner->run_until_complete(answer_after(1ms)) == 42);
}

namespace {
/// A resource that records loop_closing() and what it could still do then.
struct RecordingResource final : strata::detail::LoopResource {
  EventLoop* loop = nullptr;
  std::vector<std::string>* log = nullptr;
  std::string name;
  bool scheduled_ok = false;
  void loop_closing() noexcept override {
    log->push_back(name);
    loop->detach_resource(*this);
    try {
      loop->call_soon([] {});  // the loop still takes callbacks while resources close
      scheduled_ok = true;
    } catch (...) {
    }
  }
};
}  // namespace

STRATA_LOOP_TEST_CASE("EventLoop: close() calls loop_closing() on each attached resource once",
                      "[core][event_loop]") {
  auto loop = strata::new_event_loop(TestType::kind);
  std::vector<std::string> log;
  RecordingResource a, b, c;
  for (auto [r, name] : {std::pair{&a, "a"}, std::pair{&b, "b"}, std::pair{&c, "c"}}) {
    r->loop = loop.get();
    r->log = &log;
    r->name = name;
    loop->attach_resource(*r);
  }
  loop->detach_resource(b);  // detached: not told
  loop->detach_resource(b);  // twice: a no-op
  loop->close();
  std::sort(log.begin(), log.end());
  CHECK(log == std::vector<std::string>{"a", "c"});
  CHECK(a.scheduled_ok);
  CHECK(c.scheduled_ok);
  loop->close();  // idempotent: nobody is told again
  CHECK(log.size() == 2);
}
