// asio_echo_coro: a TCP echo server on standalone Asio (Debian's libasio-dev) with C++20
// coroutines (asio::awaitable, co_spawn, use_awaitable), one io_context on one thread. Each
// session is one coroutine owning a 64 KiB read buffer (allocated uninitialised, so an idle
// session's untouched pages cost no RSS): async_read_some, then async_write of what was read.
//
//   asio_echo_coro [--host 127.0.0.1] [--port P]   (0 = ephemeral)
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

asio::awaitable<void> session(asio::ip::tcp::socket socket) {
  auto buf = std::make_unique_for_overwrite<char[]>(kBufSize);
  try {
    for (;;) {
      std::size_t n =
          co_await socket.async_read_some(asio::buffer(buf.get(), kBufSize), asio::use_awaitable);
      co_await asio::async_write(socket, asio::buffer(buf.get(), n), asio::use_awaitable);
    }
  } catch (const std::exception&) {
    // end of stream or a reset: the session ends
  }
}

asio::awaitable<void> listener(asio::ip::tcp::acceptor& acceptor) {
  for (;;) {
    std::error_code ec;
    asio::ip::tcp::socket socket =
        co_await acceptor.async_accept(asio::redirect_error(asio::use_awaitable, ec));
    if (ec) {
      if (!acceptor.is_open()) co_return;
      continue;
    }
    socket.set_option(asio::ip::tcp::no_delay(true));
    asio::co_spawn(acceptor.get_executor(), session(std::move(socket)), asio::detached);
  }
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
      std::fprintf(stderr, "usage: asio_echo_coro [--host H] [--port P]\n");
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
    asio::co_spawn(io, listener(acceptor), asio::detached);
    std::printf("listening on %s:%u\n", host.c_str(), acceptor.local_endpoint().port());
    std::fflush(stdout);
    io.run();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "asio_echo_coro: %s\n", e.what());
    return 1;
  }
  return 0;
}
