#include <strata/protocols/http_client.hpp>

#include <catch2/catch.hpp>

#include "loop_test.hpp"

#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <exception>
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

#include <strata/core/async_generator.hpp>
#include <strata/core/coro.hpp>
#include <strata/core/errors.hpp>
#include <strata/core/event.hpp>
#include <strata/core/event_loop.hpp>
#include <strata/core/sleep.hpp>
#include <strata/core/socket_address.hpp>
#include <strata/core/task.hpp>
#include <strata/protocols/http_parser.hpp>
#include <strata/transports/server.hpp>
#include <strata/transports/tcp.hpp>
#include <strata/transports/transport.hpp>

using namespace std::chrono_literals;

namespace {

using strata::Coro;
using strata::HttpClient;
using strata::HttpClientError;
using strata::HttpClientOptions;
using strata::HttpClientResponse;
using strata::HttpRequestBody;
using strata::HttpRequestOptions;
using strata::HttpUrl;

// ---- A scripted server ------------------------------------------------------------------------
//
// Each accepted connection parses requests with HttpRequestParser (so the client's requests are
// checked by the strict parser too), records them, and hands each to the test's responder, which
// answers with raw bytes: all at once, one byte per loop iteration, never, or by closing.

/// A request as the server saw it.
struct SeenRequest {
  std::size_t connection = 0;  // which accepted connection, from 0
  std::string method;
  std::string target;
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;
  bool chunked = false;

  std::optional<std::string> header(std::string_view name) const {
    for (const auto& [n, v] : headers) {
      if (strata::http_iequals(n, name)) return v;
    }
    return std::nullopt;
  }
};

/// One server connection's end, shared with the tasks that write to it.
struct Peer {
  strata::Transport* transport = nullptr;
  std::size_t index = 0;
  bool lost = false;
  bool write_paused = false;
  int write_pauses = 0;
  std::function<void()> on_resume_writing;

  void write(std::string_view bytes) const {
    if (transport != nullptr) transport->write(bytes);
  }
  void close() const {
    if (transport != nullptr) transport->close();
  }
};

class ScriptServer;
using Responder = std::function<void(const std::shared_ptr<Peer>&, const SeenRequest&)>;

class ServerConnection final : public strata::Protocol,
                               public strata::HttpRequestParser::Callbacks {
 public:
  explicit ServerConnection(ScriptServer& server);
  void connection_made(strata::Transport& transport) override;
  void data_received(std::span<const std::byte> data) override;
  void connection_lost(std::error_code ec) override;
  void pause_writing() override {
    peer_->write_paused = true;
    ++peer_->write_pauses;
  }
  void resume_writing() override {
    peer_->write_paused = false;
    if (peer_->on_resume_writing) peer_->on_resume_writing();
  }

  void headers_received(const strata::HttpRequest& r) override {
    current_ = SeenRequest{};
    current_.connection = peer_->index;
    current_.method = std::string(r.method());
    current_.target = std::string(r.target());
    for (const strata::HttpHeader& h : r.headers()) {
      current_.headers.emplace_back(std::string(h.name), std::string(h.value));
    }
    current_.chunked = r.is_chunked();
  }
  void body_received(std::span<const std::byte> data) override {
    current_.body.append(reinterpret_cast<const char*>(data.data()), data.size());
  }
  void request_received(const strata::HttpRequest&) override {}

 private:
  void process();

  ScriptServer& server_;
  std::shared_ptr<Peer> peer_ = std::make_shared<Peer>();
  strata::HttpRequestParser parser_;
  std::string pending_;
  SeenRequest current_;
};

class ScriptServer {
 public:
  explicit ScriptServer(Responder responder) : responder(std::move(responder)) {}

  /// Starts listening on 127.0.0.1, an ephemeral port.
  Coro<void> start() {
    auto factory = [this] { return std::make_unique<ServerConnection>(*this); };
    Coro<std::unique_ptr<strata::Server>> create =
        strata::create_server(std::move(factory), "127.0.0.1", 0);
    server = co_await create;
    port = server->sockets().front().address.port();
  }

  std::string url(std::string_view path = "/") const {
    return "http://127.0.0.1:" + std::to_string(port) + std::string(path);
  }

  /// Waits until @p done() holds, re-checking whenever the server records something.
  template <class Pred>
  Coro<void> wait_until(Pred done) {
    for (;;) {
      if (done()) break;
      changed.clear();
      co_await changed.wait();
    }
  }
  Coro<void> wait_requests(std::size_t n) {
    return wait_until([this, n] { return requests.size() >= n; });
  }
  Coro<void> wait_lost(std::size_t n) {
    return wait_until([this, n] { return lost >= n; });
  }

  /// Writes @p bytes to @p peer one byte per loop iteration (a few iterations apart, so that
  /// the client reads each byte on its own), then closes if @p close_after.
  void write_slowly(const std::shared_ptr<Peer>& peer, std::string bytes,
                    bool close_after = false) {
    writers.push_back(strata::get_running_loop().create_task(
        [](std::shared_ptr<Peer> p, std::string b, bool close) -> Coro<void> {
          for (std::size_t i = 0; i < b.size(); ++i) {
            if (p->transport == nullptr) co_return;
            p->write(std::string_view(b).substr(i, 1));
            for (int k = 0; k < 3; ++k) co_await strata::sleep(0s);
          }
          if (close) p->close();
        }(peer, std::move(bytes), close_after)));
  }

  /// Closes the server and every open connection, and waits for the writers and connections.
  Coro<void> stop() {
    for (auto& task : writers) co_await task;
    for (auto& peer : peers) peer->close();
    server->close();
    co_await server->wait_closed();
    co_await wait_until([this] { return lost >= accepted; });
  }

  Responder responder;
  std::unique_ptr<strata::Server> server;
  std::uint16_t port = 0;
  std::vector<SeenRequest> requests;
  std::vector<std::shared_ptr<Peer>> peers;
  std::vector<strata::Task<void>> writers;
  std::size_t accepted = 0;
  std::size_t lost = 0;
  std::size_t open = 0;
  std::size_t max_open = 0;
  std::size_t parse_errors = 0;
  strata::Event changed;
};

namespace {
strata::HttpParserLimits server_limits() {
  strata::HttpParserLimits limits;
  limits.max_body_bytes = 64u << 20;
  return limits;
}
}  // namespace

ServerConnection::ServerConnection(ScriptServer& server)
    : server_(server), parser_(*this, server_limits()) {}

void ServerConnection::connection_made(strata::Transport& transport) {
  peer_->transport = &transport;
  peer_->index = server_.accepted++;
  server_.peers.push_back(peer_);
  ++server_.open;
  server_.max_open = std::max(server_.max_open, server_.open);
  server_.changed.set();
}

void ServerConnection::data_received(std::span<const std::byte> data) {
  pending_.append(reinterpret_cast<const char*>(data.data()), data.size());
  process();
}

void ServerConnection::process() {
  for (;;) {
    const std::size_t used =
        parser_.feed(std::as_bytes(std::span(pending_.data(), pending_.size())));
    pending_.erase(0, used);
    if (parser_.has_failed()) {
      ++server_.parse_errors;
      server_.changed.set();
      peer_->close();
      return;
    }
    if (!parser_.is_paused()) return;
    server_.requests.push_back(current_);
    server_.changed.set();
    if (server_.responder) server_.responder(peer_, server_.requests.back());
    parser_.resume();
    if (pending_.empty() || parser_.state() == strata::HttpRequestParser::State::closed) return;
  }
}

void ServerConnection::connection_lost(std::error_code) {
  peer_->transport = nullptr;
  peer_->lost = true;
  ++server_.lost;
  --server_.open;
  server_.changed.set();
}

/// A server whose responder is @p responder, started.
Coro<std::unique_ptr<ScriptServer>> start_server(Responder responder) {
  auto server = std::make_unique<ScriptServer>(std::move(responder));
  Coro<void> start = server->start();
  co_await start;
  co_return server;
}

/// A responder that answers every request with @p raw.
Responder reply(const std::string& raw) {
  return [raw](const std::shared_ptr<Peer>& peer, const SeenRequest&) { peer->write(raw); };
}

std::string ok_response(std::string_view body, std::string_view extra = {}) {
  return "HTTP/1.1 200 OK\r\nContent-Length: " + std::to_string(body.size()) + "\r\n" +
         std::string(extra) + "\r\n" + std::string(body);
}

/// How an awaitable ended: the exception, or nullptr.
template <class A>
Coro<std::exception_ptr> exception_of(A aw) {
  std::exception_ptr error;
  try {
    co_await std::move(aw);
  } catch (...) {
    error = std::current_exception();
  }
  co_return error;
}

/// "TimeoutError: ...", "HttpClientError: ...", "system_error: ...", "invalid_argument: ...".
std::string describe(const std::exception_ptr& e) {
  if (!e) return "none";
  try {
    std::rethrow_exception(e);
  } catch (const strata::TimeoutError& x) {
    return std::string("TimeoutError: ") + x.what();
  } catch (const HttpClientError& x) {
    return std::string("HttpClientError: ") + x.what();
  } catch (const strata::InvalidStateError& x) {
    return std::string("InvalidStateError: ") + x.what();
  } catch (const std::system_error& x) {
    return std::string("system_error: ") + x.what();
  } catch (const std::invalid_argument& x) {
    return std::string("invalid_argument: ") + x.what();
  } catch (const std::exception& x) {
    return std::string("exception: ") + x.what();
  } catch (const strata::CancelledError&) {
    return "CancelledError";
  }
}

/// GET @p url and read the body as text (awaiting the calls directly, as users would).
Coro<std::string> get_text(HttpClient& client, std::string url) {
  HttpClientResponse r = co_await client.get(std::move(url));
  std::string body = co_await r.text();
  co_return body;
}

}  // namespace

