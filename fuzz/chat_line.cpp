// Fuzz target chat_line: the chat_server's line protocol (examples/chat_protocol.hpp: the line
// framing, the commands, the registry of names, the delivery of messages and its backlog
// limit), with up to four clients connected at once to one loop's state, each through an
// in-memory FakeTransport, sending input-chosen lines in input-chosen pieces, interleaved;
// reading their replies at once or only when told (slow readers); ending with EOF, vanishing
// (reset) and reconnecting. A small protocol here drives each client's chat::Session as
// chat_server's coroutine does: it answers every whole line, stops answering while the write
// buffer is above its high-water mark (where the coroutine waits in send()), stops reading once
// more than 2 x the line limit waits unanswered (where the StreamReader pauses the transport),
// and at EOF closes once every line is answered.
//
// What it checks, against a model written here from DESIGN.md's chat contract and chat_server's
// documented extras (its own UTF-8 validator from Unicode's table of well-formed sequences, the
// White_Space code points as byte strings, a per-byte line splitter, a sorted map of names),
// which mirrors the FakeTransport's write buffer and water marks to know when a client's
// lines are answered:
// - Every client receives exactly the model's bytes: one reply line per whole line it sent,
//   in order (ok, error,name taken, error,bad name, error,not registered, error,unknown command,
//   error,no such user, error,bad encoding, the sorted list), and the `from,<sender>,<text>`
//   lines of the messages sent to it, each where the model puts it among its replies.
// - A line of more than the limit gets `error,line too long` once, however it is cut and
//   whether or not it ends, and nothing else; an unterminated last line gets nothing. The
//   session never keeps more than the limit of an unfinished line once its replies flow.
// - A message to a recipient whose unsent bytes would pass the backlog limit disconnects the
//   recipient (abort), exactly when the model says; a message to a closing recipient is
//   dropped; the sender hears `ok` either way. No write buffer ever holds more than
//   max(high-water mark, backlog) plus one reply.
// - Names are freed when their client's connection is lost (not before: a reset client's name
//   stays taken until then). The connections end exactly when the model says, each with one
//   connection_lost(); EOF closes a connection once its replies are taken; nothing is written
//   after close(); no data arrives after connection_lost().
// - No stall: a client whose reading is paused has its writing paused. No exception reaches the
//   loop. At the end every session is gone: no client in the loop's state, no name registered.
//
// Input: 2 configuration bytes, then commands.
//   [0] bits 0-4: line limit = 8 + 2 n (8..70); bits 5-6: write buffer high-water mark 16, 64,
//       256, 4096 (low: a quarter); bit 7: unused.
//   [1] bits 0-1: backlog limit 24, 96, 512, 65536; bits 2-5: slots 0-3 start as slow readers
//       (their peer reads only when a command says); bits 6-7: clients connected at the start
//       (slots 0..n, 1 to 4).
//   Each command is one byte c: slot = c & 3; op = (c >> 2) & 7; a = c >> 5 (0..7).
//     op 0, 1: the slot's client sends the input up to and including the next "\n" (or to the
//              end), in pieces of a + 1 bytes (a = 7: one piece)
//     op 2: the slot's client sends the input up to and including the (a + 1)-th next "\n",
//           in one piece
//     op 3: the slot's peer reads 1, 4, 16, 64, 256, 1024, 4096 or all (a) of what waits
//     op 4: the slot's client ends its sending (EOF)
//     op 5: the slot's client vanishes (connection reset)
//     op 6: a new client connects in the slot, if the slot's connection has ended
//     op 7: the slot turns from slow reader to fast or back
//   Data for a slot whose connection does not read (ended, or paused) is skipped. At the end
//   every peer reads everything, every client sends EOF, and every peer reads everything.
#include <strata/core/event_loop.hpp>
#include <strata/transports/protocol.hpp>
#include <strata/transports/transport.hpp>

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include "chat_protocol.hpp"
#include "fuzz_support.hpp"
#include "http_harness.hpp"

