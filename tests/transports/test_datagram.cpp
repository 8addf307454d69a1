#include <strata/transports/datagram.hpp>

#include <catch2/catch.hpp>

#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include <strata/core/coro.hpp>
#include <strata/core/errors.hpp>
#include <strata/core/event.hpp>
#include <strata/core/event_loop.hpp>
#include <strata/core/socket_address.hpp>
#include <strata/core/task.hpp>
#include <strata/transports/protocol.hpp>
#include <strata/transports/transport.hpp>

#include "loop_test.hpp"

using strata::Coro;
using strata::DatagramConnection;
using strata::DatagramOptions;
using strata::DatagramProtocol;
using strata::DatagramTransport;
using strata::SocketAddress;
using strata::testing::TestLoop;

namespace {

// ---- Helpers ---------------------------------------------------------------------------------

using Bytes = std::vector<std::byte>;

Bytes bytes_of(std::string_view text) {
  const auto* p = reinterpret_cast<const std::byte*>(text.data());
  return Bytes(p, p + text.size());
}

/// @p size bytes that differ with @p seed and with the position (so a reordering, a
/// truncation or a mix-up of two datagrams shows).
Bytes pattern(std::size_t seed, std::size_t size) {
  Bytes out(size);
  for (std::size_t i = 0; i < size; ++i) {
    out[i] = std::byte(static_cast<unsigned char>(seed * 131 + i * 7 + (i >> 8)));
  }
  return out;
}

/// What a protocol saw, owned by the test so that it outlives the protocol (which the
/// transport destroys after connection_lost()).
struct Record {
  struct Datagram {
    Bytes data;
    SocketAddress from;
  };

  std::vector<std::string> events;  ///< "made", "datagram", "error", "lost", in order
  std::vector<std::string> flow;    ///< "pause", "resume", in order
  std::vector<Datagram> datagrams;
  std::vector<std::error_code> errors;
  std::optional<std::error_code> lost;
  int lost_count = 0;
  DatagramTransport* transport = nullptr;
  strata::Event changed;  ///< set on every callback

  void note(std::string event) {
    events.push_back(std::move(event));
    changed.set();
  }
};

/// Whether @p events is a whole life: `made (datagram | error)* lost`.
bool follows_grammar(const std::vector<std::string>& events) {
  if (events.size() < 2 || events.front() != "made" || events.back() != "lost") return false;
  for (std::size_t i = 1; i + 1 < events.size(); ++i) {
    if (events[i] != "datagram" && events[i] != "error") return false;
  }
  return true;
}

std::string describe(const std::vector<std::string>& events) {
  std::string out;
  for (const std::string& e : events) out += e + " ";
  return out;
}

/// Records every callback; optionally echoes, closes or throws.
class Recorder : public DatagramProtocol {
 public:
  enum class Mode { record, echo, close_on_datagram, throw_on_datagram, throw_on_made };

  explicit Recorder(Record& record, Mode mode = Mode::record) : r_(record), mode_(mode) {}

  void connection_made(DatagramTransport& transport) override {
    r_.transport = &transport;
    r_.note("made");
    if (mode_ == Mode::throw_on_made) throw std::runtime_error("connection_made failed");
  }
  void datagram_received(std::span<const std::byte> data, const SocketAddress& addr) override {
    r_.datagrams.push_back({Bytes(data.begin(), data.end()), addr});
    r_.note("datagram");
    switch (mode_) {
      case Mode::echo: r_.transport->sendto(data, addr); break;
      case Mode::close_on_datagram: r_.transport->close(); break;
      case Mode::throw_on_datagram: throw std::runtime_error("boom");
      default: break;
    }
  }
  void error_received(std::error_code ec) override {
    r_.errors.push_back(ec);
    r_.note("error");
  }
  void connection_lost(std::error_code ec) override {
    r_.lost = ec;
    ++r_.lost_count;
    r_.note("lost");
  }
  void pause_writing() override {
    r_.flow.push_back("pause");
    r_.changed.set();
  }
  void resume_writing() override {
    r_.flow.push_back("resume");
    r_.changed.set();
  }

