#pragma once
/// @file
/// HttpClient: an HTTP/1.1 client (RFC 9112) on the transports layer, with per-host keep-alive
/// connection pools, redirects, timeouts and https (asyncio's world has aiohttp.ClientSession
/// for this). Its satellites: HttpUrl (absolute http/https URLs and RFC 3986 reference
/// resolution), HttpField, HttpRequestBody, HttpRequestOptions, HttpClientOptions,
/// HttpClientError and HttpClientResponse.
///
/// ```
/// strata::HttpClient client;
/// strata::HttpClientResponse r = co_await client.get("https://example.com/");
/// std::string page = co_await r.text();
/// client.close();
/// co_await client.wait_closed();
/// ```

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "strata/core/async_generator.hpp"
#include "strata/core/clock.hpp"
#include "strata/core/coro.hpp"
#include "strata/protocols/http_parser.hpp"
#include "strata/transports/ssl.hpp"

namespace strata {

namespace detail {
struct HttpClientState;
struct HttpExchange;
}  // namespace detail

// ---- HttpUrl ------------------------------------------------------------------------------

/// An absolute `http://` or `https://` URL, split into what a request needs: the scheme, the
/// host, the port and the request target (path and query). The fragment is dropped: it is
/// never sent.
///
/// Parsing normalises: the scheme and host are lower-cased, an empty path becomes "/", the
/// port defaults to 80 or 443. An IPv6 literal is written in brackets (`http://[::1]:8080/`)
/// and stored without them. No percent-decoding or -encoding is done: the target is sent as
/// written, so it must not hold spaces or control characters.
struct HttpUrl {
  std::string scheme;        ///< "http" or "https"
  std::string host;          ///< a name, an IPv4 address or an IPv6 address (no brackets)
  std::uint16_t port = 80;   ///< the port, explicit or the scheme's default
  std::string target = "/";  ///< the path and the query: "/a/b?x=1"; starts with '/'

  /// Parses an absolute URL.
  /// @throws std::invalid_argument  naming the URL and what is wrong: not absolute, a scheme
  /// other than http and https ("unsupported URL scheme 'ftp' in 'ftp://x/' (only http and
  /// https)"), user information (`user:pw@`: send an Authorization header instead), an empty
  /// or malformed host, a bad port, or a space or control character.
  static HttpUrl parse(std::string_view url);

  /// Resolves @p reference (an absolute URL, `//host/path`, `/path`, `path`, `?query` or
  /// `#fragment`) against this URL as RFC 3986 §5.2 does, dot segments removed: how a
  /// redirect's Location and a page's links are followed.
  /// @throws std::invalid_argument  the result is not a valid http/https URL (as parse()).
  HttpUrl resolve(std::string_view reference) const;

  /// Whether the scheme is https.
  bool is_https() const noexcept { return scheme == "https"; }
  /// The port the scheme uses when none is given (80 or 443).
  std::uint16_t default_port() const noexcept { return is_https() ? 443 : 80; }
  /// host[:port] as the Host header carries it: the port only when not the default, an IPv6
  /// address in brackets.
  std::string authority() const;
  /// The path: the target up to its '?'.
  std::string_view path() const noexcept;
  /// The URL as text: scheme://authority/target.
  std::string to_string() const;
  /// Whether @p other has the same scheme, host and port (RFC 6454's origin).
  bool same_origin(const HttpUrl& other) const noexcept {
    return scheme == other.scheme && host == other.host && port == other.port;
  }

  friend bool operator==(const HttpUrl&, const HttpUrl&) = default;
};

// ---- Requests -----------------------------------------------------------------------------

/// The body of a request: none, bytes sent with a Content-Length, or a stream of chunks sent
/// with `Transfer-Encoding: chunked`.
///
/// A stream comes from an AsyncGenerator<std::string> (empty chunks are skipped) or from a
/// producer called for each chunk until it returns an empty string. Either runs in the task
/// that awaits HttpClient::request(), while the request is being sent, and may await (a file
/// read in the executor, a queue); writing waits for the connection's buffer to drain below its
/// low-water mark before asking for the next chunk. If the server answers before the body is
/// sent, the rest of it is not asked for. A streamed body can be sent only once (copies of it
/// share the one stream): a request carrying one is not retried on a stale connection once a
/// chunk was taken, and a 307 or 308 redirect of it fails with HttpClientError.
class HttpRequestBody {
 public:
  /// Produces the next chunk; an empty string ends the body.
  using Producer = std::function<Coro<std::string>()>;

