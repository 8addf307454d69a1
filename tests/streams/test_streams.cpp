// open_connection / start_server and the Unix variants over real sockets, on every backend:
// echo, flow control of the reader, drain() and send() against a slow peer, the
// forgotten-drain warning, peer resets, graceful shutdown, handler endings, TLS streams and
// start_tls, and cancellation of a pending read.
#include <strata/streams/streams.hpp>

#include <catch2/catch.hpp>

#include <sys/socket.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <limits>
#include <memory>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <type_traits>
#include <utility>
#include <vector>

#include <strata/core/coro.hpp>
#include <strata/core/errors.hpp>
#include <strata/core/event.hpp>
#include <strata/core/event_loop.hpp>
#include <strata/core/log.hpp>
#include <strata/core/socket_address.hpp>
#include <strata/core/task.hpp>
#include <strata/core/timeout.hpp>
#include <strata/transports/server.hpp>
#include <strata/transports/ssl.hpp>
#include <strata/transports/tcp.hpp>
#include <strata/transports/unix.hpp>

#include "../transports/net_test_support.hpp"
#include "../transports/stream_test_support.hpp"
#include "../transports/tls_test_support.hpp"
#include "loop_test.hpp"

using namespace std::chrono_literals;
using strata::ClientConnected;
using strata::ConnectOptions;
using strata::Coro;
using strata::Event;
using strata::InvalidStateError;
using strata::LogLevel;
using strata::Server;
using strata::ServerOptions;
using strata::SocketAddress;
using strata::SslCertificate;
using strata::SslCipher;
using strata::SslOptions;
using strata::StreamReader;
using strata::Streams;
using strata::StreamWriter;
using strata::Task;
using strata::testing::check_syscall;
using strata::testing::describe_failure;
using strata::testing::Failure;
using strata::testing::first_mismatch;
using strata::testing::LogRecorder;
using strata::testing::next_iteration;
using strata::testing::pattern;
using strata::testing::TempDir;
using strata::testing::test_client_context;
using strata::testing::test_server_context;
using strata::testing::TestLoop;

namespace {

constexpr std::size_t KiB = 1024;
constexpr std::size_t MiB = 1024 * 1024;
constexpr std::size_t high_water = 64 * KiB;  // the transports' default
constexpr std::size_t npos = std::string_view::npos;

std::uint16_t port_of(const Server& server) { return server.sockets().at(0).address.port(); }

void set_socket_buffer(int fd, int option, int size) {
  check_syscall(::setsockopt(fd, SOL_SOCKET, option, &size, sizeof size), "setsockopt");
}

/// Yields @p n loop iterations.
Coro<void> iterations(int n) {
  for (int i = 0; i < n; ++i) {
    auto step = next_iteration();
    co_await step;
  }
}

/// Yields loop iterations until @p pred() holds (true) or @p limit passes (false).
template <class P>
Coro<bool> poll_until(P pred, strata::Duration limit = 10s) {
  strata::EventLoop& loop = strata::get_running_loop();
  const strata::TimePoint end = loop.time() + limit;
  for (;;) {
    if (pred()) co_return true;
    if (loop.time() > end) co_return false;
    auto step = next_iteration();
    co_await step;
  }
}

/// How the read @p make returns failed, or kind "none".
template <class F>
Coro<Failure> read_failure(F make) {
  std::exception_ptr error;
  try {
    auto op = make();
    std::string s = co_await op;
    FAIL_CHECK("the read returned " << s.size() << " bytes instead of failing");
  } catch (...) {
    error = std::current_exception();
  }
  co_return describe_failure(error);
}

/// Echoes every chunk until EOF, with send(); then returns (which closes the connection).
Coro<void> echo_handler(StreamReader reader, StreamWriter writer) {
  for (;;) {
    auto op = reader.read(64 * KiB);
    std::string chunk = co_await op;
    if (chunk.empty()) break;
    auto sending = writer.send(chunk);
    co_await sending;
  }
}

/// Echoes every chunk until EOF as the echo example does: read_view(), then send() from the
/// view (on the selector loop the socket receives straight into the view's memory).
Coro<void> view_echo_handler(StreamReader reader, StreamWriter writer) {
  for (;;) {
    auto op = reader.read_view();
    std::string_view chunk = co_await op;
    if (chunk.empty()) break;
    auto sending = writer.send(chunk);
    co_await sending;
  }
}

/// Echoes every chunk until EOF through read_into() a span of 1,000 bytes, fewer than most
/// receives bring (on the selector loop the socket receives straight into the span).
Coro<void> span_echo_handler(StreamReader reader, StreamWriter writer) {
  std::vector<char> buffer(1000);
  for (;;) {
    auto op = reader.read_into(std::span<char>(buffer));
    const std::size_t n = co_await op;
    if (n == 0) break;
    auto sending = writer.send(std::string_view(buffer.data(), n));
    co_await sending;
  }
}

/// read_view() until @p n bytes came, or EOF, copying each view.
Coro<std::string> read_n_views(StreamReader reader, std::size_t n) {
  std::string out;
  while (out.size() < n) {
    auto op = reader.read_view();
    std::string_view chunk = co_await op;
    if (chunk.empty()) break;
    out += chunk;
  }
  co_return out;
}

/// Sends @p data in @p chunk-byte pieces with send(); *@p done counts what send() accepted;
/// then write_eof() if @p eof.
Coro<void> send_all(StreamWriter writer, const std::string* data, std::size_t chunk,
                    std::size_t* done, bool eof) {
  for (std::size_t offset = 0; offset < data->size(); offset += chunk) {
    auto sending = writer.send(std::string_view(*data).substr(offset, chunk));
    co_await sending;
    if (done != nullptr) *done = std::min(offset + chunk, data->size());
  }
  if (eof) writer.write_eof();
}

/// read() until @p n bytes came, or EOF.
Coro<std::string> read_n(StreamReader reader, std::size_t n) {
  std::string out;
  while (out.size() < n) {
    auto op = reader.read(64 * KiB);
    std::string chunk = co_await op;
    if (chunk.empty()) break;
    out += chunk;
  }
  co_return out;
}

/// Payloads, made once per process.
const std::string& payload_1mib() {
  static const std::string data = pattern(MiB, 5);
  return data;
}
const std::string& payload_256kib() {
  static const std::string data = pattern(256 * KiB, 9);
  return data;
}

/// Reads one request line, then sends *@p payload with send() and returns.
Coro<void> blast_handler(StreamReader reader, StreamWriter writer, const std::string* payload) {
  auto request = reader.readline();
  std::string line = co_await request;
  auto sending = send_all(writer, payload, 64 * KiB, nullptr, false);
  co_await sending;
}

/// Reads one line, then resets the connection (SO_LINGER 0, abort: RST instead of FIN).
Coro<void> reset_handler(StreamReader reader, StreamWriter writer, Event* finished) {
  auto request = reader.readline();
  std::string line = co_await request;
  std::optional<int> fd = writer.get_extra_info_as<int>("socket");
  CHECK(fd.has_value());
  if (fd) {
    linger no_linger{1, 0};
    ::setsockopt(*fd, SOL_SOCKET, SO_LINGER, &no_linger, sizeof no_linger);
  }
  writer.transport().abort();
  finished->set();
}

struct SlowReply {
  Event started;
  bool handler_done = false;
  bool done_when_wait_closed_returned = false;
};

/// Reads one line, then sends 1 MiB in 64 KiB send()s, one loop iteration apart.
Coro<void> slow_reply_handler(StreamReader reader, StreamWriter writer, SlowReply* s) {
  auto request = reader.readline();
  std::string line = co_await request;
  s->started.set();
  const std::string& reply = payload_1mib();
  for (std::size_t offset = 0; offset < reply.size(); offset += 64 * KiB) {
    auto sending = writer.send(std::string_view(reply).substr(offset, 64 * KiB));
    co_await sending;
    auto step = next_iteration();
    co_await step;
  }
  s->handler_done = true;
}

/// Reads one line, writes a little, then throws.
Coro<void> throwing_handler(StreamReader reader, StreamWriter writer) {
  auto request = reader.readline();
  std::string line = co_await request;
  writer.write("partial\n");
  throw std::runtime_error("handler failed on purpose");
}

/// Reads one line, write()s 256 KiB without drain(), and returns.
Coro<void> write_and_return_handler(StreamReader reader, StreamWriter writer) {
  auto request = reader.readline();
  std::string line = co_await request;
  writer.write(payload_256kib());
  co_return;
}

/// Answers "a\n" with "01234" and "b\n" with "56789", until EOF.
Coro<void> halves_handler(StreamReader reader, StreamWriter writer) {
  for (;;) {
    auto request = reader.readline();
    std::string line = co_await request;
    if (line.empty()) break;
    if (line == "a\n") writer.write("01234");
    if (line == "b\n") writer.write("56789");
  }
}

struct StartTls {
  std::string command;
  std::string line;
  bool server_cipher = false;
  Event finished;
};

/// STARTTLS: reads the command, answers "OK" (and one more plaintext line), upgrades as the
/// server, then echoes one line over TLS and reads to EOF.
Coro<void> starttls_handler(StreamReader reader, StreamWriter writer, StartTls* s) {
  auto command = reader.readline();
  s->command = co_await command;
  writer.write("OK\nextra\n");  // "extra" arrives before the upgrade: it stays readable
  auto upgrading = writer.start_tls(SslOptions(test_server_context()), true);
  co_await upgrading;
  s->server_cipher = writer.get_extra_info_as<SslCipher>("cipher").has_value();
  auto request = reader.readline();
  s->line = co_await request;
  auto sending = writer.send("echo: " + s->line);
  co_await sending;
  auto rest = reader.read();
  std::string eof = co_await rest;
  CHECK(eof.empty());
  s->finished.set();
}

/// Reports its reader's limit, then answers each line ("line ..." or "too long") until three
/// answers were sent.
Coro<void> limited_handler(StreamReader reader, StreamWriter writer) {
  writer.write("limit " + std::to_string(reader.limit()) + "\n");
  for (int answered = 0; answered < 3;) {
    try {
      auto request = reader.readline();
      std::string line = co_await request;
      if (line.empty()) break;
      writer.write("line " + line);
    } catch (const std::length_error&) {
      writer.write("too long\n");
    }
    ++answered;
  }
}

/// Reads to EOF, then replies with the count: the reply goes out after the client's FIN.
Coro<void> count_then_reply_handler(StreamReader reader, StreamWriter writer) {
  auto all = reader.read(-1);
  std::string data = co_await all;
  auto sending = writer.send("got " + std::to_string(data.size()) + " bytes\n");
  co_await sending;
}

struct StartTlsFailure {
  bool server_failed = false;
  Event finished;
};

/// STARTTLS whose handshake the client abandons: records that the server's start_tls failed.
Coro<void> failing_starttls_handler(StreamReader reader, StreamWriter writer,
                                    StartTlsFailure* s) {
  auto command = reader.readline();
  std::string line = co_await command;
  writer.write("OK\n");
  try {
    auto upgrading = writer.start_tls(SslOptions(test_server_context()), true);
    co_await upgrading;
  } catch (const std::exception&) {
    s->server_failed = true;
  }
  s->finished.set();
}

/// A server side that keeps its streams, does not read until go is set, then reads to EOF.
struct Lazy {
  std::optional<StreamReader> reader;
  std::optional<StreamWriter> writer;
  Event connected;
  Event go;
  Event finished;
  std::string received;
  std::size_t max_buffered = 0;
  int connections = 0;

