// hello_loop: a first look at the loop. Timers, tasks, gather, a timeout, cancellation and a
// task group, printed as they happen. Options: --loop epoll|poll|select|proactor.
#include <strata/core/gather.hpp>
#include <strata/core/run.hpp>
#include <strata/core/sleep.hpp>
#include <strata/core/task_group.hpp>
#include <strata/core/timeout.hpp>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <exception>
#include <string>

using namespace std::chrono_literals;

namespace {

strata::Coro<int> tick(std::string name, int times, std::chrono::milliseconds period) {
  for (int i = 1; i <= times; ++i) {
    co_await strata::sleep(period);
    std::printf("  %s: tick %d\n", name.c_str(), i);
  }
  co_return times;
}

strata::Coro<void> slow_job() {
  try {
    co_await strata::sleep(10s);
  } catch (const strata::CancelledError&) {
    std::puts("  slow job: cancelled, cleaning up");
    throw;
  }
}

strata::Coro<bool> try_slow_job() {
  try {
    co_await strata::wait_for(slow_job(), 20ms);
  } catch (const strata::TimeoutError&) {
    co_return false;
  }
  co_return true;
}

strata::Coro<int> main_task() {
  auto& loop = strata::get_running_loop();
  std::printf("loop backend: %s\n", std::string(loop.backend_name()).c_str());

  std::puts("timers and tasks:");
  loop.call_later(25ms, [] { std::puts("  timer: fired after 25 ms"); });
  auto [fast, slow] = co_await strata::gather(tick("fast", 3, 10ms), tick("slow", 2, 30ms));
  std::printf("gather: %d + %d ticks\n", fast, slow);

  std::puts("wait_for with a 20 ms limit:");
  bool finished = co_await try_slow_job();
  std::printf("  slow job %s\n", finished ? "finished" : "timed out");

  std::puts("task group:");
  int sum = co_await strata::task_group([](strata::TaskGroup& tg) -> strata::Coro<int> {
    auto a = tg.create_task(tick("group-a", 2, 5ms));
    auto b = tg.create_task(tick("group-b", 1, 7ms));
    co_return co_await a + co_await b;
  });
  std::printf("  group done, %d ticks\n", sum);
  co_return fast + slow + sum == 8 && !finished ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  strata::RunOptions options;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--loop") == 0 && i + 1 < argc) {
      try {
        options.loop = strata::parse_loop_kind(argv[++i]);
      } catch (const std::exception& e) {
        std::fprintf(stderr, "hello_loop: %s\n", e.what());
        return 2;
      }
    } else {
      std::fprintf(stderr, "usage: hello_loop [--loop epoll|poll|select|proactor]\n");
      return std::strcmp(argv[i], "--help") == 0 ? 0 : 2;
    }
  }
  return strata::run(main_task(), options);
}
