// echo_server: TCP echo (RFC 862), and with --udp UDP echo on the same port number, or with
// --tls-cert/--tls-key echo over TLS. With --api protocol (the default) the TCP side is written
// on the protocol layer (strata::EchoProtocol); with --api streams on the streams layer
// (strata::start_server(), a coroutine per connection that reads and sends back). UDP has no
// streams face (nor has asyncio), so --udp echoes datagrams with strata::EchoDatagramProtocol
// under either API.
//
//   echo_server --port 7000                 one loop, 127.0.0.1:7000
//   echo_server --port 0 --threads 4 --udp  four loops on four threads, SO_REUSEPORT
//   echo_server --tls-cert cert.pem --tls-key key.pem   TLS 1.2/1.3 (scripts/make_cert.sh)
//   echo_server --api streams               the same, written on StreamReader/StreamWriter
//
// It follows the example-server contract of DESIGN.md: prints `listening on HOST:PORT` once
// ready; SIGINT or SIGTERM stops accepting, lets connections finish for up to 5 s, then closes
// (and at last aborts) what is left, and exits 0; a start-up failure prints one line to stderr
// and exits 1 (2 for a bad option, or a certificate or key that cannot be loaded).
#include <strata/core/errors.hpp>
#include <strata/core/timeout.hpp>
#include <strata/protocols/echo.hpp>
#include <strata/streams/streams.hpp>
#include <strata/transports/datagram.hpp>
#include <strata/transports/server.hpp>
#include <strata/transports/ssl.hpp>
#include <strata/transports/tcp.hpp>

#include "example_options.hpp"
#include "server_runner.hpp"

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>

using namespace std::chrono_literals;

namespace {

namespace ex = strata::examples;

void print_usage() {
  std::fputs(
      "usage: echo_server [options]\n"
      "  --host H              address to listen on (default 127.0.0.1)\n"
      "  --port P              port; 0 picks a free one (default 0)\n"
      "  --loop selector|proactor|epoll|poll|select\n"
      "                        the event loop (default selector, on its best backend)\n"
      "  --threads N           N loops on N threads, one listening socket each (default 1)\n"
      "  --udp                 also echo UDP datagrams on the same port number\n"
      "  --api protocol|streams\n"
      "                        the layer the TCP (and TLS) echo is written on: the protocol\n"
      "                        layer, or the streams layer (start_server(), a coroutine per\n"
      "                        connection); the behaviour is the same (default protocol).\n"
      "                        --udp datagrams are echoed on the protocol layer under either\n"
      "                        API (streams have no datagram face)\n",
      stdout);
  std::fputs(ex::ServerTlsOptions::usage, stdout);
  std::fputs(
      "  --help                print this and exit\n"
      "Prints `listening on HOST:PORT` once ready (the same line with TLS). SIGINT or SIGTERM\n"
      "stops it: connections get up to 5 s to finish, then are closed.\n",
      stdout);
}

/// How long connections get to end on their own after SIGINT or SIGTERM, and how much of
/// that is left for close_clients() to flush their buffers before abort_clients().
constexpr strata::Duration grace_period = 5s;
constexpr strata::Duration close_period = 1s;

struct Options {
  std::string host = "127.0.0.1";
  std::uint16_t port = 0;
  std::optional<strata::LoopKind> loop;  // the best available when empty
  unsigned threads = 1;
  bool udp = false;
  bool streams = false;  // --api streams
  std::optional<strata::SslContext> ssl;  // with --tls-cert/--tls-key: the server's context
};

// Read-only once main() has parsed it; every loop's thread reads it. Its members' default
// constructors do not throw.
Options options;  // NOLINT(cert-err58-cpp)

// ---- Options ----------------------------------------------------------------------------------

/// Parses argv into options; returns an exit status when the program should stop there.
std::optional<int> parse_options(int argc, char** argv) {
  std::string api = "protocol";
  ex::ServerTlsOptions tls;
  try {
    ex::ArgumentCursor args(argc, argv, {"--help", "-h", "--udp"});
    while (const std::optional<ex::Argument> arg = args.next()) {
      const std::string_view name = arg->name;
      const char* value = arg->value;
      if (name == "--help" || name == "-h") {
        print_usage();
        ex::print_loop_backends();
        return 0;
      }
      if (name == "--udp") {
        options.udp = true;
      } else if (name == "--host") {
        options.host = value;
      } else if (name == "--port") {
        options.port = static_cast<std::uint16_t>(ex::parse_number(name, value, 0, 65535));
      } else if (name == "--threads") {
        options.threads = static_cast<unsigned>(ex::parse_number(name, value, 1, 1024));
      } else if (name == "--loop") {
        options.loop = ex::parse_loop(value);
      } else if (name == "--api") {
        api = value;
        if (api != "protocol" && api != "streams") {
          throw std::invalid_argument("--api must be protocol or streams, got '" + api + "'");
        }
      } else if (!tls.take(name, value)) {
        throw ex::unknown_option(name);
      }
    }
    if (options.udp && tls.enabled()) {
      throw std::invalid_argument("--udp cannot be combined with --tls-cert/--tls-key (TLS "
                                  "runs over TCP; DTLS is not supported)");
    }
    options.streams = api == "streams";
    options.ssl = tls.load();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "echo_server: %s\n", e.what());
    return 2;
  }
  return std::nullopt;
}

