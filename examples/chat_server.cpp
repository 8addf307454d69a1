// chat_server: a line-based chat over TCP, written on the streams layer (strata::start_server():
// one coroutine per client, reading with StreamReader and answering with StreamWriter). The
// protocol itself (framing, commands, replies, the registry of names) is chat_protocol.hpp's,
// which fuzz/chat_line.cpp fuzzes too.
//
//   chat_server --port 7000               one loop, 127.0.0.1:7000
//   chat_server --port 0 --threads 4      four loops on four threads, one shared registry
//
//   $ printf 'register,alice\nlist,friends\n' | chat_client --port 7000
//   ok
//   alice
//
// The protocol is the chat_server contract of DESIGN.md: newline-terminated UTF-8 lines, one
// reply line per command.
//
//   register,<name>     ok | error,name taken | error,bad name (empty, a comma or white space)
//   list,friends        the registered names, sorted, comma-separated, the caller's included
//   chat,<name>,<text>  ok, and `from,<sender>,<text>` to <name> | error,no such user
//   before register     error,not registered (for list and chat)
//   anything else       error,unknown command
//
// Besides the contract: a line may end in "\r\n"; a line that is not UTF-8 gets
// `error,bad encoding`; a line longer than the reader's limit (64 KiB) gets `error,line too
// long` and is skipped up to its end; an unterminated last line (the client left mid-line) is
// dropped. `register` again renames the client. A recipient that does not read gets its
// messages buffered up to 256 KiB (chat::default_max_backlog); one more and it is
// disconnected, so that a sender never waits for a recipient (and memory stays bounded).
//
// With --threads N, N loops each accept on their own socket (SO_REUSEPORT), and the name
// registry is shared: a message to a client of another loop is handed to that loop with
// call_soon_threadsafe(), and that loop writes it.
//
// It follows the example-server contract of DESIGN.md: prints `listening on HOST:PORT` once
// ready; SIGINT or SIGTERM stops accepting and closes every connection once the replies written
// to it are sent (up to 5 s, then aborts what is left), and exits 0; a start-up failure prints
// one line to stderr and exits 1 (2 for a bad option).
#include <strata/core/errors.hpp>
#include <strata/core/timeout.hpp>
#include <strata/streams/streams.hpp>
#include <strata/transports/server.hpp>
#include <strata/transports/tcp.hpp>

#include "chat_protocol.hpp"
#include "example_options.hpp"
#include "server_runner.hpp"

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>

using namespace std::chrono_literals;

namespace {

namespace ex = strata::examples;
namespace chat = strata::examples::chat;

/// How long connections get to end after SIGINT or SIGTERM closed them, before they are
/// aborted (a client that does not read its replies would keep its connection forever).
constexpr strata::Duration grace_period = 5s;

/// The longest line read; a longer one gets `error,line too long`.
constexpr std::size_t line_limit = strata::StreamReader::default_limit;

/// The one registry of names of every loop; it outlives them all.
chat::Registry shared_registry;

void print_usage() {
  std::fputs(
      "usage: chat_server [options]\n"
      "  --host H        address to listen on (default 127.0.0.1)\n"
      "  --port P        port; 0 picks a free one (default 0)\n"
      "  --loop selector|proactor|epoll|poll|select\n"
      "                  the event loop (default selector, on its best backend)\n"
      "  --threads N     N loops on N threads, one listening socket each (SO_REUSEPORT),\n"
      "                  sharing one name registry: clients of different loops chat as\n"
      "                  if on one (default 1)\n"
      "  --help          print this and exit\n"
      "Newline-terminated UTF-8 lines, one reply line per command:\n"
      "  register,NAME       ok | error,name taken | error,bad name (empty, comma, white space);\n"
      "                      registering again renames\n"
      "  list,friends        the registered names, sorted, comma-separated\n"
      "  chat,NAME,TEXT      ok, and NAME gets from,SENDER,TEXT | error,no such user\n"
      "  list or chat before register: error,not registered; else: error,unknown command\n"
      "A line over 64 KiB gets error,line too long (and is skipped); one that is not UTF-8,\n"
      "error,bad encoding. A recipient with 256 KiB of messages unread is disconnected.\n"
      "A name is freed when its client disconnects.\n"
      "Prints `listening on HOST:PORT` once ready. SIGINT or SIGTERM stops it: every\n"
      "connection is closed once its replies are sent (aborted after 5 s), then it exits 0.\n",
      stdout);
}

struct Options {
  std::string_view host = "127.0.0.1";  // or an argv string: both live as long as the program
  std::uint16_t port = 0;
  std::optional<strata::LoopKind> loop;  // the best available when empty
  unsigned threads = 1;
};

Options options;  // read-only once main() has parsed it; every loop's thread reads it

/// Parses argv into options; returns an exit status when the program should stop there.
std::optional<int> parse_options(int argc, char** argv) {
  try {
    ex::ArgumentCursor args(argc, argv, {"--help", "-h"});
    while (const std::optional<ex::Argument> arg = args.next()) {
      const std::string_view name = arg->name;
      const char* value = arg->value;
      if (name == "--help" || name == "-h") {
        print_usage();
        ex::print_loop_backends();
        return 0;
      }
      if (name == "--host") {
        options.host = value;
      } else if (name == "--port") {
        options.port = static_cast<std::uint16_t>(ex::parse_number(name, value, 0, 65535));
      } else if (name == "--threads") {
        options.threads = static_cast<unsigned>(ex::parse_number(name, value, 1, 1024));
      } else if (name == "--loop") {
        options.loop = ex::parse_loop(value);
      } else {
        throw ex::unknown_option(name);
      }
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "chat_server: %s\n", e.what());
    return 2;
  }
  return std::nullopt;
}

// ---- One client -------------------------------------------------------------------------------

/// The chat's view of a client's StreamWriter.
class WriterConnection final : public chat::Connection {
 public:
  explicit WriterConnection(strata::StreamWriter writer) : writer_(std::move(writer)) {}

