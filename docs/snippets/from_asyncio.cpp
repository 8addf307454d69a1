// The code of docs/guides/coming-from-asyncio.md: asyncio idioms as Strata spells them (async
// with lock, a queue between producer and consumer, async for over lines, a timeout, a
// protocol class, a refused connection as an exception). Each demo checks what the guide says
// with expect(); the program exits 0 when every one holds.
#include <strata/core/lock.hpp>
#include <strata/core/queue.hpp>
#include <strata/core/run.hpp>
#include <strata/core/sleep.hpp>
#include <strata/core/task_group.hpp>
#include <strata/core/timeout.hpp>
#include <strata/streams/streams.hpp>
#include <strata/transports/protocol.hpp>
#include <strata/transports/server.hpp>
#include <strata/transports/tcp.hpp>
#include <strata/transports/transport.hpp>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <memory>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <system_error>
#include <vector>

using namespace std::chrono_literals;

namespace {

/// Throws when a claim of the guide does not hold; main() reports it and exits 1.
void expect(bool holds, const std::string& claim) {
  if (!holds) throw std::logic_error("expected: " + claim);
}

// [snippet:lock]
struct Counter {
  strata::Lock lock;
  int value = 0;
};

// A reference parameter is safe only because the caller keeps `counter` alive until every
// add_one() has finished (below, a task group ends before `counter` goes out of scope).
strata::Coro<void> add_one(Counter& counter) {
  strata::LockGuard guard = co_await counter.lock.acquire();  // async with counter.lock:
  int seen = counter.value;
  co_await strata::sleep(0ms);  // the other tasks run meanwhile, and queue for the lock
  counter.value = seen + 1;
}  // the guard releases the lock here, also when an exception leaves the block

strata::Coro<void> locking() {
  Counter counter;
  co_await strata::task_group([&counter](strata::TaskGroup& tg) -> strata::Coro<void> {
    for (int i = 0; i < 10; ++i) tg.create_task(add_one(counter));
    co_return;
  });
  expect(counter.value == 10, "the lock kept every increment");
}
// [/snippet:lock]

// [snippet:queue]
strata::Coro<void> produce(strata::Queue<std::string>& queue) {
  for (const char* word : {"alpha", "beta", "gamma"}) {
    auto putting = queue.put(word);  // waits while the queue is full
    co_await putting;
  }
  queue.shutdown();  // Python 3.13: get() throws QueueShutDown once the queue is empty
}

strata::Coro<std::vector<std::string>> consume(strata::Queue<std::string>& queue) {
  std::vector<std::string> got;
  try {
    for (;;) {
      auto getting = queue.get();
      got.push_back(co_await getting);
      queue.task_done();
    }
  } catch (const strata::QueueShutDown&) {
  }
  co_return got;
}

strata::Coro<void> queueing() {
  strata::Queue<std::string> queue(1);  // maxsize 1; 0 (the default) is unbounded
  std::vector<std::string> got = co_await strata::task_group(
      [&queue](strata::TaskGroup& tg) -> strata::Coro<std::vector<std::string>> {
        tg.create_task(produce(queue));
        strata::Task<std::vector<std::string>> consumer = tg.create_task(consume(queue));
        co_return co_await consumer;
      });
  expect(got == std::vector<std::string>{"alpha", "beta", "gamma"}, "the items, in order");
}
// [/snippet:queue]

// [snippet:lines]
strata::Coro<void> lines() {
  strata::StreamReader reader;  // fed by hand here; open_connection() gives a real one
  reader.feed_data("one\ntwo\n");
  reader.feed_eof();
  std::vector<std::string> seen;
  strata::AsyncGenerator<std::string> lines = reader.lines();  // async for line in reader:
  while (std::optional<std::string> line = co_await lines.next()) seen.push_back(*line);
  expect(seen == std::vector<std::string>{"one\n", "two\n"}, "each line, with its newline");
}
// [/snippet:lines]

strata::Coro<std::string> slow_answer() {
  co_await strata::sleep(10s);
  co_return "late";
}

// [snippet:timeout]
strata::Coro<void> timeouts() {
  std::string answer = "none";
  try {
    // async with asyncio.timeout(0.005): answer = await slow_answer()
    answer = co_await strata::timeout(5ms, slow_answer());
  } catch (const strata::TimeoutError&) {
    answer = "timed out";
  }
  expect(answer == "timed out", "timeout() throws TimeoutError");
}
// [/snippet:timeout]

// [snippet:protocol]
class Greeter : public strata::Protocol {
 public:
  void connection_made(strata::Transport& transport) override {
    transport_ = &transport;  // valid until connection_lost() returns
    transport_->write("hello, ");
  }
  void data_received(std::span<const std::byte> data) override {
    transport_->write(data);  // data is valid only during this call; write() copies it
  }
  bool eof_received() override {
    return false;  // false: close the transport (after the buffered bytes are sent)
  }
  void connection_lost(std::error_code ec) override {
    transport_ = nullptr;  // the transport and this protocol are destroyed after this returns
    (void)ec;              // empty: a clean close; else the error that ended the connection
  }

 private:
  strata::Transport* transport_ = nullptr;
};

strata::Coro<void> protocols() {
  auto serving = strata::create_server([] { return std::make_unique<Greeter>(); },
                                       "127.0.0.1", 0);
  std::unique_ptr<strata::Server> server = co_await serving;
  auto connecting = strata::open_connection("127.0.0.1", server->sockets().at(0).address.port());
  strata::Streams client = co_await connecting;
  client.writer.write("Ada\n");
  client.writer.write_eof();
  auto reading = client.reader.read();  // read() with no limit: everything until EOF
  std::string everything = co_await reading;
  server->close();
  auto closed = server->wait_closed();
  co_await closed;
  expect(everything == "hello, Ada\n", "the greeting, the echo, then EOF: " + everything);
}
// [/snippet:protocol]

// [snippet:errors]
strata::Coro<void> errors() {
  // A port that nobody listens on: bind one, note it, close it.
  auto serving = strata::create_server([] { return std::make_unique<Greeter>(); },
                                       "127.0.0.1", 0);
  std::unique_ptr<strata::Server> server = co_await serving;
  std::uint16_t port = server->sockets().at(0).address.port();
  server->close();
  auto closed = server->wait_closed();
  co_await closed;

  std::error_code error;
  try {
    auto connecting = strata::open_connection("127.0.0.1", port);
    strata::Streams streams = co_await connecting;
  } catch (const std::system_error& e) {  // asyncio: except ConnectionRefusedError
    error = e.code();
    std::printf("%s\n", e.what());  // names the operation and the peer
  }
  expect(error == std::errc::connection_refused, "the refusal, as an error_code");
}
// [/snippet:errors]

}  // namespace

int main() {
  try {
    return strata::run([]() -> strata::Coro<int> {
      co_await locking();
      co_await queueing();
      co_await lines();
      co_await timeouts();
      co_await protocols();
      co_await errors();
      co_return 0;
    }());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "snippet_from_asyncio: %s\n", e.what());
    return 1;
  }
}
