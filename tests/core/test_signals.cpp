// add_signal_handler / remove_signal_handler. Each CTest entry runs in its own process, so the
// process-wide signal dispositions a test changes do not leak into another.

#include <dirent.h>
#include <fcntl.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <csignal>
#include <condition_variable>
#include <mutex>
#include <stdexcept>
#include <thread>

#include <strata/core/detail/sigchld.hpp>
#include <strata/core/errors.hpp>
#include <strata/core/future.hpp>
#include <strata/core/sleep.hpp>

#include "loop_test.hpp"

using namespace std::chrono_literals;
using strata::Coro;
using strata::Future;

namespace {

int open_descriptors() {
  int n = 0;
  if (DIR* dir = ::opendir("/proc/self/fd")) {
    while (::readdir(dir) != nullptr) ++n;
    ::closedir(dir);
  }
  return n;
}

void (*disposition(int sig))(int) {
  struct sigaction current {};
  REQUIRE(::sigaction(sig, nullptr, &current) == 0);
  return current.sa_handler;
}

/// Sets @p sig's disposition for the test's length, restoring the one before.
class Disposition {
 public:
  Disposition(int sig, void (*handler)(int)) : sig_(sig) {
    struct sigaction action {};
    action.sa_handler = handler;
    sigemptyset(&action.sa_mask);
    REQUIRE(::sigaction(sig, &action, &previous_) == 0);
  }
  ~Disposition() { ::sigaction(sig_, &previous_, nullptr); }

 private:
  int sig_;
  struct sigaction previous_ {};
};

/// Counts handler calls and completes a future at the n-th.
struct Counter {
  int calls = 0;
  int until = 1;
  Future<void> reached;
  void operator()() {
    if (++calls == until && !reached.done()) reached.set_result();
  }
};

Coro<void> raise_and_wait(int sig, Future<void> reached) {
  REQUIRE(::raise(sig) == 0);
  co_await reached;
}

Coro<void> raise_times(int sig, int times, Counter* counter) {
  for (int i = 0; i < times; ++i) {
    counter->until = counter->calls + 1;
    counter->reached = Future<void>(strata::get_running_loop());
    REQUIRE(::raise(sig) == 0);
    co_await counter->reached;
  }
}

/// Tells a thread that the loop has run the handler. It waits on a condition variable, not on a
/// std::future: libstdc++'s future waits in a raw futex syscall, which ThreadSanitizer does not
/// intercept, and ThreadSanitizer delivers a signal only when its thread next enters the runtime;
/// a signal the kernel gave that thread would wait out the whole timeout.
struct Handshake {
  std::mutex mutex;
  std::condition_variable changed;
  bool handled = false;

  void set() {
    std::lock_guard lock(mutex);
    handled = true;
    changed.notify_all();
  }
  void wait_for(std::chrono::seconds timeout) {
    std::unique_lock lock(mutex);
    changed.wait_for(lock, timeout, [this] { return handled; });
  }
};

Coro<void> wait_then_signal(Future<void> called, Handshake* handshake) {
  co_await called;
  handshake->set();
}

Coro<void> yield_a_while() {
  for (int i = 0; i < 20; ++i) co_await strata::sleep(0s);
}

}  // namespace

STRATA_LOOP_TEST_CASE("signals: the handler runs on the loop's thread when the signal arrives",
                      "[core][signals]") {
  strata::testing::TestLoop loop(TestType::kind);
  Future<void> called(*loop);
  std::thread::id where;
  loop->add_signal_handler(SIGUSR1, [&] {
    where = std::this_thread::get_id();
    called.set_result();
  });
  loop.run(raise_and_wait(SIGUSR1, called));
  CHECK(where == std::this_thread::get_id());
}

