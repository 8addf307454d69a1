// The code of docs/guides/streams.md: stream servers and clients (start_server,
// open_connection), StreamReader's reads and limits, StreamWriter's flow control, and a
// graceful server shutdown. Every server listens on 127.0.0.1 (port 0) and is driven by a
// client in this program; it exits 0 when every answer is the expected one.
#include <strata/core/errors.hpp>
#include <strata/core/run.hpp>
#include <strata/core/sleep.hpp>
#include <strata/core/socket_address.hpp>
#include <strata/core/timeout.hpp>
#include <strata/streams/streams.hpp>

#include <cctype>
#include <charconv>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <system_error>
#include <utility>

using namespace std::chrono_literals;

namespace {

int failures = 0;

void expect(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "streams: FAILED: %s\n", what);
    ++failures;
  }
}

// [snippet:shout]
/// Answers each line with the line in upper case, until the client closes its side.
strata::Coro<void> shout(strata::StreamReader reader, strata::StreamWriter writer) {
  auto lines = reader.lines();
  for (;;) {
    auto next = lines.next();
    std::optional<std::string> line = co_await next;
    if (!line) break;  // end of file
    for (char& c : *line) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
    auto sending = writer.send(*line);
    co_await sending;
  }
}  // returning closes the connection, once what was written is sent
// [/snippet:shout]

strata::Coro<void> shout_demo() {
  // [snippet:shout-client]
  auto starting = strata::start_server(shout, "127.0.0.1", 0);
  std::unique_ptr<strata::Server> server = co_await starting;
  const std::uint16_t port = server->sockets().front().address.port();

  auto connecting = strata::open_connection("127.0.0.1", port);
  auto [reader, writer] = co_await connecting;
  auto peer = writer.get_extra_info_as<strata::SocketAddress>("peername");  // the server

  writer.write("hello\n");
  writer.write("streams\n");
  writer.write_eof();  // half-close: the server reads EOF after these lines, and still answers
  auto reading = reader.read();  // everything, up to the end of the stream
  std::string answer = co_await reading;  // "HELLO\nSTREAMS\n"

  writer.close();
  auto closing = writer.wait_closed();
  co_await closing;
  server->close();
  auto server_closing = server->wait_closed();
  co_await server_closing;
  // [/snippet:shout-client]
  expect(peer.has_value() && peer->port() == port, "shout: peername");
  expect(answer == "HELLO\nSTREAMS\n", "shout: answer");
}

// [snippet:frames]
constexpr std::size_t max_frame = 1 << 20;

/// Length-prefixed messages: a decimal length and "\n", then that many bytes. Answers each
/// with "got N bytes\n".
strata::Coro<void> serve_frames(strata::StreamReader reader, strata::StreamWriter writer) {
  try {
    for (;;) {
      auto reading_header = reader.readuntil("\n");
      std::string header = co_await reading_header;  // "5\n"
      std::size_t size = 0;
      const char* end = header.data() + header.size() - 1;
      auto parsed = std::from_chars(header.data(), end, size);
      if (parsed.ec != std::errc() || parsed.ptr != end || size > max_frame) {
        writer.write("bad header\n");
        co_return;
      }
      auto reading_body = reader.readexactly(size);
      std::string body = co_await reading_body;
      auto sending = writer.send("got " + std::to_string(body.size()) + " bytes\n");
      co_await sending;
    }
  } catch (const strata::IncompleteReadError& e) {
    // The end of the stream came first. Between two messages nothing was read:
    // partial() is empty. Inside one, partial() holds the part that came.
    if (!e.partial().empty()) writer.write("truncated\n");
  } catch (const strata::LimitOverrunError&) {
    writer.write("header too long\n");  // no "\n" within the reader's limit
  }
}
// [/snippet:frames]

strata::Coro<std::string> send_frames(std::uint16_t port, std::string data) {
  auto connecting = strata::open_connection("127.0.0.1", port);
  strata::Streams client = co_await connecting;
  client.writer.write(data);
  client.writer.write_eof();
  auto reading = client.reader.read();
  std::string answer = co_await reading;
  client.writer.close();
  auto closing = client.writer.wait_closed();
  co_await closing;
  co_return answer;
}

strata::Coro<void> frames_demo() {
  // [snippet:frames-server]
  strata::ServerOptions options;
  auto starting = strata::start_server(serve_frames, "127.0.0.1", 0, options,
                                       /*limit=*/1024);  // no header is longer
  std::unique_ptr<strata::Server> server = co_await starting;
  // [/snippet:frames-server]
  const std::uint16_t port = server->sockets().front().address.port();

  auto whole = send_frames(port, "5\nhello3\nabc");
  expect(co_await whole == "got 5 bytes\ngot 3 bytes\n", "frames: two messages");
  auto truncated = send_frames(port, "5\nhello11\nhello");
  expect(co_await truncated == "got 5 bytes\ntruncated\n", "frames: truncated");
  auto bad = send_frames(port, "five\nhello");
  expect(co_await bad == "bad header\n", "frames: bad header");
  auto long_header = send_frames(port, std::string(2000, '1'));
  expect(co_await long_header == "header too long\n", "frames: header too long");

  server->close();
  auto closing = server->wait_closed();
  co_await closing;
}