 private:
  Record& r_;
  Mode mode_;
};

/// Waits (without sleeping) until @p done() holds, re-checking after each callback of @p r.
template <class Pred>
Coro<void> wait_until(Record& r, Pred done) {
  while (!done()) {
    r.changed.clear();
    co_await r.changed.wait();
  }
}

Coro<void> wait_lost(Record& r) {
  Coro<void> wait = wait_until(r, [&r] { return r.lost.has_value(); });
  co_await wait;
}

/// An endpoint whose protocol is a Recorder writing to @p record.
Coro<DatagramConnection<Recorder>> open_endpoint(Record& record, DatagramOptions options,
                                                 Recorder::Mode mode = Recorder::Mode::record) {
  auto factory = [&record, mode] { return std::make_unique<Recorder>(record, mode); };
  Coro<DatagramConnection<Recorder>> open =
      strata::create_datagram_endpoint(factory, std::move(options));
  DatagramConnection<Recorder> connection = co_await open;
  co_return connection;
}

DatagramOptions local(std::string host, std::uint16_t port) {
  DatagramOptions options;
  options.local_addr = strata::DatagramAddress(std::move(host), port);
  return options;
}

DatagramOptions remote(const SocketAddress& address) {
  DatagramOptions options;
  options.remote_addr = address;
  return options;
}

SocketAddress sockname_of(const DatagramTransport& transport) {
  std::optional<SocketAddress> address = transport.get_extra_info_as<SocketAddress>("sockname");
  REQUIRE(address);
  return *address;
}

/// A 127.0.0.1 UDP port nothing listens on: bound, read, then closed again.
std::uint16_t closed_udp_port() {
  const int fd = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  REQUIRE(fd >= 0);
  SocketAddress any("127.0.0.1", 0);
  REQUIRE(::bind(fd, any.data(), any.size()) == 0);
  SocketAddress bound;
  socklen_t len = SocketAddress::capacity();
  REQUIRE(::getsockname(fd, bound.mutable_data(), &len) == 0);
  bound.set_size(len);
  ::close(fd);
  return bound.port();
}

/// The number of open descriptors of this process.
int count_fds() {
  int n = 0;
  for ([[maybe_unused]] const auto& entry : std::filesystem::directory_iterator("/proc/self/fd")) {
    ++n;
  }
  return n;
}

bool fd_is_open(int fd) { return ::fcntl(fd, F_GETFD) != -1 || errno != EBADF; }

/// A temporary directory for Unix socket paths, removed with what it holds.
class TempDir {
 public:
  TempDir() {
    std::string pattern = (std::filesystem::temp_directory_path() / "strata-dgram-XXXXXX").string();
    REQUIRE(::mkdtemp(pattern.data()) != nullptr);
    path_ = pattern;
  }
  ~TempDir() {
    std::error_code ignored;
    std::filesystem::remove_all(path_, ignored);
  }
  std::string operator/(std::string_view name) const { return (path_ / name).string(); }

 private:
  std::filesystem::path path_;
};

/// A plain non-blocking Unix datagram socket bound to a path, read only when the test says:
/// its queue fills, and a transport sending to it has to buffer.
class RawUnixReceiver {
 public:
  explicit RawUnixReceiver(const std::string& path) : address_(SocketAddress::unix_path(path)) {
    fd_ = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    REQUIRE(fd_ >= 0);
    REQUIRE(::bind(fd_, address_.data(), address_.size()) == 0);
  }
  ~RawUnixReceiver() { ::close(fd_); }

  const SocketAddress& address() const noexcept { return address_; }

  /// Reads every queued datagram.
  void drain() {
    std::vector<std::byte> buffer(256 * 1024);
    for (;;) {
      const ssize_t n = ::recv(fd_, buffer.data(), buffer.size(), 0);
      if (n < 0) break;
      received.emplace_back(buffer.begin(), buffer.begin() + n);
    }
  }

  /// Drains on every readiness event of @p loop until stop(); sets @p changed each time.
  void start(strata::EventLoop& loop, strata::Event& changed) {
    loop_ = &loop;
    loop.add_reader(fd_, [this, &changed] {
      drain();
      changed.set();
    });
  }
  void stop() {
    if (loop_) loop_->remove_reader(fd_);
    loop_ = nullptr;
  }

  std::vector<Bytes> received;

 private:
  SocketAddress address_;
  int fd_ = -1;
  strata::EventLoop* loop_ = nullptr;
};

/// A Unix datagram endpoint connected to @p receiver: once @p receiver's queue is full (a few
/// datagrams), what it sends waits in the transport's buffer.
Coro<DatagramConnection<Recorder>> open_sender(Record& record, const RawUnixReceiver& receiver) {
  DatagramOptions options;
  options.family = AF_UNIX;
  options.remote_addr = receiver.address();
  Coro<DatagramConnection<Recorder>> open = open_endpoint(record, std::move(options));
  DatagramConnection<Recorder> connection = co_await open;
  co_return connection;
}

}  // namespace

// ---- Round trips -----------------------------------------------------------------------------

STRATA_LOOP_TEST_CASE("create_datagram_endpoint: a datagram sent to an echoing endpoint comes back",
                      "[transports][datagram]") {
  Record server;
  Record client;
  Record other;
  TestLoop loop(TestType::kind);
  loop.run([&]() -> Coro<void> {
    Coro<DatagramConnection<Recorder>> open_server =
        open_endpoint(server, local("127.0.0.1", 0), Recorder::Mode::echo);
    DatagramConnection<Recorder> s = co_await open_server;
    const SocketAddress server_addr = sockname_of(*s.transport);
    REQUIRE(server_addr.port() != 0);

    // A connected client: sendto() without an address.
    Coro<DatagramConnection<Recorder>> open_client = open_endpoint(client, remote(server_addr));
    DatagramConnection<Recorder> c = co_await open_client;
    c.transport->sendto("hello");
    Coro<void> echoed = wait_until(client, [&] { return client.datagrams.size() == 1; });
    co_await echoed;
    CHECK(client.datagrams[0].data == bytes_of("hello"));
    CHECK(client.datagrams[0].from == server_addr);
    REQUIRE(server.datagrams.size() == 1);
    CHECK(server.datagrams[0].from == sockname_of(*c.transport));

    // An unconnected one: sendto() with the address.
    Coro<DatagramConnection<Recorder>> open_other = open_endpoint(other, local("127.0.0.1", 0));
    DatagramConnection<Recorder> o = co_await open_other;
    o.transport->sendto("world", server_addr);
    Coro<void> echoed2 = wait_until(other, [&] { return other.datagrams.size() == 1; });
    co_await echoed2;
    CHECK(other.datagrams[0].data == bytes_of("world"));
    CHECK(other.datagrams[0].from == server_addr);

    s.transport->close();
    c.transport->close();
    o.transport->close();
    co_await wait_lost(server);
    co_await wait_lost(client);
    co_await wait_lost(other);
  }());
  for (Record* r : {&server, &client, &other}) {
    INFO(describe(r->events));
    CHECK(follows_grammar(r->events));
    CHECK(r->lost_count == 1);
    CHECK(*r->lost == std::error_code());
    CHECK(r->errors.empty());
  }
  CHECK(loop.errors().empty());
}