  ClientConnected handler() {
    return [this](StreamReader r, StreamWriter w) { return run(std::move(r), std::move(w), this); };
  }
  void reset() {
    reader.reset();
    writer.reset();
  }

 private:
  static Coro<void> run(StreamReader reader, StreamWriter writer, Lazy* self) {
    ++self->connections;
    self->reader.emplace(reader);
    self->writer.emplace(writer);
    self->connected.set();
    auto waiting = self->go.wait();
    co_await waiting;
    for (;;) {
      self->max_buffered = std::max(self->max_buffered, reader.buffered());
      auto op = reader.read(64 * KiB);
      std::string chunk = co_await op;
      if (chunk.empty()) break;
      self->received += chunk;
    }
    self->finished.set();
  }
};

/// A TCP server on 127.0.0.1 running @p handler; with @p rcvbuf, the listening socket's
/// SO_RCVBUF (inherited by accepted sockets: a small TCP window).
Coro<std::unique_ptr<Server>> serve(ClientConnected handler, int rcvbuf = 0,
                                    ServerOptions options = {}) {
  auto serving = strata::start_server(std::move(handler), "127.0.0.1", 0, std::move(options));
  std::unique_ptr<Server> server = co_await serving;
  if (rcvbuf != 0) set_socket_buffer(server->sockets().at(0).fd, SO_RCVBUF, rcvbuf);
  co_return std::move(server);
}

/// open_connection() to 127.0.0.1:@p port; with @p sndbuf, the client socket's SO_SNDBUF.
Coro<Streams> connect_to(std::uint16_t port, int sndbuf = 0) {
  auto connecting = strata::open_connection("127.0.0.1", port);
  Streams streams = co_await connecting;
  if (sndbuf != 0) {
    std::optional<int> fd = streams.writer.get_extra_info_as<int>("socket");
    REQUIRE(fd);
    set_socket_buffer(*fd, SO_SNDBUF, sndbuf);
  }
  co_return streams;
}

/// write()s (or writelines()) 64 KiB chunks (appending them to *@p written) until the writer's
/// transport buffers more than @p threshold (the peer is not reading); false if 64 MiB did
/// not get there.
Coro<bool> fill_until(StreamWriter writer, std::string* written, std::size_t threshold,
                      bool use_writelines = false) {
  for (int i = 0; i < 1024; ++i) {
    if (writer.transport().get_write_buffer_size() > threshold) co_return true;
    const std::string chunk = pattern(64 * KiB, static_cast<unsigned>(written->size()));
    if (use_writelines) {
      const std::string_view half1 = std::string_view(chunk).substr(0, 32 * KiB);
      const std::string_view half2 = std::string_view(chunk).substr(32 * KiB);
      std::span<const std::byte> parts[] = {strata::testing::bytes(half1),
                                            strata::testing::bytes(half2)};
      writer.writelines(parts);
    } else {
      writer.write(chunk);
    }
    *written += chunk;
    auto step = next_iteration();  // lets the socket take what it can
    co_await step;
  }
  co_return false;
}

/// drain() under strata::timeout() (asyncio: `await asyncio.wait_for(writer.drain(), t)`),
/// which takes the awaitable by value: it needs a movable DrainOp.
template <class W>
Coro<void> drain_within(W& writer, strata::Duration limit) {
  if constexpr (std::is_move_constructible_v<decltype(writer.drain())>) {
    auto op = strata::timeout(limit, writer.drain());
    co_await op;
  } else {
    FAIL_CHECK("DrainOp is not move-constructible (its defaulted move constructor is deleted, "
               "as Waiter cannot move): strata::timeout(d, writer.drain()) and "
               "wait_for(writer.drain(), d) do not compile");
    throw strata::TimeoutError("not run");
  }
}

/// Closes @p writer and waits until the connection is closed.
Coro<void> close_writer(StreamWriter writer) {
  writer.close();
  auto closing = writer.wait_closed();
  co_await closing;
}

/// Closes @p server and waits for its connections to end.
Coro<void> close_server(Server& server) {
  server.close();
  auto closing = server.wait_closed();
  co_await closing;
}

struct SmallReads {
  bool views = false;     // read_view(16), or read_into() a 16-byte span
  std::size_t total = 0;  // bytes to read
  std::string got;
  std::size_t waited = 0;  // reads that took a loop iteration
  Event done;
};

/// Reads *@p r's total bytes 16 at a time, counting the reads that waited; then sets done.
Coro<void> small_reads_handler(StreamReader reader, SmallReads* r) {
  std::array<char, 16> span{};
  strata::EventLoop& loop = strata::get_running_loop();
  while (r->got.size() < r->total) {
    const std::uint64_t before = loop.metrics().iterations;
    std::string_view chunk;
    if (r->views) {
      auto op = reader.read_view(16);
      chunk = co_await op;
    } else {
      auto op = reader.read_into(std::span<char>(span));
      const std::size_t n = co_await op;
      chunk = std::string_view(span.data(), n);
    }
    if (loop.metrics().iterations != before) ++r->waited;
    if (chunk.empty()) break;
    r->got += chunk;
  }
  r->done.set();
}

/// Sends *@p big with send() while an echo server sends it back, reads it all (with read(), or
/// with @p views read_view()) and checks it; then closes the connection and *@p server.
Coro<void> echo_big_then_close(Streams c, Server* server, const std::string* big, bool views) {
  Task<void> sender =
      strata::create_task(send_all(c.writer, big, 64 * KiB, nullptr, false), "sender");
  auto receiving = views ? read_n_views(c.reader, big->size()) : read_n(c.reader, big->size());
  std::string echoed = co_await receiving;
  CHECK(echoed.size() == big->size());
  CHECK(first_mismatch(echoed, *big) == npos);
  co_await sender;
  auto bye = close_writer(c.writer);
  co_await bye;
  auto stopping = close_server(*server);
  co_await stopping;
}

}  // namespace

