// chat_protocol.hpp: the chat_server's protocol without its I/O: the line framing, the
// commands and their replies, and the registry of names that the clients of every loop share.
// chat_server drives it from its streams (one coroutine per client); fuzz/chat_line.cpp drives
// it through an in-memory transport. Nothing here reads or waits: a Session is fed the bytes a
// client sent and hands back one reply per line; it writes only what it delivers to other
// clients, through the Connection interface, which never waits either.
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
// `error,bad encoding`; a line longer than the limit gets `error,line too long` (one reply for
// the whole line) and is dropped up to its end without being kept; an unterminated last line
// is never answered (the caller drops it at EOF). `register` again renames the client. A
// recipient whose connection holds more than max_backlog unsent bytes is disconnected
// (Connection::abort()) rather than sent more, so that a sender never waits for a recipient
// and memory stays bounded. Once its loop is shutting down, `register` gets
// `error,shutting down`.
#pragma once

#include <strata/core/event_loop.hpp>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>

namespace strata::examples::chat {

/// How many bytes of messages may wait for a recipient that does not read, by default: past
/// this, the recipient is disconnected (in chat_server: below the 16 x high-water mark at which
/// StreamWriter warns).
inline constexpr std::size_t default_max_backlog = 256 * 1024;

// ---- Text -------------------------------------------------------------------------------------

/// Whether @p text is well-formed UTF-8: no bad lead or continuation byte, no truncated
/// sequence, no overlong form, no surrogate, nothing past U+10FFFF.
bool is_utf8(std::string_view text);
/// Whether @p c is white space (Unicode's White_Space property).
bool is_space(char32_t c);
/// Whether @p name (UTF-8) may be registered: not empty, no comma, no white space.
bool is_good_name(std::string_view name);

// ---- Framing ----------------------------------------------------------------------------------

/// Cuts a byte stream into lines ending in "\n". A line whose bytes before the "\n" number
/// more than the limit is reported once as too long, as soon as that is known, and its bytes
/// are dropped as they come: the splitter never keeps more than the limit of an unfinished
/// line.
class LineSplitter {
 public:
  /// One item of the stream.
  struct Line {
    bool too_long = false;  ///< a line over the limit (text is then empty)
    std::string_view text;  ///< without its "\n"; valid until the next feed()
  };

  /// @throws std::invalid_argument  @p limit is 0.
  explicit LineSplitter(std::size_t limit);

  /// Appends @p data to what is to be split.
  void feed(std::string_view data);
  /// The next line, or the news that a line is too long; nullopt when no more is known yet.
  std::optional<Line> next();
  /// Bytes held: the lines not yet taken by next(), and the start of the unfinished one.
  std::size_t buffered() const noexcept { return buffer_.size() - start_; }
  std::size_t limit() const noexcept { return limit_; }

 private:
  std::string buffer_;
  std::size_t start_ = 0;  // what next() has taken of buffer_
  std::size_t limit_;
  bool skipping_ = false;  // dropping the rest of a line reported too long
};

// ---- Clients and the registry -----------------------------------------------------------------

/// The server's end of one client's connection, as the chat writes to it (chat_server: a
/// StreamWriter). No call waits; any may throw once the connection is gone (the chat then
/// gives up on it).
class Connection {
 public:
  /// Closing or closed: whatever is written now never reaches the client.
  virtual bool is_closing() const = 0;
  /// Bytes written and not yet sent.
  virtual std::size_t write_buffer_size() const = 0;
  virtual void write(std::string_view data) = 0;
  /// Drops the connection at once, and what waits to be sent.
  virtual void abort() = 0;

 protected:
  Connection() = default;
  Connection(const Connection&) = default;
  Connection& operator=(const Connection&) = default;
  ~Connection() = default;
};

class Registry;

/// One connected client.
struct Client {
  Connection* connection = nullptr;
  std::uint64_t id = 0;
  std::string name;  // empty until registered
};

/// What one loop (one thread) serves: its clients, by id. It must outlive the clients and
/// every callback posted to its loop that refers to it; destroying it frees the names of its
/// clients (in case the loop ended before they left).
struct LoopState {
  explicit LoopState(Registry& registry, std::size_t max_backlog = default_max_backlog)
      : registry(registry), max_backlog(max_backlog) {}
  LoopState(const LoopState&) = delete;
  LoopState& operator=(const LoopState&) = delete;
  ~LoopState();

  /// Writes @p line to client @p id of this loop, if it is still there and reads: a client
  /// with more than max_backlog bytes unsent is aborted instead. On the loop's thread.
  void deliver(std::uint64_t id, std::string_view line);

  Registry& registry;
  std::size_t max_backlog;
  EventLoop* loop = nullptr;  // set on the loop's thread before any client connects
  std::unordered_map<std::uint64_t, Client*> clients;  // loop thread only
  std::uint64_t next_id = 1;                            // loop thread only
  bool closed = false;  // no more registrations: under the registry's mutex
};

/// The registered names of every loop. Thread-safe: one mutex guards the map (and each
/// LoopState's `closed`); an entry exists only while its client is connected, and its loop
/// removes them all (remove_loop()) before it ends, so that whoever finds an entry under the
/// mutex may post to its loop.
class Registry {
 public:
  enum class Registered { ok, taken, closed };

  /// Registers @p name for @p client of @p loop, freeing the name it had.
  Registered add(LoopState& loop, Client& client, std::string_view name);
  /// Frees the name of @p client of @p loop, if it has one.
  void remove(LoopState& loop, const Client& client);
  /// Frees every name of @p loop's clients and refuses new ones: its loop is ending.
  void remove_loop(LoopState& loop);
  /// The registered names, sorted, comma-separated.
  std::string list() const;
  /// Sends @p line to the client registered as @p name: written at once when it is a client
  /// of @p from (the calling loop), else handed to its loop. Returns false when no one has the
  /// name.
  bool deliver(std::string_view name, std::string line, LoopState& from);

 private:
  struct Entry {
    LoopState* loop = nullptr;
    std::uint64_t client = 0;
    friend bool operator==(const Entry&, const Entry&) = default;
  };

  mutable std::mutex mutex_;
  std::map<std::string, Entry, std::less<>> names_;
};

/// The reply to one line (without its "\n", and without a "\r" before it or not), after
/// registering or delivering what it says.
std::string handle_line(LoopState& state, Client& client, std::string_view line);

// ---- One client -------------------------------------------------------------------------------

/// One client's side of the chat, from its connection to its departure: the lines it sends
/// and the replies to them. On the loop's thread.
class Session {
 public:
  /// Joins @p state's clients, writing what others send it to @p connection; lines longer than
  /// @p line_limit bytes are refused.
  Session(LoopState& state, Connection& connection, std::size_t line_limit);
  /// Leaves: the client's name is freed.
  ~Session();
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;

  /// Appends bytes the client sent.
  void feed(std::string_view data) { splitter_.feed(data); }
  /// The reply to the next whole line fed, ending in "\n", once what it says is done;
  /// nullopt when no whole line is left (what remains is the start of a line).
  std::optional<std::string> next_reply();
  /// Bytes fed and not yet answered (see LineSplitter::buffered()).
  std::size_t buffered() const noexcept { return splitter_.buffered(); }
  /// The client's registered name; empty before register.
  const std::string& name() const noexcept { return client_.name; }

 private:
  LoopState& state_;
  Client client_;
  LineSplitter splitter_;
};

}  // namespace strata::examples::chat
