// echo_client: checks an echo server. Opens --connections connections (TCP, or UDP endpoints
// with --udp) at once; each sends --count messages of --size bytes, one at a time, and checks
// that each comes back unchanged. Prints one summary line; exits 1 on any mismatch, error or
// timeout, 2 on a bad option.
//
//   echo_client --port 7000 --connections 8 --size 1024 --count 100
//   echo_client --port 7000 --udp --count 10
//   echo_client --port 7000 --cafile ca.pem --server-hostname localhost   over TLS
#include <strata/core/errors.hpp>
#include <strata/core/future.hpp>
#include <strata/core/gather.hpp>
#include <strata/core/run.hpp>
#include <strata/core/task_group.hpp>
#include <strata/core/timeout.hpp>
#include <strata/transports/datagram.hpp>
#include <strata/transports/ssl.hpp>
#include <strata/transports/tcp.hpp>
#include <strata/transports/transport.hpp>

#include "example_options.hpp"

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <exception>
#include <memory>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

namespace {

namespace ex = strata::examples;

void print_usage() {
  std::fputs(
      "usage: echo_client --port P [options]\n"
      "  --host H           server address (default 127.0.0.1)\n"
      "  --port P           server port (required)\n"
      "  --connections N    connections (or UDP endpoints) at once (default 1)\n"
      "  --size BYTES       bytes per message (default 64; at most 65507 with --udp)\n"
      "  --count M          messages per connection, each awaited before the next (default 1)\n"
      "  --udp              echo datagrams instead of a TCP stream\n",
      stdout);
  std::fputs(ex::ClientTlsOptions::usage, stdout);
  std::fputs(
      "  --timeout SECONDS  give up after this long (default 30)\n"
      "  --loop selector|proactor|epoll|poll|select   the loop (default selector)\n"
      "  --help             print this and exit\n"
      "Exits 0 when every echo came back unchanged; 1 on a mismatch, an error (such as\n"
      "`certificate verify failed: ...`) or the timeout; 2 on a bad option.\n",
      stdout);
}

struct Options {
  std::string host = "127.0.0.1";
  std::uint16_t port = 0;
  bool has_port = false;
  std::size_t connections = 1;
  std::size_t size = 64;
  std::size_t count = 1;
  bool udp = false;
  double timeout_s = 30;
  std::optional<strata::LoopKind> loop;
  std::optional<strata::SslOptions> ssl;  // with --tls, --cafile or --insecure
};

/// A failed check: the message is the whole stderr line after "echo_client: ".
class Mismatch : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// ---- Options ----------------------------------------------------------------------------------

/// Parses argv into @p options; returns an exit status when the program should stop.
std::optional<int> parse_options(int argc, char** argv, Options& options) {
  ex::ClientTlsOptions tls;
  try {
    ex::ArgumentCursor args(argc, argv, {"--help", "-h", "--udp", "--tls", "--insecure"}, "");
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
        options.port = static_cast<std::uint16_t>(ex::parse_number(name, value, 1, 65535));
        options.has_port = true;
      } else if (name == "--connections") {
        options.connections = ex::parse_number(name, value, 1, 100000);
      } else if (name == "--size") {
        options.size = ex::parse_number(name, value, 1, 1ull << 30);
      } else if (name == "--count") {
        options.count = ex::parse_number(name, value, 1, 1ull << 40);
      } else if (name == "--timeout") {
        options.timeout_s = static_cast<double>(ex::parse_number(name, value, 1, 86400));
      } else if (name == "--loop") {
        options.loop = ex::parse_loop(value, ex::UnknownLoop::loop_kind);
      } else if (!tls.take(name, value)) {
        throw ex::unknown_option(name);
      }
    }
    if (!options.has_port) throw std::invalid_argument("--port is required (see --help)");
    if (options.udp && options.size > 65507) {
      throw std::invalid_argument("--size must be at most 65507 with --udp (one datagram), got " +
                                  std::to_string(options.size));
    }
    if (options.udp && tls.enabled()) {
      throw std::invalid_argument("--udp cannot be combined with --tls, --cafile or --insecure "
                                  "(TLS runs over TCP; DTLS is not supported)");
    }
    options.ssl = tls.load();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "echo_client: %s\n", e.what());
    return 2;
  }
  return std::nullopt;
}