strata::Coro<void> limits_demo() {
  // [snippet:limits]
  strata::StreamReader reader(16);  // a reader fed by hand, with a limit of 16 bytes
  reader.feed_data("a line much longer than sixteen bytes\nnext\n");

  std::size_t consumed = 0;
  try {
    auto reading = reader.readuntil("\n");
    co_await reading;
  } catch (const strata::LimitOverrunError& e) {
    consumed = e.consumed();  // 37: the bytes before the "\n"; they stay in the reader
  }
  auto skipping = reader.readexactly(consumed + 1);  // drop the long line and its "\n"
  co_await skipping;
  auto reading_next = reader.readuntil("\n");
  std::string next = co_await reading_next;  // "next\n"

  reader.feed_data("another line that is far too long\nlast\n");
  bool too_long = false;
  try {
    auto reading = reader.readline();
    co_await reading;
  } catch (const std::length_error&) {
    too_long = true;  // readline() dropped the long line
  }
  auto reading_last = reader.readline();
  std::string last = co_await reading_last;  // "last\n"
  // [/snippet:limits]
  expect(consumed == 37, "limits: consumed");
  expect(next == "next\n", "limits: the next line");
  expect(too_long, "limits: readline's length_error");
  expect(last == "last\n", "limits: the line after the long one");

  // [snippet:incomplete]
  strata::StreamReader short_reader;
  short_reader.feed_data("abc");
  short_reader.feed_eof();
  std::string partial;
  try {
    auto reading = short_reader.readexactly(10);
    co_await reading;
  } catch (const strata::IncompleteReadError& e) {
    partial = e.partial();  // "abc"; e.expected() is 10
  }
  // [/snippet:incomplete]
  expect(partial == "abc", "incomplete: partial");
}

strata::Coro<void> timeout_demo() {
  // [snippet:timeout]
  strata::StreamReader reader;
  bool timed_out = false;
  try {
    auto reading = strata::timeout(20ms, reader.readline());
    co_await reading;
  } catch (const strata::TimeoutError&) {
    timed_out = true;  // the cancelled read took nothing from the reader
  }
  reader.feed_data("late\n");
  auto reading = reader.readline();
  std::string line = co_await reading;  // "late\n"
  // [/snippet:timeout]
  expect(timed_out, "timeout: TimeoutError");
  expect(line == "late\n", "timeout: the line after");
}

// [snippet:worker]
/// Says "ready", then answers each line after some work, until the client's end of file.
strata::Coro<void> worker(strata::StreamReader reader, strata::StreamWriter writer) {
  writer.write("ready\n");
  for (;;) {
    auto reading = reader.readline();
    std::string line = co_await reading;
    if (line.empty()) co_return;  // end of file: the client, or close_clients()
    co_await strata::sleep(50ms);  // the work
    auto sending = writer.send("done: " + line);
    co_await sending;
  }
}
// [/snippet:worker]

// [snippet:shutdown]
/// Stops @p server gracefully: no new connections; the handlers running get @p grace to
/// finish, then the connections still open are closed (their handlers read end of file).
strata::Coro<void> shut_down(strata::Server& server, strata::Duration grace) {
  server.close();
  bool finished = true;
  try {
    auto finishing = strata::wait_for(server.wait_closed(), grace);
    co_await finishing;
  } catch (const strata::TimeoutError&) {
    finished = false;
  }
  if (!finished) {
    server.close_clients();  // Transport::close(): what was written is still sent
    auto closing = server.wait_closed();
    co_await closing;
  }
}
// [/snippet:shutdown]

strata::Coro<void> shutdown_demo() {
  auto starting = strata::start_server(worker, "127.0.0.1", 0);
  std::unique_ptr<strata::Server> server = co_await starting;
  const std::uint16_t port = server->sockets().front().address.port();

  // Two clients: one with a job in progress, one idle. Each reads "ready" first, so that the
  // server has accepted it.
  auto connecting_busy = strata::open_connection("127.0.0.1", port);
  strata::Streams busy = co_await connecting_busy;
  auto connecting_idle = strata::open_connection("127.0.0.1", port);
  strata::Streams idle = co_await connecting_idle;
  auto ready_busy = busy.reader.readline();
  expect(co_await ready_busy == "ready\n", "shutdown: busy ready");
  auto ready_idle = idle.reader.readline();
  expect(co_await ready_idle == "ready\n", "shutdown: idle ready");
  busy.writer.write("job\n");
  busy.writer.write_eof();

  auto stopping = shut_down(*server, 1s);  // the job takes 50 ms: ample
  co_await stopping;

  auto busy_rest = busy.reader.read();
  expect(co_await busy_rest == "done: job\n", "shutdown: the job finished");
  auto idle_rest = idle.reader.read();
  expect((co_await idle_rest).empty(), "shutdown: the idle client was closed");
}

strata::Coro<int> main_task() {
  auto shouting = shout_demo();
  co_await shouting;
  auto framing = frames_demo();
  co_await framing;
  auto limiting = limits_demo();
  co_await limiting;
  auto timing = timeout_demo();
  co_await timing;
  auto stopping = shutdown_demo();
  co_await stopping;
  co_return failures == 0 ? 0 : 1;
}

}  // namespace

int main() {
  try {
    return strata::run(main_task());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "streams: %s\n", e.what());
    return 1;
  }
}
