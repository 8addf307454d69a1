#pragma once
// Test support for the HTTP server: an HttpServer on 127.0.0.1 with an ephemeral port, a raw
// client that sends exact bytes and collects what comes back, and a small response parser
// that splits the collected bytes into responses (Content-Length, chunked, or to EOF).

#include <strata/core/coro.hpp>
#include <strata/core/event_loop.hpp>
#include <strata/core/future.hpp>
#include <strata/core/socket_address.hpp>
#include <strata/protocols/http_parser.hpp>
#include <strata/protocols/http_server.hpp>
#include <strata/transports/server.hpp>
#include <strata/transports/tcp.hpp>
#include <strata/transports/transport.hpp>

#include <cstdint>
#include <algorithm>
#include <functional>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace strata::testing {

/// A response as the test parser found it.
struct ParsedResponse {
  std::string version;
  int status = 0;
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;
  bool chunked = false;

  std::optional<std::string> header(std::string_view name) const {
    for (const auto& [n, v] : headers) {
      if (http_iequals(n, name)) return v;
    }
    return std::nullopt;
  }
};

/// Splits @p data into complete responses; @p head_only_at lists the indexes of responses to
/// HEAD requests (no body). Returns what parsed; the incomplete rest is left out.
/// Throws std::runtime_error on bytes that are not a response.
inline std::vector<ParsedResponse> parse_responses(std::string_view data,
                                                   std::vector<std::size_t> head_only_at = {},
                                                   bool to_eof = false) {
  std::vector<ParsedResponse> out;
  std::size_t pos = 0;
  while (pos < data.size()) {
    const std::size_t end = data.find("\r\n\r\n", pos);
    if (end == std::string_view::npos) break;
    ParsedResponse r;
    std::string_view head = data.substr(pos, end - pos);
    const std::size_t line_end = head.find("\r\n");
    const std::string_view status_line = head.substr(0, line_end);
    if (status_line.size() < 12 || !status_line.starts_with("HTTP/1.")) {
      throw std::runtime_error("not a status line: '" + std::string(status_line) + "'");
    }
    r.version = std::string(status_line.substr(0, 8));
    r.status = std::stoi(std::string(status_line.substr(9, 3)));
    if (line_end != std::string_view::npos) {
      std::string_view rest = head.substr(line_end + 2);
      while (!rest.empty()) {
        const std::size_t e = rest.find("\r\n");
        const std::string_view line = rest.substr(0, e);
        const std::size_t colon = line.find(':');
        if (colon == std::string_view::npos) throw std::runtime_error("bad field line");
        std::string_view value = line.substr(colon + 1);
        while (!value.empty() && value.front() == ' ') value.remove_prefix(1);
        r.headers.emplace_back(std::string(line.substr(0, colon)), std::string(value));
        if (e == std::string_view::npos) break;
        rest = rest.substr(e + 2);
      }
    }
    std::size_t body_at = end + 4;
    const bool no_body = r.status < 200 || r.status == 204 || r.status == 304 ||
                         std::find(head_only_at.begin(), head_only_at.end(), out.size()) !=
                             head_only_at.end();
    if (r.status < 200) {  // an interim response: not counted
      pos = body_at;
      continue;
    }
    if (no_body) {
      pos = body_at;
    } else if (auto te = r.header("Transfer-Encoding"); te && *te == "chunked") {
      r.chunked = true;
      std::size_t p = body_at;
      bool complete = false;
      for (;;) {
        const std::size_t le = data.find("\r\n", p);
        if (le == std::string_view::npos) break;
        const std::size_t size = std::stoul(std::string(data.substr(p, le - p)), nullptr, 16);
        if (size == 0) {
          if (data.size() < le + 4) break;
          p = le + 4;  // no trailers in our responses
          complete = true;
          break;
        }
        if (data.size() < le + 2 + size + 2) break;
        r.body += data.substr(le + 2, size);
        p = le + 2 + size + 2;
      }
      if (!complete) break;
      pos = p;
    } else if (auto cl = r.header("Content-Length")) {
      const std::size_t n = std::stoul(*cl);
      if (data.size() < body_at + n) break;
      r.body = std::string(data.substr(body_at, n));
      pos = body_at + n;
    } else if (to_eof) {
      r.body = std::string(data.substr(body_at));
      pos = data.size();
    } else {
      break;
    }
    out.push_back(std::move(r));
  }
  return out;
}