namespace {

using namespace strata_fuzz;
namespace chat = strata::examples::chat;

// ---- The server side: a chat::Session behind a protocol -----------------------------------

/// One client's connection on the server, as chat_server's serve_client() drives its
/// chat::Session, written as a protocol so that a FakeTransport can carry it.
class ChatProtocol final : public strata::Protocol, public chat::Connection {
 public:
  ChatProtocol(chat::LoopState& state, std::size_t limit) : state_(&state), limit_(limit) {}

  // ---- strata::Protocol
  void connection_made(strata::Transport& transport) override {
    transport_ = &transport;
    session_.emplace(*state_, *this, limit_);
  }
  void data_received(std::span<const std::byte> data) override {
    check(session_.has_value() && !lost_, "data_received() after connection_lost()");
    check(!eof_, "data_received() after eof_received()");
    session_->feed(std::string_view(reinterpret_cast<const char*>(data.data()), data.size()));
    pump();
    if (session_ && !reading_paused_ && !is_closing() && session_->buffered() > 2 * limit_) {
      reading_paused_ = true;
      transport_->pause_reading();
    }
  }
  bool eof_received() override {
    eof_ = true;
    pump();
    return true;  // closed by pump() once every line is answered
  }
  void connection_lost(std::error_code) override {
    check(!lost_, "connection_lost() twice");
    lost_ = true;
    session_.reset();  // leaves: the name is freed
    transport_ = nullptr;
  }
  void pause_writing() override {
    check(!write_paused_, "pause_writing() twice");
    write_paused_ = true;
  }
  void resume_writing() override {
    check(write_paused_, "resume_writing() without pause_writing()");
    write_paused_ = false;
    pump();
  }

  // ---- chat::Connection: what the other sessions deliver to this client
  bool is_closing() const override { return transport_ == nullptr || transport_->is_closing(); }
  std::size_t write_buffer_size() const override {
    return transport_ != nullptr ? transport_->get_write_buffer_size() : 0;
  }
  void write(std::string_view data) override {
    transport_->write(std::as_bytes(std::span(data.data(), data.size())));
  }
  void abort() override { transport_->abort(); }

  bool write_paused() const noexcept { return write_paused_; }

 private:
  /// Answers the lines while the replies flow; closes after EOF once all are answered.
  void pump() {
    while (session_ && !write_paused_ && !is_closing()) {
      std::optional<std::string> reply = session_->next_reply();
      if (!reply) {
        // The replies flow and nothing whole is left: only the start of a line may be kept.
        check(session_->buffered() <= limit_,
              "the session keeps more than the line limit of an unfinished line",
              std::to_string(session_->buffered()) + " bytes");
        if (eof_) transport_->close();
        break;
      }
      if (is_closing()) break;  // its own line aborted it (a message to itself past the backlog)
      write(*reply);
    }
    if (reading_paused_ && session_ && !is_closing() && session_->buffered() <= limit_) {
      reading_paused_ = false;
      transport_->resume_reading();
    }
  }

