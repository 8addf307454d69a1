// The code of docs/guides/loop-and-backends.md: a loop made by hand, the backends, callbacks
// and timers, other threads (call_soon_threadsafe, run_coroutine_threadsafe), executors,
// descriptors, signals, the exception handler and debug mode. Each demo checks what the guide
// says with expect(); the program exits 0 when every one holds.
// [snippet:includes]
#include <strata/core/event_loop.hpp>
#include <strata/core/executor.hpp>
#include <strata/core/log.hpp>
#include <strata/core/run.hpp>
#include <strata/core/run_coroutine_threadsafe.hpp>
#include <strata/core/sleep.hpp>
#include <strata/core/thread_pool_executor.hpp>
// [/snippet:includes]

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <exception>
#include <memory>
#include <stdexcept>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

using namespace std::chrono_literals;

namespace {

/// Throws when a claim of the guide does not hold; main() reports it and exits 1.
void expect(bool holds, const std::string& claim) {
  if (!holds) throw std::logic_error("expected: " + claim);
}

strata::Coro<int> answer() {
  co_await strata::sleep(5ms);
  co_return 42;
}

void by_hand() {
  // [snippet:by_hand]
  std::unique_ptr<strata::EventLoop> loop = strata::new_event_loop(strata::LoopKind::poll);
  std::vector<std::string> order;
  loop->call_later(1ms, [&order] { order.push_back("timer"); });
  loop->call_soon([&order] { order.push_back("soon 1"); });
  loop->call_soon([&order] { order.push_back("soon 2"); });
  int value = loop->run_until_complete(answer());  // wraps it in a Task, runs until it is done
  loop->close();  // drops what is still scheduled; a closed loop refuses new work
  // [/snippet:by_hand]
  expect(value == 42 && loop->backend_name() == "poll", "run_until_complete gives the result");
  expect(order == std::vector<std::string>{"soon 1", "soon 2", "timer"},
         "callbacks run in the order they were scheduled, timers once due");
}

// [snippet:backends]
strata::Coro<std::string> which_backend() {
  co_await strata::sleep(0ms);  // one loop iteration
  co_return std::string(strata::get_running_loop().backend_name());
}

void every_backend() {
  for (strata::LoopKind kind : strata::available_loop_kinds()) {  // best first: epoll on Linux
    strata::RunOptions options;
    options.loop = kind;
    std::string name = strata::run(which_backend(), options);
    // The proactor adds its I/O backend: "proactor/io_uring" (or "proactor/epoll").
    expect(name.starts_with(strata::to_string(kind)), "the loop runs on the backend asked for");
  }
  expect(strata::parse_loop_kind("select") == strata::LoopKind::select, "names parse");
}
// [/snippet:backends]

// [snippet:handles]
strata::Coro<void> handles() {
  strata::EventLoop& loop = strata::get_running_loop();
  int runs = 0;
  strata::Handle soon = loop.call_soon([&runs] { ++runs; });
  strata::TimerHandle later = loop.call_later(1ms, [&runs] { ++runs; });
  soon.cancel();  // it has not run yet: it never will
  later.cancel();
  strata::TimerHandle at = loop.call_at(loop.time() + 1ms, [&runs] { runs += 10; });
  co_await strata::sleep(5ms);
  expect(runs == 10 && at.when() <= loop.time(), "cancelled callbacks never run");
}
// [/snippet:handles]

// [snippet:threadsafe]
strata::Coro<void> from_another_thread() {
  strata::EventLoop& loop = strata::get_running_loop();
  strata::Future<int> result = loop.create_future<int>();
  std::thread worker([&loop, result]() mutable {
    int computed = 6 * 7;  // work done off the loop's thread
    // The only EventLoop call made for other threads: it queues the callback and wakes the
    // loop. The callback runs on the loop's thread, where the Future may be touched.
    loop.call_soon_threadsafe([result, computed]() mutable { result.set_result(computed); });
  });
  int value = co_await result;
  worker.join();
  expect(value == 42, "a result posted from another thread");
}
// [/snippet:threadsafe]

void submit_from_outside() {
  // [snippet:run_coroutine_threadsafe]
  std::unique_ptr<strata::EventLoop> loop = strata::new_event_loop();
  std::thread loop_thread([&loop] { loop->run_forever(); });

  strata::ConcurrentFuture<int> handle = strata::run_coroutine_threadsafe(answer(), *loop);
  int value = handle.get();  // blocks this thread until the task on the loop has finished

  loop->stop();  // stop() may be called from any thread
  loop_thread.join();
  loop->close();
  // [/snippet:run_coroutine_threadsafe]
  expect(value == 42, "run_coroutine_threadsafe() gives the coroutine's result");
}

// [snippet:executor]
int blocking_work(int x) {
  std::this_thread::sleep_for(1ms);  // stands for a blocking call: a file read, a library
  return x + 1;
}

strata::Coro<void> executors() {
  // The loop's default executor, made on first use: asyncio.to_thread().
  int a = co_await strata::to_thread(blocking_work, 1);

  // An executor of your own, bounded to two threads.
  strata::ThreadPoolExecutor pool(2);
  strata::EventLoop& loop = strata::get_running_loop();
  strata::Future<int> b = loop.run_in_executor(&pool, blocking_work, 2);
  int value = co_await b;
  pool.shutdown();  // waits for its jobs: they post their results to this loop
  expect(a == 2 && value == 3, "the executors' results come back on the loop's thread");
}
// [/snippet:executor]

// [snippet:reader]
strata::Coro<void> watch_a_pipe() {
  int fds[2];
  if (::pipe(fds) != 0) throw std::system_error(errno, std::generic_category(), "pipe");
  strata::EventLoop& loop = strata::get_running_loop();
  strata::Future<char> got = loop.create_future<char>();
  loop.add_reader(fds[0], [&loop, fd = fds[0], got]() mutable {
    char c = 0;
    if (::read(fd, &c, 1) == 1 && !got.done()) got.set_result(c);
    loop.remove_reader(fd);
  });
  if (::write(fds[1], "x", 1) != 1) throw std::system_error(errno, std::generic_category());
  char c = co_await got;
  ::close(fds[0]);  // the loop does not own the descriptor
  ::close(fds[1]);
  expect(c == 'x', "the reader callback ran once the pipe was readable");
}
// [/snippet:reader]

// [snippet:signals]
strata::Coro<void> signals() {
  strata::EventLoop& loop = strata::get_running_loop();
  strata::Future<void> hung_up = loop.create_future<void>();
  loop.add_signal_handler(SIGHUP, [hung_up]() mutable {
    if (!hung_up.done()) hung_up.set_result();  // on the loop's thread, not in the C handler
  });
  ::kill(::getpid(), SIGHUP);
  co_await hung_up;
  loop.remove_signal_handler(SIGHUP);  // SIGHUP's previous disposition is back
}
// [/snippet:signals]

// [snippet:exception_handler]
strata::Coro<void> exception_handler() {
  strata::EventLoop& loop = strata::get_running_loop();
  std::string reported;
  loop.set_exception_handler([&reported](strata::EventLoop&, const strata::ExceptionContext& c) {
    reported = c.message + ": " + strata::describe_exception(c.exception);
  });
  loop.call_soon([] { throw std::runtime_error("bad callback"); });
  co_await strata::sleep(0ms);  // the loop ran the callback, caught, reported, and went on
  loop.set_exception_handler({});  // the default again: a log record at error level
  expect(reported.find("bad callback") != std::string::npos, "the handler got: " + reported);
}
// [/snippet:exception_handler]

// [snippet:debug]
strata::Coro<void> debug_mode() {
  strata::EventLoop& loop = strata::get_running_loop();
  std::vector<std::string> records;
  strata::set_log_handler([&records](strata::LogLevel level, std::string_view message) {
    if (level == strata::LogLevel::warning) records.emplace_back(message);
  });
  loop.set_debug(true);
  loop.set_slow_callback_duration(5ms);
  loop.call_soon([] { std::this_thread::sleep_for(10ms); });  // blocks the loop: logged
  co_await strata::sleep(0ms);
  loop.set_debug(false);
  strata::set_log_handler({});  // back to "strata: <level>: <message>" lines on stderr
  expect(std::any_of(records.begin(), records.end(),
                     [](const std::string& r) { return r.find(" took ") != std::string::npos; }),
         "debug mode logs a slow callback");
}
// [/snippet:debug]

}  // namespace

int main() {
  try {
    by_hand();
    every_backend();
    submit_from_outside();
    // [snippet:run_options]
    strata::RunOptions options;
    options.loop = strata::LoopKind::epoll;  // empty: the best available
    options.debug = false;                   // empty: the STRATA_DEBUG environment variable
    options.handle_sigint = true;            // Ctrl-C cancels the main task
    // [/snippet:run_options]
    return strata::run(
        []() -> strata::Coro<int> {
          co_await handles();
          co_await from_another_thread();
          co_await executors();
          co_await watch_a_pipe();
          co_await signals();
          co_await exception_handler();
          co_await debug_mode();
          co_return 0;
        }(),
        options);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "snippet_loop: %s\n", e.what());
    return 1;
  }
}
