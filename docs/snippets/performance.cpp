// The code of docs/guides/performance-and-multi-core.md: one server on several loops, one loop
// per thread, each with its own listening socket on the same port (SO_REUSEPORT), as the
// example servers' --threads N does; a client in the same program checks that every
// connection was served. Exits 0 when all were.
#include <strata/core/event.hpp>
#include <strata/core/gather.hpp>
#include <strata/core/run.hpp>
#include <strata/streams/streams.hpp>

#include <cstdint>
#include <cstdio>
#include <exception>
#include <future>
#include <memory>
#include <string>
#include <thread>
#include <vector>

namespace {

// [snippet:worker]
thread_local int served_here = 0;  // connections this thread's loop has served

strata::Coro<void> echo_one_line(strata::StreamReader reader, strata::StreamWriter writer) {
  ++served_here;
  auto reading = reader.readline();
  std::string line = co_await reading;
  auto sending = writer.send(line);
  co_await sending;
}

/// What the main thread and one server thread share.
struct ServerThread {
  std::promise<void> ready;  // set once listening (or failed to)
  std::uint16_t port = 0;
  strata::EventLoop* loop = nullptr;
  strata::Event* stop = nullptr;  // belongs to `loop`: set it through call_soon_threadsafe
  int served = 0;
  std::thread thread;
};

strata::Coro<void> serve(std::uint16_t port, ServerThread* self) {
  strata::ServerOptions options;
  options.reuse_port = true;  // every loop binds the same port; the kernel spreads connections
  auto starting = strata::start_server(echo_one_line, "127.0.0.1", port, options);
  std::unique_ptr<strata::Server> server = co_await starting;
  strata::Event stop;
  self->port = server->sockets().at(0).address.port();
  self->loop = &strata::get_running_loop();
  self->stop = &stop;
  self->ready.set_value();

  co_await stop.wait();
  server->close();  // stop accepting; the connections in flight finish
  auto closed = server->wait_closed();
  co_await closed;
  self->served = served_here;
}

/// Starts `threads` loops serving one port; the first binds port 0 and the others its port.
std::vector<std::unique_ptr<ServerThread>> start_servers(unsigned threads) {
  std::vector<std::unique_ptr<ServerThread>> servers;
  std::uint16_t port = 0;
  for (unsigned i = 0; i < threads; ++i) {
    auto s = std::make_unique<ServerThread>();
    std::future<void> ready = s->ready.get_future();
    s->thread = std::thread([s = s.get(), port] {
      try {
        strata::run(serve(port, s));  // one loop, on this thread, until stop is set
      } catch (...) {
        // Before it was ready: the main thread learns why. After: this loop just ends.
        if (s->loop == nullptr) s->ready.set_exception(std::current_exception());
      }
    });
    servers.push_back(std::move(s));
    ready.get();  // rethrows a start-up failure
    port = servers.back()->port;
  }
  return servers;
}

void stop_servers(const std::vector<std::unique_ptr<ServerThread>>& servers) {
  for (const auto& s : servers) {
    s->loop->call_soon_threadsafe([stop = s->stop] { stop->set(); });
    s->thread.join();
  }
}
// [/snippet:worker]

strata::Coro<bool> one_round_trip(std::uint16_t port) {
  auto connecting = strata::open_connection("127.0.0.1", port);
  strata::Streams client = co_await connecting;
  auto sending = client.writer.send("hi\n");
  co_await sending;
  auto reading = client.reader.readline();
  std::string reply = co_await reading;
  client.writer.close();
  auto closed = client.writer.wait_closed();
  co_await closed;
  co_return reply == "hi\n";
}

strata::Coro<int> clients(std::uint16_t port, int connections) {
  std::vector<strata::Coro<bool>> trips;
  trips.reserve(static_cast<std::size_t>(connections));
  for (int i = 0; i < connections; ++i) trips.push_back(one_round_trip(port));
  std::vector<bool> ok = co_await strata::gather(std::move(trips));
  int good = 0;
  for (bool b : ok) good += b ? 1 : 0;
  co_return good;
}

}  // namespace

int main() {
  try {
    // [snippet:main]
    std::vector<std::unique_ptr<ServerThread>> servers = start_servers(2);
    int answered = strata::run(clients(servers.front()->port, 32));  // a third loop: the client
    stop_servers(servers);
    // [/snippet:main]
    int served = 0;
    for (const auto& s : servers) {
      std::printf("a loop served %d connections\n", s->served);
      served += s->served;
    }
    return answered == 32 && served == 32 ? 0 : 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "snippet_performance: %s\n", e.what());
    return 1;
  }
}