STRATA_LOOP_TEST_CASE("DatagramTransport: datagrams of 1 B to 60 KiB arrive whole and in order",
                      "[transports][datagram]") {
  Record server;
  Record client;
  TestLoop loop(TestType::kind);
  std::vector<std::size_t> sizes = {1,    2,    3,    7,    8,     64,    100,   255,   256,
                                    512,  1000, 1024, 1400, 1472,  1473,  1500,  2048,  4096,
                                    8192, 9000, 16384, 32768, 50000, 61439, 61440};
  for (std::size_t i = 0; i < 200; ++i) sizes.push_back(1 + (i * 7919 * 31) % 61440);
  loop.run([&]() -> Coro<void> {
    Coro<DatagramConnection<Recorder>> open_server =
        open_endpoint(server, local("127.0.0.1", 0), Recorder::Mode::echo);
    DatagramConnection<Recorder> s = co_await open_server;
    Coro<DatagramConnection<Recorder>> open_client =
        open_endpoint(client, remote(sockname_of(*s.transport)));
    DatagramConnection<Recorder> c = co_await open_client;
    // One at a time: UDP drops what overflows a receive queue, and a few 60 KiB datagrams
    // would fill the default one.
    for (std::size_t i = 0; i < sizes.size(); ++i) {
      const Bytes sent = pattern(i, sizes[i]);
      c.transport->sendto(sent);
      Coro<void> echoed = wait_until(client, [&] { return client.datagrams.size() == i + 1; });
      co_await echoed;
      INFO("datagram " << i << " of " << sizes[i] << " bytes");
      REQUIRE(client.datagrams[i].data == sent);
    }
    c.transport->close();
    s.transport->close();
    co_await wait_lost(client);
    co_await wait_lost(server);
  }(), std::chrono::seconds(30));
  CHECK(server.datagrams.size() == sizes.size());
  CHECK(follows_grammar(server.events));
  CHECK(follows_grammar(client.events));
  CHECK(client.errors.empty());
}

STRATA_LOOP_TEST_CASE(
    "DatagramTransport: a burst of datagrams is read in full, in order, over several events",
    "[transports][datagram]") {
  Record server;
  Record client;
  TestLoop loop(TestType::kind);
  constexpr std::size_t count = 100;  // more than one readiness event reads
  loop.run([&]() -> Coro<void> {
    Coro<DatagramConnection<Recorder>> open_server = open_endpoint(server, local("127.0.0.1", 0));
    DatagramConnection<Recorder> s = co_await open_server;
    const SocketAddress to = sockname_of(*s.transport);
    Coro<DatagramConnection<Recorder>> open_client = open_endpoint(client, local("127.0.0.1", 0));
    DatagramConnection<Recorder> c = co_await open_client;
    for (std::size_t i = 0; i < count; ++i) c.transport->sendto(pattern(i, 100), to);
    CHECK(c.transport->get_write_buffer_size() == 0);  // all sent at once
    Coro<void> all = wait_until(server, [&] { return server.datagrams.size() == count; });
    co_await all;
    for (std::size_t i = 0; i < count; ++i) {
      INFO("datagram " << i);
      CHECK(server.datagrams[i].data == pattern(i, 100));
      CHECK(server.datagrams[i].from == sockname_of(*c.transport));
    }
    // Empty datagrams are datagrams too.
    c.transport->sendto(std::span<const std::byte>(), to);
    Coro<void> empty = wait_until(server, [&] { return server.datagrams.size() == count + 1; });
    co_await empty;
    CHECK(server.datagrams.back().data.empty());
    s.transport->close();
    c.transport->close();
    co_await wait_lost(server);
    co_await wait_lost(client);
  }());
  CHECK(follows_grammar(server.events));
}

