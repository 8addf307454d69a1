// The HTTP/1.1 server: HttpConnection is the Protocol of one connection.
//
// The data path of a request without a body to a plain handler, with nothing before it in
// flight (the direct lane, the most common case):
//   data_received -> HttpRequestParser::feed -> headers_received: the router finds a plain
//   handler; direct_request_ views the head where the parser keeps it -> request_received
//   -> the parser pauses -> answer_direct: the handler's response is serialised into out_
//   (most heads are copied whole from the server's cache) -> resume -> the next pipelined
//   request, if any -> at the end of data_received, one write of out_ for every response.
// Every other request takes a Slot in queue_ (below):
//   headers_received (take a Slot; swap_head() hands it the head's buffers, nothing is
//   copied) -> body_received* -> request_received -> dispatch: the handler, a coroutine
//   started with create_eager_task (most finish inside the call) or a plain one -> the
//   response is serialised into out_ when its turn comes.
// Nothing is allocated per request once a connection has served one: slots, their strings,
// the output buffer and the parser keep their capacity; the handler's coroutine frame and its
// task come from the loop thread's small-object pools.
//
// Pipelining: every parsed request gets a Slot in queue_, in arrival order. A slot whose
// handler suspended stays at its place; responses after it wait (done, serialised later) so
// that the order on the wire is the order of the requests. At most max_pipelined slots are
// in queue_; past that, or while the transport is paused for writing, the unparsed bytes wait
// in input_ and reading is paused, so that a client that pipelines without reading cannot make
// the server grow memory.
//
// Timeouts cost no timer operation per request: one timer per connection, re-armed only when
// it fires, compares the loop's time with last_activity_ (keep-alive idle) or head_started_
// (a request head that does not finish: 408).
#include "strata/protocols/http_server.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <charconv>
#include <cstdint>
#include <cstring>
#include <exception>
#include <memory>
#include <optional>
#include <span>
#include <string_view>
#include <vector>
#include <stdexcept>
#include <system_error>
#include <utility>

#include "strata/core/errors.hpp"
#include "strata/core/event_loop.hpp"
#include "strata/core/future.hpp"
#include "strata/core/handle.hpp"
#include "strata/core/log.hpp"
#include "strata/core/task.hpp"
#include "strata/protocols/http_date.hpp"
#include "strata/transports/sendfile.hpp"
#include "strata/transports/transport.hpp"

