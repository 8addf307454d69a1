// Where received bytes wait between the kernel and the protocol. The proactor loop on io_uring
// receives into a pool of buffers that the kernel picks from when bytes arrive (provided
// buffers), moves a connection whose receives fill them to a buffer of its own and back after
// a run of small receives, and falls back to the connection's own buffer when the pool is
// empty. These tests drive every one of those paths and check that no byte is lost, doubled or
// reordered; on the other backends the same traffic must simply arrive. Each test runs twice:
// with multishot receives, and as on a kernel that refuses them (before Linux 6.0), where
// every receive is a submission of its own.
#include <catch2/catch.hpp>

#include <sys/socket.h>
#include <unistd.h>

#include <cstddef>
#include <deque>
#include <string>
#include <vector>

#include <strata/core/coro.hpp>
#include <strata/transports/accepted_socket.hpp>
#include <strata/transports/transport.hpp>

#include "loop_test.hpp"
#include "stream_test_support.hpp"
#include "uring_interpose.hpp"

using strata::Coro;
using strata::testing::check_syscall;
using strata::testing::connect_record;
using strata::testing::connect_records;
using strata::testing::FdPair;
using strata::testing::KernelWithoutMultishot;
using strata::testing::first_mismatch;
using strata::testing::make_pair;
using strata::testing::next_iteration;
using strata::testing::PairKind;
using strata::testing::pattern;
using strata::testing::Record;
using strata::testing::TestLoop;

namespace {

/// Writes all of @p data to the blocking descriptor @p fd.
void send_all(int fd, std::string_view data) {
  while (!data.empty()) {
    const ssize_t n = ::send(fd, data.data(), data.size(), MSG_NOSIGNAL);
    check_syscall(static_cast<int>(n < 0 ? -1 : 0), "send");
    data.remove_prefix(static_cast<std::size_t>(n));
  }
}

/// Checks that @p loop holds no receive buffer, once the completions of receives cancelled by
/// a close have come back (a bounded number of iterations).
Coro<void> check_buffers_back(strata::EventLoop& loop) {
  for (int i = 0; i != 100 && loop.metrics().receive_buffers_held != 0; ++i) {
    co_await next_iteration();
  }
  CHECK(loop.metrics().receive_buffers_held == 0);
}

}  // namespace

STRATA_LOOP_TEST_CASE("StreamTransport: receives of every size in turn, small after large, "
                      "arrive intact",
                      "[transports][stream_transport][receive_buffers]") {
  const KernelWithoutMultishot kernel(GENERATE(false, true));
  Record client;
  Record server;
  server.echo = true;
  {
    TestLoop loop(TestType::kind);
    auto body = [&]() -> Coro<void> {
      co_await connect_records(make_pair(PairKind::tcp), client, server);
      std::string expected;
      // Round trips of one message each: small ones, a large one that fills receive after
      // receive, small ones again (more than enough to move back to the pool), and once more.
      std::vector<std::size_t> sizes;
      for (std::size_t large : {std::size_t{1} << 20, std::size_t{300} << 10}) {
        for (int i = 0; i != 24; ++i) sizes.push_back(64 + static_cast<std::size_t>(i));
        sizes.push_back(large);
      }
      for (int i = 0; i != 24; ++i) sizes.push_back(1000);
      unsigned seed = 1;
      for (std::size_t size : sizes) {
        const std::string data = pattern(size, seed++);
        client.transport->write(data);
        expected += data;
        co_await client.wait_received(expected.size());
        REQUIRE(client.received.size() == expected.size());
      }
      CHECK(first_mismatch(client.received, expected) == std::string_view::npos);
      CHECK(server.received == expected);
      client.transport->close();
      co_await server.wait_lost();
      co_await client.wait_lost();
      CHECK(loop->metrics().receive_buffers_held == 0);  // every one given back
    };
    loop.run(body());
    CHECK(loop.errors().empty());
  }
  CHECK(!client.lost_ec);
  CHECK(!server.lost_ec);
  CHECK(server.alive == 0);
}