STRATA_LOOP_TEST_CASE("signals: a signal sent from another thread runs the handler on the loop",
                      "[core][signals]") {
  // The kernel hands a process-directed signal to any thread that does not block it: each
  // run makes it one thread or the other by blocking the signal in the other.
  const bool sender_takes_it = GENERATE(false, true);
  CAPTURE(sender_takes_it);
  strata::testing::TestLoop loop(TestType::kind);
  Future<void> called(*loop);
  std::thread::id where;
  loop->add_signal_handler(SIGUSR2, [&] {
    where = std::this_thread::get_id();
    called.set_result();
  });
  sigset_t usr2;
  sigemptyset(&usr2);
  sigaddset(&usr2, SIGUSR2);
  sigset_t loop_mask;  // this thread's, restored at the end
  REQUIRE(::pthread_sigmask(SIG_BLOCK, nullptr, &loop_mask) == 0);
  if (sender_takes_it) REQUIRE(::pthread_sigmask(SIG_BLOCK, &usr2, nullptr) == 0);
  // The sender stays alive until the handler has run: ThreadSanitizer defers a signal until the
  // receiving thread next enters the runtime, and drops it if that thread exits first.
  Handshake handshake;
  std::thread sender([&] {
    // A new thread starts with its creator's mask: set its own either way.
    ::pthread_sigmask(sender_takes_it ? SIG_UNBLOCK : SIG_BLOCK, &usr2, nullptr);
    ::kill(::getpid(), SIGUSR2);
    handshake.wait_for(30s);
  });
  loop.run(wait_then_signal(called, &handshake));
  sender.join();
  REQUIRE(::pthread_sigmask(SIG_SETMASK, &loop_mask, nullptr) == 0);
  CHECK(where == std::this_thread::get_id());
}

STRATA_LOOP_TEST_CASE("signals: each arrival that is handled before the next calls the handler",
                      "[core][signals]") {
  strata::testing::TestLoop loop(TestType::kind);
  Counter counter;
  loop->add_signal_handler(SIGUSR1, [&] { counter(); });
  loop.run(raise_times(SIGUSR1, 5, &counter));
  CHECK(counter.calls == 5);
}

STRATA_LOOP_TEST_CASE("signals: adding again replaces the handler", "[core][signals]") {
  strata::testing::TestLoop loop(TestType::kind);
  int first = 0;
  Future<void> second_called(*loop);
  loop->add_signal_handler(SIGUSR1, [&] { ++first; });
  loop->add_signal_handler(SIGUSR1, [&] { second_called.set_result(); });
  loop.run(raise_and_wait(SIGUSR1, second_called));
  CHECK(first == 0);
}

STRATA_LOOP_TEST_CASE("signals: handlers of different signals each run for their own",
                      "[core][signals]") {
  strata::testing::TestLoop loop(TestType::kind);
  int usr1 = 0, usr2 = 0;
  Future<void> usr2_called(*loop);
  loop->add_signal_handler(SIGUSR1, [&] { ++usr1; });
  loop->add_signal_handler(SIGUSR2, [&] {
    ++usr2;
    usr2_called.set_result();
  });
  loop.run(raise_and_wait(SIGUSR2, usr2_called));
  CHECK(usr1 == 0);
  CHECK(usr2 == 1);
}

STRATA_LOOP_TEST_CASE("signals: remove_signal_handler restores the disposition from before",
                      "[core][signals]") {
  strata::testing::TestLoop loop(TestType::kind);
  Disposition ignored(SIGUSR1, SIG_IGN);
  loop->add_signal_handler(SIGUSR1, [] {});
  CHECK(disposition(SIGUSR1) != SIG_IGN);
  CHECK(loop->remove_signal_handler(SIGUSR1));
  CHECK(disposition(SIGUSR1) == SIG_IGN);
  CHECK_FALSE(loop->remove_signal_handler(SIGUSR1));
  CHECK_FALSE(loop->remove_signal_handler(SIGUSR2));  // never added
}

STRATA_LOOP_TEST_CASE("signals: a removed handler is not called for a later signal",
                      "[core][signals]") {
  strata::testing::TestLoop loop(TestType::kind);
  Disposition ignored(SIGUSR1, SIG_IGN);  // restored by the removal: the raise is harmless
  int removed = 0;
  Future<void> other_called(*loop);
  loop->add_signal_handler(SIGUSR1, [&] { ++removed; });
  loop->add_signal_handler(SIGUSR2, [&] { other_called.set_result(); });
  REQUIRE(loop->remove_signal_handler(SIGUSR1));
  auto body = [&]() -> Coro<void> {
    REQUIRE(::raise(SIGUSR1) == 0);
    co_await raise_and_wait(SIGUSR2, other_called);  // the pipe is in order: USR1 came first
  };
  loop.run(body());
  CHECK(removed == 0);
}