STRATA_LOOP_TEST_CASE(
    "create_datagram_endpoint: Unix datagram endpoints exchange datagrams by path",
    "[transports][datagram]") {
  TempDir dir;
  Record server;
  Record client;
  Record again;
  Record third;
  TestLoop loop(TestType::kind);
  const std::string server_path = dir / "server.sock";
  const std::string client_path = dir / "client.sock";
  loop.run([&]() -> Coro<void> {
    DatagramOptions server_options;
    server_options.family = AF_UNIX;
    server_options.local_addr = server_path;
    Coro<DatagramConnection<Recorder>> open_server =
        open_endpoint(server, std::move(server_options), Recorder::Mode::echo);
    DatagramConnection<Recorder> s = co_await open_server;
    CHECK(sockname_of(*s.transport) == SocketAddress::unix_path(server_path));

    DatagramOptions client_options;
    client_options.family = AF_UNIX;
    client_options.local_addr = client_path;
    client_options.remote_addr = server_path;
    Coro<DatagramConnection<Recorder>> open_client =
        open_endpoint(client, std::move(client_options));
    DatagramConnection<Recorder> c = co_await open_client;
    CHECK(c.transport->get_extra_info_as<SocketAddress>("peername") ==
          SocketAddress::unix_path(server_path));
    c.transport->sendto("over a path");
    Coro<void> echoed = wait_until(client, [&] { return client.datagrams.size() == 1; });
    co_await echoed;
    CHECK(client.datagrams[0].data == bytes_of("over a path"));
    CHECK(client.datagrams[0].from == SocketAddress::unix_path(server_path));
    REQUIRE(server.datagrams.size() == 1);
    CHECK(server.datagrams[0].from == SocketAddress::unix_path(client_path));

    s.transport->close();
    co_await wait_lost(server);
    // The peer is gone: the send fails, reported to error_received() in a later iteration.
    c.transport->sendto("anyone?");
    CHECK(client.errors.empty());
    Coro<void> refused = wait_until(client, [&] { return !client.errors.empty(); });
    co_await refused;
    CHECK(client.errors[0] == std::errc::connection_refused);
    c.transport->close();
    co_await wait_lost(client);

    // The socket file stays behind, as asyncio leaves it; binding the path again replaces it.
    struct stat st {};
    REQUIRE(::lstat(server_path.c_str(), &st) == 0);
    CHECK(S_ISSOCK(st.st_mode));
    DatagramOptions again_options;
    again_options.family = AF_UNIX;
    again_options.local_addr = server_path;
    Coro<DatagramConnection<Recorder>> open_again =
        open_endpoint(again, std::move(again_options), Recorder::Mode::echo);
    DatagramConnection<Recorder> a = co_await open_again;
    // An unconnected endpoint bound to a path sends to it by address.
    DatagramOptions third_options;
    third_options.local_addr = SocketAddress::unix_path(dir / "third.sock");  // needs no family
    Coro<DatagramConnection<Recorder>> open_third = open_endpoint(third, std::move(third_options));
    DatagramConnection<Recorder> t = co_await open_third;
    t.transport->sendto("again", SocketAddress::unix_path(server_path));
    Coro<void> echoed2 = wait_until(third, [&] { return third.datagrams.size() == 1; });
    co_await echoed2;
    CHECK(third.datagrams[0].data == bytes_of("again"));
    CHECK(third.datagrams[0].from == SocketAddress::unix_path(server_path));

    a.transport->close();
    t.transport->close();
    co_await wait_lost(again);
    co_await wait_lost(third);
  }());
  CHECK(follows_grammar(server.events));
  CHECK(follows_grammar(client.events));
  CHECK(follows_grammar(again.events));
  CHECK(follows_grammar(third.events));
}

// ---- Addresses and options -------------------------------------------------------------------

STRATA_LOOP_TEST_CASE(
    "DatagramTransport: a connected endpoint's sendto takes no address or the peer's, no other",
    "[transports][datagram]") {
  Record server;
  Record client;
  TestLoop loop(TestType::kind);
  loop.run([&]() -> Coro<void> {
    Coro<DatagramConnection<Recorder>> open_server = open_endpoint(server, local("127.0.0.1", 0));
    DatagramConnection<Recorder> s = co_await open_server;
    const SocketAddress peer = sockname_of(*s.transport);
    Coro<DatagramConnection<Recorder>> open_client = open_endpoint(client, remote(peer));
    DatagramConnection<Recorder> c = co_await open_client;

    const SocketAddress elsewhere("127.0.0.1", static_cast<std::uint16_t>(peer.port() + 1));
    CHECK_THROWS_AS(c.transport->sendto("x", elsewhere), std::invalid_argument);
    CHECK_THROWS_WITH(c.transport->sendto("x", elsewhere),
                      Catch::Contains(peer.to_string()) && Catch::Contains(elsewhere.to_string()));
    c.transport->sendto("first");
    c.transport->sendto("second", peer);
    Coro<void> both = wait_until(server, [&] { return server.datagrams.size() == 2; });
    co_await both;
    CHECK(server.datagrams[0].data == bytes_of("first"));
    CHECK(server.datagrams[1].data == bytes_of("second"));
    s.transport->close();
    c.transport->close();
    co_await wait_lost(server);
    co_await wait_lost(client);
  }());
  CHECK(server.datagrams.size() == 2);  // the refused sends sent nothing
}

STRATA_LOOP_TEST_CASE(
    "DatagramTransport: sendto without an address on an unconnected endpoint throws",
    "[transports][datagram]") {
  Record record;
  TestLoop loop(TestType::kind);
  loop.run([&]() -> Coro<void> {
    Coro<DatagramConnection<Recorder>> open = open_endpoint(record, local("127.0.0.1", 0));
    DatagramConnection<Recorder> e = co_await open;
    CHECK_THROWS_AS(e.transport->sendto("nowhere"), std::invalid_argument);
    CHECK_THROWS_WITH(e.transport->sendto("nowhere"), Catch::Contains("not connected"));
    CHECK_FALSE(e.transport->is_closing());
    e.transport->close();
    co_await wait_lost(record);
  }());
  CHECK(record.events == std::vector<std::string>{"made", "lost"});
}