namespace strata {

using namespace std::string_view_literals;

// ---- Small pieces -------------------------------------------------------------------------------

std::string_view http_reason_phrase(int status) noexcept {
  switch (status) {
    case 100: return "Continue";
    case 101: return "Switching Protocols";
    case 200: return "OK";
    case 201: return "Created";
    case 202: return "Accepted";
    case 204: return "No Content";
    case 206: return "Partial Content";
    case 301: return "Moved Permanently";
    case 302: return "Found";
    case 303: return "See Other";
    case 304: return "Not Modified";
    case 307: return "Temporary Redirect";
    case 308: return "Permanent Redirect";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 410: return "Gone";
    case 411: return "Length Required";
    case 412: return "Precondition Failed";
    case 413: return "Content Too Large";
    case 414: return "URI Too Long";
    case 415: return "Unsupported Media Type";
    case 416: return "Range Not Satisfiable";
    case 417: return "Expectation Failed";
    case 421: return "Misdirected Request";
    case 422: return "Unprocessable Content";
    case 426: return "Upgrade Required";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    case 505: return "HTTP Version Not Supported";
    default: return "Unknown";
  }
}

HttpFileBody::Descriptor::~Descriptor() {
  if (fd >= 0) ::close(fd);
}

HttpFileBody::HttpFileBody(int fd, std::uint64_t offset, std::uint64_t length)
    : offset_(offset), length_(length) {
  try {
    fd_ = std::make_shared<Descriptor>(fd);
  } catch (...) {
    ::close(fd);  // owned from the call on, even when this throws
    throw;
  }
}

HttpResponse HttpResponse::error(int status, std::string_view detail) {
  std::string body(http_reason_phrase(status));
  if (!detail.empty()) {
    body += ": ";
    body += detail;
  }
  body += '\n';
  return text(std::move(body), status);
}

HttpResponse& HttpResponse::add_header(std::string name, std::string value) {
  headers.push_back(HttpField{std::move(name), std::move(value)});
  return *this;
}

// ---- HttpServerRequest --------------------------------------------------------------------------

namespace {

/// Replaces @p storage's contents with copies of @p fields (HttpField or HttpHeader: a name
/// and a value each) and their views.
template <class Fields>
void fill_storage(const Fields& fields, HttpHeadStorage& storage) {
  storage.bytes.clear();
  storage.fields.clear();
  std::size_t size = 0;
  for (const auto& f : fields) size += f.name.size() + f.value.size();
  storage.bytes.reserve(size);  // the views below stay put
  for (const auto& f : fields) {
    const std::size_t at = storage.bytes.size();
    storage.bytes += f.name;
    storage.bytes += f.value;
    const std::string_view all(storage.bytes);
    storage.fields.push_back(
        HttpHeader{all.substr(at, f.name.size()), all.substr(at + f.name.size(), f.value.size())});
  }
}

}  // namespace

HttpServerRequest::HttpServerRequest(std::string_view method, std::string target,
                                     const std::vector<HttpField>& headers, std::string body)
    : method_storage_(method), target_storage_(std::move(target)), keep_alive_(true),
      body_(std::move(body)) {
  method_ = method_storage_;
  target_ = target_storage_;
  query_at_ = std::min(target_.find('?'), target_.size());
  fill_storage(headers, head_);
  headers_ = HttpHeaders(head_.fields);
}

namespace {

/// Where the path of an absolute-form request target (`http://host/path?q`, which RFC 9112
/// §3.2.2 says a server must accept) starts: after its scheme and authority; 0 for a target
/// of another form.
std::size_t absolute_form_path_at(std::string_view target) noexcept {
  if (target.empty() || (target.front() != 'h' && target.front() != 'H')) return 0;
  std::size_t skip = 0;
  if (target.size() >= 7 && http_iequals(target.substr(0, 7), "http://")) {
    skip = 7;
  } else if (target.size() >= 8 && http_iequals(target.substr(0, 8), "https://")) {
    skip = 8;
  } else {
    return 0;
  }
  return std::min(target.find_first_of("/?", skip), target.size());
}

}  // namespace

void HttpServerRequest::assign_trailers(const HttpHeaders& trailers) {
  fill_storage(trailers, trailers_storage_);
  trailers_ = HttpHeaders(trailers_storage_.fields);
}

void HttpServerRequest::take_head(HttpRequestParser& parser, Transport& transport) {
  parser.swap_head(head_);  // the request's views now point into head_
  view_head(parser.request(), transport);
  body_.clear();
  route_ = {};
  trailers_ = {};
}

void HttpServerRequest::view_head(const HttpRequest& request, Transport& transport) {
  method_ = request.method();  // static storage
  // An absolute-form target is served as its origin-form ("/path?q"); the Host header stays.
  const std::string_view t = request.target();
  const std::size_t path_at = absolute_form_path_at(t);
  if (path_at == 0) {
    target_ = t;
    query_at_ = request.path().size();
  } else {
    if (path_at == t.size() || t[path_at] == '?') {
      target_storage_.assign("/");
      target_storage_.append(t.substr(path_at));
    } else {
      target_storage_.assign(t.substr(path_at));
    }
    target_ = target_storage_;
    query_at_ = std::min(target_.find('?'), target_.size());
  }
  version_major_ = request.version_major();
  version_minor_ = request.version_minor();
  keep_alive_ = request.keep_alive();
  transport_ = &transport;
  headers_ = request.headers();
}

// ---- HttpRouter ---------------------------------------------------------------------------------

namespace {

void check_route_path(std::string_view path) {
  if (path.empty() || path.front() != '/') {
    throw std::invalid_argument("HttpRouter: a route path must start with '/', got '" +
                                std::string(path) + "'");
  }
}

/// The Allow value of a route's methods (each entry has a `method`).
template <class Methods>
std::string join_allow(const Methods& methods) {
  std::vector<std::string> names;
  names.reserve(methods.size() + 1);
  bool get = false;
  bool head = false;
  for (const auto& entry : methods) {
    const std::string& m = entry.method;
    names.push_back(m);
    get = get || m == "GET";
    head = head || m == "HEAD";
  }
  if (get && !head) names.emplace_back("HEAD");
  std::sort(names.begin(), names.end());
  std::string allow;
  for (const std::string& n : names) {
    if (!allow.empty()) allow += ", ";
    allow += n;
  }
  return allow;
}

}  // namespace

namespace {

/// The order of exact routes: by length, then by bytes, so that a lookup compares bytes only
/// with paths of its own length.
bool path_before(std::string_view a, std::string_view b) noexcept {
  return a.size() != b.size() ? a.size() < b.size() : a < b;
}

}  // namespace

HttpRouter::MethodHandler* HttpRouter::find_method(Route& route, std::string_view method) {
  for (auto& entry : route.methods) {
    if (entry.method == method) return &entry;
  }
  return nullptr;
}

void HttpRouter::add(std::string_view method, std::string path, bool prefix,
                     MethodHandler handler) {
  check_route_path(path);
  if (method.empty()) throw std::invalid_argument("HttpRouter: empty method");
  if (!handler.handler && !handler.plain) throw std::invalid_argument("HttpRouter: empty handler");
  std::vector<Route>& routes = prefix ? prefixes_ : exact_;
  auto it = std::find_if(routes.begin(), routes.end(), [&](const Route& r) { return r.path == path; });
  if (it == routes.end()) {
    Route route;
    route.path = path;
    route.prefix = prefix;
    routes.push_back(std::move(route));
    if (prefix) {
      std::stable_sort(routes.begin(), routes.end(), [](const Route& a, const Route& b) {
        return a.path.size() > b.path.size();
      });
    } else {
      std::sort(routes.begin(), routes.end(),
                [](const Route& a, const Route& b) { return path_before(a.path, b.path); });
      index_exact();
    }
    it = std::find_if(routes.begin(), routes.end(), [&](const Route& r) { return r.path == path; });
  }
  if (find_method(*it, method)) {
    throw std::invalid_argument("HttpRouter: " + std::string(method) + " " + path +
                                " has a handler already");
  }
  handler.method = std::string(method);
  it->methods.push_back(std::move(handler));
  it->allow = join_allow(it->methods);
  if (std::find(methods_.begin(), methods_.end(), method) == methods_.end()) {
    methods_.emplace_back(method);
  }
}

HttpRouter& HttpRouter::route(std::string_view method, std::string path, HttpHandler handler) {
  add(method, std::move(path), false, MethodHandler{{}, std::move(handler), {}});
  return *this;
}

HttpRouter& HttpRouter::route(std::string_view method, std::string path,
                              HttpPlainHandler handler) {
  add(method, std::move(path), false, MethodHandler{{}, {}, std::move(handler)});
  return *this;
}

HttpRouter& HttpRouter::route_prefix(std::string_view method, std::string prefix,
                                     HttpHandler handler) {
  add(method, std::move(prefix), true, MethodHandler{{}, std::move(handler), {}});
  return *this;
}

HttpRouter& HttpRouter::route_prefix(std::string_view method, std::string prefix,
                                     HttpPlainHandler handler) {
  add(method, std::move(prefix), true, MethodHandler{{}, {}, std::move(handler)});
  return *this;
}

void HttpRouter::index_exact() {
  // exact_ is sorted by length: by_length_[n] is the first route at least n bytes long, for
  // n up to max_indexed_length + 1 (a long route costs no more index than a short one).
  const std::size_t longest = exact_.empty() ? 0 : exact_.back().path.size();
  by_length_.assign(std::min(longest, max_indexed_length) + 2, 0);
  std::size_t i = 0;
  for (std::size_t n = 0; n < by_length_.size(); ++n) {
    while (i < exact_.size() && exact_[i].path.size() < n) ++i;
    by_length_[n] = static_cast<std::uint32_t>(i);
  }
}

namespace {

/// a == b, with a call to memcmp only past 16 bytes: a method, a short path or a content type
/// costs a few instructions instead of a call. From 4 to 16 bytes, two loads of each that
/// overlap in the middle cover every byte; below 4, the first, middle and last byte do.
[[gnu::always_inline]] inline bool same_bytes(std::string_view a, std::string_view b) noexcept {
  const std::size_t n = a.size();
  if (n != b.size()) return false;
  const auto load = [](const char* p, auto word) {
    std::memcpy(&word, p, sizeof word);
    return word;
  };
  if (n >= 8) {
    if (n > 16) return std::memcmp(a.data(), b.data(), n) == 0;
    const std::uint64_t w{};
    return (load(a.data(), w) ^ load(b.data(), w)) == 0 &&
           (load(a.data() + n - 8, w) ^ load(b.data() + n - 8, w)) == 0;
  }
  if (n >= 4) {
    const std::uint32_t w{};
    return (load(a.data(), w) ^ load(b.data(), w)) == 0 &&
           (load(a.data() + n - 4, w) ^ load(b.data() + n - 4, w)) == 0;
  }
  if (n == 0) return true;
  const char* p = a.data();
  const char* q = b.data();
  return p[0] == q[0] && p[n / 2] == q[n / 2] && p[n - 1] == q[n - 1];
}

}  // namespace

[[gnu::always_inline]] inline const HttpRouter::Route* HttpRouter::find_exact(
    std::string_view path) const noexcept {
  const std::size_t n = path.size();
  if (by_length_.empty()) return nullptr;
  if (n > max_indexed_length) {  // the long routes, past the index: compared one by one
    for (std::size_t i = by_length_.back(); i < exact_.size(); ++i) {
      if (same_bytes(exact_[i].path, path)) return &exact_[i];
    }
    return nullptr;
  }
  if (n + 1 >= by_length_.size()) return nullptr;  // longer than every exact route
  // The routes of the path's own length: usually one, compared with same_bytes().
  for (std::uint32_t i = by_length_[n]; i < by_length_[n + 1]; ++i) {
    if (same_bytes(exact_[i].path, path)) return &exact_[i];
  }
  return nullptr;
}

HttpRouter::Match HttpRouter::resolve(std::string_view method, std::string_view path) const {
  const Route* route = find_exact(path);
  if (route == nullptr) {
    for (const Route& r : prefixes_) {
      if (path.starts_with(r.path)) {
        route = &r;
        break;
      }
    }
  }
  if (route) {
    for (const MethodHandler& entry : route->methods) {  // the common case: found at once
      if (same_bytes(entry.method, method)) {
        Match match;
        set_match(match, entry);
        match.route = route->path;
        return match;
      }
    }
  }
  return unmatched(method, route);
}

HttpRouter::Match HttpRouter::unmatched(std::string_view method, const Route* route) const {
  Match match;
  const bool known_method = method == "GET" || method == "HEAD" ||
                            std::find(methods_.begin(), methods_.end(), method) != methods_.end();
  if (!known_method) {
    match.status = 501;
    return match;
  }
  if (!route) {
    match.status = 404;
    return match;
  }
  match.route = route->path;
  if (method == "HEAD") {
    for (const MethodHandler& entry : route->methods) {
      if (entry.method == "GET") {
        set_match(match, entry);
        return match;
      }
    }
  }
  match.status = 405;
  match.allow = route->allow;
  return match;
}

// ---- HttpConnection -----------------------------------------------------------------------------

/// What a streamed body's writer shares with its connection: the connection while it is
/// open, and the future a writer waits on while writing is paused.
struct HttpBodyWriter::Channel {
  HttpConnection* connection = nullptr;  // null once the connection is lost
  Future<void> resumed;                  // pending while writing is paused, when awaited
};

namespace {

/// A FIFO of pointers in a ring buffer that keeps its capacity: what std::deque would be
/// here, without std::deque's block allocation every 64 pushes and pops.
template <class T>
class Ring {
 public:
  bool empty() const noexcept { return size_ == 0; }
  std::size_t size() const noexcept { return size_; }
  T front() const noexcept { return items_[head_]; }
  void push_back(T item) {
    if (size_ == items_.size()) grow();
    items_[(head_ + size_) & (items_.size() - 1)] = item;
    ++size_;
  }
  void pop_front() noexcept {
    head_ = (head_ + 1) & (items_.size() - 1);
    --size_;
  }
  /// Calls @p fn for every item, oldest first.
  template <class F>
  void for_each(F&& fn) const {
    for (std::size_t i = 0; i < size_; ++i) fn(items_[(head_ + i) & (items_.size() - 1)]);
  }

