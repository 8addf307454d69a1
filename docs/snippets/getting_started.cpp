// The code of docs/guides/getting-started.md: a first coroutine program, then a TCP echo
// server and its client on the streams layer, in one process. Exits 0 when both work.
// [snippet:includes]
#include <strata/core/run.hpp>
#include <strata/core/sleep.hpp>
#include <strata/streams/streams.hpp>
// [/snippet:includes]

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>

using namespace std::chrono_literals;

namespace {

// [snippet:hello]
strata::Coro<std::string> greet(std::string name, std::chrono::milliseconds delay) {
  co_await strata::sleep(delay);
  co_return "hello, " + name;
}

strata::Coro<int> hello() {
  // Both tasks start now and sleep at the same time: this takes 20 ms, not 30.
  strata::Task<std::string> a = strata::create_task(greet("Ada", 20ms));
  strata::Task<std::string> b = strata::create_task(greet("Brian", 10ms));
  std::string first = co_await a;
  std::string second = co_await b;
  std::printf("%s; %s\n", first.c_str(), second.c_str());
  co_return 0;
}
// [/snippet:hello]

// [snippet:echo_handler]
strata::Coro<void> echo_client_connected(strata::StreamReader reader,
                                         strata::StreamWriter writer) {
  for (;;) {
    auto reading = reader.readline();
    std::string line = co_await reading;
    if (line.empty()) break;  // end of file: the client closed its side
    auto sending = writer.send(line);
    co_await sending;
  }
}  // returning closes the connection
// [/snippet:echo_handler]

// [snippet:echo_demo]
strata::Coro<int> echo_demo() {
  auto starting = strata::start_server(echo_client_connected, "127.0.0.1", 0);
  std::unique_ptr<strata::Server> server = co_await starting;
  std::uint16_t port = server->sockets().at(0).address.port();  // port 0: the OS picked one

  auto connecting = strata::open_connection("127.0.0.1", port);
  strata::Streams client = co_await connecting;
  client.writer.write("ping\n");
  auto reading = client.reader.readline();
  std::string reply = co_await reading;
  std::printf("echoed: %s", reply.c_str());

  client.writer.close();
  auto client_closed = client.writer.wait_closed();
  co_await client_closed;
  server->close();
  auto server_closed = server->wait_closed();
  co_await server_closed;
  co_return reply == "ping\n" ? 0 : 1;
}
// [/snippet:echo_demo]

}  // namespace

int main() {
  if (strata::run(echo_demo()) != 0) return 1;
  // [snippet:run]
  return strata::run(hello());
  // [/snippet:run]
}