STRATA_LOOP_TEST_CASE("StreamTransport: 300 connections paused with receives in flight keep "
                      "their bytes, and others are served meanwhile",
                      "[transports][stream_transport][receive_buffers]") {
  const bool refused = GENERATE(false, true);
  const KernelWithoutMultishot kernel(refused);
  // More paused connections than the io_uring loop has pool buffers. With single receives (a
  // kernel without multishot ones), the receives already in flight complete while their
  // connections are paused, and hold the pool's buffers until resume_reading(); the last ones,
  // and any connection that reads meanwhile, find the pool empty and receive into their own
  // memory. A multishot receive is cancelled by the pause: the bytes wait in the kernel.
  constexpr int count = 300;
  std::deque<Record> servers(count);  // (a deque: the records must not move)
  std::vector<FdPair> pairs;
  Record echo_client;
  Record echo_server;
  echo_server.echo = true;
  {
    TestLoop loop(TestType::kind);
    const bool pooled = loop->backend_name() == "proactor/io_uring" && refused;
    auto body = [&]() -> Coro<void> {
      for (int i = 0; i != count; ++i) {
        pairs.push_back(strata::testing::tcp_pair());
        co_await connect_record(pairs.back().b, servers[static_cast<std::size_t>(i)]);
        pairs.back().b = -1;  // the transport's now
      }
      std::vector<std::string> expected(count);
      auto message = [](int i, int round) {
        return std::to_string(round) + ":" + std::to_string(i) + ";";
      };
      auto wait_all = [&]() -> Coro<void> {
        for (int i = 0; i != count; ++i) {
          const auto k = static_cast<std::size_t>(i);
          co_await servers[k].wait_received(expected[k].size());
          REQUIRE(servers[k].received == expected[k]);
        }
      };
      // A first message each: every connection then has a receive in flight.
      for (int i = 0; i != count; ++i) {
        expected[static_cast<std::size_t>(i)] += message(i, 0);
        send_all(pairs[static_cast<std::size_t>(i)].a, message(i, 0));
      }
      co_await wait_all();

      // Paused from outside a delivery, with the receive still in flight; then bytes come.
      for (auto& s : servers) s.transport->pause_reading();
      for (int i = 0; i != count; ++i) {
        expected[static_cast<std::size_t>(i)] += message(i, 1);
        send_all(pairs[static_cast<std::size_t>(i)].a, message(i, 1));
      }
      // With single receives on io_uring, the receives in flight complete into pool buffers
      // once loopback has carried the bytes over (the kernel may defer that to its softirq
      // thread): wait for the first, a bounded number of iterations. The other loops, and
      // multishot receives, do not read a paused socket.
      for (int i = 0; pooled && i != 1'000'000; ++i) {
        if (loop->metrics().receive_buffers_held != 0) break;
        co_await next_iteration();
      }
      for (int i = 0; i != count; ++i) {
        REQUIRE(servers[static_cast<std::size_t>(i)].received == message(i, 0));
      }
      const std::size_t held = loop->metrics().receive_buffers_held;
      if (pooled) {
        CHECK(held > 0);
        CHECK(held <= count);
      } else {
        CHECK(held == 0);
      }

      // Another connection reads and echoes while the paused ones hold what they received.
      co_await connect_records(make_pair(PairKind::tcp), echo_client, echo_server);
      const std::string ping = pattern(3000, 7);
      echo_client.transport->write(ping);
      co_await echo_client.wait_received(ping.size());
      CHECK(echo_client.received == ping);

      for (auto& s : servers) s.transport->resume_reading();
      co_await wait_all();

      // Small messages in rounds: connections that fell back to their own memory move back
      // to the pool on the way, without losing a byte.
      for (int round = 2; round != 22; ++round) {
        for (int i = 0; i != count; ++i) {
          expected[static_cast<std::size_t>(i)] += message(i, round);
          send_all(pairs[static_cast<std::size_t>(i)].a, message(i, round));
        }
        co_await wait_all();
      }
      echo_client.transport->close();
      for (auto& s : servers) s.transport->close();
      CHECK(loop->metrics().receive_buffers_held == 0);
      co_await echo_server.wait_lost();
    };
    loop.run(body());
    CHECK(loop.errors().empty());
  }
  for (FdPair& p : pairs) {
    if (p.a >= 0) ::close(p.a);
  }
  for (const Record& s : servers) {
    CHECK(!s.lost_ec);
    CHECK(s.alive == 0);
  }
}

