// create_connection() and create_server() over 127.0.0.1 and ::1, on every backend.
#include <strata/transports/tcp.hpp>

#include <catch2/catch.hpp>

#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include <strata/core/coro.hpp>
#include <strata/core/errors.hpp>
#include <strata/core/resolver.hpp>
#include <strata/core/sleep.hpp>
#include <strata/core/socket_address.hpp>
#include <strata/core/task.hpp>
#include <strata/core/task_group.hpp>
#include <strata/transports/server.hpp>

#include "loop_test.hpp"
#include "net_test_support.hpp"
#include "stream_test_support.hpp"

using namespace std::chrono_literals;
using strata::ConnectOptions;
using strata::Connection;
using strata::Coro;
using strata::LocalAddress;
using strata::Server;
using strata::ServerOptions;
using strata::SocketAddress;
using strata::testing::Accepted;
using strata::testing::BlackHole;
using strata::testing::count_open_fds;
using strata::testing::describe_failure;
using strata::testing::exception_of;
using strata::testing::Failure;
using strata::testing::FdLimit;
using strata::testing::grammar_error;
using strata::testing::ipv6_available;
using strata::testing::next_iteration;
using strata::testing::pattern;
using strata::testing::PlainSocket;
using strata::testing::Record;
using strata::testing::recorder;
using strata::testing::RecordingProtocol;
using strata::testing::TestLoop;

namespace {

std::string port_text(std::uint16_t port) { return std::to_string(port); }

/// How `co_await aw` failed.
template <class A>
Coro<Failure> failure_of(A aw) {
  auto ended = exception_of(std::move(aw));
  std::exception_ptr e = co_await ended;
  co_return describe_failure(e);
}

bool has_nodelay(int fd) {
  int value = 0;
  socklen_t len = sizeof value;
  ::getsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &value, &len);
  return value != 0;
}

/// One client of the concurrency test: connects, sends its own bytes, checks the echo.
Coro<void> echo_client(std::uint16_t port, Record* r, unsigned seed, std::string* error) {
  auto connecting = strata::create_connection(recorder(*r), "127.0.0.1", port);
  Connection<RecordingProtocol> c = co_await connecting;
  const std::string payload = pattern(8192 + seed, seed);
  c.transport->write(payload);
  co_await r->wait_received(payload.size());
  if (r->received != payload) *error = "client " + std::to_string(seed) + " got other bytes";
  c.transport->close();
  co_await r->wait_lost();
}

/// Echoes @p text over @p c and checks it comes back.
Coro<void> check_echo(Connection<RecordingProtocol> c, Record* r, std::string text) {
  const std::size_t before = r->received.size();
  c.transport->write(text);
  co_await r->wait_received(before + text.size());
  CHECK(r->received.substr(before) == text);
}

/// The loopback addresses an empty host resolves to, in the resolver's order.
Coro<std::vector<SocketAddress>> loopback_addresses() {
  auto lookup = strata::get_running_loop().getaddrinfo("", "1", 0, SOCK_STREAM);
  std::vector<strata::AddrInfo> infos = co_await lookup;
  std::vector<SocketAddress> out;
  out.reserve(infos.size());
  for (const auto& i : infos) out.push_back(i.address);
  co_return out;
}

/// create_server(), or null when it fails (a port taken by someone else).
template <class F>
Coro<std::unique_ptr<Server>> server_or_null(F factory, std::string host, std::uint16_t port) {
  std::unique_ptr<Server> server;
  try {
    auto serving = strata::create_server(std::move(factory), std::move(host), port);
    server = co_await serving;
  } catch (const std::system_error&) {
  }
  co_return server;
}

bool is_v6_then_v4(const std::vector<SocketAddress>& a) {
  return a.size() == 2 && a[0].host() == "::1" && a[1].host() == "127.0.0.1";
}

}  // namespace

