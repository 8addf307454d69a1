// The chat_server's protocol without its I/O (see chat_protocol.hpp).

#include "chat_protocol.hpp"

#include <strata/core/errors.hpp>

#include <exception>
#include <stdexcept>
#include <utility>

namespace strata::examples::chat {

// ---- Text -------------------------------------------------------------------------------------

namespace {

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

}  // namespace

bool is_utf8(std::string_view text) {
  return for_each_code_point(text, [](char32_t) {});
}

bool is_space(char32_t c) {
  return (c >= 0x09 && c <= 0x0D) || c == 0x20 || c == 0x85 || c == 0xA0 || c == 0x1680 ||
         (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F ||
         c == 0x205F || c == 0x3000;
}

bool is_good_name(std::string_view name) {
  bool good = !name.empty();
  for_each_code_point(name, [&good](char32_t c) {
    if (c == U',' || is_space(c)) good = false;
  });
  return good;
}

// ---- Framing ----------------------------------------------------------------------------------

LineSplitter::LineSplitter(std::size_t limit) : limit_(limit) {
  if (limit == 0) throw std::invalid_argument("LineSplitter: the limit must be > 0");
}

void LineSplitter::feed(std::string_view data) {
  if (start_ != 0) {
    buffer_.erase(0, start_);
    start_ = 0;
  }
  buffer_.append(data);
}

std::optional<LineSplitter::Line> LineSplitter::next() {
  for (;;) {
    const std::string_view rest = std::string_view(buffer_).substr(start_);
    const std::size_t end = rest.find('\n');
    if (end == std::string_view::npos) {
      if (rest.size() <= limit_) return std::nullopt;
      // No "\n" within the limit: the line is too long, whatever follows. Its bytes so far
      // are dropped, and the rest up to its "\n" as it comes.
      start_ = buffer_.size();
      if (skipping_) return std::nullopt;
      skipping_ = true;
      return Line{true, {}};
    }
    start_ += end + 1;
    if (skipping_) {  // the end of a line reported already
      skipping_ = false;
      continue;
    }
    if (end > limit_) return Line{true, {}};
    return Line{false, rest.substr(0, end)};
  }
}

// ---- Clients and the registry -----------------------------------------------------------------

LoopState::~LoopState() { registry.remove_loop(*this); }

void LoopState::deliver(std::uint64_t id, std::string_view line) {
  const auto it = clients.find(id);
  if (it == clients.end()) return;  // disconnected meanwhile
  Connection& connection = *it->second->connection;
  try {
    if (connection.is_closing()) return;
    if (connection.write_buffer_size() + line.size() > max_backlog) {
      // It does not read: rather than let its messages pile up (or make senders wait for
      // it), drop it. Its session ends and frees its name.
      connection.abort();
      return;
    }
    connection.write(line);
  } catch (const std::exception&) {
    // The connection is gone or half-closed: nobody to deliver to.
  }
}

Registry::Registered Registry::add(LoopState& loop, Client& client, std::string_view name) {
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

void Registry::remove(LoopState& loop, const Client& client) {
  if (client.name.empty()) return;
  std::lock_guard lock(mutex_);
  const auto it = names_.find(client.name);
  if (it != names_.end() && it->second == Entry{&loop, client.id}) names_.erase(it);
}

void Registry::remove_loop(LoopState& loop) {
  std::lock_guard lock(mutex_);
  loop.closed = true;
  std::erase_if(names_, [&loop](const auto& item) { return item.second.loop == &loop; });
}

std::string Registry::list() const {
  std::lock_guard lock(mutex_);
  std::string names;
  for (const auto& [name, entry] : names_) {
    if (!names.empty()) names += ',';
    names += name;
  }
  return names;
}

bool Registry::deliver(std::string_view name, std::string line, LoopState& from) {
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
      } catch (const EventLoopError&) {
        // Closed (cannot happen while the entry exists): the message is lost with the loop.
      }
      return true;
    }
  }
  from.deliver(entry.client, line);
  return true;
}

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

// ---- One client -------------------------------------------------------------------------------

Session::Session(LoopState& state, Connection& connection, std::size_t line_limit)
    : state_(state), client_{&connection, state.next_id++, {}}, splitter_(line_limit) {
  state_.clients.emplace(client_.id, &client_);
}

Session::~Session() {
  state_.clients.erase(client_.id);
  state_.registry.remove(state_, client_);
}

std::optional<std::string> Session::next_reply() {
  const std::optional<LineSplitter::Line> line = splitter_.next();
  if (!line) return std::nullopt;
  std::string reply =
      line->too_long ? "error,line too long" : handle_line(state_, client_, line->text);
  reply += '\n';
  return reply;
}

}  // namespace strata::examples::chat
