// hello_loop: a first look at the loop. Timers, tasks, cancellation and a timeout, printed
// as they happen.
#include <strata/core/run.hpp>
#include <strata/core/sleep.hpp>

#include <chrono>
#include <cstdio>
#include <string>

using namespace std::chrono_literals;

strata::Coro<int> tick(std::string name, int times, std::chrono::milliseconds period) {
  for (int i = 1; i <= times; ++i) {
    co_await strata::sleep(period);
    std::printf("%s: tick %d\n", name.c_str(), i);
  }
  co_return times;
}

strata::Coro<int> main_task() {
  auto& loop = strata::get_running_loop();
  loop.call_later(25ms, [] { std::printf("timer: fired after 25 ms\n"); });
  auto a = strata::create_task(tick("fast", 3, 10ms));
  auto b = strata::create_task(tick("slow", 2, 30ms));
  int total = co_await a + co_await b;
  std::printf("both tasks done, %d ticks in all\n", total);
  co_return total == 5 ? 0 : 1;
}

int main() { return strata::run(main_task()); }