STRATA_LOOP_TEST_CASE("create_connection: an echo round trip through create_server on 127.0.0.1",
                      "[transports][tcp]") {
  Accepted accepted;
  Record client;
  TestLoop loop(TestType::kind);
  std::unique_ptr<Server> server;
  auto body = [&]() -> Coro<void> {
    auto serving = strata::create_server(accepted.factory(), "127.0.0.1", 0);
    server = co_await serving;
    REQUIRE(server->sockets().size() == 1);
    const SocketAddress address = server->sockets()[0].address;
    CHECK(address.host() == "127.0.0.1");
    CHECK(address.port() != 0);
    CHECK(server->is_serving());
    auto connecting = strata::create_connection(recorder(client), "127.0.0.1", address.port());
    Connection<RecordingProtocol> c = co_await connecting;
    REQUIRE(c.transport != nullptr);
    CHECK(c.transport == client.transport);  // connection_made() has run
    CHECK(&c.transport->get_protocol() == c.protocol);
    CHECK(c.transport->get_extra_info_as<SocketAddress>("peername") == address);
    c.transport->write("hello, strata");
    co_await client.wait_received(13);
    CHECK(client.received == "hello, strata");
    REQUIRE(accepted.records.size() == 1);
    CHECK(accepted.records[0]->received == "hello, strata");
    CHECK(accepted.records[0]->transport->get_extra_info_as<SocketAddress>("peername") ==
          c.transport->get_extra_info_as<SocketAddress>("sockname"));
    c.transport->close();
    co_await client.wait_lost();
    co_await accepted.wait_all_lost();
    server->close();
    auto closing = server->wait_closed();
    co_await closing;
  };
  loop.run(body());
  CHECK(grammar_error(client.events) == "");
  CHECK(grammar_error(accepted.records[0]->events) == "");
  CHECK(client.lost_ec == std::error_code());
  CHECK(loop.errors().empty());
}

STRATA_LOOP_TEST_CASE("create_connection: an echo round trip through create_server on ::1",
                      "[transports][tcp]") {
  if (!ipv6_available()) {
    WARN("IPv6 is not available here: skipped");
    return;
  }
  Accepted accepted;
  Record client;
  TestLoop loop(TestType::kind);
  std::unique_ptr<Server> server;
  auto body = [&]() -> Coro<void> {
    auto serving = strata::create_server(accepted.factory(), "::1", 0);
    server = co_await serving;
    REQUIRE(server->sockets().size() == 1);
    const SocketAddress address = server->sockets()[0].address;
    CHECK(address.host() == "::1");
    auto connecting = strata::create_connection(recorder(client), "::1", port_text(address.port()));
    Connection<RecordingProtocol> c = co_await connecting;
    CHECK(c.transport->get_extra_info_as<SocketAddress>("peername") == address);
    auto echo = check_echo(c, &client, "over IPv6");
    co_await echo;
    c.transport->close();
    co_await accepted.wait_all_lost();
  };
  loop.run(body());
  CHECK(grammar_error(client.events) == "");
}

// 300: more operations than the proactor's submission queue holds (256) start in one iteration.
STRATA_LOOP_TEST_CASE("create_connection: 300 concurrent connections each get their own bytes back",
                      "[transports][tcp]") {
  FdLimit limit;
  if (limit.soft() < 1024) limit.raise_to_hard();
  if (limit.hard() < 768) {
    WARN("RLIMIT_NOFILE's hard limit is too low for 300 connections: skipped");
    return;
  }
  constexpr int n = 300;
  Accepted accepted;
  std::vector<std::unique_ptr<Record>> clients;
  clients.reserve(n);
  for (int i = 0; i < n; ++i) clients.push_back(std::make_unique<Record>());
  std::vector<std::string> errors(n);
  TestLoop loop(TestType::kind);
  auto body = [&]() -> Coro<void> {
    ServerOptions options;
    options.backlog = 2 * n;  // no SYN waits for a retransmission
    auto serving = strata::create_server(accepted.factory(), "127.0.0.1", 0, options);
    std::unique_ptr<Server> server = co_await serving;
    const std::uint16_t port = server->sockets()[0].address.port();
    auto clients_body = [&](strata::TaskGroup& tg) -> Coro<void> {
      for (int i = 0; i < n; ++i) {
        tg.create_task(echo_client(port, clients[i].get(), static_cast<unsigned>(i), &errors[i]));
      }
      co_return;
    };
    auto scope = strata::task_group(clients_body);
    co_await scope;
    co_await accepted.wait_all_lost();
    CHECK(accepted.records.size() == static_cast<std::size_t>(n));
    server->close();
    auto closing = server->wait_closed();
    co_await closing;
  };
  loop.run(body(), 30s);
  for (int i = 0; i < n; ++i) {
    CHECK(errors[i] == "");
    CHECK(grammar_error(clients[i]->events) == "");
  }
  CHECK(loop.errors().empty());
}