STRATA_LOOP_TEST_CASE("StreamTransport: writing back slices of what arrives, while sends wait, "
                      "loses nothing and keeps no buffer",
                      "[transports][stream_transport][receive_buffers]") {
  const KernelWithoutMultishot kernel(GENERATE(false, true));
  // On io_uring a write of bytes still in the pool buffer they arrived in is sent from there,
  // and the buffer comes back when the send is done. Here the echo writes each delivery back in
  // two slices (the second while the first is in flight), its peer has small kernel buffers so
  // that sends wait while more arrives, and in the end one side aborts with sends in flight.
  Record client;
  Record server;
  server.on_data = [](strata::Transport& t, std::string_view data) {
    const std::size_t half = data.size() / 2;
    t.write(data.substr(0, half));
    t.write(data.substr(half));
  };
  {
    TestLoop loop(TestType::kind);
    auto body = [&]() -> Coro<void> {
      co_await connect_records(make_pair(PairKind::tcp, true), client, server);
      std::string expected;
      // Round trips of small messages: each echo is sent from the buffer it arrived in.
      for (unsigned i = 0; i != 50; ++i) {
        const std::string message = pattern(1 + i * 37, i);
        client.transport->write(message);
        expected += message;
        co_await client.wait_received(expected.size());
      }
      // A stream that the small buffers make wait: sends in flight while receives go on.
      const std::string big = pattern(2 << 20, 77);
      client.transport->write(big);
      expected += big;
      co_await client.wait_received(expected.size());
      REQUIRE(client.received.size() == expected.size());
      CHECK(first_mismatch(client.received, expected) == std::string_view::npos);
      // Every buffer given back, once the last send's completion is in (bounded).
      auto held = [&] { return loop->metrics().receive_buffers_held; };
      for (int i = 0; held() != 0 && i != 1000; ++i) co_await next_iteration();
      CHECK(held() == 0);

      // The client stops reading; the server's sends wait; the server aborts.
      client.transport->pause_reading();
      client.transport->write(pattern(1 << 20, 78));
      for (int i = 0; i != 1'000'000; ++i) {
        if (server.transport->get_write_buffer_size() > 0 &&
            server.received.size() > expected.size()) {
          break;
        }
        co_await next_iteration();
      }
      CHECK(server.transport->get_write_buffer_size() > 0);
      server.transport->abort();
      co_await server.wait_lost();
      client.transport->close();
      co_await client.wait_lost();
      // The aborted send's buffer comes back with its cancellation's completion.
      for (int i = 0; held() != 0 && i != 1000; ++i) co_await next_iteration();
      CHECK(held() == 0);
    };
    loop.run(body());
    CHECK(loop.errors().empty());
  }
  CHECK(server.alive == 0);
}

