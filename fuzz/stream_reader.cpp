// Fuzz target stream_reader: strata::StreamReader driven by a script that the input spells out:
// feed_data() of input bytes in chunks of input-chosen sizes, feed_eof(), set_exception(),
// and the reads read(n) (n = -1, 0 or more), read_into() of a span or a string, read_view(n),
// readexactly(n),
// readline() and readuntil() with one or two input-chosen separators, each read in a task of its own (so that a read that must
// wait does, and a read issued meanwhile is refused), and the cancellation of a waiting read.
// Optionally with a transport, to exercise the flow control.
//
// What it checks, against a model of asyncio's StreamReader written here (a plain buffer):
// - Each read's outcome when it completes (right away when the buffer allows it, or after the
//   feed that allows it): the bytes, or IncompleteReadError with its partial() and expected(),
//   LimitOverrunError with its consumed() (the data staying in the reader), the length_error
//   of an overlong line (and the bytes it drops), the exception set; a read issued while
//   another waits gets InvalidStateError; a cancelled read consumes nothing.
// - No loss, no duplication: the bytes the reads returned (and the lines they dropped),
//   concatenated, are exactly the prefix of the fed bytes that left the reader, and
//   buffered() is the rest; at_eof() agrees.
// - A read that can complete does so without suspending; one that cannot waits, and wakes
//   when a feed allows it, not before.
// - With a transport: reading is paused once more than 2 x limit() is buffered (and only
//   while no read needs the data), resumed once reads bring it down to limit(); a waiting
//   read never finds the transport paused (no deadlock); the buffer stays bounded.
//
// Input: 1 configuration byte, then commands.
//   [0] bits 0-4: limit - 1 (1..32); bit 6: limit x 16; bit 5: with a transport (the script's
//       feeds and EOF are then dropped while it is paused, as a real transport would not read).
//   Each command is one byte c; k = c >> 3 (0..31):
//     c & 7 = 0, 1, 2: feed_data() of the next k + 1 input bytes
//             3: read(k - 1)            4: readexactly(k)          5: readline()
//             6: readuntil(): the next (k & 3) + 1 bytes are a separator, and when
//                (k >> 2) & 3 is not 0, that many more bytes are a second one
//             7: k < 4: feed_eof(); k < 6: set_exception(); k < 12: cancel the waiting
//                read; k < 15: read_view(k - 11); k = 15: read_view(1000); else read_into()
//                of (k - 16) / 2 bytes, k odd: into a string
#include <strata/core/coro.hpp>
#include <strata/core/errors.hpp>
#include <strata/core/task.hpp>
#include <strata/streams/stream_reader.hpp>
#include <strata/transports/transport.hpp>

#include <algorithm>
#include <any>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "fuzz_support.hpp"

namespace {

using strata::Coro;
using strata::StreamReader;
using namespace strata_fuzz;

/// The exception set_exception() sets: what a connection's error would be.
struct ConnectionError : std::runtime_error {
  ConnectionError() : std::runtime_error("connection error") {}
};

/// A read the script issues.
struct ReadRequest {
  enum class Kind {
    read,
    readexactly,
    readline,
    readuntil,
    read_into_span,
    read_into_string,
    read_view
  };
  Kind kind = Kind::read;
  std::ptrdiff_t n = 0;
  std::vector<std::string> separators;

  std::string describe() const {
    switch (kind) {
      case Kind::read: return "read(" + std::to_string(n) + ")";
      case Kind::readexactly: return "readexactly(" + std::to_string(n) + ")";
      case Kind::read_into_span: return "read_into(span of " + std::to_string(n) + ")";
      case Kind::read_into_string: return "read_into(string, " + std::to_string(n) + ")";
      case Kind::read_view: return "read_view(" + std::to_string(n) + ")";
      case Kind::readline: return "readline()";
      case Kind::readuntil: {
        std::string s = "readuntil(";
        for (const auto& sep : separators) s += show_bytes(sep) + " ";
        return s + ")";
      }
    }
    return "?";
  }
};

/// How a read ended (the reader's or the model's).
struct Outcome {
  enum class Kind { value, incomplete, overrun, line_too_long, invalid_state, connection_error, cancelled, other };
  Kind kind = Kind::value;
  std::string bytes;                    // value; incomplete: partial()
  std::optional<std::size_t> expected;  // incomplete: expected()
  std::size_t consumed = 0;             // overrun: consumed()
  std::string what;                     // other: the message

