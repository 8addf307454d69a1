// Cancel-safety of the awaitables of strata::streams, as each header's "@par Cancellation"
// states it (docs/reliability.md, "Cancel-safety", has the table): StreamReader's reads and
// lines(), StreamWriter's drain(), send(), wait_closed() and start_tls(), open_connection(),
// Process::wait() and communicate(). A task is suspended in the awaitable (it sets an Event
// just before the await, and the test awaits that Event), cancelled with Task::cancel(), and
// what is left is checked: the bytes in the reader, the bytes the peer receives, the
// connection, the descriptors, the child. The race shape too: the data that completes a read
// arrives in the iteration the read is cancelled.
#include <strata/streams/process.hpp>
#include <strata/streams/stream_reader.hpp>
#include <strata/streams/stream_writer.hpp>
#include <strata/streams/streams.hpp>

#include <catch2/catch.hpp>

#include <sys/socket.h>

#include <chrono>
#include <csignal>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

#include <strata/core/async_generator.hpp>
#include <strata/core/coro.hpp>
#include <strata/core/errors.hpp>
#include <strata/core/event.hpp>
#include <strata/core/event_loop.hpp>
#include <strata/core/task.hpp>
#include <strata/core/timeout.hpp>
#include <strata/transports/server.hpp>
#include <strata/transports/ssl.hpp>
#include <strata/transports/subprocess.hpp>
#include <strata/transports/transport.hpp>

#include "../transports/net_test_support.hpp"
#include "../transports/stream_test_support.hpp"
#include "../transports/tls_test_support.hpp"
#include "cancel_test.hpp"
#include "loop_test.hpp"

using namespace std::chrono_literals;
using strata::ClientConnected;
using strata::Coro;
using strata::Event;
using strata::Process;
using strata::Server;
using strata::StreamReader;
using strata::Streams;
using strata::StreamWriter;
using strata::Task;
using strata::detail::ReadOp;
using strata::testing::count_open_fds;
using strata::testing::first_mismatch;
using strata::testing::name_of;
using strata::testing::next_iteration;
using strata::testing::pattern;
using strata::testing::suspended_in;
using strata::testing::TestLoop;

namespace {

constexpr std::size_t KiB = 1024;

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

// ---- StreamReader ---------------------------------------------------------------------------

/// Every kind of read.
enum class Read { read_n, read_all, readline, readexactly, readuntil, readuntil_any };

const char* to_string(Read kind) {
  switch (kind) {
    case Read::read_n:
      return "read(10)";
    case Read::read_all:
      return "read(-1)";
    case Read::readline:
      return "readline()";
    case Read::readexactly:
      return "readexactly(10)";
    case Read::readuntil:
      return "readuntil(\"\\r\\n\")";
    case Read::readuntil_any:
      return "readuntil({\"\\r\\n\", \"!!\"})";
  }
  return "?";
}

ReadOp make_read(StreamReader& reader, Read kind) {
  switch (kind) {
    case Read::read_n:
      return reader.read(10);
    case Read::read_all:
      return reader.read(-1);
    case Read::readline:
      return reader.readline();
    case Read::readexactly:
      return reader.readexactly(10);
    case Read::readuntil:
      return reader.readuntil("\r\n");
    case Read::readuntil_any:
      break;
  }
  return reader.readuntil(std::vector<std::string>{"\r\n", "!!"});
}

}  // namespace

STRATA_LOOP_TEST_CASE(
    "StreamReader: a read cancelled while waiting consumes nothing, also the "
    "partial bytes it was waiting on: the next read gets them",
    "[streams][cancel]") {
  const Read kind = GENERATE(Read::read_n, Read::read_all, Read::readline, Read::readexactly,
                             Read::readuntil, Read::readuntil_any);
  INFO("cancelled in " << to_string(kind));
  TestLoop loop(TestType::kind);
  auto body = [kind]() -> Coro<void> {
    StreamReader reader;
    // Bytes that do not complete the read: read(10) waits only on an empty buffer.
    const std::string partial = kind == Read::read_n ? "" : "ab\r";
    reader.feed_data(partial);
    auto starting = suspended_in([&reader, kind] { return make_read(reader, kind); }, "reader");
    Task<std::string> task = co_await starting;
    std::string held = partial;
    if (kind != Read::read_n) {
      reader.feed_data("cd");  // more, still not enough (and no separator)
      held += "cd";
      auto step = next_iteration();
      co_await step;
      CHECK_FALSE(task.done());
    }
    // read(-1) takes what arrives while it waits: the bytes are in the read, not the buffer.
    if (kind == Read::read_all) CHECK(reader.buffered() == 0);
    task.cancel();
    std::string outcome = co_await task;
    CHECK(outcome == "CancelledError");
    CHECK(reader.buffered() == held.size());
    reader.feed_data("ef\r\n");
    reader.feed_eof();
    auto rest = reader.read(-1);
    std::string got = co_await rest;
    CHECK(got == held + "ef\r\n");
  };
  loop.run(body(), 5s);
}

