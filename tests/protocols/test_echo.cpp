#include <strata/protocols/echo.hpp>

#include <catch2/catch.hpp>

#include "loop_test.hpp"

#include <algorithm>
#include <any>
#include <chrono>
#include <cstdint>
#include <cstddef>
#include <exception>
#include <memory>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <strata/core/coro.hpp>
#include <strata/core/errors.hpp>
#include <strata/core/event_loop.hpp>
#include <strata/core/future.hpp>
#include <strata/core/sleep.hpp>
#include <strata/core/socket_address.hpp>
#include <strata/transports/datagram.hpp>
#include <strata/transports/server.hpp>
#include <strata/transports/tcp.hpp>
#include <strata/transports/transport.hpp>

namespace {

using strata::EchoDatagramProtocol;
using strata::EchoProtocol;

std::span<const std::byte> bytes_of(std::string_view s) {
  return std::as_bytes(std::span(s.data(), s.size()));
}

std::string string_of(std::span<const std::byte> b) {
  return std::string(reinterpret_cast<const char*>(b.data()), b.size());
}

/// A fake stream transport that records what its protocol does to it, as a list of events
/// ("write:<bytes>", "pause_reading", "resume_reading", "close", ...), and models the write
/// buffer: nothing is sent until drain(), and crossing the water marks calls the protocol's
/// pause_writing()/resume_writing() as the real transport does.
class RecordingTransport final : public strata::Transport {
 public:
  RecordingTransport(strata::EventLoop& loop, strata::Protocol& protocol)
      : loop_(loop), protocol_(protocol) {}

  std::vector<std::string> events;
  std::string written;  // every byte written, in order
  bool record_data = true;

  // Drives the protocol as the transport would.
  void feed(std::string_view data) {
    REQUIRE(reading_);
    protocol_.data_received(bytes_of(data));
  }
  void feed(std::span<const std::byte> data) {
    REQUIRE(reading_);
    protocol_.data_received(data);
  }
  /// The peer took @p n buffered bytes.
  void drain(std::size_t n) {
    buffered_ -= std::min(n, buffered_);
    if (writing_paused_ && buffered_ <= low_) {
      writing_paused_ = false;
      protocol_.resume_writing();
    }
  }

  void write(std::span<const std::byte> data) override {
    if (eof_written_) throw strata::InvalidStateError("write after write_eof");
    if (data.empty()) return;
    if (record_data) {
      events.push_back("write:" + string_of(data));
      written += string_of(data);
    }
    buffered_ += data.size();
    if (!writing_paused_ && buffered_ > high_) {
      writing_paused_ = true;
      protocol_.pause_writing();
    }
  }
  using strata::Transport::write;
  void writelines(std::span<const std::span<const std::byte>> buffers) override {
    for (auto b : buffers) write(b);
  }
  void write_eof() override {
    events.push_back("write_eof");
    eof_written_ = true;
  }
  bool can_write_eof() const noexcept override { return true; }
  void abort() override {
    events.push_back("abort");
    closing_ = true;
  }
  void close() override {
    events.push_back("close");
    closing_ = true;
  }
  bool is_closing() const noexcept override { return closing_; }
  std::size_t get_write_buffer_size() const noexcept override { return buffered_; }
  void set_write_buffer_limits(std::optional<std::size_t> high,
                               std::optional<std::size_t> low) override {
    high_ = high.value_or(64 * 1024);
    low_ = low.value_or(high_ / 4);
    if (low_ > high_) throw std::invalid_argument("low > high");
  }
  std::pair<std::size_t, std::size_t> get_write_buffer_limits() const noexcept override {
    return {low_, high_};
  }
  void pause_reading() override {
    events.push_back("pause_reading");
    reading_ = false;
  }
  void resume_reading() override {
    events.push_back("resume_reading");
    reading_ = true;
  }
  bool is_reading() const noexcept override { return reading_ && !closing_; }
  void set_protocol(std::unique_ptr<strata::BaseProtocol>) override {
    throw std::logic_error("not recorded");
  }
  std::unique_ptr<strata::BaseProtocol> exchange_protocol(
      std::unique_ptr<strata::BaseProtocol>) override {
    throw std::logic_error("not recorded");
  }
  strata::BaseProtocol& get_protocol() const noexcept override { return protocol_; }
  std::any get_extra_info(std::string_view) const override { return {}; }
  strata::EventLoop& get_loop() const noexcept override { return loop_; }