// ---- Messages ---------------------------------------------------------------------------------

/// Message @p index of connection @p conn: bytes that differ from one message and connection
/// to the next, so that a mixed-up echo is caught.
std::vector<std::byte> make_message(std::size_t conn, std::size_t index, std::size_t size) {
  std::vector<std::byte> message(size);
  std::uint32_t x = static_cast<std::uint32_t>(conn * 2654435761u + index * 40503u + 1);
  for (std::byte& b : message) {
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    b = static_cast<std::byte>(x);
  }
  return message;
}

void check_echo(std::span<const std::byte> got, std::span<const std::byte> want,
                std::string_view what, std::size_t conn, std::size_t index) {
  if (got.size() == want.size() && std::equal(got.begin(), got.end(), want.begin())) return;
  std::size_t at = 0;
  while (at < got.size() && at < want.size() && got[at] == want[at]) ++at;
  throw Mismatch(std::string(what) + " " + std::to_string(conn) + " message " +
                 std::to_string(index) + ": the echo differs at byte " + std::to_string(at) +
                 " (sent " + std::to_string(want.size()) + " bytes, got " +
                 std::to_string(got.size()) + ")");
}

// ---- TCP --------------------------------------------------------------------------------------

/// Collects what the server sends back; wait_for_bytes() completes once enough has come.
class StreamClient final : public strata::Protocol {
 public:
  void connection_made(strata::Transport& transport) override { transport_ = &transport; }

  void data_received(std::span<const std::byte> data) override {
    received_.insert(received_.end(), data.begin(), data.end());
    if (waiter_.valid() && !waiter_.done() && received_.size() >= wanted_) waiter_.set_result();
  }

  bool eof_received() override {
    fail_waiter(std::make_error_code(std::errc::connection_reset),
                "the server closed the connection before echoing everything");
    return false;
  }

  void connection_lost(std::error_code ec) override {
    transport_ = nullptr;
    lost_ = true;
    lost_error_ = ec;
    fail_waiter(ec ? ec : std::make_error_code(std::errc::connection_reset), "connection lost");
    if (closed_.valid() && !closed_.done()) complete_closed();
  }

  /// Completes once @p n bytes have been received in all.
  strata::Future<void> wait_for_bytes(std::size_t n) {
    wanted_ = n;
    waiter_ = strata::get_running_loop().create_future<void>();
    if (received_.size() >= n) {
      waiter_.set_result();
    } else if (lost_) {
      fail_waiter(std::make_error_code(std::errc::not_connected), "connection lost");
    }
    return waiter_;
  }

  /// Completes after connection_lost(); fails with its error, if it had one (a reset, or a
  /// TLS connection that the server ended without close_notify).
  strata::Future<void> closed() {
    if (!closed_.valid()) {
      closed_ = strata::get_running_loop().create_future<void>();
      if (lost_) complete_closed();
    }
    return closed_;
  }

  strata::Transport* transport() const noexcept { return transport_; }
  std::vector<std::byte>& received() noexcept { return received_; }

 private:
  void fail_waiter(std::error_code ec, const char* what) {
    if (waiter_.valid() && !waiter_.done()) waiter_.set_exception(std::system_error(ec, what));
  }

  void complete_closed() {
    if (lost_error_) {
      closed_.set_exception(std::system_error(lost_error_, "the connection did not end cleanly"));
    } else {
      closed_.set_result();
    }
  }

  strata::Transport* transport_ = nullptr;
  std::vector<std::byte> received_;
  std::size_t wanted_ = 0;
  strata::Future<void> waiter_;
  strata::Future<void> closed_;
  bool lost_ = false;
  std::error_code lost_error_;
};

