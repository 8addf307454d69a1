// Server: serving, closing, its connections, and accepting under descriptor exhaustion, over
// 127.0.0.1 on every backend.
#include <strata/transports/server.hpp>

#include <catch2/catch.hpp>

#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <strata/core/coro.hpp>
#include <strata/core/errors.hpp>
#include <strata/core/event.hpp>
#include <strata/core/log.hpp>
#include <strata/core/socket_address.hpp>
#include <strata/core/task.hpp>
#include <strata/transports/tcp.hpp>

#include "loop_test.hpp"
#include "net_test_support.hpp"
#include "stream_test_support.hpp"

using namespace std::chrono_literals;
using strata::Connection;
using strata::Coro;
using strata::Server;
using strata::ServerOptions;
using strata::SocketAddress;
using strata::testing::Accepted;
using strata::testing::check_syscall;
using strata::testing::describe_failure;
using strata::testing::exception_of;
using strata::testing::Failure;
using strata::testing::FdLimit;
using strata::testing::grammar_error;
using strata::testing::LogRecorder;
using strata::testing::next_iteration;
using strata::testing::Record;
using strata::testing::recorder;
using strata::testing::RecordingProtocol;
using strata::testing::TestLoop;

namespace {

template <class A>
Coro<Failure> failure_of(A aw) {
  auto ended = exception_of(std::move(aw));
  std::exception_ptr e = co_await ended;
  co_return describe_failure(e);
}

Coro<std::unique_ptr<Server>> serve(Accepted& accepted, ServerOptions options = {}) {
  auto serving = strata::create_server(accepted.factory(), "127.0.0.1", 0, options);
  std::unique_ptr<Server> server = co_await serving;
  co_return server;
}

std::uint16_t port_of(const Server& server) { return server.sockets().at(0).address.port(); }

Coro<Connection<RecordingProtocol>> connect(Record& r, std::uint16_t port) {
  auto connecting = strata::create_connection(recorder(r), "127.0.0.1", port);
  Connection<RecordingProtocol> c = co_await connecting;
  co_return c;
}

/// Echoes @p text over @p c and checks it comes back.
Coro<void> check_echo(Connection<RecordingProtocol> c, Record* r, std::string text) {
  const std::size_t before = r->received.size();
  c.transport->write(text);
  co_await r->wait_received(before + text.size());
  CHECK(r->received.substr(before) == text);
}

/// A blocking client socket connected to 127.0.0.1:@p port (the handshake completes in the
/// kernel, accepted or not).
int blocking_connect(std::uint16_t port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  check_syscall(fd, "socket");
  SocketAddress to("127.0.0.1", port);
  check_syscall(::connect(fd, to.data(), to.size()), "connect");
  return fd;
}

}  // namespace

STRATA_LOOP_TEST_CASE("Server: sockets() lists the bound addresses; close() stops serving",
                      "[transports][server]") {
  Accepted accepted;
  TestLoop loop(TestType::kind);
  auto body = [&]() -> Coro<void> {
    auto serving = serve(accepted);
    std::unique_ptr<Server> server = co_await serving;
    CHECK(&server->get_loop() == &loop.get());
    CHECK(server->is_serving());
    std::vector<strata::ServerSocket> sockets = server->sockets();
    REQUIRE(sockets.size() == 1);
    CHECK(sockets[0].fd >= 0);
    SocketAddress name;
    socklen_t len = SocketAddress::capacity();
    REQUIRE(::getsockname(sockets[0].fd, name.mutable_data(), &len) == 0);
    name.set_size(len);
    CHECK(name == sockets[0].address);
    server->close();
    CHECK_FALSE(server->is_serving());
    CHECK(server->sockets().empty());
    server->close();  // idempotent
    auto closing = server->wait_closed();
    co_await closing;  // closed, no connections: at once
    CHECK_THROWS_AS(server->start_serving(), strata::InvalidStateError);
    CHECK_THROWS_AS(server->serve_forever(), strata::InvalidStateError);
  };
  loop.run(body());
}

