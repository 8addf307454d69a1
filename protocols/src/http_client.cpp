// HttpClient: requests over pooled connections, on the transports layer.
//
// The pieces
// ----------
// - HttpClientState: the client's options and its pools, shared by the HttpClient object and
//   by each request in progress (so that a request may outlive the client object).
// - HostPool: per (scheme, host, port), a Semaphore of max_connections_per_host slots and the
//   idle connections. A request holds a slot from before it takes a connection until the
//   connection is given back (or closed); it takes an idle connection if there is one, and only
//   otherwise opens a new one. So the connections of a pool (in use, idle or being opened) never
//   outnumber the slots: each in-use one holds a slot, and a new one is opened only by a slot
//   holder that found no idle one. Waiting requests queue in the Semaphore, FIFO.
// - HttpConnection: one connection's state, shared by its ClientProtocol (owned by the
//   transport) and by the exchange using it or the pool keeping it. It feeds the bytes to an
//   HttpResponseParser and hands what comes out to its current exchange.
// - HttpExchange: one request and its response (the state behind HttpClientResponse): the slot
//   and connection it holds, the response head, the body chunks received and not read, the
//   error, and the one task waiting for any of that. When the parser reports the end of the
//   response the exchange gives the connection and the slot back at once, even if the caller
//   has not read the body yet.
//
// Completions never run inside the callbacks that cause them: the exchange's waiter is a
// Future, whose waking task resumes through call_soon.

#include "strata/protocols/http_client.hpp"

#include <algorithm>
#include <cstdio>
#include <deque>
#include <exception>
#include <map>
#include <system_error>
#include <tuple>
#include <utility>

#include "http_response_parser.hpp"
#include "strata/core/errors.hpp"
#include "strata/core/event.hpp"
#include "strata/core/event_loop.hpp"
#include "strata/core/future.hpp"
#include "strata/core/semaphore.hpp"
#include "strata/core/task.hpp"
#include "strata/core/timeout.hpp"
#include "strata/transports/protocol.hpp"
#include "strata/transports/tcp.hpp"
#include "strata/transports/transport.hpp"