// ---- HttpUrl ----------------------------------------------------------------------------------

TEST_CASE("HttpUrl: parses scheme, host, port and target, with defaults and normalisation",
          "[protocols][http_client]") {
  HttpUrl u = HttpUrl::parse("HTTP://Example.COM/a/b?x=1#frag");
  CHECK(u.scheme == "http");
  CHECK(u.host == "example.com");
  CHECK(u.port == 80);
  CHECK(u.target == "/a/b?x=1");
  CHECK(u.path() == "/a/b");
  CHECK(u.to_string() == "http://example.com/a/b?x=1");

  u = HttpUrl::parse("https://example.com");
  CHECK(u.port == 443);
  CHECK(u.target == "/");
  CHECK(u.authority() == "example.com");

  u = HttpUrl::parse("http://h:8080?q");
  CHECK(u.port == 8080);
  CHECK(u.target == "/?q");
  CHECK(u.authority() == "h:8080");

  u = HttpUrl::parse("http://[::1]:8080/x");
  CHECK(u.host == "::1");
  CHECK(u.port == 8080);
  CHECK(u.authority() == "[::1]:8080");
  CHECK(u.to_string() == "http://[::1]:8080/x");

  u = HttpUrl::parse("https://[2001:db8::1]/");
  CHECK(u.host == "2001:db8::1");
  CHECK(u.port == 443);
  CHECK(u.authority() == "[2001:db8::1]");
}

TEST_CASE("HttpUrl: refuses what it cannot send, naming the URL and the problem",
          "[protocols][http_client]") {
  auto message = [](std::string_view url) -> std::string {
    try {
      (void)HttpUrl::parse(url);
    } catch (const std::invalid_argument& e) {
      return e.what();
    }
    return "accepted";
  };
  CHECK(message("ftp://example.com/") ==
        "unsupported URL scheme 'ftp' in 'ftp://example.com/' (only http and https)");
  CHECK_THAT(message("mailto:a@b"), Catch::Contains("unsupported URL scheme 'mailto'"));
  CHECK_THAT(message("example.com/x"), Catch::Contains("URL must be absolute"));
  CHECK_THAT(message("/x"), Catch::Contains("URL must be absolute"));
  CHECK_THAT(message("http:///x"), Catch::Contains("URL has no host"));
  CHECK_THAT(message("http://h:0/"), Catch::Contains("port must be a number from 1 to 65535"));
  CHECK_THAT(message("http://h:65536/"), Catch::Contains("port must be a number"));
  CHECK_THAT(message("http://h:x/"), Catch::Contains("port must be a number"));
  CHECK_THAT(message("http://user:pw@h/"), Catch::Contains("Authorization header"));
  CHECK_THAT(message("http://h/a b"), Catch::Contains("space or control character at offset 10"));
  CHECK_THAT(message("http://::1/"), Catch::Contains("malformed host"));
  CHECK_THAT(message("http://[::1/"), Catch::Contains("closing ']'"));
  CHECK_THAT(message("http://[zz]/"), Catch::Contains("malformed IPv6"));
}

TEST_CASE("HttpUrl: resolve follows RFC 3986 section 5.4's examples", "[protocols][http_client]") {
  const HttpUrl base = HttpUrl::parse("http://a/b/c/d;p?q");
  auto r = [&base](std::string_view ref) { return base.resolve(ref).to_string(); };
  // Normal examples (RFC 3986 §5.4.1), those with an http(s) result.
  CHECK(r("g") == "http://a/b/c/g");
  CHECK(r("./g") == "http://a/b/c/g");
  CHECK(r("g/") == "http://a/b/c/g/");
  CHECK(r("/g") == "http://a/g");
  CHECK(r("//g") == "http://g/");
  CHECK(r("?y") == "http://a/b/c/d;p?y");
  CHECK(r("g?y") == "http://a/b/c/g?y");
  CHECK(r("#s") == "http://a/b/c/d;p?q");
  CHECK(r("g#s") == "http://a/b/c/g");
  CHECK(r(";x") == "http://a/b/c/;x");
  CHECK(r("") == "http://a/b/c/d;p?q");
  CHECK(r(".") == "http://a/b/c/");
  CHECK(r("./") == "http://a/b/c/");
  CHECK(r("..") == "http://a/b/");
  CHECK(r("../") == "http://a/b/");
  CHECK(r("../g") == "http://a/b/g");
  CHECK(r("../..") == "http://a/");
  CHECK(r("../../g") == "http://a/g");
  // Abnormal examples (§5.4.2).
  CHECK(r("../../../g") == "http://a/g");
  CHECK(r("/./g") == "http://a/g");
  CHECK(r("/../g") == "http://a/g");
  CHECK(r("g.") == "http://a/b/c/g.");
  CHECK(r("..g") == "http://a/b/c/..g");
  CHECK(r("./../g") == "http://a/b/g");
  CHECK(r("g/./h") == "http://a/b/c/g/h");
  CHECK(r("g/../h") == "http://a/b/c/h");
  CHECK(r("g?y/./x") == "http://a/b/c/g?y/./x");
  // Absolute references, and other schemes.
  CHECK(r("https://other:444/x") == "https://other:444/x");
  CHECK_THROWS_AS(base.resolve("mailto:x@y"), std::invalid_argument);
  CHECK_THROWS_AS(base.resolve("javascript:void(0)"), std::invalid_argument);
}

// ---- Responses --------------------------------------------------------------------------------