 private:
  strata::EventLoop& loop_;
  strata::Protocol& protocol_;
  std::size_t buffered_ = 0;
  std::size_t high_ = 64 * 1024;
  std::size_t low_ = 16 * 1024;
  bool writing_paused_ = false;
  bool reading_ = true;
  bool closing_ = false;
  bool eof_written_ = false;
};

/// A fake datagram transport recording each sendto() as "<addr> <bytes>".
class RecordingDatagramTransport final : public strata::DatagramTransport {
 public:
  explicit RecordingDatagramTransport(strata::EventLoop& loop) : loop_(loop) {}

  std::vector<std::string> sent;

  void sendto(std::span<const std::byte> data, const strata::SocketAddress& addr) override {
    sent.push_back(addr.to_string() + " " + string_of(data));
  }
  using strata::DatagramTransport::sendto;
  void abort() override { closing_ = true; }
  void close() override { closing_ = true; }
  bool is_closing() const noexcept override { return closing_; }
  std::size_t get_write_buffer_size() const noexcept override { return 0; }
  void set_write_buffer_limits(std::optional<std::size_t>,
                               std::optional<std::size_t>) override {}
  std::pair<std::size_t, std::size_t> get_write_buffer_limits() const noexcept override {
    return {16 * 1024, 64 * 1024};
  }
  void set_protocol(std::unique_ptr<strata::DatagramProtocol>) override {
    throw std::logic_error("not recorded");
  }
  strata::DatagramProtocol& get_protocol() const noexcept override {
    std::terminate();  // not used by these tests
  }
  std::any get_extra_info(std::string_view) const override { return {}; }
  strata::EventLoop& get_loop() const noexcept override { return loop_; }

 private:
  strata::EventLoop& loop_;
  bool closing_ = false;
};

using Events = std::vector<std::string>;

}  // namespace

TEST_CASE("EchoProtocol: writes back each chunk as it arrives, in order",
          "[protocols][echo]") {
  auto loop = strata::new_event_loop();
  EchoProtocol echo;
  RecordingTransport t(*loop, echo);
  echo.connection_made(t);
  CHECK(echo.transport() == &t);
  t.feed("hello");
  t.feed(", ");
  t.feed("world\n");
  CHECK(t.events == Events{"write:hello", "write:, ", "write:world\n"});
  CHECK(t.written == "hello, world\n");
  echo.connection_lost({});
  CHECK(echo.transport() == nullptr);
  loop->close();
}

TEST_CASE("EchoProtocol: at end of file it asks the transport to close after flushing",
          "[protocols][echo]") {
  auto loop = strata::new_event_loop();
  EchoProtocol echo;
  RecordingTransport t(*loop, echo);
  echo.connection_made(t);
  t.feed("last words");
  // false: the transport closes, and close() sends the buffer before ending the connection.
  CHECK_FALSE(echo.eof_received());
  CHECK(t.events == Events{"write:last words"});  // nothing dropped, no abort
  echo.connection_lost({});
  loop->close();
}

TEST_CASE("EchoProtocol: pause_writing pauses reading and resume_writing resumes it",
          "[protocols][echo]") {
  auto loop = strata::new_event_loop();
  EchoProtocol echo;
  RecordingTransport t(*loop, echo);
  t.set_write_buffer_limits(8, 4);
  echo.connection_made(t);
  t.feed("12345678");  // at the mark, not over it
  CHECK(t.is_reading());
  t.feed("9");  // over: pause_writing -> pause_reading
  CHECK_FALSE(t.is_reading());
  t.drain(4);  // 5 left: above low
  CHECK_FALSE(t.is_reading());
  t.drain(1);  // 4: at low -> resume_writing -> resume_reading
  CHECK(t.is_reading());
  CHECK(t.events ==
        Events{"write:12345678", "write:9", "pause_reading", "resume_reading"});
  echo.connection_lost({});
  loop->close();
}