  /// What the body is.
  enum class Kind {
    none,    ///< no body
    bytes,   ///< bytes in memory, sent with Content-Length
    stream,  ///< chunks from a generator or producer, sent chunked
  };

  /// No body (no Content-Length is sent, except for POST, PUT and PATCH: `Content-Length: 0`).
  HttpRequestBody() noexcept = default;
  /// These bytes, with their Content-Length.
  HttpRequestBody(std::string bytes) noexcept  // NOLINT: converts
      : kind_(Kind::bytes), bytes_(std::move(bytes)) {}
  /// A copy of these bytes, with their Content-Length.
  HttpRequestBody(std::string_view bytes)  // NOLINT: converts
      : kind_(Kind::bytes), bytes_(bytes) {}
  /// A copy of this NUL-terminated string (without the NUL), with its Content-Length.
  HttpRequestBody(const char* bytes)  // NOLINT: converts
      : kind_(Kind::bytes), bytes_(bytes) {}
  /// A copy of these bytes, with their Content-Length.
  HttpRequestBody(std::span<const std::byte> bytes)  // NOLINT: converts
      : kind_(Kind::bytes), bytes_(reinterpret_cast<const char*>(bytes.data()), bytes.size()) {}

  /// The chunks @p chunks yields, sent chunked.
  static HttpRequestBody stream(AsyncGenerator<std::string> chunks);
  /// The chunks @p producer returns until an empty one, sent chunked.
  /// @throws std::invalid_argument  @p producer is empty.
  static HttpRequestBody stream(Producer producer);

  /// What the body is.
  Kind kind() const noexcept { return kind_; }
  /// The bytes of a Kind::bytes body (empty otherwise).
  const std::string& bytes() const noexcept { return bytes_; }

  /// @cond INTERNAL
  /// The next chunk of a stream; empty at its end. Marks the stream as started.
  Coro<std::string> next_chunk();
  /// Whether a chunk was taken from the stream (it can no longer be sent again).
  bool started() const noexcept;
  /// @endcond

 private:
  struct Stream;

