// chat_client: talks to a chat_server. Sends what it reads from stdin (lines) to the server and
// prints what the server sends (replies, and messages from others) to stdout, on the streams
// layer (strata::open_connection()).
//
//   $ printf 'register,alice\nlist,friends\n' | chat_client --port 7000
//   ok
//   alice
//   $ chat_client 127.0.0.1:7000            interactive: type commands, Ctrl-D ends
//
// At the end of stdin it half-closes the connection (after --wait SECONDS, if given, to catch
// messages meanwhile); the server answers the lines it has and closes, and chat_client exits 0
// once everything it sent has been answered. A last line without "\n" gets one. If the server
// closes first, chat_client says so on stderr and exits 1; it exits 1 too on a connection error,
// 2 on a bad option, 130 on Ctrl-C.
//
// stdin is read by a thread of its own with blocking read()s (it may be a terminal, a pipe or a
// file, and O_NONBLOCK on a terminal would leak to the shell), which hands the bytes to the loop
// with call_soon_threadsafe(), at most stdin_window bytes ahead of what the loop has sent on.
#include <strata/core/errors.hpp>
#include <strata/core/run.hpp>
#include <strata/core/sleep.hpp>
#include <strata/core/task.hpp>
#include <strata/streams/streams.hpp>
#include <strata/transports/tcp.hpp>

#include "example_options.hpp"

#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <thread>
#include <utility>

namespace {

namespace ex = strata::examples;

/// How many bytes of stdin the reading thread may hand over before the loop has sent them.
constexpr std::size_t stdin_window = 256 * 1024;
/// The bytes of one read, from stdin or from the server.
constexpr std::size_t chunk = 64 * 1024;

void print_usage() {
  std::fputs(
      "usage: chat_client [HOST:PORT] [options]\n"
      "  HOST:PORT       the server ([v6addr]:PORT for IPv6), or:\n"
      "  --host H        server address (default 127.0.0.1)\n"
      "  --port P        server port (required without HOST:PORT)\n"
      "  --wait SECONDS  at the end of stdin, stay connected this long (printing what comes)\n"
      "                  before ending the session (default 0)\n"
      "  --loop selector|proactor|epoll|poll|select   the loop (default selector)\n"
      "  --help          print this and exit\n"
      "Sends stdin's lines to a chat_server and prints what it sends back; at the end of stdin\n"
      "it waits for the replies and exits 0. Exits 1 if the server closes first or on an\n"
      "error, 2 on a bad option. E.g.: printf 'register,alice\\nlist,friends\\n' | chat_client\n"
      "--port P  prints `ok` and `alice`.\n",
      stdout);
}

struct Options {
  std::string host = "127.0.0.1";
  std::uint16_t port = 0;
  bool has_port = false;
  double wait_s = 0;
  std::optional<strata::LoopKind> loop;
};

/// Splits "HOST:PORT" (or "[V6]:PORT") into @p options.
void parse_address(std::string_view text, Options& options) {
  const std::size_t colon = text.rfind(':');
  if (colon == std::string_view::npos || colon == 0) {
    throw std::invalid_argument("expected HOST:PORT, got '" + std::string(text) + "'");
  }
  std::string_view host = text.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  } else if (host.find(':') != std::string_view::npos) {
    throw std::invalid_argument("an IPv6 address goes in brackets: [" + std::string(host) +
                                "]:PORT");
  }
  const std::string port(text.substr(colon + 1));
  options.host = std::string(host);
  options.port = static_cast<std::uint16_t>(ex::parse_number("the port", port.c_str(), 1, 65535));
  options.has_port = true;
}

