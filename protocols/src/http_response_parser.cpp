#include "http_response_parser.hpp"

#include <llhttp.h>

#include <algorithm>
#include <utility>

// How the parser drives llhttp
// ----------------------------
// As HttpRequestParser does (http_parser.cpp), with two pauses: on_headers_complete returns
// HPE_PAUSED, so that feed() knows where the head ended (the head is handed llhttp in slices no
// longer than what max_header_bytes still allows, so an oversized head fails at the same byte
// whatever the split), and on_message_complete returns HPE_PAUSED, so that feed() stops at the
// last byte of the response and consumes nothing of what follows.
//
// A response to HEAD, a 204 and a 304 have no body whatever their Content-Length says:
// on_headers_complete sets F_SKIPBODY before llhttp reads the framing (returning 1 would do the
// same, but not pause). 1xx have no body in llhttp already. Interim 1xx responses are dropped:
// their head-complete pause resets the head accounting, and their message-complete does not pause.

namespace strata::detail {

namespace {

constexpr bool is_ows(char c) noexcept { return c == ' ' || c == '\t'; }

std::string_view trim_ows(std::string_view s) noexcept {
  while (!s.empty() && is_ows(s.front())) s.remove_prefix(1);
  while (!s.empty() && is_ows(s.back())) s.remove_suffix(1);
  return s;
}

}  // namespace

struct HttpResponseParser::Impl {
  enum class Event { none, head_complete, interim_head, upgrade, message_complete };

  struct FieldPos {
    std::size_t name_begin = 0;
    std::size_t name_end = 0;
    std::size_t value_begin = 0;
    std::size_t value_end = 0;
  };

  explicit Impl(HttpResponseParser& owner) : owner(owner) {
    llhttp_init(&parser, HTTP_RESPONSE, &settings());
    parser.data = this;
  }

  static const llhttp_settings_t& settings() noexcept {
    static const llhttp_settings_t s = [] {
      llhttp_settings_t t;
      llhttp_settings_init(&t);
      t.on_message_begin = &Impl::on_message_begin;
      t.on_status = &Impl::on_status;
      t.on_header_field = &Impl::on_header_field;
      t.on_header_field_complete = &Impl::on_header_field_complete;
      t.on_header_value = &Impl::on_header_value;
      t.on_header_value_complete = &Impl::on_header_value_complete;
      t.on_headers_complete = &Impl::on_headers_complete;
      t.on_body = &Impl::on_body;
      t.on_message_complete = &Impl::on_message_complete;
      return t;
    }();
    return s;
  }

  static Impl& self(llhttp_t* p) noexcept { return *static_cast<Impl*>(p->data); }

  void clear_head() noexcept {
    reason.clear();
    bytes.clear();
    positions.clear();
    in_name = false;
    in_value = false;
    in_trailers = false;
  }

  static int on_message_begin(llhttp_t* p) {
    self(p).clear_head();
    return 0;
  }
  static int on_status(llhttp_t* p, const char* at, std::size_t length) {
    self(p).reason.append(at, length);
    return 0;
  }
  static int on_header_field(llhttp_t* p, const char* at, std::size_t length) {
    Impl& im = self(p);
    if (im.in_trailers) return 0;  // trailer fields are dropped
    if (!im.in_name) {
      const std::size_t at_end = im.bytes.size();
      im.positions.push_back({at_end, at_end, at_end, at_end});
      im.in_name = true;
    }
    im.bytes.append(at, length);
    return 0;
  }
  static int on_header_field_complete(llhttp_t* p) {
    Impl& im = self(p);
    if (im.in_trailers || im.positions.empty()) return 0;
    im.positions.back().name_end = im.bytes.size();
    im.in_name = false;
    return 0;
  }
  static int on_header_value(llhttp_t* p, const char* at, std::size_t length) {
    Impl& im = self(p);
    if (im.in_trailers || im.positions.empty()) return 0;
    if (!im.in_value) {
      im.positions.back().value_begin = im.bytes.size();
      im.in_value = true;
    }
    im.bytes.append(at, length);
    return 0;
  }
  static int on_header_value_complete(llhttp_t* p) {
    Impl& im = self(p);
    if (im.in_trailers || im.positions.empty()) return 0;
    if (!im.in_value) im.positions.back().value_begin = im.bytes.size();
    im.positions.back().value_end = im.bytes.size();
    im.in_value = false;
    return 0;
  }
  static int on_headers_complete(llhttp_t* p) {
    Impl& im = self(p);
    const int status = p->status_code;
    if (status == 101 || p->upgrade != 0) {
      im.event = Event::upgrade;
      return HPE_PAUSED;
    }
    if (status >= 100 && status < 200) {
      im.event = Event::interim_head;
      return HPE_PAUSED;
    }
    // RFC 9112 §6.3: no body after HEAD, 204 or 304, whatever the framing fields say (llhttp
    // knows only of 204 without Content-Length).
    if (im.head_request || status == 204 || status == 304) p->flags |= F_SKIPBODY;
    im.event = Event::head_complete;
    return HPE_PAUSED;
  }
  static int on_body(llhttp_t* p, const char* at, std::size_t length) {
    Impl& im = self(p);
    if (length == 0) return 0;
    im.owner.body_bytes_ += length;
    try {
      im.owner.callbacks_.body_received(
          std::span<const std::byte>(reinterpret_cast<const std::byte*>(at), length));
    } catch (...) {
      // Never unwind through llhttp's C frames: stop it, and rethrow from feed().
      im.callback_error = std::current_exception();
      return HPE_USER;
    }
    return 0;
  }
  static int on_message_complete(llhttp_t* p) {
    Impl& im = self(p);
    if (p->status_code >= 100 && p->status_code < 200) return 0;  // interim: read on
    im.event = Event::message_complete;
    return HPE_PAUSED;
  }