// ---- Echo ----------------------------------------------------------------------------------

STRATA_LOOP_TEST_CASE("streams: open_connection and start_server echo 64 B and 1 MiB",
                      "[streams][tcp]") {
  TestLoop loop(TestType::kind);
  const std::string big = pattern(MiB, 7);
  auto body = [&]() -> Coro<void> {
    auto serving = strata::start_server(echo_handler, "127.0.0.1", 0);
    std::unique_ptr<Server> server = co_await serving;
    const std::uint16_t port = port_of(*server);
    auto connecting = strata::open_connection("127.0.0.1", port);
    auto [reader, writer] = co_await connecting;
    CHECK(writer.template get_extra_info_as<SocketAddress>("peername") == SocketAddress("127.0.0.1", port));
    CHECK(writer.template get_extra_info_as<int>("socket").has_value());
    CHECK(reader.limit() == StreamReader::default_limit);
    CHECK(writer.can_write_eof());
    CHECK_FALSE(writer.is_closing());

    const std::string small = pattern(64, 1);
    writer.write(small);
    auto draining = writer.drain();
    co_await draining;
    auto exact = reader.readexactly(64);
    std::string got = co_await exact;
    CHECK(got == small);

    const std::string a = "first,";
    const std::string b = "second\n";
    std::span<const std::byte> parts[] = {strata::testing::bytes(a), strata::testing::bytes(b)};
    writer.writelines(parts);
    auto line_op = reader.readline();
    std::string line = co_await line_op;
    CHECK(line == "first,second\n");

    // 1 MiB both ways at once: send() paces the writer, read() the reader.
    Task<void> sender =
        loop->create_task(send_all(writer, &big, 64 * KiB, nullptr, true), "sender");
    auto receiving = read_n(reader, big.size());
    std::string echoed = co_await receiving;
    CHECK(echoed.size() == big.size());
    CHECK(first_mismatch(echoed, big) == npos);
    co_await sender;
    CHECK_THROWS_AS(writer.write("after write_eof"), InvalidStateError);
    // The handler saw EOF and returned: the server closed the connection.
    auto eof_op = reader.read();
    std::string rest = co_await eof_op;
    CHECK(rest.empty());
    CHECK(reader.at_eof());
    writer.close();
    CHECK(writer.is_closing());
    auto closing = writer.wait_closed();
    co_await closing;  // returns: a clean close
    auto again = writer.wait_closed();
    co_await again;  // at once when closed already
    auto stopping = close_server(*server);
    co_await stopping;
  };
  loop.run(body(), 20s);
  CHECK(loop.errors().empty());
}

STRATA_LOOP_TEST_CASE("streams: read_view and read_into a span echo every size, plain and over TLS",
                      "[streams][tcp][read_view][tls]") {
  const bool views = GENERATE(true, false);
  const bool tls = GENERATE(false, true);
  INFO((views ? "read_view" : "read_into a span") << (tls ? ", over TLS" : ""));
  TestLoop loop(TestType::kind);
  const std::string big = pattern(MiB, 11);
  auto body = [&]() -> Coro<void> {
    ServerOptions server_options;
    ConnectOptions options;
    if (tls) {
      server_options.ssl = SslOptions(test_server_context());
      options.ssl = SslOptions(test_client_context());
    }
    auto serving = serve(views ? view_echo_handler : span_echo_handler, 0, server_options);
    std::unique_ptr<Server> server = co_await serving;
    auto connecting = strata::open_connection("127.0.0.1", port_of(*server), options);
    Streams c = co_await connecting;
    // One message at a time, around the sizes of the view blocks (4 to 64 KiB) and past them.
    for (const std::size_t size : {std::size_t{1}, std::size_t{999}, std::size_t{1001},
                                   4 * KiB - 1, 4 * KiB, 4 * KiB + 1, 20 * KiB, 64 * KiB,
                                   70 * KiB, std::size_t{3}}) {
      INFO("a message of " << size << " bytes");
      const std::string message = pattern(size, static_cast<unsigned>(size));
      auto sending = c.writer.send(message);
      co_await sending;
      auto receiving = read_n_views(c.reader, size);
      std::string echoed = co_await receiving;
      CHECK(echoed.size() == size);
      CHECK(first_mismatch(echoed, message) == npos);
    }
    // 1 MiB both ways at once.
    auto finishing = echo_big_then_close(c, server.get(), &big, /*views=*/true);
    co_await finishing;
  };
  loop.run(body(), 30s);
  CHECK(loop.errors().empty());
}