STRATA_LOOP_TEST_CASE(
    "DatagramTransport: ICMP port unreachable on a connected endpoint reaches error_received",
    "[transports][datagram]") {
  Record record;
  TestLoop loop(TestType::kind);
  loop.run([&]() -> Coro<void> {
    const std::uint16_t port = closed_udp_port();
    Coro<DatagramConnection<Recorder>> open =
        open_endpoint(record, remote(SocketAddress("127.0.0.1", port)));
    DatagramConnection<Recorder> e = co_await open;
    e.transport->sendto("anyone there?");
    Coro<void> refused = wait_until(record, [&] { return !record.errors.empty(); });
    co_await refused;
    CHECK(record.errors[0] == std::errc::connection_refused);
    // Not fatal: the endpoint stays open and usable.
    CHECK_FALSE(e.transport->is_closing());
    CHECK_FALSE(record.lost);
    e.transport->sendto("still here");
    e.transport->close();
    co_await wait_lost(record);
  }());
  INFO(describe(record.events));
  CHECK(follows_grammar(record.events));
  CHECK(*record.lost == std::error_code());
  CHECK(loop.errors().empty());
}

STRATA_LOOP_TEST_CASE("create_datagram_endpoint: reuse_port lets two endpoints bind one port",
                      "[transports][datagram]") {
  Record first;
  Record second;
  TestLoop loop(TestType::kind);
  loop.run([&]() -> Coro<void> {
    DatagramOptions options = local("127.0.0.1", 0);
    options.reuse_port = true;
    Coro<DatagramConnection<Recorder>> open_first = open_endpoint(first, options);
    DatagramConnection<Recorder> a = co_await open_first;
    const std::uint16_t port = sockname_of(*a.transport).port();

    DatagramOptions same = local("127.0.0.1", port);
    same.reuse_port = true;
    Coro<DatagramConnection<Recorder>> open_second = open_endpoint(second, same);
    DatagramConnection<Recorder> b = co_await open_second;
    CHECK(sockname_of(*b.transport).port() == port);

    // Without the option the port is taken, and the error names the call and the address.
    Record third;
    std::optional<std::system_error> error;
    try {
      Coro<DatagramConnection<Recorder>> open_third =
          open_endpoint(third, local("127.0.0.1", port));
      co_await open_third;
    } catch (const std::system_error& e) {
      error = e;
    }
    REQUIRE(error);
    CHECK(error->code() == std::errc::address_in_use);
    CHECK(std::string(error->what()) ==
          "bind 127.0.0.1:" + std::to_string(port) + ": " + error->code().message());
    CHECK(third.events.empty());  // no protocol was made

    a.transport->close();
    b.transport->close();
    co_await wait_lost(first);
    co_await wait_lost(second);
  }());
}

STRATA_LOOP_TEST_CASE("create_datagram_endpoint: allow_broadcast sets SO_BROADCAST",
                      "[transports][datagram]") {
  Record plain;
  Record broadcast;
  TestLoop loop(TestType::kind);
  loop.run([&]() -> Coro<void> {
    auto so_broadcast = [](const DatagramTransport& t) {
      std::optional<int> fd = t.get_extra_info_as<int>("socket");
      REQUIRE(fd);
      int value = -1;
      socklen_t len = sizeof value;
      REQUIRE(::getsockopt(*fd, SOL_SOCKET, SO_BROADCAST, &value, &len) == 0);
      return value;
    };
    Coro<DatagramConnection<Recorder>> open_plain = open_endpoint(plain, local("127.0.0.1", 0));
    DatagramConnection<Recorder> p = co_await open_plain;
    CHECK(so_broadcast(*p.transport) == 0);

    DatagramOptions options;
    options.family = AF_INET;  // no address: an unbound socket of that family
    options.allow_broadcast = true;
    Coro<DatagramConnection<Recorder>> open_broadcast = open_endpoint(broadcast, options);
    DatagramConnection<Recorder> b = co_await open_broadcast;
    CHECK(so_broadcast(*b.transport) == 1);

    p.transport->close();
    b.transport->close();
    co_await wait_lost(plain);
    co_await wait_lost(broadcast);
  }());
}

STRATA_LOOP_TEST_CASE("DatagramTransport: get_extra_info reports peername, sockname and socket",
                      "[transports][datagram]") {
  Record server;
  Record client;
  TestLoop loop(TestType::kind);
  loop.run([&]() -> Coro<void> {
    Coro<DatagramConnection<Recorder>> open_server = open_endpoint(server, local("127.0.0.1", 0));
    DatagramConnection<Recorder> s = co_await open_server;
    const SocketAddress server_addr = sockname_of(*s.transport);
    CHECK(server_addr.host() == "127.0.0.1");
    CHECK(server_addr.port() != 0);
    CHECK_FALSE(s.transport->get_extra_info("peername").has_value());  // not connected
    CHECK_FALSE(s.transport->get_extra_info("no such thing").has_value());

    std::optional<int> fd = s.transport->get_extra_info_as<int>("socket");
    REQUIRE(fd);
    SocketAddress actual;
    socklen_t len = SocketAddress::capacity();
    REQUIRE(::getsockname(*fd, actual.mutable_data(), &len) == 0);
    actual.set_size(len);
    CHECK(actual == server_addr);
    int type = 0;
    socklen_t type_len = sizeof type;
    REQUIRE(::getsockopt(*fd, SOL_SOCKET, SO_TYPE, &type, &type_len) == 0);
    CHECK(type == SOCK_DGRAM);
    CHECK((::fcntl(*fd, F_GETFL) & O_NONBLOCK) != 0);
    CHECK((::fcntl(*fd, F_GETFD) & FD_CLOEXEC) != 0);

    // A host and port to resolve, or a SocketAddress as is.
    DatagramOptions options;
    options.local_addr = strata::DatagramAddress("127.0.0.1", 0);
    options.remote_addr = server_addr;
    Coro<DatagramConnection<Recorder>> open_client = open_endpoint(client, std::move(options));
    DatagramConnection<Recorder> c = co_await open_client;
    CHECK(c.transport->get_extra_info_as<SocketAddress>("peername") == server_addr);
    CHECK(sockname_of(*c.transport).host() == "127.0.0.1");
    CHECK(&c.transport->get_loop() == &loop.get());
    CHECK(&c.transport->get_protocol() == c.protocol);

    s.transport->close();
    c.transport->close();
    co_await wait_lost(server);
    co_await wait_lost(client);
  }());
}