/// Parses argv into @p options; returns an exit status when the program should stop.
std::optional<int> parse_options(int argc, char** argv, Options& options) {
  try {
    ex::ArgumentCursor args(argc, argv, {"--help", "-h"});
    args.allow_positionals();
    bool has_address = false;
    while (const std::optional<ex::Argument> arg = args.next()) {
      const std::string_view name = arg->name;
      const char* value = arg->value;
      if (name == "--help" || name == "-h") {
        print_usage();
        ex::print_loop_backends();
        return 0;
      }
      if (name.empty()) {
        if (has_address) {
          throw std::invalid_argument("unexpected argument '" + std::string(value) +
                                      "' (one HOST:PORT at most)");
        }
        has_address = true;
        parse_address(value, options);
      } else if (name == "--host") {
        options.host = value;
      } else if (name == "--port") {
        options.port = static_cast<std::uint16_t>(ex::parse_number(name, value, 1, 65535));
        options.has_port = true;
      } else if (name == "--wait") {
        options.wait_s = static_cast<double>(ex::parse_number(name, value, 0, 86400));
      } else if (name == "--loop") {
        options.loop = ex::parse_loop(value, ex::UnknownLoop::loop_kind);
      } else {
        throw ex::unknown_option(name);
      }
    }
    if (!options.has_port) throw std::invalid_argument("--port or HOST:PORT is required (see --help)");
  } catch (const std::exception& e) {
    std::fprintf(stderr, "chat_client: %s\n", e.what());
    return 2;
  }
  return std::nullopt;
}

// ---- stdin --------------------------------------------------------------------------------------

/// stdin, read by a thread and fed to a StreamReader on the loop.
///
/// The thread blocks in read(); it posts each chunk to the loop, where feed() appends it to
/// `reader`. `in_flight` (bytes posted and not yet taken from the reader) bounds it. Once the
/// loop is done with it, close() makes the thread stop posting; the thread may still be blocked
/// in read() when the program exits, which is why it is detached and shares this by
/// shared_ptr.
struct StdinFeed : std::enable_shared_from_this<StdinFeed> {
  strata::StreamReader reader{chunk};  // loop thread only

  std::mutex mutex;
  std::condition_variable window_open;
  strata::EventLoop* loop = nullptr;  // null once closed
  std::size_t in_flight = 0;

  /// Starts the thread. On the loop thread.
  void start(strata::EventLoop& l) {
    loop = &l;
    std::thread(&StdinFeed::run, shared_from_this()).detach();
  }

  /// Takes what the loop has read from the reader off the window. On the loop thread.
  void consumed(std::size_t n) {
    std::lock_guard lock(mutex);
    in_flight -= std::min(in_flight, n);
    window_open.notify_one();
  }

  /// Stops the thread from posting (it ends at its next wake-up). On the loop thread.
  void close() {
    std::lock_guard lock(mutex);
    loop = nullptr;
    window_open.notify_one();
  }

 private:
  // By value: the thread owns a reference for as long as it reads.
  static void run(std::shared_ptr<StdinFeed> self) {  // NOLINT(performance-unnecessary-value-param)
    self->read_all();
  }

  void read_all() {
    std::string buffer(chunk, '\0');
    for (;;) {
      {
        std::unique_lock lock(mutex);
        window_open.wait(lock, [this] { return loop == nullptr || in_flight < stdin_window; });
        if (loop == nullptr) return;
      }
      const ssize_t n = ::read(STDIN_FILENO, buffer.data(), buffer.size());
      if (n < 0 && errno == EINTR) continue;
      std::lock_guard lock(mutex);
      if (loop == nullptr) return;
      if (n <= 0) {  // EOF, or an error: either way the end of the input
        post([](StdinFeed& feed) { feed.reader.feed_eof(); });
        return;
      }
      in_flight += static_cast<std::size_t>(n);
      post([data = buffer.substr(0, static_cast<std::size_t>(n))](StdinFeed& feed) {
        feed.reader.feed_data(data);
      });
    }
  }

  /// Runs @p fn on the loop, under the mutex (the loop outlives every post made while `loop`
  /// is set: the loop thread clears it before the loop closes).
  template <class F>
  void post(F fn) {
    try {
      loop->call_soon_threadsafe([self = shared_from_this(), fn = std::move(fn)]() mutable {
        fn(*self);
      });
    } catch (const strata::EventLoopError&) {
    }
  }
};