STRATA_LOOP_TEST_CASE("StreamTransport: bytes relayed from one connection's data_received() to "
                      "another arrive intact, and an abort mid-relay keeps no buffer",
                      "[transports][stream_transport][receive_buffers]") {
  const KernelWithoutMultishot kernel(GENERATE(false, true));
  // The relay writes what it receives (on io_uring, bytes in the loop's pool buffers) to a
  // connection whose peer has small kernel buffers, so that its sends wait while the relay
  // goes on receiving and buffering.
  Record source;   // writes into the relay
  Record inbound;  // the relay's receiving side
  Record outbound;  // the relay's sending side
  Record sink;     // what comes out of the relay
  bool relaying = true;
  inbound.on_data = [&](strata::Transport&, std::string_view data) {
    if (relaying) outbound.transport->write(data);
  };
  {
    TestLoop loop(TestType::kind);
    auto body = [&]() -> Coro<void> {
      co_await connect_records(make_pair(PairKind::tcp), source, inbound);
      co_await connect_records(make_pair(PairKind::tcp, true), outbound, sink);
      std::string expected;
      for (unsigned i = 0; i != 32; ++i) {
        const std::string chunk = pattern(64 * 1024 + i, i);
        source.transport->write(chunk);
        expected += chunk;
      }
      co_await sink.wait_received(expected.size());
      REQUIRE(sink.received.size() == expected.size());
      CHECK(first_mismatch(sink.received, expected) == std::string_view::npos);

      // Again, and the relay's sending side aborts while its sends wait on the slow sink.
      const std::string more = pattern(1 << 20, 99);
      source.transport->write(more);
      co_await sink.wait_received(expected.size() + 100 * 1024);
      relaying = false;
      outbound.transport->abort();
      co_await outbound.wait_lost();
      CHECK(std::string_view(sink.received).substr(0, expected.size()) == expected);
      source.transport->close();
      co_await inbound.wait_lost();
      co_await sink.wait_lost();
    };
    loop.run(body());
    CHECK(loop.errors().empty());
  }
  CHECK(!source.lost_ec);
  CHECK(inbound.alive == 0);
  CHECK(outbound.alive == 0);
}

STRATA_LOOP_TEST_CASE("StreamTransport: an echo to a peer that stops reading resumes intact, "
                      "and an abort while its sends wait keeps no buffer",
                      "[transports][stream_transport][receive_buffers]") {
  const KernelWithoutMultishot kernel(GENERATE(false, true));
  // Messages of 6,000 bytes, each received (on io_uring, into a pool buffer) and echoed on its
  // own, until the peer's window fills and a send waits; what comes meanwhile queues behind
  // it.
  Record client;
  Record server;
  server.echo = true;
  {
    TestLoop loop(TestType::kind);
    auto body = [&]() -> Coro<void> {
      co_await connect_records(make_pair(PairKind::tcp, true), client, server);
      std::string expected;
      auto fill = [&](unsigned seed) -> Coro<void> {
        client.transport->pause_reading();
        for (unsigned i = 0; i != 40; ++i) {
          const std::string message = pattern(6000, seed + i);
          client.transport->write(message);
          expected += message;
          co_await server.wait_received(expected.size());
        }
      };
      co_await fill(0);
      CHECK(client.received.size() < expected.size());  // the windows are smaller than this
      client.transport->resume_reading();
      co_await client.wait_received(expected.size());
      REQUIRE(client.received.size() == expected.size());
      CHECK(first_mismatch(client.received, expected) == std::string_view::npos);

      co_await fill(1000);
      server.transport->abort();
      co_await server.wait_lost();
      client.transport->resume_reading();
      co_await client.wait_lost();
      CHECK(client.received.size() < expected.size());
      CHECK(std::string_view(expected).substr(0, client.received.size()) == client.received);
    };
    loop.run(body());
    CHECK(loop.errors().empty());
  }
  CHECK(server.alive == 0);
  CHECK(client.alive == 0);
}

