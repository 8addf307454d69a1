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
#include <strata/core/event.hpp>
#include <strata/core/future.hpp>
#include <strata/core/run.hpp>
#include <strata/core/timeout.hpp>
#include <strata/protocols/echo.hpp>
#include <strata/streams/streams.hpp>
#include <strata/transports/datagram.hpp>
#include <strata/transports/server.hpp>
#include <strata/transports/ssl.hpp>
#include <strata/transports/tcp.hpp>

#include "example_options.hpp"

#include <chrono>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <thread>
#include <utility>
#include <vector>

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

// ---- Options ----------------------------------------------------------------------------------

/// Parses argv into @p options; returns an exit status when the program should stop there.
std::optional<int> parse_options(int argc, char** argv, Options& options) {
  std::string api = "protocol";
  ex::ServerTlsOptions tls;
  try {
    ex::ArgumentCursor args(argc, argv, {"--help", "-h", "--udp"});
    while (const std::optional<ex::Argument> arg = args.next()) {
      const std::string_view name = arg->name;
      const char* value = arg->value;
      if (name == "--help" || name == "-h") {
        print_usage();
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

// ---- One loop's listening sockets ---------------------------------------------------------------

/// The sockets one loop serves: a TCP server, and with --udp a UDP endpoint on its port
/// (bound to the first address the host resolves to). Destroying it closes both.
struct Listener {
  std::unique_ptr<strata::Server> tcp;
  strata::DatagramTransport* udp = nullptr;  // the loop owns it; closed by us

  Listener() = default;
  Listener(Listener&& other) noexcept
      : tcp(std::move(other.tcp)), udp(std::exchange(other.udp, nullptr)) {}
  Listener& operator=(Listener&& other) noexcept {
    if (this != &other) {
      close_udp();
      tcp = std::move(other.tcp);
      udp = std::exchange(other.udp, nullptr);
    }
    return *this;
  }
  ~Listener() { close_udp(); }

  void close_udp() noexcept {
    if (udp != nullptr) std::exchange(udp, nullptr)->close();
  }
  /// The port of the first listening socket.
  std::uint16_t port() const { return tcp->sockets().front().address.port(); }
  /// Whether every listening socket has that port.
  bool has_one_port() const {
    for (const strata::ServerSocket& socket : tcp->sockets()) {
      if (socket.address.port() != port()) return false;
    }
    return true;
  }
};

/// The bytes one read of echo_stream() takes at most.
constexpr std::ptrdiff_t stream_chunk = 64 * 1024;

/// --api streams: echoes one connection, as start_server() calls it. send() waits only while
/// the peer does not read (the writer is above its high-water mark), so a peer that sends and
/// never reads stops being read from (the reader's buffer fills and pauses the socket) instead
/// of growing the server's memory. At EOF it returns, and start_server() closes the connection
/// once what was written is sent.
strata::Coro<void> echo_stream(strata::StreamReader reader, strata::StreamWriter writer) {
  try {
    for (;;) {
      strata::detail::ReadOp read = reader.read(stream_chunk);
      std::string data = co_await read;
      if (data.empty()) break;  // EOF
      strata::detail::DrainOp send = writer.send(data);
      co_await send;
    }
  } catch (const std::system_error&) {
    // Reset or lost: there is no one left to echo to, and nothing to report.
  }
}

/// Opens the TCP server of @p listener on the running loop; @p port 0 binds an ephemeral port.
strata::Coro<void> open_tcp(Listener& listener, const Options& options, std::uint16_t port,
                            bool reuse_port) {
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
    listener.tcp = co_await start;
    co_return;
  }
  auto factory = [] { return std::make_unique<strata::EchoProtocol>(); };
  strata::Coro<std::unique_ptr<strata::Server>> create = strata::create_server(
      std::move(factory), options.host, port, std::move(server_options));
  listener.tcp = co_await create;
}

/// With --udp, opens the UDP endpoint of @p listener on the port of its TCP server.
strata::Coro<void> open_udp(Listener& listener, const Options& options, bool reuse_port) {
  if (!options.udp) co_return;
  strata::DatagramOptions udp_options;
  udp_options.local_addr = strata::DatagramAddress(options.host, listener.port());
  udp_options.reuse_port = reuse_port;
  auto factory = [] { return std::make_unique<strata::EchoDatagramProtocol>(); };
  strata::Coro<strata::DatagramConnection<strata::EchoDatagramProtocol>> open =
      strata::create_datagram_endpoint(std::move(factory), std::move(udp_options));
  listener.udp = (co_await open).transport;
}

/// The sockets of a loop after the first, on the port number the first one got.
strata::Coro<Listener> open_listener(const Options& options, std::uint16_t port) {
  Listener listener;
  co_await open_tcp(listener, options, port, true);
  co_await open_udp(listener, options, true);
  co_return listener;
}

/// The first loop's sockets. With port 0, every socket must end up on one port number: the
/// addresses of a host like "localhost" each get their own ephemeral port, and the UDP port of
/// the number TCP got may be taken. Then it binds again on the first socket's port, or tries
/// another ephemeral port, a few times.
strata::Coro<Listener> open_first_listener(const Options& options, bool reuse_port) {
  for (int attempt = 1;; ++attempt) {
    try {
      Listener listener;
      co_await open_tcp(listener, options, options.port, reuse_port);
      if (options.port == 0 && !listener.has_one_port()) {
        const std::uint16_t port = listener.port();
        listener.tcp.reset();  // closes its sockets at once
        co_await open_tcp(listener, options, port, reuse_port);
      }
      co_await open_udp(listener, options, reuse_port);
      co_return listener;
    } catch (const std::system_error& e) {
      if (options.port != 0 || attempt == 10 || e.code() != std::errc::address_in_use) throw;
    }
  }
}

/// Stops accepting, gives the connections grace_period to end, then closes what is left
/// (sending what is buffered) and at last aborts it.
strata::Coro<void> shut_down(Listener& listener) {
  listener.tcp->close();
  listener.close_udp();
  bool closed = false;
  try {
    strata::Coro<void> wait = listener.tcp->wait_closed();
    co_await strata::wait_for(std::move(wait), grace_period - close_period);
    closed = true;
  } catch (const strata::TimeoutError&) {
  }
  if (closed) co_return;
  listener.tcp->close_clients();
  try {
    strata::Coro<void> wait = listener.tcp->wait_closed();
    co_await strata::wait_for(std::move(wait), close_period);
    closed = true;
  } catch (const strata::TimeoutError&) {
  }
  if (closed) co_return;
  listener.tcp->abort_clients();
  strata::Coro<void> wait = listener.tcp->wait_closed();
  co_await wait;
}

std::string describe(const std::exception_ptr& error) {
  try {
    std::rethrow_exception(error);
  } catch (const std::exception& e) {
    return e.what();
  } catch (...) {
    return strata::describe_exception(error);
  }
}

// ---- The other threads' loops --------------------------------------------------------------------

/// A loop on a thread of its own (--threads N: N - 1 of these besides the main loop). It talks
/// to the main loop only through call_soon_threadsafe(), and the main loop to it likewise.
struct Worker {
  std::thread thread;
  // Main loop's side: completed there, from the worker's call_soon_threadsafe() callbacks.
  strata::Future<void> ready;  // its sockets are open (or its error)
  strata::Future<void> done;   // its loop has closed
  // Written by the worker before it reports ready; read by the main loop after that.
  strata::EventLoop* loop = nullptr;
  strata::Event* stop = nullptr;
};

strata::Coro<void> worker_main(const Options& options, std::uint16_t port, Worker& worker,
                               strata::EventLoop& main_loop) {
  strata::Coro<Listener> open = open_listener(options, port);
  Listener listener = co_await open;
  strata::Event stop;
  worker.loop = &strata::get_running_loop();
  worker.stop = &stop;
  main_loop.call_soon_threadsafe([&worker] { worker.ready.set_result(); });
  co_await stop.wait();
  co_await shut_down(listener);
}

void worker_thread(const Options& options, std::uint16_t port, Worker& worker,
                   strata::EventLoop& main_loop) {
  std::exception_ptr error;
  try {
    strata::RunOptions run_options;
    run_options.loop = options.loop;
    run_options.handle_sigint = false;  // signals are the main loop's
    strata::run(worker_main(options, port, worker, main_loop), run_options);
  } catch (...) {
    error = std::current_exception();
  }
  main_loop.call_soon_threadsafe([&worker, error] {
    if (!worker.ready.done()) {
      worker.ready.set_exception(error ? error : std::make_exception_ptr(std::runtime_error(
                                                     "a worker loop ended before it was ready")));
    }
    worker.done.set_result();
  });
}

// ---- The main loop -------------------------------------------------------------------------------

/// The HOST of the ready line: the host as given (an IPv6 address in brackets), or for the
/// empty host (every interface) the first socket's address.
std::string host_for_display(const Options& options, const Listener& listener) {
  std::string host = options.host;
  if (host.empty()) host = listener.tcp->sockets().front().address.host();
  return host.find(':') != std::string::npos ? "[" + host + "]" : host;
}

strata::Coro<int> main_task(const Options& options) {
  strata::EventLoop& loop = strata::get_running_loop();
  strata::Event stop;
  // The first SIGINT or SIGTERM starts the graceful shutdown and restores the default
  // dispositions, so that a second one ends the process at once.
  auto on_signal = [&loop, &stop] {
    stop.set();
    loop.remove_signal_handler(SIGINT);
    loop.remove_signal_handler(SIGTERM);
  };
  loop.add_signal_handler(SIGINT, on_signal);
  loop.add_signal_handler(SIGTERM, on_signal);
  struct RemoveHandlers {  // they refer to this frame
    strata::EventLoop& loop;
    ~RemoveHandlers() {
      loop.remove_signal_handler(SIGINT);
      loop.remove_signal_handler(SIGTERM);
    }
  } remove_handlers{loop};

  const bool reuse_port = options.threads > 1;
  std::string error;
  Listener listener;
  try {
    strata::Coro<Listener> open = open_first_listener(options, reuse_port);
    listener = co_await open;
  } catch (...) {
    error = describe(std::current_exception());
  }
  if (!error.empty()) {
    std::fprintf(stderr, "echo_server: %s\n", error.c_str());
    co_return 1;
  }
  const std::uint16_t port = listener.port();

  // The other loops bind the same port number, now known, with SO_REUSEPORT.
  std::vector<std::unique_ptr<Worker>> workers;
  for (unsigned i = 1; i < options.threads; ++i) {
    auto worker = std::make_unique<Worker>();
    worker->ready = loop.create_future<void>();
    worker->done = loop.create_future<void>();
    worker->thread = std::thread(worker_thread, std::cref(options), port, std::ref(*worker),
                                 std::ref(loop));
    workers.push_back(std::move(worker));
  }
  for (auto& worker : workers) {
    try {
      co_await worker->ready;
    } catch (...) {
      if (error.empty()) error = describe(std::current_exception());
    }
  }

  if (error.empty()) {
    std::printf("listening on %s:%u\n", host_for_display(options, listener).c_str(),
                static_cast<unsigned>(port));
    std::fflush(stdout);
    co_await stop.wait();
  }

  for (auto& worker : workers) {
    if (worker->stop == nullptr) continue;  // it failed, or never started
    strata::Event* worker_stop = worker->stop;
    worker->loop->call_soon_threadsafe([worker_stop] { worker_stop->set(); });
  }
  co_await shut_down(listener);
  for (auto& worker : workers) {
    co_await worker->done;
    worker->thread.join();  // it has posted its last callback: nothing left but to return
    worker->ready = {};
    worker->done = {};
  }

  if (!error.empty()) {
    std::fprintf(stderr, "echo_server: %s\n", error.c_str());
    co_return 1;
  }
  co_return 0;
}

}  // namespace

int main(int argc, char** argv) {
  Options options;
  if (auto status = parse_options(argc, argv, options)) return *status;
  strata::RunOptions run_options;
  run_options.loop = options.loop;
  run_options.handle_sigint = false;  // main_task handles SIGINT and SIGTERM itself
  try {
    return strata::run(main_task(options), run_options);
  } catch (...) {
    std::fprintf(stderr, "echo_server: %s\n", describe(std::current_exception()).c_str());
    return 1;
  }
}
