#pragma once
// The pieces the HTTP fuzz targets share:
// - FakeTransport: an in-memory strata::Transport that plays both the socket and the client.
//   It calls the protocol from inside loop callbacks, as real transports do (in_loop()). It
//   owns the protocol under test, records every byte written, models the write buffer and
//   its water marks (pause_writing/resume_writing as StreamTransport calls them), honours
//   pause_reading, and ends the connection as the real transport does: close() waits for the
//   buffer to be taken, connection_lost() runs in a later loop iteration, and the protocol is
//   destroyed in the iteration after that.
// - parse_responses(): a strict parser of what a server wrote, which refuses anything that is
//   not a well-formed sequence of HTTP/1.x responses.

#include <algorithm>
#include <any>
#include <cstdio>
#include <cstdlib>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

#include <strata/core/errors.hpp>
#include <strata/core/event_loop.hpp>
#include <strata/protocols/http_parser.hpp>
#include <strata/transports/protocol.hpp>
#include <strata/transports/transport.hpp>

#include "fuzz_support.hpp"

namespace strata_fuzz {

/// An in-memory transport between the protocol under test and the fuzz target, which acts as
/// the peer: receive() delivers bytes (only while the protocol lets the transport read),
/// take() lets the peer consume written bytes, receive_eof() and reset() end the peer's side.
class FakeTransport final : public strata::Transport {
 public:
  /// Takes @p protocol; @p high and @p low are the write buffer's water marks.
  FakeTransport(std::unique_ptr<strata::Protocol> protocol, std::size_t high, std::size_t low)
      : protocol_(std::move(protocol)), high_(high), low_(low) {}
  FakeTransport(const FakeTransport&) = delete;
  FakeTransport& operator=(const FakeTransport&) = delete;
  /// The protocol must be gone already (finish() makes sure of it).
  ~FakeTransport() {
    if (protocol_) fail("FakeTransport destroyed with its protocol still alive");
  }

  // ---- The peer's side ---------------------------------------------------------------------

  /// connection_made().
  void open() {
    ++activity;
    in_loop([&] { protocol_->connection_made(*this); });
  }
  /// Whether data may be delivered now: reading is not paused and the connection is open.
  bool can_receive() const noexcept { return reading_ && !closing_ && !eof_received_ && protocol_; }
  void receive(std::span<const std::byte> data) {
    check(can_receive(), "FakeTransport: receive() while the transport does not read");
    trace("receive", std::string_view(reinterpret_cast<const char*>(data.data()), data.size()));
    ++activity;
    in_loop([&] { protocol_->data_received(data); });
  }
  /// The peer ends its sending side; a protocol that returns false is closed (as StreamTransport
  /// does).
  void receive_eof() {
    check(can_receive(), "FakeTransport: receive_eof() while the transport does not read");
    trace("receive_eof");
    ++activity;
    eof_received_ = true;
    in_loop([&] {
      if (!protocol_->eof_received()) close();
    });
  }
  /// The peer took up to @p n buffered bytes (all: SIZE_MAX).
  void take(std::size_t n) {
    if (buffered_ == 0 || lost_scheduled_) return;
    trace("take " + std::to_string(std::min(n, buffered_)));
    ++activity;
    buffered_ -= std::min(n, buffered_);
    if (write_paused_ && buffered_ <= low_) {
      write_paused_ = false;
      in_loop([&] { protocol_->resume_writing(); });
    }
    if (closing_ && buffered_ == 0) schedule_lost({});
  }
  /// The peer vanished (ECONNRESET): the buffer is dropped, connection_lost() follows.
  void reset() {
    if (lost_scheduled_) return;
    closing_ = true;
    buffered_ = 0;
    schedule_lost(std::make_error_code(std::errc::connection_reset));
  }
  /// Ends the connection if the protocol did not (reset()) and runs the loop until the
  /// protocol is destroyed.
  void finish() {
    reset();
    run_until_idle();
    check(!protocol_, "the protocol was not destroyed after connection_lost()");
  }

  // ---- What happened -----------------------------------------------------------------------