STRATA_LOOP_TEST_CASE(
    "HttpClient: a Content-Length response gives status, reason, headers and body",
    "[protocols][http_client]") {
  strata::testing::TestLoop loop(TestType::kind);
  loop.run([]() -> Coro<void> {
    Coro<std::unique_ptr<ScriptServer>> start = start_server(reply(
        "HTTP/1.1 201 Created Here\r\nContent-Length: 5\r\nX-One: 1\r\nx-two:  two  \r\nX-One: "
        "again\r\n\r\nhello"));
    std::unique_ptr<ScriptServer> server = co_await start;
    HttpClient client;
    Coro<HttpClientResponse> get = client.get(server->url("/a/b?c=d"));
    HttpClientResponse r = co_await get;
    CHECK(r.status() == 201);
    CHECK(r.reason() == "Created Here");
    CHECK(r.version_major() == 1);
    CHECK(r.version_minor() == 1);
    CHECK(r.content_length() == std::optional<std::uint64_t>(5));
    CHECK_FALSE(r.is_chunked());
    CHECK(r.headers().get("x-one") == std::optional<std::string_view>("1"));
    CHECK(r.headers().count("X-ONE") == 2);
    CHECK(r.headers().get("X-Two") == std::optional<std::string_view>("two"));
    CHECK(r.url() == server->url("/a/b?c=d"));
    CHECK(r.method() == "GET");
    CHECK(r.history().empty());
    Coro<std::string> text = r.text();
    const std::string text_result = co_await text;
    CHECK(text_result == "hello");
    CHECK(r.at_eof());

    REQUIRE(server->requests.size() == 1);
    const SeenRequest& seen = server->requests[0];
    CHECK(seen.method == "GET");
    CHECK(seen.target == "/a/b?c=d");
    CHECK(seen.header("host") == "127.0.0.1:" + std::to_string(server->port));
    CHECK(seen.header("user-agent") == client.options().user_agent);
    CHECK_FALSE(seen.header("content-length"));
    client.close();
    co_await server->stop();
    co_await client.wait_closed();
  }(), 20s);
  CHECK(loop.errors().empty());
}

STRATA_LOOP_TEST_CASE(
    "HttpClient: chunked and Content-Length responses arriving one byte at a time give the "
    "same body",
    "[protocols][http_client]") {
  strata::testing::TestLoop loop(TestType::kind);
  loop.run([]() -> Coro<void> {
    const std::string chunked =
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        "5;ext=1\r\nhello\r\n1\r\n,\r\n6\r\n world\r\n0\r\nTrailer-Field: x\r\n\r\n";
    const std::string sized = ok_response("hello, world", "X-A: b\r\n");
    Coro<std::unique_ptr<ScriptServer>> start = start_server({});
    std::unique_ptr<ScriptServer> server = co_await start;
    ScriptServer* s = server.get();
    server->responder = [s, chunked, sized](const std::shared_ptr<Peer>& peer,
                                            const SeenRequest& r) {
      s->write_slowly(peer, r.target == "/chunked" ? chunked : sized);
    };
    HttpClient client;
    for (int round = 0; round < 2; ++round) {
      Coro<HttpClientResponse> get = client.get(server->url("/chunked"));
      HttpClientResponse r = co_await get;
      CHECK(r.is_chunked());
      CHECK_FALSE(r.content_length());
      Coro<std::string> text = r.text();
      const std::string text_result = co_await text;
      CHECK(text_result == "hello, world");

      Coro<HttpClientResponse> get2 = client.get(server->url("/sized"));
      HttpClientResponse r2 = co_await get2;
      CHECK(r2.headers().get("x-a") == std::optional<std::string_view>("b"));
      // Read in chunks: the bytes come as they arrived.
      std::string all;
      std::size_t reads = 0;
      for (;;) {
        Coro<std::string> read = r2.read_chunk();
        std::string chunk = co_await read;
        if (chunk.empty()) break;
        all += chunk;
        ++reads;
      }
      CHECK(all == "hello, world");
      CHECK(reads >= 1);
      Coro<std::string> again = r2.read_chunk();
      const std::string again_result = co_await again;
      CHECK(again_result.empty());
    }
    CHECK(server->accepted == 1);  // every response kept the connection alive
    client.close();
    co_await server->stop();
  }(), 30s);
  CHECK(loop.errors().empty());
}

STRATA_LOOP_TEST_CASE(
    "HttpClient: a close-delimited HTTP/1.0 body ends at end of file, and its connection is "
    "not reused",
    "[protocols][http_client]") {
  strata::testing::TestLoop loop(TestType::kind);
  loop.run([]() -> Coro<void> {
    Coro<std::unique_ptr<ScriptServer>> start =
        start_server([](const std::shared_ptr<Peer>& peer, const SeenRequest&) {
          peer->write("HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the end");
          peer->close();
        });
    std::unique_ptr<ScriptServer> server = co_await start;
    HttpClient client;
    for (int i = 0; i < 2; ++i) {
      Coro<HttpClientResponse> get = client.get(server->url());
      HttpClientResponse r = co_await get;
      CHECK(r.version_minor() == 0);
      CHECK_FALSE(r.content_length());
      Coro<std::string> text = r.text();
      const std::string text_result = co_await text;
      CHECK(text_result == "until the end");
    }
    CHECK(server->accepted == 2);
    CHECK(client.idle_connections() == 0);
    client.close();
    co_await server->stop();
    co_await client.wait_closed();
  }(), 20s);
  CHECK(loop.errors().empty());
}

// ---- Keep-alive and the pool ------------------------------------------------------------------

STRATA_LOOP_TEST_CASE("HttpClient: sequential requests to one host reuse one kept-alive connection",
                      "[protocols][http_client]") {
  strata::testing::TestLoop loop(TestType::kind);
  loop.run([]() -> Coro<void> {
    Coro<std::unique_ptr<ScriptServer>> start =
        start_server([](const std::shared_ptr<Peer>& peer, const SeenRequest& r) {
          peer->write(ok_response(r.target));
        });
    std::unique_ptr<ScriptServer> server = co_await start;
    HttpClient client;
    for (int i = 0; i < 3; ++i) {
      const std::string path = "/n" + std::to_string(i);
      Coro<std::string> get = get_text(client, server->url(path));
      const std::string get_result = co_await get;
      CHECK(get_result == path);
      CHECK(client.idle_connections() == 1);
    }
    CHECK(server->accepted == 1);
    REQUIRE(server->requests.size() == 3);
    for (const SeenRequest& r : server->requests) CHECK(r.connection == 0);
    CHECK(client.open_connections() == 1);
    client.close();
    co_await client.wait_closed();
    CHECK(client.open_connections() == 0);
    co_await server->stop();
  }(), 20s);
  CHECK(loop.errors().empty());
}

STRATA_LOOP_TEST_CASE(
    "HttpClient: Connection: close and HTTP/1.0 without keep-alive end the connection; HTTP/1.0 "
    "with keep-alive keeps it",
    "[protocols][http_client]") {
  strata::testing::TestLoop loop(TestType::kind);
  loop.run([]() -> Coro<void> {
    Coro<std::unique_ptr<ScriptServer>> start =
        start_server([](const std::shared_ptr<Peer>& peer, const SeenRequest& r) {
          if (r.target == "/close") {
            peer->write("HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok");
          } else if (r.target == "/http10") {
            peer->write("HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok");
          } else {
            peer->write(
                "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nok");
          }
        });
    std::unique_ptr<ScriptServer> server = co_await start;
    HttpClient client;
    Coro<std::string> a = get_text(client, server->url("/close"));
    const std::string a_result = co_await a;
    CHECK(a_result == "ok");
    CHECK(client.idle_connections() == 0);
    Coro<std::string> b = get_text(client, server->url("/http10"));
    const std::string b_result = co_await b;
    CHECK(b_result == "ok");
    CHECK(client.idle_connections() == 0);
    Coro<std::string> c = get_text(client, server->url("/keep"));
    const std::string c_result = co_await c;
    CHECK(c_result == "ok");
    CHECK(client.idle_connections() == 1);
    Coro<std::string> d = get_text(client, server->url("/keep"));
    const std::string d_result = co_await d;
    CHECK(d_result == "ok");
    CHECK(server->accepted == 3);

    // The request's own Connection: close is honoured too.
    HttpRequestOptions options;
    options.headers.push_back({"Connection", "close"});
    Coro<HttpClientResponse> e = client.get(server->url("/keep"), options);
    HttpClientResponse r = co_await e;
    Coro<std::string> text = r.text();
    const std::string text_result = co_await text;
    CHECK(text_result == "ok");
    CHECK(client.idle_connections() == 0);
    client.close();
    co_await server->stop();
    co_await client.wait_closed();
  }(), 20s);
  CHECK(loop.errors().empty());
}

