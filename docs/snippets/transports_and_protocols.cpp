// The code of docs/guides/transports-and-protocols.md: protocols written by subclassing
// strata::Protocol and strata::DatagramProtocol, served and connected over TCP, a Unix socket,
// UDP and a pipe. Every server listens on 127.0.0.1 (port 0) or in a temporary directory and
// is driven by a client in this program; it exits 0 when every answer is the expected one.
#include <strata/core/errors.hpp>
#include <strata/core/future.hpp>
#include <strata/core/run.hpp>
#include <strata/core/socket_address.hpp>
#include <strata/core/timeout.hpp>
#include <strata/transports/datagram.hpp>
#include <strata/transports/pipe.hpp>
#include <strata/transports/protocol.hpp>
#include <strata/transports/server.hpp>
#include <strata/transports/tcp.hpp>
#include <strata/transports/transport.hpp>
#include <strata/transports/unix.hpp>

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>

using namespace std::chrono_literals;

namespace {

int failures = 0;

void expect(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "transports_and_protocols: FAILED: %s\n", what);
    ++failures;
  }
}

// [snippet:greet-protocol]
/// A line protocol: the server answers each line NAME with "hello, NAME"; the line "quit"
/// ends the connection.
class GreetProtocol : public strata::Protocol {
 public:
  void connection_made(strata::Transport& transport) override { transport_ = &transport; }

  void data_received(std::span<const std::byte> data) override {
    buffer_.append(reinterpret_cast<const char*>(data.data()), data.size());
    for (std::size_t end; (end = buffer_.find('\n')) != std::string::npos;) {
      std::string name = buffer_.substr(0, end);
      buffer_.erase(0, end + 1);
      if (name == "quit") {
        transport_->close();  // sends what is buffered, then ends the connection
        return;
      }
      transport_->write("hello, " + name + "\n");
    }
    if (buffer_.size() > max_line) transport_->abort();  // no newline in sight: drop the peer
  }

  bool eof_received() override {
    return false;  // the client has finished sending: close our side too
  }

  void connection_lost(std::error_code /*ec*/) override { transport_ = nullptr; }

 private:
  static constexpr std::size_t max_line = 4096;
  strata::Transport* transport_ = nullptr;
  std::string buffer_;
};
// [/snippet:greet-protocol]

// [snippet:collector]
/// A client protocol: sends @p request, then collects everything the server sends until the
/// connection ends, and hands it over through the future @p done.
class Collector : public strata::Protocol {
 public:
  Collector(strata::Future<std::string> done, std::string request)
      : done_(std::move(done)), request_(std::move(request)) {}

  void connection_made(strata::Transport& transport) override {
    if (request_.empty()) return;
    transport.write(request_);
    if (transport.can_write_eof()) transport.write_eof();  // half-close: "I am done sending"
  }

  void data_received(std::span<const std::byte> data) override {
    received_.append(reinterpret_cast<const char*>(data.data()), data.size());
  }

  void connection_lost(std::error_code ec) override {
    if (ec) {
      done_.set_exception(std::make_exception_ptr(std::system_error(ec, "connection lost")));
    } else {
      done_.set_result(std::move(received_));
    }
  }

 private:
  strata::Future<std::string> done_;
  std::string request_;
  std::string received_;
};
// [/snippet:collector]

strata::Coro<void> tcp_demo() {
  // [snippet:tcp]
  auto serving = strata::create_server([] { return std::make_unique<GreetProtocol>(); },
                                       "127.0.0.1", 0);  // port 0: the kernel picks one
  std::unique_ptr<strata::Server> server = co_await serving;
  const std::uint16_t port = server->sockets().front().address.port();

  strata::Future<std::string> done(strata::get_running_loop());
  auto connecting = strata::create_connection(
      [done] { return std::make_unique<Collector>(done, "alice\nbob\n"); }, "127.0.0.1", port);
  strata::Connection<Collector> client = co_await connecting;
  auto local = client.transport->get_extra_info_as<strata::SocketAddress>("sockname");

  std::string replies = co_await done;  // "hello, alice\nhello, bob\n"

  server->close();  // stop listening
  auto closing = server->wait_closed();  // and wait for its connections to end
  co_await closing;
  // [/snippet:tcp]
  expect(local.has_value() && local->host() == "127.0.0.1", "tcp: sockname");
  expect(replies == "hello, alice\nhello, bob\n", "tcp: replies");

  std::error_code refused;
  // [snippet:refused]
  try {
    auto again = strata::create_connection(
        [] { return std::make_unique<strata::Protocol>(); }, "127.0.0.1", port);
    co_await again;
  } catch (const std::system_error& e) {
    // e.what() is "connect 127.0.0.1:PORT: Connection refused"
    refused = e.code();  // std::errc::connection_refused
  }
  // [/snippet:refused]
  expect(refused == std::errc::connection_refused, "tcp: refused");
}