/// What @p transport runs over: "tcp", or the TLS version and cipher, as
/// "TLSv1.3 (TLS_AES_256_GCM_SHA384)".
std::string describe_link(const strata::Transport& transport) {
  if (auto cipher = transport.get_extra_info_as<strata::SslCipher>("cipher")) {
    return cipher->protocol + " (" + cipher->name + ")";
  }
  return "tcp";
}

/// Echoes over one connection; sets @p link to what it runs over (see describe_link()).
strata::Coro<std::uint64_t> run_tcp_connection(const Options& options, std::size_t conn,
                                               std::string& link) {
  strata::ConnectOptions connect_options;
  connect_options.ssl = options.ssl;
  auto factory = [] { return std::make_unique<StreamClient>(); };
  strata::Coro<strata::Connection<StreamClient>> connect = strata::create_connection(
      std::move(factory), options.host, options.port, std::move(connect_options));
  strata::Connection<StreamClient> c = co_await connect;
  StreamClient& client = *c.protocol;
  link = describe_link(*c.transport);
  std::uint64_t echoed = 0;
  try {
    for (std::size_t i = 0; i < options.count; ++i) {
      std::vector<std::byte> message = make_message(conn, i, options.size);
      c.transport->write(message);
      strata::Future<void> arrived = client.wait_for_bytes(message.size());
      co_await arrived;
      std::span<const std::byte> got(client.received().data(), message.size());
      check_echo(got, message, "connection", conn, i);
      client.received().erase(client.received().begin(),
                              client.received().begin() + static_cast<std::ptrdiff_t>(message.size()));
      echoed += message.size();
    }
    // Half-close: the server echoes what is left (nothing) and closes. A transport that
    // cannot half-close (TLS) ends with close(): its close_notify is the server's EOF alike.
    strata::Future<void> closed = client.closed();
    if (c.transport->can_write_eof()) {
      c.transport->write_eof();
    } else {
      c.transport->close();
    }
    co_await closed;
    if (!client.received().empty()) {
      throw Mismatch("connection " + std::to_string(conn) + ": " +
                     std::to_string(client.received().size()) + " bytes more than were sent came back");
    }
  } catch (...) {
    if (client.transport() != nullptr) client.transport()->abort();
    throw;
  }
  co_return echoed;
}

// ---- UDP --------------------------------------------------------------------------------------

/// Hands each datagram that arrives to whoever waits in next().
class DatagramClient final : public strata::DatagramProtocol {
 public:
  void connection_made(strata::DatagramTransport& transport) override { transport_ = &transport; }

  void datagram_received(std::span<const std::byte> data, const strata::SocketAddress&) override {
    if (waiter_.valid() && !waiter_.done()) {
      waiter_.set_result(std::vector<std::byte>(data.begin(), data.end()));
    } else {
      ++unexpected_;
    }
  }

  void error_received(std::error_code ec) override {
    if (waiter_.valid() && !waiter_.done()) waiter_.set_exception(std::system_error(ec, "receive"));
  }

  void connection_lost(std::error_code ec) override {
    transport_ = nullptr;
    if (waiter_.valid() && !waiter_.done()) {
      waiter_.set_exception(std::system_error(ec ? ec : std::make_error_code(std::errc::not_connected),
                                              "endpoint closed"));
    }
  }

  /// The next datagram to arrive.
  strata::Future<std::vector<std::byte>> next() {
    waiter_ = strata::get_running_loop().create_future<std::vector<std::byte>>();
    return waiter_;
  }

  strata::DatagramTransport* transport() const noexcept { return transport_; }
  std::size_t unexpected() const noexcept { return unexpected_; }

 private:
  strata::DatagramTransport* transport_ = nullptr;
  strata::Future<std::vector<std::byte>> waiter_;
  std::size_t unexpected_ = 0;
};

