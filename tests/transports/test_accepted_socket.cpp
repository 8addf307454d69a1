#include <strata/transports/accepted_socket.hpp>

#include <catch2/catch.hpp>

#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include <strata/core/coro.hpp>
#include <strata/core/errors.hpp>
#include <strata/core/task.hpp>

#include "loop_test.hpp"
#include "stream_test_support.hpp"

using strata::Connection;
using strata::Coro;
using strata::testing::FdPair;
using strata::testing::grammar_error;
using strata::testing::next_iteration;
using strata::testing::Record;
using strata::testing::RecordingProtocol;
using strata::testing::TestLoop;

namespace {

bool fd_is_open(int fd) { return ::fcntl(fd, F_GETFD) >= 0; }

/// A protocol whose connection_made() throws.
class ThrowingProtocol : public RecordingProtocol {
 public:
  using RecordingProtocol::RecordingProtocol;
  void connection_made(strata::Transport& t) override {
    RecordingProtocol::connection_made(t);
    throw std::runtime_error("boom in connection_made");
  }
};

}  // namespace

STRATA_LOOP_TEST_CASE("connect_accepted_socket: wraps a TCP socket, non-blocking, with TCP_NODELAY",
                      "[transports][accepted_socket]") {
  Record client;
  Record server;
  server.echo = true;
  TestLoop loop(TestType::kind);
  auto body = [&]() -> Coro<void> {
    FdPair p = strata::testing::tcp_pair();
    auto factory = [&client] { return std::make_unique<RecordingProtocol>(client); };
    auto op = strata::connect_accepted_socket(factory, p.a);
    Connection<RecordingProtocol> c = co_await op;
    REQUIRE(c.transport != nullptr);
    REQUIRE(c.protocol != nullptr);
    CHECK(c.transport == client.transport);  // connection_made() has run
    CHECK(&c.transport->get_protocol() == c.protocol);
    CHECK((::fcntl(p.a, F_GETFL) & O_NONBLOCK) != 0);
    int nodelay = 0;
    socklen_t len = sizeof nodelay;
    ::getsockopt(p.a, IPPROTO_TCP, TCP_NODELAY, &nodelay, &len);
    CHECK(nodelay != 0);
    CHECK(c.transport->get_extra_info_as<int>("socket") == p.a);
    co_await strata::testing::connect_record(p.b, server);
    c.transport->write("hello");
    co_await client.wait_received(5);
    CHECK(client.received == "hello");
    c.transport->close();
    co_await client.wait_lost();
    co_await server.wait_lost();
  };
  loop.run(body());
  CHECK(grammar_error(client.events) == "");
  CHECK(grammar_error(server.events) == "");
}

STRATA_LOOP_TEST_CASE("connect_accepted_socket: refuses what is not a connected stream socket, "
                      "leaving the descriptor open",
                      "[transports][accepted_socket]") {
  Record r;
  TestLoop loop(TestType::kind);
  auto body = [&]() -> Coro<void> {
    auto factory = [&r] { return std::make_unique<RecordingProtocol>(r); };
    int pipe_fds[2];
    REQUIRE(::pipe2(pipe_fds, O_CLOEXEC) == 0);
    {
      auto op = strata::connect_accepted_socket(factory, pipe_fds[0]);
      CHECK_THROWS_AS(co_await op, std::invalid_argument);
    }
    CHECK(fd_is_open(pipe_fds[0]));
    CHECK((::fcntl(pipe_fds[0], F_GETFL) & O_NONBLOCK) == 0);
    int udp = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    {
      auto op = strata::connect_accepted_socket(factory, udp);
      CHECK_THROWS_AS(co_await op, std::invalid_argument);
    }
    CHECK(fd_is_open(udp));
    {
      auto op = strata::connect_accepted_socket(factory, -1);
      CHECK_THROWS_AS(co_await op, std::invalid_argument);
    }
    FdPair p = strata::testing::unix_pair();
    auto null_factory = [] { return std::unique_ptr<RecordingProtocol>(); };
    {
      auto op = strata::connect_accepted_socket(null_factory, p.a);
      CHECK_THROWS_AS(co_await op, std::invalid_argument);
    }
    CHECK(fd_is_open(p.a));
    for (int fd : {pipe_fds[0], pipe_fds[1], udp, p.a, p.b}) ::close(fd);
  };
  loop.run(body());
  CHECK(r.created == 3);  // the factory ran, the protocol died with the refusal
  CHECK(r.alive == 0);
  CHECK(r.events.empty());
}

STRATA_LOOP_TEST_CASE("connect_accepted_socket: an exception from connection_made is thrown to the "
                      "caller and the connection is aborted",
                      "[transports][accepted_socket]") {
  Record r;
  Record peer;
  TestLoop loop(TestType::kind);
  auto body = [&]() -> Coro<void> {
    FdPair p = strata::testing::unix_pair();
    co_await strata::testing::connect_record(p.b, peer);
    auto factory = [&r] { return std::make_unique<ThrowingProtocol>(r); };
    auto op = strata::connect_accepted_socket(factory, p.a);
    CHECK_THROWS_WITH(co_await op, "boom in connection_made");
    co_await r.wait_lost();
    co_await peer.wait_lost();
  };
  loop.run(body());
  CHECK(r.lost_ec == strata::errc::callback_failed);
  CHECK(r.events == std::vector<std::string>{"made", "lost"});
  CHECK(loop.errors().empty());  // the caller got the exception instead
  CHECK(r.alive == 0);
  CHECK(peer.events == std::vector<std::string>{"made", "eof", "lost"});
}

STRATA_LOOP_TEST_CASE(
    "connect_accepted_socket: cancelled while connecting, the transport is closed",
    "[transports][accepted_socket]") {
  Record r;
  Record peer;
  TestLoop loop(TestType::kind);
  auto body = [&]() -> Coro<void> {
    FdPair p = strata::testing::unix_pair();
    co_await strata::testing::connect_record(p.b, peer);
    auto connect = [&r, fd = p.a]() -> Coro<void> {
      auto factory = [&r] { return std::make_unique<RecordingProtocol>(r); };
      auto op = strata::connect_accepted_socket(factory, fd);
      co_await op;
    };
    strata::Task<void> task = strata::create_task(connect());
    co_await next_iteration();  // the task made the transport; connection_made() is pending
    task.cancel();
    CHECK_THROWS_AS(co_await task, strata::CancelledError);
    co_await r.wait_lost();
    co_await peer.wait_lost();
  };
  loop.run(body());
  CHECK(r.events == std::vector<std::string>{"made", "lost"});
  CHECK(!r.lost_ec);
  CHECK(peer.events == std::vector<std::string>{"made", "eof", "lost"});
}