STRATA_LOOP_TEST_CASE(
    "StreamReader: a read completed by incoming data, then cancelled in the "
    "same iteration, leaves the data for the next read",
    "[streams][cancel]") {
  const Read kind = GENERATE(Read::read_n, Read::read_all, Read::readline, Read::readexactly,
                             Read::readuntil, Read::readuntil_any);
  INFO("cancelled in " << to_string(kind));
  TestLoop loop(TestType::kind);
  auto body = [kind]() -> Coro<void> {
    StreamReader reader;
    auto starting = suspended_in([&reader, kind] { return make_read(reader, kind); }, "reader");
    Task<std::string> task = co_await starting;
    const std::string data = "0123456789\r\n";
    reader.feed_data(data);                         // completes the read...
    if (kind == Read::read_all) reader.feed_eof();  // (read(-1) completes at EOF)
    task.cancel();                                  // ...which is cancelled before it resumes
    std::string outcome = co_await task;
    CHECK(outcome == "CancelledError");
    CHECK(reader.buffered() == data.size());
    if (kind != Read::read_all) reader.feed_eof();
    auto rest = reader.read(-1);
    std::string got = co_await rest;
    CHECK(got == data);
  };
  loop.run(body(), 5s);
}

STRATA_LOOP_TEST_CASE(
    "StreamReader: a read that times out under wait_for() or timeout() consumes "
    "nothing",
    "[streams][cancel]") {
  TestLoop loop(TestType::kind);
  auto body = []() -> Coro<void> {
    StreamReader reader;
    reader.feed_data("abcd");
    auto first = suspended_in([&reader] { return strata::wait_for(reader.readexactly(10), 20ms); },
                              "wait_for");
    Task<std::string> t1 = co_await first;
    std::string outcome1 = co_await t1;
    CHECK(outcome1 == "TimeoutError");
    CHECK(reader.buffered() == 4);
    auto second =
        suspended_in([&reader] { return strata::timeout(20ms, reader.readuntil("!")); }, "timeout");
    Task<std::string> t2 = co_await second;
    std::string outcome2 = co_await t2;
    CHECK(outcome2 == "TimeoutError");
    CHECK(reader.buffered() == 4);
    reader.feed_data("efghij");
    auto exact = reader.readexactly(10);
    std::string got = co_await exact;
    CHECK(got == "abcdefghij");
  };
  loop.run(body(), 5s);
}

STRATA_LOOP_TEST_CASE(
    "StreamReader: a cancelled lines() next() consumes nothing but ends that "
    "generator; readline() and a new lines() go on",
    "[streams][cancel]") {
  TestLoop loop(TestType::kind);
  auto body = []() -> Coro<void> {
    StreamReader reader;
    reader.feed_data("one\n");
    strata::AsyncGenerator<std::string> lines = reader.lines();
    auto first = lines.next();
    std::optional<std::string> one = co_await first;
    CHECK(one == "one\n");
    reader.feed_data("tw");
    auto starting = suspended_in([&lines] { return lines.next(); }, "lines");
    Task<std::string> task = co_await starting;
    task.cancel();
    std::string outcome = co_await task;
    CHECK(outcome == "CancelledError");
    CHECK(lines.done());  // that generator is over...
    auto after = lines.next();
    std::optional<std::string> none = co_await after;
    CHECK_FALSE(none.has_value());
    CHECK(reader.buffered() == 2);  // ...but the reader lost nothing
    reader.feed_data("o\nthree\n");
    auto line = reader.readline();
    std::string two = co_await line;
    CHECK(two == "two\n");
    strata::AsyncGenerator<std::string> more = reader.lines();
    auto next = more.next();
    std::optional<std::string> three = co_await next;
    CHECK(three == "three\n");
  };
  loop.run(body(), 5s);
}