strata::Coro<std::uint64_t> run_udp_endpoint(const Options& options, std::size_t conn) {
  strata::DatagramOptions endpoint;
  endpoint.remote_addr = strata::DatagramAddress(options.host, options.port);
  auto factory = [] { return std::make_unique<DatagramClient>(); };
  strata::Coro<strata::DatagramConnection<DatagramClient>> open =
      strata::create_datagram_endpoint(std::move(factory), std::move(endpoint));
  strata::DatagramConnection<DatagramClient> c = co_await open;
  DatagramClient& client = *c.protocol;
  std::uint64_t echoed = 0;
  try {
    for (std::size_t i = 0; i < options.count; ++i) {
      std::vector<std::byte> message = make_message(conn, i, options.size);
      strata::Future<std::vector<std::byte>> reply = client.next();
      c.transport->sendto(message);
      std::vector<std::byte> got = co_await reply;
      check_echo(got, message, "endpoint", conn, i);
      echoed += message.size();
    }
    if (client.unexpected() != 0) {
      throw Mismatch("endpoint " + std::to_string(conn) + ": " +
                     std::to_string(client.unexpected()) + " datagrams came back unasked");
    }
  } catch (...) {
    if (client.transport() != nullptr) client.transport()->abort();
    throw;
  }
  c.transport->close();
  co_return echoed;
}

// ---- Main -------------------------------------------------------------------------------------

/// What run_all() reports.
struct Summary {
  std::uint64_t echoed = 0;  // bytes
  std::string link;          // "udp", "tcp" or the TLS version and cipher
};

strata::Coro<Summary> run_all(const Options& options) {
  Summary summary{0, options.udp ? "udp" : "tcp"};
  auto body = [&options, &summary](strata::TaskGroup& tg) -> strata::Coro<void> {
    std::vector<strata::Task<std::uint64_t>> tasks;
    tasks.reserve(options.connections);
    for (std::size_t conn = 0; conn < options.connections; ++conn) {
      tasks.push_back(tg.create_task(
          options.udp ? run_udp_endpoint(options, conn)
                      : run_tcp_connection(options, conn, summary.link)));
    }
    for (auto& task : tasks) summary.echoed += co_await task;
  };
  co_await strata::task_group(std::move(body));
  co_return summary;
}

/// The first failure's message: an ExceptionGroup of TaskGroup holds one per connection.
std::string first_error(const std::exception_ptr& error) {
  try {
    std::rethrow_exception(error);
  } catch (const strata::ExceptionGroup& group) {
    if (!group.exceptions().empty()) return first_error(group.exceptions().front());
    return group.what();
  } catch (const std::exception& e) {
    return e.what();
  } catch (...) {
    return strata::describe_exception(error);
  }
}

strata::Coro<int> main_task(const Options& options) {
  const auto start = std::chrono::steady_clock::now();
  Summary summary;
  std::string error;
  try {
    const auto limit = std::chrono::duration_cast<strata::Duration>(
        std::chrono::duration<double>(options.timeout_s));
    strata::Coro<Summary> all = run_all(options);
    summary = co_await strata::wait_for(std::move(all), limit);
  } catch (const strata::TimeoutError&) {
    error = "timed out after " + std::to_string(static_cast<long>(options.timeout_s)) +
            " s (see --timeout)";
  } catch (...) {
    error = first_error(std::current_exception());
  }
  if (!error.empty()) {
    std::fprintf(stderr, "echo_client: %s\n", error.c_str());
    co_return 1;
  }
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  const std::string host =
      options.host.find(':') != std::string::npos ? "[" + options.host + "]" : options.host;
  std::printf("echo_client: ok: %zu %s x %zu messages x %zu bytes over %s to %s:%u; %llu bytes "
              "echoed and verified in %.3f s\n",
              options.connections, options.udp ? "endpoints" : "connections", options.count,
              options.size, summary.link.c_str(), host.c_str(),
              static_cast<unsigned>(options.port), static_cast<unsigned long long>(summary.echoed),
              seconds);
  std::fflush(stdout);
  co_return 0;
}

}  // namespace

int main(int argc, char** argv) {
  Options options;
  if (auto status = parse_options(argc, argv, options)) return *status;
  strata::RunOptions run_options;
  run_options.loop = options.loop;
  try {
    return strata::run(main_task(options), run_options);
  } catch (const strata::KeyboardInterrupt&) {
    return 130;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "echo_client: %s\n", e.what());
    return 1;
  }
}