  /// The head just completed, checked and built; null after a failure.
  std::unique_ptr<HttpResponseHead> build_head() {
    llhttp_t& p = parser;
    if (p.http_major != 1 || p.http_minor > 1) {
      owner.fail("unsupported HTTP version " + std::to_string(p.http_major) + "." +
                 std::to_string(p.http_minor) + " in the response (only 1.0 and 1.1)");
      return nullptr;
    }
    if (p.status_code < 100 || p.status_code > 999) {
      owner.fail("malformed response: status code " + std::to_string(p.status_code));
      return nullptr;
    }
    for (const FieldPos& f : positions) {
      if (f.name_end == f.name_begin) {
        owner.fail("malformed response: empty header field name");
        return nullptr;
      }
    }
    auto head = std::make_unique<HttpResponseHead>();
    head->status = p.status_code;
    head->version_major = p.http_major;
    head->version_minor = p.http_minor;
    head->reason = std::string(trim_ows(reason));
    head->chunked = (p.flags & F_CHUNKED) != 0;
    if ((p.flags & F_CONTENT_LENGTH) != 0 && !head->chunked)
      head->content_length = p.content_length;
    const bool no_body_status = p.status_code == 204 || p.status_code == 304;
    head->no_body =
        head_request || no_body_status || (head->content_length && *head->content_length == 0);
    head->close_delimited = !head->no_body && llhttp_message_needs_eof(&p) != 0;
    head->keep_alive = llhttp_should_keep_alive(&p) != 0;
    // The views are built once the bytes are in their final place.
    head->bytes = std::move(bytes);
    bytes = std::string();
    const std::string_view all(head->bytes);
    head->fields.reserve(positions.size());
    for (const FieldPos& f : positions) {
      head->fields.push_back({all.substr(f.name_begin, f.name_end - f.name_begin),
                              trim_ows(all.substr(f.value_begin, f.value_end - f.value_begin))});
    }
    positions.clear();
    in_trailers = true;  // any field lines from now on are trailers
    return head;
  }