STRATA_LOOP_TEST_CASE("signals: uncatchable and out-of-range signals throw invalid_argument",
                      "[core][signals]") {
  strata::testing::TestLoop loop(TestType::kind);
  CHECK_THROWS_AS(loop->add_signal_handler(SIGKILL, [] {}), std::invalid_argument);
  CHECK_THROWS_AS(loop->add_signal_handler(SIGSTOP, [] {}), std::invalid_argument);
  CHECK_THROWS_AS(loop->add_signal_handler(0, [] {}), std::invalid_argument);
  CHECK_THROWS_AS(loop->add_signal_handler(NSIG, [] {}), std::invalid_argument);
  CHECK_THROWS_AS(loop->add_signal_handler(-3, [] {}), std::invalid_argument);
  CHECK_THROWS_AS(loop->remove_signal_handler(0), std::invalid_argument);
  CHECK_THROWS_AS(loop->remove_signal_handler(NSIG), std::invalid_argument);
}

STRATA_LOOP_TEST_CASE("signals: a signal handled by one loop cannot be taken by another",
                      "[core][signals]") {
  strata::testing::TestLoop first(TestType::kind);
  strata::testing::TestLoop second(TestType::kind);
  first->add_signal_handler(SIGUSR1, [] {});
  CHECK_THROWS_AS(second->add_signal_handler(SIGUSR1, [] {}), strata::EventLoopError);
  CHECK_FALSE(second->remove_signal_handler(SIGUSR1));  // not the second's to remove
  second->add_signal_handler(SIGUSR2, [] {});           // another signal is free
  REQUIRE(first->remove_signal_handler(SIGUSR1));
  Future<void> called(*second);
  second->add_signal_handler(SIGUSR1, [&] { called.set_result(); });
  second.run(raise_and_wait(SIGUSR1, called));
  CHECK(called.done());
}

STRATA_LOOP_TEST_CASE("signals: close() removes the handlers and restores the dispositions",
                      "[core][signals]") {
  Disposition ignored(SIGUSR1, SIG_IGN);
  const int before = open_descriptors();
  {
    strata::testing::TestLoop loop(TestType::kind);
    loop->add_signal_handler(SIGUSR1, [] {});
    loop->add_signal_handler(SIGUSR2, [] {});
    loop->close();
    CHECK(disposition(SIGUSR1) == SIG_IGN);
    CHECK(disposition(SIGUSR2) == SIG_DFL);
    CHECK_FALSE(loop->remove_signal_handler(SIGUSR1));
    CHECK_THROWS_AS(loop->add_signal_handler(SIGUSR1, [] {}), strata::EventLoopError);
  }
  CHECK(open_descriptors() == before);
  // Free for another loop now.
  strata::testing::TestLoop next(TestType::kind);
  next->add_signal_handler(SIGUSR1, [] {});
}

STRATA_LOOP_TEST_CASE("signals: removing the last handler closes the loop's signal pipe",
                      "[core][signals]") {
  strata::testing::TestLoop loop(TestType::kind);
  const int before = open_descriptors();
  loop->add_signal_handler(SIGUSR1, [] {});
  loop->add_signal_handler(SIGUSR2, [] {});
  CHECK(open_descriptors() == before + 2);
  loop->remove_signal_handler(SIGUSR1);
  CHECK(open_descriptors() == before + 2);
  loop->remove_signal_handler(SIGUSR2);
  CHECK(open_descriptors() == before);
}

STRATA_LOOP_TEST_CASE("signals: a handler's exception goes to the exception handler and later "
                      "signals are still handled",
                      "[core][signals]") {
  strata::testing::TestLoop loop(TestType::kind);
  Counter counter;
  loop->add_signal_handler(SIGUSR1, [&] {
    counter();
    if (counter.calls == 1) throw std::runtime_error("handler failed");
  });
  loop.run(raise_times(SIGUSR1, 2, &counter));
  CHECK(counter.calls == 2);
  REQUIRE(loop.errors().size() == 1);
  CHECK(loop.errors()[0].message.find("signal") != std::string::npos);
}

STRATA_LOOP_TEST_CASE("signals: a handler may remove itself", "[core][signals]") {
  strata::testing::TestLoop loop(TestType::kind);
  Disposition ignored(SIGUSR1, SIG_IGN);
  int calls = 0;
  Future<void> called(*loop);
  loop->add_signal_handler(SIGUSR1, [&] {
    ++calls;
    CHECK(loop->remove_signal_handler(SIGUSR1));
    called.set_result();
  });
  loop.run(raise_and_wait(SIGUSR1, called));
  CHECK(disposition(SIGUSR1) == SIG_IGN);
  ::raise(SIGUSR1);  // ignored now
  loop.run(yield_a_while());
  CHECK(calls == 1);
}

