// The stream transport (transports/src/stream_transport.*), end to end over socketpair(AF_UNIX)
// and 127.0.0.1 TCP connections, wrapped with connect_accepted_socket().
#include <strata/transports/transport.hpp>

#include <catch2/catch.hpp>

#include <sys/socket.h>
#include <unistd.h>

#include <array>
#include <chrono>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <strata/core/coro.hpp>
#include <strata/core/errors.hpp>
#include <strata/core/sleep.hpp>
#include <strata/core/socket_address.hpp>
#include <strata/transports/accepted_socket.hpp>

#include "loop_test.hpp"
#include "net_test_support.hpp"
#include "stream_test_support.hpp"

using strata::Coro;
using strata::Transport;
using strata::testing::bytes;
using strata::testing::connect_record;
using strata::testing::connect_records;
using strata::testing::FdPair;
using strata::testing::first_mismatch;
using strata::testing::grammar_error;
using strata::testing::next_iteration;
using strata::testing::PairKind;
using strata::testing::pattern;
using strata::testing::Record;
using strata::testing::TestLoop;

namespace {

constexpr auto npos = std::string_view::npos;
const PairKind both_kinds[] = {PairKind::unix_socket, PairKind::tcp};

/// Closes @p r's transport if it is still open, then waits for its connection_lost().
Coro<void> close_and_wait(Record& r) {
  if (r.transport != nullptr) r.transport->close();
  co_await r.wait_lost();
}

}  // namespace

STRATA_LOOP_TEST_CASE("StreamTransport: round trips of 1 byte to 4 MiB arrive intact",
                      "[transports][stream_transport]") {
  for (PairKind kind : both_kinds) {
    INFO("pair: " << to_string(kind));
    Record client;
    Record server;
    server.echo = true;
    {
      TestLoop loop(TestType::kind);
      auto body = [&]() -> Coro<void> {
        co_await connect_records(make_pair(kind), client, server);
        std::string expected;
        for (std::size_t size : {1u, 2u, 1000u, 65535u, 65536u, 65537u, 1u << 20, 4u << 20}) {
          std::string data = pattern(size, static_cast<unsigned>(size));
          client.transport->write(data);
          expected += data;
          co_await client.wait_received(expected.size());
          REQUIRE(client.received.size() == expected.size());
          REQUIRE(first_mismatch(client.received, expected) == npos);
        }
        REQUIRE(server.received == expected);
        client.transport->close();
        co_await server.wait_lost();
        co_await client.wait_lost();
      };
      loop.run(body());
      CHECK(loop.errors().empty());
    }
    CHECK(grammar_error(client.events) == "");
    CHECK(grammar_error(server.events) == "");
    CHECK(!client.lost_ec);
    CHECK(!server.lost_ec);
    CHECK(client.alive == 0);
    CHECK(server.alive == 0);
  }
}

STRATA_LOOP_TEST_CASE(
    "StreamTransport: writelines sends many buffers, empty ones included, in order",
    "[transports][stream_transport]") {
  for (PairKind kind : both_kinds) {
    INFO("pair: " << to_string(kind));
    Record client;
    Record server;
    server.echo = true;
    TestLoop loop(TestType::kind);
    auto body = [&]() -> Coro<void> {
      co_await connect_records(make_pair(kind), client, server);
      // An empty piece first, while the write buffer has no storage yet.
      const std::string ab = "ab";
      const std::array<std::span<const std::byte>, 3> first = {
          std::span<const std::byte>(), bytes(ab), std::span<const std::byte>()};
      client.transport->writelines(first);
      co_await client.wait_received(2);
      REQUIRE(client.received == "ab");
      client.received.clear();
      server.received.clear();
      // 150 pieces, more than one system call's iovec array, of 0 to ~8 KiB.
      std::vector<std::string> pieces;
      std::string expected;
      for (unsigned i = 0; i < 150; ++i) {
        pieces.push_back(i % 7 == 3 ? std::string() : pattern((i * 977) % 8200 + 1, i));
        expected += pieces.back();
      }
      std::vector<std::span<const std::byte>> spans;
      spans.reserve(pieces.size());
      for (const auto& p : pieces) spans.push_back(bytes(p));
      client.transport->writelines(spans);
      client.transport->writelines({});  // a no-op
      co_await client.wait_received(expected.size());
      REQUIRE(client.received.size() == expected.size());
      REQUIRE(first_mismatch(client.received, expected) == npos);
      // Once more with a non-empty write buffer: the pieces queue behind it.
      client.received.clear();
      server.received.clear();
      std::string big = pattern(2u << 20, 7);
      client.transport->write(big);
      client.transport->writelines(spans);
      co_await client.wait_received(big.size() + expected.size());
      REQUIRE(first_mismatch(client.received, big + expected) == npos);
      co_await close_and_wait(client);
      co_await server.wait_lost();
    };
    loop.run(body());
    CHECK(grammar_error(client.events) == "");
    CHECK(grammar_error(server.events) == "");
  }
}