namespace strata {

namespace {

// ---- Small text helpers ---------------------------------------------------------------------

constexpr std::size_t npos = std::string_view::npos;

constexpr char ascii_lower(char c) noexcept {
  return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c;
}
constexpr bool is_alpha(char c) noexcept {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}
constexpr bool is_digit(char c) noexcept { return c >= '0' && c <= '9'; }
constexpr bool is_hex(char c) noexcept {
  return is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

/// RFC 9110 §5.6.2 tchar.
constexpr bool is_tchar(char c) noexcept {
  return is_alpha(c) || is_digit(c) || std::string_view("!#$%&'*+-.^_`|~").find(c) != npos;
}

bool is_token(std::string_view s) noexcept {
  return !s.empty() && std::all_of(s.begin(), s.end(), is_tchar);
}

/// RFC 3986 reg-name characters (unreserved, sub-delims, and '%' of pct-encoded).
constexpr bool is_host_char(char c) noexcept {
  return is_alpha(c) || is_digit(c) || std::string_view("-._~!$&'()*+,;=%").find(c) != npos;
}

std::string lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = ascii_lower(c);
  return out;
}

/// The scheme of @p ref if it starts with one ("http:", "mailto:"), else empty.
std::string_view scheme_of(std::string_view ref) noexcept {
  if (ref.empty() || !is_alpha(ref.front())) return {};
  for (std::size_t i = 1; i < ref.size(); ++i) {
    const char c = ref[i];
    if (c == ':') return ref.substr(0, i);
    if (!is_alpha(c) && !is_digit(c) && c != '+' && c != '-' && c != '.') return {};
  }
  return {};
}

std::string_view trim_space(std::string_view s) noexcept {
  auto space = [](char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\f'; };
  while (!s.empty() && space(s.front())) s.remove_prefix(1);
  while (!s.empty() && space(s.back())) s.remove_suffix(1);
  return s;
}

/// RFC 3986 §5.2.4 remove_dot_segments.
std::string remove_dot_segments(std::string_view path) {
  std::string in(path);
  std::string out;
  std::size_t i = 0;
  auto rest_starts = [&](std::string_view p) {
    return std::string_view(in).substr(i).starts_with(p);
  };
  auto rest_is = [&](std::string_view p) { return std::string_view(in).substr(i) == p; };
  auto pop_segment = [&] {
    const std::size_t slash = out.rfind('/');
    out.erase(slash == std::string::npos ? 0 : slash);
  };
  while (i < in.size()) {
    if (rest_starts("../")) {
      i += 3;
    } else if (rest_starts("./")) {
      i += 2;
    } else if (rest_starts("/./")) {
      i += 2;  // "/./" -> "/"
    } else if (rest_is("/.")) {
      in.replace(i, 2, "/");
    } else if (rest_starts("/../")) {
      i += 3;  // "/../" -> "/"
      pop_segment();
    } else if (rest_is("/..")) {
      in.replace(i, 3, "/");
      pop_segment();
    } else if (rest_is(".") || rest_is("..")) {
      i = in.size();
    } else {
      const std::size_t next = in.find('/', in[i] == '/' ? i + 1 : i);
      const std::size_t end = next == std::string::npos ? in.size() : next;
      out.append(in, i, end - i);
      i = end;
    }
  }
  return out;
}

std::string describe_duration(Duration d) {
  const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(d).count();
  if (ms % 1000 == 0) return std::to_string(ms / 1000) + " s";
  return std::to_string(ms) + " ms";
}

bool is_idempotent(std::string_view method) noexcept {
  return method == "GET" || method == "HEAD" || method == "OPTIONS" || method == "TRACE" ||
         method == "PUT" || method == "DELETE";
}

bool is_redirect(int status) noexcept {
  return status == 301 || status == 302 || status == 303 || status == 307 || status == 308;
}

/// Removes every field named @p name (any case) from @p fields.
void erase_field(std::vector<HttpField>& fields, std::string_view name) {
  std::erase_if(fields, [name](const HttpField& f) { return http_iequals(f.name, name); });
}

bool has_field(const std::vector<HttpField>& fields, std::string_view name) {
  return std::any_of(fields.begin(), fields.end(),
                     [name](const HttpField& f) { return http_iequals(f.name, name); });
}

/// Whether a Connection field lists "close".
bool asks_close(const std::vector<HttpField>& fields) {
  for (const HttpField& f : fields) {
    if (!http_iequals(f.name, "connection")) continue;
    std::string_view list = f.value;
    while (!list.empty()) {
      const std::size_t comma = list.find(',');
      if (http_iequals(trim_space(list.substr(0, comma)), "close")) return true;
      list = comma == std::string_view::npos ? std::string_view{} : list.substr(comma + 1);
    }
  }
  return false;
}

}  // namespace

// ---- HttpUrl --------------------------------------------------------------------------------

HttpUrl HttpUrl::parse(std::string_view url) {
  const std::string quoted = "'" + std::string(url) + "'";
  for (std::size_t i = 0; i < url.size(); ++i) {
    const auto c = static_cast<unsigned char>(url[i]);
    if (c <= 0x20 || c == 0x7f) {
      throw std::invalid_argument("URL holds a space or control character at offset " +
                                  std::to_string(i) + ": " + quoted + " (percent-encode it)");
    }
  }
  const std::string_view scheme = scheme_of(url);
  if (scheme.empty() || !url.substr(scheme.size()).starts_with("://")) {
    if (!scheme.empty() && !http_iequals(scheme, "http") && !http_iequals(scheme, "https")) {
      throw std::invalid_argument("unsupported URL scheme '" + std::string(scheme) + "' in " +
                                  quoted + " (only http and https)");
    }
    throw std::invalid_argument("URL must be absolute (http://host/path or https://...), got " +
                                quoted);
  }
  HttpUrl out;
  out.scheme = lower(scheme);
  if (out.scheme != "http" && out.scheme != "https") {
    throw std::invalid_argument("unsupported URL scheme '" + std::string(scheme) + "' in " +
                                quoted + " (only http and https)");
  }
  std::string_view rest = url.substr(scheme.size() + 3);
  const std::size_t authority_end = std::min(rest.find_first_of("/?#"), rest.size());
  std::string_view authority = rest.substr(0, authority_end);
  rest = rest.substr(authority_end);
  if (authority.find('@') != std::string_view::npos) {
    throw std::invalid_argument("user information (user:password@) in URLs is not supported: " +
                                quoted + "; send an Authorization header instead");
  }

  std::string_view host;
  std::string_view port;
  bool has_port = false;
  if (authority.starts_with('[')) {
    const std::size_t close = authority.find(']');
    if (close == std::string_view::npos) {
      throw std::invalid_argument("URL has an IPv6 address without its closing ']': " + quoted);
    }
    host = authority.substr(1, close - 1);
    const std::string_view after = authority.substr(close + 1);
    if (!after.empty()) {
      if (after.front() != ':') {
        throw std::invalid_argument("URL has characters after the IPv6 address: " + quoted);
      }
      port = after.substr(1);
      has_port = true;
    }
    const std::size_t zone = host.find('%');
    const std::string_view address = host.substr(0, zone);
    if (address.find(':') == std::string_view::npos ||
        !std::all_of(address.begin(), address.end(),
                     [](char c) { return is_hex(c) || c == ':' || c == '.'; })) {
      throw std::invalid_argument("URL has a malformed IPv6 address in brackets: " + quoted);
    }
  } else {
    const std::size_t colon = authority.find(':');
    if (colon != std::string_view::npos &&
        authority.find(':', colon + 1) != std::string_view::npos) {
      throw std::invalid_argument("URL has a malformed host: " + quoted +
                                  " (an IPv6 address goes in brackets: http://[::1]:8080/)");
    }
    host = authority.substr(0, colon);
    if (colon != std::string_view::npos) {
      port = authority.substr(colon + 1);
      has_port = true;
    }
    if (!std::all_of(host.begin(), host.end(), is_host_char)) {
      throw std::invalid_argument("URL has a malformed host: " + quoted +
                                  " (an IPv6 address goes in brackets: http://[::1]:8080/)");
    }
  }
  if (host.empty()) throw std::invalid_argument("URL has no host: " + quoted);
  out.host = lower(host);
  out.port = out.default_port();
  if (has_port && !port.empty()) {
    unsigned long value = 0;
    const bool digits = port.size() <= 5 && std::all_of(port.begin(), port.end(), is_digit);
    if (digits) {
      for (char c : port) value = value * 10 + static_cast<unsigned long>(c - '0');
    }
    if (!digits || value == 0 || value > 65535) {
      throw std::invalid_argument("URL port must be a number from 1 to 65535, got '" +
                                  std::string(port) + "' in " + quoted);
    }
    out.port = static_cast<std::uint16_t>(value);
  }
  rest = rest.substr(0, rest.find('#'));
  if (rest.empty()) {
    out.target = "/";
  } else if (rest.front() == '?') {
    out.target = "/" + std::string(rest);
  } else {
    out.target = std::string(rest);
  }
  return out;
}

HttpUrl HttpUrl::resolve(std::string_view reference) const {
  std::string_view ref = trim_space(reference);
  ref = ref.substr(0, ref.find('#'));
  if (!scheme_of(ref).empty()) return parse(ref);
  if (ref.starts_with("//")) return parse(scheme + ":" + std::string(ref));
  const std::size_t q = ref.find('?');
  const std::string_view ref_path = ref.substr(0, q);
  const std::string_view ref_query =
      q == std::string_view::npos ? std::string_view{} : ref.substr(q);
  HttpUrl out = *this;
  if (ref_path.empty()) {
    if (q != std::string_view::npos) out.target = std::string(path()) + std::string(ref_query);
  } else if (ref_path.front() == '/') {
    out.target = remove_dot_segments(ref_path) + std::string(ref_query);
  } else {
    const std::string_view base = path();
    const std::string merged =
        std::string(base.substr(0, base.rfind('/') + 1)) + std::string(ref_path);
    out.target = remove_dot_segments(merged) + std::string(ref_query);
  }
  if (out.target.empty() || out.target.front() != '/') out.target.insert(0, "/");
  return parse(out.to_string());  // checks the characters the reference brought
}

std::string HttpUrl::authority() const {
  std::string out = host.find(':') != std::string::npos ? "[" + host + "]" : host;
  if (port != default_port()) out += ":" + std::to_string(port);
  return out;
}

std::string_view HttpUrl::path() const noexcept {
  const std::string_view t(target);
  return t.substr(0, t.find('?'));
}

std::string HttpUrl::to_string() const { return scheme + "://" + authority() + target; }

// ---- HttpRequestBody ------------------------------------------------------------------------

struct HttpRequestBody::Stream {
  std::optional<AsyncGenerator<std::string>> generator;
  Producer producer;
  bool started = false;
};

HttpRequestBody HttpRequestBody::stream(AsyncGenerator<std::string> chunks) {
  HttpRequestBody body;
  body.kind_ = Kind::stream;
  body.stream_ = std::make_shared<Stream>();
  body.stream_->generator.emplace(std::move(chunks));
  return body;
}

HttpRequestBody HttpRequestBody::stream(Producer producer) {
  if (!producer) throw std::invalid_argument("HttpRequestBody::stream: the producer is empty");
  HttpRequestBody body;
  body.kind_ = Kind::stream;
  body.stream_ = std::make_shared<Stream>();
  body.stream_->producer = std::move(producer);
  return body;
}

bool HttpRequestBody::started() const noexcept { return stream_ && stream_->started; }

Coro<std::string> HttpRequestBody::next_chunk() {
  std::shared_ptr<Stream> s = stream_;
  if (!s) co_return std::string();
  s->started = true;
  if (s->generator) {
    for (;;) {
      std::optional<std::string> chunk = co_await s->generator->next();
      if (!chunk) co_return std::string();
      if (!chunk->empty()) co_return std::move(*chunk);  // an empty one would end the body
    }
  }
  Coro<std::string> next = s->producer();
  std::string chunk = co_await next;
  co_return chunk;
}

namespace detail {

class HttpConnection;
struct HostPool;

// ---- HttpClientState ------------------------------------------------------------------------

struct HostKey {
  std::string scheme;
  std::string host;
  std::uint16_t port = 0;
  friend bool operator<(const HostKey& a, const HostKey& b) {
    return std::tie(a.scheme, a.host, a.port) < std::tie(b.scheme, b.host, b.port);
  }
};

struct HttpClientState {
  explicit HttpClientState(HttpClientOptions o) : options(std::move(o)) {}

