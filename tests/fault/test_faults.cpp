// Fault injection (issue 11): the transports under EAGAIN, short counts, ECONNRESET and EPIPE
// from send/recv, EMFILE from accept and failed connects. Every fault runs on every backend
// of the selector loop. The proactor's stream I/O, accepts and connects are io_uring
// operations, which never call the C library functions that the shim wraps; its EMFILE is
// tested with a real descriptor limit (tests/transports/test_server.cpp) and its refused
// connects with a closed port (tests/transports/test_tcp.cpp). The
// faults come from libstrata_fault.so (fault_shim.c), which CTest LD_PRELOADs; each test
// proves the fault really happened (the shim's counters), that no byte was lost or duplicated
// (a known pattern through an echo server, compared byte-exact), and that connection_lost
// fired exactly once, with the right error.
#include <catch2/catch.hpp>

#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstddef>
#include <exception>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include <strata/core/coro.hpp>
#include <strata/core/errors.hpp>
#include <strata/streams/streams.hpp>
#include <strata/transports/server.hpp>
#include <strata/transports/ssl.hpp>
#include <strata/transports/tcp.hpp>

#include "fault_api.hpp"
#include "loop_test.hpp"
#include "net_test_support.hpp"
#include "stream_test_support.hpp"
#include "tls_test_support.hpp"

using namespace std::chrono_literals;
using strata::ConnectOptions;
using strata::Connection;
using strata::Coro;
using strata::Server;
using strata::ServerOptions;
using strata::SslOptions;
using strata::StreamReader;
using strata::StreamWriter;
using strata::Transport;
using strata::fault::FaultPlan;
using strata::testing::Accepted;
using strata::testing::count_open_fds;
using strata::testing::describe_failure;
using strata::testing::exception_of;
using strata::testing::Failure;
using strata::testing::first_mismatch;
using strata::testing::grammar_error;
using strata::testing::join;
using strata::testing::next_iteration;
using strata::testing::pattern;
using strata::testing::Record;
using strata::testing::recorder;
using strata::testing::RecordingProtocol;
using strata::testing::TestLoop;