STRATA_LOOP_TEST_CASE("Server: with start_serving = false, connects are refused until "
                      "start_serving()",
                      "[transports][server]") {
  Accepted accepted;
  Record refused;
  Record client;
  TestLoop loop(TestType::kind);
  auto body = [&]() -> Coro<void> {
    ServerOptions options;
    options.start_serving = false;
    auto serving = serve(accepted, options);
    std::unique_ptr<Server> server = co_await serving;
    CHECK_FALSE(server->is_serving());
    const std::uint16_t port = port_of(*server);
    auto early = connect(refused, port);
    auto early_failing = failure_of(std::move(early));
    Failure f = co_await early_failing;
    CHECK(f.code == std::errc::connection_refused);  // bound, not listening yet
    auto starting = server->start_serving();
    co_await starting;
    CHECK(server->is_serving());
    auto again = server->start_serving();  // a no-op
    co_await again;
    auto connecting = connect(client, port);
    Connection<RecordingProtocol> c = co_await connecting;
    auto echo = check_echo(c, &client, "now serving");
    co_await echo;
    c.transport->close();
    co_await accepted.wait_all_lost();
  };
  loop.run(body());
}

STRATA_LOOP_TEST_CASE("Server: close() leaves open connections open, and wait_closed() waits for "
                      "them to end",
                      "[transports][server]") {
  Accepted accepted;
  Record client;
  Record late;
  TestLoop loop(TestType::kind);
  auto body = [&]() -> Coro<void> {
    auto serving = serve(accepted);
    std::unique_ptr<Server> server = co_await serving;
    const std::uint16_t port = port_of(*server);
    auto connecting = connect(client, port);
    Connection<RecordingProtocol> c = co_await connecting;
    co_await accepted.wait_made(1);

    auto never_closed = server->wait_closed();
    auto early_wait = loop->create_task(std::move(never_closed));
    co_await next_iteration();
    CHECK_FALSE(early_wait.done());  // not closed yet, even with a connection open

    server->close();
    auto echo = check_echo(c, &client, "still here");
    co_await echo;
    auto late_connect = connect(late, port);
    auto late_failing = failure_of(std::move(late_connect));
    Failure f = co_await late_failing;
    CHECK(f.code == std::errc::connection_refused);

    auto closing = server->wait_closed();
    auto waiting = loop->create_task(std::move(closing));
    co_await next_iteration();
    co_await next_iteration();
    CHECK_FALSE(waiting.done());
    CHECK_FALSE(early_wait.done());
    c.transport->close();
    co_await accepted.wait_all_lost();
    co_await waiting;
    co_await early_wait;
  };
  loop.run(body());
  CHECK(grammar_error(accepted.records[0]->events) == "");
  CHECK(late.created == 0);
}

STRATA_LOOP_TEST_CASE("Server: close_clients() closes every connection, abort_clients() aborts them",
                      "[transports][server]") {
  Accepted accepted;
  accepted.echo = false;
  Record a;
  Record b;
  Record c;
  TestLoop loop(TestType::kind);
  auto body = [&]() -> Coro<void> {
    auto serving = serve(accepted);
    std::unique_ptr<Server> server = co_await serving;
    const std::uint16_t port = port_of(*server);
    auto ca = connect(a, port);
    co_await ca;
    auto cb = connect(b, port);
    co_await cb;
    co_await accepted.wait_made(2);
    accepted.records[0]->transport->write("last words");  // close() sends it first
    server->close_clients();
    CHECK(server->is_serving());  // the server itself goes on
    co_await a.wait_lost();
    co_await b.wait_lost();
    co_await accepted.wait_all_lost();
    CHECK(a.received == "last words");
    CHECK(accepted.records[0]->lost_ec == std::error_code());
    CHECK(accepted.records[1]->lost_ec == std::error_code());

    auto cc = connect(c, port);
    co_await cc;
    co_await accepted.wait_made(3);
    server->abort_clients();
    co_await accepted.wait_all_lost();
    CHECK(accepted.records[2]->lost_ec == std::errc::operation_canceled);
    co_await c.wait_lost();

    server->close();
    auto closing = server->wait_closed();
    co_await closing;
  };
  loop.run(body());
  for (const auto& r : accepted.records) CHECK(grammar_error(r->events) == "");
}