  bool operator==(const Outcome& o) const {
    return kind == o.kind && bytes == o.bytes && expected == o.expected && consumed == o.consumed;
  }
  std::string describe() const {
    static constexpr const char* names[] = {"value", "IncompleteReadError", "LimitOverrunError",
                                            "length_error", "InvalidStateError", "the set exception",
                                            "CancelledError", "unexpected exception"};
    std::string s = names[static_cast<int>(kind)];
    s += " " + show_bytes(bytes, 100);
    if (expected) s += " expected " + std::to_string(*expected);
    if (kind == Kind::overrun) s += " consumed " + std::to_string(consumed);
    if (!what.empty()) s += " " + what;
    return s;
  }
};

/// A read in its own task; the task fills in the outcome.
struct Reading {
  ReadRequest request;
  std::optional<Outcome> outcome;
  strata::Task<void> task;
};

Coro<void> run_read(StreamReader reader, std::shared_ptr<Reading> r) {
  Outcome o;
  try {
    const ReadRequest& q = r->request;
    switch (q.kind) {
      case ReadRequest::Kind::read: o.bytes = co_await reader.read(q.n); break;
      case ReadRequest::Kind::read_into_span: {
        std::vector<char> buffer(static_cast<std::size_t>(q.n));
        const std::size_t got = co_await reader.read_into(std::span<char>(buffer));
        o.bytes.assign(buffer.data(), got);
        break;
      }
      case ReadRequest::Kind::read_into_string: {
        std::string buffer = "stale";
        const std::size_t got = co_await reader.read_into(buffer, static_cast<std::size_t>(q.n));
        if (got != buffer.size()) throw std::logic_error("read_into() returned a wrong count");
        o.bytes = buffer;
        break;
      }
      case ReadRequest::Kind::read_view: {
        auto op = reader.read_view(static_cast<std::size_t>(q.n));
        const std::string_view view = co_await op;
        o.bytes.assign(view);  // (valid until the next read)
        break;
      }
      case ReadRequest::Kind::readexactly:
        o.bytes = co_await reader.readexactly(static_cast<std::size_t>(q.n));
        break;
      case ReadRequest::Kind::readline: o.bytes = co_await reader.readline(); break;
      case ReadRequest::Kind::readuntil:
        if (q.separators.size() == 1) {
          o.bytes = co_await reader.readuntil(q.separators[0]);
        } else {
          o.bytes = co_await reader.readuntil(q.separators);
        }
        break;
    }
  } catch (const strata::IncompleteReadError& e) {
    o.kind = Outcome::Kind::incomplete;
    o.bytes = e.partial();
    o.expected = e.expected();
  } catch (const strata::LimitOverrunError& e) {
    o.kind = Outcome::Kind::overrun;
    o.consumed = e.consumed();
  } catch (const std::length_error&) {
    o.kind = Outcome::Kind::line_too_long;
  } catch (const strata::InvalidStateError&) {
    o.kind = Outcome::Kind::invalid_state;
  } catch (const ConnectionError&) {
    o.kind = Outcome::Kind::connection_error;
  } catch (const strata::CancelledError&) {
    o.kind = Outcome::Kind::cancelled;
  } catch (const std::exception& e) {
    o.kind = Outcome::Kind::other;
    o.what = e.what();
  }
  r->outcome = o;
}

/// asyncio's StreamReader as a plain buffer: what each read returns, given the buffer, EOF and
/// an exception, or nullopt while it must wait. Consumes what the read consumes.
struct Model {
  std::string buffer;
  bool eof = false;
  bool failed = false;  // set_exception()
  std::size_t limit = 1;
  std::string taken;    // every byte that left the buffer, in order (returned or dropped)

  std::string take(std::size_t n) {
    std::string out = buffer.substr(0, n);
    buffer.erase(0, n);
    taken += out;
    return out;
  }