namespace {

constexpr int SEND = STRATA_FAULT_SEND;
constexpr int RECV = STRATA_FAULT_RECV;
constexpr int ACCEPT = STRATA_FAULT_ACCEPT;
constexpr int CONNECT = STRATA_FAULT_CONNECT;
constexpr int FOREVER = STRATA_FAULT_FOREVER;

std::uint16_t port_of(const Server& server) { return server.sockets().at(0).address.port(); }

int fd_of(const Transport& t) {
  std::optional<int> fd = t.get_extra_info_as<int>("socket");
  REQUIRE(fd);
  return *fd;
}

long count_of(const std::vector<std::string>& events, std::string_view e) {
  return std::count(events.begin(), events.end(), e);
}

/// connection_lost() ran exactly once, last, and the callbacks followed the grammar.
void check_lost_once(const Record& r) {
  INFO("events: " << join(r.events));
  CHECK(grammar_error(r.events) == "");
  CHECK(count_of(r.events, "lost") == 1);
  CHECK(r.lost);
}

/// Writes @p data in @p chunk-byte pieces, one loop iteration apart, alternating write() and
/// (with @p use_writelines) writelines() of two halves, so that both send() and sendmsg() run.
Coro<void> send_in_chunks(Transport* t, const std::string* data, std::size_t chunk,
                          bool use_writelines) {
  std::size_t i = 0;
  for (std::size_t off = 0; off < data->size(); off += chunk, ++i) {
    const std::string_view piece = std::string_view(*data).substr(off, chunk);
    if (use_writelines && i % 2 == 1 && piece.size() > 1) {
      const std::size_t half = piece.size() / 2;
      const std::span<const std::byte> parts[2] = {strata::testing::bytes(piece.substr(0, half)),
                                                   strata::testing::bytes(piece.substr(half))};
      t->writelines(parts);
    } else {
      t->write(strata::testing::bytes(piece));
    }
    auto tick = next_iteration();
    co_await tick;
  }
}

/// An echo server recording its connections (Accepted, echoing), on 127.0.0.1.
Coro<std::unique_ptr<Server>> serve(Accepted* accepted, ServerOptions options) {
  auto serving = strata::create_server(accepted->factory(), "127.0.0.1", 0, options);
  co_return co_await serving;
}

Coro<Connection<RecordingProtocol>> connect_to(Record* r, std::uint16_t port,
                                               ConnectOptions options) {
  auto connecting = strata::create_connection(recorder(*r), "127.0.0.1", port, options);
  co_return co_await connecting;
}

/// Runs @p n loop iterations (to see that nothing more arrives).
Coro<void> iterations(int n) {
  for (int i = 0; i < n; ++i) {
    auto tick = next_iteration();
    co_await tick;
  }
}

/// Sends @p payload from a client to an echo server (the client's send() and recv() and the
/// server's faulted by @p install, given the client's and the server's descriptors), checks the
/// echo is byte-exact, closes, and checks both ends ended once, cleanly.
template <class Install>
void echo_under_faults(strata::LoopKind kind, const std::string& payload, std::size_t chunk,
                       bool use_writelines, Install install,
                       const ConnectOptions& client_options = {},
                       const ServerOptions& server_options = {}) {
  Accepted accepted;
  Record client;
  TestLoop loop(kind);  // after the records: its tasks refer to them
  auto body = [&]() -> Coro<void> {
    auto serving = serve(&accepted, server_options);
    std::unique_ptr<Server> server = co_await serving;
    auto connecting = connect_to(&client, port_of(*server), client_options);
    Connection<RecordingProtocol> c = co_await connecting;
    auto made = accepted.wait_made(1);
    co_await made;
    install(fd_of(*c.transport), fd_of(*accepted.records.at(0)->transport));
    auto sending = send_in_chunks(c.transport, &payload, chunk, use_writelines);
    co_await sending;
    auto echoed = client.wait_received(payload.size());
    co_await echoed;
    c.transport->close();
    auto lost = client.wait_lost();
    co_await lost;
    auto all = accepted.wait_all_lost();
    co_await all;
    server->close();
  };
  loop.run(body(), 60s);
  REQUIRE(accepted.records.size() == 1);
  const Record& server_side = *accepted.records[0];
  CHECK(server_side.received.size() == payload.size());
  CHECK(first_mismatch(server_side.received, payload) == std::string::npos);
  CHECK(client.received.size() == payload.size());
  CHECK(first_mismatch(client.received, payload) == std::string::npos);
  check_lost_once(client);
  check_lost_once(server_side);
  CHECK(!client.lost_ec);
  CHECK(!server_side.lost_ec);
  CHECK(loop.errors().empty());
}

}  // namespace

// ---- The shim itself ------------------------------------------------------------------

STRATA_SELECTOR_LOOP_TEST_CASE("fault: the shim is preloaded and sees the transports' socket calls",
                      "[fault]") {
  FaultPlan plan;
  echo_under_faults(TestType::kind, pattern(1000, 1), 1000, false, [](int, int) {});
  CHECK(plan.calls(SEND) >= 2);     // the client's write and the server's echo
  CHECK(plan.calls(RECV) >= 2);     // the server's read and the client's
  CHECK(plan.calls(ACCEPT) >= 1);
  CHECK(plan.calls(CONNECT) >= 1);
  CHECK(plan.injected(SEND) == 0);  // an empty plan injects nothing
}

// ---- EAGAIN and EINTR -------------------------------------------------------------------