STRATA_LOOP_TEST_CASE("streams: small reads of a burst complete from the buffer, not a receive each",
                      "[streams][tcp][read_view]") {
  // A read smaller than what the socket holds must not make the socket give up only that much:
  // the rest would wait in the kernel for the next loop iteration, one per read.
  SmallReads r;
  r.views = GENERATE(true, false);
  INFO((r.views ? "read_view(16)" : "read_into a 16-byte span"));
  TestLoop loop(TestType::kind);
  const std::string data = pattern(64 * KiB, 9);
  r.total = data.size();
  ClientConnected handler = [p = &r](StreamReader reader, const StreamWriter& /*writer*/) {
    return small_reads_handler(std::move(reader), p);
  };
  auto body = [&]() -> Coro<void> {
    auto serving = serve(handler);
    std::unique_ptr<Server> server = co_await serving;
    auto connecting = connect_to(port_of(*server));
    Streams c = co_await connecting;
    c.writer.write(data);
    auto finished = r.done.wait();
    co_await finished;
    CHECK(r.got == data);
    CHECK(r.waited < 64);  // 4,096 reads: a receive each would wait in nearly all of them
    auto bye = close_writer(c.writer);
    co_await bye;
    auto stopping = close_server(*server);
    co_await stopping;
  };
  loop.run(body(), 30s);
  CHECK(loop.errors().empty());
}

STRATA_LOOP_TEST_CASE("streams: a read_view waiting on a connection: EOF, a reset, a cancel",
                      "[streams][tcp][read_view]") {
  Event handler_done;
  TestLoop loop(TestType::kind);
  ClientConnected handler = [done = &handler_done](StreamReader reader, StreamWriter writer) {
    return reset_handler(std::move(reader), std::move(writer), done);
  };
  auto body = [&]() -> Coro<void> {
    // Cancelled while waiting: the bytes that arrive next are the next read's.
    auto echo_serving = serve(view_echo_handler);
    std::unique_ptr<Server> echo = co_await echo_serving;
    auto connecting = connect_to(port_of(*echo));
    Streams c = co_await connecting;
    auto view_once = [](StreamReader reader) -> Coro<std::string> {
      auto op = reader.read_view();
      std::string_view v = co_await op;
      co_return std::string(v);
    };
    Task<std::string> pending = loop->create_task(view_once(c.reader), "read_view");
    auto step = iterations(2);
    co_await step;
    CHECK_FALSE(pending.done());
    pending.cancel();
    c.writer.write("after the cancel");  // may come back before the cancelled read ends
    auto ended = iterations(3);
    co_await ended;
    CHECK(pending.cancelled());
    auto receiving = read_n_views(c.reader, 16);
    std::string got = co_await receiving;
    CHECK(got == "after the cancel");
    // EOF: the server's handler returns at the client's write_eof and closes.
    c.writer.write_eof();
    auto at_end = c.reader.read_view();
    std::string_view end = co_await at_end;
    CHECK(end.empty());
    CHECK(c.reader.at_eof());
    auto bye = close_writer(c.writer);
    co_await bye;
    auto echo_stopping = close_server(*echo);
    co_await echo_stopping;

    // A reset while it waits: system_error.
    auto serving = serve(handler);
    std::unique_ptr<Server> server = co_await serving;
    auto connecting2 = connect_to(port_of(*server));
    Streams r = co_await connecting2;
    r.writer.write("reset me\n");
    Failure f;
    try {
      auto op = r.reader.read_view();
      co_await op;
    } catch (...) {
      f = describe_failure(std::current_exception());
    }
    CHECK(f.kind == "system_error");
    CHECK(f.code == std::errc::connection_reset);
    r.writer.close();
    auto done = handler_done.wait();
    co_await done;
    auto stopping = close_server(*server);
    co_await stopping;
  };
  loop.run(body(), 20s);
  CHECK(loop.errors().empty());
}

STRATA_LOOP_TEST_CASE("streams: readexactly(1 MiB) with the default 64 KiB limit completes",
                      "[streams][tcp]") {
  // asyncio's _wait_for_data() resumes a transport paused by the reader's flow control, so
  // a read that wants more than 2 x limit does not wait forever.
  TestLoop loop(TestType::kind);
  const std::string& big = payload_1mib();
  ClientConnected handler = [p = &big](StreamReader reader, StreamWriter writer) {
    return blast_handler(std::move(reader), std::move(writer), p);
  };
  auto body = [&]() -> Coro<void> {
    auto serving = serve(handler);
    std::unique_ptr<Server> server = co_await serving;
    auto connecting = connect_to(port_of(*server));
    Streams c = co_await connecting;
    c.writer.write("go\n");
    auto exact = c.reader.readexactly(big.size());
    std::string got = co_await exact;
    CHECK(got.size() == big.size());
    CHECK(first_mismatch(got, big) == npos);
    auto eof_op = c.reader.read();
    std::string rest = co_await eof_op;
    CHECK(rest.empty());
    auto closing = close_writer(c.writer);
    co_await closing;
    auto stopping = close_server(*server);
    co_await stopping;
  };
  loop.run(body(), 20s);
  CHECK(loop.errors().empty());
}

// ---- Flow control --------------------------------------------------------------------------

STRATA_LOOP_TEST_CASE("streams: a handler that does not read stops the socket, not memory",
                      "[streams][tcp][flow]") {
  Lazy st;
  TestLoop loop(TestType::kind);
  static const std::string data = pattern(16 * MiB, 3);
  auto body = [&]() -> Coro<void> {
    auto serving = serve(st.handler(), 64 * KiB);
    std::unique_ptr<Server> server = co_await serving;
    auto connecting = connect_to(port_of(*server), 64 * KiB);
    Streams c = co_await connecting;
    auto connected = st.connected.wait();
    co_await connected;
    const std::size_t limit = st.reader->limit();
    CHECK(limit == StreamReader::default_limit);

    std::size_t sent = 0;
    Task<void> sender = loop->create_task(send_all(c.writer, &data, 64 * KiB, &sent, true),
                                          "sender");
    std::size_t max_buffered = 0;
    auto stuck = poll_until([&] {
      max_buffered = std::max(max_buffered, st.reader->buffered());
      return st.reader->buffered() > 2 * limit && !st.writer->transport().is_reading() &&
             c.writer.transport().get_write_buffer_size() > high_water;
    });
    const bool paused = co_await stuck;
    CHECK(paused);
    INFO("server buffered " << st.reader->buffered() << ", client sent " << sent
                            << ", client transport buffer "
                            << c.writer.transport().get_write_buffer_size());
    // Nothing moves while the handler does not read: the client's send() is blocked.
    const std::size_t sent_then = sent;
    const std::size_t buffered_then = st.reader->buffered();
    auto idle = iterations(20);
    co_await idle;
    CHECK(sent == sent_then);
    CHECK(st.reader->buffered() == buffered_then);
    CHECK_FALSE(sender.done());
    CHECK(sent < data.size());
    CHECK(max_buffered <= 2 * limit + 64 * KiB);

    st.go.set();
    co_await sender;
    auto finished = st.finished.wait();
    co_await finished;
    CHECK(st.received.size() == data.size());
    CHECK(first_mismatch(st.received, data) == npos);
    CHECK(st.max_buffered <= 2 * limit + 64 * KiB);
    st.reset();
    auto closing = close_writer(c.writer);
    co_await closing;
    auto stopping = close_server(*server);
    co_await stopping;
  };
  loop.run(body(), 30s);
  CHECK(loop.errors().empty());
}