STRATA_LOOP_TEST_CASE("StreamTransport: a connection that pauses while bytes stream in takes no "
                      "more of them: the sender's buffers fill, and the loop holds little",
                      "[transports][stream_transport][receive_buffers]") {
  // Flow control must reach the peer: once the protocol pauses, the bytes wait in the kernel's
  // buffers, which fill and stop the sender. On io_uring a multishot receive would otherwise
  // go on taking a pool buffer for every small arrival, for as long as the sender sends.
  const KernelWithoutMultishot kernel(GENERATE(false, true));
  constexpr std::size_t pause_at = 8 * 1024;  // below what the sockets' small buffers hold
  constexpr std::size_t backlog = 256 * 1024;  // the sender's, that shows it was stopped
  Record client;
  Record server;
  std::size_t at_pause = 0;
  std::uint64_t read_at_pause = 0;
  std::uint64_t taken_while_paused = 0;
  std::size_t held_while_paused = 0;
  {
    TestLoop loop(TestType::kind);
    server.on_data = [&](strata::Transport& t, std::string_view) {
      if (at_pause != 0 || server.received.size() < pause_at) return;
      t.pause_reading();  // inside data_received(), as a protocol whose buffer is full does
      at_pause = server.received.size();
      read_at_pause = loop->metrics().bytes_read;
    };
    auto body = [&]() -> Coro<void> {
      co_await connect_records(make_pair(PairKind::tcp, true), client, server);
      // Small messages, one per iteration, so that each arrives on its own.
      std::string sent;
      for (unsigned i = 0; i != 100'000; ++i) {
        if (client.transport->get_write_buffer_size() > backlog) break;
        const std::string message = pattern(300, i);
        client.transport->write(message);
        sent += message;
        co_await next_iteration();
      }
      REQUIRE(at_pause != 0);
      REQUIRE(client.transport->get_write_buffer_size() > backlog);  // the sender was stopped
      taken_while_paused = loop->metrics().bytes_read - read_at_pause;
      held_while_paused = loop->metrics().receive_buffers_held;
      CHECK(server.received.size() == at_pause);
      server.transport->resume_reading();
      co_await server.wait_received(sent.size());
      REQUIRE(server.received.size() == sent.size());
      CHECK(first_mismatch(server.received, sent) == std::string_view::npos);
      client.transport->close();
      co_await server.wait_lost();
      CHECK(loop->metrics().receive_buffers_held == 0);
    };
    loop.run(body());
    CHECK(loop.errors().empty());
  }
  INFO("taken while paused: " << taken_while_paused << " bytes; pool buffers held: "
                              << held_while_paused);
  // What the loop held while paused: what had arrived when the protocol paused, not more.
  CHECK(taken_while_paused <= 16 * 1024);
  CHECK(held_while_paused <= 8);
}

STRATA_LOOP_TEST_CASE("StreamTransport: a connection moving to its own buffer while its "
                      "multishot receive runs on into an empty pool loses nothing",
                      "[transports][stream_transport][receive_buffers]") {
  // The first delivery fills a pool buffer: the connection moves to its own buffer and the
  // multishot receive is cancelled (at the next submission). Meanwhile more bytes come, 16 KiB
  // per send(2) made inside data_received(): on io_uring each send's return runs the receive's
  // task work, which takes a pool buffer per send until the pool is empty and the receive
  // ends with ENOBUFS. That must not end the connection.
  const KernelWithoutMultishot kernel(GENERATE(false, true));
  Record server;
  FdPair p;
  std::string sent;
  bool fired = false;
  {
    TestLoop loop(TestType::kind);
    server.on_data = [&](strata::Transport&, std::string_view) {
      if (fired || server.received.size() < 16 * 1024) return;
      fired = true;
      for (unsigned i = 0; i != 40; ++i) {
        const std::string chunk = pattern(16 * 1024, 100 + i);
        const ssize_t n =
            ::send(p.a, chunk.data(), chunk.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n <= 0) break;
        sent.append(chunk, 0, static_cast<std::size_t>(n));
        if (static_cast<std::size_t>(n) < chunk.size()) break;
      }
    };
    auto body = [&]() -> Coro<void> {
      p = strata::testing::tcp_pair();
      co_await connect_record(p.b, server);
      p.b = -1;
      sent = pattern(16 * 1024, 1);
      send_all(p.a, sent);
      while (!server.lost && (!fired || server.received.size() < sent.size())) {
        co_await server.wait_received(server.received.size() + 1);
      }
      INFO("lost: " << server.lost << " (" << server.lost_ec.message() << "), received "
                    << server.received.size() << " of " << sent.size());
      CHECK_FALSE(server.lost);
      CHECK(server.received.size() == sent.size());
      CHECK(first_mismatch(server.received, sent) == std::string_view::npos);
      ::close(std::exchange(p.a, -1));
      co_await server.wait_lost();
      CHECK(!server.lost_ec);
      CHECK(loop->metrics().receive_buffers_held == 0);
    };
    loop.run(body());
    CHECK(loop.errors().empty());
  }
  if (p.a >= 0) ::close(p.a);
}