STRATA_LOOP_TEST_CASE(
    "HttpClient: N+1 concurrent requests to one host use at most N connections, the last one "
    "waiting for a free one",
    "[protocols][http_client]") {
  strata::testing::TestLoop loop(TestType::kind);
  loop.run([]() -> Coro<void> {
    std::vector<std::shared_ptr<Peer>> held;
    bool release = false;
    Coro<std::unique_ptr<ScriptServer>> start = start_server(
        [&held, &release](const std::shared_ptr<Peer>& peer, const SeenRequest& r) {
          if (release) {
            peer->write(ok_response(r.target));
          } else {
            held.push_back(peer);
          }
        });
    std::unique_ptr<ScriptServer> server = co_await start;
    HttpClientOptions options;
    options.max_connections_per_host = 2;
    HttpClient client(options);
    std::vector<strata::Task<std::string>> tasks;
    tasks.reserve(3);
    for (int i = 0; i < 3; ++i) {
      tasks.push_back(
          strata::create_task(get_text(client, server->url("/r" + std::to_string(i)))));
    }
    Coro<void> two = server->wait_requests(2);
    co_await two;
    CHECK(server->accepted == 2);
    // Answer the held requests; the third then goes out on one of the two connections.
    release = true;
    for (auto& peer : held) peer->write(ok_response("held"));
    for (auto& task : tasks) {
      std::string body = co_await task;
      CHECK((body == "held" || body == "/r2"));
    }
    CHECK(server->requests.size() == 3);
    CHECK(server->accepted == 2);
    CHECK(server->max_open == 2);
    client.close();
    co_await server->stop();
    co_await client.wait_closed();
  }(), 20s);
  CHECK(loop.errors().empty());
}

STRATA_LOOP_TEST_CASE("HttpClient: requests waiting for a connection are served in FIFO order",
                      "[protocols][http_client]") {
  strata::testing::TestLoop loop(TestType::kind);
  loop.run([]() -> Coro<void> {
    Coro<std::unique_ptr<ScriptServer>> start =
        start_server([](const std::shared_ptr<Peer>& peer, const SeenRequest& r) {
          peer->write(ok_response(r.target));
        });
    std::unique_ptr<ScriptServer> server = co_await start;
    HttpClientOptions options;
    options.max_connections_per_host = 1;
    HttpClient client(options);
    std::vector<strata::Task<std::string>> tasks;
    tasks.reserve(6);
    for (int i = 0; i < 6; ++i) {
      tasks.push_back(
          strata::create_task(get_text(client, server->url("/" + std::to_string(i)))));
    }
    for (auto& task : tasks) co_await task;
    REQUIRE(server->requests.size() == 6);
    for (int i = 0; i < 6; ++i) CHECK(server->requests[i].target == "/" + std::to_string(i));
    CHECK(server->accepted == 1);
    client.close();
    co_await server->stop();
  }(), 20s);
  CHECK(loop.errors().empty());
}

STRATA_LOOP_TEST_CASE(
    "HttpClient: a pooled connection the server closed is detected; an idempotent request is "
    "retried once on a new connection, a POST is not",
    "[protocols][http_client]") {
  strata::testing::TestLoop loop(TestType::kind);
  loop.run([]() -> Coro<void> {
    // The server answers the first request on each connection, and closes the connection,
    // unanswered, at the second.
    std::vector<int> served;
    Coro<std::unique_ptr<ScriptServer>> start =
        start_server([&served](const std::shared_ptr<Peer>& peer, const SeenRequest& r) {
          if (served.size() <= r.connection) served.resize(r.connection + 1);
          if (served[r.connection]++ == 0) {
            peer->write(ok_response("first"));
          } else {
            peer->close();
          }
        });
    std::unique_ptr<ScriptServer> server = co_await start;
    HttpClient client;
    Coro<std::string> a = get_text(client, server->url("/a"));
    const std::string a_result = co_await a;
    CHECK(a_result == "first");
    CHECK(client.idle_connections() == 1);
    // Reused, closed by the server unanswered: retried on a new connection.
    Coro<std::string> b = get_text(client, server->url("/b"));
    const std::string b_result = co_await b;
    CHECK(b_result == "first");
    CHECK(server->accepted == 2);
    CHECK(server->requests.size() == 3);

    // A POST on the reused connection is not sent again.
    Coro<HttpClientResponse> post = client.post(server->url("/c"), "data", "text/plain");
    std::exception_ptr e = co_await exception_of(std::move(post));
    INFO(describe(e));
    CHECK_THAT(describe(e), Catch::Contains("POST " + server->url("/c")) &&
                                Catch::Contains("without sending a response"));
    CHECK(server->accepted == 2);

    // A server that closed an idle connection is noticed before the next request.
    Coro<std::string> d = get_text(client, server->url("/d"));
    const std::string d_result = co_await d;
    CHECK(d_result == "first");
    CHECK(server->accepted == 3);
    for (auto& peer : server->peers) peer->close();
    Coro<void> gone = server->wait_lost(3);
    co_await gone;
    Coro<std::string> f = get_text(client, server->url("/f"));
    const std::string f_result = co_await f;
    CHECK(f_result == "first");
    CHECK(server->accepted == 4);
    client.close();
    co_await server->stop();
    co_await client.wait_closed();
  }(), 20s);
  CHECK(loop.errors().empty());
}

STRATA_LOOP_TEST_CASE("HttpClient: an idle connection is closed after idle_timeout",
                      "[protocols][http_client]") {
  // On virtual time: the default idle_timeout, to the nanosecond, in no real time.
  strata::testing::TestLoop loop(TestType::kind, strata::testing::TestClock::virtual_);
  loop.run([]() -> Coro<void> {
    Coro<std::unique_ptr<ScriptServer>> start = start_server(reply(ok_response("x")));
    std::unique_ptr<ScriptServer> server = co_await start;
    const HttpClientOptions options;
    HttpClient client(options);
    Coro<std::string> a = get_text(client, server->url());
    const std::string a_result = co_await a;
    CHECK(a_result == "x");
    CHECK(client.idle_connections() == 1);
    const strata::TimePoint idle_since = strata::get_running_loop().time();
    Coro<void> gone = server->wait_lost(1);
    co_await gone;
    CHECK(strata::get_running_loop().time() - idle_since == options.idle_timeout);
    CHECK(client.idle_connections() == 0);
    Coro<std::string> b = get_text(client, server->url());
    const std::string b_result = co_await b;
    CHECK(b_result == "x");
    CHECK(server->accepted == 2);
    client.close();
    co_await server->stop();
  }());
  CHECK(loop.errors().empty());
}

// ---- Bodies without a body --------------------------------------------------------------------

STRATA_LOOP_TEST_CASE(
    "HttpClient: responses to HEAD, and 204 and 304, have no body whatever their headers say",
    "[protocols][http_client]") {
  strata::testing::TestLoop loop(TestType::kind);
  loop.run([]() -> Coro<void> {
    Coro<std::unique_ptr<ScriptServer>> start =
        start_server([](const std::shared_ptr<Peer>& peer, const SeenRequest& r) {
          if (r.method == "HEAD") {
            peer->write("HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n");
          } else if (r.target == "/204") {
            peer->write("HTTP/1.1 204 No Content\r\n\r\n");
          } else if (r.target == "/304") {
            peer->write(
                "HTTP/1.1 304 Not Modified\r\nContent-Length: 50\r\nETag: \"x\"\r\n\r\n");
          } else {
            peer->write(ok_response("after"));
          }
        });
    std::unique_ptr<ScriptServer> server = co_await start;
    HttpClient client;
    Coro<HttpClientResponse> head = client.request("HEAD", server->url("/h"));
    HttpClientResponse r1 = co_await head;
    CHECK(r1.status() == 200);
    CHECK(r1.content_length() == std::optional<std::uint64_t>(1000));
    CHECK(r1.at_eof());
    CHECK(client.idle_connections() == 1);  // given back before the body was even asked for
    Coro<std::string> t1 = r1.text();
    const std::string t1_result = co_await t1;
    CHECK(t1_result.empty());

    Coro<HttpClientResponse> g204 = client.get(server->url("/204"));
    HttpClientResponse r2 = co_await g204;
    CHECK(r2.status() == 204);
    Coro<std::string> t2 = r2.text();
    const std::string t2_result = co_await t2;
    CHECK(t2_result.empty());

    Coro<HttpClientResponse> g304 = client.get(server->url("/304"));
    HttpClientResponse r3 = co_await g304;
    CHECK(r3.status() == 304);
    Coro<std::string> t3 = r3.text();
    const std::string t3_result = co_await t3;
    CHECK(t3_result.empty());

    Coro<std::string> after = get_text(client, server->url("/after"));
    const std::string after_result = co_await after;
    CHECK(after_result == "after");
    CHECK(server->accepted == 1);
    client.close();
    co_await server->stop();
  }(), 20s);
  CHECK(loop.errors().empty());
}