  bool is_closing() const override { return writer_.is_closing(); }
  std::size_t write_buffer_size() const override {
    return writer_.transport().get_write_buffer_size();
  }
  void write(std::string_view data) override { writer_.write(data); }
  void abort() override { writer_.transport().abort(); }

 private:
  strata::StreamWriter writer_;
};

/// The state of one loop: the chat's, on the one registry of every loop.
struct LoopState : chat::LoopState {
  LoopState() : chat::LoopState(shared_registry) {}
};

/// Serves one connection, as start_server() calls it: reads what the client sends and sends
/// a reply to each line (chat::Session). Returns at EOF (or when the connection is lost);
/// start_server() then closes it.
strata::Coro<void> serve_client(LoopState& state, strata::StreamReader reader,
                                strata::StreamWriter writer) {
  WriterConnection connection(writer);
  chat::Session session(state, connection, line_limit);  // leaves however the coroutine ends
  try {
    for (;;) {
      strata::detail::ReadOp read = reader.read(static_cast<std::ptrdiff_t>(line_limit));
      std::string data = co_await read;
      // EOF: an unterminated last line (the client left mid-line) is dropped.
      if (data.empty()) break;
      session.feed(data);
      while (std::optional<std::string> reply = session.next_reply()) {
        strata::detail::DrainOp send = writer.send(*reply);
        co_await send;
      }
    }
  } catch (const std::system_error&) {
    // Reset, or lost while a reply waited to be sent: the client is gone.
  }
}

// ---- One loop's listener ------------------------------------------------------------------------

/// One loop's server, serving the clients of its LoopState.
class ChatListener {
 public:
  using State = LoopState;

  /// The first loop's server. With port 0, every socket must end up on one port number: the
  /// addresses of a host like "localhost" each get their own ephemeral port. Then it binds
  /// again on the first socket's port, or tries another ephemeral port, a few times.
  static strata::Coro<ChatListener> open_first(LoopState& state, bool reuse_port) {
    for (int attempt = 1;; ++attempt) {
      try {
        strata::Coro<ChatListener> open_any = open(state, options.port, reuse_port);
        ChatListener listener = co_await open_any;
        if (options.port == 0 && !listener.has_one_port()) {
          const std::uint16_t port = listener.port();
          listener.server_.reset();  // closes its sockets at once
          strata::Coro<ChatListener> again = open(state, port, reuse_port);
          listener = co_await again;
        }
        co_return listener;
      } catch (const std::system_error& e) {
        if (options.port != 0 || attempt == 10 || e.code() != std::errc::address_in_use) throw;
      }
    }
  }

  /// Starts the server of @p state's loop on the running loop; @p port 0 binds an ephemeral
  /// port.
  static strata::Coro<ChatListener> open(LoopState& state, std::uint16_t port, bool reuse_port) {
    state.loop = &strata::get_running_loop();
    strata::ServerOptions server_options;
    server_options.reuse_port = reuse_port;
    LoopState* loop_state = &state;
    strata::ClientConnected on_client = [loop_state](strata::StreamReader reader,
                                                     strata::StreamWriter writer) {
      return serve_client(*loop_state, std::move(reader), std::move(writer));
    };
    strata::Coro<std::unique_ptr<strata::Server>> start =
        strata::start_server(std::move(on_client), std::string(options.host), port,
                             std::move(server_options), line_limit);
    ChatListener listener;
    listener.state_ = &state;
    listener.server_ = co_await start;
    co_return listener;
  }

  /// The port of the first listening socket.
  std::uint16_t port() const { return server_->sockets().front().address.port(); }

  /// The HOST of the ready line: the host as given (an IPv6 address in brackets), or for the
  /// empty host (every interface) the first socket's address.
  std::string host() const {
    std::string host(options.host);
    if (host.empty()) host = server_->sockets().front().address.host();
    return host.find(':') != std::string::npos ? "[" + host + "]" : host;
  }

  /// Stops accepting and closes every connection once what was written to it is sent; aborts
  /// those still open after grace_period. Then frees the names of this loop's clients.
  strata::Coro<void> shut_down() {
    server_->close();
    server_->close_clients();
    bool closed = false;
    try {
      strata::Coro<void> wait = server_->wait_closed();
      strata::Coro<void> bounded = strata::wait_for(std::move(wait), grace_period);
      co_await bounded;
      closed = true;
    } catch (const strata::TimeoutError&) {
    }
    if (!closed) {
      server_->abort_clients();
      strata::Coro<void> wait = server_->wait_closed();
      co_await wait;
    }
    state_->registry.remove_loop(*state_);
  }

 private:
  /// Whether every listening socket has the port of the first.
  bool has_one_port() const {
    for (const strata::ServerSocket& socket : server_->sockets()) {
      if (socket.address.port() != port()) return false;
    }
    return true;
  }

  LoopState* state_ = nullptr;
  std::unique_ptr<strata::Server> server_;
};

}  // namespace

int main(int argc, char** argv) {
  if (auto status = parse_options(argc, argv)) return *status;
  return ex::run_server<ChatListener>("chat_server", options.threads, options.loop);
}