// ---- The session --------------------------------------------------------------------------------

/// Prints what the server sends until it closes the connection. Returns normally at EOF;
/// throws std::system_error on a connection error.
strata::Coro<void> print_replies(strata::StreamReader reader) {
  for (;;) {
    strata::detail::ReadOp read = reader.read(static_cast<std::ptrdiff_t>(chunk));
    std::string data = co_await read;
    if (data.empty()) break;
    std::fwrite(data.data(), 1, data.size(), stdout);
    std::fflush(stdout);
  }
}

/// Sends stdin to the server; at its end, waits @p wait_s and half-closes the connection.
strata::Coro<void> send_input(StdinFeed& feed, strata::StreamWriter writer, double wait_s) {
  char last = '\n';
  for (;;) {
    strata::detail::ReadOp read = feed.reader.read(static_cast<std::ptrdiff_t>(chunk));
    std::string data = co_await read;
    if (data.empty()) break;
    feed.consumed(data.size());
    last = data.back();
    strata::detail::DrainOp send = writer.send(data);
    co_await send;
  }
  if (last != '\n') {  // the server answers terminated lines only
    strata::detail::DrainOp send = writer.send("\n");
    co_await send;
  }
  if (wait_s > 0) {
    strata::SleepAwaiter pause = strata::sleep(std::chrono::duration<double>(wait_s));
    co_await pause;
  }
  writer.write_eof();
}

std::string describe(const std::exception_ptr& error) {
  try {
    std::rethrow_exception(error);
  } catch (const std::exception& e) {
    return e.what();
  } catch (...) {
    return strata::describe_exception(error);
  }
}

strata::Coro<int> main_task(const Options& options, std::shared_ptr<StdinFeed> feed) {
  std::string error;
  std::optional<strata::Streams> streams;
  try {
    strata::Coro<strata::Streams> open = strata::open_connection(options.host, options.port);
    strata::Streams opened = co_await open;
    streams.emplace(std::move(opened));
  } catch (const std::exception&) {  // not CancelledError (Ctrl-C): that one goes on up
    error = describe(std::current_exception());
  }
  if (!error.empty()) {
    std::fprintf(stderr, "chat_client: %s\n", error.c_str());
    co_return 1;
  }

  feed->start(strata::get_running_loop());
  struct CloseFeed {  // however this ends, before the loop closes: the thread posts no more
    StdinFeed& feed;
    ~CloseFeed() { feed.close(); }
  } close_feed{*feed};
  strata::Task<void> sender =
      strata::create_task(send_input(*feed, streams->writer, options.wait_s), "send_input");
  try {
    strata::Coro<void> print = print_replies(streams->reader);
    co_await print;
  } catch (const std::exception&) {
    error = describe(std::current_exception());
  }
  feed->close();

  // The server has closed: after our EOF (the sender is done), or before.
  bool early = !sender.done();
  if (early) sender.cancel();
  try {
    co_await sender;
  } catch (const strata::CancelledError&) {
  } catch (const std::exception&) {
    if (error.empty()) error = describe(std::current_exception());
  }
  streams->writer.close();
  if (error.empty() && early) error = "the server closed the connection";
  if (!error.empty()) {
    std::fprintf(stderr, "chat_client: %s\n", error.c_str());
    co_return 1;
  }
  co_return 0;
}

}  // namespace

int main(int argc, char** argv) {
  Options options;
  if (auto status = parse_options(argc, argv, options)) return *status;
  strata::RunOptions run_options;
  run_options.loop = options.loop;
  auto feed = std::make_shared<StdinFeed>();
  int status = 1;
  try {
    status = strata::run(main_task(options, feed), run_options);
  } catch (const strata::KeyboardInterrupt&) {
    status = 130;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "chat_client: %s\n", e.what());
  }
  return status;
}