STRATA_LOOP_TEST_CASE("signals: two signals raised before the loop runs both reach handlers",
                      "[core][signals]") {
  strata::testing::TestLoop loop(TestType::kind);
  int usr1 = 0, usr2 = 0;
  Future<void> both(*loop);
  auto check = [&] {
    if (usr1 > 0 && usr2 > 0 && !both.done()) both.set_result();
  };
  loop->add_signal_handler(SIGUSR1, [&] { ++usr1, check(); });
  loop->add_signal_handler(SIGUSR2, [&] { ++usr2, check(); });
  ::raise(SIGUSR1);
  ::raise(SIGUSR2);
  loop->run_until_complete(both);
  CHECK(usr1 == 1);
  CHECK(usr2 == 1);
}

// ---- SIGCHLD listeners (the child watcher's fallback) ----------------------------------------

namespace {

/// A non-blocking pipe that a SIGCHLD listener writes to; counts the bytes that arrived.
struct ListenerPipe {
  int read_fd = -1;
  int write_fd = -1;
  ListenerPipe() {
    int fds[2];
    REQUIRE(::pipe2(fds, O_NONBLOCK | O_CLOEXEC) == 0);
    read_fd = fds[0];
    write_fd = fds[1];
  }
  ~ListenerPipe() {
    ::close(read_fd);
    ::close(write_fd);
  }
  int drain() const {
    int n = 0;
    unsigned char buffer[64];
    for (ssize_t r; (r = ::read(read_fd, buffer, sizeof buffer)) > 0;) n += static_cast<int>(r);
    return n;
  }
};

}  // namespace

TEST_CASE("signals: a SIGCHLD listener hears SIGCHLD, and the disposition is restored after it",
          "[core][signals]") {
  Disposition original(SIGCHLD, SIG_DFL);
  ListenerPipe a;
  ListenerPipe b;
  strata::detail::add_sigchld_listener(a.write_fd);
  strata::detail::add_sigchld_listener(b.write_fd);
  CHECK(disposition(SIGCHLD) != SIG_DFL);
  REQUIRE(::raise(SIGCHLD) == 0);  // delivered before raise() returns: single-threaded here
  CHECK(a.drain() == 1);
  CHECK(b.drain() == 1);
  strata::detail::remove_sigchld_listener(a.write_fd);
  REQUIRE(::raise(SIGCHLD) == 0);
  CHECK(a.drain() == 0);
  CHECK(b.drain() == 1);
  strata::detail::remove_sigchld_listener(b.write_fd);
  CHECK(disposition(SIGCHLD) == SIG_DFL);
  strata::detail::remove_sigchld_listener(b.write_fd);  // not a listener: a no-op
}

STRATA_LOOP_TEST_CASE("signals: a loop's SIGCHLD handler and a SIGCHLD listener both hear it, "
                      "whichever comes first and goes first",
                      "[core][signals]") {
  Disposition original(SIGCHLD, SIG_IGN);
  strata::testing::TestLoop loop(TestType::kind);
  ListenerPipe pipe;
  Counter counter;
  const bool loop_first = GENERATE(true, false);
  const bool loop_leaves_first = GENERATE(true, false);
  CAPTURE(loop_first, loop_leaves_first);
  if (loop_first) loop->add_signal_handler(SIGCHLD, std::ref(counter));
  strata::detail::add_sigchld_listener(pipe.write_fd);
  if (!loop_first) loop->add_signal_handler(SIGCHLD, std::ref(counter));

  loop.run(raise_times(SIGCHLD, 1, &counter));
  CHECK(counter.calls == 1);
  CHECK(pipe.drain() >= 1);

  if (loop_leaves_first) {
    REQUIRE(loop->remove_signal_handler(SIGCHLD));
    REQUIRE(::raise(SIGCHLD) == 0);
    CHECK(pipe.drain() == 1);  // the listener still hears it
    strata::detail::remove_sigchld_listener(pipe.write_fd);
  } else {
    strata::detail::remove_sigchld_listener(pipe.write_fd);
    loop.run(raise_times(SIGCHLD, 1, &counter));  // the loop still hears it
    CHECK(counter.calls == 2);
    CHECK(pipe.drain() == 0);
    REQUIRE(loop->remove_signal_handler(SIGCHLD));
  }
  CHECK(disposition(SIGCHLD) == SIG_IGN);
}