STRATA_LOOP_TEST_CASE("streams: drain() waits while the peer does not read, then resumes",
                      "[streams][tcp][flow]") {
  Lazy st;
  TestLoop loop(TestType::kind);
  auto body = [&]() -> Coro<void> {
    auto serving = serve(st.handler(), 64 * KiB);
    std::unique_ptr<Server> server = co_await serving;
    auto connecting = connect_to(port_of(*server), 64 * KiB);
    Streams c = co_await connecting;
    auto connected = st.connected.wait();
    co_await connected;

    std::string written;
    auto filling = fill_until(c.writer, &written, high_water);
    const bool full = co_await filling;
    REQUIRE(full);
    const std::size_t low = c.writer.transport().get_write_buffer_limits().first;
    CHECK(low == 16 * KiB);

    // The server side sees the client's address.
    CHECK(st.writer->get_extra_info_as<SocketAddress>("peername") ==
          c.writer.get_extra_info_as<SocketAddress>("sockname"));

    std::size_t buffer_at_resume = std::numeric_limits<std::size_t>::max();
    std::size_t second_at_resume = std::numeric_limits<std::size_t>::max();
    std::size_t cancelled_at_resume = std::numeric_limits<std::size_t>::max();
    auto drain_and_record = [](StreamWriter writer, std::size_t* out) -> Coro<void> {
      auto draining = writer.drain();
      co_await draining;
      *out = writer.transport().get_write_buffer_size();
    };
    // Several tasks may wait in drain() at once (asyncio 3.10+); one of them is cancelled.
    Task<void> drainer =
        loop->create_task(drain_and_record(c.writer, &buffer_at_resume), "drainer");
    Task<void> cancelled =
        loop->create_task(drain_and_record(c.writer, &cancelled_at_resume), "cancelled drainer");
    Task<void> second =
        loop->create_task(drain_and_record(c.writer, &second_at_resume), "second drainer");
    auto idle = iterations(10);
    co_await idle;
    CHECK_FALSE(drainer.done());  // paused: the peer does not read
    CHECK_FALSE(second.done());
    CHECK_FALSE(cancelled.done());
    cancelled.cancel();
    auto idle2 = iterations(3);
    co_await idle2;
    CHECK(cancelled.cancelled());
    CHECK_FALSE(drainer.done());

    st.go.set();  // the peer reads: the buffer falls to the low-water mark, drain() returns
    co_await drainer;
    co_await second;
    CHECK(buffer_at_resume <= low);
    CHECK(second_at_resume <= low);
    CHECK(cancelled_at_resume == std::numeric_limits<std::size_t>::max());

    c.writer.write_eof();
    auto finished = st.finished.wait();
    co_await finished;
    CHECK(st.received.size() == written.size());
    CHECK(first_mismatch(st.received, written) == npos);
    st.reset();
    auto closing = close_writer(c.writer);
    co_await closing;
    auto stopping = close_server(*server);
    co_await stopping;
  };
  loop.run(body(), 20s);
  CHECK(loop.errors().empty());
}

STRATA_LOOP_TEST_CASE("streams: drain() under timeout() times out against a peer that does not read",
                      "[streams][tcp][flow]") {
  Lazy st;
  TestLoop loop(TestType::kind);
  auto body = [&]() -> Coro<void> {
    auto serving = serve(st.handler(), 64 * KiB);
    std::unique_ptr<Server> server = co_await serving;
    auto connecting = connect_to(port_of(*server), 64 * KiB);
    Streams c = co_await connecting;
    auto connected = st.connected.wait();
    co_await connected;
    std::string written;
    // Well above the mark: the kernel's buffers, full as the server does not read, cannot take
    // enough of it within the timeout to bring it down to the low-water mark. (4 × the mark
    // was once enough. On io_uring with multishot receives, the server's reader and the two
    // sockets' buffers took all of it, 320 KiB, and the drain finished in time.)
    auto filling = fill_until(c.writer, &written, 16 * high_water);
    const bool full = co_await filling;
    REQUIRE(full);
    bool timed_out = false;
    try {
      auto op = drain_within(c.writer, 30ms);
      co_await op;
    } catch (const strata::TimeoutError&) {
      timed_out = true;
    }
    CHECK(timed_out);
    st.go.set();  // the writer is still usable: a later drain() completes
    auto draining = c.writer.drain();
    co_await draining;
    c.writer.write_eof();
    auto finished = st.finished.wait();
    co_await finished;
    CHECK(st.received.size() == written.size());
    st.reset();
    auto closing = close_writer(c.writer);
    co_await closing;
    auto stopping = close_server(*server);
    co_await stopping;
  };
  loop.run(body(), 20s);
  CHECK(loop.errors().empty());
}

STRATA_LOOP_TEST_CASE("streams: send() does not suspend below the high-water mark, and waits above it",
                      "[streams][tcp][flow]") {
  Lazy st;
  TestLoop loop(TestType::kind);
  auto body = [&]() -> Coro<void> {
    auto serving = serve(st.handler(), 64 * KiB);
    std::unique_ptr<Server> server = co_await serving;
    auto connecting = connect_to(port_of(*server), 64 * KiB);
    Streams c = co_await connecting;
    auto connected = st.connected.wait();
    co_await connected;

    std::string written;
    bool ran = false;
    loop->call_soon([&ran] { ran = true; });  // runs at this task's first suspension
    for (int i = 0; i < 4; ++i) {
      const std::string piece = "piece " + std::to_string(i) + "\n";
      auto sending = c.writer.send(piece);
      co_await sending;
      written += piece;
    }
    auto draining = c.writer.drain();  // below the mark: at once too
    co_await draining;
    CHECK_FALSE(ran);

    auto filling = fill_until(c.writer, &written, high_water);
    const bool full = co_await filling;
    REQUIRE(full);
    auto send_one = [](StreamWriter writer, std::string text) -> Coro<void> {
      auto sending = writer.send(text);
      co_await sending;
    };
    Task<void> sender = loop->create_task(send_one(c.writer, "tail"), "sender");
    auto idle = iterations(10);
    co_await idle;
    CHECK_FALSE(sender.done());
    written += "tail";  // written by send() even though it waits

    st.go.set();
    co_await sender;
    c.writer.write_eof();
    auto finished = st.finished.wait();
    co_await finished;
    CHECK(st.received.size() == written.size());
    CHECK(first_mismatch(st.received, written) == npos);
    st.reset();
    auto closing = close_writer(c.writer);
    co_await closing;
    auto stopping = close_server(*server);
    co_await stopping;
  };
  loop.run(body(), 20s);
  CHECK(loop.errors().empty());
}