STRATA_LOOP_TEST_CASE("create_connection: a refused connect throws system_error naming the address",
                      "[transports][tcp]") {
  Record r;
  TestLoop loop(TestType::kind);
  auto body = [&]() -> Coro<void> {
    // Bound but not listening: the kernel answers a SYN with a reset.
    PlainSocket closed(SocketAddress("127.0.0.1", 0), std::nullopt);
    const int fds = count_open_fds();
    auto connecting = strata::create_connection(recorder(r), "127.0.0.1", closed.port());
    auto failing = failure_of(std::move(connecting));
    Failure f = co_await failing;
    CHECK(f.kind == "system_error");
    CHECK(f.code == std::errc::connection_refused);
    CHECK(f.what == "connect 127.0.0.1:" + port_text(closed.port()) + ": Connection refused");
    CHECK(count_open_fds() == fds);
  };
  loop.run(body());
  CHECK(r.created == 0);  // no protocol is made before the socket connected
}

STRATA_LOOP_TEST_CASE("create_connection: a host that does not resolve throws the resolver's error",
                      "[transports][tcp]") {
  Record r;
  TestLoop loop(TestType::kind);
  auto body = [&]() -> Coro<void> {
    ConnectOptions options;
    options.flags = AI_NUMERICHOST;  // fails at once, without asking any name server
    auto connecting = strata::create_connection(recorder(r), "not-a-number.invalid", 80, options);
    auto failing = failure_of(std::move(connecting));
    Failure f = co_await failing;
    CHECK(f.kind == "system_error");
    CHECK(f.code.category() == strata::resolver_category());
    CHECK_THAT(f.what, Catch::Matchers::Contains("not-a-number.invalid"));
  };
  loop.run(body());
}

STRATA_LOOP_TEST_CASE("create_connection: the timeout bounds a connect that never completes, "
                      "throwing TimeoutError and closing the socket",
                      "[transports][tcp]") {
  Record r;
  TestLoop loop(TestType::kind);
  auto body = [&]() -> Coro<void> {
    BlackHole hole(SocketAddress("127.0.0.1", 0));
    const int fds = count_open_fds();
    ConnectOptions options;
    options.timeout = 100ms;
    const strata::TimePoint start = loop->time();
    auto connecting = strata::create_connection(recorder(r), "127.0.0.1", hole.port(), options);
    auto failing = failure_of(std::move(connecting));
    Failure f = co_await failing;
    CHECK(f.kind == "TimeoutError");
    CHECK(f.what == "connect 127.0.0.1:" + port_text(hole.port()) + ": timed out after 100 ms");
    CHECK(loop->time() - start >= 100ms);
    CHECK(count_open_fds() == fds);
  };
  loop.run(body());
  CHECK(r.created == 0);
}

STRATA_LOOP_TEST_CASE("create_connection: cancelled while connecting, it closes its socket",
                      "[transports][tcp]") {
  Record r;
  TestLoop loop(TestType::kind);
  auto body = [&]() -> Coro<void> {
    BlackHole hole(SocketAddress("127.0.0.1", 0));
    const int fds = count_open_fds();
    auto task = loop->create_task(strata::create_connection(recorder(r), "127.0.0.1", hole.port()));
    co_await next_iteration();
    co_await next_iteration();
    CHECK(count_open_fds() == fds + 1);  // the connecting socket
    task.cancel();
    auto failing = failure_of(task);
    Failure f = co_await failing;
    CHECK(f.kind == "CancelledError");
    CHECK(count_open_fds() == fds);
  };
  loop.run(body());
  CHECK(r.created == 0);
}