// ---- Serving one connection -------------------------------------------------------------------

/// --api streams: echoes one connection, as start_server() calls it. Each read is a view of
/// the reader's memory (read_view()): on the selector loop the socket receives into it and
/// send() writes from it, so the bytes are never copied. A connection that has sent nothing
/// holds no buffer; one that has keeps its view block (4 to 64 KiB) for the next read. send() waits only while the peer does not read (the writer is above its
/// high-water mark), so a peer that sends and never reads stops being read from (the reader's
/// buffer fills and pauses the socket) instead of growing the server's memory. At EOF it
/// returns, and start_server() closes the connection once what was written is sent.
// [snippet:echo_stream]
strata::Coro<void> echo_stream(strata::StreamReader reader, strata::StreamWriter writer) {
  try {
    for (;;) {
      strata::detail::ReadViewOp read = reader.read_view();
      const std::string_view data = co_await read;  // valid until the next read
      if (data.empty()) break;                       // EOF
      strata::detail::DrainOp send = writer.send(data);
      co_await send;
    }
  } catch (const std::system_error&) {
    // Reset or lost: there is no one left to echo to, and nothing to report.
  }
}
// [/snippet:echo_stream]

// ---- One loop's listener ------------------------------------------------------------------------

/// The sockets one loop serves: a TCP server, and with --udp a UDP endpoint on its port
/// (bound to the first address the host resolves to). Destroying it closes both.
class EchoListener {
 public:
  EchoListener() = default;
  EchoListener(EchoListener&& other) noexcept
      : tcp_(std::move(other.tcp_)), udp_(std::exchange(other.udp_, nullptr)) {}
  EchoListener& operator=(EchoListener&& other) noexcept {
    if (this != &other) {
      close_udp();
      tcp_ = std::move(other.tcp_);
      udp_ = std::exchange(other.udp_, nullptr);
    }
    return *this;
  }
  ~EchoListener() { close_udp(); }

  /// The first loop's sockets. With port 0, every socket must end up on one port number: the
  /// addresses of a host like "localhost" each get their own ephemeral port, and the UDP port
  /// of the number TCP got may be taken. Then it binds again on the first socket's port, or
  /// tries another ephemeral port, a few times.
  static strata::Coro<EchoListener> open_first(bool reuse_port) {
    for (int attempt = 1;; ++attempt) {
      try {
        EchoListener listener;
        co_await listener.open_tcp(options.port, reuse_port);
        if (options.port == 0 && !listener.has_one_port()) {
          const std::uint16_t port = listener.port();
          listener.tcp_.reset();  // closes its sockets at once
          co_await listener.open_tcp(port, reuse_port);
        }
        co_await listener.open_udp(reuse_port);
        co_return listener;
      } catch (const std::system_error& e) {
        if (options.port != 0 || attempt == 10 || e.code() != std::errc::address_in_use) throw;
      }
    }
  }

