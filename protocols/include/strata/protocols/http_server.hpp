#pragma once
/// @file
/// The HTTP/1.1 server: HttpServer makes the protocol of each connection (HttpConnection, on
/// HttpRequestParser), an HttpRouter maps method and path to coroutine handlers, and a handler
/// answers an HttpServerRequest with an HttpResponse.
///
/// ```
/// strata::HttpRouter router;
/// router.get("/plaintext", [](strata::HttpServerRequest&) -> strata::Coro<strata::HttpResponse> {
///   co_return strata::HttpResponse::text("Hello, World!");
/// });
/// strata::HttpServer http(std::move(router));
/// auto server = co_await strata::create_server(http.protocol_factory(), "127.0.0.1", 8080);
/// ```

#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <ctime>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "strata/core/clock.hpp"
#include "strata/core/coro.hpp"
#include "strata/protocols/http_date.hpp"
#include "strata/protocols/http_parser.hpp"
#include "strata/transports/protocol.hpp"

namespace strata {

class Transport;
class HttpConnection;

/// The reason phrase of a status code ("OK", "Not Found"), or "Unknown" for one without.
std::string_view http_reason_phrase(int status) noexcept;

/// A regular file to send as a response body, by sendfile(2) where the transport allows it.
/// Owns its descriptor (closed when the last copy is destroyed).
class HttpFileBody {
 public:
  HttpFileBody() = default;
  /// Takes ownership of @p fd, an open regular file; sends @p length bytes from @p offset.
  HttpFileBody(int fd, std::uint64_t offset, std::uint64_t length);

  /// The file descriptor, still owned by the body; -1 when empty.
  int fd() const noexcept { return fd_ ? fd_->fd : -1; }
  /// Where in the file the body starts.
  std::uint64_t offset() const noexcept { return offset_; }
  /// How many bytes the body has.
  std::uint64_t length() const noexcept { return length_; }
  /// Whether it holds a file (false when default-constructed).
  explicit operator bool() const noexcept { return fd_ != nullptr; }

 private:
  struct Descriptor {
    explicit Descriptor(int d) noexcept : fd(d) {}
    Descriptor(const Descriptor&) = delete;
    Descriptor& operator=(const Descriptor&) = delete;
    ~Descriptor();
    int fd;
  };
  std::shared_ptr<Descriptor> fd_;
  std::uint64_t offset_ = 0;
  std::uint64_t length_ = 0;
};

/// Writes a streamed response body in the chunked coding (HttpResponse::stream()).
class HttpBodyWriter {
 public:
  /// Sends @p data as one chunk (an empty @p data sends nothing), then waits while the
  /// connection's writing is paused (its buffer is above the high-water mark: the client
  /// reads slowly), so that a stream never grows memory.
  /// @throws std::system_error  the connection was lost (std::errc::connection_aborted).
  /// @par Cancellation  Cancel-safe: the chunk is handed to the connection before the wait, so
  /// a write() cancelled while it waits has still queued @p data; only the wait is undone. Do
  /// not write it again. (A stream that then ends with the CancelledError aborts the
  /// connection, as any exception does, and what was queued goes with it.)
  Coro<void> write(std::string data);

  /// @cond INTERNAL
  struct Channel;
  explicit HttpBodyWriter(std::shared_ptr<Channel> channel) noexcept
      : channel_(std::move(channel)) {}
  /// @endcond

 private:
  std::shared_ptr<Channel> channel_;
};

/// What a handler answers: a status, header fields and a body, which is either bytes in
/// memory, a file, or a stream produced by a coroutine.
///
/// The server adds `Date`, `Server`, `Content-Length` (or `Transfer-Encoding: chunked` for a
/// stream) and `Connection` itself; a handler must not set them. A response to HEAD, and any
/// 1xx, 204 or 304, is sent without its body (HEAD keeps the body's Content-Length).
struct HttpResponse {
  int status = 200;  ///< the status code; the reason phrase is http_reason_phrase(status)
  /// The Content-Type; empty: none.
  std::string content_type;
  /// Further fields, in order (Location, Allow, Last-Modified, Cache-Control...).
  std::vector<HttpField> headers;
  /// The body, when neither file nor stream is set.
  std::string body;
  /// A file body: sent with sendfile(2) on a plain socket, with Content-Length its length.
  HttpFileBody file;
  /// A streamed body: called once the response is next to be sent, writes chunks through
  /// the HttpBodyWriter and returns at the end. An exception after the head was sent aborts
  /// the connection (the client sees a truncated chunked body, as it must). A plain
  /// handler's request is gone by then (see HttpServerRequest): capture copies of what the
  /// stream needs of it, not the request or its views.
  std::function<Coro<void>(HttpBodyWriter&)> stream;