STRATA_LOOP_TEST_CASE(
    "StreamTransport: write_eof half-closes and eof_received false closes the peer",
    "[transports][stream_transport]") {
  for (PairKind kind : both_kinds) {
    INFO("pair: " << to_string(kind));
    Record client;
    Record server;
    server.keep_open_on_eof = false;
    TestLoop loop(TestType::kind);
    auto body = [&]() -> Coro<void> {
      co_await connect_records(make_pair(kind), client, server);
      Transport& t = *client.transport;
      CHECK(t.can_write_eof());
      t.write("ping");
      t.write_eof();
      t.write_eof();  // idempotent
      CHECK_THROWS_AS(t.write("more"), strata::InvalidStateError);
      std::string more = "more";
      std::vector<std::span<const std::byte>> spans{bytes(more)};
      CHECK_THROWS_AS(t.writelines(spans), strata::InvalidStateError);
      CHECK(t.is_reading());  // reading goes on after write_eof
      co_await server.wait_lost();
      co_await client.wait_lost();
    };
    loop.run(body());
    CHECK(server.received == "ping");
    CHECK(server.events == std::vector<std::string>{"made", "data", "eof", "lost"});
    // The server's close is the client's EOF; eof_received() returned false: closed.
    CHECK(client.events == std::vector<std::string>{"made", "eof", "lost"});
    CHECK(!server.lost_ec);
    CHECK(!client.lost_ec);
  }
}

STRATA_LOOP_TEST_CASE("StreamTransport: eof_received true keeps the connection open for writing",
                      "[transports][stream_transport]") {
  for (PairKind kind : both_kinds) {
    INFO("pair: " << to_string(kind));
    Record client;
    Record server;
    server.keep_open_on_eof = true;
    bool reading_after_eof = true;
    server.on_eof = [&](Transport& t) {
      reading_after_eof = t.is_reading();
      t.write("pong after eof");
    };
    TestLoop loop(TestType::kind);
    auto body = [&]() -> Coro<void> {
      co_await connect_records(make_pair(kind), client, server);
      client.transport->write("ping");
      client.transport->write_eof();
      co_await server.wait_eof();
      co_await client.wait_received(14);
      CHECK(client.received == "pong after eof");
      // Still half-open: the server has not closed, the client not lost.
      CHECK_FALSE(server.lost);
      CHECK_FALSE(client.lost);
      CHECK_FALSE(server.transport->is_closing());
      server.transport->write(" and more");
      co_await client.wait_received(23);
      server.transport->close();
      co_await server.wait_lost();
      co_await client.wait_lost();
    };
    loop.run(body());
    CHECK_FALSE(reading_after_eof);
    CHECK(client.received == "pong after eof and more");
    CHECK(server.events == std::vector<std::string>{"made", "data", "eof", "lost"});
    CHECK(client.events == std::vector<std::string>{"made", "data", "eof", "lost"});
    CHECK(!server.lost_ec);
    CHECK(!client.lost_ec);
  }
}

