// asio_echo_callbacks: a TCP echo server on standalone Asio (Debian's libasio-dev), completion
// handlers (callbacks), one io_context on one thread. Each session owns a 64 KiB read buffer
// (allocated uninitialised, so an idle session's untouched pages cost no RSS), reads with
// async_read_some and writes each read back whole with async_write before reading again.
//
//   asio_echo_callbacks [--host 127.0.0.1] [--port P]   (0 = ephemeral)
//
// Prints "listening on HOST:PORT" once ready; SIGINT or SIGTERM: exit 0.
#define ASIO_STANDALONE 1
#define ASIO_NO_DEPRECATED 1
#include <asio.hpp>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>

namespace {

constexpr std::size_t kBufSize = 64 * 1024;

class Session : public std::enable_shared_from_this<Session> {
 public:
  explicit Session(asio::ip::tcp::socket socket)
      : socket_(std::move(socket)), buf_(std::make_unique_for_overwrite<char[]>(kBufSize)) {}

  void start() { do_read(); }

 private:
  void do_read() {
    socket_.async_read_some(asio::buffer(buf_.get(), kBufSize),
                            [self = shared_from_this()](std::error_code ec, std::size_t n) {
                              if (!ec) self->do_write(n);
                            });
  }

  void do_write(std::size_t n) {
    asio::async_write(socket_, asio::buffer(buf_.get(), n),
                      [self = shared_from_this()](std::error_code ec, std::size_t) {
                        if (!ec) self->do_read();
                      });
  }

  asio::ip::tcp::socket socket_;
  std::unique_ptr<char[]> buf_;
};

void do_accept(asio::ip::tcp::acceptor& acceptor) {
  acceptor.async_accept([&acceptor](std::error_code ec, asio::ip::tcp::socket socket) {
    if (!ec) {
      socket.set_option(asio::ip::tcp::no_delay(true));
      std::make_shared<Session>(std::move(socket))->start();
    }
    if (acceptor.is_open()) do_accept(acceptor);
  });
}

}  // namespace

int main(int argc, char** argv) {
  std::string host = "127.0.0.1";
  unsigned short port = 0;
  for (int i = 1; i < argc; i++) {
    if (std::strcmp(argv[i], "--port") == 0 && i + 1 < argc) {
      port = static_cast<unsigned short>(std::atoi(argv[++i]));
    } else if (std::strcmp(argv[i], "--host") == 0 && i + 1 < argc) {
      host = argv[++i];
    } else {
      std::fprintf(stderr, "usage: asio_echo_callbacks [--host H] [--port P]\n");
      return 2;
    }
  }
  try {
    asio::io_context io(1);
    asio::ip::tcp::endpoint ep(asio::ip::make_address(host), port);
    asio::ip::tcp::acceptor acceptor(io);
    acceptor.open(ep.protocol());
    acceptor.set_option(asio::socket_base::reuse_address(true));
    acceptor.bind(ep);
    acceptor.listen(4096);
    asio::signal_set signals(io, SIGINT, SIGTERM);
    signals.async_wait([&io](std::error_code, int) { io.stop(); });
    do_accept(acceptor);
    std::printf("listening on %s:%u\n", host.c_str(), acceptor.local_endpoint().port());
    std::fflush(stdout);
    io.run();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "asio_echo_callbacks: %s\n", e.what());
    return 1;
  }
  return 0;
}