  /// Binds the client to the running loop at its first request.
  void bind_loop() {
    EventLoop& running = get_running_loop();
    if (loop == nullptr) {
      loop = &running;
    } else if (loop != &running) {
      throw InvalidStateError(
          "HttpClient used from a second event loop: a client belongs to the loop of its first "
          "request; make one client per loop");
    }
  }

  std::shared_ptr<HostPool> pool_for(const HttpUrl& url);

  SslContext ssl_context() {
    if (!options.ssl_context) {
      options.ssl_context = SslContext::create_default_context(SslPurpose::server_auth);
    }
    return *options.ssl_context;
  }

  HttpClientOptions options;
  EventLoop* loop = nullptr;
  std::map<HostKey, std::shared_ptr<HostPool>> pools;
  bool closed = false;
  std::size_t open = 0;  // connections made and not yet lost
  Event changed;         // set whenever a connection is lost
};

// ---- HostPool -------------------------------------------------------------------------------

struct HostPool {
  HostPool(HostKey k, std::size_t limit, std::optional<Duration> idle)
      : key(std::move(k)), slots(static_cast<std::int64_t>(limit)), idle_timeout(idle) {}

  void put_idle(std::shared_ptr<HttpConnection> connection);
  std::shared_ptr<HttpConnection> take_idle();
  void remove_idle(const HttpConnection* connection) noexcept;
  void close_idle() noexcept;

  HostKey key;
  Semaphore slots;
  std::optional<Duration> idle_timeout;
  std::vector<std::shared_ptr<HttpConnection>> idle;  // most recently used last
  bool closed = false;
};

std::shared_ptr<HostPool> HttpClientState::pool_for(const HttpUrl& url) {
  HostKey key{url.scheme, url.host, url.port};
  auto it = pools.find(key);
  if (it == pools.end()) {
    auto pool =
        std::make_shared<HostPool>(key, options.max_connections_per_host, options.idle_timeout);
    it = pools.emplace(std::move(key), std::move(pool)).first;
  }
  return it->second;
}

// ---- HttpExchange ---------------------------------------------------------------------------

/// One request and its response: what HttpClientResponse shows.
struct HttpExchange {
  HttpExchange(std::string m, std::string u, std::size_t limit) noexcept
      : method(std::move(m)), url(std::move(u)), read_limit(limit) {}
  ~HttpExchange() { abort_connection(); }
  HttpExchange(const HttpExchange&) = delete;
  HttpExchange& operator=(const HttpExchange&) = delete;

  /// "GET http://host/x": how error messages start.
  std::string describe() const { return method + " " + url; }

  void notify() {
    if (waiter.valid() && !waiter.done()) waiter.set_result();
  }
  /// A fresh future that notify() completes.
  Future<void> arm_waiter() {
    waiter = Future<void>(*loop);
    return waiter;
  }

  void fail(std::exception_ptr e, bool before_any_byte) {
    if (!error) {
      error = std::move(e);
      error_before_any_byte = before_any_byte;
    }
    notify();
  }

  /// The connection reported the end of the response.
  void on_complete(bool reusable);
  /// Gives the connection back (pooled when @p reusable, else closed) and the slot.
  void release_connection(bool reusable) noexcept;
  /// Closes the connection at once (the response is incomplete or abandoned) and gives back
  /// the slot.
  void abort_connection() noexcept;
  /// The body bytes were read down to the limit: let the connection read again.
  void maybe_resume_reading() noexcept;

  std::string method;
  std::string url;
  std::vector<std::string> history;
  std::optional<TimePoint> deadline;
  std::optional<Duration> total_timeout;
  std::size_t read_limit;
  std::optional<std::uint64_t> max_body;
  EventLoop* loop = nullptr;

  std::shared_ptr<HostPool> pool;  // before slot: the Semaphore outlives the guard
  SemaphoreGuard slot;
  std::shared_ptr<HttpConnection> connection;
  bool allow_reuse = true;      // false: the request said Connection: close
  bool sending = false;         // a streamed body is being sent
  bool sent_any = false;        // bytes of the request were written
  bool early_complete = false;  // the response completed while the body was being sent