  std::optional<Outcome> complete(const ReadRequest& q) {
    Outcome o;
    if (failed) {
      o.kind = Outcome::Kind::connection_error;
      return o;
    }
    switch (q.kind) {
      case ReadRequest::Kind::read:
      case ReadRequest::Kind::read_into_span:
      case ReadRequest::Kind::read_into_string:
      case ReadRequest::Kind::read_view:
        if (q.n == 0) return o;
        if (q.n < 0) {
          if (!eof) return std::nullopt;
          o.bytes = take(buffer.size());
          return o;
        }
        if (buffer.empty() && !eof) return std::nullopt;
        o.bytes = take(std::min(buffer.size(), static_cast<std::size_t>(q.n)));
        return o;
      case ReadRequest::Kind::readexactly: {
        const auto n = static_cast<std::size_t>(q.n);
        if (buffer.size() >= n) {
          o.bytes = take(n);
          return o;
        }
        if (!eof) return std::nullopt;
        o.kind = Outcome::Kind::incomplete;
        o.bytes = take(buffer.size());
        o.expected = n;
        return o;
      }
      case ReadRequest::Kind::readline:
      case ReadRequest::Kind::readuntil: {
        const bool line = q.kind == ReadRequest::Kind::readline;
        const std::vector<std::string> seps =
            line ? std::vector<std::string>{"\n"} : q.separators;
        // The match that ends first; of those ending together, the shortest.
        std::size_t best_start = std::string::npos;
        std::size_t best_end = std::string::npos;
        std::size_t longest = 0;
        for (const std::string& sep : seps) {
          longest = std::max(longest, sep.size());
          const std::size_t at = buffer.find(sep);
          if (at == std::string::npos) continue;
          const std::size_t end = at + sep.size();
          if (best_end == std::string::npos || end < best_end ||
              (end == best_end && at > best_start)) {
            best_start = at;
            best_end = end;
          }
        }
        std::optional<std::size_t> overrun;
        if (best_start != std::string::npos) {
          if (best_start <= limit) {
            o.bytes = take(best_end);
            return o;
          }
          overrun = best_start;
        } else {
          const std::size_t offset = buffer.size() + 1 > longest ? buffer.size() + 1 - longest : 0;
          if (offset > limit) {
            overrun = offset;
          } else if (!eof) {
            return std::nullopt;
          }
        }
        if (overrun) {
          if (!line) {
            o.kind = Outcome::Kind::overrun;
            o.consumed = *overrun;
            return o;
          }
          // readline() drops the overlong line, through its "\n" if it has one.
          const bool ends_here = *overrun < buffer.size() && buffer[*overrun] == '\n';
          take(ends_here ? *overrun + 1 : buffer.size());
          o.kind = Outcome::Kind::line_too_long;
          return o;
        }
        // EOF without a separator: everything, as IncompleteReadError (readline: the last line).
        o.bytes = take(buffer.size());
        if (!line) o.kind = Outcome::Kind::incomplete;
        return o;
      }
    }
    return std::nullopt;
  }
};

/// A transport that only records whether the reader paused it.
class ReadingTransport final : public strata::Transport {
 public:
  bool reading = true;

  void write(std::span<const std::byte>) override {}
  using strata::Transport::write;
  void writelines(std::span<const std::span<const std::byte>>) override {}
  void write_eof() override {}
  bool can_write_eof() const noexcept override { return false; }
  void abort() override {}
  void close() override {}
  bool is_closing() const noexcept override { return false; }
  std::size_t get_write_buffer_size() const noexcept override { return 0; }
  void set_write_buffer_limits(std::optional<std::size_t>, std::optional<std::size_t>) override {}
  std::pair<std::size_t, std::size_t> get_write_buffer_limits() const noexcept override {
    return {0, 0};
  }
  void pause_reading() override {
    check(reading, "pause_reading() on a transport already paused");
    reading = false;
  }
  void resume_reading() override {
    check(!reading, "resume_reading() on a transport not paused");
    reading = true;
  }
  bool is_reading() const noexcept override { return reading; }
  void set_protocol(std::unique_ptr<strata::BaseProtocol>) override {}
  std::unique_ptr<strata::BaseProtocol> exchange_protocol(
      std::unique_ptr<strata::BaseProtocol>) override {
    return nullptr;
  }
  strata::BaseProtocol& get_protocol() const noexcept override { return protocol_; }
  std::any get_extra_info(std::string_view) const override { return {}; }
  strata::EventLoop& get_loop() const noexcept override { return loop(); }

 private:
  mutable strata::Protocol protocol_;
};

/// The script's interpreter: the reader, the model, the read that waits.
class Script {
 public:
  Script(std::size_t limit, bool with_transport) : reader_(limit), with_transport_(with_transport) {
    model_.limit = limit;
    if (with_transport_) reader_.set_transport(transport_);
  }
  ~Script() {
    if (waiting_) cancel();
    reader_.clear_transport();
  }