  Kind kind_ = Kind::none;
  std::string bytes_;
  std::shared_ptr<Stream> stream_;  // copies of a streamed body share the stream
};

/// What one request sends and how it follows redirects.
struct HttpRequestOptions {
  /// Header fields, sent in this order after Host (and User-Agent, unless given here). Host
  /// may be given to override it. Content-Length and Transfer-Encoding may not: the body sets
  /// them. `Connection: close` makes the connection close after this response.
  std::vector<HttpField> headers;
  /// The body; see HttpRequestBody.
  HttpRequestBody body;
  /// Follow 301, 302, 303, 307 and 308 responses that carry a Location (browser rules: 303
  /// turns any method but HEAD into GET without body; 301 and 302 turn POST into GET without
  /// body; 307 and 308 keep the method and body). A redirect that leaves the origin (scheme,
  /// host, port) drops Authorization, Cookie and Proxy-Authorization. False: the 3xx response
  /// is returned as is.
  bool follow_redirects = true;
  /// The most redirects followed for this request; one more fails with HttpClientError.
  int max_redirects = 10;
};

/// The settings of an HttpClient, fixed when it is made.
struct HttpClientOptions {
  /// The most connections open at once to one (scheme, host, port), in use or idle. A request
  /// that finds them all in use waits, first come first served. Must be > 0.
  std::size_t max_connections_per_host = 8;
  /// How long an idle pooled connection is kept before it is closed; std::nullopt: until the
  /// server closes it or close(). Must be > 0.
  std::optional<Duration> idle_timeout = std::chrono::seconds(15);
  /// The most connecting may take: name resolution, TCP connect and, for https, the TLS
  /// handshake (ConnectOptions::timeout). std::nullopt: no limit of its own.
  std::optional<Duration> connect_timeout = std::chrono::seconds(30);
  /// The most a request may take from the call to request() to the end of its body: waiting
  /// for a connection, connecting, sending, every redirect, and reading the body (text(),
  /// body(), read_chunk()). Expiry throws TimeoutError and discards the connection.
  /// std::nullopt: no limit.
  std::optional<Duration> total_timeout = std::chrono::minutes(5);
  /// The TLS settings of https connections: by default SslContext::create_default_context()
  /// (the system's CA store, certificate and host name verified), made at the first https
  /// request. The server name is sent in SNI (except an IP address) and checked against the
  /// certificate.
  std::optional<SslContext> ssl_context;
  /// The largest response head accepted (status line and header fields), per response.
  std::size_t max_header_bytes = 64 * 1024;
  /// Received body bytes not yet read by the caller beyond which the connection stops reading
  /// (Transport::pause_reading()) until reads bring them back to it: the bound on what a
  /// streamed response buffers. Must be > 0.
  std::size_t read_buffer_limit = 256 * 1024;
  /// The largest body text() and body() collect; a longer one fails with HttpClientError (read
  /// it with read_chunk() instead). std::nullopt: no limit.
  std::optional<std::uint64_t> max_body_bytes = std::uint64_t{64} << 20;
  /// The User-Agent header sent unless a request gives one; empty: none.
  std::string user_agent = "strata-http/0.1";
};

/// An HTTP exchange failed in a way the server caused or the client refused: a malformed
/// response, a server that closed the connection (end of file) in the middle of a response
/// (e.g. before Content-Length bytes), too many redirects, a redirect that cannot be followed,
/// a body over max_body_bytes. (A connection that ends with an error, such as a reset, is a
/// std::system_error carrying its error code instead.)
/// what() names the method and URL first: "GET http://h/x: the server closed the connection
/// after 10 of 100 body bytes (Content-Length: 100)".
class HttpClientError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// ---- HttpClientResponse -------------------------------------------------------------------

/// A response whose head has arrived; its body is read from it (aiohttp's ClientResponse).
///
/// The body is read once, either whole (text(), body()) or in chunks (read_chunk()). While
/// the body has not been received completely the response holds its connection; once it has,
/// the connection goes back to its pool (or is closed, when the server did not keep it alive)
/// even before the caller reads the buffered bytes. Destroying or close()-ing a response whose
/// body has not been received completely closes its connection.
///
/// Flow control: when more than HttpClientOptions::read_buffer_limit received bytes wait to be
/// read, the connection stops reading from the socket, and TCP's flow control slows the
/// server, until reads bring them below the limit.
///
/// @par Thread safety  Loop thread only.
/// @par Lifetime  Move-only. It may outlive its HttpClient (it keeps what it needs), not its
/// loop. A read in progress keeps the response's state alive even if the response object is
/// moved or destroyed meanwhile.
class HttpClientResponse {
 public:
  HttpClientResponse() = default;
  /// Takes over the other response; that one is no longer valid().
  HttpClientResponse(HttpClientResponse&&) noexcept;
  /// Lets go of this response as the destructor does, then takes over the other one.
  HttpClientResponse& operator=(HttpClientResponse&&) noexcept;
  HttpClientResponse(const HttpClientResponse&) = delete;
  HttpClientResponse& operator=(const HttpClientResponse&) = delete;
  /// Closes the connection if the body was not received completely (see close()).
  ~HttpClientResponse();

  /// Whether this response holds one (a default-constructed or moved-from one does not; the
  /// accessors below require one).
  bool valid() const noexcept { return static_cast<bool>(state_); }

  /// The status code: 200, 404, ...
  int status() const noexcept;
  /// The reason phrase, possibly empty ("OK").
  std::string_view reason() const noexcept;
  /// The HTTP version of the response: 1 and 0 or 1.
  int version_major() const noexcept;
  /// The minor HTTP version: 0 or 1.
  int version_minor() const noexcept;
  /// The header fields, in order, duplicates kept: views into storage this response owns,
  /// valid while this response (or one it was moved into) exists.
  const HttpHeaders& headers() const noexcept;
  /// The Content-Length, when the body is framed by one (also for HEAD and 304, where no body
  /// follows).
  std::optional<std::uint64_t> content_length() const noexcept;
  /// Whether the body is chunked.
  bool is_chunked() const noexcept;

  /// The URL this response came from: the last one, after redirects.
  const std::string& url() const noexcept;
  /// The method of the last request (after redirects that turned POST into GET).
  const std::string& method() const noexcept;
  /// The URLs redirected from, in order; empty when no redirect was followed.
  const std::vector<std::string>& history() const noexcept;

