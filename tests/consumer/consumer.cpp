// A program outside the Strata tree, as a user writes one: a Protocol subclass serving on
// 127.0.0.1 (an ephemeral port), and a stream client talking to it, on strata::run's loop.
// Built by tests/consumer/CMakeLists.txt against an installed Strata (find_package), through
// add_subdirectory or FetchContent, and by scripts/consumer.sh with pkg-config. Exits 0 when
// the server's reply is right.
#include <strata/core/run.hpp>
#include <strata/streams/streams.hpp>
#include <strata/transports/protocol.hpp>
#include <strata/transports/server.hpp>
#include <strata/transports/tcp.hpp>
#include <strata/transports/transport.hpp>
#include <strata/version.hpp>

#include <cctype>
#include <cstdio>
#include <memory>
#include <span>
#include <string>

namespace {

/// Answers each line with the line in capitals.
class ShoutProtocol : public strata::Protocol {
 public:
  void connection_made(strata::Transport& transport) override { transport_ = &transport; }
  void data_received(std::span<const std::byte> data) override {
    for (std::byte b : data) {
      const char c = static_cast<char>(b);
      line_ += static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
      if (c == '\n') {
        transport_->write(line_);
        line_.clear();
      }
    }
  }
  void connection_lost(std::error_code) override { transport_ = nullptr; }

 private:
  strata::Transport* transport_ = nullptr;
  std::string line_;
};

strata::Coro<int> run_consumer() {
  auto serving = strata::create_server([] { return std::make_unique<ShoutProtocol>(); },
                                       "127.0.0.1", 0);
  std::unique_ptr<strata::Server> server = co_await serving;
  const std::uint16_t port = server->sockets().at(0).address.port();

  auto connecting = strata::open_connection("127.0.0.1", port);
  strata::Streams streams = co_await connecting;
  streams.writer.write("hello from outside\n");
  auto reading = streams.reader.readline();
  const std::string reply = co_await reading;
  streams.writer.close();
  auto closing = streams.writer.wait_closed();
  co_await closing;
  server->close();
  auto server_closing = server->wait_closed();
  co_await server_closing;

  std::printf("strata %s (headers %s): %s", std::string(strata::version()).c_str(),
              STRATA_VERSION_STRING, reply.c_str());
  co_return reply == "HELLO FROM OUTSIDE\n" && strata::version() == STRATA_VERSION_STRING ? 0 : 1;
}

}  // namespace

int main() { return strata::run(run_consumer()); }
