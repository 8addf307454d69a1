#pragma once
// HttpResponseParser: the incremental HTTP/1.1 response parser (RFC 9112) of HttpClient, on
// llhttp; private to the protocols layer. No I/O: the client's connection feeds it the bytes it
// receives and acts on what it reports.

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "strata/protocols/http_parser.hpp"

namespace strata::detail {

/// A parsed response head. Owns its bytes: the views in fields (and what HttpHeaders built on
/// them shows) stay valid as long as the object, which is why it lives on the heap and is
/// handed over by unique_ptr (a moved std::string may move short contents).
struct HttpResponseHead {
  int status = 0;
  int version_major = 1;
  int version_minor = 1;
  /// Whether the connection may carry another request after this response (RFC 9112 §9.3):
  /// HTTP/1.1 unless `Connection: close`; HTTP/1.0 only with `Connection: keep-alive`; never
  /// when the body is delimited by the end of the connection.
  bool keep_alive = false;
  /// Whether the body is chunked.
  bool chunked = false;
  /// Whether the body ends only when the connection does (no Content-Length, not chunked).
  bool close_delimited = false;
  /// Whether the response has no body at all (HEAD, 1xx, 204, 304, or Content-Length: 0).
  bool no_body = false;
  /// The Content-Length, when the body is framed by one (reported even for HEAD and 304, where
  /// it describes the body that was not sent).
  std::optional<std::uint64_t> content_length;

  std::string reason;  // the reason phrase, possibly empty
  std::string bytes;   // every field name and value, back to back
  std::vector<HttpHeader> fields;
};

/// An incremental HTTP/1.x response parser for one connection, one response at a time.
///
/// start() prepares it for the response to one request; feed() then reports
/// `head_received body_received*` and stops at the end of the response (state() complete),
/// consuming exactly the bytes of that response; feed_eof() tells it the peer closed. Interim
/// 1xx responses (100 Continue, 103 Early Hints) are skipped; a 101 is an error (the client
/// never asks to switch protocols). Trailer fields are parsed and dropped.
///
/// Not accepted: a head over max_header_bytes, malformed syntax (llhttp's strict mode, no
/// lenient flag), an HTTP version other than 1.0 and 1.1.
class HttpResponseParser {
 public:
  class Callbacks {
   public:
    virtual ~Callbacks() = default;
    /// The head of the (final) response is complete and valid.
    virtual void head_received(std::unique_ptr<HttpResponseHead> head) = 0;
    /// The next body bytes, decoded from the chunked coding; valid during the call, never empty.
    virtual void body_received(std::span<const std::byte> data) = 0;
  };

  enum class State {
    idle,      ///< before start(), or between responses
    head,      ///< waiting for or inside the response head
    body,      ///< inside the body (or trailers)
    complete,  ///< the response is complete; feed() consumes nothing until start()
    failed,    ///< see error()
  };

  HttpResponseParser(Callbacks& callbacks, std::size_t max_header_bytes);
  ~HttpResponseParser();
  HttpResponseParser(const HttpResponseParser&) = delete;
  HttpResponseParser& operator=(const HttpResponseParser&) = delete;

  /// Prepares for the response to a request; @p head_request: it was a HEAD (no body follows).
  void start(bool head_request);

  /// Parses the front of @p data; returns how many bytes it consumed. Fewer than data.size()
  /// only when the response completed (the rest is not part of it) or failed. Outside head and
  /// body it consumes nothing.
  std::size_t feed(std::span<const std::byte> data);

  /// The peer closed the connection: completes a close-delimited body, or fails (error()
  /// explains: before any byte, in the head, or after how many body bytes of how many).
  void feed_eof();

  State state() const noexcept { return state_; }
  /// Why it failed, for an error message; empty unless failed.
  const std::string& error() const noexcept { return error_; }
  /// Whether no byte of the response arrived before it failed at EOF (a pooled connection the
  /// server had closed: the request may be retried).
  bool failed_before_any_byte() const noexcept { return failed_before_any_byte_; }
  /// Whether any byte of the current response was fed.
  bool has_bytes() const noexcept { return bytes_seen_ != 0; }
  /// Body bytes of the current response so far (decoded).
  std::uint64_t body_bytes() const noexcept { return body_bytes_; }

 private:
  struct Impl;
  friend struct Impl;

  void fail(std::string reason);

  Callbacks& callbacks_;
  std::size_t max_header_bytes_;
  std::unique_ptr<Impl> impl_;
  State state_ = State::idle;
  std::string error_;
  bool failed_before_any_byte_ = false;
  std::uint64_t bytes_seen_ = 0;
  std::uint64_t body_bytes_ = 0;
};

}  // namespace strata::detail