STRATA_SELECTOR_LOOP_TEST_CASE("fault: EAGAIN and EINTR at chosen sends and receives lose nothing",
                      "[fault]") {
  FaultPlan plan;
  const std::string payload = pattern(256 * 1024, 2);
  std::vector<int> ids;
  echo_under_faults(TestType::kind, payload, 16 * 1024, true, [&](int client_fd, int server_fd) {
    // The client's first write (the hot path: buffered, then the writer), then its 2nd and 3rd
    // sends (the writer's, twice).
    ids.push_back(plan.fail(SEND, client_fd, 0, 1, EAGAIN));
    ids.push_back(plan.fail(SEND, client_fd, 1, 2, EAGAIN));
    // The server's echo: three EAGAINs in a row (write, then twice in on_writable).
    ids.push_back(plan.fail(SEND, server_fd, 0, 3, EAGAIN));
    // The server's 1st read is interrupted; its 2nd and 3rd find "nothing" although data waits.
    ids.push_back(plan.fail(RECV, server_fd, 0, 1, EINTR));
    ids.push_back(plan.fail(RECV, server_fd, 1, 2, EAGAIN));
    // The client's first two reads, then an EINTR.
    ids.push_back(plan.fail(RECV, client_fd, 0, 2, EWOULDBLOCK));
    ids.push_back(plan.fail(RECV, client_fd, 2, 1, EINTR));
  });
  const long expected[] = {1, 2, 3, 1, 2, 2, 1};
  for (std::size_t i = 0; i < ids.size(); ++i) {
    INFO("rule " << i);
    CHECK(plan.fired(ids[i]) == expected[i]);
  }
  CHECK(plan.injected(SEND) == 6);
  CHECK(plan.injected(RECV) == 6);
}

// ---- Short counts -----------------------------------------------------------------------

STRATA_SELECTOR_LOOP_TEST_CASE("fault: every send and read 1 byte at a time: complete, in order",
                      "[fault]") {
  FaultPlan plan;
  const std::string payload = pattern(3000, 3);
  std::vector<int> ids;
  echo_under_faults(TestType::kind, payload, 700, true, [&](int client_fd, int server_fd) {
    ids.push_back(plan.shorten(SEND, client_fd, 0, FOREVER, 1));
    ids.push_back(plan.shorten(SEND, server_fd, 0, FOREVER, 1));
    ids.push_back(plan.shorten(RECV, server_fd, 0, FOREVER, 1));
  });
  // Every byte went in a send of its own, each way; the server read them one by one.
  CHECK(plan.fired(ids[0]) >= 3000);
  CHECK(plan.fired(ids[1]) >= 3000);
  CHECK(plan.fired(ids[2]) >= 3000);
}

STRATA_SELECTOR_LOOP_TEST_CASE("fault: short sends of K bytes and short reads: complete, in order",
                      "[fault]") {
  FaultPlan plan;
  const std::string payload = pattern(256 * 1024, 4);
  std::vector<int> ids;
  echo_under_faults(TestType::kind, payload, 10000, true, [&](int client_fd, int server_fd) {
    ids.push_back(plan.shorten(SEND, client_fd, 0, FOREVER, 1000));
    ids.push_back(plan.shorten(SEND, server_fd, 3, FOREVER, 4093));
    ids.push_back(plan.shorten(RECV, client_fd, 0, 50, 777));
    ids.push_back(plan.shorten(RECV, server_fd, 5, 20, 3));
  });
  CHECK(plan.fired(ids[0]) >= 256);  // 256 KiB at 1000 bytes a send, at least
  CHECK(plan.fired(ids[1]) >= 10);
  CHECK(plan.fired(ids[2]) == 50);
  CHECK(plan.fired(ids[3]) == 20);
}

// ---- ECONNRESET on recv -----------------------------------------------------------------