STRATA_LOOP_TEST_CASE("Server: cancelling serve_forever() closes the server, waits for its "
                      "connections, and ends cancelled",
                      "[transports][server]") {
  Accepted accepted;
  Record client;
  TestLoop loop(TestType::kind);
  auto body = [&]() -> Coro<void> {
    ServerOptions options;
    options.start_serving = false;
    auto serving = serve(accepted, options);
    std::unique_ptr<Server> server = co_await serving;
    const std::uint16_t port = port_of(*server);
    auto task = loop->create_task(server->serve_forever());
    co_await next_iteration();
    CHECK(server->is_serving());
    CHECK_THROWS_AS(server->serve_forever(), strata::InvalidStateError);  // one at a time
    auto connecting = connect(client, port);
    Connection<RecordingProtocol> c = co_await connecting;
    co_await accepted.wait_made(1);

    task.cancel();
    co_await next_iteration();
    co_await next_iteration();
    CHECK_FALSE(server->is_serving());
    CHECK(server->sockets().empty());
    CHECK_FALSE(task.done());  // waiting for the connection to end
    c.transport->close();
    auto ending = failure_of(task);
    Failure f = co_await ending;
    CHECK(f.kind == "CancelledError");
  };
  loop.run(body());
}

STRATA_LOOP_TEST_CASE("Server: serve_forever() returns once close() is called",
                      "[transports][server]") {
  Accepted accepted;
  TestLoop loop(TestType::kind);
  auto body = [&]() -> Coro<void> {
    auto serving = serve(accepted);
    std::unique_ptr<Server> server = co_await serving;
    auto task = loop->create_task(server->serve_forever());
    co_await next_iteration();
    CHECK_FALSE(task.done());
    server->close();
    co_await task;
    CHECK_FALSE(server->is_serving());
  };
  loop.run(body());
}

STRATA_LOOP_TEST_CASE("Server: an exception from the factory goes to the exception handler, that "
                      "connection is closed, and the server goes on",
                      "[transports][server]") {
  Accepted accepted;
  accepted.throw_on_call = 0;
  Record first;
  Record second;
  TestLoop loop(TestType::kind);
  auto body = [&]() -> Coro<void> {
    auto serving = serve(accepted);
    std::unique_ptr<Server> server = co_await serving;
    const std::uint16_t port = port_of(*server);
    auto c1 = connect(first, port);
    co_await c1;
    co_await first.wait_lost();  // the server closed it at once
    CHECK(first.received.empty());
    auto c2 = connect(second, port);
    Connection<RecordingProtocol> c = co_await c2;
    auto echo = check_echo(c, &second, "second time lucky");
    co_await echo;
    c.transport->close();
    co_await accepted.wait_all_lost();
  };
  loop.run(body());
  REQUIRE(loop.errors().size() == 1);
  CHECK(loop.errors()[0].message == "Error on transport creation for incoming connection");
  CHECK(strata::describe_exception(loop.errors()[0].exception) == "factory refused connection 0");
  CHECK(accepted.factory_calls == 2);
}

STRATA_LOOP_TEST_CASE("Server: a factory that closes the server while connections wait: the "
                      "first is served, the others are closed, no descriptor leaks",
                      "[transports][server]") {
  // The selector loop leaves the waiting connections in the kernel's queue, which the close of
  // the listening socket resets; the proactor may have accepted them already, and closes them.
  Accepted accepted;
  TestLoop loop(TestType::kind);
  const int fds_before = strata::testing::count_open_fds();
  std::vector<int> clients;
  auto body = [&]() -> Coro<void> {
    std::unique_ptr<Server> server;
    auto inner = accepted.factory();
    auto factory = [&server, inner]() mutable {
      server->close();  // from inside the first accept's report
      return inner();
    };
    auto serving = strata::create_server(factory, "127.0.0.1", 0);
    server = co_await serving;
    const std::uint16_t port = port_of(*server);
    for (int i = 0; i < 5; ++i) clients.push_back(blocking_connect(port));  // all queued now
    co_await accepted.wait_made(1);
    CHECK_FALSE(server->is_serving());
    // Every other client sees its connection end (EOF or a reset), and none gets a protocol.
    std::size_t ended = 0;
    strata::Event readable;
    for (int fd : clients) {
      loop->add_reader(fd, [&readable] { readable.set(); });
    }
    while (ended < clients.size() - 1) {
      readable.clear();
      ended = 0;
      for (int fd : clients) {
        char byte = 0;
        const ssize_t n = ::recv(fd, &byte, 1, MSG_DONTWAIT | MSG_PEEK);
        if (n == 0 || (n < 0 && errno == ECONNRESET)) ++ended;
      }
      if (ended < clients.size() - 1) co_await readable.wait();
    }
    for (int fd : clients) loop->remove_reader(fd);
    CHECK(accepted.factory_calls == 1);
    for (int fd : clients) ::close(fd);
    clients.clear();
    co_await accepted.wait_all_lost();
    auto closed = server->wait_closed();
    co_await closed;
  };
  loop.run(body());
  for (int fd : clients) ::close(fd);
  CHECK(strata::testing::count_open_fds() == fds_before);
}