TEST_CASE("EchoProtocol: a peer that never reads holds the buffer to high-water plus one read",
          "[protocols][echo]") {
  auto loop = strata::new_event_loop();
  EchoProtocol echo;
  RecordingTransport t(*loop, echo);
  t.record_data = false;
  echo.connection_made(t);
  const auto [low, high] = t.get_write_buffer_limits();
  (void)low;
  constexpr std::size_t chunk = 256 * 1024;  // the transport's largest read
  std::vector<std::byte> data(chunk, std::byte{'x'});
  std::size_t fed = 0;
  // The transport delivers data only while reading; offer 64 MiB.
  while (fed < (64u << 20) && t.is_reading()) {
    t.feed(data);
    fed += chunk;
  }
  CHECK_FALSE(t.is_reading());
  CHECK(fed < (64u << 20));
  CHECK(t.get_write_buffer_size() <= high + chunk);
  CHECK(t.events == Events{"pause_reading"});
  t.drain(t.get_write_buffer_size());
  CHECK(t.is_reading());
  echo.connection_lost({});
  loop->close();
}

TEST_CASE("EchoDatagramProtocol: sends each datagram back to its sender and counts it",
          "[protocols][echo]") {
  auto loop = strata::new_event_loop();
  EchoDatagramProtocol echo;
  RecordingDatagramTransport t(*loop);
  echo.connection_made(t);
  CHECK(echo.transport() == &t);
  echo.datagram_received(bytes_of("ping"), strata::SocketAddress("127.0.0.1", 4000));
  echo.datagram_received(bytes_of(""), strata::SocketAddress("::1", 4001));
  echo.datagram_received(bytes_of("pong"), strata::SocketAddress("127.0.0.1", 4002));
  CHECK(t.sent == Events{"127.0.0.1:4000 ping", "[::1]:4001 ", "127.0.0.1:4002 pong"});
  CHECK(echo.datagrams() == 3);
  CHECK(echo.bytes() == 8);
  echo.error_received(std::make_error_code(std::errc::connection_refused));
  CHECK(echo.errors() == 1);
  echo.datagram_received(bytes_of("still here"), strata::SocketAddress("127.0.0.1", 4000));
  CHECK(t.sent.size() == 4);
  echo.connection_lost({});
  CHECK(echo.transport() == nullptr);
  loop->close();
}

// ---- End to end, over 127.0.0.1:0 on every backend ------------------------------------------

namespace {

using namespace std::chrono_literals;

/// Byte @p i of the stream the clients send: not periodic in any power of two below 2^16, so
/// that loss, duplication and reordering show.
std::byte pattern_at(std::uint64_t i) {
  return static_cast<std::byte>((i * 131u) ^ (i >> 8) ^ (i >> 16) ^ (i >> 24));
}

/// An EchoProtocol that measures its transport's write buffer after every read: how a test
/// sees the server side from outside the protocol. Each callback goes to the EchoProtocol.
class MeasuredEcho final : public strata::Protocol {
 public:
  struct Stats {
    std::size_t max_write_buffer = 0;  // after each data_received
    std::size_t max_read = 0;          // the largest single data_received
    std::uint64_t bytes = 0;
    int write_pauses = 0;
    int write_resumes = 0;
    strata::Transport* transport = nullptr;  // until connection_lost
    bool lost = false;
    std::error_code lost_error;
  };

  explicit MeasuredEcho(Stats& stats) : stats_(stats) {}