STRATA_LOOP_TEST_CASE("HttpClient: interim 1xx responses are skipped", "[protocols][http_client]") {
  strata::testing::TestLoop loop(TestType::kind);
  loop.run([]() -> Coro<void> {
    Coro<std::unique_ptr<ScriptServer>> start = start_server(
        reply("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </s>\r\n\r\n" +
              ok_response("final")));
    std::unique_ptr<ScriptServer> server = co_await start;
    HttpClient client;
    Coro<HttpClientResponse> get = client.get(server->url());
    HttpClientResponse r = co_await get;
    CHECK(r.status() == 200);
    CHECK_FALSE(r.headers().contains("link"));
    Coro<std::string> text = r.text();
    const std::string text_result = co_await text;
    CHECK(text_result == "final");
    client.close();
    co_await server->stop();
  }(), 20s);
  CHECK(loop.errors().empty());
}

// ---- Errors -----------------------------------------------------------------------------------

STRATA_LOOP_TEST_CASE(
    "HttpClient: a connection that ends before Content-Length bytes raises HttpClientError "
    "saying how many came",
    "[protocols][http_client]") {
  strata::testing::TestLoop loop(TestType::kind);
  loop.run([]() -> Coro<void> {
    Coro<std::unique_ptr<ScriptServer>> start =
        start_server([](const std::shared_ptr<Peer>& peer, const SeenRequest& r) {
          if (r.target == "/chunked") {
            peer->write("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel");
          } else if (r.target == "/head") {
            peer->write("HTTP/1.1 200 OK\r\nContent-Le");
          } else {
            peer->write("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789");
          }
          peer->close();
        });
    std::unique_ptr<ScriptServer> server = co_await start;
    HttpClient client;
    Coro<HttpClientResponse> get = client.get(server->url("/short"));
    HttpClientResponse r = co_await get;
    CHECK(r.status() == 200);
    Coro<std::string> e_op = r.text();
    std::exception_ptr e = co_await exception_of(std::move(e_op));
    CHECK(describe(e) == "HttpClientError: GET " + server->url("/short") +
                             ": the server closed the connection after 10 of 100 body bytes "
                             "(Content-Length: 100)");
    // Every later read says the same.
    Coro<std::string> again_op = r.read_chunk();
    std::exception_ptr again = co_await exception_of(std::move(again_op));
    CHECK(describe(again) == describe(e));

    Coro<HttpClientResponse> get2 = client.get(server->url("/chunked"));
    HttpClientResponse r2 = co_await get2;
    Coro<std::string> e2_op = r2.text();
    std::exception_ptr e2 = co_await exception_of(std::move(e2_op));
    CHECK_THAT(describe(e2),
               Catch::Contains("HttpClientError") &&
                   Catch::Contains("in the middle of the chunked body, after 3 "));

    Coro<HttpClientResponse> e3_op = client.get(server->url("/head"));

    std::exception_ptr e3 = co_await exception_of(std::move(e3_op));
    CHECK_THAT(describe(e3), Catch::Contains("HttpClientError") &&
                                 Catch::Contains("in the middle of the response head"));
    CHECK(client.idle_connections() == 0);
    client.close();
    co_await server->stop();
    co_await client.wait_closed();
  }(), 20s);
  CHECK(loop.errors().empty());
}