STRATA_LOOP_TEST_CASE("create_connection: with happy_eyeballs_delay, the next address starts after "
                      "the delay while the first hangs, and the first to connect wins",
                      "[transports][tcp]") {
  if (!ipv6_available()) {
    WARN("IPv6 is not available here: skipped");
    return;
  }
  Accepted accepted;
  Record client;
  Record stuck;
  TestLoop loop(TestType::kind);
  auto body = [&]() -> Coro<void> {
    auto resolving = loopback_addresses();
    std::vector<SocketAddress> loopback = co_await resolving;
    if (!is_v6_then_v4(loopback)) {
      WARN("an empty host does not resolve to ::1 then 127.0.0.1 here: skipped");
      co_return;
    }
    // ::1 never answers (a full accept queue); 127.0.0.1 on the same port serves.
    std::unique_ptr<BlackHole> hole;
    std::unique_ptr<Server> server;
    for (int tries = 0; !server && tries < 20; ++tries) {
      hole = std::make_unique<BlackHole>(SocketAddress("::1", 0));
      auto serving = server_or_null(accepted.factory(), "127.0.0.1", hole->port());
      server = co_await serving;  // null when that port is taken on 127.0.0.1: another one
    }
    REQUIRE(server);
    const std::uint16_t port = hole->port();
    const int fds = count_open_fds();

    ConnectOptions options;
    options.happy_eyeballs_delay = 50ms;
    options.timeout = 5s;
    const strata::TimePoint start = loop->time();
    auto connecting = strata::create_connection(recorder(client), "", port, options);
    Connection<RecordingProtocol> c = co_await connecting;
    CHECK(loop->time() - start >= 50ms);  // 127.0.0.1 started only after the delay
    CHECK(c.transport->get_extra_info_as<SocketAddress>("peername") ==
          SocketAddress("127.0.0.1", port));
    co_await accepted.wait_made(1);
    CHECK(count_open_fds() == fds + 2);  // the two ends; the ::1 attempt is closed
    auto echo = check_echo(c, &client, "eyeballs");
    co_await echo;
    c.transport->close();
    co_await accepted.wait_all_lost();

    // Without the delay, addresses are tried one after the other: ::1 first, which hangs.
    ConnectOptions sequential;
    sequential.timeout = 300ms;
    auto waiting = strata::create_connection(recorder(stuck), "", port, sequential);
    auto failing = failure_of(std::move(waiting));
    Failure f = co_await failing;
    CHECK(f.kind == "TimeoutError");
    CHECK(count_open_fds() == fds);
    server->close();
  };
  loop.run(body());
  CHECK(stuck.created == 0);
}

STRATA_LOOP_TEST_CASE("create_connection: when every address fails, the error names each one",
                      "[transports][tcp]") {
  if (!ipv6_available()) {
    WARN("IPv6 is not available here: skipped");
    return;
  }
  Record r;
  TestLoop loop(TestType::kind);
  auto body = [&]() -> Coro<void> {
    auto resolving = loopback_addresses();
    std::vector<SocketAddress> loopback = co_await resolving;
    if (!is_v6_then_v4(loopback)) {
      WARN("an empty host does not resolve to ::1 then 127.0.0.1 here: skipped");
      co_return;
    }
    // Bound, not listening, on both: both refuse.
    std::unique_ptr<PlainSocket> v6;
    std::unique_ptr<PlainSocket> v4;
    for (int tries = 0; !v4 && tries < 20; ++tries) {
      v6 = std::make_unique<PlainSocket>(SocketAddress("::1", 0), std::nullopt);
      try {
        v4 = std::make_unique<PlainSocket>(SocketAddress("127.0.0.1", v6->port()), std::nullopt);
      } catch (const std::system_error&) {
      }
    }
    REQUIRE(v4);
    const std::string port = port_text(v6->port());

    auto both = strata::create_connection(recorder(r), "", port);
    auto both_failing = failure_of(std::move(both));
    Failure same = co_await both_failing;
    CHECK(same.kind == "system_error");
    CHECK(same.code == std::errc::connection_refused);
    CHECK(same.what == "connect [::1]:" + port + ", 127.0.0.1:" + port + ": Connection refused");

    // An IPv4 local address: the ::1 attempt cannot bind, the 127.0.0.1 one is refused.
    ConnectOptions options;
    options.local_addr = SocketAddress("127.0.0.1", 0);
    auto mixed = strata::create_connection(recorder(r), "", port, options);
    auto mixed_failing = failure_of(std::move(mixed));
    Failure different = co_await mixed_failing;
    CHECK(different.kind == "system_error");
    CHECK(different.code == std::errc::connection_refused);  // the last one's
    CHECK(different.what == "multiple errors: bind: no local address of the family of [::1]:" +
                                port + ": Cannot assign requested address; connect 127.0.0.1:" +
                                port + ": Connection refused");
  };
  loop.run(body());
  CHECK(r.created == 0);
}