STRATA_SELECTOR_LOOP_TEST_CASE("fault: ECONNRESET on a client recv: connection_lost(reset) once, "
                      "nothing received after",
                      "[fault]") {
  FaultPlan plan;
  const std::string payload = pattern(64 * 1024, 5);
  Accepted accepted;
  Record client;
  TestLoop loop(TestType::kind);
  int short_reads = -1;
  int reset = -1;
  std::string at_loss;
  std::vector<std::string> events_at_loss;
  auto body = [&]() -> Coro<void> {
    auto serving = serve(&accepted, {});
    std::unique_ptr<Server> server = co_await serving;
    auto connecting = connect_to(&client, port_of(*server), {});
    Connection<RecordingProtocol> c = co_await connecting;
    const int fd = fd_of(*c.transport);
    short_reads = plan.shorten(RECV, fd, 0, 2, 100);  // two reads of 100 bytes
    reset = plan.fail(RECV, fd, 2, 1, ECONNRESET);    // then the reset
    c.transport->write(payload);
    auto lost = client.wait_lost();
    co_await lost;
    at_loss = client.received;
    events_at_loss = client.events;
    auto more = iterations(20);  // the rest of the echo is still in the socket: not delivered
    co_await more;
    auto all = accepted.wait_all_lost();
    co_await all;
    server->close();
  };
  loop.run(body(), 30s);
  CHECK(plan.fired(short_reads) == 2);
  CHECK(plan.fired(reset) == 1);
  CHECK(client.received == payload.substr(0, 200));
  CHECK(client.received == at_loss);
  CHECK(client.events == events_at_loss);
  check_lost_once(client);
  CHECK(client.lost_ec == std::errc::connection_reset);
  REQUIRE(accepted.records.size() == 1);
  check_lost_once(*accepted.records[0]);
  CHECK(loop.errors().empty());
}

STRATA_SELECTOR_LOOP_TEST_CASE("fault: ECONNRESET on a server recv while its echo is buffered: "
                      "connection_lost(reset) once, the buffer dropped",
                      "[fault]") {
  FaultPlan plan;
  const std::string payload = pattern(64 * 1024, 6);
  Accepted accepted;
  Record client;
  TestLoop loop(TestType::kind);
  int blocked = -1;
  int reset = -1;
  int short_read = -1;
  auto body = [&]() -> Coro<void> {
    auto serving = serve(&accepted, {});
    std::unique_ptr<Server> server = co_await serving;
    auto connecting = connect_to(&client, port_of(*server), {});
    Connection<RecordingProtocol> c = co_await connecting;
    auto made = accepted.wait_made(1);
    co_await made;
    const int fd = fd_of(*accepted.records[0]->transport);
    blocked = plan.fail(SEND, fd, 0, FOREVER, EAGAIN);  // the echo stays buffered
    reset = plan.fail(RECV, fd, 1, 1, ECONNRESET);      // the 2nd read fails
    short_read = plan.shorten(RECV, fd, 0, 1, 1000);    // the 1st reads 1000 bytes only
    c.transport->write(payload);
    auto all = accepted.wait_all_lost();
    co_await all;
    auto lost = client.wait_lost();  // the server closed its socket: EOF or a reset
    co_await lost;
    server->close();
  };
  loop.run(body(), 30s);
  CHECK(plan.fired(blocked) >= 1);
  CHECK(plan.fired(reset) == 1);
  CHECK(plan.fired(short_read) == 1);
  REQUIRE(accepted.records.size() == 1);
  const Record& server_side = *accepted.records[0];
  check_lost_once(server_side);
  CHECK(server_side.lost_ec == std::errc::connection_reset);
  CHECK(server_side.received.size() == 1000);
  CHECK(server_side.received == payload.substr(0, 1000));
  CHECK(client.received.empty());  // no echo ever left the server
  check_lost_once(client);
  CHECK(loop.errors().empty());
}

// ---- EPIPE on send ----------------------------------------------------------------------