  // (Defined here, so that a handler's call is inlined: the type is set without a call.)
  /// 200 (or @p status) with `text/plain` and @p body.
  static HttpResponse text(std::string body, int status = 200) {
    return {.status = status, .content_type = "text/plain", .body = std::move(body)};
  }
  /// 200 (or @p status) with `application/json` and @p body.
  static HttpResponse json(std::string body, int status = 200) {
    return {.status = status, .content_type = "application/json", .body = std::move(body)};
  }
  /// 200 (or @p status) with `text/html; charset=utf-8` and @p body.
  static HttpResponse html(std::string body, int status = 200) {
    return {.status = status, .content_type = "text/html; charset=utf-8", .body = std::move(body)};
  }
  /// @p status with a short text/plain body: the reason phrase and @p detail, if any.
  static HttpResponse error(int status, std::string_view detail = {});

  /// Appends the field @p name: @p value.
  HttpResponse& add_header(std::string name, std::string value);
};

/// A request as a handler sees it: its head and its whole body, owned by the connection.
///
/// @par Lifetime  Valid until the handler's coroutine has finished (the connection keeps it
/// while a handler runs even if the client disconnects); for a plain handler, only during
/// the call (a task it starts must copy what it needs). The views it hands out live as long.
class HttpServerRequest {
 public:
  HttpServerRequest() = default;
  /// A request made by hand, to test a handler without a connection: @p target as on the
  /// wire ("/path?query"), version 1.1, keep-alive. transport() must not be called on it.
  HttpServerRequest(std::string_view method, std::string target,
                    const std::vector<HttpField>& headers = {},
                    std::string body = {});
  HttpServerRequest(const HttpServerRequest&) = delete;
  HttpServerRequest& operator=(const HttpServerRequest&) = delete;

  /// The method, as received (e.g. "GET").
  std::string_view method() const noexcept { return method_; }
  /// The request target (not percent-decoded) in origin-form, "/path?query": as received,
  /// except that an absolute-form target ("http://host/path?query", RFC 9112 §3.2.2) loses its
  /// scheme and authority.
  std::string_view target() const noexcept { return target_; }
  /// The target up to its first '?' (not percent-decoded).
  std::string_view path() const noexcept { return {target_.data(), query_at_}; }
  /// The target after its first '?'; empty when there is none.
  std::string_view query() const noexcept {
    return query_at_ < target_.size() ? target_.substr(query_at_ + 1) : std::string_view{};
  }
  /// The major HTTP version: 1.
  int version_major() const noexcept { return version_major_; }
  /// The minor HTTP version: 0 or 1.
  int version_minor() const noexcept { return version_minor_; }
  /// The header fields, in order, duplicates kept.
  const HttpHeaders& headers() const noexcept { return headers_; }
  /// The trailer fields of a chunked body; empty otherwise.
  const HttpHeaders& trailers() const noexcept { return trailers_; }
  /// The body, decoded from the chunked coding if it was used.
  std::string_view body() const noexcept { return body_; }
  /// Whether the connection stays open after the response (HttpRequest::keep_alive()).
  bool keep_alive() const noexcept { return keep_alive_; }
  /// The route prefix that matched (for a prefix route), else the whole path.
  std::string_view route() const noexcept { return route_; }
  /// The connection's transport (for get_extra_info: peername, sockname, ssl_object...).
  Transport& transport() const noexcept { return *transport_; }

 private:
  friend class HttpConnection;
  /// Takes the head of @p parser's current request (swapped, not copied: see
  /// HttpRequestParser::swap_head()).
  void take_head(HttpRequestParser& parser, Transport& transport);
  /// Views the head of @p request where it is (in its parser's storage): valid until the
  /// parser resumes. For a request answered before that. Body, trailers and route are left
  /// as they are (take_head() empties them).
  void view_head(const HttpRequest& request, Transport& transport);
  void assign_trailers(const HttpHeaders& trailers);