/// A client connection that sends raw bytes and collects the reply. Shared between the test
/// and the connection's protocol (RawClientProtocol), so that it outlives the transport.
class RawClient {
 public:
  std::string received;
  bool eof = false;
  bool lost = false;
  Transport* transport = nullptr;

  void send(std::string_view bytes) {
    if (transport) transport->write(bytes);
  }

  /// Waits until @p ready() holds (checked on every arrival) or the connection ends.
  Coro<void> until(std::function<bool()> ready) {
    while (!ready() && !lost) {
      waiter_ = get_running_loop().create_future<void>();
      ready_ = ready;
      Future<void> w = waiter_;
      co_await w;
    }
    // Let go of the condition: it may hold a shared_ptr to this client (a cycle, a leak).
    ready_ = nullptr;
  }
  /// Waits until @p n complete responses arrived (or the connection ended).
  Coro<std::vector<ParsedResponse>> responses(std::size_t n,
                                              std::vector<std::size_t> head_only_at = {}) {
    auto op = until([this, n, head_only_at] {
      return parse_responses(received, head_only_at).size() >= n;
    });
    co_await op;
    co_return parse_responses(received, head_only_at);
  }
  /// Waits until the server closed the connection.
  Coro<void> closed() {
    auto op = until([this] { return eof; });
    co_await op;
  }

  void check() {
    if (waiter_.valid() && !waiter_.done() && (lost || eof || !ready_ || ready_())) {
      waiter_.set_result();
    }
  }

 private:
  Future<void> waiter_;
  std::function<bool()> ready_;
};

/// The protocol of a RawClient's connection.
class RawClientProtocol : public Protocol {
 public:
  explicit RawClientProtocol(std::shared_ptr<RawClient> client) : c_(std::move(client)) {}
  void connection_made(Transport& t) override { c_->transport = &t; }
  void data_received(std::span<const std::byte> data) override {
    c_->received.append(reinterpret_cast<const char*>(data.data()), data.size());
    c_->check();
  }
  bool eof_received() override {
    c_->eof = true;
    c_->check();
    return false;
  }
  void connection_lost(std::error_code) override {
    c_->lost = true;
    c_->eof = true;
    c_->transport = nullptr;
    c_->check();
  }

 private:
  std::shared_ptr<RawClient> c_;
};

/// An HttpServer listening on 127.0.0.1 with an ephemeral port.
struct HttpTestServer {
  std::unique_ptr<HttpServer> http;
  std::unique_ptr<Server> server;
  std::uint16_t port = 0;

  /// Stops accepting, shuts the HTTP connections down and waits for them to close.
  Coro<void> stop() {
    server->close();
    http->shutdown();
    auto closed = server->wait_closed();
    co_await closed;
  }
};

inline Coro<HttpTestServer> listen_http_server(std::unique_ptr<HttpServer> http) {
  HttpTestServer s;
  s.http = std::move(http);
  s.server = co_await create_server(s.http->protocol_factory(), "127.0.0.1", 0);
  s.port = s.server->sockets().at(0).address.port();
  co_return s;
}

/// No default argument: g++ 12 materialises a default argument's temporary inside a
/// coroutine's co_await expression by a bitwise copy, so that a std::string in it (the
/// settings' server_name) points into the caller's frame. Callers pass an lvalue.
inline Coro<HttpTestServer> start_http_server(HttpRouter router, const HttpServerSettings& settings) {
  return listen_http_server(std::make_unique<HttpServer>(std::move(router), settings));
}
inline Coro<HttpTestServer> start_http_server(HttpRouter router) {
  return listen_http_server(std::make_unique<HttpServer>(std::move(router)));
}

/// Connects a RawClient to 127.0.0.1:@p port.
inline Coro<std::shared_ptr<RawClient>> connect_raw(std::uint16_t port) {
  auto client = std::make_shared<RawClient>();
  auto factory = [client] { return std::make_unique<RawClientProtocol>(client); };
  auto connect = create_connection(std::move(factory), "127.0.0.1", port);
  co_await connect;
  co_return client;
}

}  // namespace strata::testing