STRATA_LOOP_TEST_CASE("create_datagram_endpoint: contradictory options throw invalid_argument",
                      "[transports][datagram]") {
  Record record;
  TestLoop loop(TestType::kind);
  loop.run([&]() -> Coro<void> {
    auto refused = [&](DatagramOptions options) -> Coro<std::string> {
      try {
        Coro<DatagramConnection<Recorder>> open = open_endpoint(record, std::move(options));
        co_await open;
      } catch (const std::invalid_argument& e) {
        co_return e.what();
      }
      co_return "";
    };
    DatagramOptions nothing;  // no address, no family
    Coro<std::string> a = refused(std::move(nothing));
    const std::string message_a = co_await a;
    CHECK_THAT(message_a, Catch::Contains("family"));

    DatagramOptions path_with_inet;
    path_with_inet.family = AF_INET;
    path_with_inet.local_addr = "/tmp/x.sock";
    Coro<std::string> b = refused(std::move(path_with_inet));
    const std::string message_b = co_await b;
    CHECK_THAT(message_b, Catch::Contains("AF_UNIX"));

    DatagramOptions path_without_family;  // a bare string could be a host name: say AF_UNIX
    path_without_family.local_addr = "localhost";
    Coro<std::string> e = refused(std::move(path_without_family));
    const std::string message_e = co_await e;
    CHECK_THAT(message_e, Catch::Contains("AF_UNIX") && Catch::Contains("localhost"));

    DatagramOptions host_with_unix = local("127.0.0.1", 0);
    host_with_unix.family = AF_UNIX;
    Coro<std::string> c = refused(std::move(host_with_unix));
    const std::string message_c = co_await c;
    CHECK_THAT(message_c, Catch::Contains("AF_UNIX"));

    DatagramOptions wrong_family;
    wrong_family.family = AF_INET6;
    wrong_family.remote_addr = SocketAddress("127.0.0.1", 9);
    Coro<std::string> d = refused(std::move(wrong_family));
    const std::string message_d = co_await d;
    CHECK_THAT(message_d, Catch::Contains("127.0.0.1:9"));
  }());
  CHECK(record.events.empty());
}

// ---- Closing ---------------------------------------------------------------------------------

STRATA_LOOP_TEST_CASE(
    "DatagramTransport: close sends the buffered datagrams, then connection_lost once",
    "[transports][datagram]") {
  TempDir dir;
  RawUnixReceiver receiver(dir / "receiver.sock");
  Record record;
  TestLoop loop(TestType::kind);
  constexpr std::size_t count = 64;
  constexpr std::size_t size = 4096;
  loop.run([&]() -> Coro<void> {
    Coro<DatagramConnection<Recorder>> open = open_sender(record, receiver);
    DatagramConnection<Recorder> e = co_await open;
    for (std::size_t i = 0; i < count; ++i) e.transport->sendto(pattern(i, size));
    // The receiver's queue is full: the rest waits in the transport.
    const std::size_t buffered = e.transport->get_write_buffer_size();
    REQUIRE(buffered > 0);
    CHECK(buffered % size == 0);
    e.transport->close();
    CHECK(e.transport->is_closing());
    e.transport->sendto(pattern(999, size));  // after close(): dropped
    CHECK(e.transport->get_write_buffer_size() == buffered);
    e.transport->close();  // idempotent
    receiver.start(loop.get(), record.changed);
    co_await wait_lost(record);
    receiver.stop();
    receiver.drain();
  }());
  REQUIRE(receiver.received.size() == count);
  for (std::size_t i = 0; i < count; ++i) {
    INFO("datagram " << i);
    CHECK(receiver.received[i] == pattern(i, size));
  }
  CHECK(record.events == std::vector<std::string>{"made", "lost"});
  CHECK(record.lost_count == 1);
  CHECK(*record.lost == std::error_code());
  CHECK(loop.errors().empty());
}