  /// The next bytes of the body (decoded from the chunked coding): every byte received and not
  /// read yet, waiting for some when there are none; an empty string at the end of the body
  /// (and on every call after it). How the body is cut into reads depends on how it arrived.
  ///
  /// @throws HttpClientError  the server closed the connection before the body ended, or the
  /// body was malformed (what() names the URL and the reason); every later read throws it too.
  /// @throws std::system_error  the connection was lost (e.g. reset) before the body ended.
  /// @throws TimeoutError  HttpClientOptions::total_timeout passed; the connection is closed.
  /// @throws InvalidStateError  another read of this response is in progress.
  /// @par Cancellation  Cancel-safe: a cancelled read takes nothing; the bytes stay for the
  /// next read, also those that arrived in the loop iteration of the cancel. The connection
  /// and the total_timeout deadline are unchanged.
  Coro<std::string> read_chunk();

  /// The rest of the body, as bytes in a string (no charset decoding).
  /// @throws HttpClientError, TimeoutError, InvalidStateError  as read_chunk(); also
  /// HttpClientError when it grows over HttpClientOptions::max_body_bytes.
  /// @par Cancellation  Not cancel-safe: the bytes collected so far are lost (a later read
  /// goes on after them, so the body is cut); the response and its connection stay as they
  /// were. Cancel only to give up on the body, then close() the response.
  Coro<std::string> text();
  /// The rest of the body, as bytes; as text().
  /// @par Cancellation  As text(): not cancel-safe, the bytes collected so far are lost.
  Coro<std::vector<std::byte>> body();

  /// Whether the whole body has been received and read (read_chunk() would return empty).
  bool at_eof() const noexcept;
  /// Body bytes received and not read yet.
  std::size_t buffered_bytes() const noexcept;

  /// Gives up the rest of the body: the connection goes back to its pool if the body was
  /// received completely, else it is closed. Later reads return empty. Idempotent.
  void close() noexcept;

  /// @cond INTERNAL
  explicit HttpClientResponse(std::shared_ptr<detail::HttpExchange> state) noexcept;
  /// @endcond

 private:
  std::shared_ptr<detail::HttpExchange> state_;
};

// ---- HttpClient ---------------------------------------------------------------------------

/// An HTTP/1.1 client with a keep-alive connection pool per (scheme, host, port)
/// (aiohttp.ClientSession): one per loop, used from its thread.
///
/// Each request takes a pooled idle connection to its origin, or opens one, within
/// HttpClientOptions::max_connections_per_host; beyond it, requests wait in FIFO order. One
/// request runs on a connection at a time (no pipelining). After a complete response the
/// connection returns to the pool unless the server closed it or said so (`Connection: close`,
/// HTTP/1.0 without keep-alive, a body delimited by closing); an idle connection is closed
/// after idle_timeout, or as soon as the server closes it or sends anything unasked.
///
/// A pooled connection that the server closed just as it was reused (the request went out,
/// and the connection ended without a byte of response) is detected, and the request is sent
/// again once on a new connection when the method is idempotent (GET, HEAD, OPTIONS, TRACE,
/// PUT, DELETE) and its body can be sent again; other requests fail with HttpClientError (or
/// std::system_error, when the connection was reset).
///
/// What the server sees: `METHOD target HTTP/1.1`, Host, User-Agent (unless empty or given),
/// Content-Length or `Transfer-Encoding: chunked` for a body, then the caller's fields.
/// Interim 1xx responses are skipped; 101 is an error.
///
/// @par GCC before 13  Do not write an HttpRequestOptions (or any aggregate) as a braced
/// temporary inside a co_await expression (`co_await client.get(url, HttpRequestOptions{...})`):
/// GCC 12 copies such temporaries into the coroutine frame bit by bit, and their strings then
/// free memory they do not own. Build the options in a variable first. This is why request(),
/// get() and post() are overloaded rather than given a default `options = {}`, which GCC 12
/// miscompiles the same way.
/// @par Thread safety  Loop thread only; the first request binds the client to the running
/// loop, and a request from another loop throws InvalidStateError.
/// @par Lifetime  Destroying the client close()s it. Requests in progress and responses keep
/// what they need and may outlive it; their connections are closed, not pooled, once done.
class HttpClient {
 public:
  /// A client with default HttpClientOptions; opens nothing until the first request.
  HttpClient();
  /// A client with @p options; opens nothing until the first request.
  /// @throws std::invalid_argument  max_connections_per_host, read_buffer_limit or
  /// max_header_bytes is 0, or a timeout is not positive.
  explicit HttpClient(HttpClientOptions options);
  ~HttpClient();
  HttpClient(const HttpClient&) = delete;
  HttpClient& operator=(const HttpClient&) = delete;