  chat::LoopState* state_;
  std::size_t limit_;
  strata::Transport* transport_ = nullptr;
  std::optional<chat::Session> session_;
  bool write_paused_ = false;
  bool reading_paused_ = false;
  bool eof_ = false;
  bool lost_ = false;
};

// ---- The model ----------------------------------------------------------------------------------

/// Whether @p s is well-formed UTF-8, by the table of well-formed byte sequences of the Unicode
/// standard (§3.9, table 3-7).
bool well_formed_utf8(std::string_view s) {
  const auto byte = [&](std::size_t k) {
    return static_cast<unsigned>(static_cast<unsigned char>(s[k]));
  };
  const auto in = [&](std::size_t k, unsigned lo, unsigned hi) {
    return k < s.size() && byte(k) >= lo && byte(k) <= hi;
  };
  std::size_t i = 0;
  while (i < s.size()) {
    const unsigned b = byte(i);
    std::size_t n = 0;
    bool ok = false;
    if (b <= 0x7f) {
      n = 1, ok = true;
    } else if (b >= 0xc2 && b <= 0xdf) {
      n = 2, ok = in(i + 1, 0x80, 0xbf);
    } else if (b == 0xe0) {
      n = 3, ok = in(i + 1, 0xa0, 0xbf) && in(i + 2, 0x80, 0xbf);
    } else if ((b >= 0xe1 && b <= 0xec) || b == 0xee || b == 0xef) {
      n = 3, ok = in(i + 1, 0x80, 0xbf) && in(i + 2, 0x80, 0xbf);
    } else if (b == 0xed) {
      n = 3, ok = in(i + 1, 0x80, 0x9f) && in(i + 2, 0x80, 0xbf);
    } else if (b == 0xf0) {
      n = 4, ok = in(i + 1, 0x90, 0xbf) && in(i + 2, 0x80, 0xbf) && in(i + 3, 0x80, 0xbf);
    } else if (b >= 0xf1 && b <= 0xf3) {
      n = 4, ok = in(i + 1, 0x80, 0xbf) && in(i + 2, 0x80, 0xbf) && in(i + 3, 0x80, 0xbf);
    } else if (b == 0xf4) {
      n = 4, ok = in(i + 1, 0x80, 0x8f) && in(i + 2, 0x80, 0xbf) && in(i + 3, 0x80, 0xbf);
    }
    if (!ok) return false;
    i += n;
  }
  return true;
}

/// A name the contract allows: not empty, no comma, no white space. In well-formed UTF-8 an
/// encoded character cannot match out of step, so the White_Space code points are looked for
/// as byte strings.
bool good_name(std::string_view name) {
  static constexpr std::array<std::string_view, 25> spaces = {
      "\t", "\n", "\v", "\f", "\r", " ", "\xc2\x85", "\xc2\xa0", "\xe1\x9a\x80",
      "\xe2\x80\x80", "\xe2\x80\x81", "\xe2\x80\x82", "\xe2\x80\x83", "\xe2\x80\x84",
      "\xe2\x80\x85", "\xe2\x80\x86", "\xe2\x80\x87", "\xe2\x80\x88", "\xe2\x80\x89",
      "\xe2\x80\x8a", "\xe2\x80\xa8", "\xe2\x80\xa9", "\xe2\x80\xaf", "\xe2\x81\x9f",
      "\xe3\x80\x80"};
  if (name.empty() || name.find(',') != std::string_view::npos) return false;
  return std::none_of(spaces.begin(), spaces.end(),
                      [&](std::string_view sp) { return name.find(sp) != std::string_view::npos; });
}

/// One connection as the model sees it.
struct ModelClient {
  std::string partial;    // the bytes of the unfinished line
  bool reported = false;  // the unfinished line was reported too long
  std::deque<std::optional<std::string>> lines;  // not yet answered; nullopt: too long
  bool eof = false;
  bool closing = false;
  bool aborted = false;
  bool lost = false;  // connection_lost() is due (or ran)
  bool gone = false;  // connection_lost() ran: the name is freed
  std::size_t buffered = 0;
  bool paused = false;
  std::string name;
  std::string out;  // every byte written to it
};

/// The chat, and each connection's write buffer as FakeTransport keeps it.
class Model {
 public:
  Model(std::size_t limit, std::size_t high, std::size_t low, std::size_t backlog)
      : limit_(limit), high_(high), low_(low), backlog_(backlog) {}

  std::size_t connect() {
    clients.emplace_back();
    return clients.size() - 1;
  }
  void feed(std::size_t k, std::string_view data) {
    ModelClient& c = clients[k];
    for (const char ch : data) {
      if (ch == '\n') {
        if (!c.reported) c.lines.emplace_back(c.partial);
        c.partial.clear();
        c.reported = false;
        continue;
      }
      c.partial += ch;
      if (!c.reported && c.partial.size() > limit_) {
        c.lines.emplace_back(std::nullopt);
        c.reported = true;
      }
    }
    pump(k);
  }
  void eof(std::size_t k) {
    clients[k].eof = true;
    pump(k);
  }
  void reset(std::size_t k) {
    ModelClient& c = clients[k];
    if (c.lost) return;
    c.closing = true;
    c.buffered = 0;
    c.lost = true;
  }
  void take(std::size_t k, std::size_t n) {
    ModelClient& c = clients[k];
    if (c.buffered == 0 || c.lost) return;
    c.buffered -= std::min(n, c.buffered);
    if (c.paused && c.buffered <= low_) {
      c.paused = false;
      pump(k);
    }
    if (c.closing && c.buffered == 0) c.lost = true;
  }
  /// After the loop ran: the connections lost are gone, and their names free.
  void settle() {
    for (std::size_t k = 0; k < clients.size(); ++k) {
      ModelClient& c = clients[k];
      if (!c.lost || c.gone) continue;
      c.gone = true;
      const auto it = names_.find(c.name);
      if (it != names_.end() && it->second == k) names_.erase(it);
    }
  }
  bool has_names() const { return !names_.empty(); }