// [snippet:producer]
/// Sends @p total bytes to its client, no faster than the client reads them: it writes until
/// the transport says "pause", and goes on when it says "resume".
class Producer : public strata::Protocol {
 public:
  Producer(std::size_t total, int& pauses) : left_(total), pauses_(pauses) {}

  void connection_made(strata::Transport& transport) override {
    transport_ = &transport;
    produce();
  }
  void pause_writing() override {
    paused_ = true;  // the write buffer is above its high-water mark (64 KiB by default)
    ++pauses_;
  }
  void resume_writing() override {
    paused_ = false;  // the buffer drained to its low-water mark (16 KiB by default)
    produce();
  }
  void connection_lost(std::error_code /*ec*/) override { transport_ = nullptr; }

 private:
  void produce() {
    while (!paused_ && left_ > 0) {
      const std::size_t n = std::min(left_, chunk_.size());
      transport_->write(std::string_view(chunk_).substr(0, n));  // may call pause_writing()
      left_ -= n;
    }
    if (left_ == 0) transport_->close();  // after the buffered bytes are sent
  }

  std::string chunk_ = std::string(16 * 1024, 'x');
  std::size_t left_;
  int& pauses_;
  bool paused_ = false;
  strata::Transport* transport_ = nullptr;
};
// [/snippet:producer]

// [snippet:slow-reader]
/// Counts the bytes it receives; reads nothing for its first @p delay, so that the server
/// meets a client that does not keep up.
class SlowReader : public strata::Protocol {
 public:
  SlowReader(strata::Future<std::size_t> done, strata::Duration delay)
      : done_(std::move(done)), delay_(delay) {}

  void connection_made(strata::Transport& transport) override {
    transport.pause_reading();  // the kernel's buffers fill, then TCP stops the sender
    strata::Transport* t = &transport;
    timer_ = transport.get_loop().call_later(delay_, [t] { t->resume_reading(); });
  }
  void data_received(std::span<const std::byte> data) override { count_ += data.size(); }
  void connection_lost(std::error_code ec) override {
    timer_.cancel();  // the transport is about to go: its timer must not fire
    if (ec) {
      done_.set_exception(std::make_exception_ptr(std::system_error(ec, "connection lost")));
    } else {
      done_.set_result(count_);
    }
  }

 private:
  strata::Future<std::size_t> done_;
  strata::Duration delay_;
  strata::TimerHandle timer_;
  std::size_t count_ = 0;
};
// [/snippet:slow-reader]

strata::Coro<void> flow_control_demo() {
  const std::size_t total = std::size_t{16} << 20;  // 16 MiB: more than the kernel buffers
  int pauses = 0;
  auto serving = strata::create_server(
      [total, &pauses] { return std::make_unique<Producer>(total, pauses); }, "127.0.0.1", 0);
  std::unique_ptr<strata::Server> server = co_await serving;
  const std::uint16_t port = server->sockets().front().address.port();

  strata::Future<std::size_t> done(strata::get_running_loop());
  auto connecting = strata::create_connection(
      [done] { return std::make_unique<SlowReader>(done, 100ms); }, "127.0.0.1", port);
  co_await connecting;
  const std::size_t received = co_await done;
  expect(received == total, "flow control: every byte arrives");
  expect(pauses > 0, "flow control: the producer was paused");

  server->close();
  auto closing = server->wait_closed();
  co_await closing;
}

strata::Coro<void> unix_demo(std::string dir) {
  // [snippet:unix]
  const std::string path = dir + "/greet.sock";
  auto serving = strata::create_unix_server(
      [] { return std::make_unique<GreetProtocol>(); }, path);  // makes the socket file
  std::unique_ptr<strata::Server> server = co_await serving;

  strata::Future<std::string> done(strata::get_running_loop());
  auto connecting = strata::create_unix_connection(
      [done] { return std::make_unique<Collector>(done, "carol\nquit\nnever answered\n"); },
      path);
  co_await connecting;
  std::string replies = co_await done;  // "hello, carol\n"

  server->close();  // removes the socket file too (UnixServerOptions::cleanup_socket)
  // [/snippet:unix]
  auto closing = server->wait_closed();
  co_await closing;
  expect(replies == "hello, carol\n", "unix: replies");
  expect(!std::filesystem::exists(path), "unix: socket file removed");
}