  void feed(std::string_view bytes) {
    if (with_transport_ && !transport_.reading) return;  // not read from the socket now
    if (model_.eof) {
      bool refused = false;
      try {
        reader_.feed_data(bytes);
      } catch (const strata::InvalidStateError&) {
        refused = true;
      }
      check(refused || bytes.empty(), "feed_data() after feed_eof() did not throw InvalidStateError");
      return;
    }
    reader_.feed_data(bytes);
    if (waiting_) read_to_eof_base_ = 0;
    if (waiting_ && waiting_->request.kind == ReadRequest::Kind::read && waiting_->request.n < 0) {
      gathered_to_eof_ = true;
    }
    fed_ += bytes;
    model_.buffer += bytes;
    note("feed " + show_bytes(bytes, 40));
    settle();
    if (with_transport_ && !waiting_ && !bytes.empty() && reader_.buffered() > 2 * model_.limit) {
      check(!transport_.reading, "more than 2 x limit buffered and the transport still reads",
            log_);
    }
  }
  void feed_eof() {
    if (with_transport_ && !transport_.reading) return;  // a paused socket does not see its EOF
    reader_.feed_eof();
    model_.eof = true;
    note("feed_eof");
    settle();
  }
  void set_exception() {
    reader_.set_exception(std::make_exception_ptr(ConnectionError()));
    if (waiting_ && waiting_->request.kind == ReadRequest::Kind::read && waiting_->request.n < 0) {
      // A waiting read(-1) takes the whole buffer at each feed; what it took is lost with the
      // read (asyncio loses what its read(-1) gathered too). Without a feed, the buffer stays.
      model_.buffer.erase(read_to_eof_base_);
    }
    model_.failed = true;
    note("set_exception");
    settle();
  }

  void read(ReadRequest q) {
    note(q.describe());
    auto r = std::make_shared<Reading>();
    r->request = std::move(q);
    // Inside the loop, as a protocol's callback or a task would: the read starts at once.
    in_loop([&] { r->task = loop().create_eager_task(run_read(reader_, r)); });
    if (waiting_) {
      // Another task waits: this read is refused and takes nothing.
      run_steps(r);
      check(r->outcome && r->outcome->kind == Outcome::Kind::invalid_state,
            "a read while another waits was not refused with InvalidStateError",
            log_ + (r->outcome ? r->outcome->describe() : std::string("(pending)")));
      return;
    }
    const std::optional<Outcome> expected = model_.complete(r->request);
    if (expected) {
      // Documented: a read the buffer answers completes without suspending.
      check(r->outcome.has_value(), "a read that the buffer answers suspended", log_);
      compare(*r->outcome, *expected);
    } else {
      check(!r->outcome, "a read completed that had to wait", log_ + r->outcome->describe());
      waiting_ = r;
      read_to_eof_base_ = model_.buffer.size();
      if (with_transport_) check(transport_.reading, "a read waits while the transport is paused", log_);
    }
    after_read();
  }

  void cancel() {
    if (!waiting_) return;
    note("cancel");
    waiting_->task.cancel();
    run_steps(waiting_);
    check(waiting_->outcome && waiting_->outcome->kind == Outcome::Kind::cancelled,
          "a cancelled read did not end with CancelledError",
          log_ + (waiting_->outcome ? waiting_->outcome->describe() : "(still pending)") +
              (waiting_->task.done() ? " task done" : " task not done"));
    waiting_.reset();
    check_buffer();
  }

  /// The end of the script: a read still waiting is cancelled.
  void finish() { cancel(); }

 private:
  /// Steps the loop until @p r has an outcome, a few iterations at most.
  static void run_steps(const std::shared_ptr<Reading>& r) {
    for (int i = 0; i < quiet_iterations && !r->outcome; ++i) step();
  }

  /// After something reached the reader: the waiting read completes now if the model says so.
  void settle() {
    if (!waiting_) {
      check_buffer();
      return;
    }
    const std::optional<Outcome> expected = model_.complete(waiting_->request);
    run_steps(waiting_);
    if (!expected) {
      check(!waiting_->outcome, "a waiting read completed too early",
            log_ + waiting_->outcome->describe());
      if (with_transport_) check(transport_.reading, "a read waits while the transport is paused", log_);
      return;
    }
    check(waiting_->outcome.has_value(), "a read that can complete now was not woken", log_);
    const std::shared_ptr<Reading> done = std::move(waiting_);
    compare(*done->outcome, *expected);
    after_read();
  }

  void compare(const Outcome& got, const Outcome& expected) {
    check(got == expected, "the read's outcome differs from the model's",
          log_ + "got      " + got.describe() + "\nexpected " + expected.describe());
    note("  -> " + got.describe());
  }