  std::vector<ModelClient> clients;

 private:
  void pump(std::size_t k) {
    ModelClient& c = clients[k];
    while (!c.paused && !c.closing) {
      if (c.lines.empty()) {
        if (c.eof) close(k);
        break;
      }
      const std::optional<std::string> line = std::move(c.lines.front());
      c.lines.pop_front();
      const std::string reply = line ? handle(k, *line) : "error,line too long";
      if (c.closing) break;
      write(k, reply + "\n");
    }
  }
  void close(std::size_t k) {
    ModelClient& c = clients[k];
    c.closing = true;
    if (c.buffered == 0) c.lost = true;
  }
  void abort(std::size_t k) {
    ModelClient& c = clients[k];
    c.closing = true;
    c.aborted = true;
    c.buffered = 0;
    c.lost = true;
  }
  void write(std::size_t k, const std::string& bytes) {
    ModelClient& c = clients[k];
    check(!c.closing, "model: a write to a closing connection");
    c.out += bytes;
    c.buffered += bytes.size();
    if (!c.paused && c.buffered > high_) c.paused = true;
  }
  void deliver(std::size_t k, const std::string& message) {
    ModelClient& c = clients[k];
    if (c.closing) return;
    if (c.buffered + message.size() > backlog_) {
      abort(k);
      return;
    }
    write(k, message);
  }

  std::string handle(std::size_t k, std::string_view line) {
    ModelClient& c = clients[k];
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (!well_formed_utf8(line)) return "error,bad encoding";
    const std::size_t comma = line.find(',');
    if (comma == std::string_view::npos) return "error,unknown command";
    const std::string_view verb = line.substr(0, comma);
    const std::string_view rest = line.substr(comma + 1);
    if (verb == "register") {
      if (!good_name(rest)) return "error,bad name";
      const std::string name(rest);
      if (const auto it = names_.find(name); it != names_.end()) {
        return it->second == k ? "ok" : "error,name taken";
      }
      if (!c.name.empty()) names_.erase(c.name);
      names_[name] = k;
      c.name = name;
      return "ok";
    }
    if (verb == "list" && rest == "friends") {
      if (c.name.empty()) return "error,not registered";
      std::string list;
      for (const auto& entry : names_) list += (list.empty() ? "" : ",") + entry.first;
      return list;
    }
    if (verb == "chat") {
      const std::size_t comma2 = rest.find(',');
      if (comma2 == std::string_view::npos) return "error,unknown command";
      if (c.name.empty()) return "error,not registered";
      const auto it = names_.find(std::string(rest.substr(0, comma2)));
      if (it == names_.end()) return "error,no such user";
      deliver(it->second, "from," + c.name + "," + std::string(rest.substr(comma2 + 1)) + "\n");
      return "ok";
    }
    return "error,unknown command";
  }

  std::size_t limit_;
  std::size_t high_;
  std::size_t low_;
  std::size_t backlog_;
  std::map<std::string, std::size_t> names_;  // byte order, as the contract's "sorted"
};

// ---- The run ------------------------------------------------------------------------------------

constexpr std::size_t slots = 4;

class Run {
 public:
  Run(std::size_t limit, std::size_t high, std::size_t backlog)
      : limit_(limit), high_(high), backlog_(backlog), state_(registry_, backlog),
        model_(limit, high, high / 4, backlog) {
    state_.loop = &loop();
    slot_.fill(SIZE_MAX);
  }
  Run(const Run&) = delete;
  Run& operator=(const Run&) = delete;

  void set_slow(std::size_t slot, bool slow) { slow_[slot] = slow; }
  bool slow(std::size_t slot) const { return slow_[slot]; }