  void connection_made(strata::Transport& transport) override {
    stats_.transport = &transport;
    echo_.connection_made(transport);
  }
  void data_received(std::span<const std::byte> data) override {
    echo_.data_received(data);
    stats_.bytes += data.size();
    stats_.max_read = std::max(stats_.max_read, data.size());
    if (stats_.transport != nullptr) {
      stats_.max_write_buffer =
          std::max(stats_.max_write_buffer, stats_.transport->get_write_buffer_size());
    }
  }
  bool eof_received() override { return echo_.eof_received(); }
  void pause_writing() override {
    ++stats_.write_pauses;
    echo_.pause_writing();
  }
  void resume_writing() override {
    ++stats_.write_resumes;
    echo_.resume_writing();
  }
  void connection_lost(std::error_code ec) override {
    echo_.connection_lost(ec);
    stats_.transport = nullptr;
    stats_.lost = true;
    stats_.lost_error = ec;
  }

 private:
  Stats& stats_;
  EchoProtocol echo_;
};

/// A client that sends @p total bytes of the pattern as fast as its own flow control lets it,
/// and checks every byte that comes back. It starts with reading paused: a peer that does not
/// read, until read_again().
class PumpClient final : public strata::Protocol {
 public:
  PumpClient(std::uint64_t total, bool read_at_first) : total_(total), read_(read_at_first) {
    chunk_.resize(64 * 1024);
  }

  void connection_made(strata::Transport& transport) override {
    transport_ = &transport;
    if (!read_) transport.pause_reading();
    pump();
  }
  void data_received(std::span<const std::byte> data) override {
    for (std::byte b : data) {
      if (b != pattern_at(received_)) {
        mismatch_ = true;
        break;
      }
      ++received_;
    }
    if (received_ >= total_ && all_back_.valid() && !all_back_.done()) all_back_.set_result();
  }
  bool eof_received() override {
    got_eof_ = true;
    return false;
  }
  void pause_writing() override { write_paused_ = true; }
  void resume_writing() override {
    write_paused_ = false;
    pump();
  }
  void connection_lost(std::error_code ec) override {
    transport_ = nullptr;
    lost_error_ = ec;
    if (lost_.valid() && !lost_.done()) lost_.set_result();
    if (all_back_.valid() && !all_back_.done()) {
      all_back_.set_exception(std::runtime_error("connection lost before the echo was complete"));
    }
  }

  void read_again() {
    read_ = true;
    transport_->resume_reading();
  }
  /// Completes once every byte came back.
  strata::Future<void> all_back(strata::EventLoop& loop) {
    all_back_ = loop.create_future<void>();
    if (received_ >= total_) all_back_.set_result();
    return all_back_;
  }
  strata::Future<void> lost(strata::EventLoop& loop) {
    lost_ = loop.create_future<void>();
    if (transport_ == nullptr) lost_.set_result();
    return lost_;
  }

  strata::Transport* transport() const noexcept { return transport_; }
  bool write_paused() const noexcept { return write_paused_; }
  std::uint64_t sent() const noexcept { return sent_; }
  std::uint64_t received() const noexcept { return received_; }
  bool mismatch() const noexcept { return mismatch_; }
  bool got_eof() const noexcept { return got_eof_; }
  std::error_code lost_error() const noexcept { return lost_error_; }

 private:
  void pump() {
    while (transport_ != nullptr && !write_paused_ && sent_ < total_) {
      const std::size_t n = static_cast<std::size_t>(std::min<std::uint64_t>(chunk_.size(), total_ - sent_));
      for (std::size_t i = 0; i < n; ++i) chunk_[i] = pattern_at(sent_ + i);
      sent_ += n;
      transport_->write(std::span<const std::byte>(chunk_.data(), n));  // may pause_writing
    }
  }

  std::uint64_t total_;
  bool read_;
  std::vector<std::byte> chunk_;
  strata::Transport* transport_ = nullptr;
  std::uint64_t sent_ = 0;
  std::uint64_t received_ = 0;
  bool write_paused_ = false;
  bool mismatch_ = false;
  bool got_eof_ = false;
  std::error_code lost_error_;
  strata::Future<void> all_back_;
  strata::Future<void> lost_;
};

std::uint16_t port_of(const strata::Server& server) {
  return server.sockets().front().address.port();
}

}  // namespace