STRATA_LOOP_TEST_CASE("streams: writing past 16 x the high-water mark without drain() warns once",
                      "[streams][tcp][flow]") {
  const bool use_writelines = GENERATE(false, true);
  INFO("written with " << (use_writelines ? "writelines()" : "write()"));
  LogRecorder log;
  Lazy st;
  TestLoop loop(TestType::kind);
  loop->set_debug(false);
  auto body = [&]() -> Coro<void> {
    auto serving = serve(st.handler(), 64 * KiB);
    std::unique_ptr<Server> server = co_await serving;
    const std::uint16_t port = port_of(*server);
    auto connecting = connect_to(port, 64 * KiB);
    Streams c = co_await connecting;
    auto connected = st.connected.wait();
    co_await connected;
    CHECK(log.count(LogLevel::warning) == 0);

    std::string written;
    auto below = fill_until(c.writer, &written, 14 * high_water, use_writelines);
    const bool filled = co_await below;
    REQUIRE(filled);
    REQUIRE(c.writer.transport().get_write_buffer_size() <= 16 * high_water);
    auto settle0 = iterations(2);
    co_await settle0;
    CHECK(log.count(LogLevel::warning) == 0);  // not yet past 16 x the mark
    auto filling = fill_until(c.writer, &written, 16 * high_water + 64 * KiB, use_writelines);
    const bool full = co_await filling;
    REQUIRE(full);
    auto settle = iterations(2);
    co_await settle;
    CHECK(log.count(LogLevel::warning) == 1);
    for (const auto& [level, message] : log.records) {
      if (level != LogLevel::warning) continue;
      INFO("warning: " << message);
      CHECK(message.find("127.0.0.1") != std::string::npos);
      CHECK(message.find(std::to_string(port)) != std::string::npos);
    }
    // More of the same: still one warning (outside debug mode).
    for (int i = 0; i < 8; ++i) {
      const std::string chunk = pattern(64 * KiB, static_cast<unsigned>(written.size()));
      c.writer.write(chunk);
      written += chunk;
    }
    auto settle2 = iterations(2);
    co_await settle2;
    CHECK(log.count(LogLevel::warning) == 1);

    st.go.set();
    c.writer.write_eof();
    auto finished = st.finished.wait();
    co_await finished;
    CHECK(st.received.size() == written.size());
    CHECK(first_mismatch(st.received, written) == npos);
    st.reset();
    auto closing = close_writer(c.writer);
    co_await closing;
    auto stopping = close_server(*server);
    co_await stopping;
  };
  loop.run(body(), 20s);
  CHECK(loop.errors().empty());
}

STRATA_LOOP_TEST_CASE("streams: the limit argument of start_server and open_connection reaches the readers",
                      "[streams][tcp]") {
  TestLoop loop(TestType::kind);
  auto handler = [](StreamReader reader, StreamWriter writer) {
    return limited_handler(std::move(reader), std::move(writer));
  };
  auto body = [&]() -> Coro<void> {
    auto serving = strata::start_server(handler, "127.0.0.1", 0, ServerOptions{}, 16);
    std::unique_ptr<Server> server = co_await serving;
    auto connecting = strata::open_connection("127.0.0.1", port_of(*server), ConnectOptions{}, 8);
    Streams c = co_await connecting;
    CHECK(c.reader.limit() == 8);
    c.writer.write("short\n" + std::string(40, 'x') + "\nafter\n");
    auto replies = c.reader.read(-1);
    std::string got = co_await replies;
    CHECK(got == "limit 16\nline short\ntoo long\nline after\n");
    auto bye = close_writer(c.writer);
    co_await bye;
    auto stopping = close_server(*server);
    co_await stopping;
  };
  loop.run(body(), 20s);
  CHECK(loop.errors().empty());
}

STRATA_LOOP_TEST_CASE("streams: a handler may still reply after the client's write_eof (half-close)",
                      "[streams][tcp]") {
  TestLoop loop(TestType::kind);
  auto body = [&]() -> Coro<void> {
    auto serving = serve(count_then_reply_handler);
    std::unique_ptr<Server> server = co_await serving;
    auto connecting = connect_to(port_of(*server));
    Streams c = co_await connecting;
    c.writer.write("twelve bytes");
    c.writer.write_eof();
    auto replies = c.reader.read(-1);
    std::string got = co_await replies;
    CHECK(got == "got 12 bytes\n");
    auto bye = close_writer(c.writer);
    co_await bye;
    auto stopping = close_server(*server);
    co_await stopping;
  };
  loop.run(body(), 20s);
  CHECK(loop.errors().empty());
}

STRATA_LOOP_TEST_CASE("streams: drain() after the connection closed cleanly throws (asyncio: \"Connection lost\")",
                      "[streams][tcp]") {
  TestLoop loop(TestType::kind);
  auto body = [&]() -> Coro<void> {
    auto serving = serve(echo_handler);
    std::unique_ptr<Server> server = co_await serving;
    auto connecting = connect_to(port_of(*server));
    Streams c = co_await connecting;
    auto bye = close_writer(c.writer);
    co_await bye;
    // asyncio: StreamWriter.drain() -> FlowControlMixin._drain_helper() raises
    // ConnectionResetError('Connection lost') once connection_lost() was called.
    Failure drained;
    try {
      auto draining = c.writer.drain();
      co_await draining;
    } catch (...) {
      drained = describe_failure(std::current_exception());
    }
    INFO("drain(): " << drained.kind << " " << drained.what << " (" << drained.code.message()
                     << ")");
    CHECK(drained.kind == "system_error");
    CHECK(drained.code == std::errc::connection_reset);
    auto stopping = close_server(*server);
    co_await stopping;
  };
  loop.run(body(), 20s);
  CHECK(loop.errors().empty());
}

// ---- Resets and closing ----

STRATA_LOOP_TEST_CASE("streams: a write-and-drain loop on a closing connection yields and throws",
                      "[streams][tcp]") {
  // asyncio's drain(): "if self._transport.is_closing(): await sleep(0)", so that
  // connection_lost() runs and _drain_helper() raises ConnectionResetError('Connection
  // lost'); without it, `while True: write(x); await drain()` never yields on a closing
  // transport (writes are dropped, the buffer never passes the mark) and spins forever.
  const bool use_abort = GENERATE(false, true);
  INFO("the connection was ended with " << (use_abort ? "transport().abort()" : "close()"));
  TestLoop loop(TestType::kind);
  auto body = [&]() -> Coro<void> {
    auto serving = serve(echo_handler);
    std::unique_ptr<Server> server = co_await serving;
    auto connecting = connect_to(port_of(*server));
    Streams c = co_await connecting;
    if (use_abort) {
      c.writer.transport().abort();
    } else {
      c.writer.close();
    }
    int completed = 0;
    Failure ended;
    try {
      for (int i = 0; i < 1000; ++i) {
        c.writer.write("more\n");
        auto draining = c.writer.drain();
        co_await draining;
        ++completed;
      }
    } catch (...) {
      ended = describe_failure(std::current_exception());
    }
    INFO("drain() completed " << completed << " times, then: " << ended.kind << " "
                              << ended.what);
    CHECK(ended.kind == "system_error");
    CHECK(completed <= 2);
    try {
      auto closing = c.writer.wait_closed();
      co_await closing;
    } catch (const std::system_error&) {
      // abort() ends the connection with an error code in Strata's transports
    }
    auto stopping = close_server(*server);
    co_await stopping;
  };
  loop.run(body(), 20s);
  CHECK(loop.errors().empty());
}