STRATA_LOOP_TEST_CASE("StreamTransport: a peer reset during a write ends with connection_reset or "
                      "broken_pipe",
                      "[transports][stream_transport]") {
  for (PairKind kind : both_kinds) {
    INFO("pair: " << to_string(kind));
    Record client;
    TestLoop loop(TestType::kind);
    int peer = -1;
    auto body = [&]() -> Coro<void> {
      FdPair p =
          kind == PairKind::tcp ? strata::testing::tcp_pair(4096) : strata::testing::unix_pair();
      peer = p.b;
      int small = 4096;
      ::setsockopt(p.a, SOL_SOCKET, SO_SNDBUF, &small, sizeof small);
      co_await connect_record(p.a, client);
      std::string data = pattern(4u << 20);
      client.transport->write(data);
      REQUIRE(client.transport->get_write_buffer_size() > 0);
      co_await next_iteration();
      // The peer goes away without reading: a TCP RST (SO_LINGER 0); for a Unix socket, the
      // close itself.
      linger lg{1, 0};
      ::setsockopt(peer, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
      ::close(peer);
      co_await client.wait_lost();
    };
    loop.run(body());
    INFO("lost with " << client.lost_ec.message());
    CHECK((client.lost_ec == std::errc::connection_reset ||
           client.lost_ec == std::errc::broken_pipe));
    CHECK(client.lost_ec.category() == std::system_category());
    CHECK(grammar_error(client.events) == "");
    CHECK(client.alive == 0);
  }
}

STRATA_LOOP_TEST_CASE("StreamTransport: writes after close are dropped and logged from the fifth",
                      "[transports][stream_transport]") {
  Record client;
  Record server;
  strata::testing::LogCapture logs;
  TestLoop loop(TestType::kind);
  auto body = [&]() -> Coro<void> {
    co_await connect_records(strata::testing::unix_pair(), client, server);
    Transport& t = *client.transport;
    t.close();
    CHECK(t.is_closing());
    for (int i = 0; i < 4; ++i) t.write("dropped");
    CHECK(logs.records.empty());
    t.write("dropped");  // the fifth
    std::string piece = "dropped";
    std::vector<std::span<const std::byte>> spans{bytes(piece)};
    t.writelines(spans);
    CHECK(t.get_write_buffer_size() == 0);
    co_await client.wait_lost();
    co_await server.wait_lost();
  };
  loop.run(body());
  REQUIRE(logs.records.size() == 1);
  CHECK(logs.records[0].first == strata::LogLevel::warning);
  CHECK(logs.records[0].second.find("dropped") != std::string::npos);
  CHECK(server.received.empty());
  CHECK(server.events == std::vector<std::string>{"made", "eof", "lost"});
  CHECK(grammar_error(client.events) == "");
}

STRATA_LOOP_TEST_CASE("StreamTransport: pause_writing above the high-water mark, resume_writing at "
                      "the low one",
                      "[transports][stream_transport]") {
  for (PairKind kind : both_kinds) {
    INFO("pair: " << to_string(kind));
    Record client;
    Record server;
    server.pause_on_made = true;  // the server does not read until told
    std::vector<std::size_t> sizes;  // buffer size after each write
    std::size_t pausing_write = 0;
    std::string sent;
    TestLoop loop(TestType::kind);
    auto body = [&]() -> Coro<void> {
      co_await connect_records(make_pair(kind, true), client, server);
      Transport& t = *client.transport;
      t.set_write_buffer_limits(32 * 1024, 8 * 1024);
      CHECK(t.get_write_buffer_limits() ==
            std::pair<std::size_t, std::size_t>(8 * 1024, 32 * 1024));
      std::string chunk = pattern(3000, 1);
      for (std::size_t i = 0; i < 100000 && client.pause_sizes.empty(); ++i) {
        t.write(chunk);
        sent += chunk;
        sizes.push_back(t.get_write_buffer_size());
        if (!client.pause_sizes.empty()) pausing_write = i;
      }
      REQUIRE(client.pause_sizes.size() == 1);
      // Writing on while paused is allowed: the buffer grows, no second pause.
      for (int i = 0; i < 20; ++i) {
        t.write(chunk);
        sent += chunk;
      }
      CHECK(client.pause_sizes.size() == 1);
      CHECK(client.resume_sizes.empty());
      server.transport->resume_reading();
      co_await client.wait_event("resume");
      co_await server.wait_received(sent.size());
      co_await close_and_wait(client);
      co_await server.wait_lost();
    };
    loop.run(body());
    // pause_writing() came from inside the first write that took the buffer above 32 KiB.
    REQUIRE(!sizes.empty());
    CHECK(client.pause_sizes[0] > 32 * 1024);
    CHECK(client.pause_sizes[0] == sizes[pausing_write]);
    for (std::size_t i = 0; i < pausing_write; ++i) CHECK(sizes[i] <= 32 * 1024);
    REQUIRE(client.resume_sizes.size() == 1);
    CHECK(client.resume_sizes[0] <= 8 * 1024);
    CHECK(client.events == std::vector<std::string>{"made", "pause", "resume", "lost"});
    CHECK(server.received.size() == sent.size());
    CHECK(first_mismatch(server.received, sent) == npos);
    CHECK(grammar_error(server.events) == "");
  }
}

STRATA_LOOP_TEST_CASE(
    "StreamTransport: set_write_buffer_limits derives the missing mark and rejects "
    "low above high",
    "[transports][stream_transport]") {
  Record client;
  Record server;
  TestLoop loop(TestType::kind);
  auto body = [&]() -> Coro<void> {
    co_await connect_records(strata::testing::unix_pair(), client, server);
    Transport& t = *client.transport;
    using Limits = std::pair<std::size_t, std::size_t>;
    CHECK(t.get_write_buffer_limits() == Limits(16 * 1024, 64 * 1024));
    t.set_write_buffer_limits(1000);
    CHECK(t.get_write_buffer_limits() == Limits(250, 1000));
    t.set_write_buffer_limits(std::nullopt, 100);
    CHECK(t.get_write_buffer_limits() == Limits(100, 400));
    t.set_write_buffer_limits(0, 0);
    CHECK(t.get_write_buffer_limits() == Limits(0, 0));
    CHECK_THROWS_AS(t.set_write_buffer_limits(10, 11), std::invalid_argument);
    CHECK(t.get_write_buffer_limits() == Limits(0, 0));
    t.set_write_buffer_limits();
    CHECK(t.get_write_buffer_limits() == Limits(16 * 1024, 64 * 1024));
    co_await close_and_wait(client);
    co_await server.wait_lost();
  };
  loop.run(body());
}

STRATA_LOOP_TEST_CASE("StreamTransport: pause_reading stops data_received until resume_reading",
                      "[transports][stream_transport]") {
  Record reader;
  Record probe;
  TestLoop loop(TestType::kind);
  auto body = [&]() -> Coro<void> {
    FdPair p = strata::testing::unix_pair();
    FdPair q = strata::testing::unix_pair();
    co_await connect_record(p.a, reader);
    co_await connect_record(q.a, probe);
    Transport& t = *reader.transport;
    CHECK(t.is_reading());
    t.pause_reading();
    t.pause_reading();  // idempotent
    CHECK_FALSE(t.is_reading());
    REQUIRE(::send(p.b, "hello", 5, 0) == 5);
    // The probe's data was sent after the reader's: once it has arrived and one more
    // iteration has passed, the loop has seen the reader's descriptor readable too.
    REQUIRE(::send(q.b, "p", 1, 0) == 1);
    co_await probe.wait_received(1);
    co_await next_iteration();
    CHECK(reader.received.empty());
    t.resume_reading();
    t.resume_reading();  // idempotent
    CHECK(t.is_reading());
    co_await reader.wait_received(5);
    CHECK(reader.received == "hello");
    ::close(p.b);
    ::close(q.b);
    co_await reader.wait_lost();
    co_await probe.wait_lost();
  };
  loop.run(body());
  CHECK(reader.events == std::vector<std::string>{"made", "data", "eof", "lost"});
}

// On the proactor a receive is started before the bytes of the last one have all been handed
// over: resuming inside data_received() must not let the kernel write into a buffer that the
// protocol is still reading, or into one freed meanwhile (the buffer grows while receives fill
// it).
STRATA_LOOP_TEST_CASE("StreamTransport: pause_reading and resume_reading inside data_received "
                      "lose and corrupt nothing",
                      "[transports][stream_transport]") {
  for (PairKind kind : both_kinds) {
    INFO("pair: " << to_string(kind));
    Record client;
    Record server;
    int calls = 0;
    server.on_data = [&calls](Transport& t, std::string_view) {
      ++calls;
      t.pause_reading();
      t.resume_reading();
    };
    TestLoop loop(TestType::kind);
    auto body = [&]() -> Coro<void> {
      co_await connect_records(make_pair(kind), client, server);
      const std::string data = pattern(2u << 20, 11);
      client.transport->write(data);
      co_await server.wait_received(data.size());
      REQUIRE(server.received.size() == data.size());
      CHECK(first_mismatch(server.received, data) == npos);
      co_await close_and_wait(client);
      co_await server.wait_lost();
    };
    loop.run(body());
    CHECK(calls > 1);
    CHECK(grammar_error(server.events) == "");
  }
}

// On io_uring the kernel cancels the operations a thread submitted when that thread exits; the
// proactor then submits them again from the thread that runs the loop now.
STRATA_LOOP_TEST_CASE("StreamTransport: a loop run by one thread, then by another, goes on reading",
                      "[transports][stream_transport]") {
  Record r;
  TestLoop loop(TestType::kind);
  FdPair p = strata::testing::unix_pair();
  std::thread first([&] {
    loop.run([&]() -> Coro<void> {
      co_await connect_record(p.a, r);
      // One wait in the kernel: what the connection started is submitted by this thread.
      co_await strata::sleep(std::chrono::milliseconds(1));
    }());
  });
  first.join();
  REQUIRE(r.transport != nullptr);
  REQUIRE(::send(p.b, "hello", 5, 0) == 5);
  std::thread second([&] { loop.run(r.wait_received(5)); });
  second.join();
  CHECK(r.received == "hello");
  ::close(p.b);
  loop.run(r.wait_lost());
  CHECK(grammar_error(r.events) == "");
}

STRATA_LOOP_TEST_CASE("StreamTransport: a BufferedProtocol receives into its own buffer",
                      "[transports][stream_transport]") {
  for (PairKind kind : both_kinds) {
    INFO("pair: " << to_string(kind));
    Record client;
    Record server;
    server.echo = true;
    TestLoop loop(TestType::kind);
    std::string data = pattern(1u << 20, 3);
    auto body = [&]() -> Coro<void> {
      co_await connect_records(make_pair(kind), client, server, /*b_buffered=*/true, 1000);
      client.transport->write(data);
      co_await client.wait_received(data.size());
      co_await close_and_wait(client);
      co_await server.wait_lost();
    };
    loop.run(body());
    CHECK(first_mismatch(client.received, data) == npos);
    CHECK(first_mismatch(server.received, data) == npos);
    // Each read fills at most the 1000 bytes lent: over a thousand get_buffer() calls.
    CHECK(server.get_buffer_calls >= data.size() / 1000);
    CHECK(server.min_hint >= 1);
    CHECK(grammar_error(server.events) == "");
    CHECK(server.alive == 0);
  }
}

STRATA_LOOP_TEST_CASE(
    "StreamTransport: an empty buffer from get_buffer aborts with no_buffer_space",
    "[transports][stream_transport]") {
  Record client;
  Record server;
  strata::testing::LogCapture logs;
  TestLoop loop(TestType::kind);
  auto body = [&]() -> Coro<void> {
    co_await connect_records(strata::testing::unix_pair(), client, server, true, 0);
    client.transport->write("x");
    co_await server.wait_lost();
    co_await client.wait_lost();
  };
  loop.run(body());
  CHECK(server.lost_ec == std::errc::no_buffer_space);
  CHECK(server.events == std::vector<std::string>{"made", "lost"});
  CHECK(server.received.empty());
}

STRATA_LOOP_TEST_CASE("StreamTransport: abort drops the buffer and reports operation_canceled",
                      "[transports][stream_transport]") {
  for (PairKind kind : both_kinds) {
    INFO("pair: " << to_string(kind));
    Record client;
    Record server;
    server.pause_on_made = true;
    TestLoop loop(TestType::kind);
    std::string data = pattern(4u << 20);
    auto body = [&]() -> Coro<void> {
      co_await connect_records(make_pair(kind, true), client, server);
      Transport& t = *client.transport;
      t.write(data);
      REQUIRE(t.get_write_buffer_size() > 0);
      t.abort();
      CHECK(t.get_write_buffer_size() == 0);
      CHECK(t.is_closing());
      CHECK_FALSE(t.is_reading());
      t.abort();  // idempotent
      t.close();  // a no-op now
      CHECK_FALSE(client.lost);  // reported in a later iteration
      co_await client.wait_lost();
      server.transport->resume_reading();
      co_await server.wait_lost();
    };
    loop.run(body());
    CHECK(client.lost_ec == std::errc::operation_canceled);
    CHECK(client.events == std::vector<std::string>{"made", "pause", "lost"});
    CHECK(server.received.size() < data.size());
    CHECK(first_mismatch(server.received,
                         std::string_view(data).substr(0, server.received.size())) == npos);
    CHECK(grammar_error(server.events) == "");
  }
}

// 300: more sends than the proactor's submission queue holds (256) start in one callback, and
// the echoes of them arrive together: both the write that copies and the one that sends from
// the receive's buffer find the queue full.
STRATA_LOOP_TEST_CASE("StreamTransport: writes to 300 connections in one callback, and their "
                      "echoes, all arrive",
                      "[transports][stream_transport]") {
  strata::testing::FdLimit limit;
  if (limit.soft() < 1024) limit.raise_to_hard();
  if (limit.hard() < 768) {
    WARN("RLIMIT_NOFILE's hard limit is too low for 300 socket pairs: skipped");
    return;
  }
  constexpr int n = 300;
  std::vector<std::unique_ptr<Record>> clients;
  std::vector<std::unique_ptr<Record>> servers;
  std::vector<std::string> sent;
  for (int i = 0; i < n; ++i) {
    clients.push_back(std::make_unique<Record>());
    servers.push_back(std::make_unique<Record>());
    servers.back()->echo = true;
    sent.push_back(pattern(1000, static_cast<unsigned>(i)));
  }
  TestLoop loop(TestType::kind);
  auto body = [&]() -> Coro<void> {
    for (int i = 0; i < n; ++i) {
      co_await connect_records(strata::testing::unix_pair(), *clients[i], *servers[i]);
    }
    for (int i = 0; i < n; ++i) clients[i]->transport->write(sent[i]);  // one callback
    for (int i = 0; i < n; ++i) co_await clients[i]->wait_received(sent[i].size());
    for (int i = 0; i < n; ++i) clients[i]->transport->close();
    for (int i = 0; i < n; ++i) {
      co_await servers[i]->wait_lost();
      co_await clients[i]->wait_lost();
    }
  };
  loop.run(body(), std::chrono::seconds(30));
  for (int i = 0; i < n; ++i) {
    INFO("connection " << i);
    CHECK(servers[i]->received == sent[i]);
    CHECK(clients[i]->received == sent[i]);
    CHECK(grammar_error(clients[i]->events) == "");
  }
  CHECK(loop.errors().empty());
}

STRATA_LOOP_TEST_CASE("StreamTransport: close sends the whole buffer before connection_lost",
                      "[transports][stream_transport]") {
  for (PairKind kind : both_kinds) {
    INFO("pair: " << to_string(kind));
    Record client;
    Record server;
    server.pause_on_made = true;
    TestLoop loop(TestType::kind);
    std::string data = pattern(4u << 20, 9);
    auto body = [&]() -> Coro<void> {
      co_await connect_records(make_pair(kind, true), client, server);
      Transport& t = *client.transport;
      t.write(data);
      REQUIRE(t.get_write_buffer_size() > 0);
      t.close();
      CHECK(t.is_closing());
      CHECK(t.get_write_buffer_size() > 0);  // kept, to be sent
      for (int i = 0; i < 3; ++i) co_await next_iteration();
      CHECK_FALSE(client.lost);  // the peer reads nothing yet, so the buffer cannot drain
      server.transport->resume_reading();
      co_await client.wait_lost();
      co_await server.wait_lost();
    };
    loop.run(body());
    CHECK(!client.lost_ec);
    CHECK(server.received.size() == data.size());
    CHECK(first_mismatch(server.received, data) == npos);
    CHECK(server.events.back() == "lost");
    CHECK(server.eof);
    CHECK(grammar_error(client.events) == "");
    CHECK(grammar_error(server.events) == "");
  }
}

STRATA_LOOP_TEST_CASE("StreamTransport: close and abort inside data_received are safe",
                      "[transports][stream_transport]") {
  Record client;
  Record server;
  bool alive_after_close = false;
  server.on_data = [&](Transport& t, std::string_view) {
    t.close();
    t.write("dropped");
    t.abort();  // connection_lost is already scheduled: a no-op
    alive_after_close = t.is_closing();
  };
  TestLoop loop(TestType::kind);
  auto body = [&]() -> Coro<void> {
    co_await connect_records(strata::testing::unix_pair(), client, server);
    client.transport->write("hello");
    co_await server.wait_lost();
    co_await client.wait_lost();
  };
  loop.run(body());
  CHECK(alive_after_close);
  CHECK(!server.lost_ec);
  CHECK(server.events == std::vector<std::string>{"made", "data", "lost"});
  CHECK(client.received.empty());
  CHECK(server.alive == 0);
}

STRATA_LOOP_TEST_CASE("StreamTransport: an exception from data_received goes to the exception "
                      "handler and aborts with callback_failed",
                      "[transports][stream_transport]") {
  Record client;
  Record server;
  server.on_data = [](Transport&, std::string_view) {
    throw std::runtime_error("boom in data_received");
  };
  TestLoop loop(TestType::kind);
  auto body = [&]() -> Coro<void> {
    co_await connect_records(strata::testing::unix_pair(), client, server);
    client.transport->write("x");
    co_await server.wait_lost();
    co_await client.wait_lost();
  };
  loop.run(body());
  CHECK(server.lost_ec == strata::errc::callback_failed);
  CHECK(server.events == std::vector<std::string>{"made", "data", "lost"});
  REQUIRE(loop.errors().size() == 1);
  CHECK(loop.errors()[0].message.find("data_received") != std::string::npos);
  CHECK(strata::describe_exception(loop.errors()[0].exception) == "boom in data_received");
  CHECK(grammar_error(client.events) == "");
}

STRATA_LOOP_TEST_CASE("StreamTransport: exceptions from eof_received and pause_writing abort with "
                      "callback_failed",
                      "[transports][stream_transport]") {
  SECTION("eof_received") {
    Record client;
    Record server;
    server.on_eof = [](Transport&) { throw std::runtime_error("boom in eof_received"); };
    TestLoop loop(TestType::kind);
    auto body = [&]() -> Coro<void> {
      co_await connect_records(strata::testing::unix_pair(), client, server);
      client.transport->write_eof();
      co_await server.wait_lost();
      co_await close_and_wait(client);
    };
    loop.run(body());
    CHECK(server.lost_ec == strata::errc::callback_failed);
    CHECK(server.events == std::vector<std::string>{"made", "eof", "lost"});
    REQUIRE(loop.errors().size() == 1);
    CHECK(loop.errors()[0].message.find("eof_received") != std::string::npos);
  }
  SECTION("pause_writing") {
    Record client;
    Record server;
    server.pause_on_made = true;
    client.on_pause = [] { throw std::runtime_error("boom in pause_writing"); };
    TestLoop loop(TestType::kind);
    auto body = [&]() -> Coro<void> {
      co_await connect_records(strata::testing::unix_pair(), client, server);
      client.transport->set_write_buffer_limits(1000);
      std::string data = pattern(4u << 20);
      client.transport->write(data);  // pauses, which throws: reported, the write returns
      co_await client.wait_lost();
      server.transport->resume_reading();
      co_await server.wait_lost();
    };
    loop.run(body());
    CHECK(client.lost_ec == strata::errc::callback_failed);
    CHECK(client.events == std::vector<std::string>{"made", "pause", "lost"});
    REQUIRE(loop.errors().size() == 1);
    CHECK(loop.errors()[0].message.find("pause_writing") != std::string::npos);
  }
  SECTION("connection_lost: reported, nothing else") {
    Record client;
    Record server;
    server.on_lost = [](std::error_code) { throw std::runtime_error("boom in connection_lost"); };
    TestLoop loop(TestType::kind);
    auto body = [&]() -> Coro<void> {
      co_await connect_records(strata::testing::unix_pair(), client, server);
      server.transport->close();
      co_await server.wait_lost();
      co_await client.wait_lost();
      co_await next_iteration();
      co_await next_iteration();
    };
    loop.run(body());
    CHECK(!server.lost_ec);
    CHECK(server.alive == 0);
    REQUIRE(loop.errors().size() == 1);
    CHECK(loop.errors()[0].message.find("connection_lost") != std::string::npos);
  }
}

STRATA_LOOP_TEST_CASE("StreamTransport: closing the loop aborts open transports with loop_closed "
                      "and leaks nothing",
                      "[transports][stream_transport]") {
  const int fds_before = strata::testing::count_open_fds();
  Record client;
  Record server;
  Record idle;
  server.pause_on_made = true;
  FdPair idle_fds;
  {
    TestLoop loop(TestType::kind);
    auto body = [&]() -> Coro<void> {
      co_await connect_records(make_pair(PairKind::tcp, true), client, server);
      idle_fds = strata::testing::unix_pair();
      co_await connect_record(idle_fds.a, idle);
      client.transport->write(pattern(4u << 20));  // some of it stays buffered
      co_await next_iteration();
    };
    loop.run(body());
    CHECK_FALSE(client.lost);
    CHECK_FALSE(server.lost);
  }  // closes the loop
  CHECK(client.lost_ec == strata::errc::loop_closed);
  CHECK(server.lost_ec == strata::errc::loop_closed);
  CHECK(idle.lost_ec == strata::errc::loop_closed);
  CHECK(grammar_error(client.events) == "");
  CHECK(grammar_error(server.events) == "");
  CHECK(grammar_error(idle.events) == "");
  CHECK(client.alive == 0);
  CHECK(server.alive == 0);
  CHECK(idle.alive == 0);
  ::close(idle_fds.b);  // the raw peer the test kept
  CHECK(strata::testing::count_open_fds() == fds_before);
}

STRATA_LOOP_TEST_CASE("StreamTransport: set_protocol hands later callbacks to the new protocol",
                      "[transports][stream_transport]") {
  Record client;
  Record first;
  Record second;
  int first_alive_in_swap = -1;
  first.on_data = [&](Transport& t, std::string_view) {
    t.set_protocol(std::make_unique<strata::testing::RecordingProtocol>(second));
    first_alive_in_swap = first.alive;  // destroyed later, not under its own call
    second.transport = &t;
  };
  TestLoop loop(TestType::kind);
  auto body = [&]() -> Coro<void> {
    co_await connect_records(strata::testing::unix_pair(), client, first);
    Transport& server = *first.transport;
    CHECK_THROWS_AS(server.set_protocol(nullptr), std::invalid_argument);
    CHECK_THROWS_AS(server.set_protocol(std::make_unique<strata::DatagramProtocol>()),
                    std::invalid_argument);
    client.transport->write("one");
    co_await first.wait_received(3);
    co_await next_iteration();
    CHECK(first.alive == 0);
    client.transport->write("two");
    co_await second.wait_received(3);
    client.transport->close();
    co_await second.wait_lost();
    co_await client.wait_lost();
  };
  loop.run(body());
  CHECK(first_alive_in_swap == 1);
  CHECK(first.received == "one");
  CHECK(first.events == std::vector<std::string>{"made", "data"});
  CHECK(second.received == "two");
  CHECK(second.events == std::vector<std::string>{"data", "eof", "lost"});
  CHECK(second.alive == 0);
}

STRATA_LOOP_TEST_CASE("StreamTransport: get_extra_info reports the names and the socket",
                      "[transports][stream_transport]") {
  Record client;
  Record server;
  TestLoop loop(TestType::kind);
  auto body = [&]() -> Coro<void> {
    FdPair tcp = strata::testing::tcp_pair();
    strata::SocketAddress client_name;
    socklen_t len = client_name.capacity();
    ::getsockname(tcp.a, client_name.mutable_data(), &len);
    client_name.set_size(len);
    strata::SocketAddress server_name;
    len = server_name.capacity();
    ::getsockname(tcp.b, server_name.mutable_data(), &len);
    server_name.set_size(len);
    co_await connect_records(tcp, client, server);
    Transport& t = *client.transport;
    CHECK(t.get_extra_info_as<strata::SocketAddress>("sockname") == client_name);
    CHECK(t.get_extra_info_as<strata::SocketAddress>("peername") == server_name);
    CHECK(server.transport->get_extra_info_as<strata::SocketAddress>("peername") == client_name);
    CHECK(t.get_extra_info_as<int>("socket") == tcp.a);
    CHECK_FALSE(t.get_extra_info("pipe").has_value());
    CHECK_FALSE(t.get_extra_info("no such thing").has_value());
    CHECK(&t.get_loop() == &*loop);
    // Unix socketpair: unnamed addresses on both sides.
    Record uc;
    Record us;
    FdPair unix_fds = strata::testing::unix_pair();
    co_await connect_records(unix_fds, uc, us);
    auto peer = uc.transport->get_extra_info_as<strata::SocketAddress>("peername");
    REQUIRE(peer.has_value());
    CHECK(peer->is_unix());
    CHECK(uc.transport->get_extra_info_as<int>("socket") == unix_fds.a);
    co_await close_and_wait(uc);
    co_await us.wait_lost();
    server.transport->abort();
    co_await client.wait_lost();
    co_await server.wait_lost();
  };
  loop.run(body());
}