  HttpResponseParser& owner;
  llhttp_t parser{};
  Event event = Event::none;
  bool head_request = false;
  std::size_t section_bytes = 0;  // bytes of the head so far
  std::string reason;
  std::string bytes;
  std::vector<FieldPos> positions;
  bool in_name = false;
  bool in_value = false;
  bool in_trailers = false;
  std::exception_ptr callback_error;
};

HttpResponseParser::HttpResponseParser(Callbacks& callbacks, std::size_t max_header_bytes)
    : callbacks_(callbacks),
      max_header_bytes_(max_header_bytes),
      impl_(std::make_unique<Impl>(*this)) {}

HttpResponseParser::~HttpResponseParser() = default;

void HttpResponseParser::fail(std::string reason) {
  if (state_ == State::failed) return;
  state_ = State::failed;
  error_ = std::move(reason);
}

void HttpResponseParser::start(bool head_request) {
  Impl& im = *impl_;
  llhttp_reset(&im.parser);
  im.clear_head();
  im.head_request = head_request;
  im.section_bytes = 0;
  im.event = Impl::Event::none;
  im.callback_error = nullptr;
  state_ = State::head;
  error_.clear();
  failed_before_any_byte_ = false;
  bytes_seen_ = 0;
  body_bytes_ = 0;
}

std::size_t HttpResponseParser::feed(std::span<const std::byte> data) {
  if (state_ != State::head && state_ != State::body) return 0;
  if (data.empty()) return 0;
  Impl& im = *impl_;
  const char* const base = reinterpret_cast<const char*>(data.data());
  const std::size_t size = data.size();
  std::size_t pos = 0;
  static const char empty_input = 0;  // llhttp wants a valid pointer even for no bytes

  // A turn that ends in a pause loops even with no bytes left: after the head, llhttp may
  // complete a body-less response without input.
  for (;;) {
    const char* const p = pos < size ? base + pos : &empty_input;
    const std::size_t rest = size - pos;
    std::size_t length = rest;
    if (state_ == State::head) length = std::min(rest, max_header_bytes_ - im.section_bytes);

    im.event = Impl::Event::none;
    const llhttp_errno_t err = llhttp_execute(&im.parser, p, length);
    std::size_t used = length;
    if (err == HPE_PAUSED) {
      used = static_cast<std::size_t>(llhttp_get_error_pos(&im.parser) - p);
    } else if (err != HPE_OK) {
      if (im.callback_error) {
        fail("a body callback threw");
        std::rethrow_exception(std::exchange(im.callback_error, nullptr));
      }
      const char* reason = llhttp_get_error_reason(&im.parser);
      fail(std::string("malformed response: ") +
           (reason != nullptr && *reason != '\0' ? reason : llhttp_errno_name(err)));
      const std::size_t at = static_cast<std::size_t>(llhttp_get_error_pos(&im.parser) - p);
      bytes_seen_ += at;
      return pos + at;
    }
    pos += used;
    bytes_seen_ += used;
    if (state_ == State::head) im.section_bytes += used;

    switch (im.event) {
      case Impl::Event::none:
        if (state_ == State::head && im.section_bytes >= max_header_bytes_) {
          fail("response head larger than max_header_bytes (" + std::to_string(max_header_bytes_) +
               " bytes)");
          return pos;
        }
        if (pos == size) return pos;  // all consumed: wait for more
        if (used == 0) {
          fail("malformed response");  // defensive: never spin without progress
          return pos;
        }
        break;
      case Impl::Event::upgrade:
        fail("unexpected 101 Switching Protocols: the client did not ask to switch protocols");
        return pos;
      case Impl::Event::interim_head:
        // 100 Continue, 102, 103: dropped; the final response follows.
        im.section_bytes = 0;
        llhttp_resume(&im.parser);
        break;
      case Impl::Event::head_complete: {
        std::unique_ptr<HttpResponseHead> head = im.build_head();
        if (!head) return pos;
        state_ = State::body;
        callbacks_.head_received(std::move(head));
        llhttp_resume(&im.parser);
        break;
      }
      case Impl::Event::message_complete:
        // llhttp stays paused until the next start().
        state_ = State::complete;
        return pos;
    }
  }
}

void HttpResponseParser::feed_eof() {
  Impl& im = *impl_;
  switch (state_) {
    case State::head:
      if (bytes_seen_ == 0) {
        failed_before_any_byte_ = true;
        fail("the server closed the connection without sending a response");
      } else {
        fail("the server closed the connection in the middle of the response head");
      }
      return;
    case State::body: {
      im.event = Impl::Event::none;
      const llhttp_errno_t err = llhttp_finish(&im.parser);
      (void)err;  // HPE_PAUSED when on_message_complete ran, HPE_INVALID_EOF_STATE otherwise
      if (im.event == Impl::Event::message_complete) {
        state_ = State::complete;
        return;
      }
      if (im.parser.flags & F_CHUNKED) {
        fail("the server closed the connection in the middle of the chunked body, after " +
             std::to_string(body_bytes_) + " body bytes");
      } else if (im.parser.flags & F_CONTENT_LENGTH) {
        const std::uint64_t expected = body_bytes_ + im.parser.content_length;
        fail("the server closed the connection after " + std::to_string(body_bytes_) + " of " +
             std::to_string(expected) + " body bytes (Content-Length: " + std::to_string(expected) +
             ")");
      } else {
        fail("the server closed the connection in the middle of the response body");
      }
      return;
    }
    default:
      return;
  }
}

}  // namespace strata::detail