  /// Every byte written before close() or abort(), in order.
  const std::string& sent() const noexcept { return sent_; }
  /// write() calls after close() or abort() (dropped, as StreamTransport drops them).
  std::size_t writes_after_close() const noexcept { return writes_after_close_; }
  bool close_called() const noexcept { return close_called_; }
  bool abort_called() const noexcept { return abort_called_; }
  /// connection_lost() has run.
  bool lost() const noexcept { return lost_; }
  /// The most bytes ever waiting in the write buffer.
  std::size_t peak_buffered() const noexcept { return peak_buffered_; }
  bool write_paused() const noexcept { return write_paused_; }

  // ---- strata::Transport -----------------------------------------------------------------

  void write(std::span<const std::byte> data) override {
    if (eof_written_) throw strata::InvalidStateError("write after write_eof");
    if (data.empty()) return;
    trace("write", std::string_view(reinterpret_cast<const char*>(data.data()), data.size()));
    ++activity;
    if (closing_) {
      ++writes_after_close_;
      return;
    }
    sent_.append(reinterpret_cast<const char*>(data.data()), data.size());
    buffered_ += data.size();
    peak_buffered_ = std::max(peak_buffered_, buffered_);
    if (!write_paused_ && buffered_ > high_) {
      write_paused_ = true;
      protocol_->pause_writing();
    }
  }
  using strata::Transport::write;
  void writelines(std::span<const std::span<const std::byte>> buffers) override {
    for (auto b : buffers) write(b);
  }
  void write_eof() override {
    ++activity;
    eof_written_ = true;
  }
  bool can_write_eof() const noexcept override { return true; }
  void abort() override {
    trace("abort");
    ++activity;
    abort_called_ = true;
    closing_ = true;
    buffered_ = 0;
    schedule_lost(std::make_error_code(std::errc::operation_canceled));
  }
  void close() override {
    trace("close");
    ++activity;
    if (closing_) return;
    close_called_ = true;
    closing_ = true;
    if (buffered_ == 0) schedule_lost({});
  }
  bool is_closing() const noexcept override { return closing_; }
  std::size_t get_write_buffer_size() const noexcept override { return buffered_; }
  void set_write_buffer_limits(std::optional<std::size_t> high,
                               std::optional<std::size_t> low) override {
    high_ = high.value_or(64 * 1024);
    low_ = low.value_or(high_ / 4);
    if (low_ > high_) throw std::invalid_argument("low > high");
  }
  std::pair<std::size_t, std::size_t> get_write_buffer_limits() const noexcept override {
    return {low_, high_};
  }
  void pause_reading() override {
    trace("pause_reading");
    ++activity;
    reading_ = false;
  }
  void resume_reading() override {
    trace("resume_reading");
    ++activity;
    reading_ = true;
  }
  bool is_reading() const noexcept override { return reading_ && !closing_; }
  void set_protocol(std::unique_ptr<strata::BaseProtocol>) override {
    fail("FakeTransport: set_protocol() is not expected");
  }
  std::unique_ptr<strata::BaseProtocol> exchange_protocol(
      std::unique_ptr<strata::BaseProtocol>) override {
    fail("FakeTransport: exchange_protocol() is not expected");
  }
  strata::BaseProtocol& get_protocol() const noexcept override { return *protocol_; }
  std::any get_extra_info(std::string_view) const override { return {}; }
  strata::EventLoop& get_loop() const noexcept override { return loop(); }

 private:
  /// With STRATA_FUZZ_TRACE set in the environment, logs each call to stderr (to read what a
  /// crash input does).
  static void trace(std::string_view what, std::string_view bytes = {}) {
    static const bool on = std::getenv("STRATA_FUZZ_TRACE") != nullptr;
    if (!on) return;
    std::fprintf(stderr, "[transport] %.*s %s\n", static_cast<int>(what.size()), what.data(),
                 bytes.empty() ? "" : show_bytes(bytes, 300).c_str());
  }

  void schedule_lost(std::error_code ec) {
    if (lost_scheduled_) return;
    lost_scheduled_ = true;
    loop().call_soon([this, ec] {
      trace("connection_lost");
      ++activity;
      lost_ = true;
      protocol_->connection_lost(ec);
      // Destroyed in a later iteration, as StreamTransport does.
      loop().call_soon([this] {
        ++activity;
        protocol_.reset();
      });
    });
  }

