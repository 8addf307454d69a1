// http_server: HTTP/1.1 on strata::HttpServer, as the example contract of DESIGN.md says.
//
//   GET  /plaintext   200 text/plain        Hello, World!
//   GET  /json        200 application/json  {"message":"Hello, World!"}
//   POST /echo        200 with the request's body and Content-Type
//   GET  /            a small built-in page (without --root)
//   --root DIR        static files below DIR for every other GET and HEAD
//
//   http_server --port 8080                      one loop, 127.0.0.1:8080
//   http_server --port 0 --threads 2             two loops on two threads, SO_REUSEPORT
//   http_server --root ./public --tls-cert cert.pem --tls-key key.pem    HTTPS
//
// Prints `listening on HOST:PORT` once ready; SIGINT or SIGTERM stops accepting, lets the
// requests in flight finish (idle keep-alive connections close at once) for up to 5 s, then
// closes what is left, and exits 0. A start-up failure prints one line to stderr and exits 1
// (2 for a bad option, or a certificate or key that cannot be loaded).
#include <strata/core/errors.hpp>
#include <strata/core/timeout.hpp>
#include <strata/protocols/http_server.hpp>
#include <strata/protocols/http_static.hpp>
#include <strata/transports/server.hpp>
#include <strata/transports/ssl.hpp>
#include <strata/transports/tcp.hpp>

#include "example_options.hpp"
#include "server_runner.hpp"

#include <sys/stat.h>

#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>

using namespace std::chrono_literals;

namespace {

namespace ex = strata::examples;

void print_usage() {
  std::fputs(
      "usage: http_server [options]\n"
      "  --host H                 address to listen on (default 127.0.0.1)\n"
      "  --port P                 port; 0 picks a free one (default 0)\n"
      "  --loop selector|proactor|epoll|poll|select\n"
      "                           the event loop (default selector, on its best backend)\n"
      "  --threads N              N loops on N threads sharing the port (default 1)\n"
      "  --root DIR               serve the files below DIR for other GET and HEAD paths\n"
      "                           (without it, GET / is a small built-in page)\n"
      "  --max-header-bytes N     request head limit; over it: 431 (default 8192)\n"
      "  --max-body-bytes N       request body limit; over it: 413 (default 1048576)\n"
      "  --header-timeout S       a request head must arrive within S seconds; else 408\n"
      "                           (default 10)\n"
      "  --keepalive-timeout S    idle keep-alive connections close after S seconds\n"
      "                           (default 5)\n",
      stdout);
  std::fputs(ex::ServerTlsOptions::usage, stdout);
  std::fputs(
      "  --help                   print this and exit\n"
      "Routes: GET /plaintext, GET /json, POST /echo, and GET / or the --root files.\n"
      "Prints `listening on HOST:PORT` once ready. SIGINT or SIGTERM stops it: requests in\n"
      "flight get up to 5 s to finish, then connections are closed.\n",
      stdout);
}

constexpr strata::Duration grace_period = 5s;

struct Options {
  std::string host = "127.0.0.1";
  std::uint16_t port = 0;
  std::optional<strata::LoopKind> loop;
  unsigned threads = 1;
  std::optional<std::string> root;
  strata::HttpServerSettings settings;
  std::optional<strata::SslContext> ssl;
};

// Read-only once main() has parsed it; every loop's thread reads it. Its members' default
// constructors do not throw.
Options options;  // NOLINT(cert-err58-cpp)

strata::Duration parse_seconds(std::string_view option, const char* text) {
  char* end = nullptr;
  const double s = std::strtod(text, &end);
  if (*text == '\0' || *end != '\0' || !std::isfinite(s) || s <= 0 || s > 86400) {
    throw std::invalid_argument(std::string(option) +
                                " must be a number of seconds above 0 and at most 86400, got '" +
                                text + "'");
  }
  return std::chrono::duration_cast<strata::Duration>(std::chrono::duration<double>(s));
}

std::optional<int> parse_options(int argc, char** argv) {
  ex::ServerTlsOptions tls;
  try {
    ex::ArgumentCursor args(argc, argv, {"--help", "-h"});
    while (const std::optional<ex::Argument> arg = args.next()) {
      const std::string_view name = arg->name;
      const char* value = arg->value;
      if (name == "--help" || name == "-h") {
        print_usage();
        ex::print_loop_backends();
        return 0;
      }
      if (name == "--host") {
        options.host = value;
      } else if (name == "--port") {
        options.port = static_cast<std::uint16_t>(ex::parse_number(name, value, 0, 65535));
      } else if (name == "--threads") {
        options.threads = static_cast<unsigned>(ex::parse_number(name, value, 1, 1024));
      } else if (name == "--loop") {
        options.loop = ex::parse_loop(value);
      } else if (name == "--root") {
        struct stat st {};
        if (::stat(value, &st) != 0 || !S_ISDIR(st.st_mode)) {
          throw std::invalid_argument(std::string("--root: '") + value + "' is not a directory");
        }
        options.root = value;
      } else if (name == "--max-header-bytes") {
        options.settings.limits.max_header_bytes =
            ex::parse_number(name, value, 256, 16 * 1024 * 1024);
      } else if (name == "--max-body-bytes") {
        options.settings.limits.max_body_bytes =
            ex::parse_number(name, value, 1, 1ULL << 40);
      } else if (name == "--header-timeout") {
        options.settings.header_timeout = parse_seconds(name, value);
      } else if (name == "--keepalive-timeout") {
        options.settings.keepalive_timeout = parse_seconds(name, value);
      } else if (!tls.take(name, value)) {
        throw ex::unknown_option(name);
      }
    }
    options.ssl = tls.load();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "http_server: %s\n", e.what());
    return 2;
  }
  return std::nullopt;
}