// ---- Connections ----------------------------------------------------------------------------

namespace {

/// The server side of the connections: keeps the streams, reads nothing until go is set, then
/// reads everything until EOF (or an error) into received, and returns.
struct Peer {
  std::optional<StreamReader> reader;
  std::optional<StreamWriter> writer;
  Event connected;
  Event go;
  Event finished;
  std::string received;
  int connections = 0;
  bool failed = false;

  ClientConnected handler() {
    return [this](StreamReader r, StreamWriter w) { return run(std::move(r), std::move(w), this); };
  }

  static Coro<void> run(StreamReader reader, StreamWriter writer, Peer* self) {
    ++self->connections;
    self->reader.emplace(reader);
    self->writer.emplace(writer);
    self->connected.set();
    auto waiting = self->go.wait();
    co_await waiting;
    try {
      for (;;) {
        auto op = reader.read(64 * KiB);
        std::string chunk = co_await op;
        if (chunk.empty()) break;
        self->received += chunk;
      }
    } catch (const std::system_error&) {
      self->failed = true;
    }
    self->finished.set();
  }
};

/// Echoes lines until EOF.
Coro<void> line_echo(StreamReader reader, StreamWriter writer) {
  for (;;) {
    auto op = reader.readline();
    std::string line = co_await op;
    if (line.empty()) break;
    writer.write(line);
  }
}

std::uint16_t port_of(const Server& server) { return server.sockets().at(0).address.port(); }

void set_socket_buffer(int fd, int option, int size) {
  strata::testing::check_syscall(::setsockopt(fd, SOL_SOCKET, option, &size, sizeof size),
                                 "setsockopt");
}

/// A server on 127.0.0.1:0 running @p handler; with @p rcvbuf, a small TCP window.
Coro<std::unique_ptr<Server>> serve(ClientConnected handler, int rcvbuf) {
  auto serving = strata::start_server(std::move(handler), "127.0.0.1", 0);
  std::unique_ptr<Server> server = co_await serving;
  if (rcvbuf != 0) set_socket_buffer(server->sockets().at(0).fd, SO_RCVBUF, rcvbuf);
  co_return std::move(server);
}

/// open_connection() to 127.0.0.1:@p port; with @p sndbuf, a small socket send buffer.
Coro<Streams> connect_to(std::uint16_t port, int sndbuf) {
  auto connecting = strata::open_connection("127.0.0.1", port);
  Streams streams = co_await connecting;
  if (sndbuf != 0) {
    std::optional<int> fd = streams.writer.get_extra_info_as<int>("socket");
    REQUIRE(fd);
    set_socket_buffer(*fd, SO_SNDBUF, sndbuf);
  }
  co_return streams;
}

/// write()s 64 KiB chunks (appending them to *@p written) until the transport buffers more
/// than its high-water mark (the peer does not read); false if 64 MiB did not get there.
Coro<bool> fill_until_paused(StreamWriter writer, std::string* written) {
  const std::size_t high = writer.transport().get_write_buffer_limits().second;
  for (int i = 0; i < 1024; ++i) {
    if (writer.transport().get_write_buffer_size() > high) co_return true;
    const std::string chunk = pattern(64 * KiB, static_cast<unsigned>(written->size()));
    writer.write(chunk);
    *written += chunk;
    auto step = next_iteration();  // lets the socket take what it can
    co_await step;
  }
  co_return false;
}

Coro<void> close_writer(StreamWriter writer) {
  writer.close();
  auto closing = writer.wait_closed();
  co_await closing;
}

Coro<void> close_server(Server& server) {
  server.close();
  auto closing = server.wait_closed();
  co_await closing;
}

}  // namespace