  /// A new client in @p slot, if its connection ended (or never was).
  void connect(std::size_t slot) {
    if (slot_[slot] != SIZE_MAX && !model_.clients[slot_[slot]].gone) return;
    log("connect " + std::to_string(slot));
    auto protocol = std::make_unique<ChatProtocol>(state_, limit_);
    ChatProtocol* p = protocol.get();
    transports_.push_back(std::make_unique<FakeTransport>(std::move(protocol), high_, high_ / 4));
    protocols_.push_back(p);
    slot_[slot] = model_.connect();
    slot_of_.push_back(slot);
    transports_.back()->open();
    after();
  }

  /// @p data from the client of @p slot, in pieces of @p piece bytes.
  void send(std::size_t slot, std::string_view data, std::size_t piece) {
    while (!data.empty()) {
      const std::size_t k = slot_[slot];
      if (k == SIZE_MAX || !transports_[k]->can_receive()) {
        log("skipped " + show_bytes(data, 80) + " for " + std::to_string(slot));
        return;
      }
      const std::string_view part = data.substr(0, piece);
      data.remove_prefix(part.size());
      log(std::to_string(slot) + " sends " + show_bytes(part, 200));
      transports_[k]->receive(std::as_bytes(std::span(part.data(), part.size())));
      model_.feed(k, part);
      after();
    }
  }
  void eof(std::size_t slot) {
    const std::size_t k = slot_[slot];
    if (k == SIZE_MAX || !transports_[k]->can_receive()) return;
    log(std::to_string(slot) + " EOF");
    transports_[k]->receive_eof();
    model_.eof(k);
    after();
  }
  void reset(std::size_t slot) {
    const std::size_t k = slot_[slot];
    if (k == SIZE_MAX) return;
    log(std::to_string(slot) + " reset");
    transports_[k]->reset();
    model_.reset(k);
    after();
  }
  void take(std::size_t slot, std::size_t n) {
    const std::size_t k = slot_[slot];
    if (k == SIZE_MAX) return;
    log(std::to_string(slot) + " reads " + std::to_string(n));
    take_one(k, n);
    after();
  }

  /// The end: every peer reads all, every client sends EOF, every peer reads all; then every
  /// connection must have ended, and every session with it.
  void finish() {
    log("finish");
    for (std::size_t k = 0; k < transports_.size(); ++k) drain(k);
    for (std::size_t k = 0; k < transports_.size(); ++k) {
      if (transports_[k]->can_receive()) {
        transports_[k]->receive_eof();
        model_.eof(k);
        settle();
      }
      drain(k);
    }
    verify();
    for (std::size_t k = 0; k < transports_.size(); ++k) {
      check(transports_[k]->lost(),
            "a connection is still open after its EOF and its replies were taken",
            "connection " + std::to_string(k) + "\n" + script_);
    }
    check(state_.clients.empty(), "a session outlived its connection");
    check(!model_.has_names(), "the model still has names");
    check(registry_.list().empty(), "names are still registered after every client left",
          registry_.list());
    for (const auto& t : transports_) t->finish();
  }

 private:
  void log(const std::string& line) { script_ += line + "\n"; }

  void take_one(std::size_t k, std::size_t n) {
    transports_[k]->take(n);
    model_.take(k, n);
    settle();
  }
  /// The peer of connection @p k reads until nothing waits.
  void drain(std::size_t k) {
    for (int i = 0;
         i < 100000 && transports_[k]->get_write_buffer_size() > 0 && !transports_[k]->lost();
         ++i) {
      take_one(k, SIZE_MAX);
    }
  }
  void settle() {
    run_until_idle();
    model_.settle();
  }
  /// After each step: the loop runs until idle, fast readers read everything, then the checks.
  void after() {
    settle();
    for (std::size_t k = 0; k < transports_.size(); ++k) {
      if (!slow_[slot_of_[k]]) drain(k);
    }
    verify();
  }