STRATA_LOOP_TEST_CASE(
    "HttpClient: a malformed or oversized response raises a clear HttpClientError",
    "[protocols][http_client]") {
  strata::testing::TestLoop loop(TestType::kind);
  loop.run([]() -> Coro<void> {
    Coro<std::unique_ptr<ScriptServer>> start = start_server([](const std::shared_ptr<Peer>&
                                                                    peer,
                                                                const SeenRequest& r) {
      if (r.target == "/garbage") {
        peer->write("hello there\r\n\r\n");
      } else if (r.target == "/status") {
        peer->write("HTTP/1.1 2x0 OK\r\n\r\n");
      } else if (r.target == "/chunk") {
        peer->write("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n");
      } else if (r.target == "/101") {
        peer->write(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\nConnection: upgrade\r\n\r\n");
      } else {
        peer->write("HTTP/1.1 200 OK\r\nX-Big: " + std::string(2000, 'b') + "\r\n\r\n");
      }
    });
    std::unique_ptr<ScriptServer> server = co_await start;
    HttpClientOptions options;
    options.max_header_bytes = 1024;
    HttpClient client(options);
    for (const char* path : {"/garbage", "/status", "/101"}) {
      Coro<HttpClientResponse> e_op = client.get(server->url(path));
      std::exception_ptr e = co_await exception_of(std::move(e_op));
      INFO(path << ": " << describe(e));
      CHECK_THAT(describe(e),
                 Catch::StartsWith("HttpClientError: GET " + server->url(path) + ": "));
    }
    Coro<HttpClientResponse> e1_op = client.get(server->url("/garbage"));
    std::exception_ptr e1 = co_await exception_of(std::move(e1_op));
    CHECK_THAT(describe(e1), Catch::Contains("malformed response"));
    Coro<HttpClientResponse> e2_op = client.get(server->url("/101"));
    std::exception_ptr e2 = co_await exception_of(std::move(e2_op));
    CHECK_THAT(describe(e2), Catch::Contains("101 Switching Protocols"));
    Coro<HttpClientResponse> e3_op = client.get(server->url("/big"));
    std::exception_ptr e3 = co_await exception_of(std::move(e3_op));
    CHECK_THAT(describe(e3),
               Catch::Contains("response head larger than max_header_bytes (1024"));

    Coro<HttpClientResponse> get = client.get(server->url("/chunk"));
    HttpClientResponse r = co_await get;
    Coro<std::string> e4_op = r.text();
    std::exception_ptr e4 = co_await exception_of(std::move(e4_op));
    CHECK_THAT(describe(e4),
               Catch::Contains("HttpClientError") && Catch::Contains("malformed response"));
    CHECK(client.idle_connections() == 0);
    client.close();
    co_await server->stop();
    co_await client.wait_closed();
  }(), 20s);
  CHECK(loop.errors().empty());
}

STRATA_LOOP_TEST_CASE(
    "HttpClient: misuse is refused at the call with std::invalid_argument or "
    "InvalidStateError",
    "[protocols][http_client]") {
  strata::testing::TestLoop loop(TestType::kind);
  loop.run([]() -> Coro<void> {
    HttpClient client;
    auto call_error = [&client](std::string method, std::string url, HttpRequestOptions o) {
      try {
        Coro<HttpClientResponse> c =
            client.request(std::move(method), std::move(url), std::move(o));
        (void)c;
      } catch (...) {
        return describe(std::current_exception());
      }
      return std::string("accepted");
    };
    CHECK(call_error("GET", "ftp://h/", {}) ==
          "invalid_argument: unsupported URL scheme 'ftp' in 'ftp://h/' (only http and https)");
    CHECK_THAT(call_error("GE T", "http://h/", {}), Catch::Contains("method must be a token"));
    HttpRequestOptions bad_value;
    bad_value.headers.push_back({"X-A", "a\r\nInjected: 1"});
    CHECK_THAT(call_error("GET", "http://h/", bad_value),
               Catch::Contains("'X-A' has a CR, LF or NUL"));
    HttpRequestOptions bad_name;
    bad_name.headers.push_back({"X A", "a"});
    CHECK_THAT(call_error("GET", "http://h/", bad_name), Catch::Contains("must be a token"));
    HttpRequestOptions length;
    length.headers.push_back({"content-length", "3"});
    CHECK_THAT(call_error("GET", "http://h/", length),
               Catch::Contains("sets it from the body"));
    HttpRequestOptions redirects;
    redirects.max_redirects = -1;
    CHECK_THAT(call_error("GET", "http://h/", redirects), Catch::Contains("max_redirects"));
    client.close();
    CHECK_THAT(call_error("GET", "http://h/", {}),
               Catch::StartsWith("InvalidStateError: HttpClient is closed"));
    co_await client.wait_closed();

    HttpClientOptions zero;
    zero.max_connections_per_host = 0;
    CHECK_THROWS_AS(HttpClient(zero), std::invalid_argument);
    HttpClientOptions negative;
    negative.total_timeout = -1s;
    CHECK_THROWS_AS(HttpClient(negative), std::invalid_argument);
  }(), 20s);
  CHECK(loop.errors().empty());
}

// ---- Timeouts ---------------------------------------------------------------------------------

STRATA_LOOP_TEST_CASE(
    "HttpClient: a server that never answers gives TimeoutError at the total timeout, and the "
    "connection is discarded",
    "[protocols][http_client]") {
  strata::testing::TestLoop loop(TestType::kind);
  loop.run([]() -> Coro<void> {
    Coro<std::unique_ptr<ScriptServer>> start =
        start_server([](const std::shared_ptr<Peer>& peer, const SeenRequest& r) {
          if (r.target == "/stall-body") {
            peer->write("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc");
          } else if (r.target == "/ok") {
            peer->write(ok_response("ok"));
          }
          // Anything else: never answered.
        });
    std::unique_ptr<ScriptServer> server = co_await start;
    HttpClientOptions options;
    options.total_timeout = 100ms;
    HttpClient client(options);
    strata::EventLoop& l = strata::get_running_loop();
    const strata::TimePoint started = l.time();
    Coro<HttpClientResponse> e_op = client.get(server->url("/never"));
    std::exception_ptr e = co_await exception_of(std::move(e_op));
    const strata::Duration took = l.time() - started;
    CHECK(describe(e) == "TimeoutError: GET " + server->url("/never") +
                             ": no response within the total timeout of 100 ms "
                             "(HttpClientOptions::total_timeout)");
    CHECK(took >= 100ms);
    CHECK(took < 5s);
    Coro<void> gone = server->wait_lost(1);
    co_await gone;  // discarded, not pooled

    // The total timeout covers reading the body.
    Coro<HttpClientResponse> get = client.get(server->url("/stall-body"));
    HttpClientResponse r = co_await get;
    Coro<std::string> e2_op = r.text();
    std::exception_ptr e2 = co_await exception_of(std::move(e2_op));
    CHECK_THAT(describe(e2),
               Catch::StartsWith("TimeoutError: GET " + server->url("/stall-body")) &&
                   Catch::Contains("total timeout of 100 ms"));
    Coro<void> gone2 = server->wait_lost(2);
    co_await gone2;

    Coro<std::string> ok = get_text(client, server->url("/ok"));
    const std::string ok_result = co_await ok;
    CHECK(ok_result == "ok");
    CHECK(server->accepted == 3);
    client.close();
    co_await server->stop();
    co_await client.wait_closed();
  }(), 20s);
  CHECK(loop.errors().empty());
}

STRATA_LOOP_TEST_CASE(
    "HttpClient: a connect that does not complete gives TimeoutError at the "
    "connect timeout",
    "[protocols][http_client]") {
  // A listener whose accept queue is full and never drained: connects to it stay in SYN-SENT.
  const int listener = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  REQUIRE(listener >= 0);
  strata::SocketAddress any("127.0.0.1", 0);
  REQUIRE(::bind(listener, any.data(), any.size()) == 0);
  REQUIRE(::listen(listener, 0) == 0);
  strata::SocketAddress bound;
  socklen_t len = strata::SocketAddress::capacity();
  REQUIRE(::getsockname(listener, bound.mutable_data(), &len) == 0);
  bound.set_size(len);
  const int filler = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  (void)::connect(filler, bound.data(), bound.size());
  pollfd p{listener, POLLIN, 0};
  REQUIRE(::poll(&p, 1, 5000) == 1);
  const std::uint16_t port = bound.port();

  strata::testing::TestLoop loop(TestType::kind);
  loop.run([](std::uint16_t port) -> Coro<void> {
    HttpClientOptions options;
    options.connect_timeout = 50ms;
    HttpClient client(options);
    const std::string url = "http://127.0.0.1:" + std::to_string(port) + "/";
    Coro<HttpClientResponse> e_op = client.get(url);
    std::exception_ptr e = co_await exception_of(std::move(e_op));
    CHECK_THAT(describe(e), Catch::StartsWith("TimeoutError: GET " + url + ": connect ") &&
                                Catch::EndsWith("(HttpClientOptions::connect_timeout)"));
    client.close();
  }(port), 20s);
  ::close(filler);
  ::close(listener);
  CHECK(loop.errors().empty());
}

// ---- Redirects --------------------------------------------------------------------------------

namespace {

/// A responder for the redirect tests: "/r/CODE" answers CODE with Location "/target", and
/// "/target" answers 200 with "METHOD BODY" as its body.
Responder redirecting() {
  return [](const std::shared_ptr<Peer>& peer, const SeenRequest& r) {
    if (r.target.starts_with("/r/")) {
      const std::string code = r.target.substr(3);
      const std::string body = r.method == "HEAD" ? "" : "moved";
      peer->write("HTTP/1.1 " + code + " Moved\r\nLocation: /target\r\nContent-Length: 5\r\n\r\n" +
                  body);
    } else if (r.method == "HEAD") {
      peer->write("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n");
    } else {
      peer->write(ok_response(r.method + " " + r.body));
    }
  };
}

struct RedirectCase {
  int code;
  std::string method;
  std::string expected_method;
  bool keeps_body;
};

}  // namespace

STRATA_LOOP_TEST_CASE(
    "HttpClient: redirects follow the browser rules for the method and body of each status",
    "[protocols][http_client]") {
  strata::testing::TestLoop loop(TestType::kind);
  loop.run([]() -> Coro<void> {
    Coro<std::unique_ptr<ScriptServer>> start = start_server(redirecting());
    std::unique_ptr<ScriptServer> server = co_await start;
    HttpClient client;
    const std::vector<RedirectCase> cases = {
        {301, "POST", "GET", false},     {302, "POST", "GET", false},
        {303, "POST", "GET", false},     {307, "POST", "POST", true},
        {308, "POST", "POST", true},     {301, "PUT", "PUT", true},
        {302, "DELETE", "DELETE", true}, {303, "PUT", "GET", false},
        {303, "HEAD", "HEAD", false},    {303, "GET", "GET", false},
        {308, "PATCH", "PATCH", true},
    };
    for (const RedirectCase& c : cases) {
      INFO(c.code << " " << c.method);
      const std::size_t before = server->requests.size();
      HttpRequestOptions options;
      const bool with_body = c.method != "GET" && c.method != "HEAD";
      if (with_body) {
        options.body = HttpRequestBody("payload");
        options.headers.push_back({"Content-Type", "text/plain"});
      }
      Coro<HttpClientResponse> request =
          client.request(c.method, server->url("/r/" + std::to_string(c.code)), options);
      HttpClientResponse r = co_await request;
      CHECK(r.status() == 200);
      CHECK(r.url() == server->url("/target"));
      CHECK(r.method() == c.expected_method);
      CHECK(r.history() ==
            std::vector<std::string>{server->url("/r/" + std::to_string(c.code))});
      Coro<std::string> text = r.text();
      const std::string body = co_await text;
      REQUIRE(server->requests.size() == before + 2);
      const SeenRequest& seen = server->requests.back();
      CHECK(seen.method == c.expected_method);
      CHECK(seen.body == (c.keeps_body ? "payload" : ""));
      CHECK(seen.header("content-type").has_value() == c.keeps_body);
      if (c.expected_method != "HEAD") {
        CHECK(body == c.expected_method + " " + (c.keeps_body ? "payload" : ""));
      }
    }
    CHECK(server->accepted == 1);  // the small redirect bodies were read, the connection reused
    client.close();
    co_await server->stop();
  }(), 30s);
  CHECK(loop.errors().empty());
}

STRATA_LOOP_TEST_CASE(
    "HttpClient: redirects resolve relative locations, stop at the limit, and can be left "
    "unfollowed",
    "[protocols][http_client]") {
  strata::testing::TestLoop loop(TestType::kind);
  loop.run([]() -> Coro<void> {
    Coro<std::unique_ptr<ScriptServer>> start =
        start_server([](const std::shared_ptr<Peer>& peer, const SeenRequest& r) {
          auto moved = [&peer](const std::string& location) {
            peer->write("HTTP/1.1 302 Found\r\nLocation: " + location +
                        "\r\nContent-Length: 0\r\n\r\n");
          };
          if (r.target == "/a/b/start") {
            moved("c?x=1");  // -> /a/b/c?x=1
          } else if (r.target == "/a/b/c?x=1") {
            moved("../d");  // -> /a/d
          } else if (r.target == "/a/d") {
            moved("/final#frag");
          } else if (r.target.starts_with("/loop")) {
            moved("/loop" + std::to_string(r.target.size()));
          } else if (r.target == "/bad") {
            moved("mailto:someone@example.com");
          } else {
            peer->write(ok_response("end of " + r.target));
          }
        });
    std::unique_ptr<ScriptServer> server = co_await start;
    HttpClient client;
    Coro<HttpClientResponse> get = client.get(server->url("/a/b/start"));
    HttpClientResponse r = co_await get;
    CHECK(r.url() == server->url("/final"));
    CHECK(r.history() == std::vector<std::string>{server->url("/a/b/start"),
                                                  server->url("/a/b/c?x=1"),
                                                  server->url("/a/d")});
    Coro<std::string> text = r.text();
    const std::string text_result = co_await text;
    CHECK(text_result == "end of /final");

    const std::size_t before = server->requests.size();
    Coro<HttpClientResponse> e_op = client.get(server->url("/loop"));
    std::exception_ptr e = co_await exception_of(std::move(e_op));
    CHECK_THAT(
        describe(e),
        Catch::StartsWith("HttpClientError: GET ") &&
            Catch::Contains("more than 10 redirects (HttpRequestOptions::max_redirects)"));
    CHECK(server->requests.size() - before == 11);

    HttpRequestOptions two;
    two.max_redirects = 2;
    Coro<HttpClientResponse> e2_op = client.get(server->url("/loop"), two);
    std::exception_ptr e2 = co_await exception_of(std::move(e2_op));
    CHECK_THAT(describe(e2), Catch::Contains("more than 2 redirects"));

    HttpRequestOptions none;
    none.follow_redirects = false;
    Coro<HttpClientResponse> unfollowed = client.get(server->url("/a/d"), none);
    HttpClientResponse r2 = co_await unfollowed;
    CHECK(r2.status() == 302);
    CHECK(r2.headers().get("location") == std::optional<std::string_view>("/final#frag"));
    CHECK(r2.url() == server->url("/a/d"));

    Coro<HttpClientResponse> e3_op = client.get(server->url("/bad"));

    std::exception_ptr e3 = co_await exception_of(std::move(e3_op));
    CHECK_THAT(describe(e3), Catch::Contains("cannot follow the 302 redirect") &&
                                 Catch::Contains("unsupported URL scheme 'mailto'"));
    client.close();
    co_await server->stop();
  }(), 30s);
  CHECK(loop.errors().empty());
}

STRATA_LOOP_TEST_CASE(
    "HttpClient: a redirect to another origin drops Authorization; one within "
    "the origin keeps it",
    "[protocols][http_client]") {
  strata::testing::TestLoop loop(TestType::kind);
  loop.run([]() -> Coro<void> {
    Coro<std::unique_ptr<ScriptServer>> start_other = start_server(reply(ok_response("other")));
    std::unique_ptr<ScriptServer> other = co_await start_other;
    const std::string elsewhere = other->url("/landing");
    Coro<std::unique_ptr<ScriptServer>> start =
        start_server([elsewhere](const std::shared_ptr<Peer>& peer, const SeenRequest& r) {
          if (r.target == "/away") {
            peer->write("HTTP/1.1 307 Away\r\nLocation: " + elsewhere +
                        "\r\nContent-Length: 0\r\n\r\n");
          } else if (r.target == "/here") {
            peer->write("HTTP/1.1 307 Here\r\nLocation: /landing\r\nContent-Length: 0\r\n\r\n");
          } else {
            peer->write(ok_response("same"));
          }
        });
    std::unique_ptr<ScriptServer> server = co_await start;
    HttpClient client;
    HttpRequestOptions options;
    options.headers.push_back({"Authorization", "Bearer secret"});
    options.headers.push_back({"X-Keep", "1"});
    Coro<std::string> here = [](HttpClient& c, std::string url,
                                HttpRequestOptions o) -> Coro<std::string> {
      Coro<HttpClientResponse> get = c.get(std::move(url), std::move(o));
      HttpClientResponse r = co_await get;
      Coro<std::string> text = r.text();
      co_return co_await text;
    }(client, server->url("/here"), options);
    const std::string here_result = co_await here;
    CHECK(here_result == "same");
    CHECK(server->requests.back().header("authorization") == "Bearer secret");

    Coro<HttpClientResponse> away = client.get(server->url("/away"), options);
    HttpClientResponse r = co_await away;
    Coro<std::string> text = r.text();
    const std::string text_result = co_await text;
    CHECK(text_result == "other");
    REQUIRE(other->requests.size() == 1);
    CHECK_FALSE(other->requests[0].header("authorization"));
    CHECK(other->requests[0].header("x-keep") == "1");
    CHECK(other->requests[0].header("host") == "127.0.0.1:" + std::to_string(other->port));
    client.close();
    co_await server->stop();
    co_await other->stop();
  }(), 20s);
  CHECK(loop.errors().empty());
}

// ---- Streaming --------------------------------------------------------------------------------

STRATA_LOOP_TEST_CASE(
    "HttpClient: a streamed response is flow-controlled: unread bytes stay bounded and the "
    "server is paused",
    "[protocols][http_client]") {
  strata::testing::TestLoop loop(TestType::kind);
  loop.run([]() -> Coro<void> {
    static constexpr std::size_t total = 32u << 20;
    static constexpr std::size_t piece = 64 * 1024;
    std::shared_ptr<Peer> sender;
    std::size_t sent = 0;
    // Writes pieces of a pattern until paused; goes on when resumed.
    auto pump = [&sender, &sent] {
      while (sender && sender->transport != nullptr && !sender->write_paused && sent < total) {
        std::string block(std::min(piece, total - sent), '\0');
        for (std::size_t i = 0; i < block.size(); ++i)
          block[i] = static_cast<char>('a' + (sent + i) % 26);
        sent += block.size();
        sender->write(block);
      }
    };
    Coro<std::unique_ptr<ScriptServer>> start =
        start_server([&sender, &pump](const std::shared_ptr<Peer>& peer, const SeenRequest&) {
          sender = peer;
          peer->on_resume_writing = pump;
          peer->write("HTTP/1.1 200 OK\r\nContent-Length: " + std::to_string(total) +
                      "\r\n\r\n");
          pump();
        });
    std::unique_ptr<ScriptServer> server = co_await start;
    HttpClientOptions options;
    options.read_buffer_limit = 64 * 1024;
    HttpClient client(options);
    Coro<HttpClientResponse> get = client.get(server->url("/big"));
    HttpClientResponse r = co_await get;
    // Not reading: the client stops reading, the kernel buffers fill, the server pauses.
    Coro<void> stalled =
        server->wait_until([&sender] { return sender && sender->write_paused; });
    co_await stalled;
    CHECK(sent < total);
    INFO("buffered " << r.buffered_bytes());
    CHECK(r.buffered_bytes() <= options.read_buffer_limit + 512 * 1024);  // the limit + a read

    std::size_t received = 0;
    bool pattern_ok = true;
    std::size_t max_buffered = 0;
    for (;;) {
      Coro<std::string> read = r.read_chunk();
      std::string chunk = co_await read;
      if (chunk.empty()) break;
      for (std::size_t i = 0; i < chunk.size(); ++i) {
        pattern_ok = pattern_ok && chunk[i] == static_cast<char>('a' + (received + i) % 26);
      }
      received += chunk.size();
      max_buffered = std::max(max_buffered, r.buffered_bytes());
    }
    CHECK(received == total);
    CHECK(pattern_ok);
    CHECK(max_buffered <= options.read_buffer_limit + 512 * 1024);
    CHECK(client.idle_connections() == 1);
    sender.reset();
    client.close();
    co_await server->stop();
  }(), 60s);
  CHECK(loop.errors().empty());
}

namespace {

strata::AsyncGenerator<std::string> numbered_chunks(int n) {
  for (int i = 0; i < n; ++i) {
    co_await strata::sleep(0s);
    co_yield "chunk" + std::to_string(i) + ";";
    if (i == 1) co_yield std::string();  // skipped: an empty chunk would end the body
  }
}

}  // namespace

STRATA_LOOP_TEST_CASE(
    "HttpClient: a streamed request body goes out chunked, from a generator or a producer",
    "[protocols][http_client]") {
  strata::testing::TestLoop loop(TestType::kind);
  loop.run([]() -> Coro<void> {
    Coro<std::unique_ptr<ScriptServer>> start =
        start_server([](const std::shared_ptr<Peer>& peer, const SeenRequest& r) {
          peer->write(ok_response(std::to_string(r.body.size())));
        });
    std::unique_ptr<ScriptServer> server = co_await start;
    HttpClient client;

    HttpRequestOptions from_generator;
    from_generator.body = HttpRequestBody::stream(numbered_chunks(5));
    Coro<HttpClientResponse> put = client.request("PUT", server->url("/gen"), from_generator);
    HttpClientResponse r = co_await put;
    Coro<std::string> t = r.text();
    co_await t;
    REQUIRE(server->requests.size() == 1);
    CHECK(server->requests[0].chunked);
    CHECK(server->requests[0].body == "chunk0;chunk1;chunk2;chunk3;chunk4;");
    CHECK_FALSE(server->requests[0].header("content-length"));

    // A producer, with a chunk larger than the socket takes at once (drain on the way).
    auto count = std::make_shared<int>(0);
    HttpRequestBody produced = HttpRequestBody::stream([count]() -> Coro<std::string> {
      const int i = (*count)++;
      if (i == 3) co_return std::string();
      co_return std::string(i == 1 ? (8u << 20) : 10, static_cast<char>('x' + i));
    });
    Coro<HttpClientResponse> post =
        client.post(server->url("/produced"), std::move(produced), "application/x-test");
    HttpClientResponse r2 = co_await post;
    Coro<std::string> t2 = r2.text();
    const std::string t2_result = co_await t2;
    CHECK(t2_result == std::to_string(20 + (8u << 20)));
    REQUIRE(server->requests.size() == 2);
    CHECK(server->requests[1].chunked);
    CHECK(server->requests[1].header("content-type") == "application/x-test");
    CHECK(server->requests[1].body.substr(0, 10) == std::string(10, 'x'));
    CHECK(server->requests[1].body.substr(10, 8u << 20) == std::string(8u << 20, 'y'));
    CHECK(server->accepted == 1);

    // A 307 of a streamed body cannot be followed.
    Coro<std::unique_ptr<ScriptServer>> start_r = start_server(redirecting());
    std::unique_ptr<ScriptServer> redirector = co_await start_r;
    HttpRequestOptions streamed;
    streamed.body = HttpRequestBody::stream(numbered_chunks(2));
    Coro<HttpClientResponse> e_op = client.request("POST", redirector->url("/r/307"), streamed);
    std::exception_ptr e = co_await exception_of(std::move(e_op));
    CHECK_THAT(describe(e), Catch::Contains("cannot follow the 307 redirect") &&
                                Catch::Contains("streamed request body cannot be sent again"));
    client.close();
    co_await server->stop();
    co_await redirector->stop();
  }(), 30s);
  CHECK(loop.errors().empty());
}

// ---- Closing ----------------------------------------------------------------------------------

STRATA_LOOP_TEST_CASE(
    "HttpClient: close() closes the idle connections at once, and those in use once their "
    "response is done",
    "[protocols][http_client]") {
  strata::testing::TestLoop loop(TestType::kind);
  loop.run([]() -> Coro<void> {
    std::shared_ptr<Peer> slow;
    Coro<std::unique_ptr<ScriptServer>> start =
        start_server([&slow](const std::shared_ptr<Peer>& peer, const SeenRequest& r) {
          if (r.target == "/slow") {
            peer->write("HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nab");
            slow = peer;
          } else {
            peer->write(ok_response("quick"));
          }
        });
    std::unique_ptr<ScriptServer> server = co_await start;
    HttpClient client;
    Coro<std::string> quick = get_text(client, server->url("/quick"));
    co_await quick;
    CHECK(client.idle_connections() == 1);
    Coro<HttpClientResponse> get = client.get(server->url("/slow"));
    HttpClientResponse r = co_await get;
    CHECK(server->accepted == 1);  // reused the idle one
    Coro<std::string> quick2 = get_text(client, server->url("/quick"));
    co_await quick2;  // a second connection, idle afterwards
    CHECK(client.idle_connections() == 1);
    CHECK(client.open_connections() == 2);

    client.close();
    CHECK(client.is_closed());
    CHECK(client.idle_connections() == 0);
    Coro<void> one_gone = server->wait_lost(1);
    co_await one_gone;
    CHECK(server->lost == 1);  // the idle one; the one in use stays until its body is read
    slow->write("cd");
    Coro<std::string> text = r.text();
    const std::string text_result = co_await text;
    CHECK(text_result == "abcd");
    Coro<void> closed = client.wait_closed();
    co_await closed;
    CHECK(client.open_connections() == 0);
    slow.reset();
    co_await server->stop();
  }(), 20s);
  CHECK(loop.errors().empty());
}

STRATA_LOOP_TEST_CASE(
    "HttpClient: dropping a response before its body arrived closes its connection and frees "
    "its slot",
    "[protocols][http_client]") {
  strata::testing::TestLoop loop(TestType::kind);
  loop.run([]() -> Coro<void> {
    Coro<std::unique_ptr<ScriptServer>> start =
        start_server([](const std::shared_ptr<Peer>& peer, const SeenRequest& r) {
          if (r.target == "/partial") {
            peer->write("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nabc");
          } else {
            peer->write(ok_response("whole"));
          }
        });
    std::unique_ptr<ScriptServer> server = co_await start;
    HttpClientOptions options;
    options.max_connections_per_host = 1;
    HttpClient client(options);
    {
      Coro<HttpClientResponse> get = client.get(server->url("/partial"));
      HttpClientResponse r = co_await get;
      CHECK(r.status() == 200);
    }
    Coro<void> gone = server->wait_lost(1);
    co_await gone;
    Coro<std::string> next = get_text(client, server->url("/whole"));
    const std::string next_result = co_await next;
    CHECK(next_result == "whole");
    CHECK(server->accepted == 2);

    Coro<HttpClientResponse> get2 = client.get(server->url("/partial"));
    HttpClientResponse r2 = co_await get2;
    r2.close();
    CHECK(r2.at_eof());
    Coro<std::string> rest = r2.read_chunk();
    const std::string rest_result = co_await rest;
    CHECK(rest_result.empty());
    Coro<std::string> next2 = get_text(client, server->url("/whole"));
    const std::string next2_result = co_await next2;
    CHECK(next2_result == "whole");
    client.close();
    co_await server->stop();
    co_await client.wait_closed();
  }(), 20s);
  CHECK(loop.errors().empty());
}