STRATA_LOOP_TEST_CASE("streams: start_tls against an untrusted certificate throws and ends the connection",
                      "[streams][tls]") {
  StartTlsFailure st;
  TestLoop loop(TestType::kind);
  ClientConnected handler = [p = &st](StreamReader reader, StreamWriter writer) {
    return failing_starttls_handler(std::move(reader), std::move(writer), p);
  };
  auto body = [&]() -> Coro<void> {
    auto serving = serve(handler);
    std::unique_ptr<Server> server = co_await serving;
    auto connecting = connect_to(port_of(*server));
    Streams c = co_await connecting;
    c.writer.write("STARTTLS\n");
    auto ok_op = c.reader.readline();
    std::string ok = co_await ok_op;
    CHECK(ok == "OK\n");
    // A client that does not trust the test CA.
    SslOptions ssl(strata::SslContext::create_default_context(strata::SslPurpose::server_auth));
    ssl.server_hostname = "localhost";
    Failure upgrade;
    try {
      auto upgrading = c.writer.start_tls(ssl);
      co_await upgrading;
    } catch (...) {
      upgrade = describe_failure(std::current_exception());
    }
    INFO("start_tls: " << upgrade.kind << " " << upgrade.what);
    CHECK(upgrade.kind == "system_error");  // SslCertVerificationError is a system_error
    CHECK(c.writer.is_closing());
    // The connection ends: wait_closed() completes (with the abort's error or without).
    try {
      auto closing = c.writer.wait_closed();
      co_await closing;
    } catch (const std::system_error&) {
    }
    auto finished = st.finished.wait();
    co_await finished;
    CHECK(st.server_failed);
    auto stopping = close_server(*server);
    co_await stopping;
  };
  loop.run(body(), 20s);
  CHECK(loop.errors().empty());
}

STRATA_LOOP_TEST_CASE("streams: after a peer reset, read, wait_closed and drain throw system_error",
                      "[streams][tcp]") {
  Event handler_done;
  TestLoop loop(TestType::kind);
  ClientConnected handler = [done = &handler_done](StreamReader reader, StreamWriter writer) {
    return reset_handler(std::move(reader), std::move(writer), done);
  };
  auto body = [&]() -> Coro<void> {
    auto serving = serve(handler);
    std::unique_ptr<Server> server = co_await serving;
    auto connecting = connect_to(port_of(*server));
    Streams c = co_await connecting;
    c.writer.write("reset me\n");
    auto reading = read_failure([&] { return c.reader.read(100); });
    Failure f = co_await reading;
    CHECK(f.kind == "system_error");
    CHECK(f.code == std::errc::connection_reset);
    INFO("read: " << f.what);

    Failure closed;
    try {
      auto closing = c.writer.wait_closed();
      co_await closing;
    } catch (...) {
      closed = describe_failure(std::current_exception());
    }
    CHECK(closed.kind == "system_error");
    CHECK(closed.code == std::errc::connection_reset);

    Failure drained;
    try {
      auto draining = c.writer.drain();
      co_await draining;
    } catch (...) {
      drained = describe_failure(std::current_exception());
    }
    CHECK(drained.kind == "system_error");

    CHECK(c.writer.is_closing());
    CHECK_NOTHROW(c.writer.write("dropped"));  // the handle outlives the connection
    // asyncio: transport.write_eof() on a closing or lost transport returns quietly.
    CHECK_NOTHROW(c.writer.write_eof());
    CHECK_FALSE(c.writer.get_extra_info("peername").has_value());
    CHECK_THROWS_AS(c.writer.transport(), InvalidStateError);
    c.writer.close();  // idempotent on a lost connection

    auto done = handler_done.wait();
    co_await done;
    auto stopping = close_server(*server);
    co_await stopping;
  };
  loop.run(body(), 20s);
  CHECK(loop.errors().empty());
}

STRATA_LOOP_TEST_CASE("streams: Server::close then wait_closed lets a running handler finish its reply",
                      "[streams][tcp]") {
  SlowReply st;
  TestLoop loop(TestType::kind);
  const std::string& reply = payload_1mib();
  ClientConnected handler = [p = &st](StreamReader reader, StreamWriter writer) {
    return slow_reply_handler(std::move(reader), std::move(writer), p);
  };
  auto body = [&]() -> Coro<void> {
    auto serving = serve(handler);
    std::unique_ptr<Server> server = co_await serving;
    const std::uint16_t port = port_of(*server);
    auto connecting = connect_to(port);
    Streams c = co_await connecting;
    c.writer.write("send it\n");
    auto started = st.started.wait();
    co_await started;

    server->close();
    CHECK_FALSE(server->is_serving());
    auto waiter = [](Server* s, SlowReply* state) -> Coro<void> {
      auto closing = s->wait_closed();
      co_await closing;
      state->done_when_wait_closed_returned = state->handler_done;
    };
    Task<void> closing = loop->create_task(waiter(server.get(), &st), "wait_closed");

    // No new connection is accepted.
    Failure refused;
    try {
      auto again = strata::open_connection("127.0.0.1", port);
      Streams late = co_await again;
      late.writer.close();
    } catch (...) {
      refused = describe_failure(std::current_exception());
    }
    CHECK(refused.kind == "system_error");

    auto receiving = c.reader.read(-1);
    std::string got = co_await receiving;
    CHECK(got.size() == reply.size());
    CHECK(first_mismatch(got, reply) == npos);
    co_await closing;
    CHECK(st.handler_done);
    CHECK(st.done_when_wait_closed_returned);
    auto bye = close_writer(c.writer);
    co_await bye;
  };
  loop.run(body(), 20s);
  CHECK(loop.errors().empty());
}

STRATA_LOOP_TEST_CASE("streams: a handler's exception reaches the loop's handler and closes the connection",
                      "[streams][tcp]") {
  TestLoop loop(TestType::kind);
  auto body = [&]() -> Coro<void> {
    auto serving = serve(throwing_handler);
    std::unique_ptr<Server> server = co_await serving;
    auto connecting = connect_to(port_of(*server));
    Streams c = co_await connecting;
    c.writer.write("hello\n");
    auto receiving = c.reader.read(-1);
    std::string got = co_await receiving;  // what it wrote, then EOF
    CHECK(got == "partial\n");
    CHECK(c.reader.at_eof());
    auto reported = poll_until([&] { return !loop.errors().empty(); }, 5s);
    const bool seen = co_await reported;
    CHECK(seen);
    auto bye = close_writer(c.writer);
    co_await bye;
    auto stopping = close_server(*server);
    co_await stopping;
  };
  loop.run(body(), 20s);
  for (const auto& e : loop.errors()) {
    UNSCOPED_INFO("reported: " << e.message << ": " << strata::describe_exception(e.exception));
  }
  REQUIRE(loop.errors().size() == 1);
  CHECK(strata::describe_exception(loop.errors()[0].exception).find("handler failed on purpose") !=
        std::string::npos);
}