  std::string_view method_;
  std::string method_storage_;  // a hand-made request's method
  std::string_view target_;     // into head_.bytes, or into target_storage_
  std::string target_storage_;  // a rewritten absolute-form target, or a hand-made one
  std::size_t query_at_ = 0;  // the first '?' of target_, or its size: never past it
  int version_major_ = 1;
  int version_minor_ = 1;
  bool keep_alive_ = false;
  HttpHeadStorage head_;      // the target's and the headers' bytes, and the header views
  HttpHeadStorage trailers_storage_;
  HttpHeaders headers_;
  HttpHeaders trailers_;
  std::string body_;
  std::string_view route_;
  Transport* transport_ = nullptr;
};

/// A request handler: a coroutine so that it can await I/O. Called on the loop's thread;
/// each call runs as a task of its own.
using HttpHandler = std::function<Coro<HttpResponse>(HttpServerRequest&)>;
/// A plain request handler: a function that returns its response without awaiting anything
/// (a fixed page, a computation on the request). Called on the loop's thread, inside the read
/// callback, with no task: it costs a call where a coroutine handler costs a task. It must
/// not block.
using HttpPlainHandler = std::function<HttpResponse(HttpServerRequest&)>;

/// Maps method and path to handlers: exact paths first, then the longest matching prefix.
///
/// What it answers when nothing matches: 404 for a path no route has; 405 with `Allow` (the
/// methods the path has, HEAD included wherever GET is) for a path with other methods; 501
/// for a method that no route of the router has (GET and HEAD are always implemented). HEAD
/// is served by the GET handler when the route has no HEAD handler of its own; the server
/// then sends the head only.
class HttpRouter {
 public:
  /// Adds a handler for @p method (upper case, e.g. "GET") on the exact @p path.
  /// @throws std::invalid_argument  @p path does not start with '/', or the route exists.
  HttpRouter& route(std::string_view method, std::string path, HttpHandler handler);
  /// route() with a plain handler.
  HttpRouter& route(std::string_view method, std::string path, HttpPlainHandler handler);
  /// Adds a handler for @p method on every path that starts with @p prefix ("/static/").
  /// @throws std::invalid_argument  as route().
  HttpRouter& route_prefix(std::string_view method, std::string prefix, HttpHandler handler);
  /// route_prefix() with a plain handler.
  HttpRouter& route_prefix(std::string_view method, std::string prefix,
                           HttpPlainHandler handler);
  /// A null handler would be ambiguous between the two kinds: refused when compiling.
  HttpRouter& route(std::string_view, std::string, std::nullptr_t) = delete;
  HttpRouter& route_prefix(std::string_view, std::string, std::nullptr_t) = delete;
  HttpRouter& get(std::string, std::nullptr_t) = delete;
  HttpRouter& post(std::string, std::nullptr_t) = delete;
  /// route("GET", @p path, @p handler); the route serves HEAD too.
  HttpRouter& get(std::string path, HttpHandler handler) {
    return route("GET", std::move(path), std::move(handler));
  }
  /// get() with a plain handler.
  HttpRouter& get(std::string path, HttpPlainHandler handler) {
    return route("GET", std::move(path), std::move(handler));
  }
  /// route("POST", @p path, @p handler).
  HttpRouter& post(std::string path, HttpHandler handler) {
    return route("POST", std::move(path), std::move(handler));
  }
  /// post() with a plain handler.
  HttpRouter& post(std::string path, HttpPlainHandler handler) {
    return route("POST", std::move(path), std::move(handler));
  }

  /// What resolve() found: a coroutine handler, a plain handler, or neither and a status.
  struct Match {
    const HttpHandler* handler = nullptr;       ///< a coroutine handler, or null
    const HttpPlainHandler* plain = nullptr;    ///< a plain handler, or null
    int status = 0;                             ///< 404, 405 or 501 when both are null
    std::string_view allow;                     ///< for 405: the Allow value
    std::string_view route;                     ///< the matched path or prefix
  };
  /// The handler for @p method on @p path (the path without its query, not decoded).
  Match resolve(std::string_view method, std::string_view path) const;

 private:
  /// One method's handler on a route: one of the two is set.
  struct MethodHandler {
    std::string method;
    HttpHandler handler;
    HttpPlainHandler plain;
  };
  struct Route {
    std::string path;
    bool prefix = false;
    std::vector<MethodHandler> methods;
    std::string allow;
  };
  void add(std::string_view method, std::string path, bool prefix, MethodHandler handler);
  static MethodHandler* find_method(Route& route, std::string_view method);
  static void set_match(Match& match, const MethodHandler& entry) noexcept {
    match.handler = entry.handler ? &entry.handler : nullptr;
    match.plain = entry.plain ? &entry.plain : nullptr;
  }
  /// Rebuilds by_length_ after exact_ changed.
  void index_exact();
  /// The exact route of @p path, or null.
  inline const Route* find_exact(std::string_view path) const noexcept;  // (in the .cpp)
  /// resolve() when @p route (null: none) has no handler of @p method: HEAD by GET, or the
  /// status. Out of the common path.
  [[gnu::cold]] Match unmatched(std::string_view method, const Route* route) const;