STRATA_LOOP_TEST_CASE("StreamTransport: arrivals queued behind a delivery, then the end of the "
                      "stream, with pauses and a close inside the deliveries",
                      "[transports][stream_transport][receive_buffers]") {
  // On io_uring, twelve messages sent from inside the first delivery complete before it ends:
  // they wait in order behind it (the backlog), and the end of the stream behind them.
  // 0: pauses inside every other delivery, resumed from outside; 1: a close mid-backlog;
  // 2: a pause and a resume inside every delivery.
  const int mode = GENERATE(0, 1, 2);
  Record server;
  FdPair p;
  std::string sent;
  bool fired = false;
  int deliveries = 0;
  bool paused = false;
  {
    TestLoop loop(TestType::kind);
    server.on_data = [&](strata::Transport& t, std::string_view) {
      ++deliveries;
      if (!fired) {
        fired = true;
        for (unsigned i = 0; i != 12; ++i) {
          const std::string chunk = pattern(1000 + i, 100 + i);
          const ssize_t n = ::send(p.a, chunk.data(), chunk.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
          if (n <= 0) break;
          sent.append(chunk, 0, static_cast<std::size_t>(n));
        }
        ::shutdown(p.a, SHUT_WR);
        return;
      }
      if (mode == 0 && deliveries % 2 == 0) {
        t.pause_reading();
        paused = true;
      } else if (mode == 1 && deliveries == 4) {
        t.close();
      } else if (mode == 2) {
        t.pause_reading();
        t.resume_reading();
      }
    };
    server.keep_open_on_eof = false;
    auto body = [&]() -> Coro<void> {
      p = strata::testing::tcp_pair();
      co_await connect_record(p.b, server);
      p.b = -1;
      sent = pattern(500, 1);
      send_all(p.a, sent);
      for (int i = 0; i != 100000 && !server.lost; ++i) {
        if (paused) {
          for (int k = 0; k != 3; ++k) co_await next_iteration();
          paused = false;
          if (server.transport) server.transport->resume_reading();
        }
        co_await next_iteration();
      }
      REQUIRE(server.lost);
      if (mode != 1) {
        CHECK(server.eof);
        CHECK(server.received == sent);
        CHECK(!server.lost_ec);
      } else {
        CHECK(sent.compare(0, server.received.size(), server.received) == 0);
      }
      co_await check_buffers_back(*loop);
    };
    loop.run(body());
    CHECK(loop.errors().empty());
  }
  if (p.a >= 0) ::close(p.a);
  CHECK(server.alive == 0);
}

STRATA_LOOP_TEST_CASE("StreamTransport: random pauses and resumes inside and outside deliveries "
                      "while bytes of every size stream in lose nothing",
                      "[transports][stream_transport][receive_buffers]") {
  // A fixed pseudo-random schedule (the same every run): sends of 1 B to 70 KiB from outside
  // and from inside deliveries, pauses and resumes from both, on a Protocol and on a
  // BufferedProtocol, then the end of the stream; every byte must arrive once and in order.
  const bool buffered = GENERATE(false, true);
  const KernelWithoutMultishot kernel(GENERATE(false, true));
  Record server;
  FdPair p;
  std::string sent;
  unsigned rng = 12345;
  auto rnd = [&](unsigned n) {
    rng = rng * 1103515245u + 12345u;
    return (rng >> 8) % n;
  };
  bool want_resume = false;
  {
    TestLoop loop(TestType::kind);
    server.on_data = [&](strata::Transport& t, std::string_view) {
      switch (rnd(6)) {
        case 0:
          t.pause_reading();
          want_resume = true;
          break;
        case 1:
          t.pause_reading();
          t.resume_reading();
          break;
        case 2: {  // more bytes from inside the delivery
          const std::string chunk = pattern(1 + rnd(20000), rng);
          const ssize_t n = ::send(p.a, chunk.data(), chunk.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
          if (n > 0) sent.append(chunk, 0, static_cast<std::size_t>(n));
          break;
        }
        default:
          break;
      }
    };
    auto body = [&]() -> Coro<void> {
      p = strata::testing::tcp_pair();
      co_await connect_record(p.b, server, buffered, 3000);
      p.b = -1;
      for (int i = 0; i != 3000 && !server.lost; ++i) {
        const unsigned what = rnd(8);
        if (what < 4) {
          const std::size_t size = what == 0 ? 1 + rnd(70000) : 1 + rnd(2000);
          const std::string chunk = pattern(size, rng);
          const ssize_t n = ::send(p.a, chunk.data(), chunk.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
          if (n > 0) sent.append(chunk, 0, static_cast<std::size_t>(n));
        } else if (what == 4 && server.transport) {
          server.transport->pause_reading();
          want_resume = true;
        } else if (what == 5 && want_resume && server.transport) {
          want_resume = false;
          server.transport->resume_reading();
        }
        co_await next_iteration();
      }
      if (want_resume && server.transport) server.transport->resume_reading();
      want_resume = false;
      ::shutdown(p.a, SHUT_WR);
      for (int i = 0; i != 200000 && !server.lost; ++i) {
        if (want_resume && server.transport) {
          want_resume = false;
          server.transport->resume_reading();
        }
        co_await next_iteration();
      }
      INFO("received " << server.received.size() << " of " << sent.size() << ", lost "
                       << server.lost << " " << server.lost_ec.message());
      CHECK(server.lost);
      CHECK(server.eof);
      CHECK(!server.lost_ec);
      CHECK(server.received.size() == sent.size());
      CHECK(first_mismatch(server.received, sent) == std::string_view::npos);
      co_await check_buffers_back(*loop);
    };
    loop.run(body());
    CHECK(loop.errors().empty());
  }
  if (p.a >= 0) ::close(p.a);
  CHECK(server.alive == 0);
}

STRATA_LOOP_TEST_CASE("StreamTransport: a connection whose multishot receives fill pool buffers "
                      "leaves the pool (its multishot receive ends) and comes back later",
                      "[transports][stream_transport][receive_buffers]") {
  Record client;
  Record server;
  server.echo = true;
  std::size_t before = 0;
  std::size_t after = 0;
  bool uring = false;
  {
    TestLoop loop(TestType::kind);
    uring = loop->backend_name() == "proactor/io_uring";
    auto body = [&]() -> Coro<void> {
      co_await connect_records(make_pair(PairKind::tcp), client, server);
      std::string expected;
      auto round_trip = [&](std::size_t size, unsigned seed) -> Coro<void> {
        const std::string m = pattern(size, seed);
        client.transport->write(m);
        expected += m;
        co_await client.wait_received(expected.size());
      };
      co_await round_trip(100, 1);
      before = strata::testing::multishot_receives_submitted();
      co_await round_trip(64 << 10, 2);  // fills pool buffers, not the whole pool
      for (unsigned i = 0; i != 40; ++i) co_await round_trip(100, 3 + i);  // and back
      after = strata::testing::multishot_receives_submitted();
      CHECK(client.received == expected);
      client.transport->close();
      co_await server.wait_lost();
    };
    loop.run(body());
    CHECK(loop.errors().empty());
  }
  // Back in the pool means a new multishot receive: the one before ended at the move.
  if (uring) CHECK(after > before);
}