STRATA_LOOP_TEST_CASE(
    "StreamWriter: a drain() or send() cancelled while paused leaves the bytes "
    "queued: the peer receives every byte, send()'s included",
    "[streams][cancel]") {
  TestLoop loop(TestType::kind);
  Peer peer;
  auto body = [&peer]() -> Coro<void> {
    auto serving = serve(peer.handler(), 64 * KiB);
    std::unique_ptr<Server> server = co_await serving;
    auto connecting = connect_to(port_of(*server), 64 * KiB);
    Streams c = co_await connecting;
    auto connected = peer.connected.wait();
    co_await connected;

    std::string written;
    auto filling = fill_until_paused(c.writer, &written);
    const bool paused = co_await filling;
    REQUIRE(paused);
    auto draining = suspended_in([w = c.writer]() mutable { return w.drain(); }, "drain");
    Task<std::string> drainer = co_await draining;
    drainer.cancel();
    std::string outcome = co_await drainer;
    CHECK(outcome == "CancelledError");
    CHECK_FALSE(c.writer.is_closing());
    CHECK(c.writer.transport().get_write_buffer_size() > 0);

    const std::string extra = pattern(100 * KiB, 77);
    auto sending = suspended_in([w = c.writer, &extra]() mutable { return w.send(extra); }, "send");
    Task<std::string> sender = co_await sending;  // wrote extra, then waits in its drain
    written += extra;
    sender.cancel();
    std::string outcome2 = co_await sender;
    CHECK(outcome2 == "CancelledError");

    peer.go.set();  // the peer reads: a new drain() returns
    auto drain_again = c.writer.drain();
    co_await drain_again;
    c.writer.write_eof();
    auto finished = peer.finished.wait();
    co_await finished;
    CHECK_FALSE(peer.failed);
    CHECK(peer.received.size() == written.size());
    CHECK(first_mismatch(peer.received, written) == std::string::npos);
    auto closing = close_writer(c.writer);
    co_await closing;
    auto stopping = close_server(*server);
    co_await stopping;
  };
  loop.run(body(), 30s);
  CHECK(loop.errors().empty());
}

STRATA_LOOP_TEST_CASE(
    "StreamWriter: a cancelled wait_closed() leaves the connection open and "
    "usable",
    "[streams][cancel]") {
  TestLoop loop(TestType::kind);
  auto body = []() -> Coro<void> {
    auto serving = serve(line_echo, 0);
    std::unique_ptr<Server> server = co_await serving;
    auto connecting = connect_to(port_of(*server), 0);
    Streams c = co_await connecting;
    auto waiting = suspended_in([w = c.writer]() mutable { return w.wait_closed(); }, "closer");
    Task<std::string> closer = co_await waiting;
    closer.cancel();
    std::string outcome = co_await closer;
    CHECK(outcome == "CancelledError");
    CHECK_FALSE(c.writer.is_closing());
    c.writer.write("ping\n");
    auto line = c.reader.readline();
    std::string echoed = co_await line;
    CHECK(echoed == "ping\n");
    auto closing = close_writer(c.writer);
    co_await closing;
    auto stopping = close_server(*server);
    co_await stopping;
  };
  loop.run(body(), 20s);
  CHECK(loop.errors().empty());
}

STRATA_LOOP_TEST_CASE(
    "open_connection: cancelled before it completes, it leaves no descriptor "
    "and no connection open",
    "[streams][cancel]") {
  const int steps = GENERATE(1, 2, 3);
  INFO("cancelled after " << steps << " iteration(s)");
  TestLoop loop(TestType::kind);
  Peer peer;
  auto body = [&peer, steps]() -> Coro<void> {
    peer.go.set();  // the server reads at once, to EOF
    auto serving = serve(peer.handler(), 0);
    std::unique_ptr<Server> server = co_await serving;
    const int fds_before = count_open_fds();
    auto connect = [](std::uint16_t port) -> Coro<std::string> {
      std::string out = "ok";
      try {
        auto connecting = strata::open_connection("127.0.0.1", port);
        Streams streams = co_await connecting;
      } catch (const strata::CancelledError&) {
        out = "CancelledError";
      }
      co_return out;
    };
    Task<std::string> task = strata::create_task(connect(port_of(*server)), "open_connection");
    auto step = iterations(steps);
    co_await step;
    // Still inside open_connection(), unless the loop was quick (then the streams it returned
    // are dropped, which closes the connection: no leak either way).
    const bool pending = !task.done();
    task.cancel();
    std::string outcome = co_await task;
    CHECK(outcome == (pending ? "CancelledError" : "ok"));
    // A connection the server accepted ends (the client side was closed), and every
    // descriptor opened for it, on both sides, is closed.
    auto settled = poll_until([&] { return peer.connections == 0 || peer.finished.is_set(); });
    const bool ended = co_await settled;
    CHECK(ended);
    auto released = poll_until([&] { return count_open_fds() == fds_before; });
    const bool no_leak = co_await released;
    CHECK(no_leak);
    auto stopping = close_server(*server);
    co_await stopping;
  };
  loop.run(body(), 20s);
  CHECK(loop.errors().empty());
}