  /// The sockets of a loop after the first, on the port number the first one got.
  static strata::Coro<EchoListener> open(std::uint16_t port, bool reuse_port) {
    EchoListener listener;
    co_await listener.open_tcp(port, reuse_port);
    co_await listener.open_udp(reuse_port);
    co_return listener;
  }

  /// The port of the first listening socket.
  std::uint16_t port() const { return tcp_->sockets().front().address.port(); }

  /// The HOST of the ready line: the host as given (an IPv6 address in brackets), or for the
  /// empty host (every interface) the first socket's address.
  std::string host() const {
    std::string host = options.host;
    if (host.empty()) host = tcp_->sockets().front().address.host();
    return host.find(':') != std::string::npos ? "[" + host + "]" : host;
  }

  /// Stops accepting, gives the connections grace_period to end, then closes what is left
  /// (sending what is buffered) and at last aborts it.
  strata::Coro<void> shut_down() {
    tcp_->close();
    close_udp();
    bool closed = false;
    try {
      strata::Coro<void> wait = tcp_->wait_closed();
      co_await strata::wait_for(std::move(wait), grace_period - close_period);
      closed = true;
    } catch (const strata::TimeoutError&) {
    }
    if (closed) co_return;
    tcp_->close_clients();
    try {
      strata::Coro<void> wait = tcp_->wait_closed();
      co_await strata::wait_for(std::move(wait), close_period);
      closed = true;
    } catch (const strata::TimeoutError&) {
    }
    if (closed) co_return;
    tcp_->abort_clients();
    strata::Coro<void> wait = tcp_->wait_closed();
    co_await wait;
  }

 private:
  /// Whether every listening socket has the port of the first.
  bool has_one_port() const {
    for (const strata::ServerSocket& socket : tcp_->sockets()) {
      if (socket.address.port() != port()) return false;
    }
    return true;
  }

  void close_udp() noexcept {
    if (udp_ != nullptr) std::exchange(udp_, nullptr)->close();
  }

  /// Opens the TCP server on the running loop; @p port 0 binds an ephemeral port.
  strata::Coro<void> open_tcp(std::uint16_t port, bool reuse_port) {
    strata::ServerOptions server_options;
    server_options.reuse_port = reuse_port;
    if (options.ssl) server_options.ssl = *options.ssl;
    if (options.streams) {
      strata::ClientConnected on_client = [](strata::StreamReader reader,
                                             strata::StreamWriter writer) {
        return echo_stream(std::move(reader), std::move(writer));
      };
      strata::Coro<std::unique_ptr<strata::Server>> start = strata::start_server(
          std::move(on_client), options.host, port, std::move(server_options));
      tcp_ = co_await start;
      co_return;
    }
    auto factory = [] { return std::make_unique<strata::EchoProtocol>(); };
    strata::Coro<std::unique_ptr<strata::Server>> create = strata::create_server(
        std::move(factory), options.host, port, std::move(server_options));
    tcp_ = co_await create;
  }

  /// With --udp, opens the UDP endpoint on the port of the TCP server.
  strata::Coro<void> open_udp(bool reuse_port) {
    if (!options.udp) co_return;
    strata::DatagramOptions udp_options;
    udp_options.local_addr = strata::DatagramAddress(options.host, port());
    udp_options.reuse_port = reuse_port;
    auto factory = [] { return std::make_unique<strata::EchoDatagramProtocol>(); };
    strata::Coro<strata::DatagramConnection<strata::EchoDatagramProtocol>> open =
        strata::create_datagram_endpoint(std::move(factory), std::move(udp_options));
    udp_ = (co_await open).transport;
  }

  std::unique_ptr<strata::Server> tcp_;
  strata::DatagramTransport* udp_ = nullptr;  // the loop owns it; closed by us
};

}  // namespace

int main(int argc, char** argv) {
  if (auto status = parse_options(argc, argv)) return *status;
  return ex::run_server<EchoListener>("echo_server", options.threads, options.loop);
}