 private:
  void grow() {
    std::vector<T> bigger(items_.empty() ? 8 : items_.size() * 2);
    for (std::size_t i = 0; i < size_; ++i) bigger[i] = items_[(head_ + i) & (items_.size() - 1)];
    items_.swap(bigger);
    head_ = 0;
  }
  std::vector<T> items_;  // a power of two in size
  std::size_t head_ = 0;
  std::size_t size_ = 0;
};

/// Copies @p n bytes; up to 16 without a call (two loads and stores that may overlap).
[[gnu::always_inline]] inline void copy_bytes(char* to, const char* from, std::size_t n) noexcept {
  const auto move = [&](auto word, std::size_t at) {
    std::memcpy(&word, from + at, sizeof word);
    std::memcpy(to + at, &word, sizeof word);
  };
  if (n > 16) {
    std::memcpy(to, from, n);
  } else if (n >= 8) {
    move(std::uint64_t{}, 0);
    move(std::uint64_t{}, n - 8);
  } else if (n >= 4) {
    move(std::uint32_t{}, 0);
    move(std::uint32_t{}, n - 4);
  } else if (n > 0) {
    to[0] = from[0];
    to[n / 2] = from[n / 2];
    to[n - 1] = from[n - 1];
  }
}

/// The bytes serialised for a connection and not yet written. Unlike a std::string, it does
/// not zero the room a head is written into, checks its capacity once per piece, and copies a
/// short piece without a call.
class OutputBuffer {
 public:
  bool empty() const noexcept { return size_ == 0; }
  std::size_t size() const noexcept { return size_; }
  const char* data() const noexcept { return data_.get(); }
  std::string_view view() const noexcept { return {data_.get(), size_}; }
  std::span<const std::byte> bytes() const noexcept {
    return std::as_bytes(std::span(data_.get(), size_));
  }
  /// Empties it, keeping its memory.
  void clear() noexcept { size_ = 0; }
  /// Room for at least @p n more bytes after the end; commit() says where the writing ended.
  char* room(std::size_t n) {
    if (capacity_ - size_ < n) grow(n);
    return data_.get() + size_;
  }
  /// Makes the bytes up to @p end (within the last room()) part of the buffer.
  void commit(const char* end) noexcept { size_ = static_cast<std::size_t>(end - data_.get()); }
  [[gnu::always_inline]] OutputBuffer& operator+=(std::string_view s) {
    char* at = room(s.size());
    copy_bytes(at, s.data(), s.size());
    size_ += s.size();
    return *this;
  }

 private:
  void grow(std::size_t n) {
    const std::size_t capacity = std::max({capacity_ * 2, size_ + n, std::size_t{4096}});
    auto bigger = std::make_unique_for_overwrite<char[]>(capacity);
    if (size_ != 0) std::memcpy(bigger.get(), data_.get(), size_);
    data_ = std::move(bigger);
    capacity_ = capacity;
  }

  std::unique_ptr<char[]> data_;
  std::size_t size_ = 0;
  std::size_t capacity_ = 0;
};

}  // namespace

class HttpConnection final : public Protocol, private HttpRequestParser::Callbacks {
 public:
  explicit HttpConnection(HttpServer& server);
  ~HttpConnection() override;

  void connection_made(Transport& transport) override;
  void data_received(std::span<const std::byte> data) override;
  bool eof_received() override;
  void connection_lost(std::error_code ec) override;
  void pause_writing() override;
  void resume_writing() override;

  /// HttpServer::shutdown(): close now if idle, else after the requests in flight.
  void shutdown();

 private:
  friend class HttpBodyWriter;
  friend class HttpServer;

  /// One request in flight, from its head to its response on the wire.
  struct Slot {
    HttpServerRequest request;
    HttpRouter::Match match;          // the route, found when the head arrived
    Task<HttpResponse> task;
    HttpResponse response;
    HttpConnection* owner = nullptr;  // null: orphaned (connection gone, task still running)
    bool received = false;            // the whole request is in
    bool done = false;                // response is ready
    bool head = false;                // a HEAD request: no body on the wire
    bool keep_alive = true;
    bool continue_pending = false;    // owes `100 Continue` once it is first in line
    bool callback_pending = false;    // a done callback of task is scheduled or awaited
    bool stored = false;              // task or response was set: recycle() empties them
  };