  std::unique_ptr<HttpResponseHead> head;
  HttpHeaders headers;
  std::deque<std::string> chunks;
  std::size_t buffered = 0;
  bool complete = false;  // the whole body was received
  bool closed = false;    // HttpClientResponse::close()
  bool reading = false;   // a read is in progress
  std::exception_ptr error;
  bool error_before_any_byte = false;
  Future<void> waiter;
};

// ---- HttpConnection -------------------------------------------------------------------------

class HttpConnection final : public HttpResponseParser::Callbacks,
                             public std::enable_shared_from_this<HttpConnection> {
 public:
  HttpConnection(std::weak_ptr<HttpClientState> client, std::weak_ptr<HostPool> pool,
                 std::size_t max_header_bytes)
      : client_(std::move(client)), pool_(std::move(pool)), parser_(*this, max_header_bytes) {}

  // ---- From the protocol ----

  void made(Transport& transport) {
    transport_ = &transport;
    loop_ = &transport.get_loop();
    if (auto client = client_.lock()) {
      ++client->open;
      counted_ = true;
    }
  }

  void data(std::span<const std::byte> bytes) {
    if (exchange_ == nullptr) {
      // Bytes nobody asked for (idle, or after a response): this connection is out of step.
      broken_ = true;
      leave_pool();
      if (transport_ != nullptr) transport_->close();
      return;
    }
    const std::size_t used = parser_.feed(bytes);
    switch (parser_.state()) {
      case HttpResponseParser::State::complete:
        finish_exchange(keep_alive_ && used == bytes.size());
        if (used != bytes.size()) {
          broken_ = true;
          if (transport_ != nullptr) transport_->close();
        }
        break;
      case HttpResponseParser::State::failed:
        fail_exchange(false);
        if (transport_ != nullptr) transport_->abort();
        break;
      default:
        break;
    }
  }

  bool eof() {
    eof_ = true;
    end_of_input(std::error_code());
    leave_pool();
    return false;
  }

  void lost(std::error_code ec) {
    transport_ = nullptr;
    broken_ = true;
    if (!eof_) end_of_input(ec);
    leave_pool();
    idle_timer_.cancel();
    write_paused_ = false;
    if (drain_.valid() && !drain_.done()) drain_.set_result();
    if (counted_) {
      counted_ = false;
      if (auto client = client_.lock()) {
        --client->open;
        client->changed.set();
      }
    }
  }

  void pause_writing() { write_paused_ = true; }
  void resume_writing() {
    write_paused_ = false;
    if (drain_.valid() && !drain_.done()) drain_.set_result();
  }

  // ---- From the client ----

  Transport* transport() const noexcept { return transport_; }
  bool usable() const noexcept {
    return transport_ != nullptr && !transport_->is_closing() && !broken_ && !eof_;
  }
  /// Whether this connection carried a request before.
  bool reused() const noexcept { return exchanges_ > 1; }
  bool write_paused() const noexcept { return write_paused_; }
  /// Completes when writing may go on (or the connection is lost).
  Future<void> drain() {
    drain_ = Future<void>(*loop_);
    if (!write_paused_ || transport_ == nullptr) drain_.set_result();
    return drain_;
  }

  /// Starts an exchange: the response that comes next is @p exchange's.
  void begin(HttpExchange& exchange, bool head_request) {
    idle_timer_.cancel();
    exchange_ = &exchange;
    ++exchanges_;
    keep_alive_ = false;
    parser_.start(head_request);
  }
  /// The exchange is gone or done with this connection.
  void detach(const HttpExchange* exchange) noexcept {
    if (exchange_ == exchange) exchange_ = nullptr;
    set_reading(true);
  }

  void pause_reading() noexcept { set_reading(false); }
  void resume_reading() noexcept { set_reading(true); }
  bool reading_paused() const noexcept { return reading_paused_; }

  void close() noexcept {
    broken_ = true;
    leave_pool();
    idle_timer_.cancel();
    if (transport_ != nullptr) transport_->close();
  }
  void abort() noexcept {
    broken_ = true;
    leave_pool();
    idle_timer_.cancel();
    if (transport_ != nullptr) transport_->abort();
  }

  /// Now idle in its pool: closed after @p timeout unless reused.
  void enter_idle(std::optional<Duration> timeout) {
    set_reading(true);
    if (!timeout || loop_ == nullptr) return;
    idle_timer_ = loop_->call_later(*timeout, [weak = weak_from_this()] {
      if (std::shared_ptr<HttpConnection> self = weak.lock()) self->close();
    });
  }
  void leave_idle() noexcept { idle_timer_.cancel(); }

 private:
  // ---- HttpResponseParser::Callbacks ----

  void head_received(std::unique_ptr<HttpResponseHead> head) override {
    keep_alive_ = head->keep_alive;
    HttpExchange& ex = *exchange_;
    ex.head = std::move(head);
    ex.headers = HttpHeaders(ex.head->fields);
    ex.notify();
  }

  void body_received(std::span<const std::byte> bytes) override {
    HttpExchange& ex = *exchange_;
    if (ex.closed) return;
    ex.chunks.emplace_back(reinterpret_cast<const char*>(bytes.data()), bytes.size());
    ex.buffered += bytes.size();
    if (ex.buffered > ex.read_limit) set_reading(false);
    ex.notify();
  }

  // ---- Helpers ----

  void set_reading(bool on) noexcept {
    if (reading_paused_ == !on) return;
    reading_paused_ = !on;
    if (transport_ == nullptr) return;
    if (on) {
      transport_->resume_reading();
    } else {
      transport_->pause_reading();
    }
  }

  void finish_exchange(bool reusable) {
    HttpExchange* ex = std::exchange(exchange_, nullptr);
    if (ex != nullptr) ex->on_complete(reusable);
  }

  void fail_exchange(bool before_any_byte, std::error_code ec = {}) {
    HttpExchange* ex = std::exchange(exchange_, nullptr);
    broken_ = true;
    if (ex == nullptr) return;
    std::exception_ptr e;
    if (ec && before_any_byte) {
      e = std::make_exception_ptr(
          std::system_error(ec, ex->describe() + ": the connection was lost before the response"));
    } else if (ec && parser_.state() != HttpResponseParser::State::failed) {
      e = std::make_exception_ptr(std::system_error(
          ec, ex->describe() + ": the connection was lost in the middle of the response"));
    } else {
      e = std::make_exception_ptr(HttpClientError(ex->describe() + ": " + parser_.error()));
    }
    ex->fail(std::move(e), before_any_byte);
    ex->abort_connection();
  }

  /// The server closed its side (@p ec empty) or the connection was lost.
  void end_of_input(std::error_code ec) {
    if (exchange_ == nullptr) return;
    const bool any_byte = parser_.has_bytes();
    if (!ec) {
      parser_.feed_eof();
      if (parser_.state() == HttpResponseParser::State::complete) {
        finish_exchange(false);
        return;
      }
      fail_exchange(parser_.failed_before_any_byte());
      return;
    }
    // A reset: whatever was in progress is incomplete, even a close-delimited body.
    parser_.feed_eof();
    fail_exchange(!any_byte, ec);
  }

  void leave_pool() noexcept {
    if (std::shared_ptr<HostPool> pool = pool_.lock()) pool->remove_idle(this);
  }

  std::weak_ptr<HttpClientState> client_;
  std::weak_ptr<HostPool> pool_;
  HttpResponseParser parser_;
  Transport* transport_ = nullptr;
  EventLoop* loop_ = nullptr;
  HttpExchange* exchange_ = nullptr;
  TimerHandle idle_timer_;
  Future<void> drain_;
  std::uint64_t exchanges_ = 0;
  bool keep_alive_ = false;
  bool broken_ = false;  // never to be pooled again
  bool eof_ = false;
  bool reading_paused_ = false;
  bool write_paused_ = false;
  bool counted_ = false;
};

/// The protocol of a client connection: hands every callback to its HttpConnection.
class ClientProtocol final : public Protocol {
 public:
  explicit ClientProtocol(std::shared_ptr<HttpConnection> c) noexcept : c_(std::move(c)) {}
  void connection_made(Transport& transport) override { c_->made(transport); }
  void data_received(std::span<const std::byte> data) override { c_->data(data); }
  bool eof_received() override { return c_->eof(); }
  void connection_lost(std::error_code ec) override { c_->lost(ec); }
  void pause_writing() override { c_->pause_writing(); }
  void resume_writing() override { c_->resume_writing(); }