STRATA_LOOP_TEST_CASE("Server: a flood of waiting connections is served at most backlog per "
                      "loop iteration, every one of them",
                      "[transports][server]") {
  Accepted accepted;
  TestLoop loop(TestType::kind);
  std::vector<int> clients;
  std::uint64_t iteration = 0;
  std::size_t in_iteration = 0;
  std::size_t most_in_one = 0;
  auto body = [&]() -> Coro<void> {
    auto inner = accepted.factory();
    auto factory = [&, inner]() mutable {
      const std::uint64_t now = loop->metrics().iterations;
      in_iteration = now == iteration ? in_iteration + 1 : 1;
      iteration = now;
      most_in_one = std::max(most_in_one, in_iteration);
      return inner();
    };
    ServerOptions options;
    options.backlog = 4;
    auto serving = strata::create_server(factory, "127.0.0.1", 0, options);
    std::unique_ptr<Server> server = co_await serving;
    const std::uint16_t port = port_of(*server);
    // Queued in the kernel before the loop runs again (SYN cookies aside, a backlog of 4
    // still completes these handshakes: Linux queues a few more than the backlog).
    for (int i = 0; i < 5; ++i) clients.push_back(blocking_connect(port));
    co_await accepted.wait_made(5);
    CHECK(most_in_one >= 1);
    CHECK(most_in_one <= 4);
    for (int fd : clients) ::close(fd);
    clients.clear();
    co_await accepted.wait_all_lost();
    server->close();
    auto closed = server->wait_closed();
    co_await closed;
  };
  loop.run(body());
  for (int fd : clients) ::close(fd);
  CHECK(accepted.factory_calls == 5);
}

// Not under UndefinedBehaviorSanitizer: its vptr check tests memory for readability through a
// pipe(), which fails with every descriptor taken, so every virtual call here is reported as
// "invalid vptr". The fault-injection tests (tests/fault) cover EMFILE from accept as well.
#ifndef STRATA_TEST_UBSAN
STRATA_LOOP_TEST_CASE("Server: out of descriptors, accepting pauses for accept_retry_delay with one "
                      "warning, without spinning, then resumes",
                      "[transports][server]") {
  Accepted accepted;
  Record client_side;
  LogRecorder logs;
  FdLimit limit;
  TestLoop loop(TestType::kind);
  int client = -1;
  auto body = [&]() -> Coro<void> {
    ServerOptions options;
    options.accept_retry_delay = 200ms;
    auto serving = serve(accepted, options);
    std::unique_ptr<Server> server = co_await serving;
    const int listen_fd = server->sockets()[0].fd;
    client = blocking_connect(port_of(*server));  // queued in the kernel, not accepted yet
    limit.exhaust();  // from now on, accept() fails with EMFILE
    const strata::TimePoint start = loop->time();
    auto warned = logs.wait_count(1);
    co_await warned;
    // Descriptors back first (the retry is 200 ms away): a sanitizer's checks need some too.
    limit.restore();
    REQUIRE(logs.records.size() == 1);
    CHECK(logs.records[0].first == strata::LogLevel::warning);
    CHECK_THAT(logs.records[0].second, Catch::Matchers::Contains("accept on 127.0.0.1:") &&
                                           Catch::Matchers::Contains("Too many open files") &&
                                           Catch::Matchers::Contains("200 ms"));
    // Not spinning: the listening socket is no longer watched. (remove_reader() reports
    // whether a reader was registered.)
    CHECK_FALSE(loop->remove_reader(listen_fd));
    CHECK(accepted.factory_calls == 0);
    auto made = accepted.wait_made(1);
    co_await made;  // after the retry delay, the queued connection is accepted
    CHECK(loop->time() - start >= 200ms);
    CHECK(logs.records.size() == 1);  // one warning for one failure
    check_syscall(static_cast<int>(::send(client, "ping", 4, MSG_NOSIGNAL)), "send");
    co_await accepted.records[0]->wait_received(4);
    CHECK(accepted.records[0]->received == "ping");
    ::close(client);
    client = -1;
    co_await accepted.wait_all_lost();
    CHECK(server->is_serving());
  };
  loop.run(body());
  if (client >= 0) ::close(client);
  CHECK(loop.errors().empty());
}
#endif  // STRATA_TEST_UBSAN