  /// What writing a response needs to know of its request.
  struct Exchange {
    int version_minor = 1;
    bool head = false;        // a HEAD request: no body on the wire
    bool keep_alive = true;   // the connection stays open after this response
  };
  /// The Exchange of @p slot, first in line.
  Exchange exchange_of(const Slot& slot) const noexcept {
    return {slot.request.version_minor(), slot.head, !ends_after(slot)};
  }

  // HttpRequestParser::Callbacks
  void headers_received(const HttpRequest& request) override;
  void body_received(std::span<const std::byte> data) override;
  void request_received(const HttpRequest& request) override;

  /// Feeds @p data to the parser and dispatches the requests it completes, while not
  /// blocked(); returns the bytes consumed.
  std::size_t parse(std::span<const std::byte> data);
  /// parse() of input_ (the bytes that waited), then of end of file if it came.
  void resume_input();
  /// Whether the connection ends after @p slot's response (first in line), which then says
  /// `Connection: close`: its request does not keep alive, the server is shutting down, or
  /// the client has half-closed and this is the last request it sent (every one before it is
  /// answered first: a client that sends its requests and then its EOF gets all the answers).
  bool ends_after(const Slot& slot) const noexcept {
    if (!slot.keep_alive || server_->is_shutting_down()) return true;
    if (!eof_) return false;
    const HttpRequestParser::State state = parser_.state();
    return queue_.size() <= 1 && input_.empty() &&
           (state == HttpRequestParser::State::idle || state == HttpRequestParser::State::closed);
  }
  bool blocked() const noexcept {
    // The request whose body is still arriving (receiving_, at the back of queue_) does not
    // count: its own body must be read for it to run at all.
    const std::size_t waiting = queue_.size() - (receiving_ != nullptr ? 1 : 0);
    return waiting >= server_->settings().max_pipelined || write_paused_ || sending_ ||
           closing_ || lost_ || failed_;
  }
  void dispatch(Slot& slot);
  /// Answers the request of the direct lane (see headers_received()) while the parser is
  /// still paused on it.
  void answer_direct();
  void on_handler_done(Slot& slot);
  /// Calls a plain handler and responds with what it returns (500 if it throws).
  void run_plain(Slot& slot, const HttpPlainHandler& handler);
  /// The plain handler's response, or a 500 (reported) if it throws.
  HttpResponse call_plain(HttpServerRequest& request, const HttpPlainHandler& handler);
  /// Passes a handler's exception to the loop's exception handler, naming the request.
  void report_handler_error(const HttpServerRequest& request, std::exception_ptr error);
  /// Writes @p response at once when @p slot is first in line and it is plain, else keeps it
  /// in the slot until its turn (complete()). May move from @p response.
  void respond(Slot& slot, HttpResponse& response);
  void complete(Slot& slot, HttpResponse&& response);
  /// Writes the responses at the front of queue_ that are ready, in order; starts the body
  /// sender of a file or stream response; closes after a response that ends the connection.
  void drain();
  /// The response head of @p r: framed by @p content_length, or chunked, or neither (the
  /// body ends with the connection: a stream over HTTP/1.0) when @p content_length is empty
  /// and @p chunked false.
  void serialize_head(const Exchange& x, const HttpResponse& r,
                      std::optional<std::uint64_t> content_length, bool chunked);
  /// Whether @p r, the response to a HEAD request when @p head, is sent by write_plain():
  /// no stream and no file to send.
  static bool is_plain(bool head, const HttpResponse& r) noexcept;
  /// Serialises @p r and its body into out_ (or writes a large body at once).
  void write_plain(const Exchange& x, const HttpResponse& r);
  /// write_plain() of @p slot's response, @p r; pops and recycles @p slot (the front of
  /// queue_); returns false when the connection ends with it.
  bool send_plain(Slot* slot, const HttpResponse& r);
  /// After a response: closes once out_ is written unless @p keep_alive; returns it.
  bool finish(bool keep_alive);
  void flush();
  void fail(int status, std::string_view reason);
  void close_when_drained();
  bool idle() const noexcept {
    return queue_.empty() && input_.empty() && parser_.state() == HttpRequestParser::State::idle;
  }

  Slot* take_slot();
  void recycle(Slot* slot) noexcept;

  Coro<void> send_body(Slot* slot);
  static Coro<void> wait_writable(std::shared_ptr<HttpBodyWriter::Channel> channel);

  void arm_timer(Duration after);
  void on_timer();