STRATA_SELECTOR_LOOP_TEST_CASE("fault: EPIPE on send: connection_lost(broken_pipe) once", "[fault]") {
  // 0: write()'s own send; 1: the writer's send of a buffered write; 2: writelines()'s
  // sendmsg; 3: the server's echo.
  const int variant = GENERATE(0, 1, 2, 3);
  INFO("variant " << variant);
  FaultPlan plan;
  const std::string payload = pattern(10000, 7);
  Accepted accepted;
  Record client;
  TestLoop loop(TestType::kind);
  std::vector<int> ids;
  auto body = [&]() -> Coro<void> {
    auto serving = serve(&accepted, {});
    std::unique_ptr<Server> server = co_await serving;
    auto connecting = connect_to(&client, port_of(*server), {});
    Connection<RecordingProtocol> c = co_await connecting;
    auto made = accepted.wait_made(1);
    co_await made;
    const int client_fd = fd_of(*c.transport);
    const int server_fd = fd_of(*accepted.records[0]->transport);
    const std::string_view half1 = std::string_view(payload).substr(0, 5000);
    const std::string_view half2 = std::string_view(payload).substr(5000);
    switch (variant) {
      case 0:
        ids.push_back(plan.fail(SEND, client_fd, 0, 1, EPIPE));
        c.transport->write(payload);
        break;
      case 1:
        ids.push_back(plan.fail(SEND, client_fd, 0, 1, EAGAIN));
        ids.push_back(plan.fail(SEND, client_fd, 1, 1, EPIPE));
        c.transport->write(payload);
        break;
      case 2: {
        ids.push_back(plan.fail(SEND, client_fd, 0, 1, EPIPE));
        const std::span<const std::byte> parts[2] = {strata::testing::bytes(half1),
                                                     strata::testing::bytes(half2)};
        c.transport->writelines(parts);
        break;
      }
      default:
        ids.push_back(plan.fail(SEND, server_fd, 0, 1, EPIPE));
        c.transport->write(payload);
        break;
    }
    if (variant != 3) {
      auto lost = client.wait_lost();
      co_await lost;
      c.transport->write(half1);  // dropped, quietly: the connection is gone
      auto more = iterations(5);
      co_await more;
    }
    auto all = accepted.wait_all_lost();
    co_await all;
    if (variant == 3) {
      c.transport->close();
      auto lost = client.wait_lost();
      co_await lost;
    }
    server->close();
  };
  loop.run(body(), 30s);
  for (int id : ids) CHECK(plan.fired(id) == 1);
  REQUIRE(accepted.records.size() == 1);
  const Record& server_side = *accepted.records[0];
  check_lost_once(client);
  check_lost_once(server_side);
  if (variant == 3) {
    CHECK(server_side.lost_ec == std::errc::broken_pipe);
    CHECK(server_side.received.size() >= 1);
    CHECK(server_side.received == payload.substr(0, server_side.received.size()));  // a prefix
    CHECK(client.received.empty());  // the echo failed, nothing went out
  } else {
    CHECK(client.lost_ec == std::errc::broken_pipe);
    CHECK(server_side.received.empty());  // the send failed: not one byte left
    CHECK(client.received.empty());
  }
  CHECK(loop.errors().empty());
}

// ---- accept() failing -------------------------------------------------------------------