  void verify() {
    for (std::size_t k = 0; k < transports_.size(); ++k) {
      const FakeTransport& t = *transports_[k];
      const ModelClient& m = model_.clients[k];
      const std::string who = "connection " + std::to_string(k) + " (slot " +
                              std::to_string(slot_of_[k]) + ")";
      if (t.sent() != m.out) {
        fail("a client received other bytes than the model's",
             who + "\nreceived: " + show_bytes(t.sent(), 2000) + "\nexpected: " +
                 show_bytes(m.out, 2000) + "\nscript:\n" + script_);
      }
      check(t.lost() == m.lost,
            t.lost() ? "a connection ended that the model keeps"
                     : "a connection did not end when the model says",
            who + "\nscript:\n" + script_);
      check(t.abort_called() == m.aborted,
            m.aborted ? "a recipient past the backlog was not disconnected"
                      : "a connection was aborted that the model does not abort",
            who + "\nscript:\n" + script_);
      check(t.writes_after_close() == 0, "written after close()", who);
      check(t.peak_buffered() <= std::max(high_, backlog_) + max_reply(),
            "a write buffer grew past max(high-water mark, backlog) plus one reply",
            who + ": " + std::to_string(t.peak_buffered()));
      if (!t.lost()) {
        check(t.can_receive() || t.is_closing() || m.eof || protocols_[k]->write_paused(),
              "stall: reading paused while the replies flow", who + "\nscript:\n" + script_);
      }
    }
    check(loop_exceptions.empty(), "an exception reached the loop",
          loop_exceptions.empty() ? "" : loop_exceptions.front());
  }
  /// The longest reply: the list of every name a connection may have.
  std::size_t max_reply() const { return (limit_ + 1) * transports_.size() + 32; }

  std::size_t limit_;
  std::size_t high_;
  std::size_t backlog_;
  chat::Registry registry_;
  chat::LoopState state_;
  Model model_;
  std::vector<std::unique_ptr<FakeTransport>> transports_;  // by connection, in order made
  std::vector<ChatProtocol*> protocols_;                    // owned by their transports
  std::vector<std::size_t> slot_of_;                        // by connection
  std::array<std::size_t, slots> slot_{};                   // the connection of each slot
  std::array<bool, slots> slow_{};
  std::string script_;
};

/// The input from @p pos up to and including the @p n-th "\n" (or to the end).
std::string_view lines_from(std::string_view input, std::size_t& pos, std::size_t n) {
  std::size_t end = pos;
  for (std::size_t i = 0; i < n && end < input.size(); ++i) {
    const std::size_t nl = input.find('\n', end);
    end = nl == std::string_view::npos ? input.size() : nl + 1;
  }
  const std::string_view out = input.substr(pos, end - pos);
  pos = end;
  return out;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 2) return -1;  // not an input of this target
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  const std::size_t limit = 8 + 2 * std::size_t{data[0] & 0x1fu};
  const std::size_t high = std::array<std::size_t, 4>{16, 64, 256, 4096}[(data[0] >> 5) & 3];
  const std::size_t backlog = std::array<std::size_t, 4>{24, 96, 512, 65536}[data[1] & 3];
  loop_exceptions.clear();

  Run run(limit, high, backlog);
  for (std::size_t s = 0; s < slots; ++s) run.set_slow(s, (data[1] >> (2 + s)) & 1);
  const std::size_t initial = 1 + (data[1] >> 6);
  for (std::size_t s = 0; s < initial; ++s) run.connect(s);

  std::size_t pos = 2;
  while (pos < input.size()) {
    const auto c = static_cast<unsigned char>(input[pos++]);
    const std::size_t slot = c & 3u;
    const unsigned a = c >> 5;
    switch ((c >> 2) & 7) {
      case 0:
      case 1: {
        const std::string_view line = lines_from(input, pos, 1);
        run.send(slot, line, a == 7 ? line.size() + 1 : a + 1);
        break;
      }
      case 2: {
        const std::string_view lines = lines_from(input, pos, a + 1);
        run.send(slot, lines, lines.size() + 1);
        break;
      }
      case 3:
        run.take(slot, std::array<std::size_t, 8>{1, 4, 16, 64, 256, 1024, 4096, SIZE_MAX}[a]);
        break;
      case 4:
        run.eof(slot);
        break;
      case 5:
        run.reset(slot);
        break;
      case 6:
        run.connect(slot);
        break;
      case 7:
        run.set_slow(slot, !run.slow(slot));
        break;
    }
  }
  run.finish();
  return 0;
}
