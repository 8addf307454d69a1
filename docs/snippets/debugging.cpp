// The code of docs/guides/debugging.md: task dumps, the stall detector, loop metrics, and the
// test kit's virtual time and MockTransport. Each claim of the guide is checked with expect();
// the program exits 0 when every one holds.
// [snippet:includes]
#include <strata/core/diagnostics.hpp>   // format_tasks, dump_tasks, task_tree
#include <strata/core/event_loop.hpp>    // metrics(), set_stall_threshold()
#include <strata/testing/mock_transport.hpp>
#include <strata/testing/virtual_time.hpp>
// [/snippet:includes]

#include <chrono>
#include <cstdio>
#include <memory>
#include <span>
#include <stdexcept>
#include <string>
#include <thread>

#include <strata/core/event.hpp>
#include <strata/core/run.hpp>
#include <strata/core/sleep.hpp>
#include <strata/core/task.hpp>
#include <strata/core/timeout.hpp>

using namespace std::chrono_literals;

namespace {

void expect(bool holds, const std::string& claim) {
  if (!holds) throw std::logic_error("expected: " + claim);
}

// [snippet:dump]
strata::Coro<void> fetch(strata::Event& ready) {
  co_await ready.wait();  // the leaf of the chain
}

strata::Coro<void> worker(strata::Event& ready) {
  co_await fetch(ready);
}

strata::Coro<void> show_tasks() {
  strata::Event ready;
  strata::Task<void> task = strata::create_task(worker(ready), "worker");
  co_await strata::sleep(0s);  // the worker runs up to its wait
  std::string tree = strata::format_tasks(strata::get_running_loop());
  std::fputs(tree.c_str(), stdout);
  ready.set();
  co_await task;
}
// [/snippet:dump]

strata::Coro<void> check_dump() {
  strata::Event ready;
  strata::Task<void> task = strata::create_task(worker(ready), "worker");
  co_await strata::sleep(0s);
  const std::string tree = strata::format_tasks(strata::get_running_loop());
  expect(tree.find("Task 'worker' (suspended for ") != std::string::npos, "the worker is listed");
  expect(tree.find("worker at debugging.cpp:") != std::string::npos &&
             tree.find("fetch at debugging.cpp:") != std::string::npos &&
             tree.find("awaiting Event::wait") != std::string::npos,
         "its chain goes from worker() down to the Event it waits on");
  ready.set();
  co_await task;
  co_await show_tasks();
}

// [snippet:stall]
strata::Coro<void> watch_stalls() {
  strata::EventLoop& loop = strata::get_running_loop();
  int stalls = 0;
  loop.set_stall_threshold(50ms);  // 100 ms by default; zero turns it off
  loop.set_stall_handler([&stalls](const strata::StallReport& report) {
    std::fprintf(stderr, "%s\n", report.format().c_str());
    ++stalls;
  });
  strata::Task<void> blocker = strata::create_task(
      []() -> strata::Coro<void> {
        co_await strata::sleep(0s);
        std::this_thread::sleep_for(80ms);  // blocks the loop: a stall
        co_await strata::sleep(0s);
      }(),
      "blocker");
  co_await blocker;
  loop.set_stall_handler({});  // back to the default: a warning in the log
  loop.set_stall_threshold(100ms);
  expect(stalls == 1 && loop.metrics().stalls == 1, "one stall, reported once");
}
// [/snippet:stall]

// [snippet:metrics]
void print_metrics(strata::EventLoop& loop) {
  strata::LoopMetrics m = loop.metrics();
  std::printf("%llu iterations, %llu callbacks, %zu tasks alive, %zu bytes buffered\n",
              static_cast<unsigned long long>(m.iterations),
              static_cast<unsigned long long>(m.callbacks), m.tasks_alive, m.write_buffered);
  std::fputs(m.format().c_str(), stdout);  // every counter, one per line
}
// [/snippet:metrics]

// [snippet:virtual_time]
strata::Coro<bool> times_out(strata::Future<int> never) {
  try {
    co_await strata::wait_for(never, 30s);
    co_return false;
  } catch (const strata::TimeoutError&) {
    co_return true;
  }
}

void test_a_timeout() {
  std::unique_ptr<strata::EventLoop> loop = strata::testing::new_virtual_time_loop();
  const strata::TimePoint start = loop->time();
  strata::Future<int> never(*loop);
  bool timed_out = loop->run_until_complete(times_out(never));
  // 30 s on the loop's clock, a few microseconds of real time:
  expect(timed_out && loop->time() - start == 30s, "the timeout fires at exactly 30 s");
  strata::testing::advance(*loop, 1h);  // runs whatever falls due in the next hour
  expect(loop->time() - start == 1h + 30s, "advance() moves the clock");
}
// [/snippet:virtual_time]

// [snippet:mock]
class Greeter : public strata::Protocol {
 public:
  void connection_made(strata::Transport& transport) override { transport_ = &transport; }
  void data_received(std::span<const std::byte> data) override {
    name_.append(reinterpret_cast<const char*>(data.data()), data.size());
    if (auto end = name_.find('\n'); end != std::string::npos) {
      transport_->write("hello, " + name_.substr(0, end) + "\n");
      transport_->close();
    }
  }

 private:
  strata::Transport* transport_ = nullptr;
  std::string name_;
};

strata::Coro<void> test_the_greeter() {
  strata::testing::MockTransport peer(strata::get_running_loop(), std::make_unique<Greeter>());
  peer.feed("Ada\n", {1});  // one byte per read: every split point is exercised
  auto reply = peer.read_until("\n");
  std::string line = co_await reply;
  auto lost = peer.wait_lost();
  co_await lost;
  expect(line == "hello, Ada\n" && peer.close_called(), "the greeter answers and closes");
}
// [/snippet:mock]

}  // namespace

int main() {
  try {
    test_a_timeout();
    return strata::run([]() -> strata::Coro<int> {
      co_await check_dump();
      co_await watch_stalls();
      print_metrics(strata::get_running_loop());
      co_await test_the_greeter();
      co_return 0;
    }());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "snippet_debugging: %s\n", e.what());
    return 1;
  }
}