STRATA_SELECTOR_LOOP_TEST_CASE("fault: EMFILE from accept: the server waits its retry delay, then "
                      "serves the connection that waited",
                      "[fault]") {
  FaultPlan plan;
  const std::string payload = pattern(20000, 8);
  Accepted accepted;
  Record clients[3];
  TestLoop loop(TestType::kind);
  int emfile = -1;
  int aborted = -1;
  auto body = [&]() -> Coro<void> {
    ServerOptions options;
    options.accept_retry_delay = 20ms;
    auto serving = serve(&accepted, options);
    std::unique_ptr<Server> server = co_await serving;
    const int listen_fd = server->sockets().at(0).fd;
    emfile = plan.fail(ACCEPT, listen_fd, 0, 2, EMFILE);        // twice: two pauses
    aborted = plan.fail(ACCEPT, listen_fd, 2, 1, ECONNABORTED);  // transient: no pause
    std::vector<Connection<RecordingProtocol>> conns;
    for (Record& r : clients) {
      auto connecting = connect_to(&r, port_of(*server), {});  // the kernel completes these
      conns.push_back(co_await connecting);
    }
    for (auto& c : conns) c.transport->write(payload);
    for (Record& r : clients) {
      auto echoed = r.wait_received(payload.size());
      co_await echoed;
    }
    for (auto& c : conns) c.transport->close();
    for (Record& r : clients) {
      auto lost = r.wait_lost();
      co_await lost;
    }
    auto all = accepted.wait_all_lost();
    co_await all;
    server->close();
  };
  loop.run(body(), 30s);
  CHECK(plan.fired(emfile) == 2);
  CHECK(plan.fired(aborted) == 1);
  CHECK(accepted.records.size() == 3);
  for (const Record& r : clients) {
    CHECK(r.received == payload);
    check_lost_once(r);
    CHECK(!r.lost_ec);
  }
  for (const auto& r : accepted.records) {
    CHECK(r->received == payload);
    check_lost_once(*r);
  }
  CHECK(loop.errors().empty());  // EMFILE is logged as a warning, not an exception
}

// ---- connect() failing ------------------------------------------------------------------

STRATA_SELECTOR_LOOP_TEST_CASE("fault: connect refused (at once, or asynchronously): "
                      "create_connection throws connection_refused, nothing leaks",
                      "[fault]") {
  const bool async = GENERATE(false, true);
  INFO((async ? "asynchronous" : "synchronous") << " refusal");
  FaultPlan plan;
  Accepted accepted;
  Record client;
  TestLoop loop(TestType::kind);
  Failure failure;
  int rule = -1;
  int fds_before = -1;
  int fds_after = -1;
  auto body = [&]() -> Coro<void> {
    auto serving = serve(&accepted, {});
    std::unique_ptr<Server> server = co_await serving;
    fds_before = count_open_fds();
    rule = async ? plan.fail_connect_async(0, 1, ECONNREFUSED)
                 : plan.fail(CONNECT, -1, 0, 1, ECONNREFUSED);
    auto ended = exception_of(connect_to(&client, port_of(*server), {}));
    std::exception_ptr e = co_await ended;
    failure = describe_failure(e);
    if (async) {
      // The real connect went through: the server sees a connection that closes at once.
      auto made = accepted.wait_made(1);
      co_await made;
      auto all = accepted.wait_all_lost();
      co_await all;
    }
    fds_after = count_open_fds();
    server->close();
  };
  loop.run(body(), 30s);
  CHECK(plan.fired(rule) == 1);
  CHECK(failure.kind == "system_error");
  CHECK(failure.code == std::errc::connection_refused);
  CHECK(failure.what.find("127.0.0.1") != std::string::npos);
  CHECK(client.created == 0);  // no protocol was made for a failed connect
  CHECK(client.events.empty());
  CHECK(fds_after == fds_before);
  CHECK(loop.errors().empty());
}

// ---- The streams layer ------------------------------------------------------------------

namespace {

Coro<void> echo_handler(StreamReader reader, StreamWriter writer) {
  for (;;) {
    auto op = reader.read(64 * 1024);
    std::string chunk = co_await op;
    if (chunk.empty()) break;
    auto sending = writer.send(chunk);
    co_await sending;
  }
}

template <class A>
Coro<Failure> failure_of(A aw) {
  auto ended = exception_of(std::move(aw));
  std::exception_ptr e = co_await ended;
  co_return describe_failure(e);
}

}  // namespace

