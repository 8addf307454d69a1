#pragma once
/// @file
/// HttpRequestParser: an incremental HTTP/1.1 request parser (RFC 9112) on llhttp, with no I/O
/// and no loop, for a server protocol to feed the bytes it receives. Its satellites:
/// HttpParserLimits, HttpHeader and HttpHeaders, and HttpRequest, the parsed request head.

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace strata {

/// The limits an HttpRequestParser enforces, each with the status a server answers with.
struct HttpParserLimits {
  /// Bytes of the request head: request line, header field lines and the empty line, plus any
  /// empty lines before the request line. Over it: 431, or 414 while still in the request line.
  /// The trailer section of a chunked body has the same limit on its own (431).
  std::size_t max_header_bytes = 8 * 1024;
  /// Bytes of the body: the Content-Length, or the sum of the chunk sizes. Over it: 413, decided
  /// from the Content-Length or the chunk size before any of those bytes arrive.
  std::uint64_t max_body_bytes = 1024 * 1024;
  /// Bytes in the chunk-size lines of one request beyond the size itself (chunk extensions and
  /// leading zeros), summed over the request. Over it: 413 (CVE-2024-22019).
  std::size_t max_chunk_extension_bytes = 16 * 1024;
};

/// One header (or trailer) field line: its name as received, and its value without the
/// surrounding whitespace. Both view the parser's buffers (see HttpRequest for how long).
struct HttpHeader {
  std::string_view name;   ///< the field name, in the case received
  std::string_view value;  ///< the field value, without leading or trailing whitespace
};

/// One header field, owned: what a response (HttpResponse) or a client's request carries.
struct HttpField {
  std::string name;   ///< the field name, e.g. "Cache-Control"
  std::string value;  ///< the field value, sent as is
};

/// Owned storage of a request head: its bytes and the views of its field lines into them.
/// What HttpRequestParser::swap_head() exchanges with the parser's own, so that a server can
/// keep a head past HttpRequestParser::resume() without copying it.
struct HttpHeadStorage {
  std::string bytes;  ///< the target's and the fields' bytes (with what lies between them
                      ///< when the head was read whole, without llhttp: read only the views)
  std::vector<HttpHeader> fields;   ///< views into bytes, in received order
};

/// The field lines of a request head or trailer section, in the order received, duplicates
/// kept; names are compared ASCII case-insensitively (RFC 9110 §5.1).
///
/// A view: cheap to copy, valid as long as the HttpRequest it came from.
class HttpHeaders {
 public:
  HttpHeaders() = default;
  /// A view of @p fields; they must outlive it.
  explicit HttpHeaders(std::span<const HttpHeader> fields) noexcept : fields_(fields) {}

  /// Number of field lines.
  std::size_t size() const noexcept { return fields_.size(); }
  /// Whether there is no field line.
  bool empty() const noexcept { return fields_.empty(); }
  /// The @p i-th field line, in received order; @p i must be below size().
  const HttpHeader& operator[](std::size_t i) const noexcept { return fields_[i]; }
  /// The first field line, for a range-for over HttpHeader.
  auto begin() const noexcept { return fields_.begin(); }
  /// Past the last field line.
  auto end() const noexcept { return fields_.end(); }

  /// The value of the first field named @p name (any case), or nullopt.
  std::optional<std::string_view> get(std::string_view name) const noexcept;
  /// Whether a field named @p name (any case) is present.
  bool contains(std::string_view name) const noexcept { return get(name).has_value(); }
  /// Number of field lines named @p name (any case).
  std::size_t count(std::string_view name) const noexcept;

 private:
  std::span<const HttpHeader> fields_;
};

/// ASCII case-insensitive equality, as HTTP compares field names and most tokens.
bool http_iequals(std::string_view a, std::string_view b) noexcept;

/// A parsed request head, with the decisions a server needs: whether the connection stays open
/// after the response, whether the client waits for `100 Continue`, how the body is framed.
///
/// @par Lifetime  Owned by its HttpRequestParser and filled in place; every view in it (method
/// excepted, which is static) stays valid from HttpRequestParser::Callbacks::headers_received
/// until HttpRequestParser::resume(). A server that answers later copies what it needs.
class HttpRequest {
 public:
  /// The method, upper case as on the wire ("GET", "HEAD", "POST", ...). Static storage.
  std::string_view method() const noexcept { return method_; }
  /// The request target as received: origin-form "/path?query", or "*", or an absolute or
  /// authority form. Not percent-decoded.
  std::string_view target() const noexcept { return target_; }
  /// The target up to its first '?'.
  std::string_view path() const noexcept { return {target_.data(), query_at_}; }
  /// The target after its first '?', without it; empty when there is none.
  std::string_view query() const noexcept {
    return query_at_ < target_.size() ? target_.substr(query_at_ + 1) : std::string_view{};
  }
  /// HTTP version: 1 and 0 or 1 (other versions are refused with 505).
  int version_major() const noexcept { return version_major_; }
  /// The minor version: 0 or 1.
  int version_minor() const noexcept { return version_minor_; }

  /// The header fields, in order, duplicates kept.
  const HttpHeaders& headers() const noexcept { return headers_; }
  /// The trailer fields of a chunked body; empty until Callbacks::request_received.
  const HttpHeaders& trailers() const noexcept { return trailers_; }

  /// Whether the connection may carry another request after this one's response
  /// (RFC 9112 §9.3): HTTP/1.1 unless `Connection: close`; HTTP/1.0 only with
  /// `Connection: keep-alive` and without `close`.
  bool keep_alive() const noexcept { return keep_alive_; }
  /// Whether the client sent `Expect: 100-continue` in an HTTP/1.1 request, and so may wait
  /// for `HTTP/1.1 100 Continue` before sending the body (RFC 9110 §10.1.1; an HTTP/1.0
  /// request's expectation is ignored, as the RFC requires).
  bool expects_continue() const noexcept { return expects_continue_; }
  /// The Content-Length, when the body is framed by one.
  std::optional<std::uint64_t> content_length() const noexcept { return content_length_; }
  /// Whether the body is chunked (`Transfer-Encoding: chunked`).
  bool is_chunked() const noexcept { return chunked_; }

 private:
  friend class HttpRequestParser;
  void clear() noexcept {  // as *this = HttpRequest{}, which GCC 12 builds and copies
    method_ = {};
    target_ = {};
    query_at_ = 0;
    version_major_ = 1;
    version_minor_ = 1;
    headers_ = {};
    trailers_ = {};
    keep_alive_ = false;
    expects_continue_ = false;
    chunked_ = false;
    content_length_.reset();
  }

  // (clear() resets each member: keep it in step)
  std::string_view method_;
  std::string_view target_;
  std::size_t query_at_ = 0;  // the first '?' of target_, or its size: never past it
  int version_major_ = 1;
  int version_minor_ = 1;
  HttpHeaders headers_;
  HttpHeaders trailers_;
  bool keep_alive_ = false;
  bool expects_continue_ = false;
  bool chunked_ = false;
  std::optional<std::uint64_t> content_length_;
};

/// An incremental HTTP/1.1 request parser: bytes in, request events out. No I/O, no loop, no
/// timers; a server protocol feeds it what data_received() gives and answers what it reports.
///
/// Each request is reported as `headers_received body_received* request_received`. Then the
/// parser pauses: feed() returns at the end of that request, having consumed exactly its bytes,
/// and consumes nothing more until resume(). A server answers pipelined requests in order by
/// keeping the unconsumed bytes and calling resume() and feed() again when it is ready for the
/// next request. The bytes may arrive split at any boundary: the events, the requests and any
/// error are the same for every split (only how body bytes are cut into body_received calls
/// differs).
///
/// What is accepted: HTTP/1.0 and HTTP/1.1 requests in llhttp's strict mode, no lenient flag;
/// bodies framed by Content-Length or by `Transfer-Encoding: chunked` (trailers kept); no body
/// otherwise. An `Upgrade` request or CONNECT is parsed as an ordinary request and the
/// connection stays HTTP; the server answers it as it sees fit.
///
/// What is refused, with the status a server sends before closing (RFC 9112 unless noted):
/// - 400: malformed syntax (method, target, version, field lines, chunk framing); a bare CR or
///   a bare LF anywhere in the head or trailers (CVE-2023-30589); obs-fold, i.e. a field line
///   starting with space or tab (§5.2; CVE-2024-27982); Content-Length with Transfer-Encoding
///   (§6.1); more than one Content-Length, even equal (§6.3 allows refusing); a Content-Length
///   that is not a number; a Transfer-Encoding whose final coding is not chunked, or with
///   chunked twice (§6.3); any Transfer-Encoding in an HTTP/1.0 request (§6.1); an HTTP/1.1
///   request without Host, or any request with two (§3.2); a connection closed mid-request.
/// - 501: a Transfer-Encoding with a coding other than chunked before the final chunked
///   (§6.1: a server SHOULD answer an unknown transfer coding with 501; one without chunked
///   last is the 400 above, as §6.3 says it MUST be).
/// - 505: a well-formed version other than 1.0 and 1.1 (HTTP/0.9, HTTP/2.0, the HTTP/2 preface).
/// - 414 / 431: the head over HttpParserLimits::max_header_bytes, while in the request line /
///   after it; 431 for the trailer section over the same limit.
/// - 413: a body over HttpParserLimits::max_body_bytes, or chunk extensions over
///   HttpParserLimits::max_chunk_extension_bytes (CVE-2024-22019).
/// An unknown method is 400, not 501: llhttp cannot tell an unknown token from garbage.
/// Known limitation of llhttp 8.1: a chunk-size line with two extensions when the first has a
/// value (`5;a=b;c`) is refused with 400.
///
/// After an error the parser stays failed: feed() consumes nothing and error_status() keeps
/// the first error. A connection that failed is answered with error_status() and closed.
///
/// @par Allocation  The head's target and field bytes (or, read whole without llhttp, the head
/// from its target on, unless set_views_into_input() lets it be viewed where it was fed) are
/// copied into one buffer, the field positions into one vector, the trailers likewise; all are cleared, not freed, between
/// requests, so a connection allocates only when a request is larger than every earlier one
/// (at most max_header_bytes per buffer). Body bytes are never copied: body_received views the
/// fed bytes. The llhttp state is one allocation at construction. swap_head() trades the
/// head's buffers for the caller's: a server that hands back storage it took earlier (its
/// recycled request slots) keeps the steady state free of allocations too.
/// @par Thread safety  None: one parser per connection, used from one thread (the loop's).
/// Callbacks run inside feed(), on that thread; a callback must not call feed(), resume() or
/// feed_eof() of the same parser.
class HttpRequestParser {
 public:
  /// What the parser reports; a server protocol implements it.
  class Callbacks {
   public:
    virtual ~Callbacks() = default;
    /// The request head is complete and valid. @p request stays valid until resume(). A
    /// server that sees expects_continue() and wants the body writes `100 Continue` now.
    virtual void headers_received(const HttpRequest& request) = 0;
    /// The next bytes of the body, decoded from the chunked coding if it was used. @p data
    /// views the bytes given to feed() and is valid only during the call. Never empty.
    virtual void body_received(std::span<const std::byte> data) = 0;
    /// The request is complete (body and trailers included); the parser is now paused.
    virtual void request_received(const HttpRequest& request) = 0;
  };

  /// Where the parser is, between two calls.
  enum class State {
    idle,      ///< waiting for the first byte of a request (leading empty lines keep it idle)
    head,      ///< inside a request line or header section
    body,      ///< inside a body or trailer section
    complete,  ///< a request was reported; nothing is consumed until resume()
    closed,    ///< the last request did not keep the connection alive; bytes are discarded
    failed,    ///< an error; see error_status() and error_reason()
  };

  /// A parser that reports to @p callbacks (which must outlive it) and enforces @p limits.
  /// @throws std::invalid_argument  a limit is 0.
  explicit HttpRequestParser(Callbacks& callbacks, HttpParserLimits limits = {});
  ~HttpRequestParser();
  HttpRequestParser(const HttpRequestParser&) = delete;
  HttpRequestParser& operator=(const HttpRequestParser&) = delete;

  /// Parses the front of @p data, calling the callbacks as it goes; returns how many bytes it
  /// consumed.
  ///
  /// Returns early, with fewer than data.size() consumed, when a request completed (State
  /// complete: keep the rest for after resume()) or on an error (State failed). In State
  /// complete or failed it consumes nothing; in State closed it discards everything (RFC 9112
  /// §9.6: no request after `Connection: close` is processed). Otherwise it consumes all of
  /// @p data, keeping what it needs of an incomplete head.
  ///
  /// @throws  whatever a callback throws; the parser is then failed (status 500).
  std::size_t feed(std::span<const std::byte> data);

  /// The peer sent end of file: a request in progress fails (400, "connection closed in the
  /// middle of a request"); between requests the parser becomes closed. No-op when complete,
  /// closed or failed.
  void feed_eof();

  /// After a complete request: forget it (its views die) and accept the next one, or, when it
  /// did not keep the connection alive, become closed. No-op in any other state.
  void resume();

  /// Where the parser is.
  State state() const noexcept { return state_; }
  /// Whether a complete request waits for resume(): state() is State::complete.
  bool is_paused() const noexcept { return state_ == State::complete; }
  /// Whether the parser failed: state() is State::failed.
  bool has_failed() const noexcept { return state_ == State::failed; }
  /// The status to answer the failure with (400, 413, 414, 431, 500, 501, 505), else 0.
  int error_status() const noexcept { return error_status_; }
  /// What was wrong, for a log line or the error body; empty when not failed. Static storage.
  std::string_view error_reason() const noexcept { return error_reason_; }

  /// From Callbacks::headers_received until resume(): exchanges the storage of the current
  /// head (the target's and the fields' bytes, and the field views) with @p storage. The
  /// views of request() (target(), path(), query(), headers()) then point into @p storage and
  /// stay valid after resume(), for as long as @p storage is neither changed nor destroyed;
  /// the parser goes on with @p storage's former buffers, reusing their capacity. A server
  /// that answers later takes the head this way instead of copying it. No-op in other states.
  /// @throws std::bad_alloc  the head was viewed in the input (set_views_into_input()) and
  /// is copied now.
  void swap_head(HttpHeadStorage& storage);
  /// With @p on, a head read whole without llhttp (see simple_heads()) is viewed where it was
  /// fed instead of copied: the caller promises that the bytes given to feed() stay alive and
  /// unchanged until resume() or swap_head(), as a server that answers each request (or
  /// takes its head) before it lets go of the bytes can. Off by default.
  void set_views_into_input(bool on) noexcept { views_into_input_ = on; }

  /// The request being parsed or just completed (valid from headers_received until resume()).
  const HttpRequest& request() const noexcept { return request_; }
  /// The limits given at construction.
  const HttpParserLimits& limits() const noexcept { return limits_; }
  /// Requests completed so far on this parser.
  std::uint64_t requests_completed() const noexcept { return requests_completed_; }
  /// Of those, the ones whose head was of the common simple shape (a request line and plain
  /// field lines, no body) and was read whole without llhttp; they parse exactly as llhttp
  /// would parse them. For tests and profiling.
  std::uint64_t simple_heads() const noexcept { return simple_heads_; }

 private:
  struct Impl;
  friend struct Impl;

  void fail(int status, std::string_view reason) noexcept;
  bool head_complete(int major, int minor, std::uint64_t flags, std::uint64_t content_length,
                     std::size_t query_at = std::string_view::npos);
  void complete_request();

  Callbacks& callbacks_;
  HttpParserLimits limits_;
  std::unique_ptr<Impl> impl_;
  HttpRequest request_;
  State state_ = State::idle;
  int error_status_ = 0;
  std::string_view error_reason_;
  std::uint64_t requests_completed_ = 0;
  std::uint64_t simple_heads_ = 0;
  bool views_into_input_ = false;
};

}  // namespace strata