STRATA_LOOP_TEST_CASE("create_connection: local_addr binds the socket before it connects",
                      "[transports][tcp]") {
  Accepted accepted;
  Record a;
  Record b;
  Record c;
  TestLoop loop(TestType::kind);
  auto body = [&]() -> Coro<void> {
    auto serving = strata::create_server(accepted.factory(), "127.0.0.1", 0);
    std::unique_ptr<Server> server = co_await serving;
    const std::uint16_t port = server->sockets()[0].address.port();

    // A numeric address and a port found free a moment ago.
    std::uint16_t local_port = 0;
    {
      PlainSocket probe(SocketAddress("127.0.0.1", 0), std::nullopt);
      local_port = probe.port();
    }
    ConnectOptions numeric;
    numeric.local_addr = SocketAddress("127.0.0.1", local_port);
    auto connecting = strata::create_connection(recorder(a), "127.0.0.1", port, numeric);
    Connection<RecordingProtocol> ca = co_await connecting;
    CHECK(ca.transport->get_extra_info_as<SocketAddress>("sockname") ==
          SocketAddress("127.0.0.1", local_port));
    co_await accepted.wait_made(1);
    CHECK(accepted.records[0]->transport->get_extra_info_as<SocketAddress>("peername") ==
          SocketAddress("127.0.0.1", local_port));

    // A host name to resolve, with an ephemeral port.
    ConnectOptions named;
    named.local_addr = LocalAddress("localhost", 0);
    named.family = AF_INET;
    auto connecting_named = strata::create_connection(recorder(b), "127.0.0.1", port, named);
    Connection<RecordingProtocol> cb = co_await connecting_named;
    auto sockname = cb.transport->get_extra_info_as<SocketAddress>("sockname");
    REQUIRE(sockname);
    CHECK(sockname->host() == "127.0.0.1");

    // The same local address again, while it is in use: bind fails, naming it.
    auto clashing = strata::create_connection(recorder(c), "127.0.0.1", port, numeric);
    auto clash_failing = failure_of(std::move(clashing));
    Failure f = co_await clash_failing;
    CHECK(f.kind == "system_error");
    CHECK(f.code == std::errc::address_in_use);
    CHECK(f.what == "bind 127.0.0.1:" + port_text(local_port) + ": Address already in use");

    ca.transport->close();
    cb.transport->close();
    co_await accepted.wait_all_lost();
    server->close();
  };
  loop.run(body());
  CHECK(c.created == 0);
}

STRATA_LOOP_TEST_CASE("create_connection: TCP_NODELAY is on by default and off with nodelay = false",
                      "[transports][tcp]") {
  Accepted accepted;
  Record a;
  Record b;
  TestLoop loop(TestType::kind);
  auto body = [&]() -> Coro<void> {
    auto serving = strata::create_server(accepted.factory(), "127.0.0.1", 0);
    std::unique_ptr<Server> server = co_await serving;
    const std::uint16_t port = server->sockets()[0].address.port();
    auto connecting = strata::create_connection(recorder(a), "127.0.0.1", port);
    Connection<RecordingProtocol> ca = co_await connecting;
    CHECK(has_nodelay(*ca.transport->get_extra_info_as<int>("socket")));
    ConnectOptions options;
    options.nodelay = false;
    auto connecting_b = strata::create_connection(recorder(b), "127.0.0.1", port, options);
    Connection<RecordingProtocol> cb = co_await connecting_b;
    CHECK_FALSE(has_nodelay(*cb.transport->get_extra_info_as<int>("socket")));
    co_await accepted.wait_made(2);
    for (const auto& r : accepted.records) {
      CHECK(has_nodelay(*r->transport->get_extra_info_as<int>("socket")));  // accepted ones too
    }
    ca.transport->close();
    cb.transport->close();
    co_await accepted.wait_all_lost();
  };
  loop.run(body());
}