 private:
  std::shared_ptr<HttpConnection> c_;
};

// ---- HostPool and HttpExchange, continued ----------------------------------------------------

void HostPool::put_idle(std::shared_ptr<HttpConnection> connection) {
  if (closed || !connection->usable()) {
    connection->close();
    return;
  }
  connection->enter_idle(idle_timeout);
  idle.push_back(std::move(connection));
}

std::shared_ptr<HttpConnection> HostPool::take_idle() {
  while (!idle.empty()) {
    std::shared_ptr<HttpConnection> c = std::move(idle.back());
    idle.pop_back();
    c->leave_idle();
    if (c->usable()) return c;
    c->abort();
  }
  return nullptr;
}

void HostPool::remove_idle(const HttpConnection* connection) noexcept {
  std::erase_if(idle, [connection](const std::shared_ptr<HttpConnection>& c) {
    return c.get() == connection;
  });
}

void HostPool::close_idle() noexcept {
  std::vector<std::shared_ptr<HttpConnection>> all = std::move(idle);
  idle.clear();
  for (auto& c : all) c->close();
}

void HttpExchange::on_complete(bool reusable) {
  complete = true;
  if (sending) {
    // The server answered before the whole body went out: the connection is out of step.
    early_complete = true;
  } else {
    release_connection(reusable);
  }
  notify();
}

void HttpExchange::release_connection(bool reusable) noexcept {
  if (std::shared_ptr<HttpConnection> c = std::move(connection)) {
    c->detach(this);
    if (reusable && allow_reuse && pool && !pool->closed) {
      try {
        pool->put_idle(std::move(c));
      } catch (...) {
        // Out of memory for the idle list: the connection is just not pooled.
      }
    } else {
      c->close();
    }
  }
  if (slot.owns()) slot.release();
}

void HttpExchange::abort_connection() noexcept {
  if (std::shared_ptr<HttpConnection> c = std::move(connection)) {
    c->detach(this);
    c->abort();
  }
  if (slot.owns()) slot.release();
}

void HttpExchange::maybe_resume_reading() noexcept {
  if (connection && connection->reading_paused() && buffered <= read_limit) {
    connection->resume_reading();
  }
}

// ---- Requests -------------------------------------------------------------------------------

/// What one request() sends, updated as redirects are followed.
struct RequestPlan {
  std::string method;
  HttpUrl url;
  std::vector<HttpField> headers;
  HttpRequestBody body;
  bool follow_redirects = true;
  int max_redirects = 10;
  std::optional<TimePoint> deadline;
  bool connect_timed_out = false;