  HttpServer* server_;
  EventLoop* loop_ = nullptr;
  Transport* transport_ = nullptr;
  HttpRequestParser parser_;
  Ring<Slot*> queue_;            // requests in flight, oldest first
  std::vector<Slot*> free_;      // recycled slots
  Slot* receiving_ = nullptr;    // the slot of the request being parsed
  Slot* ready_ = nullptr;        // the slot request_received() just completed
  /// The direct lane's request and its handler (set from headers_received() to the answer).
  HttpServerRequest direct_request_;
  const HttpPlainHandler* direct_ = nullptr;
  OutputBuffer out_;             // responses serialised, not yet written
  std::string input_;            // bytes received and not parsed yet (blocked)
  std::size_t input_at_ = 0;     // parsed prefix of input_
  std::shared_ptr<HttpBodyWriter::Channel> channel_;  // while a stream body is sent
  Task<void> sender_;            // sends a file or stream body
  TimerHandle timer_;
  TimePoint last_activity_{};
  TimePoint head_started_{};
  std::size_t index_ = 0;        // place in server_->connections_
  bool in_parse_ = false;        // parse() is on the stack
  bool write_paused_ = false;
  bool sending_ = false;         // sender_ runs
  bool closing_ = false;         // the connection ends once out_ is written
  bool lost_ = false;
  bool eof_ = false;             // the client sent end of file
  bool reading_paused_ = false;
  bool failed_ = false;          // an error response is queued: nothing more is parsed
  bool stream_chunked_ = true;   // the stream being sent uses the chunked coding
};

HttpConnection::HttpConnection(HttpServer& server)
    : server_(&server), parser_(*this, server.settings().limits) {
  // parse() answers or takes every request before it returns: the bytes outlive the views.
  parser_.set_views_into_input(true);
  index_ = server.connections_.size();
  server.connections_.push_back(this);
}

HttpConnection::~HttpConnection() {
  if (server_) {
    auto& list = server_->connections_;
    list[index_] = list.back();
    list[index_]->index_ = index_;
    list.pop_back();
  }
  timer_.cancel();
  queue_.for_each([](Slot* slot) {
    if (slot->callback_pending) {
      slot->owner = nullptr;  // its done callback frees it
      slot->task.cancel();
    } else {
      delete slot;
    }
  });
  for (Slot* slot : free_) delete slot;
  if (channel_) {
    channel_->connection = nullptr;
    if (channel_->resumed.valid() && !channel_->resumed.done()) channel_->resumed.set_result();
  }
  if (sender_.valid() && !sender_.done()) sender_.cancel();
}

void HttpConnection::connection_made(Transport& transport) {
  transport_ = &transport;
  loop_ = &transport.get_loop();
  last_activity_ = loop_->time();
  out_.room(4096);
  arm_timer(std::min(server_->settings().keepalive_timeout, server_->settings().header_timeout));
  if (server_->is_shutting_down()) transport.close();
}

// ---- Reading and parsing ------------------------------------------------------------------------

void HttpConnection::data_received(std::span<const std::byte> data) {
  if (closing_ || lost_ || failed_) return;
  const bool was_idle = parser_.state() == HttpRequestParser::State::idle;
  const std::uint64_t completed = parser_.requests_completed();
  last_activity_ = loop_->iteration_time();  // no clock read: the timeouts are of seconds
  if (!input_.empty()) {  // earlier bytes wait: these queue behind them
    input_.append(reinterpret_cast<const char*>(data.data()), data.size());
    resume_input();
  } else {
    const std::size_t used = parse(data);
    if (used < data.size() && !parser_.has_failed() &&
        parser_.state() != HttpRequestParser::State::closed) {
      input_.assign(reinterpret_cast<const char*>(data.data()) + used, data.size() - used);
      input_at_ = 0;
      if (!reading_paused_) {
        transport_->pause_reading();
        reading_paused_ = true;
      }
    }
  }
  if (parser_.state() == HttpRequestParser::State::head &&
      (was_idle || parser_.requests_completed() != completed)) {
    head_started_ = last_activity_;  // a new request head began in these bytes
  }
  flush();
}

std::size_t HttpConnection::parse(std::span<const std::byte> data) {
  struct InParse {  // cleared on every way out, a throwing callback's too
    bool& flag;
    explicit InParse(bool& f) noexcept : flag(f) { flag = true; }
    ~InParse() { flag = false; }
    InParse(const InParse&) = delete;
    InParse& operator=(const InParse&) = delete;
  } in_parse(in_parse_);
  std::size_t used = 0;
  while (!blocked()) {
    const std::size_t n = parser_.feed(data.subspan(used));
    used += n;
    if (parser_.has_failed()) {
      fail(parser_.error_status(), parser_.error_reason());
      break;
    }
    if (!parser_.is_paused()) break;  // all consumed, the next request is incomplete
    if (direct_ != nullptr) {
      answer_direct();  // before resume(): the request views the parser's buffers
      parser_.resume();
    } else {
      Slot* slot = std::exchange(ready_, nullptr);
      parser_.resume();
      dispatch(*slot);
    }
    if (used == data.size()) break;
  }
  return used;
}

void HttpConnection::resume_input() {
  if (in_parse_ || lost_) return;
  if (input_at_ < input_.size()) {
    const auto* base = reinterpret_cast<const std::byte*>(input_.data());
    input_at_ += parse(std::span(base + input_at_, input_.size() - input_at_));
    if (input_at_ >= input_.size() || parser_.has_failed() ||
        parser_.state() == HttpRequestParser::State::closed) {
      input_.clear();
      input_at_ = 0;
    }
  }
  if (input_.empty() && reading_paused_ && !closing_ && !lost_) {
    reading_paused_ = false;
    transport_->resume_reading();
  }
  if (input_.empty() && eof_ && !closing_ && !lost_ && !in_parse_) {
    parser_.feed_eof();
    if (parser_.has_failed()) {
      fail(parser_.error_status(), parser_.error_reason());
    } else {
      close_when_drained();
    }
  }
}

bool HttpConnection::eof_received() {
  eof_ = true;
  if (!closing_) resume_input();
  flush();
  return true;  // keep the sending side open for the responses still owed; closed when drained
}

void HttpConnection::headers_received(const HttpRequest& request) {
  // The direct lane: a request without a body, with nothing before it in flight, whose route
  // has a plain handler, is answered before the parser resumes (parse(), answer_direct()),
  // its head viewed where the parser keeps it: no slot, no swap of buffers, no queue. An
  // end of file already received keeps to the slots (ends_after() looks at the queue).
  const bool direct = queue_.empty() && !sending_ && !eof_ && !request.expects_continue() &&
                      !request.is_chunked() && request.content_length().value_or(0) == 0;
  HttpRouter::Match match;
  if (direct) {
    direct_request_.view_head(request, *transport_);
    match = server_->router().resolve(direct_request_.method(), direct_request_.path());
    if (match.plain != nullptr) {
      direct_request_.route_ = match.route;
      direct_ = match.plain;
      return;
    }
  }
  Slot* slot = take_slot();
  slot->request.take_head(parser_, *transport_);
  slot->match = direct ? match
                       : server_->router().resolve(slot->request.method(), slot->request.path());
  slot->head = request.method() == "HEAD";
  slot->keep_alive = request.keep_alive();
  receiving_ = slot;
  queue_.push_back(slot);
  if (request.expects_continue()) {
    if (queue_.front() == slot) {
      out_ += "HTTP/1.1 100 Continue\r\n\r\n"sv;
      flush();
    } else {
      slot->continue_pending = true;
    }
  }
}

void HttpConnection::body_received(std::span<const std::byte> data) {
  receiving_->request.body_.append(reinterpret_cast<const char*>(data.data()), data.size());
}

void HttpConnection::request_received(const HttpRequest& request) {
  if (direct_ != nullptr) return;  // parse() answers it
  Slot* slot = std::exchange(receiving_, nullptr);
  if (!request.trailers().empty()) slot->request.assign_trailers(request.trailers());
  slot->received = true;
  slot->continue_pending = false;
  ready_ = slot;
}

// ---- Handlers -----------------------------------------------------------------------------------

void HttpConnection::dispatch(Slot& slot) {
  HttpServerRequest& request = slot.request;
  const HttpRouter::Match& match = slot.match;
  if (match.plain != nullptr) {
    request.route_ = match.route;
    run_plain(slot, *match.plain);
    return;
  }
  if (!match.handler) {
    HttpResponse response = HttpResponse::error(match.status);
    if (match.status == 405) response.add_header("Allow", std::string(match.allow));
    complete(slot, std::move(response));
    return;
  }
  request.route_ = match.route;
  try {
    slot.stored = true;
    slot.task = loop_->create_eager_task((*match.handler)(request));
  } catch (...) {  // the handler threw before its first suspension, outside the coroutine
    report_handler_error(request, std::current_exception());
    complete(slot, HttpResponse::error(500));
    return;
  }
  if (slot.task.done()) {
    on_handler_done(slot);
    return;
  }
  slot.callback_pending = true;
  Slot* s = &slot;
  slot.task.add_done_callback([s](Future<HttpResponse>&) {
    s->callback_pending = false;
    if (s->owner) {
      s->owner->on_handler_done(*s);
    } else {
      delete s;
    }
  });
}

void HttpConnection::answer_direct() {
  // Called inside parse(): what it writes is flushed once the bytes are parsed. The response
  // is made in place (no move): call_plain() returns the handler's prvalue.
  const HttpPlainHandler& handler = *std::exchange(direct_, nullptr);
  HttpResponse response = call_plain(direct_request_, handler);
  if (closing_ || lost_) return;  // the handler closed the connection
  const bool head = direct_request_.method() == "HEAD"sv;
  if (is_plain(head, response)) {
    const bool keep_alive = direct_request_.keep_alive() && !server_->is_shutting_down();
    write_plain({direct_request_.version_minor(), head, keep_alive}, response);
    finish(keep_alive);
    return;
  }
  // A file or a stream is sent over time: from a slot, which takes the head.
  Slot* slot = take_slot();
  slot->request.take_head(parser_, *transport_);
  slot->request.route_ = direct_request_.route_;
  slot->head = head;
  slot->keep_alive = direct_request_.keep_alive();
  slot->received = true;
  queue_.push_back(slot);
  complete(*slot, std::move(response));
}

void HttpConnection::run_plain(Slot& slot, const HttpPlainHandler& handler) {
  // Called inside parse(): what respond() writes is flushed once the bytes are parsed. The
  // response is made in place (no move): call_plain() returns the handler's prvalue.
  HttpResponse response = call_plain(slot.request, handler);
  respond(slot, response);
}

HttpResponse HttpConnection::call_plain(HttpServerRequest& request,
                                        const HttpPlainHandler& handler) {
  try {
    return handler(request);
  } catch (...) {
    report_handler_error(request, std::current_exception());
    return HttpResponse::error(500);
  }
}

void HttpConnection::report_handler_error(const HttpServerRequest& request,
                                          std::exception_ptr error) {
  loop_->call_exception_handler({"HTTP handler failed for " + std::string(request.method()) +
                                     " " + std::string(request.path()),
                                 std::move(error)});
}

void HttpConnection::respond(Slot& slot, HttpResponse& response) {
  if (queue_.front() == &slot && !sending_ && !closing_ && !lost_ &&
      is_plain(slot.head, response)) {
    // First in line and plain: serialised from where it is, not moved.
    slot.done = true;
    if (send_plain(&slot, response)) drain();
  } else {
    complete(slot, std::move(response));
  }
}

void HttpConnection::on_handler_done(Slot& slot) {
  Task<HttpResponse> task = std::move(slot.task);
  if (task.cancelled()) {
    complete(slot, HttpResponse::error(503, "the request was cancelled"));
  } else if (std::exception_ptr e = task.exception()) {
    report_handler_error(slot.request, std::move(e));
    complete(slot, HttpResponse::error(500));
  } else {
    respond(slot, task.state()->value());  // the task's own copy
  }
  if (!in_parse_) {
    last_activity_ = loop_->time();
    flush();
    resume_input();
    flush();
  }
}

void HttpConnection::complete(Slot& slot, HttpResponse&& response) {
  slot.stored = true;
  slot.response = std::move(response);
  slot.done = true;
  if (queue_.front() == &slot && !sending_) drain();
}

// ---- Writing ------------------------------------------------------------------------------------

namespace {

bool status_has_body(int status) noexcept {
  return status >= 200 && status != 204 && status != 304;
}

/// A body up to this size is copied into the output buffer; a larger one is written from
/// where it is, by a scatter-gather write.
constexpr std::size_t small_body = 16 * 1024;

}  // namespace

namespace {

/// Writes into memory reserved beforehand: a memcpy per piece, no capacity checks.
class HeadWriter {
 public:
  explicit HeadWriter(char* p) noexcept : p_(p) {}
  void put(std::string_view s) noexcept {
    std::memcpy(p_, s.data(), s.size());
    p_ += s.size();
  }
  void put_number(std::uint64_t n) noexcept { p_ = std::to_chars(p_, p_ + 20, n).ptr; }
  char* end() const noexcept { return p_; }