STRATA_LOOP_TEST_CASE("create_connection: what the factory or connection_made() throws reaches the "
                      "caller, and no socket is left open",
                      "[transports][tcp]") {
  Accepted accepted;
  Record thrown;
  TestLoop loop(TestType::kind);
  auto body = [&]() -> Coro<void> {
    auto serving = strata::create_server(accepted.factory(), "127.0.0.1", 0);
    std::unique_ptr<Server> server = co_await serving;
    const std::uint16_t port = server->sockets()[0].address.port();
    const int fds = count_open_fds();

    auto refusing = [] () -> std::unique_ptr<RecordingProtocol> {
      throw std::runtime_error("no protocol today");
    };
    auto connecting = strata::create_connection(refusing, "127.0.0.1", port);
    auto failing = failure_of(std::move(connecting));
    Failure f = co_await failing;
    CHECK(f.kind == "exception");
    CHECK(f.what == "no protocol today");
    co_await accepted.wait_all_lost();  // the server saw the connection close

    class Throwing : public RecordingProtocol {
     public:
      using RecordingProtocol::RecordingProtocol;
      void connection_made(strata::Transport& t) override {
        RecordingProtocol::connection_made(t);
        throw std::runtime_error("boom in connection_made");
      }
    };
    auto throwing = [&thrown] { return std::make_unique<Throwing>(thrown); };
    auto connecting_b = strata::create_connection(throwing, "127.0.0.1", port);
    auto failing_b = failure_of(std::move(connecting_b));
    Failure g = co_await failing_b;
    CHECK(g.what == "boom in connection_made");
    co_await thrown.wait_lost();
    co_await accepted.wait_made(2);
    co_await accepted.wait_all_lost();
    co_await next_iteration();  // the transport is freed the iteration after connection_lost
    co_await next_iteration();
    CHECK(count_open_fds() == fds);
    server->close();
  };
  loop.run(body());
  CHECK(thrown.lost_ec == strata::errc::callback_failed);
  CHECK(loop.errors().empty());
}

STRATA_LOOP_TEST_CASE("create_connection: misuse fails at the call", "[transports][tcp]") {
  Record r;
  TestLoop loop(TestType::kind);
  auto body = [&]() -> Coro<void> {
    ConnectOptions negative_delay;
    negative_delay.happy_eyeballs_delay = -1ms;
    CHECK_THROWS_AS(strata::create_connection(recorder(r), "127.0.0.1", 1, negative_delay),
                    std::invalid_argument);
    ConnectOptions negative_interleave;
    negative_interleave.interleave = -1;
    CHECK_THROWS_AS(strata::create_connection(recorder(r), "127.0.0.1", 1, negative_interleave),
                    std::invalid_argument);
    ServerOptions negative_backlog;
    negative_backlog.backlog = -1;
    CHECK_THROWS_AS(strata::create_server(recorder(r), "127.0.0.1", 0, negative_backlog),
                    std::invalid_argument);
    co_return;
  };
  loop.run(body());
  CHECK_THROWS_AS(strata::create_connection(recorder(r), "127.0.0.1", 1), strata::EventLoopError);
}

STRATA_LOOP_TEST_CASE("create_server: a bind failure names the address", "[transports][tcp]") {
  Accepted accepted;
  TestLoop loop(TestType::kind);
  auto body = [&]() -> Coro<void> {
    PlainSocket taken(SocketAddress("127.0.0.1", 0), 5);  // listening, without SO_REUSEPORT
    const int fds = count_open_fds();
    auto serving = strata::create_server(accepted.factory(), "127.0.0.1", taken.port());
    auto failing = failure_of(std::move(serving));
    Failure f = co_await failing;
    CHECK(f.kind == "system_error");
    CHECK(f.code == std::errc::address_in_use);
    CHECK(f.what == "bind 127.0.0.1:" + port_text(taken.port()) + ": Address already in use");
    CHECK(count_open_fds() == fds);
  };
  loop.run(body());
}

STRATA_LOOP_TEST_CASE("create_server: reuse_port lets two servers listen on the same port",
                      "[transports][tcp]") {
  Accepted first;
  Accepted second;
  Record a;
  Record b;
  TestLoop loop(TestType::kind);
  auto body = [&]() -> Coro<void> {
    ServerOptions options;
    options.reuse_port = true;
    auto serving = strata::create_server(first.factory(), "127.0.0.1", 0, options);
    std::unique_ptr<Server> one = co_await serving;
    const std::uint16_t port = one->sockets()[0].address.port();
    auto serving_too = strata::create_server(second.factory(), "127.0.0.1", port, options);
    std::unique_ptr<Server> two = co_await serving_too;
    CHECK(two->sockets()[0].address == SocketAddress("127.0.0.1", port));

    auto connecting = strata::create_connection(recorder(a), "127.0.0.1", port);
    Connection<RecordingProtocol> ca = co_await connecting;
    auto echo = check_echo(ca, &a, "to either");
    co_await echo;
    CHECK(first.records.size() + second.records.size() == 1);

    // With the first closed, the second takes every connection.
    one->close();
    auto connecting_b = strata::create_connection(recorder(b), "127.0.0.1", port);
    Connection<RecordingProtocol> cb = co_await connecting_b;
    auto echo_b = check_echo(cb, &b, "to the second");
    co_await echo_b;
    CHECK(second.records.size() >= 1);
    CHECK(second.records.back()->received == "to the second");
    ca.transport->close();
    cb.transport->close();
    co_await first.wait_all_lost();
    co_await second.wait_all_lost();
  };
  loop.run(body());
}