STRATA_LOOP_TEST_CASE(
    "DatagramTransport: the write buffer's water marks drive pause_writing and resume_writing",
    "[transports][datagram]") {
  TempDir dir;
  RawUnixReceiver receiver(dir / "receiver.sock");
  Record record;
  TestLoop loop(TestType::kind);
  loop.run([&]() -> Coro<void> {
    Coro<DatagramConnection<Recorder>> open = open_sender(record, receiver);
    DatagramConnection<Recorder> e = co_await open;
    using Limits = std::pair<std::size_t, std::size_t>;
    CHECK(e.transport->get_write_buffer_limits() == Limits(16 * 1024, 64 * 1024));
    CHECK_THROWS_AS(e.transport->set_write_buffer_limits(1000, 5000), std::invalid_argument);
    e.transport->set_write_buffer_limits(8192);
    CHECK(e.transport->get_write_buffer_limits() == Limits(2048, 8192));

    std::size_t sent = 0;
    while (record.flow.empty() && sent < 1000) e.transport->sendto(pattern(sent++, 1024));
    REQUIRE(record.flow == std::vector<std::string>{"pause"});  // before sendto() returned
    CHECK(e.transport->get_write_buffer_size() > 8192);
    CHECK(e.transport->get_write_buffer_size() <= 8192 + 1024);

    receiver.start(loop.get(), record.changed);
    Coro<void> resumed = wait_until(record, [&] { return record.flow.size() == 2; });
    co_await resumed;
    CHECK(record.flow == std::vector<std::string>{"pause", "resume"});
    CHECK(e.transport->get_write_buffer_size() <= 2048);
    e.transport->close();
    co_await wait_lost(record);
    receiver.stop();
    receiver.drain();
    REQUIRE(receiver.received.size() == sent);
    for (std::size_t i = 0; i < sent; ++i) CHECK(receiver.received[i] == pattern(i, 1024));
  }());
  CHECK(follows_grammar(record.events));
}

STRATA_LOOP_TEST_CASE(
    "DatagramTransport: abort drops the buffer and reports operation_canceled",
    "[transports][datagram]") {
  TempDir dir;
  RawUnixReceiver receiver(dir / "receiver.sock");
  Record record;
  TestLoop loop(TestType::kind);
  constexpr std::size_t count = 64;
  constexpr std::size_t size = 4096;
  std::size_t buffered = 0;
  loop.run([&]() -> Coro<void> {
    Coro<DatagramConnection<Recorder>> open = open_sender(record, receiver);
    DatagramConnection<Recorder> e = co_await open;
    for (std::size_t i = 0; i < count; ++i) e.transport->sendto(pattern(i, size));
    buffered = e.transport->get_write_buffer_size() / size;
    REQUIRE(buffered > 0);
    e.transport->abort();
    CHECK(e.transport->is_closing());
    CHECK(e.transport->get_write_buffer_size() == 0);
    CHECK_FALSE(record.lost);  // in a later iteration, not inside abort()
    e.transport->abort();      // idempotent
    e.transport->close();      // and close() after it changes nothing
    co_await wait_lost(record);
  }());
  receiver.drain();
  REQUIRE(receiver.received.size() == count - buffered);
  for (std::size_t i = 0; i < receiver.received.size(); ++i) {
    CHECK(receiver.received[i] == pattern(i, size));
  }
  CHECK(record.events == std::vector<std::string>{"made", "lost"});
  CHECK(*record.lost == std::errc::operation_canceled);
}

STRATA_LOOP_TEST_CASE("DatagramTransport: close from inside datagram_received ends delivery",
                      "[transports][datagram]") {
  Record server;
  Record client;
  TestLoop loop(TestType::kind);
  loop.run([&]() -> Coro<void> {
    Coro<DatagramConnection<Recorder>> open_server =
        open_endpoint(server, local("127.0.0.1", 0), Recorder::Mode::close_on_datagram);
    DatagramConnection<Recorder> s = co_await open_server;
    Coro<DatagramConnection<Recorder>> open_client =
        open_endpoint(client, remote(sockname_of(*s.transport)));
    DatagramConnection<Recorder> c = co_await open_client;
    for (int i = 0; i < 3; ++i) c.transport->sendto("one of three");  // all queued at once
    co_await wait_lost(server);
    c.transport->close();
    co_await wait_lost(client);
  }());
  CHECK(server.events == std::vector<std::string>{"made", "datagram", "lost"});
  CHECK(*server.lost == std::error_code());
}

STRATA_LOOP_TEST_CASE(
    "DatagramTransport: closing the loop reports loop_closed and leaves no descriptor open",
    "[transports][datagram]") {
  TempDir dir;
  const int fds_before = count_fds();
  Record idle;
  Record buffering;
  int idle_fd = -1;
  int buffering_fd = -1;
  {
    RawUnixReceiver receiver(dir / "receiver.sock");
    TestLoop loop(TestType::kind);
    loop.run([&]() -> Coro<void> {
      Coro<DatagramConnection<Recorder>> open_idle = open_endpoint(idle, local("127.0.0.1", 0));
      DatagramConnection<Recorder> a = co_await open_idle;
      idle_fd = *a.transport->get_extra_info_as<int>("socket");
      // One with datagrams waiting in its buffer (and its writer registered).
      Coro<DatagramConnection<Recorder>> open_buffering = open_sender(buffering, receiver);
      DatagramConnection<Recorder> b = co_await open_buffering;
      buffering_fd = *b.transport->get_extra_info_as<int>("socket");
      for (std::size_t i = 0; i < 64; ++i) b.transport->sendto(pattern(i, 4096));
      CHECK(b.transport->get_write_buffer_size() > 0);
    }());
    CHECK_FALSE(idle.lost);
    CHECK_FALSE(buffering.lost);
    loop->close();
    for (Record* r : {&idle, &buffering}) {
      INFO(describe(r->events));
      CHECK(follows_grammar(r->events));
      CHECK(r->lost_count == 1);
      CHECK(*r->lost == strata::errc::loop_closed);
    }
    CHECK_FALSE(fd_is_open(idle_fd));
    CHECK_FALSE(fd_is_open(buffering_fd));
    CHECK(loop.errors().empty());
  }
  CHECK(count_fds() == fds_before);
}