  std::string describe() const { return method + " " + url.to_string(); }
};

namespace {

/// The request head (and a bytes body) as sent.
std::string build_request(const HttpClientState& st, const RequestPlan& plan) {
  const HttpRequestBody& body = plan.body;
  std::string out;
  out.reserve(256 + (body.kind() == HttpRequestBody::Kind::bytes ? body.bytes().size() : 0));
  out += plan.method;
  out += ' ';
  out += plan.url.target;
  out += " HTTP/1.1\r\n";
  if (!has_field(plan.headers, "host")) {
    out += "Host: ";
    out += plan.url.authority();
    out += "\r\n";
  }
  if (!st.options.user_agent.empty() && !has_field(plan.headers, "user-agent")) {
    out += "User-Agent: ";
    out += st.options.user_agent;
    out += "\r\n";
  }
  switch (body.kind()) {
    case HttpRequestBody::Kind::none:
      if (plan.method == "POST" || plan.method == "PUT" || plan.method == "PATCH") {
        out += "Content-Length: 0\r\n";
      }
      break;
    case HttpRequestBody::Kind::bytes:
      out += "Content-Length: ";
      out += std::to_string(body.bytes().size());
      out += "\r\n";
      break;
    case HttpRequestBody::Kind::stream:
      out += "Transfer-Encoding: chunked\r\n";
      break;
  }
  for (const HttpField& f : plan.headers) {
    out += f.name;
    out += ": ";
    out += f.value;
    out += "\r\n";
  }
  out += "\r\n";
  if (body.kind() == HttpRequestBody::Kind::bytes) out += body.bytes();
  return out;
}

/// Opens a new connection for @p pool.
Coro<std::shared_ptr<HttpConnection>> open_connection(std::shared_ptr<HttpClientState> st,
                                                      std::shared_ptr<HostPool> pool,
                                                      std::shared_ptr<RequestPlan> plan) {
  auto connection = std::make_shared<HttpConnection>(st, pool, st->options.max_header_bytes);
  ConnectOptions options;
  options.timeout = st->options.connect_timeout;
  if (plan->url.is_https()) {
    SslOptions ssl(st->ssl_context());
    ssl.server_hostname = plan->url.host;
    options.ssl = std::move(ssl);
  }
  auto factory = [connection] { return std::make_unique<ClientProtocol>(connection); };
  Coro<Connection<ClientProtocol>> connect =
      create_connection(std::move(factory), plan->url.host, plan->url.port, std::move(options));
  try {
    co_await connect;
  } catch (const TimeoutError& e) {
    plan->connect_timed_out = true;
    throw TimeoutError(plan->describe() + ": " + e.what() +
                       " (HttpClientOptions::connect_timeout)");
  }
  co_return connection;
}

/// Sends the request of @p plan on the exchange's connection: the head, then the body.
Coro<void> send_request(std::shared_ptr<HttpClientState> st, std::shared_ptr<RequestPlan> plan,
                        std::shared_ptr<HttpExchange> ex) {
  std::shared_ptr<HttpConnection> connection = ex->connection;
  Transport* t = connection->transport();
  if (t == nullptr) co_return;
  t->write(build_request(*st, *plan));
  ex->sent_any = true;
  if (plan->body.kind() != HttpRequestBody::Kind::stream) co_return;

  struct Sending {
    HttpExchange& ex;
    explicit Sending(HttpExchange& e) : ex(e) { ex.sending = true; }
    ~Sending() { ex.sending = false; }
  };
  {
    Sending sending(*ex);
    for (;;) {
      Coro<std::string> next = plan->body.next_chunk();
      std::string chunk = co_await next;
      t = ex->connection ? ex->connection->transport() : nullptr;
      if (t == nullptr || ex->complete || ex->error) break;  // the server answered or left
      if (chunk.empty()) {
        t->write(std::string_view("0\r\n\r\n"));
        break;
      }
      char size_line[24];
      const int n = std::snprintf(size_line, sizeof size_line, "%zx\r\n", chunk.size());
      static constexpr char crlf[] = {'\r', '\n'};
      const std::span<const std::byte> parts[] = {
          std::as_bytes(std::span(size_line, static_cast<std::size_t>(n))),
          std::as_bytes(std::span(chunk.data(), chunk.size())), std::as_bytes(std::span(crlf))};
      t->writelines(parts);
      if (ex->connection && ex->connection->write_paused()) {
        Future<void> drained = ex->connection->drain();
        co_await drained;
      }
    }
  }
  if (ex->complete && ex->connection) ex->release_connection(false);
}

/// Waits until the exchange has the response head or an error.
Coro<void> wait_head(std::shared_ptr<HttpExchange> ex) {
  for (;;) {
    if (ex->head || ex->error) break;
    Future<void> changed = ex->arm_waiter();
    co_await changed;
  }
}

/// One exchange for @p plan: a slot and a connection of its pool, the request sent, the
/// response head received. Retries once on a new connection when a reused one turns out to
/// have been closed by the server.
Coro<std::shared_ptr<HttpExchange>> exchange_once(std::shared_ptr<HttpClientState> st,
                                                  std::shared_ptr<RequestPlan> plan) {
  std::shared_ptr<HostPool> pool = st->pool_for(plan->url);
  SemaphoreGuard slot = co_await pool->slots.acquire();
  bool retried = false;
  for (;;) {
    std::shared_ptr<HttpConnection> connection;
    if (!retried) connection = pool->take_idle();
    if (!connection) {
      Coro<std::shared_ptr<HttpConnection>> open = open_connection(st, pool, plan);
      connection = co_await open;
    }
    auto ex = std::make_shared<HttpExchange>(plan->method, plan->url.to_string(),
                                             st->options.read_buffer_limit);
    ex->loop = st->loop;
    ex->deadline = plan->deadline;
    ex->total_timeout = st->options.total_timeout;
    ex->max_body = st->options.max_body_bytes;
    ex->allow_reuse = !asks_close(plan->headers);
    ex->pool = pool;
    ex->slot = std::move(slot);
    ex->connection = connection;
    connection->begin(*ex, plan->method == "HEAD");

    Coro<void> send = send_request(st, plan, ex);
    co_await send;
    Coro<void> head = wait_head(ex);
    co_await head;
    if (ex->head) co_return ex;

    const bool body_replayable =
        plan->body.kind() != HttpRequestBody::Kind::stream || !plan->body.started();
    const bool stale = connection->reused() && ex->error_before_any_byte && !retried &&
                       body_replayable && (is_idempotent(plan->method) || !ex->sent_any);
    if (!stale) std::rethrow_exception(ex->error);
    // Keep the slot for the retry; the connection is dropped.
    slot = std::move(ex->slot);
    ex->abort_connection();
    retried = true;
  }
}

/// Reads the body for @p ex, waiting at most until its deadline when @p bounded.
Coro<std::string> read_chunk_of(std::shared_ptr<HttpExchange> ex, bool bounded) {
  if (ex->reading) {
    throw InvalidStateError(
        "HttpClientResponse: a read was started while another read of the "
        "same response is in progress");
  }
  struct Reading {
    HttpExchange& ex;
    explicit Reading(HttpExchange& e) : ex(e) { ex.reading = true; }
    ~Reading() { ex.reading = false; }
  } reading(*ex);
  for (;;) {
    if (!ex->chunks.empty()) {
      // Everything received so far, in one string (at most read_buffer_limit and one read).
      std::string chunk = std::move(ex->chunks.front());
      ex->chunks.pop_front();
      if (!ex->chunks.empty()) {
        chunk.reserve(ex->buffered);
        for (const std::string& more : ex->chunks) chunk += more;
        ex->chunks.clear();
      }
      ex->buffered = 0;
      ex->maybe_resume_reading();
      co_return chunk;
    }
    if (ex->error) std::rethrow_exception(ex->error);
    if (ex->complete || ex->closed) co_return std::string();
    Future<void> changed = ex->arm_waiter();
    if (!bounded || !ex->deadline) {
      co_await changed;
      continue;
    }
    bool timed_out = false;
    try {
      Coro<void> wait = timeout_at(ex->deadline, std::move(changed));
      co_await wait;
    } catch (const TimeoutError&) {
      timed_out = true;
    }
    if (timed_out) {
      std::string message = ex->describe() + ": the body did not arrive within the total timeout";
      if (ex->total_timeout) message += " of " + describe_duration(*ex->total_timeout);
      message += " (HttpClientOptions::total_timeout)";
      ex->fail(std::make_exception_ptr(TimeoutError(message)), false);
      ex->abort_connection();
      std::rethrow_exception(ex->error);
    }
  }
}

/// Reads and drops the body of a redirect, up to a small amount; a longer one is not worth
/// reading, and its connection is closed instead.
Coro<void> discard_body(std::shared_ptr<HttpExchange> ex) {
  constexpr std::size_t most = 64 * 1024;
  std::size_t dropped = 0;
  try {
    while (dropped <= most && !(ex->complete && ex->chunks.empty())) {
      Coro<std::string> read = read_chunk_of(ex, false);
      std::string chunk = co_await read;
      if (chunk.empty()) break;
      dropped += chunk.size();
    }
  } catch (const HttpClientError&) {
  } catch (const std::system_error&) {
  }
  if (ex->complete) {
    ex->chunks.clear();
    ex->buffered = 0;
  } else {
    ex->abort_connection();
  }
}

/// Follows redirects from the first exchange to the last.
Coro<HttpClientResponse> follow_redirects(std::shared_ptr<HttpClientState> st,
                                          std::shared_ptr<RequestPlan> plan) {
  std::vector<std::string> history;
  for (int redirects = 0;; ++redirects) {
    Coro<std::shared_ptr<HttpExchange>> once = exchange_once(st, plan);
    std::shared_ptr<HttpExchange> ex = co_await once;
    ex->history = history;
    const int status = ex->head->status;
    const std::optional<std::string_view> location = ex->headers.get("location");
    if (!plan->follow_redirects || !is_redirect(status) || !location) {
      co_return HttpClientResponse(std::move(ex));
    }
    if (redirects >= plan->max_redirects) {
      throw HttpClientError(plan->describe() + ": more than " +
                            std::to_string(plan->max_redirects) +
                            " redirects (HttpRequestOptions::max_redirects); started at " +
                            (history.empty() ? plan->url.to_string() : history.front()));
    }
    HttpUrl next;
    try {
      next = plan->url.resolve(*location);
    } catch (const std::invalid_argument& e) {
      throw HttpClientError(plan->describe() + ": cannot follow the " + std::to_string(status) +
                            " redirect: " + e.what());
    }
    bool drop_body = false;
    if (status == 303) {
      if (plan->method != "HEAD") {
        plan->method = "GET";
        drop_body = true;
      }
    } else if ((status == 301 || status == 302) && plan->method == "POST") {
      plan->method = "GET";
      drop_body = true;
    } else if ((status == 307 || status == 308) &&
               plan->body.kind() == HttpRequestBody::Kind::stream) {
      throw HttpClientError(plan->describe() + ": cannot follow the " + std::to_string(status) +
                            " redirect to " + next.to_string() +
                            ": a streamed request body cannot be sent again (send the body as "
                            "bytes, or set follow_redirects = false)");
    }
    if (drop_body) {
      plan->body = HttpRequestBody();
      for (std::string_view name :
           {"content-type", "content-encoding", "content-language", "content-location"}) {
        erase_field(plan->headers, name);
      }
    }
    if (!next.same_origin(plan->url)) {
      for (std::string_view name : {"authorization", "proxy-authorization", "cookie"}) {
        erase_field(plan->headers, name);
      }
      erase_field(plan->headers, "host");  // a Host given for the old origin
    }
    Coro<void> discard = discard_body(ex);
    co_await discard;
    ex.reset();
    history.push_back(plan->url.to_string());
    plan->url = std::move(next);
  }
}

/// A whole request(), under the total timeout.
Coro<HttpClientResponse> run_request(std::shared_ptr<HttpClientState> st,
                                     std::shared_ptr<RequestPlan> plan) {
  st->bind_loop();
  if (st->closed) {
    throw InvalidStateError("HttpClient is closed: " + plan->describe() + " was not sent");
  }
  const std::optional<Duration> total = st->options.total_timeout;
  if (total) plan->deadline = st->loop->time() + *total;
  Coro<HttpClientResponse> inner = follow_redirects(st, plan);
  if (!plan->deadline) {
    HttpClientResponse response = co_await inner;
    co_return response;
  }
  bool timed_out = false;
  try {
    Coro<HttpClientResponse> bounded = timeout_at(plan->deadline, std::move(inner));
    HttpClientResponse response = co_await bounded;
    co_return response;
  } catch (const TimeoutError&) {
    if (plan->connect_timed_out) throw;
    timed_out = true;
  }
  (void)timed_out;
  throw TimeoutError(plan->describe() + ": no response within the total timeout of " +
                     describe_duration(*total) + " (HttpClientOptions::total_timeout)");
}

Coro<std::string> read_all(std::shared_ptr<HttpExchange> ex) {
  std::string out;
  if (ex->max_body && ex->head && ex->head->content_length &&
      *ex->head->content_length > *ex->max_body) {
    const std::uint64_t length = *ex->head->content_length;
    ex->closed = true;
    ex->abort_connection();
    throw HttpClientError(ex->describe() + ": the body (Content-Length " + std::to_string(length) +
                          ") is larger than max_body_bytes (" + std::to_string(*ex->max_body) +
                          "); read it with read_chunk()");
  }
  for (;;) {
    Coro<std::string> read = read_chunk_of(ex, true);
    std::string chunk = co_await read;
    if (chunk.empty()) break;
    if (ex->max_body && out.size() + chunk.size() > *ex->max_body) {
      ex->closed = true;
      ex->chunks.clear();
      ex->buffered = 0;
      ex->abort_connection();
      throw HttpClientError(ex->describe() + ": the body is larger than max_body_bytes (" +
                            std::to_string(*ex->max_body) + "); read it with read_chunk()");
    }
    if (out.empty()) {
      out = std::move(chunk);
    } else {
      out += chunk;
    }
  }
  co_return out;
}

Coro<void> wait_all_closed(std::shared_ptr<HttpClientState> st) {
  for (;;) {
    if (st->open == 0) break;
    st->changed.clear();
    co_await st->changed.wait();
  }
}

void check_field(const HttpField& f) {
  if (!is_token(f.name)) {
    throw std::invalid_argument(
        "header field name must be a token (letters, digits and "
        "!#$%&'*+-.^_`|~), got '" +
        f.name + "'");
  }
  for (char c : f.value) {
    if (c == '\r' || c == '\n' || c == '\0') {
      throw std::invalid_argument("header field '" + f.name + "' has a CR, LF or NUL in its value");
    }
  }
  if (http_iequals(f.name, "content-length") || http_iequals(f.name, "transfer-encoding")) {
    throw std::invalid_argument("header field '" + f.name +
                                "' may not be given: the client sets it from the body");
  }
}

}  // namespace

}  // namespace detail

// ---- HttpClientResponse ---------------------------------------------------------------------

HttpClientResponse::HttpClientResponse(std::shared_ptr<detail::HttpExchange> state) noexcept
    : state_(std::move(state)) {}
HttpClientResponse::HttpClientResponse(HttpClientResponse&&) noexcept = default;
HttpClientResponse& HttpClientResponse::operator=(HttpClientResponse&&) noexcept = default;
HttpClientResponse::~HttpClientResponse() = default;

int HttpClientResponse::status() const noexcept { return state_->head->status; }
std::string_view HttpClientResponse::reason() const noexcept { return state_->head->reason; }
int HttpClientResponse::version_major() const noexcept { return state_->head->version_major; }
int HttpClientResponse::version_minor() const noexcept { return state_->head->version_minor; }
const HttpHeaders& HttpClientResponse::headers() const noexcept { return state_->headers; }
std::optional<std::uint64_t> HttpClientResponse::content_length() const noexcept {
  return state_->head->content_length;
}
bool HttpClientResponse::is_chunked() const noexcept { return state_->head->chunked; }
const std::string& HttpClientResponse::url() const noexcept { return state_->url; }
const std::string& HttpClientResponse::method() const noexcept { return state_->method; }
const std::vector<std::string>& HttpClientResponse::history() const noexcept {
  return state_->history;
}

Coro<std::string> HttpClientResponse::read_chunk() { return detail::read_chunk_of(state_, true); }

Coro<std::string> HttpClientResponse::text() { return detail::read_all(state_); }

Coro<std::vector<std::byte>> HttpClientResponse::body() {
  return [](std::shared_ptr<detail::HttpExchange> ex) -> Coro<std::vector<std::byte>> {
    Coro<std::string> all = detail::read_all(ex);
    std::string text = co_await all;
    const auto* begin = reinterpret_cast<const std::byte*>(text.data());
    co_return std::vector<std::byte>(begin, begin + text.size());
  }(state_);
}

bool HttpClientResponse::at_eof() const noexcept {
  return state_->chunks.empty() && (state_->complete || state_->closed);
}

std::size_t HttpClientResponse::buffered_bytes() const noexcept { return state_->buffered; }

void HttpClientResponse::close() noexcept {
  if (!state_) return;
  detail::HttpExchange& ex = *state_;
  ex.closed = true;
  ex.chunks.clear();
  ex.buffered = 0;
  if (ex.complete) {
    if (!ex.sending) ex.release_connection(!ex.early_complete);
  } else {
    ex.abort_connection();
  }
  ex.notify();
}

// ---- HttpClient -----------------------------------------------------------------------------

HttpClient::HttpClient() : HttpClient(HttpClientOptions()) {}

HttpClient::HttpClient(HttpClientOptions options) {
  if (options.max_connections_per_host == 0) {
    throw std::invalid_argument("HttpClientOptions::max_connections_per_host must be > 0, got 0");
  }
  if (options.read_buffer_limit == 0) {
    throw std::invalid_argument("HttpClientOptions::read_buffer_limit must be > 0, got 0");
  }
  if (options.max_header_bytes == 0) {
    throw std::invalid_argument("HttpClientOptions::max_header_bytes must be > 0, got 0");
  }
  auto check_positive = [](const std::optional<Duration>& d, const char* name) {
    if (d && *d <= Duration::zero()) {
      throw std::invalid_argument(std::string("HttpClientOptions::") + name +
                                  " must be > 0 (std::nullopt for none)");
    }
  };
  check_positive(options.idle_timeout, "idle_timeout");
  check_positive(options.connect_timeout, "connect_timeout");
  check_positive(options.total_timeout, "total_timeout");
  state_ = std::make_shared<detail::HttpClientState>(std::move(options));
}

HttpClient::~HttpClient() { close(); }

Coro<HttpClientResponse> HttpClient::request(std::string method, std::string url,
                                             HttpRequestOptions options) {
  if (state_->closed) {
    throw InvalidStateError("HttpClient is closed: " + method + " " + url + " was not sent");
  }
  if (!is_token(method)) {
    throw std::invalid_argument("HTTP method must be a token (\"GET\", \"POST\", ...), got '" +
                                method + "'");
  }
  if (options.max_redirects < 0) {
    throw std::invalid_argument("HttpRequestOptions::max_redirects must be >= 0, got " +
                                std::to_string(options.max_redirects));
  }
  for (const HttpField& f : options.headers) detail::check_field(f);
  auto plan = std::make_shared<detail::RequestPlan>();
  plan->url = HttpUrl::parse(url);
  plan->method = std::move(method);
  plan->headers = std::move(options.headers);
  plan->body = std::move(options.body);
  plan->follow_redirects = options.follow_redirects;
  plan->max_redirects = options.max_redirects;
  return detail::run_request(state_, std::move(plan));
}

Coro<HttpClientResponse> HttpClient::request(std::string method, std::string url) {
  return request(std::move(method), std::move(url), HttpRequestOptions());
}

Coro<HttpClientResponse> HttpClient::get(std::string url, HttpRequestOptions options) {
  return request("GET", std::move(url), std::move(options));
}

Coro<HttpClientResponse> HttpClient::get(std::string url) {
  return request("GET", std::move(url), HttpRequestOptions());
}

Coro<HttpClientResponse> HttpClient::post(std::string url, HttpRequestBody body,
                                          std::string content_type) {
  return post(std::move(url), std::move(body), std::move(content_type), HttpRequestOptions());
}

Coro<HttpClientResponse> HttpClient::post(std::string url, HttpRequestBody body,
                                          std::string content_type, HttpRequestOptions options) {
  options.body = std::move(body);
  if (!content_type.empty()) {
    erase_field(options.headers, "content-type");
    options.headers.push_back({"Content-Type", std::move(content_type)});
  }
  return request("POST", std::move(url), std::move(options));
}

void HttpClient::close() noexcept {
  if (!state_) return;
  state_->closed = true;
  for (auto& [key, pool] : state_->pools) {
    pool->closed = true;
    pool->close_idle();
  }
}

bool HttpClient::is_closed() const noexcept { return state_->closed; }

Coro<void> HttpClient::wait_closed() { return detail::wait_all_closed(state_); }

std::size_t HttpClient::idle_connections() const noexcept {
  std::size_t n = 0;
  for (const auto& [key, pool] : state_->pools) n += pool->idle.size();
  return n;
}

std::size_t HttpClient::open_connections() const noexcept { return state_->open; }

const HttpClientOptions& HttpClient::options() const noexcept { return state_->options; }

}  // namespace strata