STRATA_LOOP_TEST_CASE("create_server: an empty host listens on every interface, one socket per family",
                      "[transports][tcp]") {
  Accepted accepted;
  Record client;
  TestLoop loop(TestType::kind);
  auto body = [&]() -> Coro<void> {
    auto serving = strata::create_server(accepted.factory(), "", 0);
    std::unique_ptr<Server> server = co_await serving;
    std::optional<std::uint16_t> v4_port;
    bool v6 = false;
    for (const strata::ServerSocket& s : server->sockets()) {
      if (s.address.host() == "0.0.0.0") v4_port = s.address.port();
      if (s.address.host() == "::") v6 = true;
    }
    REQUIRE(v4_port);
    CHECK(v6 == ipv6_available());
    auto connecting = strata::create_connection(recorder(client), "127.0.0.1", *v4_port);
    Connection<RecordingProtocol> c = co_await connecting;
    auto echo = check_echo(c, &client, "wildcard");
    co_await echo;
    c.transport->close();
    co_await accepted.wait_all_lost();
  };
  loop.run(body());
}

STRATA_LOOP_TEST_CASE("create_server: several hosts give one socket each", "[transports][tcp]") {
  if (!ipv6_available()) {
    WARN("IPv6 is not available here: skipped");
    return;
  }
  Accepted accepted;
  TestLoop loop(TestType::kind);
  auto body = [&]() -> Coro<void> {
    std::vector<std::string> hosts{"127.0.0.1", "::1", "127.0.0.1"};  // the duplicate is dropped
    auto serving = strata::create_server(accepted.factory(), hosts, 0);
    std::unique_ptr<Server> server = co_await serving;
    std::vector<strata::ServerSocket> sockets = server->sockets();
    REQUIRE(sockets.size() == 2);
    CHECK(sockets[0].address.host() == "127.0.0.1");
    CHECK(sockets[1].address.host() == "::1");
  };
  loop.run(body());
}

STRATA_LOOP_TEST_CASE("metrics: the transports count themselves, their bytes and their buffers",
                      "[transports][tcp][metrics]") {
  Accepted accepted;
  accepted.echo = false;  // what is written, and read, is the client's 13 bytes
  Record client;
  TestLoop loop(TestType::kind);
  const strata::LoopMetrics before = loop->metrics();
  auto body = [&]() -> Coro<void> {
    auto serving = strata::create_server(accepted.factory(), "127.0.0.1", 0);
    std::unique_ptr<Server> server = co_await serving;
    const std::uint16_t port = server->sockets().at(0).address.port();
    auto connecting = strata::create_connection(recorder(client), "127.0.0.1", port);
    Connection<RecordingProtocol> c = co_await connecting;
    auto made = accepted.wait_made(1);
    co_await made;
    strata::LoopMetrics m = loop->metrics();
    CHECK(m.transports_open - before.transports_open == 3);  // the server and both ends
    c.transport->write("hello, strata");
    auto received = accepted.records[0]->wait_received(13);
    co_await received;
    m = loop->metrics();
    CHECK(m.bytes_written - before.bytes_written == 13);
    CHECK(m.bytes_read - before.bytes_read == 13);
    CHECK(m.write_buffered == 0);
    // A peer that stops reading: what the kernel does not take stays in the client's buffer.
    accepted.records[0]->transport->pause_reading();
    c.transport->write(pattern(8 * 1024 * 1024, 1));
    m = loop->metrics();
    CHECK(c.transport->get_write_buffer_size() > 0);
    CHECK(m.write_buffered == c.transport->get_write_buffer_size());
    accepted.records[0]->transport->resume_reading();  // so that it sees the reset
    c.transport->abort();
    co_await client.wait_lost();
    co_await accepted.wait_all_lost();
    server->close();
    auto closing = server->wait_closed();
    co_await closing;
  };
  loop.run(body());
  // Transports detach once destroyed, an iteration or two after connection_lost().
  loop.run([]() -> Coro<void> {
    for (int i = 0; i < 3; ++i) co_await strata::sleep(0s);
  }());
  CHECK(loop->metrics().transports_open == before.transports_open);
  CHECK(loop->metrics().write_buffered == 0);
}