// ---- Protocol errors and protocol changes ----------------------------------------------------

STRATA_LOOP_TEST_CASE(
    "DatagramTransport: an exception in datagram_received goes to the exception handler and "
    "aborts with callback_failed",
    "[transports][datagram]") {
  Record server;
  Record client;
  TestLoop loop(TestType::kind);
  loop.run([&]() -> Coro<void> {
    Coro<DatagramConnection<Recorder>> open_server =
        open_endpoint(server, local("127.0.0.1", 0), Recorder::Mode::throw_on_datagram);
    DatagramConnection<Recorder> s = co_await open_server;
    Coro<DatagramConnection<Recorder>> open_client =
        open_endpoint(client, remote(sockname_of(*s.transport)));
    DatagramConnection<Recorder> c = co_await open_client;
    c.transport->sendto("first");
    c.transport->sendto("second");
    co_await wait_lost(server);
    c.transport->close();
    co_await wait_lost(client);
  }());
  CHECK(server.events == std::vector<std::string>{"made", "datagram", "lost"});
  CHECK(*server.lost == strata::errc::callback_failed);
  REQUIRE(loop.errors().size() == 1);
  CHECK_THAT(loop.errors()[0].message, Catch::Contains("datagram_received"));
  CHECK(strata::describe_exception(loop.errors()[0].exception) == "boom");
}

STRATA_LOOP_TEST_CASE(
    "create_datagram_endpoint: returns after connection_made, and throws what it threw",
    "[transports][datagram]") {
  Record good;
  Record bad;
  TestLoop loop(TestType::kind);
  loop.run([&]() -> Coro<void> {
    Coro<DatagramConnection<Recorder>> open_good = open_endpoint(good, local("127.0.0.1", 0));
    DatagramConnection<Recorder> g = co_await open_good;
    CHECK(good.events == std::vector<std::string>{"made"});
    CHECK(good.transport == g.transport);
    REQUIRE(g.protocol != nullptr);

    std::string what;
    try {
      Coro<DatagramConnection<Recorder>> open_bad =
          open_endpoint(bad, local("127.0.0.1", 0), Recorder::Mode::throw_on_made);
      co_await open_bad;
    } catch (const std::runtime_error& e) {
      what = e.what();
    }
    CHECK(what == "connection_made failed");
    co_await wait_lost(bad);
    g.transport->close();
    co_await wait_lost(good);
  }());
  CHECK(bad.events == std::vector<std::string>{"made", "lost"});
  CHECK(*bad.lost == strata::errc::callback_failed);
  CHECK(loop.errors().empty());  // the caller got the exception
}

STRATA_LOOP_TEST_CASE("DatagramTransport: set_protocol hands later datagrams to the new protocol",
                      "[transports][datagram]") {
  Record first;
  Record second;
  Record client;
  TestLoop loop(TestType::kind);
  loop.run([&]() -> Coro<void> {
    Coro<DatagramConnection<Recorder>> open_server = open_endpoint(first, local("127.0.0.1", 0));
    DatagramConnection<Recorder> s = co_await open_server;
    Coro<DatagramConnection<Recorder>> open_client =
        open_endpoint(client, remote(sockname_of(*s.transport)));
    DatagramConnection<Recorder> c = co_await open_client;
    CHECK_THROWS_AS(s.transport->set_protocol(nullptr), std::invalid_argument);
    auto replacement = std::make_unique<Recorder>(second);
    Recorder* raw = replacement.get();
    s.transport->set_protocol(std::move(replacement));
    CHECK(&s.transport->get_protocol() == raw);
    c.transport->sendto("to the new one");
    Coro<void> arrived = wait_until(second, [&] { return second.datagrams.size() == 1; });
    co_await arrived;
    s.transport->close();
    co_await wait_lost(second);
    c.transport->close();
    co_await wait_lost(client);
  }());
  CHECK(first.events == std::vector<std::string>{"made"});
  CHECK(second.events == std::vector<std::string>{"datagram", "lost"});  // no connection_made
}

STRATA_LOOP_TEST_CASE(
    "create_datagram_endpoint: cancelled before connection_made, the endpoint is made and closed",
    "[transports][datagram]") {
  Record record;
  TestLoop loop(TestType::kind);
  loop.run([&]() -> Coro<void> {
    strata::EventLoop& l = loop.get();
    // The task's first step makes the transport (numeric addresses need no thread hop); the
    // callback scheduled after that step cancels it before connection_made() has run.
    strata::Task<DatagramConnection<Recorder>> opening =
        l.create_task(open_endpoint(record, local("127.0.0.1", 0)), "opening");
    l.call_soon([&opening] { opening.cancel(); });
    bool cancelled = false;
    try {
      co_await opening;
    } catch (const strata::CancelledError&) {
      cancelled = true;
    }
    CHECK(cancelled);
    co_await wait_lost(record);
  }());
  CHECK(record.events == std::vector<std::string>{"made", "lost"});
  CHECK(*record.lost == std::error_code());
  CHECK(loop.errors().empty());
}