STRATA_LOOP_TEST_CASE("streams: a handler's return closes the connection after its writes are sent",
                      "[streams][tcp]") {
  TestLoop loop(TestType::kind);
  const std::string& reply = payload_256kib();
  auto body = [&]() -> Coro<void> {
    auto serving = serve(write_and_return_handler);
    std::unique_ptr<Server> server = co_await serving;
    auto connecting = connect_to(port_of(*server));
    Streams c = co_await connecting;
    c.writer.write("hello\n");
    auto receiving = c.reader.read(-1);
    std::string got = co_await receiving;
    CHECK(got.size() == reply.size());
    CHECK(first_mismatch(got, reply) == npos);
    CHECK(c.reader.at_eof());
    auto bye = close_writer(c.writer);
    co_await bye;
    auto stopping = close_server(*server);
    co_await stopping;
  };
  loop.run(body(), 20s);
  CHECK(loop.errors().empty());
}

// ---- Cancellation --------------------------------------------------------------------------

STRATA_LOOP_TEST_CASE("streams: a pending read cancelled on a connection loses nothing",
                      "[streams][tcp]") {
  TestLoop loop(TestType::kind);
  auto body = [&]() -> Coro<void> {
    auto serving = serve(halves_handler);
    std::unique_ptr<Server> server = co_await serving;
    auto connecting = connect_to(port_of(*server));
    Streams c = co_await connecting;
    auto read_ten = [](StreamReader reader) -> Coro<std::string> {
      auto op = reader.readexactly(10);
      std::string s = co_await op;
      co_return s;
    };
    Task<std::string> pending = loop->create_task(read_ten(c.reader), "readexactly");
    c.writer.write("a\n");
    auto half = poll_until([&] { return c.reader.buffered() == 5; });
    const bool arrived = co_await half;
    CHECK(arrived);
    CHECK_FALSE(pending.done());
    pending.cancel();
    auto steps = iterations(3);
    co_await steps;
    CHECK(pending.cancelled());
    CHECK(c.reader.buffered() == 5);
    c.writer.write("b\n");
    auto again = c.reader.readexactly(10);
    std::string got = co_await again;
    CHECK(got == "0123456789");
    auto bye = close_writer(c.writer);
    co_await bye;
    auto stopping = close_server(*server);
    co_await stopping;
  };
  loop.run(body(), 20s);
  CHECK(loop.errors().empty());
}

// ---- TLS -----------------------------------------------------------------------------------

STRATA_LOOP_TEST_CASE("streams: TLS echo through open_connection and start_server with ssl",
                      "[streams][tls]") {
  TestLoop loop(TestType::kind);
  const std::string big = pattern(MiB, 13);
  auto body = [&]() -> Coro<void> {
    ServerOptions server_options;
    server_options.ssl = SslOptions(test_server_context());
    auto serving = serve(echo_handler, 0, server_options);
    std::unique_ptr<Server> server = co_await serving;
    ConnectOptions options;
    options.ssl = SslOptions(test_client_context());
    auto connecting = strata::open_connection("127.0.0.1", port_of(*server), options);
    Streams c = co_await connecting;
    std::optional<SslCipher> cipher = c.writer.get_extra_info_as<SslCipher>("cipher");
    REQUIRE(cipher);
    CHECK(cipher->protocol.rfind("TLSv1.", 0) == 0);
    std::optional<SslCertificate> cert = c.writer.get_extra_info_as<SslCertificate>("peercert");
    REQUIRE(cert);
    CHECK(cert->subject.find("CN=localhost") != std::string::npos);
    CHECK_FALSE(c.writer.can_write_eof());

    const std::string small = pattern(64, 2);
    c.writer.write(small);
    auto exact = c.reader.readexactly(64);
    std::string got = co_await exact;
    CHECK(got == small);

    auto finishing = echo_big_then_close(c, server.get(), &big, /*views=*/false);
    co_await finishing;
  };
  loop.run(body(), 30s);
  CHECK(loop.errors().empty());
}

STRATA_LOOP_TEST_CASE("streams: StreamWriter::start_tls upgrades a plain connection mid-stream",
                      "[streams][tls]") {
  StartTls st;
  TestLoop loop(TestType::kind);
  ClientConnected handler = [p = &st](StreamReader reader, StreamWriter writer) {
    return starttls_handler(std::move(reader), std::move(writer), p);
  };
  auto body = [&]() -> Coro<void> {
    auto serving = serve(handler);
    std::unique_ptr<Server> server = co_await serving;
    auto connecting = connect_to(port_of(*server));
    Streams c = co_await connecting;
    CHECK_FALSE(c.writer.get_extra_info("cipher").has_value());
    c.writer.write("STARTTLS\n");
    auto ok_op = c.reader.readline();
    std::string ok = co_await ok_op;
    CHECK(ok == "OK\n");

    SslOptions ssl(test_client_context());
    ssl.server_hostname = "localhost";
    auto upgrading = c.writer.start_tls(ssl);
    co_await upgrading;
    CHECK(c.writer.get_extra_info_as<SslCipher>("cipher").has_value());
    std::optional<SslCertificate> cert = c.writer.get_extra_info_as<SslCertificate>("peercert");
    CHECK(cert.has_value());
    CHECK(c.writer.get_extra_info_as<SocketAddress>("peername").has_value());

    auto extra_op = c.reader.readline();  // plaintext received before the upgrade
    std::string extra = co_await extra_op;
    CHECK(extra == "extra\n");
    c.writer.write("hello over tls\n");
    auto reply_op = c.reader.readline();
    std::string reply = co_await reply_op;
    CHECK(reply == "echo: hello over tls\n");
    auto bye = close_writer(c.writer);
    co_await bye;
    auto finished = st.finished.wait();
    co_await finished;
    CHECK(st.command == "STARTTLS\n");
    CHECK(st.line == "hello over tls\n");
    CHECK(st.server_cipher);
    auto stopping = close_server(*server);
    co_await stopping;
  };
  loop.run(body(), 30s);
  CHECK(loop.errors().empty());
}

// ---- Unix sockets --------------------------------------------------------------------------

STRATA_LOOP_TEST_CASE("streams: open_unix_connection and start_unix_server echo",
                      "[streams][unix]") {
  TempDir dir;
  TestLoop loop(TestType::kind);
  const std::string path = dir.path("echo.sock");
  const std::string big = pattern(256 * KiB, 17);
  auto body = [&]() -> Coro<void> {
    auto serving = strata::start_unix_server(echo_handler, path);
    std::unique_ptr<Server> server = co_await serving;
    CHECK(strata::testing::exists(path));
    auto connecting = strata::open_unix_connection(path);
    auto [reader, writer] = co_await connecting;
    const std::string small = pattern(64, 4);
    writer.write(small);
    auto exact = reader.readexactly(64);
    std::string got = co_await exact;
    CHECK(got == small);

    Task<void> sender =
        loop->create_task(send_all(writer, &big, 64 * KiB, nullptr, true), "sender");
    auto receiving = read_n(reader, big.size() + 1);  // to EOF
    std::string echoed = co_await receiving;
    CHECK(echoed.size() == big.size());
    CHECK(first_mismatch(echoed, big) == npos);
    co_await sender;
    CHECK(reader.at_eof());
    auto bye = close_writer(writer);
    co_await bye;
    auto stopping = close_server(*server);
    co_await stopping;
  };
  loop.run(body(), 20s);
  CHECK(loop.errors().empty());
}