  /// Sends a request and returns the response once its head has arrived (after following
  /// redirects, unless options.follow_redirects is false); read the body from it.
  ///
  /// The URL and the request are checked here, before anything is sent; the rest happens
  /// when the returned Coro is awaited.
  ///
  /// @param method  the method token, as sent ("GET", "POST", ...).
  /// @param url  an absolute http:// or https:// URL (see HttpUrl::parse()).
  /// @param options  the header fields, body and redirect rules of this request.
  /// @throws std::invalid_argument  at the call: a bad URL (HttpUrl::parse()), an empty or
  /// malformed method, a header field with a malformed name or a CR, LF or NUL in its value,
  /// a Content-Length or Transfer-Encoding field, or max_redirects < 0.
  /// @throws InvalidStateError  at the call: the client is closed.
  ///
  /// When awaited:
  /// @throws std::system_error  resolving or connecting failed ("connect 127.0.0.1:1:
  /// Connection refused"), or the connection was lost before the response head.
  /// @throws SslError, SslCertVerificationError  the TLS handshake failed (e.g. the certificate
  /// does not verify against the CA store or the host name).
  /// @throws HttpClientError  a malformed response, the connection closed before a complete
  /// head, too many redirects ("... more than 10 redirects (HttpRequestOptions::max_redirects)"),
  /// a Location that is not a valid http(s) URL, a 307/308 redirect of a streamed body.
  /// @throws TimeoutError  connect_timeout or total_timeout passed; what() says which. The
  /// connection is closed, not pooled.
  /// @throws InvalidStateError  the client is bound to another loop (see Thread safety).
  /// @throws  what the body's generator or producer throws.
  /// @par Cancellation  Cancel-safe for the client, not for the exchange: the connection in
  /// use (if any) is closed, not pooled, since the server may be halfway through this
  /// request; the pool slot is given back, so waiting requests go on.
  Coro<HttpClientResponse> request(std::string method, std::string url, HttpRequestOptions options);
  /// request() with default HttpRequestOptions.
  /// @par Cancellation  As request().
  Coro<HttpClientResponse> request(std::string method, std::string url);

  /// request("GET", url, options).
  /// @par Cancellation  As request().
  Coro<HttpClientResponse> get(std::string url, HttpRequestOptions options);
  /// request("GET", url).
  /// @par Cancellation  As request().
  Coro<HttpClientResponse> get(std::string url);

  /// request("POST", url, options) with @p body as the body and, unless @p content_type is
  /// empty, `Content-Type: content_type` (replacing one in options.headers).
  /// @par Cancellation  As request().
  Coro<HttpClientResponse> post(std::string url, HttpRequestBody body, std::string content_type,
                                HttpRequestOptions options);
  /// post() with default HttpRequestOptions.
  /// @par Cancellation  As request().
  Coro<HttpClientResponse> post(std::string url, HttpRequestBody body, std::string content_type);

  /// Closes the idle pooled connections and refuses new requests (InvalidStateError).
  /// Connections in use are closed, not pooled, when their response is done. Idempotent.
  void close() noexcept;
  /// Whether close() was called.
  bool is_closed() const noexcept;
  /// Waits until every connection this client opened has ended (call close() first, and
  /// finish or drop the responses still reading, or this waits for them).
  /// @par Cancellation  Cancel-safe: only the wait is undone.
  Coro<void> wait_closed();

  /// Idle connections in the pools, over every host.
  std::size_t idle_connections() const noexcept;
  /// Connections open now (in use, idle or being closed), over every host.
  std::size_t open_connections() const noexcept;

  /// The options given at construction.
  const HttpClientOptions& options() const noexcept;

 private:
  std::shared_ptr<detail::HttpClientState> state_;
};

}  // namespace strata