// ---- Routes -------------------------------------------------------------------------------------

constexpr std::string_view demo_page = R"html(<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Strata http_server</title>
<style>
  body { font-family: system-ui, sans-serif; max-width: 40em; margin: 2em auto; padding: 0 1em; }
  code, pre { background: #f4f4f4; padding: 0.1em 0.3em; }
  #result { white-space: pre-wrap; }
</style>
</head>
<body>
<h1>Strata http_server</h1>
<p>An HTTP/1.1 server written on Strata's protocol layer: one event loop per thread, request
handlers as coroutines, pipelined requests answered in order.</p>
<ul>
  <li><a href="/plaintext">GET /plaintext</a></li>
  <li><a href="/json">GET /json</a></li>
</ul>
<form id="echo">
  <label>POST /echo <input id="text" name="text" value="Hello, Strata!"></label>
  <button type="submit">Send</button>
</form>
<p id="result"></p>
<script>
  document.getElementById("echo").addEventListener("submit", async (event) => {
    event.preventDefault();
    const response = await fetch("/echo", {
      method: "POST",
      headers: {"Content-Type": "text/plain"},
      body: document.getElementById("text").value,
    });
    document.getElementById("result").textContent =
      response.status + " " + (await response.text());
  });
  document.title += " (ready)";
</script>
</body>
</html>
)html";

strata::HttpRouter make_router() {
  strata::HttpRouter router;
  // Fixed answers await nothing: plain handlers, called inside the read callback without a
  // task of their own. /echo is a coroutine, as every handler that may await I/O is.
  router.get("/plaintext", [](strata::HttpServerRequest&) {
    return strata::HttpResponse::text("Hello, World!");
  });
  router.get("/json", [](strata::HttpServerRequest&) {
    return strata::HttpResponse::json(R"({"message":"Hello, World!"})");
  });
  router.post("/echo", [](strata::HttpServerRequest& request) -> strata::Coro<strata::HttpResponse> {
    strata::HttpResponse response;
    response.content_type = std::string(request.headers().get("Content-Type").value_or(""));
    response.body = std::string(request.body());
    co_return response;
  });
  if (options.root) {
    router.route_prefix("GET", "/", strata::static_files(*options.root));
  } else {
    router.get("/", [](strata::HttpServerRequest&) {
      return strata::HttpResponse::html(std::string(demo_page));
    });
  }
  return router;
}

// ---- One loop's listener ------------------------------------------------------------------------

/// One loop's HttpServer and its listening sockets.
class HttpListener {
 public:
  static strata::Coro<HttpListener> open_first(bool reuse_port) {
    // With port 0, every socket must end up on one port number: the addresses of a host like
    // "localhost" each get their own ephemeral port. Then bind again on the first one's.
    HttpListener listener = co_await open(options.port, reuse_port);
    if (options.port == 0 && !listener.has_one_port()) {
      const std::uint16_t port = listener.port();
      listener.tcp_.reset();
      HttpListener again = co_await open(port, reuse_port);
      co_return again;
    }
    co_return listener;
  }

  static strata::Coro<HttpListener> open(std::uint16_t port, bool reuse_port) {
    HttpListener listener;
    listener.http_ = std::make_unique<strata::HttpServer>(make_router(), options.settings);
    strata::ServerOptions server_options;
    server_options.reuse_port = reuse_port;
    if (options.ssl) server_options.ssl = *options.ssl;
    strata::Coro<std::unique_ptr<strata::Server>> create = strata::create_server(
        listener.http_->protocol_factory(), options.host, port, std::move(server_options));
    listener.tcp_ = co_await create;
    co_return listener;
  }

  std::uint16_t port() const { return tcp_->sockets().front().address.port(); }

  std::string host() const {
    std::string host = options.host;
    if (host.empty()) host = tcp_->sockets().front().address.host();
    return host.find(':') != std::string::npos ? "[" + host + "]" : host;
  }

  /// Stops accepting; idle connections close now, busy ones after their response; after the
  /// grace period, what is left is aborted.
  strata::Coro<void> shut_down() {
    tcp_->close();
    http_->shutdown();
    try {
      strata::Coro<void> wait = tcp_->wait_closed();
      co_await strata::wait_for(std::move(wait), grace_period);
      co_return;
    } catch (const strata::TimeoutError&) {
    }
    tcp_->abort_clients();
    strata::Coro<void> wait = tcp_->wait_closed();
    co_await wait;
  }

 private:
  bool has_one_port() const {
    for (const strata::ServerSocket& socket : tcp_->sockets()) {
      if (socket.address.port() != port()) return false;
    }
    return true;
  }

  // Declared first, destroyed last: the connections refer to the HttpServer.
  std::unique_ptr<strata::HttpServer> http_;
  std::unique_ptr<strata::Server> tcp_;
};

}  // namespace

int main(int argc, char** argv) {
  if (auto status = parse_options(argc, argv)) return *status;
  return ex::run_server<HttpListener>("http_server", options.threads, options.loop);
}