// [snippet:udp-protocols]
/// A UDP server: answers each datagram with the same text in upper case.
class UpperServer : public strata::DatagramProtocol {
 public:
  void connection_made(strata::DatagramTransport& transport) override {
    transport_ = &transport;
  }
  void datagram_received(std::span<const std::byte> data,
                         const strata::SocketAddress& from) override {
    std::string text(reinterpret_cast<const char*>(data.data()), data.size());
    for (char& c : text) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
    transport_->sendto(text, from);  // back to the sender
  }
  void connection_lost(std::error_code /*ec*/) override { transport_ = nullptr; }

 private:
  strata::DatagramTransport* transport_ = nullptr;
};

/// A UDP client: resolves @p reply with the first datagram it receives, or with the error
/// the kernel reports (e.g. connection_refused: no one listens on the server's port).
class OneReply : public strata::DatagramProtocol {
 public:
  explicit OneReply(strata::Future<std::string> reply) : reply_(std::move(reply)) {}
  void datagram_received(std::span<const std::byte> data,
                         const strata::SocketAddress& /*from*/) override {
    const std::string text(reinterpret_cast<const char*>(data.data()), data.size());
    if (!reply_.done()) reply_.set_result(text);
  }
  void error_received(std::error_code ec) override {
    if (!reply_.done()) reply_.set_exception(std::make_exception_ptr(std::system_error(ec)));
  }

 private:
  strata::Future<std::string> reply_;
};
// [/snippet:udp-protocols]

strata::Coro<void> udp_demo() {
  // [snippet:udp]
  strata::DatagramOptions server_options;
  server_options.local_addr = strata::DatagramAddress("127.0.0.1", 0);
  auto binding = strata::create_datagram_endpoint(
      [] { return std::make_unique<UpperServer>(); }, std::move(server_options));
  strata::DatagramConnection<UpperServer> server = co_await binding;
  const auto bound = server.transport->get_extra_info_as<strata::SocketAddress>("sockname");

  strata::Future<std::string> reply(strata::get_running_loop());
  strata::DatagramOptions client_options;
  client_options.remote_addr = *bound;  // connected: sendto() needs no address
  auto connecting = strata::create_datagram_endpoint(
      [reply] { return std::make_unique<OneReply>(reply); }, std::move(client_options));
  strata::DatagramConnection<OneReply> client = co_await connecting;

  client.transport->sendto("ping");
  auto waiting = strata::wait_for(reply, 2s);  // UDP may lose datagrams: bound the wait
  std::string answer = co_await waiting;  // "PING"

  client.transport->close();
  server.transport->close();
  // [/snippet:udp]
  expect(answer == "PING", "udp: reply");
}

strata::Coro<void> pipe_demo() {
  // [snippet:pipe]
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) throw std::system_error(errno, std::system_category(), "pipe2");

  strata::Future<std::string> done(strata::get_running_loop());
  auto reading = strata::connect_read_pipe(
      [done] { return std::make_unique<Collector>(done, ""); }, fds[0]);  // takes fds[0]
  co_await reading;
  auto writing = strata::connect_write_pipe(
      [] { return std::make_unique<strata::Protocol>(); }, fds[1]);  // takes fds[1]
  strata::Connection<strata::Protocol> writer = co_await writing;

  writer.transport->write("through the pipe\n");
  writer.transport->close();  // closes fds[1] once written: the reader sees EOF
  std::string text = co_await done;  // "through the pipe\n"
  // [/snippet:pipe]
  expect(text == "through the pipe\n", "pipe: text");
}

strata::Coro<int> main_task(std::string dir) {
  auto tcp = tcp_demo();
  co_await tcp;
  auto flow = flow_control_demo();
  co_await flow;
  auto unix_socket = unix_demo(dir);
  co_await unix_socket;
  auto udp = udp_demo();
  co_await udp;
  auto pipe = pipe_demo();
  co_await pipe;
  co_return failures == 0 ? 0 : 1;
}

}  // namespace

int main() {
  char dir_template[] = "/tmp/strata-guide-XXXXXX";
  if (::mkdtemp(dir_template) == nullptr) return 1;
  const std::string dir = dir_template;
  int status = 1;
  try {
    status = strata::run(main_task(dir));
  } catch (const std::exception& e) {
    std::fprintf(stderr, "transports_and_protocols: %s\n", e.what());
  }
  std::filesystem::remove_all(dir);
  return status;
}