STRATA_SELECTOR_LOOP_TEST_CASE("fault: streams: open_connection refused throws connection_refused",
                      "[fault][streams]") {
  FaultPlan plan;
  TestLoop loop(TestType::kind);
  Failure failure;
  int rule = -1;
  auto body = [&]() -> Coro<void> {
    auto serving = strata::start_server(echo_handler, "127.0.0.1", 0);
    std::unique_ptr<Server> server = co_await serving;
    rule = plan.fail(CONNECT, -1, 0, 1, ECONNREFUSED);
    auto connecting = strata::open_connection("127.0.0.1", port_of(*server));
    auto failed = failure_of(std::move(connecting));
    failure = co_await failed;
    server->close();
    auto closed = server->wait_closed();
    co_await closed;
  };
  loop.run(body(), 30s);
  CHECK(plan.fired(rule) == 1);
  CHECK(failure.kind == "system_error");
  CHECK(failure.code == std::errc::connection_refused);
  CHECK(loop.errors().empty());
}

STRATA_SELECTOR_LOOP_TEST_CASE("fault: streams: EPIPE on send reaches drain() and wait_closed()",
                      "[fault][streams]") {
  FaultPlan plan;
  TestLoop loop(TestType::kind);
  Failure first_drain;
  Failure second_drain;
  Failure closed;
  int rule = -1;
  auto body = [&]() -> Coro<void> {
    auto serving = strata::start_server(echo_handler, "127.0.0.1", 0);
    std::unique_ptr<Server> server = co_await serving;
    auto connecting = strata::open_connection("127.0.0.1", port_of(*server));
    auto [reader, writer] = co_await connecting;
    std::optional<int> fd = writer.template get_extra_info_as<int>("socket");
    REQUIRE(fd);
    rule = plan.fail(SEND, *fd, 0, 1, EPIPE);
    writer.write("hello, nobody");
    auto drain1 = failure_of(writer.drain());
    first_drain = co_await drain1;
    auto drain2 = failure_of(writer.drain());
    second_drain = co_await drain2;
    auto waiting = failure_of(writer.wait_closed());
    closed = co_await waiting;
    server->close();
    auto server_closed = server->wait_closed();
    co_await server_closed;
  };
  loop.run(body(), 30s);
  CHECK(plan.fired(rule) == 1);
  CHECK(first_drain.kind == "system_error");
  CHECK(first_drain.code == std::errc::broken_pipe);
  CHECK(second_drain.kind == "system_error");  // still failing: the connection is gone
  CHECK(closed.kind == "system_error");
  CHECK(closed.code == std::errc::broken_pipe);
  CHECK(loop.errors().empty());
}

// ---- TLS ------------------------------------------------------------------------------

STRATA_SELECTOR_LOOP_TEST_CASE("fault: TLS: short sends and reads on every socket, handshake "
                      "included, still deliver the data complete",
                      "[fault][tls]") {
  FaultPlan plan;
  const std::string payload = pattern(64 * 1024, 9);
  int short_sends = -1;
  int short_reads = -1;
  int again = -1;
  ServerOptions server_options;
  server_options.ssl = SslOptions(strata::testing::test_server_context());
  ConnectOptions client_options;
  client_options.ssl = SslOptions(strata::testing::test_client_context());
  // Rules on any socket, from the start: the handshake's records are cut too.
  // (The first rule that acts wins: the EAGAIN rule goes before the FOREVER one.)
  again = plan.fail(SEND, -1, 3, 20, EAGAIN);
  short_sends = plan.shorten(SEND, -1, 0, FOREVER, 61);
  short_reads = plan.shorten(RECV, -1, 0, FOREVER, 157);
  echo_under_faults(TestType::kind, payload, 5000, true, [](int, int) {}, client_options,
                    server_options);
  CHECK(plan.fired(short_sends) >= 2 * 64 * 1024 / 61);
  CHECK(plan.fired(short_reads) >= 2 * 64 * 1024 / 157);
  CHECK(plan.fired(again) == 20);
}