STRATA_LOOP_TEST_CASE("EchoProtocol: a client gets back every byte it sent, then end of file",
                      "[protocols][echo]") {
  strata::testing::TestLoop loop(TestType::kind);
  loop.run([]() -> strata::Coro<void> {
    auto server_factory = [] { return std::make_unique<EchoProtocol>(); };
    strata::Coro<std::unique_ptr<strata::Server>> create =
        strata::create_server(std::move(server_factory), "127.0.0.1", 0);
    std::unique_ptr<strata::Server> server = co_await create;

    const std::uint64_t total = 4u << 20;
    auto client_factory = [total] { return std::make_unique<PumpClient>(total, true); };
    strata::Coro<strata::Connection<PumpClient>> connect =
        strata::create_connection(std::move(client_factory), "127.0.0.1", port_of(*server));
    strata::Connection<PumpClient> c = co_await connect;
    strata::EventLoop& l = strata::get_running_loop();
    strata::Future<void> back = c.protocol->all_back(l);
    co_await back;
    CHECK(c.protocol->received() == total);
    CHECK_FALSE(c.protocol->mismatch());

    // Half-close: the server sends what is left (nothing), then closes.
    strata::Future<void> lost = c.protocol->lost(l);
    c.transport->write_eof();
    co_await lost;
    CHECK(c.protocol->got_eof());
    CHECK_FALSE(c.protocol->lost_error());
    server->close();
    co_await server->wait_closed();
  }(), 30s);
  CHECK(loop.errors().empty());
}

STRATA_LOOP_TEST_CASE(
    "EchoProtocol: a client that sends 64 MiB and never reads leaves the server's buffer at "
    "high-water plus one read, with reading paused",
    "[protocols][echo]") {
  strata::testing::TestLoop loop(TestType::kind);
  loop.run([]() -> strata::Coro<void> {
    MeasuredEcho::Stats stats;
    auto server_factory = [&stats] { return std::make_unique<MeasuredEcho>(stats); };
    strata::Coro<std::unique_ptr<strata::Server>> create =
        strata::create_server(std::move(server_factory), "127.0.0.1", 0);
    std::unique_ptr<strata::Server> server = co_await create;

    const std::uint64_t total = 64u << 20;
    auto client_factory = [total] { return std::make_unique<PumpClient>(total, false); };
    strata::Coro<strata::Connection<PumpClient>> connect =
        strata::create_connection(std::move(client_factory), "127.0.0.1", port_of(*server));
    strata::Connection<PumpClient> c = co_await connect;
    PumpClient& client = *c.protocol;

    // Wait until the flow stalls: the client cannot write, the server stopped reading, and no
    // byte has moved for 20 ms. (On the proactor, the client pauses as soon as its own buffer
    // passes high-water, while its send in flight still feeds the kernel's buffers, which TCP
    // keeps growing for a while: the pause alone does not mean the kernel is full.)
    std::uint64_t last_sent = 0;
    int still = 0;
    for (int i = 0; i < 10000 && still < 20; ++i) {
      const bool stalled =
          client.write_paused() && stats.transport != nullptr && !stats.transport->is_reading();
      still = stalled && client.sent() == last_sent ? still + 1 : 0;
      last_sent = client.sent();
      co_await strata::sleep(1ms);
    }
    REQUIRE(stats.transport != nullptr);
    CHECK(client.write_paused());
    CHECK_FALSE(stats.transport->is_reading());
    CHECK(stats.write_pauses == 1);
    CHECK(client.sent() < total);  // the kernel's buffers hold far less than 64 MiB
    // It stays stalled: give the loop time to move bytes if it were going to.
    const std::uint64_t sent_at_stall = client.sent();
    for (int i = 0; i < 20; ++i) co_await strata::sleep(1ms);
    CHECK(client.sent() == sent_at_stall);
    CHECK_FALSE(stats.transport->is_reading());

    const auto [low, high] = stats.transport->get_write_buffer_limits();
    (void)low;
    INFO("max write buffer " << stats.max_write_buffer << ", high-water " << high
                             << ", largest read " << stats.max_read);
    CHECK(stats.max_read > 0);
    CHECK(stats.max_read <= 256 * 1024);  // one read: a fixed bound, whatever the backend
    CHECK(stats.max_write_buffer <= high + stats.max_read);
    CHECK(stats.transport->get_write_buffer_size() <= high + stats.max_read);

    // Now the client reads: everything flows, and comes back intact.
    strata::EventLoop& l = strata::get_running_loop();
    strata::Future<void> back = client.all_back(l);
    client.read_again();
    co_await back;
    CHECK(client.received() == total);
    CHECK_FALSE(client.mismatch());
    CHECK(stats.bytes == total);
    CHECK(stats.write_resumes >= 1);
    CHECK(stats.max_write_buffer <= high + stats.max_read);  // over the whole run

    strata::Future<void> lost = client.lost(l);
    c.transport->write_eof();
    co_await lost;
    CHECK_FALSE(client.lost_error());
    server->close();
    co_await server->wait_closed();
    CHECK(stats.lost);
    CHECK_FALSE(stats.lost_error);
  }(), 60s);
  CHECK(loop.errors().empty());
}