STRATA_LOOP_TEST_CASE(
    "StreamWriter: start_tls() cancelled during the handshake is not "
    "cancel-safe: the connection is aborted",
    "[streams][cancel][tls]") {
  TestLoop loop(TestType::kind);
  Peer peer;  // a plain-TCP server that never answers the ClientHello
  auto body = [&peer]() -> Coro<void> {
    auto serving = serve(peer.handler(), 0);
    std::unique_ptr<Server> server = co_await serving;
    auto connecting = connect_to(port_of(*server), 0);
    Streams c = co_await connecting;
    auto connected = peer.connected.wait();
    co_await connected;
    strata::SslOptions ssl(strata::testing::test_client_context());
    ssl.server_hostname = "localhost";
    auto upgrading =
        suspended_in([w = c.writer, ssl]() mutable { return w.start_tls(ssl); }, "start_tls");
    Task<std::string> upgrader = co_await upgrading;
    upgrader.cancel();
    std::string outcome = co_await upgrader;
    CHECK(outcome == "CancelledError");
    CHECK(c.writer.is_closing());
    auto reading = strata::testing::exception_of(c.reader.read(100));
    std::exception_ptr error = co_await reading;
    CHECK(name_of(error).find("Connection lost") != std::string::npos);
    peer.go.set();
    auto finished = peer.finished.wait();
    co_await finished;  // the server side ends: EOF or reset
    auto stopping = close_server(*server);
    co_await stopping;
  };
  loop.run(body(), 20s);
}

// ---- Process --------------------------------------------------------------------------------

namespace {

strata::SubprocessOptions piped_in_out() {
  strata::SubprocessOptions options;
  options.stdin = strata::Stdio::pipe();
  options.stdout = strata::Stdio::pipe();
  return options;
}

/// Kills the child, waits for its exit and for its transport to go.
Coro<void> kill_and_reap(Process process) {
  process.kill();
  auto waiting = process.wait();
  int rc = co_await waiting;
  CHECK(rc == -SIGKILL);
  auto gone = poll_until([&process] {
    try {
      (void)process.transport();
      return false;
    } catch (const strata::InvalidStateError&) {
      return true;
    }
  });
  const bool gone_ok = co_await gone;
  CHECK(gone_ok);
}

}  // namespace

STRATA_LOOP_TEST_CASE(
    "Process: a cancelled wait() leaves the child running; a later wait() gets "
    "its status",
    "[streams][cancel][process]") {
  TestLoop loop(TestType::kind);
  auto body = []() -> Coro<void> {
    auto starting = strata::create_subprocess_exec("sleep", {"30"}, piped_in_out());
    Process proc = co_await starting;
    auto waiting = suspended_in([proc]() mutable { return proc.wait(); }, "wait");
    Task<std::string> waiter = co_await waiting;
    waiter.cancel();
    std::string outcome = co_await waiter;
    CHECK(outcome == "CancelledError");
    CHECK_FALSE(proc.returncode().has_value());
    auto reaping = kill_and_reap(proc);
    co_await reaping;
  };
  loop.run(body(), 20s);
  CHECK(loop.errors().empty());
}

STRATA_LOOP_TEST_CASE(
    "Process: a cancelled communicate() leaves what a still-open pipe gave in "
    "its reader; the child runs on",
    "[streams][cancel][process]") {
  TestLoop loop(TestType::kind);
  auto body = []() -> Coro<void> {
    auto starting =
        strata::create_subprocess_exec("sh", {"-c", "printf hello; exec sleep 30"}, piped_in_out());
    Process proc = co_await starting;
    auto talking = suspended_in([proc]() mutable { return proc.communicate(); }, "communicate");
    Task<std::string> talker = co_await talking;
    auto step = iterations(5);  // its reading and writing tasks start
    co_await step;
    CHECK(proc.stdin->is_closing());  // communicate() closed stdin (no input)
    talker.cancel();
    std::string outcome = co_await talker;
    CHECK(outcome == "CancelledError");
    CHECK_FALSE(proc.returncode().has_value());
    // Whether "hello" came before the cancel (read(-1) gives it back) or after, it is there.
    auto hello = proc.stdout->readexactly(5);
    std::string got = co_await hello;
    CHECK(got == "hello");
    auto reaping = kill_and_reap(proc);
    co_await reaping;
  };
  loop.run(body(), 20s);
  CHECK(loop.errors().empty());
}