STRATA_LOOP_TEST_CASE("Server: destroyed while connections are open, it leaves them working",
                      "[transports][server]") {
  Accepted accepted;
  Record client;
  TestLoop loop(TestType::kind);
  auto body = [&]() -> Coro<void> {
    auto serving = serve(accepted);
    std::unique_ptr<Server> server = co_await serving;
    auto connecting = connect(client, port_of(*server));
    Connection<RecordingProtocol> c = co_await connecting;
    co_await accepted.wait_made(1);
    auto closing = server->wait_closed();
    auto waiting = loop->create_task(std::move(closing));
    co_await next_iteration();
    CHECK_FALSE(waiting.done());
    server.reset();
    co_await waiting;  // released: there is no server left to wait for
    auto echo = check_echo(c, &client, "orphaned but fine");
    co_await echo;
    c.transport->close();
    co_await accepted.wait_all_lost();  // the transport no longer tells the dead server
  };
  loop.run(body());
  CHECK(grammar_error(accepted.records[0]->events) == "");
}

STRATA_LOOP_TEST_CASE("Server: closing the loop closes the server and aborts its connections",
                      "[transports][server]") {
  Accepted accepted;
  Record client;
  std::unique_ptr<Server> server;  // outlives the loop: destroyed after it closed
  {
    TestLoop loop(TestType::kind);
    auto body = [&]() -> Coro<void> {
      auto serving = serve(accepted);
      server = co_await serving;
      auto connecting = connect(client, port_of(*server));
      co_await connecting;
      co_await accepted.wait_made(1);
    };
    loop.run(body());
  }
  CHECK(accepted.records[0]->lost);
  CHECK(accepted.records[0]->lost_ec == strata::errc::loop_closed);
  CHECK(client.lost_ec == strata::errc::loop_closed);
  CHECK(server->sockets().empty());
  CHECK_FALSE(server->is_serving());
  server.reset();
}

STRATA_LOOP_TEST_CASE("Server: wait_closed() is cancel-safe", "[transports][server]") {
  Accepted accepted;
  Record client;
  TestLoop loop(TestType::kind);
  auto body = [&]() -> Coro<void> {
    auto serving = serve(accepted);
    std::unique_ptr<Server> server = co_await serving;
    auto connecting = connect(client, port_of(*server));
    Connection<RecordingProtocol> c = co_await connecting;
    co_await accepted.wait_made(1);
    server->close();
    auto cancelled = loop->create_task(server->wait_closed());
    co_await next_iteration();
    cancelled.cancel();
    auto cancelling = failure_of(cancelled);
    Failure f = co_await cancelling;
    CHECK(f.kind == "CancelledError");
    auto waiting = loop->create_task(server->wait_closed());
    c.transport->close();
    co_await waiting;
  };
  loop.run(body());
}

STRATA_LOOP_TEST_CASE("Server: a server started at once after another one closed its connections "
                      "serves",
                      "[transports][server]") {
  // Each round starts as soon as wait_closed() returns, while the I/O of the closed sockets
  // (the listener's wait, the connection's read) may still be ending in the backend, and the
  // new sockets usually get the closed ones' numbers. Nothing of the old ones may reach them.
  Accepted accepted;
  std::vector<std::unique_ptr<Record>> clients;  // each outlives its connection
  TestLoop loop(TestType::kind);
  auto body = [&]() -> Coro<void> {
    for (int round = 0; round < 3; ++round) {
      auto serving = serve(accepted);
      std::unique_ptr<Server> server = co_await serving;
      clients.push_back(std::make_unique<Record>());
      Record& client = *clients.back();
      auto connecting = connect(client, port_of(*server));
      Connection<RecordingProtocol> c = co_await connecting;
      auto made = accepted.wait_made(static_cast<std::size_t>(round) + 1);
      co_await made;
      auto echo = check_echo(c, &client, "round " + std::to_string(round));
      co_await echo;
      server->close();
      server->close_clients();
      auto closing = server->wait_closed();
      co_await closing;
    }
    for (auto& client : clients) {
      auto eof = client->wait_eof();
      co_await eof;
    }
    CHECK(accepted.records.size() == 3);
  };
  loop.run(body());
}