  void after_read() {
    check_buffer();
    if (with_transport_ && !waiting_ && reader_.buffered() <= model_.limit) {
      check(transport_.reading, "the buffer is down to the limit and the transport is still paused",
            log_);
    }
  }

  /// No loss, no duplication: what left the reader is a prefix of what was fed, and the
  /// reader holds the rest.
  void check_buffer() {
    check(fed_.compare(0, model_.taken.size(), model_.taken) == 0,
          "the bytes read are not the prefix of the bytes fed", log_);
    if (waiting_) return;  // a waiting read(-1) holds some of the buffer
    check(reader_.buffered() == model_.buffer.size(),
          "buffered() is not what was fed minus what was read",
          log_ + "buffered() " + std::to_string(reader_.buffered()) + ", model " +
              std::to_string(model_.buffer.size()));
    check(reader_.at_eof() == (model_.eof && model_.buffer.empty()), "at_eof() is wrong", log_);
    if (with_transport_ && !gathered_to_eof_) {
      // Feeds stop while paused: past 2 x limit, at most one feed (32 bytes) and what a read
      // that waited needed (readexactly(31), a separator of 4 bytes past the limit). A waiting
      // read(-1) gathers without bound, by design, and a cancelled one gives it all back.
      check(reader_.buffered() <= 2 * model_.limit + 64, "the buffer grew without bound", log_);
    }
  }

  void note(const std::string& line) {
    if (log_.size() < 4000) log_ += line + "\n";
  }

  StreamReader reader_;
  Model model_;
  ReadingTransport transport_;
  bool with_transport_;
  std::string fed_;
  std::shared_ptr<Reading> waiting_;
  std::size_t read_to_eof_base_ = 0;  // what a waiting read(-1) has not taken yet
  bool gathered_to_eof_ = false;        // a waiting read(-1) was fed (it ignores the limit)
  std::string log_ = "script:\n";
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 1) return -1;
  const std::size_t limit = ((data[0] & 0x1fu) + 1) * ((data[0] & 0x40) ? 16 : 1);
  const bool with_transport = (data[0] & 0x20) != 0;
  const std::string_view in(reinterpret_cast<const char*>(data) + 1, size - 1);
  loop_exceptions.clear();
  {
    Script script(limit, with_transport);
    std::size_t pos = 0;
    auto next = [&](std::size_t n) {
      const std::string_view s = in.substr(pos, std::min(n, in.size() - pos));
      pos += s.size();
      return s;
    };
    while (pos < in.size()) {
      const auto c = static_cast<std::uint8_t>(in[pos++]);
      const unsigned k = c >> 3;
      ReadRequest q;
      switch (c & 7) {
        case 0:
        case 1:
        case 2: script.feed(next(k + 1)); break;
        case 3:
          q.kind = ReadRequest::Kind::read;
          q.n = static_cast<std::ptrdiff_t>(k) - 1;
          script.read(q);
          break;
        case 4:
          q.kind = ReadRequest::Kind::readexactly;
          q.n = k;
          script.read(q);
          break;
        case 5:
          q.kind = ReadRequest::Kind::readline;
          script.read(q);
          break;
        case 6: {
          q.kind = ReadRequest::Kind::readuntil;
          const std::string_view first = next((k & 3) + 1);
          if (first.empty()) break;
          q.separators.emplace_back(first);
          if (((k >> 2) & 3) != 0) {
            const std::string_view second = next((k >> 2) & 3);
            if (!second.empty()) q.separators.emplace_back(second);
          }
          script.read(q);
          break;
        }
        case 7:
          if (k < 4) {
            script.feed_eof();
          } else if (k < 6) {
            script.set_exception();
          } else if (k < 12) {
            script.cancel();
          } else if (k < 16) {
            q.kind = ReadRequest::Kind::read_view;
            q.n = k < 15 ? static_cast<std::ptrdiff_t>(k - 11) : 1000;
            script.read(q);
          } else {
            q.kind = (k & 1) != 0 ? ReadRequest::Kind::read_into_string
                                  : ReadRequest::Kind::read_into_span;
            q.n = static_cast<std::ptrdiff_t>((k - 16) / 2);
            script.read(q);
          }
          break;
      }
    }
    script.finish();
  }
  run_until_idle();
  check(loop_exceptions.empty(), "an exception reached the loop",
        loop_exceptions.empty() ? "" : loop_exceptions.front());
  return 0;
}
