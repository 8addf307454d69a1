// chat_server: a line-based chat over TCP, written on the streams layer (strata::start_server():
// one coroutine per client, reading lines with StreamReader and answering with StreamWriter).
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
// messages buffered up to max_backlog; one more and it is disconnected, so that a sender never
// waits for a recipient (and memory stays bounded).
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

#include "example_options.hpp"
#include "server_runner.hpp"

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <unordered_map>
#include <utility>

using namespace std::chrono_literals;

namespace {

namespace ex = strata::examples;

/// How long connections get to end after SIGINT or SIGTERM closed them, before they are
/// aborted (a client that does not read its replies would keep its connection forever).
constexpr strata::Duration grace_period = 5s;

/// The longest line read; a longer one gets `error,line too long`.
constexpr std::size_t line_limit = strata::StreamReader::default_limit;

/// How many bytes of messages may wait for a recipient that does not read: past this, the
/// recipient is disconnected (below the 16 x high-water mark at which StreamWriter warns).
constexpr std::size_t max_backlog = 256 * 1024;

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
  std::string host = "127.0.0.1";
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

// ---- Text -------------------------------------------------------------------------------------

/// Calls @p fn with each code point of @p text; returns false (at once) if @p text is not
/// well-formed UTF-8: a bad lead or continuation byte, a truncated sequence, an overlong form,
/// a surrogate, or a code point past U+10FFFF.
template <class F>
bool for_each_code_point(std::string_view text, F&& fn) {
  std::size_t i = 0;
  while (i < text.size()) {
    const auto lead = static_cast<unsigned char>(text[i]);
    std::size_t length = 0;
    char32_t c = 0;
    char32_t min = 0;
    if (lead < 0x80) {
      length = 1, c = lead;
    } else if ((lead & 0xE0) == 0xC0) {
      length = 2, c = lead & 0x1F, min = 0x80;
    } else if ((lead & 0xF0) == 0xE0) {
      length = 3, c = lead & 0x0F, min = 0x800;
    } else if ((lead & 0xF8) == 0xF0) {
      length = 4, c = lead & 0x07, min = 0x10000;
    } else {
      return false;
    }
    if (text.size() - i < length) return false;
    for (std::size_t k = 1; k < length; ++k) {
      const auto byte = static_cast<unsigned char>(text[i + k]);
      if ((byte & 0xC0) != 0x80) return false;
      c = (c << 6) | (byte & 0x3F);
    }
    if (c < min || c > 0x10FFFF || (c >= 0xD800 && c <= 0xDFFF)) return false;
    fn(c);
    i += length;
  }
  return true;
}

bool is_utf8(std::string_view text) {
  return for_each_code_point(text, [](char32_t) {});
}

/// Whether @p c is white space (Unicode's White_Space property).
bool is_space(char32_t c) {
  return (c >= 0x09 && c <= 0x0D) || c == 0x20 || c == 0x85 || c == 0xA0 || c == 0x1680 ||
         (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F ||
         c == 0x205F || c == 0x3000;
}

/// A name may be registered: not empty, no comma, no white space (@p name is UTF-8).
bool is_good_name(std::string_view name) {
  bool good = !name.empty();
  for_each_code_point(name, [&good](char32_t c) {
    if (c == U',' || is_space(c)) good = false;
  });
  return good;
}

// ---- Clients and the registry -----------------------------------------------------------------

class Registry;

/// One connected client, in the frame of its serve_client() coroutine.
struct Client {
  strata::StreamWriter writer;
  std::uint64_t id = 0;
  std::string name;  // empty until registered
};

/// What one loop (one thread) serves: its clients, by id. The runner makes it before its loop
/// starts and destroys it after the loop has closed, so that callbacks posted to the loop, and
/// clients destroyed with it, may refer to it. Destroying it frees the names of its clients
/// (in case the loop ended before its shut_down()).
struct LoopState {
  Registry& registry;
  strata::EventLoop* loop = nullptr;  // set on the loop's thread before any client connects
  std::unordered_map<std::uint64_t, Client*> clients;  // loop thread only
  std::uint64_t next_id = 1;                            // loop thread only
  bool closed = false;  // no more registrations: under the registry's mutex

  LoopState();
  LoopState(const LoopState&) = delete;
  LoopState& operator=(const LoopState&) = delete;
  ~LoopState();

  /// Writes @p line to client @p id of this loop, if it is still there. On the loop's thread.
  void deliver(std::uint64_t id, std::string_view line) {
    const auto it = clients.find(id);
    if (it == clients.end()) return;  // disconnected meanwhile
    strata::StreamWriter& writer = it->second->writer;
    try {
      if (writer.is_closing()) return;
      strata::Transport& transport = writer.transport();
      if (transport.get_write_buffer_size() + line.size() > max_backlog) {
        // It does not read: rather than let its messages pile up (or make senders wait for
        // it), drop it. Its serve_client() ends and frees its name.
        transport.abort();
        return;
      }
      writer.write(line);
    } catch (const std::exception&) {
      // The connection is gone or half-closed: nobody to deliver to.
    }
  }
};

/// Where a registered name lives: a client of a loop.
struct Entry {
  LoopState* loop = nullptr;
  std::uint64_t client = 0;
  friend bool operator==(const Entry&, const Entry&) = default;
};

/// The registered names of every loop. Thread-safe: one mutex guards the map (and each
/// LoopState's `closed`); an entry exists only while its client is connected, and its loop
/// removes them all (remove_loop()) before it ends, so that whoever finds an entry under the
/// mutex may post to its loop.
class Registry {
 public:
  enum class Registered { ok, taken, closed };

  /// Registers @p name for @p client of @p loop, freeing the name it had.
  Registered add(LoopState& loop, Client& client, std::string_view name) {
    const Entry entry{&loop, client.id};
    std::lock_guard lock(mutex_);
    if (loop.closed) return Registered::closed;
    if (const auto it = names_.find(name); it != names_.end()) {
      return it->second == entry ? Registered::ok : Registered::taken;
    }
    if (!client.name.empty()) names_.erase(client.name);
    names_.emplace(std::string(name), entry);
    client.name = std::string(name);
    return Registered::ok;
  }

  /// Frees the name of @p client of @p loop, if it has one.
  void remove(LoopState& loop, const Client& client) {
    if (client.name.empty()) return;
    std::lock_guard lock(mutex_);
    const auto it = names_.find(client.name);
    if (it != names_.end() && it->second == Entry{&loop, client.id}) names_.erase(it);
  }

  /// Frees every name of @p loop's clients and refuses new ones: its loop is ending.
  void remove_loop(LoopState& loop) {
    std::lock_guard lock(mutex_);
    loop.closed = true;
    std::erase_if(names_, [&loop](const auto& item) { return item.second.loop == &loop; });
  }

  /// The registered names, sorted, comma-separated.
  std::string list() const {
    std::lock_guard lock(mutex_);
    std::string names;
    for (const auto& [name, entry] : names_) {
      if (!names.empty()) names += ',';
      names += name;
    }
    return names;
  }

  /// Sends @p line to the client registered as @p name: written at once when it is a client
  /// of @p from (the calling loop), else handed to its loop. Returns false when no one has the
  /// name.
  bool deliver(std::string_view name, std::string line, LoopState& from) {
    Entry entry;
    {
      std::lock_guard lock(mutex_);
      const auto it = names_.find(name);
      if (it == names_.end()) return false;
      entry = it->second;
      if (entry.loop != &from) {
        // Under the mutex: the entry proves its loop still runs.
        try {
          entry.loop->loop->call_soon_threadsafe(
              [state = entry.loop, id = entry.client, line = std::move(line)] {
                state->deliver(id, line);
              });
        } catch (const strata::EventLoopError&) {
          // Closed (cannot happen while the entry exists): the message is lost with the loop.
        }
        return true;
      }
    }
    from.deliver(entry.client, line);
    return true;
  }

 private:
  mutable std::mutex mutex_;
  std::map<std::string, Entry, std::less<>> names_;
};

/// The one registry of every loop; it outlives them all.
Registry shared_registry;

LoopState::LoopState() : registry(shared_registry) {}
LoopState::~LoopState() { registry.remove_loop(*this); }

// ---- One client -------------------------------------------------------------------------------

/// The reply to one line (without its "\n"), after registering or delivering what it says.
std::string handle_line(LoopState& state, Client& client, std::string_view line) {
  if (line.ends_with('\r')) line.remove_suffix(1);
  if (!is_utf8(line)) return "error,bad encoding";
  const std::size_t comma = line.find(',');
  if (comma == std::string_view::npos) return "error,unknown command";
  const std::string_view verb = line.substr(0, comma);
  const std::string_view rest = line.substr(comma + 1);
  if (verb == "register") {
    if (!is_good_name(rest)) return "error,bad name";
    switch (state.registry.add(state, client, rest)) {
      case Registry::Registered::ok:
        return "ok";
      case Registry::Registered::taken:
        return "error,name taken";
      case Registry::Registered::closed:
        break;
    }
    return "error,shutting down";
  }
  if (verb == "list" && rest == "friends") {
    if (client.name.empty()) return "error,not registered";
    return state.registry.list();
  }
  if (verb == "chat") {
    const std::size_t comma2 = rest.find(',');
    if (comma2 == std::string_view::npos) return "error,unknown command";
    if (client.name.empty()) return "error,not registered";
    const std::string_view to = rest.substr(0, comma2);
    const std::string_view text = rest.substr(comma2 + 1);
    std::string message;
    message.reserve(client.name.size() + text.size() + 7);
    message.append("from,").append(client.name).append(",").append(text).append("\n");
    if (!state.registry.deliver(to, std::move(message), state)) return "error,no such user";
    return "ok";
  }
  return "error,unknown command";
}

/// Serves one connection, as start_server() calls it: reads lines and sends a reply to each.
/// Returns at EOF (or when the connection is lost); start_server() then closes it.
strata::Coro<void> serve_client(LoopState& state, strata::StreamReader reader,
                                strata::StreamWriter writer) {
  Client client{writer, state.next_id++, {}};
  state.clients.emplace(client.id, &client);
  struct Leave {  // however the coroutine ends, even destroyed with its loop
    LoopState& state;
    Client& client;
    ~Leave() {
      state.clients.erase(client.id);
      state.registry.remove(state, client);
    }
  } leave{state, client};

  try {
    bool skipping = false;  // dropping the rest of a line that was too long
    for (;;) {
      std::string line;
      std::size_t overrun = 0;
      bool eof = false;
      try {
        strata::detail::ReadOp read = reader.readuntil("\n");
        std::string got = co_await read;
        line = std::move(got);
      } catch (const strata::LimitOverrunError& e) {
        overrun = std::max<std::size_t>(e.consumed(), 1);
      } catch (const strata::IncompleteReadError&) {
        eof = true;  // an unterminated last line (the client left mid-line) is dropped
      }
      if (eof) break;
      if (overrun != 0) {
        // No "\n" within the limit: drop what is safe to drop, and the rest up to the next
        // "\n" as it comes. One reply per long line.
        strata::detail::ReadOp drop = reader.readexactly(overrun);
        std::string dropped = co_await drop;
        if (skipping) continue;
        skipping = true;
        strata::detail::DrainOp send = writer.send("error,line too long\n");
        co_await send;
        continue;
      }
      if (skipping) {  // the end of the long line
        skipping = false;
        continue;
      }
      line.pop_back();  // the "\n"
      std::string reply = handle_line(state, client, line);
      reply += '\n';
      strata::detail::DrainOp send = writer.send(reply);
      co_await send;
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
    strata::Coro<std::unique_ptr<strata::Server>> start = strata::start_server(
        std::move(on_client), options.host, port, std::move(server_options), line_limit);
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
    std::string host = options.host;
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