  std::unique_ptr<strata::Protocol> protocol_;
  std::string sent_;
  std::size_t high_;
  std::size_t low_;
  std::size_t buffered_ = 0;
  std::size_t peak_buffered_ = 0;
  std::size_t writes_after_close_ = 0;
  bool reading_ = true;
  bool write_paused_ = false;
  bool closing_ = false;
  bool close_called_ = false;
  bool abort_called_ = false;
  bool eof_received_ = false;
  bool eof_written_ = false;
  bool lost_scheduled_ = false;
  bool lost_ = false;
};

// ---- Responses ----------------------------------------------------------------------------------

/// One response as parse_responses() read it.
struct ParsedResponse {
  int minor = 1;  // HTTP/1.<minor>
  int status = 0;
  std::string reason;
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;
  bool chunked = false;      // the body came in the chunked coding
  bool to_close = false;     // the body had no framing: it ran to the end of the connection
  bool interim = false;      // a 1xx

  /// The value of the only header field named @p name; nullopt when absent.
  std::optional<std::string> header(std::string_view name) const {
    std::optional<std::string> found;
    for (const auto& [n, v] : headers) {
      if (strata::http_iequals(n, name)) found = v;
    }
    return found;
  }
  std::size_t count(std::string_view name) const {
    std::size_t n = 0;
    for (const auto& h : headers) n += strata::http_iequals(h.first, name) ? 1 : 0;
    return n;
  }
  bool closes() const { return header("Connection") == "close"; }
};

/// What parse_responses() found.
struct ParsedStream {
  std::vector<ParsedResponse> responses;  // final and interim, in order
  std::size_t rest = 0;                   // bytes at the end that do not make a whole response
  std::string error;                      // why the bytes are not well-formed; empty: they are
};

namespace detail {

inline bool is_tchar(char c) {
  const auto u = static_cast<unsigned char>(c);
  if ((u >= '0' && u <= '9') || (u >= 'a' && u <= 'z') || (u >= 'A' && u <= 'Z')) return true;
  return std::string_view("!#$%&'*+-.^_`|~").find(c) != std::string_view::npos;
}

inline bool status_has_body(int status) { return status >= 200 && status != 204 && status != 304; }

}  // namespace detail

/// Splits @p data, what a server wrote, into responses, refusing anything malformed:
/// a status line `HTTP/1.x NNN Reason` (status 100..599, a non-empty printable reason), field
/// lines `token: value` (no CR, LF or NUL in the value), CRLF everywhere, exactly one framing
/// (Content-Length digits, or `Transfer-Encoding: chunked`, not both, not twice) when the
/// response has a body, and a chunked body that is well-formed. @p is_head(i, status) says
/// whether the i-th final response, of that status, answers a HEAD request (no body). When @p closed, a response with a
/// body and no framing runs to the end of @p data; otherwise it is incomplete.
inline ParsedStream parse_responses(std::string_view data,
                                    const std::function<bool(std::size_t, int)>& is_head,
                                    bool closed) {
  using detail::is_tchar;
  ParsedStream out;
  std::size_t pos = 0;
  std::size_t finals = 0;
  auto bad = [&](std::string why) {
    out.error = std::move(why) + " at byte " + std::to_string(pos) + ": " +
                show_bytes(data.substr(pos, 200));
    out.rest = data.size() - pos;
    return out;
  };
  while (pos < data.size()) {
    const std::size_t head_end = data.find("\r\n\r\n", pos);
    if (head_end == std::string_view::npos) {
      // Incomplete, unless what is there is already wrong.
      if (data.size() - pos >= 9 && !data.substr(pos).starts_with("HTTP/1.")) {
        return bad("not a status line");
      }
      break;
    }
    ParsedResponse r;
    const std::string_view head = data.substr(pos, head_end - pos);
    const std::size_t line_end = std::min(head.find("\r\n"), head.size());
    const std::string_view status_line = head.substr(0, line_end);
    if (status_line.size() < 14 || !status_line.starts_with("HTTP/1.") ||
        (status_line[7] != '0' && status_line[7] != '1') || status_line[8] != ' ' ||
        status_line[12] != ' ') {
      return bad("malformed status line");
    }
    r.minor = status_line[7] - '0';
    for (std::size_t i = 9; i < 12; ++i) {
      if (status_line[i] < '0' || status_line[i] > '9') return bad("status is not 3 digits");
    }
    r.status = (status_line[9] - '0') * 100 + (status_line[10] - '0') * 10 + (status_line[11] - '0');
    if (r.status < 100 || r.status > 599) return bad("status out of range");
    r.reason = std::string(status_line.substr(13));
    for (char c : r.reason) {
      if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) return bad("control byte in reason");
    }
    std::string_view fields = line_end < head.size() ? head.substr(line_end + 2) : std::string_view{};
    while (!fields.empty()) {
      const std::size_t e = std::min(fields.find("\r\n"), fields.size());
      const std::string_view line = fields.substr(0, e);
      const std::size_t colon = line.find(':');
      if (colon == std::string_view::npos || colon == 0) return bad("field line without a name");
      const std::string_view name = line.substr(0, colon);
      if (!std::all_of(name.begin(), name.end(), is_tchar)) return bad("field name not a token");
      std::string_view value = line.substr(colon + 1);
      if (!value.starts_with(' ')) return bad("field value not after \": \"");
      value.remove_prefix(1);
      for (char c : value) {
        if (c == '\r' || c == '\n' || c == '\0') return bad("CR, LF or NUL in a field value");
      }
      r.headers.emplace_back(std::string(name), std::string(value));
      if (e == fields.size()) break;
      fields.remove_prefix(e + 2);
    }
    std::size_t at = head_end + 4;
    r.interim = r.status < 200;
    if (r.interim) {
      out.responses.push_back(std::move(r));
      pos = at;
      continue;
    }
    const std::size_t lengths = r.count("Content-Length");
    const std::size_t codings = r.count("Transfer-Encoding");
    if (lengths > 1 || codings > 1) return bad("framing field sent twice");
    if (lengths == 1 && codings == 1) return bad("Content-Length with Transfer-Encoding");
    if (codings == 1 && r.header("Transfer-Encoding") != "chunked") {
      return bad("Transfer-Encoding other than chunked");
    }
    std::optional<std::uint64_t> length;
    if (lengths == 1) {
      const std::string v = *r.header("Content-Length");
      if (v.empty() || v.size() > 18 || !std::all_of(v.begin(), v.end(), [](char c) {
            return c >= '0' && c <= '9';
          })) {
        return bad("Content-Length not a number");
      }
      length = std::stoull(v);
    }
    const bool head_only = is_head(finals, r.status) || !detail::status_has_body(r.status);
    bool complete = true;
    if (head_only) {
      // The head of a response without a body; its framing fields describe what GET would get.
    } else if (codings == 1) {
      r.chunked = true;
      std::size_t p = at;
      complete = false;
      for (;;) {
        const std::size_t le = data.find("\r\n", p);
        if (le == std::string_view::npos) break;
        const std::string_view size_text = data.substr(p, le - p);
        if (size_text.empty() || size_text.size() > 15) return bad("bad chunk-size line");
        std::uint64_t size = 0;
        for (char c : size_text) {
          const int d = (c >= '0' && c <= '9')   ? c - '0'
                        : (c >= 'a' && c <= 'f') ? c - 'a' + 10
                        : (c >= 'A' && c <= 'F') ? c - 'A' + 10
                                                 : -1;
          if (d < 0) return bad("bad chunk-size line");
          size = size * 16 + static_cast<std::uint64_t>(d);
        }
        if (size == 0) {
          if (data.size() < le + 4) break;
          if (data.substr(le + 2, 2) != "\r\n") return bad("trailers in a response");
          p = le + 4;
          complete = true;
          break;
        }
        if (data.size() < le + 2 + size + 2) break;
        r.body += data.substr(le + 2, size);
        if (data.substr(le + 2 + size, 2) != "\r\n") return bad("chunk data not ended by CRLF");
        p = le + 2 + size + 2;
      }
      if (complete) at = p;
    } else if (length) {
      if (data.size() - at < *length) {
        complete = false;
      } else {
        r.body = std::string(data.substr(at, *length));
        at += *length;
      }
    } else if (closed) {
      r.to_close = true;
      r.body = std::string(data.substr(at));
      at = data.size();
    } else {
      complete = false;
    }
    if (!complete) break;
    out.responses.push_back(std::move(r));
    ++finals;
    pos = at;
  }
  out.rest = data.size() - pos;
  return out;
}

/// Every final (non-1xx) response of @p stream.
inline std::vector<const ParsedResponse*> final_responses(const ParsedStream& stream) {
  std::vector<const ParsedResponse*> out;
  for (const ParsedResponse& r : stream.responses) {
    if (!r.interim) out.push_back(&r);
  }
  return out;
}

}  // namespace strata_fuzz