  std::vector<Route> exact_;     // sorted by path length, then bytes
  std::vector<std::uint32_t> by_length_;  // exact_ index of the first path >= n bytes long
  static constexpr std::size_t max_indexed_length = 256;  // longer paths: compared in turn
  std::vector<Route> prefixes_;  // longest first
  std::vector<std::string> methods_;  // every method any route has
};

/// How an HttpServer's connections behave. The defaults are the example server's.
struct HttpServerSettings {
  /// Header bytes (431), body bytes (413), chunk extensions.
  HttpParserLimits limits;
  /// A request head must arrive within this from its first byte (else 408 and close).
  Duration header_timeout = std::chrono::seconds(10);
  /// An idle connection (between requests, nothing in flight) is closed after this.
  Duration keepalive_timeout = std::chrono::seconds(5);
  /// Requests of one connection whose handlers run at once (pipelining); further pipelined
  /// requests wait in the socket.
  std::size_t max_pipelined = 16;
  /// The `Server` header's value; empty: none.
  std::string server_name = "strata";
};

/// An HTTP/1.1 server on one loop: the factory of its connections' protocols, their registry
/// for graceful shutdown, and the router they share.
///
/// Each connection parses requests with HttpRequestParser (strict RFC 9112, the limits of
/// the settings), runs each request's handler as a task started eagerly (a handler that
/// answers without suspending costs no loop iteration), and answers pipelined requests
/// strictly in order, with one write for all the responses ready at once. A handler that
/// throws gets a 500 and the connection goes on. Parse errors get their status (400, 413,
/// 414, 431, 501, 505) and a close once the earlier responses are sent. Keep-alive follows
/// HTTP/1.0 and 1.1 rules; `Expect: 100-continue` is answered with `100 Continue`.
///
/// @par Thread safety  Loop thread only; one HttpServer per loop (for N loops, N servers
/// with copies of one router). It must outlive its connections: call shutdown() and wait
/// for the Server's wait_closed() before destroying it.
class HttpServer {
 public:
  /// A server that answers with @p router under @p settings; both are kept as given.
  /// @throws std::invalid_argument  @p settings.max_pipelined is 0.
  explicit HttpServer(HttpRouter router, HttpServerSettings settings = {});
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  /// A ProtocolFactory for create_server() (or create_unix_server(), or a TLS server).
  auto protocol_factory() {
    return [this] { return make_connection(); };
  }
  /// The protocol of one new connection (an HttpConnection).
  std::unique_ptr<Protocol> make_connection();

  /// Graceful shutdown: idle connections close now; a connection with a request in progress
  /// answers it (with `Connection: close`) and then closes. Stop the listening Server first.
  void shutdown();
  /// Whether shutdown() was called.
  bool is_shutting_down() const noexcept { return shutting_down_; }
  /// Connections open now.
  std::size_t connection_count() const noexcept { return connections_.size(); }

  /// The router given at construction.
  const HttpRouter& router() const noexcept { return router_; }
  /// The settings given at construction.
  const HttpServerSettings& settings() const noexcept { return settings_; }

 private:
  friend class HttpConnection;
  /// The Date of responses made now (as http_date_now()), formatted once a second: then
  /// ok_head_ is rebuilt and every cached head goes stale.
  std::string_view date_now() {
    const std::time_t now = std::time(nullptr);
    if (now != date_second_ || ok_head_.empty()) [[unlikely]] {  // (empty: time() failed, -1)
      new_date(now);
    }
    return {date_.data(), date_.size()};
  }
  /// Formats the Date of @p now and rebuilds ok_head_.
  void new_date(std::time_t now);
  /// A whole head, cached: that of a 200 HTTP/1.1 keep-alive response whose only fields
  /// besides Server and Date are its Content-Type and Content-Length (most responses).
  struct CachedHead {
    std::string content_type;
    std::uint64_t length = 0;
    std::uint64_t generation = 0;  // ok_head_generation_ when made; 0: empty
    std::string head;
  };
  /// The cached head for @p content_type and @p length, or null. Call date_now() first: a
  /// head made under another date does not count.
  inline const std::string* cached_head(std::string_view content_type,
                                        std::uint64_t length) const noexcept;  // (in the .cpp)
  /// cached_head() past the entry found last.
  const std::string* find_head(std::string_view content_type, std::uint64_t length) const noexcept;
  /// Keeps @p head as the head for @p content_type and @p length (the oldest entry goes).
  void cache_head(std::string_view content_type, std::uint64_t length, std::string_view head);

  HttpRouter router_;
  HttpServerSettings settings_;
  std::vector<HttpConnection*> connections_;
  std::time_t date_second_ = -1;  // when date_ was formatted
  std::array<char, http_date_length> date_{};
  /// "HTTP/1.1 200 OK", the Server and the Date field lines: the start of most response heads.
  std::string ok_head_;
  std::uint64_t ok_head_generation_ = 0;  // counts the rebuilds of ok_head_
  std::array<CachedHead, 4> heads_;       // a few, for servers that alternate between types
  std::size_t next_head_ = 0;             // the entry cache_head() replaces next
  mutable std::size_t last_head_ = 0;     // the entry cached_head() found last
  bool shutting_down_ = false;
};

}  // namespace strata