 private:
  char* p_;
};

}  // namespace

void HttpConnection::serialize_head(const Exchange& x, const HttpResponse& r,
                                    std::optional<std::uint64_t> content_length, bool chunked) {
  const bool keep_alive = x.keep_alive;
  const std::string_view date = server_->date_now();
  // The most common head (200, HTTP/1.1, keep-alive, Content-Type and Content-Length only)
  // is made once per second per type and length, and copied whole.
  const bool cacheable = r.status == 200 && x.version_minor == 1 && keep_alive &&
                         !chunked && content_length && r.headers.empty();
  if (cacheable) {
    if (const std::string* head = server_->cached_head(r.content_type, *content_length)) {
      out_ += *head;
      return;
    }
  }
  const std::string_view server_name = server_->settings().server_name;
  // An upper bound of the head's size, reserved at once; the fixed pieces need under 180
  // bytes (two numbers of up to 20 digits included), the reason phrase under 40.
  std::size_t bound = 220 + server_name.size() + r.content_type.size();
  for (const HttpField& f : r.headers) bound += f.name.size() + f.value.size() + 4;
  const std::size_t at = out_.size();
  HeadWriter w(out_.room(bound));
  if (r.status == 200 && x.version_minor == 1) {
    w.put(server_->ok_head_);
  } else {
    w.put(x.version_minor == 0 ? "HTTP/1.0 "sv : "HTTP/1.1 "sv);
    w.put_number(static_cast<std::uint64_t>(r.status));
    w.put(" "sv);
    w.put(http_reason_phrase(r.status));
    w.put("\r\n"sv);
    if (!server_name.empty()) {
      w.put("Server: "sv);
      w.put(server_name);
      w.put("\r\n"sv);
    }
    w.put("Date: "sv);
    w.put(date);
    w.put("\r\n"sv);
  }
  if (!r.content_type.empty()) {
    w.put("Content-Type: "sv);
    w.put(r.content_type);
    w.put("\r\n"sv);
  }
  for (const HttpField& f : r.headers) {
    w.put(f.name);
    w.put(": "sv);
    w.put(f.value);
    w.put("\r\n"sv);
  }
  if (chunked) {
    w.put("Transfer-Encoding: chunked\r\n"sv);
  } else if (content_length && status_has_body(r.status)) {
    w.put("Content-Length: "sv);
    w.put_number(*content_length);
    w.put("\r\n"sv);
  }
  if (!keep_alive) {
    w.put("Connection: close\r\n"sv);
  } else if (x.version_minor == 0) {
    w.put("Connection: keep-alive\r\n"sv);
  }
  w.put("\r\n"sv);
  out_.commit(w.end());
  if (cacheable) {
    server_->cache_head(r.content_type, *content_length, out_.view().substr(at));
  }
}

void HttpConnection::drain() {
  while (!queue_.empty() && !sending_ && !closing_ && !lost_) {
    Slot* slot = queue_.front();
    if (!slot->done) {
      if (slot->continue_pending) {
        slot->continue_pending = false;
        out_ += "HTTP/1.1 100 Continue\r\n\r\n"sv;
      }
      break;
    }
    HttpResponse& r = slot->response;
    // HTTP/1.0 has no chunked coding: a stream is sent as it comes and ends the connection.
    const bool chunked_ok = slot->request.version_minor() != 0;
    if (r.stream && status_has_body(r.status) && !slot->head) {
      if (!chunked_ok) slot->keep_alive = false;
      stream_chunked_ = chunked_ok;
      serialize_head(exchange_of(*slot), r, std::nullopt, chunked_ok);
      sending_ = true;
      sender_ = loop_->create_task(send_body(slot));
      return;
    }
    if (!is_plain(slot->head, r)) {  // a file body
      serialize_head(exchange_of(*slot), r, r.file.length(), false);
      sending_ = true;
      sender_ = loop_->create_task(send_body(slot));
      return;
    }
    if (!send_plain(slot, r)) return;
  }
  if (queue_.empty() && (eof_ || server_->is_shutting_down()) && input_.empty()) {
    close_when_drained();
  }
}

bool HttpConnection::is_plain(bool head, const HttpResponse& r) noexcept {
  const bool body_on_wire = status_has_body(r.status) && !head;
  return !body_on_wire || (!r.stream && !(r.file && r.file.length() > 0));
}

bool HttpConnection::send_plain(Slot* slot, const HttpResponse& r) {
  const Exchange x = exchange_of(*slot);
  write_plain(x, r);
  queue_.pop_front();
  recycle(slot);
  return finish(x.keep_alive);
}

bool HttpConnection::finish(bool keep_alive) {
  if (keep_alive) return true;
  closing_ = true;  // nothing after this response is answered
  flush();
  transport_->close();
  return false;
}

[[gnu::always_inline]] inline const std::string* HttpServer::cached_head(std::string_view content_type,
                                                  std::uint64_t length) const noexcept {
  const CachedHead& h = heads_[last_head_];  // most servers: always the one found last
  if (h.generation == ok_head_generation_ && h.length == length &&
      same_bytes(h.content_type, content_type)) {
    return &h.head;
  }
  return find_head(content_type, length);
}

void HttpConnection::write_plain(const Exchange& x, const HttpResponse& r) {
  // The most common response first: a 200 of a small body in memory, its head cached.
  if (r.status == 200 && x.version_minor == 1 && x.keep_alive && !x.head && !r.file &&
      !r.stream && r.headers.empty() && r.body.size() <= small_body) {
    server_->date_now();
    if (const std::string* head = server_->cached_head(r.content_type, r.body.size())) {
      out_ += *head;
      out_ += r.body;
      return;
    }
  }
  const bool chunked_ok = x.version_minor != 0;
  const bool send_file = static_cast<bool>(r.file) && status_has_body(r.status);
  const std::uint64_t length = send_file ? r.file.length() : r.body.size();
  // HEAD of a stream: the head GET would have (chunked on HTTP/1.1, unframed on 1.0), no body.
  if (r.stream) {
    serialize_head(x, r, std::nullopt, chunked_ok);
  } else {
    serialize_head(x, r, length, false);
  }
  const bool with_body = status_has_body(r.status) && !x.head;
  if (with_body && !send_file && !r.body.empty()) {
    if (r.body.size() <= small_body) {
      out_ += r.body;
    } else {  // large: one scatter-gather write of what waits and this body, no copy
      const std::array<std::span<const std::byte>, 2> parts = {
          out_.bytes(),
          std::as_bytes(std::span(r.body.data(), r.body.size()))};
      transport_->writelines(parts);
      out_.clear();
    }
  }
}

void HttpConnection::flush() {
  if (out_.empty() || lost_) return;
  transport_->write(out_.bytes());
  out_.clear();
}

void HttpConnection::close_when_drained() {
  if (!queue_.empty() || closing_ || lost_) return;
  closing_ = true;
  flush();
  transport_->close();
}

void HttpConnection::fail(int status, std::string_view reason) {
  failed_ = true;
  direct_ = nullptr;
  // The request being received gets no handler: its place in the queue takes the error.
  Slot* slot = std::exchange(receiving_, nullptr);
  if (!slot) {
    // No head was parsed: a recycled slot still holds an earlier request's version, and the
    // error is answered as HTTP/1.1.
    slot = take_slot();
    slot->request.version_minor_ = 1;
    queue_.push_back(slot);
  }
  slot->keep_alive = false;
  slot->head = false;
  slot->received = true;
  slot->continue_pending = false;
  complete(*slot, HttpResponse::error(status, reason));
}

Coro<void> HttpConnection::wait_writable(std::shared_ptr<HttpBodyWriter::Channel> channel) {
  while (channel->connection && channel->connection->write_paused_) {
    if (!channel->resumed.valid() || channel->resumed.done()) {
      channel->resumed = channel->connection->loop_->create_future<void>();
    }
    Future<void> resumed = channel->resumed;
    co_await resumed;
  }
}

Coro<void> HttpConnection::send_body(Slot* slot) {
  // The task may outlive the connection (it is cancelled when the connection is lost, and a
  // stream producer may catch that): after every suspension it looks at the channel, which
  // it shares, before it touches the connection.
  auto channel = std::make_shared<HttpBodyWriter::Channel>();
  channel->connection = this;
  channel_ = channel;
  bool ok = true;
  HttpResponse& r = slot->response;
  flush();
  try {
    if (r.file) {
      const std::uint64_t sent =
          co_await sendfile(*transport_, r.file.fd(), r.file.offset(), r.file.length());
      if (!channel->connection) co_return;
      ok = sent == r.file.length();  // else the file shrank: the framing is broken
    } else {
      HttpBodyWriter writer(channel);
      auto produce = r.stream(writer);
      co_await produce;
      if (!channel->connection) co_return;
      if (stream_chunked_) out_ += "0\r\n\r\n"sv;
    }
  } catch (const CancelledError&) {
    throw;
  } catch (const std::exception&) {
    if (!channel->connection) co_return;
    loop_->call_exception_handler(
        {"HTTP response body failed for " + std::string(slot->request.method()) + " " +
             std::string(slot->request.path()),
         std::current_exception()});
    ok = false;
  }
  sending_ = false;
  channel->connection = nullptr;
  channel_.reset();
  if (!ok) {
    transport_->abort();
    co_return;
  }
  const bool keep_alive = !ends_after(*slot);
  queue_.pop_front();
  recycle(slot);
  if (!keep_alive) {
    closing_ = true;
    flush();
    transport_->close();
    co_return;
  }
  last_activity_ = loop_->time();
  drain();
  flush();
  resume_input();
  flush();
}

Coro<void> HttpBodyWriter::write(std::string data) {
  HttpConnection* c = channel_->connection;
  if (!c) {
    throw std::system_error(std::make_error_code(std::errc::connection_aborted),
                            "HTTP response stream: the connection was lost");
  }
  if (data.empty()) co_return;
  char size[20];
  const auto r = std::to_chars(size, size + sizeof size, data.size(), 16);
  OutputBuffer& out = c->out_;
  if (c->stream_chunked_) {
    out += std::string_view(size, static_cast<std::size_t>(r.ptr - size));
    out += "\r\n"sv;
  }
  if (data.size() <= small_body) {
    out += data;
    if (c->stream_chunked_) out += "\r\n"sv;
    c->flush();
  } else if (!c->lost_) {  // large: one scatter-gather write, the chunk not copied
    constexpr std::string_view end = "\r\n";
    std::array<std::span<const std::byte>, 3> parts;  // no empty part
    std::size_t count = 0;
    if (!out.empty()) parts[count++] = out.bytes();  // the size line
    parts[count++] = std::as_bytes(std::span(data.data(), data.size()));
    if (c->stream_chunked_) parts[count++] = std::as_bytes(std::span(end.data(), end.size()));
    c->transport_->writelines(std::span(parts).first(count));
    out.clear();
  }
  auto wait = HttpConnection::wait_writable(channel_);
  co_await wait;
  if (!channel_->connection) {
    throw std::system_error(std::make_error_code(std::errc::connection_aborted),
                            "HTTP response stream: the connection was lost");
  }
}

void HttpConnection::pause_writing() { write_paused_ = true; }

void HttpConnection::resume_writing() {
  write_paused_ = false;
  if (channel_ && channel_->resumed.valid() && !channel_->resumed.done()) {
    channel_->resumed.set_result();
  }
  if (!sending_) {
    drain();
    flush();
    resume_input();
    flush();
  }
}

// ---- Lifetime -----------------------------------------------------------------------------------

void HttpConnection::connection_lost(std::error_code) {
  lost_ = true;
  timer_.cancel();
  if (channel_) {
    channel_->connection = nullptr;
    if (channel_->resumed.valid() && !channel_->resumed.done()) channel_->resumed.set_result();
  }
  queue_.for_each([](Slot* slot) {
    if (slot->callback_pending) slot->task.cancel();
  });
  if (sender_.valid() && !sender_.done()) sender_.cancel();
}

void HttpConnection::shutdown() {
  // Without a transport yet (accepted, connection_made() still to come), connection_made()
  // sees the server shutting down and closes.
  if (lost_ || closing_ || transport_ == nullptr) return;
  if (idle()) {
    close_when_drained();
  }
  // Otherwise the responses in flight go out with `Connection: close` and drain() closes.
}

HttpConnection::Slot* HttpConnection::take_slot() {
  Slot* slot = nullptr;
  if (!free_.empty()) {
    slot = free_.back();
    free_.pop_back();
  } else {
    slot = new Slot;
  }
  slot->owner = this;
  slot->received = false;
  slot->done = false;
  slot->continue_pending = false;
  return slot;
}

void HttpConnection::recycle(Slot* slot) noexcept {
  if (slot->stored) {  // a plain handler's response is the caller's: nothing to empty
    HttpResponse& r = slot->response;  // emptied in place, keeping its memory
    r.status = 200;
    r.content_type.clear();
    r.headers.clear();
    r.body.clear();
    if (r.file) r.file = HttpFileBody();
    if (r.stream) r.stream = nullptr;
    slot->task = Task<HttpResponse>();
    slot->stored = false;
  }
  if (free_.size() < 4) {
    free_.push_back(slot);
  } else {
    delete slot;
  }
}

// ---- Timeouts -----------------------------------------------------------------------------------

void HttpConnection::arm_timer(Duration after) {
  timer_ = loop_->call_later(after, [this] { on_timer(); });
}

void HttpConnection::on_timer() {
  if (lost_ || closing_) return;
  const HttpServerSettings& s = server_->settings();
  const TimePoint now = loop_->time();
  if (parser_.state() == HttpRequestParser::State::head && queue_.size() <= 1 && !sending_) {
    // A head in progress (its slot, if any, is the only one): it has header_timeout.
    const TimePoint due = head_started_ + s.header_timeout;
    if (now >= due) {
      fail(408, "the request head did not arrive in time");
      flush();
      return;
    }
    arm_timer(due - now);
    return;
  }
  if (idle()) {
    const TimePoint due = last_activity_ + s.keepalive_timeout;
    if (now >= due) {
      close_when_drained();
      return;
    }
    arm_timer(due - now);
    return;
  }
  arm_timer(std::min(s.keepalive_timeout, s.header_timeout));  // busy: look again later
}

// ---- HttpServer ---------------------------------------------------------------------------------

HttpServer::HttpServer(HttpRouter router, HttpServerSettings settings)
    : router_(std::move(router)), settings_(std::move(settings)) {
  if (settings_.max_pipelined == 0) {
    throw std::invalid_argument("HttpServerSettings: max_pipelined must be at least 1");
  }
}

void HttpServer::new_date(std::time_t now) {
  date_second_ = now;
  const std::string_view date = format_http_date(now, date_.data());
  ok_head_ = "HTTP/1.1 200 OK\r\n";
  if (!settings_.server_name.empty()) {
    ok_head_ += "Server: ";
    ok_head_ += settings_.server_name;
    ok_head_ += "\r\n";
  }
  ok_head_ += "Date: ";
  ok_head_ += date;
  ok_head_ += "\r\n";
  ++ok_head_generation_;  // every cached head had the old date
}

const std::string* HttpServer::find_head(std::string_view content_type,
                                         std::uint64_t length) const noexcept {
  const auto matches = [&](const CachedHead& h) {
    return h.generation == ok_head_generation_ && h.length == length &&
           same_bytes(h.content_type, content_type);
  };
  for (std::size_t i = 0; i < heads_.size(); ++i) {
    if (matches(heads_[i])) {
      last_head_ = i;
      return &heads_[i].head;
    }
  }
  return nullptr;
}

void HttpServer::cache_head(std::string_view content_type, std::uint64_t length,
                            std::string_view head) {
  // The entry of the same type and length (stale since the last second) keeps its place and
  // its memory; a new type and length takes the oldest entry's.
  CachedHead* entry = nullptr;
  for (CachedHead& h : heads_) {
    if (h.generation != 0 && h.length == length && h.content_type == content_type) entry = &h;
  }
  for (CachedHead& h : heads_) {  // else a stale entry, else the oldest
    if (entry == nullptr && h.generation != ok_head_generation_) entry = &h;
  }
  if (entry == nullptr) {
    entry = &heads_[next_head_];
    next_head_ = (next_head_ + 1) % heads_.size();
  }
  CachedHead& h = *entry;
  h.content_type = content_type;
  h.length = length;
  h.generation = ok_head_generation_;
  h.head = head;
}

HttpServer::~HttpServer() {
  for (HttpConnection* c : connections_) c->server_ = nullptr;
}

std::unique_ptr<Protocol> HttpServer::make_connection() {
  return std::make_unique<HttpConnection>(*this);
}

void HttpServer::shutdown() {
  shutting_down_ = true;
  // shutdown() may close connections, which leave the list only later (on destruction).
  const std::vector<HttpConnection*> list = connections_;
  for (HttpConnection* c : list) c->shutdown();
}

}  // namespace strata