namespace {

/// Collects the datagrams that come back.
class DatagramCollector final : public strata::DatagramProtocol {
 public:
  void datagram_received(std::span<const std::byte> data, const strata::SocketAddress&) override {
    got.push_back(string_of(data));
    if (waiter.valid() && !waiter.done() && got.size() >= wanted) waiter.set_result();
  }
  std::vector<std::string> got;
  std::size_t wanted = 0;
  strata::Future<void> waiter;
};

}  // namespace

STRATA_LOOP_TEST_CASE("EchoDatagramProtocol: each datagram comes back to its sender",
                      "[protocols][echo]") {
  strata::testing::TestLoop loop(TestType::kind);
  loop.run([]() -> strata::Coro<void> {
    strata::DatagramOptions server_options;
    server_options.local_addr = strata::DatagramAddress("127.0.0.1", 0);
    auto server_factory = [] { return std::make_unique<EchoDatagramProtocol>(); };
    strata::Coro<strata::DatagramConnection<EchoDatagramProtocol>> open_server =
        strata::create_datagram_endpoint(std::move(server_factory), std::move(server_options));
    strata::DatagramConnection<EchoDatagramProtocol> server = co_await open_server;
    auto address = server.transport->get_extra_info_as<strata::SocketAddress>("sockname");
    REQUIRE(address);

    strata::DatagramOptions client_options;
    client_options.remote_addr = strata::DatagramAddress(*address);
    auto client_factory = [] { return std::make_unique<DatagramCollector>(); };
    strata::Coro<strata::DatagramConnection<DatagramCollector>> open_client =
        strata::create_datagram_endpoint(std::move(client_factory), std::move(client_options));
    strata::DatagramConnection<DatagramCollector> client = co_await open_client;

    client.protocol->wanted = 3;
    client.protocol->waiter = strata::get_running_loop().create_future<void>();
    client.transport->sendto(std::string_view("one"));
    client.transport->sendto(std::string_view(""));
    client.transport->sendto(std::string(1000, 'z'));
    strata::Future<void> waiter = client.protocol->waiter;
    co_await waiter;
    CHECK(client.protocol->got == std::vector<std::string>{"one", "", std::string(1000, 'z')});
    CHECK(server.protocol->datagrams() == 3);
    CHECK(server.protocol->bytes() == 1003);
    CHECK(server.protocol->errors() == 0);
    client.protocol->waiter = {};
    client.transport->close();
    server.transport->close();
    co_await strata::sleep(0s);
  }(), 10s);
  CHECK(loop.errors().empty());
}
