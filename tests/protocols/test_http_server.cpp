// The HTTP/1.1 server (HttpServer, HttpConnection, HttpRouter) over real TCP connections on
// 127.0.0.1, on every loop backend: framing, pipelining order, keep-alive rules, limits,
// errors, timeouts, streamed and file bodies, graceful shutdown.
#include <strata/protocols/http_server.hpp>

#include <catch2/catch.hpp>

#include "http_test_support.hpp"
#include "loop_test.hpp"

#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include <strata/core/errors.hpp>
#include <strata/core/event.hpp>
#include <strata/core/sleep.hpp>
#include <strata/core/task.hpp>
#include <strata/protocols/http_date.hpp>

namespace {

using namespace std::chrono_literals;
using strata::Coro;
using strata::HttpResponse;
using strata::HttpRouter;
using strata::HttpServerRequest;
using strata::HttpServerSettings;
using strata::testing::connect_raw;
using strata::testing::start_http_server;

/// The router of most tests: /plaintext, /json, POST /echo, /slow (answers after a sleep),
/// /throw, a prefix /files/, and /stream (a chunked body of three parts).
HttpRouter test_router() {
  HttpRouter router;
  router.get("/plaintext", [](HttpServerRequest&) -> Coro<HttpResponse> {
    co_return HttpResponse::text("Hello, World!");
  });
  router.get("/json", [](HttpServerRequest&) -> Coro<HttpResponse> {
    co_return HttpResponse::json(R"({"message":"Hello, World!"})");
  });
  router.post("/echo", [](HttpServerRequest& req) -> Coro<HttpResponse> {
    HttpResponse r;
    r.content_type = std::string(req.headers().get("Content-Type").value_or(""));
    r.body = std::string(req.body());
    co_return r;
  });
  router.get("/slow", [](HttpServerRequest& req) -> Coro<HttpResponse> {
    std::string ms(req.query());
    co_await strata::sleep(std::chrono::milliseconds(ms.empty() ? 50 : std::stoi(ms)));
    co_return HttpResponse::text("slow " + ms);
  });
  router.get("/fast", [](HttpServerRequest& req) -> Coro<HttpResponse> {
    co_return HttpResponse::text("fast " + std::string(req.query()));
  });
  router.get("/throw", [](HttpServerRequest&) -> Coro<HttpResponse> {
    throw std::runtime_error("handler failure");
    co_return HttpResponse{};
  });
  router.route_prefix("GET", "/files/", [](HttpServerRequest& req) -> Coro<HttpResponse> {
    co_return HttpResponse::text("prefix " + std::string(req.route()) + " " + std::string(req.path()));
  });
  router.get("/stream", [](HttpServerRequest&) -> Coro<HttpResponse> {
    HttpResponse r;
    r.content_type = "text/plain";
    r.stream = [](strata::HttpBodyWriter& w) -> Coro<void> {
      co_await w.write("one,");
      co_await strata::sleep(0s);
      co_await w.write("two,");
      co_await w.write("three");
    };
    co_return r;
  });
  return router;
}

const std::string get_plaintext =  // NOLINT(cert-err58-cpp): test data; a throw here ends the run
    "GET /plaintext HTTP/1.1\r\nHost: x\r\n\r\n";

}  // namespace

STRATA_LOOP_TEST_CASE("HTTP server: GET /plaintext and /json answer with keep-alive", "[protocols][http]") {
  strata::testing::TestLoop loop(TestType::kind);
  auto body = [&]() -> Coro<void> {
    auto s = co_await start_http_server(test_router());
    auto c = co_await connect_raw(s.port);
    c->send(get_plaintext);
    auto first = co_await c->responses(1);
    REQUIRE(first.size() == 1);
    CHECK(first[0].version == "HTTP/1.1");
    CHECK(first[0].status == 200);
    CHECK(first[0].body == "Hello, World!");
    CHECK(first[0].header("Content-Type") == "text/plain");
    CHECK(first[0].header("Content-Length") == "13");
    CHECK(first[0].header("Date").value_or("").size() == 29);
    CHECK(first[0].header("Server") == "strata");
    CHECK_FALSE(first[0].header("Connection"));
    c->send("GET /json HTTP/1.1\r\nHost: x\r\n\r\n");
    auto both = co_await c->responses(2);
    REQUIRE(both.size() == 2);
    CHECK(both[1].header("Content-Type") == "application/json");
    CHECK(both[1].body == R"({"message":"Hello, World!"})");
    CHECK_FALSE(c->eof);  // the same connection served both
    co_await s.stop();
  };
  loop.run(body());
}

STRATA_LOOP_TEST_CASE("HTTP server: a request split at every byte boundary parses the same",
                      "[protocols][http]") {
  strata::testing::TestLoop loop(TestType::kind);
  auto body = [&]() -> Coro<void> {
    auto s = co_await start_http_server(test_router());
    const std::string request =
        "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Type: text/x-test\r\n"
        "Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n";
    auto c = co_await connect_raw(s.port);
    for (std::size_t i = 0; i < request.size(); ++i) {
      c->send(request.substr(i, 1));
      co_await strata::sleep(0s);  // one byte per loop iteration: every split point
    }
    auto r = co_await c->responses(1);
    REQUIRE(r.size() == 1);
    CHECK(r[0].status == 200);
    CHECK(r[0].body == "hello world");
    CHECK(r[0].header("Content-Type") == "text/x-test");
    co_await s.stop();
  };
  loop.run(body());
}

STRATA_LOOP_TEST_CASE("HTTP server: heads read without llhttp and by it are answered alike, "
                      "sent whole or byte by byte",
                      "[protocols][http]") {
  // Sent in one write, the simple heads among these are read without llhttp; sent a byte at
  // a time, every head is llhttp's. The answers must not depend on it: a Connection field in
  // a trailer section does not end the connection, nor does "close" followed by a tab (which
  // llhttp does not take for close), and HTTP/1.0 keep-alive holds until the last request.
  strata::testing::TestLoop loop(TestType::kind);
  auto body = [&]() -> Coro<void> {
    auto s = co_await start_http_server(test_router());
    const std::string requests =
        get_plaintext +
        "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Type: text/a\r\nTransfer-Encoding: chunked\r\n"
        "\r\n3\r\nabc\r\n0\r\nConnection: close\r\n\r\n"
        "GET /fast?1 HTTP/1.1\r\nHost: x\r\nConnection: close\t\r\n\r\n"
        "GET /json HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"
        "GET /plaintext HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    auto c = co_await connect_raw(s.port);
    bool whole = true;
    SECTION("sent in one write") {}
    SECTION("sent a byte at a time") { whole = false; }
    if (whole) {
      c->send(requests);
    } else {
      for (std::size_t i = 0; i < requests.size(); ++i) {
        c->send(requests.substr(i, 1));
        co_await strata::sleep(0s);  // one byte per loop iteration
      }
    }
    co_await c->closed();
    const auto r = strata::testing::parse_responses(c->received);
    REQUIRE(r.size() == 5);
    CHECK(r[0].body == "Hello, World!");
    CHECK(r[1].body == "abc");
    CHECK(r[1].header("Content-Type") == "text/a");
    CHECK_FALSE(r[1].header("Connection"));
    CHECK(r[2].body == "fast 1");
    CHECK_FALSE(r[2].header("Connection"));
    CHECK(r[3].version == "HTTP/1.0");
    CHECK(r[3].header("Connection") == "keep-alive");
    CHECK(r[4].header("Connection") == "close");
    for (const auto& response : r) CHECK(response.status == 200);
    co_await s.stop();
  };
  loop.run(body());
}

STRATA_LOOP_TEST_CASE("HTTP server: 100 pipelined requests in one write are answered in order",
                      "[protocols][http]") {
  strata::testing::TestLoop loop(TestType::kind);
  auto body = [&]() -> Coro<void> {
    auto s = co_await start_http_server(test_router());
    auto c = co_await connect_raw(s.port);
    std::string all;
    for (int i = 0; i < 100; ++i) {
      // Every 7th request suspends, so later ones finish first.
      all += (i % 7 == 3 ? "GET /slow?" + std::to_string(20 + i % 3) : "GET /fast?" + std::to_string(i)) +
             " HTTP/1.1\r\nHost: x\r\n\r\n";
    }
    c->send(all);
    auto r = co_await c->responses(100);
    REQUIRE(r.size() == 100);
    for (int i = 0; i < 100; ++i) {
      const std::string expected =
          i % 7 == 3 ? "slow " + std::to_string(20 + i % 3) : "fast " + std::to_string(i);
      CHECK(r[static_cast<std::size_t>(i)].body == expected);
    }
    co_await s.stop();
  };
  loop.run(body());
}

STRATA_LOOP_TEST_CASE("HTTP server: a batch of pipelined requests is answered with one write",
                      "[protocols][http]") {
  strata::testing::TestLoop loop(TestType::kind);
  auto body = [&]() -> Coro<void> {
    auto s = co_await start_http_server(test_router());
    auto c = co_await connect_raw(s.port);
    std::string all;
    for (int i = 0; i < 16; ++i) all += get_plaintext;
    c->send(all);
    auto r = co_await c->responses(16);
    CHECK(r.size() == 16);
    co_await s.stop();
  };
  loop.run(body());
}

STRATA_LOOP_TEST_CASE("HTTP server: 1000 requests on one connection", "[protocols][http]") {
  strata::testing::TestLoop loop(TestType::kind);
  auto body = [&]() -> Coro<void> {
    auto s = co_await start_http_server(test_router());
    auto c = co_await connect_raw(s.port);
    for (std::size_t i = 1; i <= 1000; ++i) {
      c->send(get_plaintext);
      // Every response ends with its body: count them by that.
      auto op = c->until([c, i] {
        std::size_t n = 0;
        for (std::size_t at = c->received.find("Hello, World!"); at != std::string::npos;
             at = c->received.find("Hello, World!", at + 1)) {
          ++n;
        }
        return n >= i;
      });
      co_await op;
    }
    auto r = strata::testing::parse_responses(c->received);
    REQUIRE(r.size() == 1000);
    CHECK(r.back().body == "Hello, World!");
    CHECK_FALSE(c->eof);
    co_await s.stop();
  };
  loop.run(body(), 30s);
}

STRATA_LOOP_TEST_CASE("HTTP server: keep-alive rules of HTTP/1.0 and 1.1", "[protocols][http]") {
  strata::testing::TestLoop loop(TestType::kind);
  auto body = [&]() -> Coro<void> {
    auto s = co_await start_http_server(test_router());
    SECTION("HTTP/1.0 without keep-alive: answered and closed") {
      auto c = co_await connect_raw(s.port);
      c->send("GET /plaintext HTTP/1.0\r\n\r\n");
      co_await c->closed();
      auto r = strata::testing::parse_responses(c->received);
      REQUIRE(r.size() == 1);
      CHECK(r[0].version == "HTTP/1.0");
      CHECK(r[0].header("Connection") == "close");
      CHECK(r[0].body == "Hello, World!");
    }
    SECTION("HTTP/1.0 with Connection: keep-alive stays open") {
      auto c = co_await connect_raw(s.port);
      c->send("GET /plaintext HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
      auto r = co_await c->responses(1);
      CHECK(r[0].header("Connection") == "keep-alive");
      c->send("GET /plaintext HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
      r = co_await c->responses(2);
      CHECK(r.size() == 2);
      CHECK_FALSE(c->eof);
    }
    SECTION("HTTP/1.1 Connection: close is honoured, and what follows is ignored") {
      auto c = co_await connect_raw(s.port);
      c->send("GET /plaintext HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" + get_plaintext);
      co_await c->closed();
      auto r = strata::testing::parse_responses(c->received);
      REQUIRE(r.size() == 1);
      CHECK(r[0].header("Connection") == "close");
    }
    co_await s.stop();
  };
  loop.run(body());
}

STRATA_LOOP_TEST_CASE("HTTP server: router answers 404, 405 with Allow, 501, HEAD, prefixes and absolute-form targets",
                      "[protocols][http]") {
  strata::testing::TestLoop loop(TestType::kind);
  auto body = [&]() -> Coro<void> {
    auto s = co_await start_http_server(test_router());
    auto c = co_await connect_raw(s.port);
    c->send("GET /nowhere HTTP/1.1\r\nHost: x\r\n\r\n"
            "POST /plaintext HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"
            "PATCH /plaintext HTTP/1.1\r\nHost: x\r\n\r\n"
            "HEAD /plaintext HTTP/1.1\r\nHost: x\r\n\r\n"
            "GET /files/a/b.txt?x=1 HTTP/1.1\r\nHost: x\r\n\r\n"
            "GET /echo HTTP/1.1\r\nHost: x\r\n\r\n"
            "GET HTTP://x:80/plaintext HTTP/1.1\r\nHost: x\r\n\r\n"
            "GET http://x?q HTTP/1.1\r\nHost: x\r\n\r\n");
    const std::vector<std::size_t> head_at = {3};
    auto r = co_await c->responses(8, head_at);
    REQUIRE(r.size() == 8);
    CHECK(r[6].body == "Hello, World!");  // absolute-form, served as its origin-form
    CHECK(r[7].status == 404);             // "/?q": no route for "/" in this router
    CHECK(r[0].status == 404);
    CHECK(r[1].status == 405);
    CHECK(r[1].header("Allow") == "GET, HEAD");
    CHECK(r[2].status == 501);
    CHECK(r[3].status == 200);
    CHECK(r[3].header("Content-Length") == "13");
    CHECK(r[3].body.empty());
    CHECK(r[4].body == "prefix /files/ /files/a/b.txt");
    CHECK(r[5].status == 405);
    CHECK(r[5].header("Allow") == "POST");
    CHECK_FALSE(c->eof);  // none of these ends the connection
    co_await s.stop();
  };
  loop.run(body());
}

STRATA_LOOP_TEST_CASE("HTTP server: a throwing handler gives 500 and the connection lives on",
                      "[protocols][http]") {
  strata::testing::TestLoop loop(TestType::kind);
  auto body = [&]() -> Coro<void> {
    auto s = co_await start_http_server(test_router());
    auto c = co_await connect_raw(s.port);
    c->send("GET /throw HTTP/1.1\r\nHost: x\r\n\r\n" + get_plaintext);
    auto r = co_await c->responses(2);
    REQUIRE(r.size() == 2);
    CHECK(r[0].status == 500);
    CHECK(r[1].status == 200);
    CHECK_FALSE(c->eof);
    co_await s.stop();
  };
  loop.run(body());
  REQUIRE(loop.errors().size() == 1);
  CHECK(loop.errors()[0].message == "HTTP handler failed for GET /throw");
}

namespace {

/// A router that mixes plain handlers (no task) with a coroutine one that suspends.
HttpRouter plain_router() {
  HttpRouter router;
  router.get("/p", [](HttpServerRequest& req) {
    return HttpResponse::text("plain " + std::string(req.query()));
  });
  router.post("/pecho", [](HttpServerRequest& req) {
    HttpResponse r;
    r.content_type = "application/octet-stream";
    r.body = std::string(req.body());
    return r;
  });
  router.get("/pthrow", [](HttpServerRequest&) -> HttpResponse {
    throw std::runtime_error("plain handler failure");
  });
  router.route_prefix("GET", "/pp/", [](HttpServerRequest& req) {
    return HttpResponse::text(std::string(req.route()) + " " + std::string(req.path()));
  });
  router.get("/pstream", [](HttpServerRequest&) {
    HttpResponse r;
    r.stream = [](strata::HttpBodyWriter& w) -> Coro<void> {
      co_await w.write("a,");
      co_await w.write("b");
    };
    return r;
  });
  router.get("/pbig", [](HttpServerRequest&) {
    return HttpResponse::text(std::string(100 * 1024, 'x'));
  });
  router.get("/slow", [](HttpServerRequest& req) -> Coro<HttpResponse> {
    std::string ms(req.query());
    co_await strata::sleep(std::chrono::milliseconds(std::stoi(ms)));
    co_return HttpResponse::text("slow " + ms);
  });
  return router;
}

}  // namespace

STRATA_LOOP_TEST_CASE("HTTP server: plain handlers answer in order behind a coroutine handler",
                      "[protocols][http]") {
  strata::testing::TestLoop loop(TestType::kind);
  auto body = [&]() -> Coro<void> {
    auto s = co_await start_http_server(plain_router());
    auto c = co_await connect_raw(s.port);
    // The first request suspends, so every plain answer after it waits for its turn.
    c->send("GET /slow?30 HTTP/1.1\r\nHost: x\r\n\r\n"
            "GET /p?1 HTTP/1.1\r\nHost: x\r\n\r\n"
            "HEAD /p?2 HTTP/1.1\r\nHost: x\r\n\r\n"
            "GET /pthrow HTTP/1.1\r\nHost: x\r\n\r\n"
            "POST /pecho HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"
            "GET /pp/a/b?q HTTP/1.1\r\nHost: x\r\n\r\n"
            "POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"
            "GET /pstream HTTP/1.1\r\nHost: x\r\n\r\n"
            "GET /pbig HTTP/1.1\r\nHost: x\r\n\r\n"
            "GET /p?3 HTTP/1.1\r\nHost: x\r\n\r\n");
    const std::vector<std::size_t> head_at = {2};
    auto r = co_await c->responses(10, head_at);
    REQUIRE(r.size() == 10);
    CHECK(r[0].body == "slow 30");
    CHECK(r[1].body == "plain 1");
    CHECK(r[2].status == 200);
    CHECK(r[2].header("Content-Length") == "7");  // HEAD: the GET handler's head, no body
    CHECK(r[2].body.empty());
    CHECK(r[3].status == 500);
    CHECK(r[4].body == "hello");
    CHECK(r[4].header("Content-Type") == "application/octet-stream");
    CHECK(r[5].body == "/pp/ /pp/a/b");
    CHECK(r[6].status == 405);
    CHECK(r[6].header("Allow") == "GET, HEAD");
    CHECK(r[7].header("Transfer-Encoding") == "chunked");
    CHECK(r[7].body == "a,b");
    CHECK(r[8].body == std::string(100 * 1024, 'x'));
    CHECK(r[9].body == "plain 3");
    CHECK_FALSE(c->eof);  // none of these ends the connection
    // First in line, a plain handler's answer goes out at once.
    c->send("GET /p?4 HTTP/1.1\r\nHost: x\r\n\r\n");
    auto more = co_await c->responses(11, head_at);
    REQUIRE(more.size() == 11);
    CHECK(more[10].body == "plain 4");
    co_await s.stop();
  };
  loop.run(body());
  REQUIRE(loop.errors().size() == 1);
  CHECK(loop.errors()[0].message == "HTTP handler failed for GET /pthrow");
}

STRATA_LOOP_TEST_CASE("HTTP server: plain handlers first in line answer every kind of response, "
                      "sent in one write or one by one",
                      "[protocols][http]") {
  // Nothing before them in flight: a bodiless request to a plain handler is answered before the
  // parser reads on (the direct lane); a stream or a file then moves to a slot of its own.
  strata::testing::TestLoop loop(TestType::kind);
  const bool one_write = GENERATE(true, false);
  std::string path = "/tmp/strata-http-plain-file-XXXXXX";
  const int fd = ::mkstemp(path.data());
  REQUIRE(fd >= 0);
  const std::string content(70000, 'f');
  REQUIRE(::write(fd, content.data(), content.size()) == static_cast<ssize_t>(content.size()));
  ::close(fd);
  HttpRouter router = plain_router();
  const std::string file = path;
  router.get("/pfile", [file](HttpServerRequest&) {
    HttpResponse r;
    r.file = strata::HttpFileBody(::open(file.c_str(), O_RDONLY | O_CLOEXEC), 0, 70000);
    return r;
  });
  router.get("/pwho", [](HttpServerRequest& req) {
    std::string who(req.method());
    who += " " + std::string(req.target()) + " " + std::to_string(req.version_minor());
    who += req.keep_alive() ? " keep-alive" : " close";
    for (const auto& h : req.headers()) who += " " + std::string(h.name) + "=" + std::string(h.value);
    return HttpResponse::text(who);
  });
  const std::vector<std::string> requests = {
      "GET /p?1 HTTP/1.1\r\nHost: x\r\n\r\n",
      "HEAD /p?2 HTTP/1.1\r\nHost: x\r\n\r\n",
      "GET /pthrow HTTP/1.1\r\nHost: x\r\n\r\n",
      "GET /pstream HTTP/1.1\r\nHost: x\r\n\r\n",
      "HEAD /pstream HTTP/1.1\r\nHost: x\r\n\r\n",
      "GET /pfile HTTP/1.1\r\nHost: x\r\n\r\n",
      "GET /pbig HTTP/1.1\r\nHost: x\r\n\r\n",
      "POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
      "GET /pp/a/b?q HTTP/1.1\r\nHost: x\r\n\r\n",
      "GET http://x/pwho?a=1 HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n\r\n",
      "GET /pwho HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
      "GET /pwho HTTP/1.0\r\n\r\n",  // the last: closes
  };
  const std::vector<std::size_t> head_at = {1, 4};
  auto body = [&]() -> Coro<void> {
    auto s = co_await start_http_server(std::move(router));
    auto c = co_await connect_raw(s.port);
    std::vector<strata::testing::ParsedResponse> r;
    if (one_write) {
      std::string all;
      for (const std::string& q : requests) all += q;
      c->send(all);
      r = co_await c->responses(requests.size(), head_at);
    } else {
      for (std::size_t i = 0; i < requests.size(); ++i) {
        c->send(requests[i]);
        r = co_await c->responses(i + 1, head_at);
        REQUIRE(r.size() == i + 1);
      }
    }
    REQUIRE(r.size() == requests.size());
    CHECK(r[0].body == "plain 1");
    CHECK(r[1].header("Content-Length") == "7");
    CHECK(r[1].body.empty());
    CHECK(r[2].status == 500);
    CHECK(r[3].header("Transfer-Encoding") == "chunked");
    CHECK(r[3].body == "a,b");
    CHECK(r[4].header("Transfer-Encoding") == "chunked");
    CHECK(r[4].body.empty());
    CHECK(r[5].body == content);
    CHECK(r[6].body == std::string(100 * 1024, 'x'));
    CHECK(r[7].status == 405);
    CHECK(r[8].body == "/pp/ /pp/a/b");
    CHECK(r[9].body == "GET /pwho?a=1 1 keep-alive Host=x X-A=1");
    CHECK(r[10].body == "GET /pwho 0 keep-alive Connection=keep-alive");
    CHECK(r[10].header("Connection") == "keep-alive");
    CHECK(r[11].body == "GET /pwho 0 close");
    CHECK(r[11].header("Connection") == "close");
    co_await c->closed();
    CHECK(c->eof);
    co_await s.stop();
  };
  loop.run(body());
  ::unlink(path.c_str());
  REQUIRE(loop.errors().size() == 1);
  CHECK(loop.errors()[0].message == "HTTP handler failed for GET /pthrow");
}

STRATA_LOOP_TEST_CASE("HTTP server: a plain handler that shuts the server down is answered with "
                      "Connection: close",
                      "[protocols][http]") {
  strata::testing::TestLoop loop(TestType::kind);
  strata::HttpServer* server = nullptr;
  HttpRouter router = plain_router();
  router.get("/down", [&server](HttpServerRequest&) {
    server->shutdown();
    return HttpResponse::text("down");
  });
  auto body = [&]() -> Coro<void> {
    auto s = co_await start_http_server(std::move(router));
    server = s.http.get();
    auto c = co_await connect_raw(s.port);
    c->send("GET /down HTTP/1.1\r\nHost: x\r\n\r\nGET /p?1 HTTP/1.1\r\nHost: x\r\n\r\n");
    co_await c->closed();
    const auto r = strata::testing::parse_responses(c->received);
    REQUIRE(r.size() == 1);  // nothing after the response that ends the connection
    CHECK(r[0].body == "down");
    CHECK(r[0].header("Connection") == "close");
    co_await s.stop();
  };
  loop.run(body());
}

STRATA_LOOP_TEST_CASE("HTTP server: a reused response head has the current Date, its own length and "
                      "type, and no keep-alive where the connection ends",
                      "[protocols][http]") {
  strata::testing::TestLoop loop(TestType::kind);
  auto body = [&]() -> Coro<void> {
    auto s = co_await start_http_server(plain_router());
    auto c = co_await connect_raw(s.port);
    // Alternating lengths and types: each answer must carry its own.
    c->send("GET /p?1 HTTP/1.1\r\nHost: x\r\n\r\n"
            "GET /p?12 HTTP/1.1\r\nHost: x\r\n\r\n"
            "POST /pecho HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"
            "GET /p?1 HTTP/1.1\r\nHost: x\r\n\r\n"
            "GET /p?123 HTTP/1.1\r\nHost: x\r\n\r\n");
    auto r = co_await c->responses(5);
    REQUIRE(r.size() == 5);
    CHECK(r[0].body == "plain 1");
    CHECK(r[1].body == "plain 12");
    CHECK(r[1].header("Content-Length") == "8");
    CHECK(r[2].body == "abc");
    CHECK(r[2].header("Content-Type") == "application/octet-stream");
    CHECK(r[3].body == "plain 1");
    CHECK(r[3].header("Content-Type") == "text/plain");
    CHECK(r[4].header("Content-Length") == "9");
    const std::string first_date = r[0].header("Date").value_or("");
    // Once the clock passes the second, the same response must carry the new Date.
    const auto deadline = std::chrono::steady_clock::now() + 3s;
    while (std::string(strata::http_date_now()) == first_date &&
           std::chrono::steady_clock::now() < deadline) {
      co_await strata::sleep(50ms);
    }
    c->send("GET /p?1 HTTP/1.1\r\nHost: x\r\n\r\n");
    auto later = co_await c->responses(6);
    REQUIRE(later.size() == 6);
    CHECK(later[5].header("Date") != first_date);
    CHECK(later[5].body == "plain 1");
    CHECK_FALSE(later[5].header("Connection"));
    // The same response, ending the connection: Connection: close, then the close.
    c->send("GET /p?1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    auto last = co_await c->responses(7);
    REQUIRE(last.size() == 7);
    CHECK(last[6].header("Connection") == "close");
    auto closing = c->closed();
    co_await closing;
    CHECK(c->eof);
    co_await s.stop();
  };
  loop.run(body());
}

STRATA_LOOP_TEST_CASE("HTTP server: after the client's half-close, every request it sent is answered, "
                      "the last with Connection: close",
                      "[protocols][http]") {
  strata::testing::TestLoop loop(TestType::kind);
  auto body = [&]() -> Coro<void> {
    auto s = co_await start_http_server(plain_router());
    auto c = co_await connect_raw(s.port);
    // The first answer waits on a timer, so the EOF arrives while all three are owed.
    c->send("GET /slow?20 HTTP/1.1\r\nHost: x\r\n\r\n"
            "GET /p?1 HTTP/1.1\r\nHost: x\r\n\r\n"
            "GET /slow?1 HTTP/1.1\r\nHost: x\r\n\r\n");
    c->transport->write_eof();
    auto closing = c->closed();
    co_await closing;
    auto r = strata::testing::parse_responses(c->received);
    REQUIRE(r.size() == 3);
    CHECK(r[0].body == "slow 20");
    CHECK_FALSE(r[0].header("Connection"));
    CHECK(r[1].body == "plain 1");
    CHECK_FALSE(r[1].header("Connection"));
    CHECK(r[2].body == "slow 1");
    CHECK(r[2].header("Connection") == "close");
    co_await s.stop();
  };
  loop.run(body());
}

TEST_CASE("HTTP router: a plain handler must not be empty, nor share a method with a coroutine one",
          "[protocols][http]") {
  HttpRouter router;
  CHECK_THROWS_AS(router.get("/x", strata::HttpPlainHandler{}), std::invalid_argument);
  router.get("/x", [](HttpServerRequest&) { return HttpResponse::text("x"); });
  CHECK_THROWS_AS(router.get("/x", [](HttpServerRequest&) -> Coro<HttpResponse> {
    co_return HttpResponse::text("y");
  }), std::invalid_argument);
  const HttpRouter::Match m = router.resolve("HEAD", "/x");
  CHECK(m.plain != nullptr);
  CHECK(m.handler == nullptr);
  CHECK(m.route == "/x");
}

TEST_CASE("HTTP router: exact paths of every length are found, past the length index too",
          "[protocols][http]") {
  // Routes of lengths 1..300 (several of some lengths), added in a shuffled order; the index
  // covers lengths up to 256, the longer ones are compared in turn.
  HttpRouter router;
  std::vector<std::string> paths;
  for (std::size_t n = 1; n <= 300; n += 7) {
    paths.push_back("/" + std::string(n - 1, 'a'));
    if (n > 1) paths.push_back("/" + std::string(n - 1, 'b'));
  }
  std::vector<std::string> order = paths;
  std::reverse(order.begin(), order.end());
  std::rotate(order.begin(), order.begin() + static_cast<std::ptrdiff_t>(order.size() / 3), order.end());
  for (const std::string& p : order) {
    router.get(p, [p](HttpServerRequest&) { return HttpResponse::text(p); });
  }
  for (const std::string& p : paths) {
    INFO(p.size());
    const HttpRouter::Match m = router.resolve("GET", p);
    CHECK(m.plain != nullptr);
    CHECK(m.route == p);
    std::string other = p;
    other.back() = 'c';  // same length, no route
    CHECK(router.resolve("GET", other).status == 404);
    CHECK(router.resolve("GET", p + "a").status == (p.size() + 1 <= 300 &&
                                                        std::find(paths.begin(), paths.end(), p + "a") != paths.end()
                                                    ? 0
                                                    : 404));
  }
  CHECK(router.resolve("GET", "/" + std::string(400, 'a')).status == 404);
  CHECK(HttpRouter().resolve("GET", "/").status == 404);

  // A path one byte away from a route's, at any place, is not that route (paths up to 16
  // bytes are compared by words that overlap; longer ones by memcmp).
  for (std::size_t n = 2; n <= 24; ++n) {
    HttpRouter one;
    const std::string p = "/" + std::string(n - 1, 'x');
    one.get(p, [](HttpServerRequest&) { return HttpResponse::text("x"); });
    CHECK(one.resolve("GET", p).plain != nullptr);
    for (std::size_t k = 0; k < n; ++k) {
      std::string q = p;
      q[k] = 'y';
      INFO(n << " bytes, byte " << k);
      CHECK(one.resolve("GET", q).status == 404);
    }
  }
}

STRATA_LOOP_TEST_CASE("HTTP server: malformed input, smuggling shapes and limits get their status and a close",
                      "[protocols][http]") {
  struct Case {
    std::string name;
    std::string request;
    int status;
  };
  const std::vector<Case> cases = {
      {"garbage", "HELLO\r\n\r\n", 400},
      {"Content-Length with Transfer-Encoding",
       "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
       "0\r\n\r\n", 400},
      {"two differing Content-Length",
       "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!", 400},
      {"bad chunk size", "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 400},
      {"header over the limit",
       "GET /plaintext HTTP/1.1\r\nHost: x\r\nX-Big: " + std::string(9000, 'a') + "\r\n\r\n", 431},
      {"body over the limit",
       "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 2000000\r\n\r\n", 413},
      {"unknown transfer coding",
       "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501},
      {"HTTP/2.0", "GET / HTTP/2.0\r\nHost: x\r\n\r\n", 505},
  };
  strata::testing::TestLoop loop(TestType::kind);
  auto body = [&]() -> Coro<void> {
    auto s = co_await start_http_server(test_router());
    for (const Case& k : cases) {
      INFO(k.name);
      auto c = co_await connect_raw(s.port);
      // A valid request first: its response must come before the error's.
      c->send(get_plaintext + k.request);
      co_await c->closed();
      INFO(c->received);
      auto r = strata::testing::parse_responses(c->received);
      REQUIRE(r.size() == 2);
      CHECK(r[0].status == 200);
      CHECK(r[1].status == k.status);
      CHECK(r[1].header("Connection") == "close");
    }
    co_await s.stop();
  };
  loop.run(body());
}

STRATA_LOOP_TEST_CASE("HTTP server: Expect: 100-continue gets 100 before the body is sent",
                      "[protocols][http]") {
  strata::testing::TestLoop loop(TestType::kind);
  auto body = [&]() -> Coro<void> {
    auto s = co_await start_http_server(test_router());
    auto c = co_await connect_raw(s.port);
    c->send("POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n");
    auto op = c->until([c] { return c->received.find("\r\n\r\n") != std::string::npos; });
    co_await op;
    CHECK(c->received == "HTTP/1.1 100 Continue\r\n\r\n");
    c->send("ping");
    auto r = co_await c->responses(1);
    REQUIRE(r.size() == 1);
    CHECK(r[0].body == "ping");
    co_await s.stop();
  };
  loop.run(body());
}

STRATA_LOOP_TEST_CASE("HTTP server: a streamed response is chunked, and HEAD of it has no body",
                      "[protocols][http]") {
  strata::testing::TestLoop loop(TestType::kind);
  auto body = [&]() -> Coro<void> {
    auto s = co_await start_http_server(test_router());
    auto c = co_await connect_raw(s.port);
    c->send("GET /stream HTTP/1.1\r\nHost: x\r\n\r\nHEAD /stream HTTP/1.1\r\nHost: x\r\n\r\n" +
            get_plaintext);
    const std::vector<std::size_t> head_at = {1};
    auto r = co_await c->responses(3, head_at);
    REQUIRE(r.size() == 3);
    CHECK(r[0].chunked);
    CHECK(r[0].body == "one,two,three");
    CHECK(r[1].header("Transfer-Encoding") == "chunked");
    CHECK(r[2].body == "Hello, World!");
    co_await s.stop();
  };
  loop.run(body());
}

STRATA_LOOP_TEST_CASE("HTTP server: a file body is sent whole, and a range of it", "[protocols][http]") {
  strata::testing::TestLoop loop(TestType::kind);
  std::string path = "/tmp/strata-http-file-XXXXXX";
  const int fd = ::mkstemp(path.data());
  REQUIRE(fd >= 0);
  std::string content;
  for (int i = 0; i < 300000; ++i) content += static_cast<char>('a' + i % 26);
  REQUIRE(::write(fd, content.data(), content.size()) == static_cast<ssize_t>(content.size()));
  ::close(fd);
  HttpRouter router = test_router();
  const std::string file = path;
  router.get("/file", [file](HttpServerRequest& req) -> Coro<HttpResponse> {
    const int f = ::open(file.c_str(), O_RDONLY | O_CLOEXEC);
    if (f < 0) co_return HttpResponse::error(404);
    HttpResponse r;
    r.content_type = "application/octet-stream";
    if (req.query() == "part") {
      r.status = 206;
      r.file = strata::HttpFileBody(f, 1000, 5000);
    } else {
      r.file = strata::HttpFileBody(f, 0, 300000);
    }
    co_return r;
  });
  auto body = [&]() -> Coro<void> {
    auto s = co_await start_http_server(std::move(router));
    auto c = co_await connect_raw(s.port);
    c->send("GET /file HTTP/1.1\r\nHost: x\r\n\r\nGET /file?part HTTP/1.1\r\nHost: x\r\n\r\n" +
            get_plaintext);
    auto r = co_await c->responses(3);
    REQUIRE(r.size() == 3);
    CHECK(r[0].body == content);
    CHECK(r[1].status == 206);
    CHECK(r[1].body == content.substr(1000, 5000));
    CHECK(r[2].body == "Hello, World!");
    co_await s.stop();
  };
  loop.run(body());
  ::unlink(path.c_str());
}

STRATA_LOOP_TEST_CASE("HTTP server: header timeout gives 408, idle keep-alive connections close",
                      "[protocols][http]") {
  // On virtual time: the default timeouts (10 s for a head, 5 s idle) are checked to the
  // nanosecond, at no cost of real time.
  strata::testing::TestLoop loop(TestType::kind, strata::testing::TestClock::virtual_);
  auto body = [&]() -> Coro<void> {
    const HttpServerSettings settings;
    strata::EventLoop& l = strata::get_running_loop();
    auto s = co_await start_http_server(test_router(), settings);
    auto slow = co_await connect_raw(s.port);
    auto idle = co_await connect_raw(s.port);
    const strata::TimePoint start = l.time();
    idle->send(get_plaintext);
    slow->send("GET /plaintext HTTP/1.1\r\nHo");
    co_await idle->responses(1);
    co_await idle->closed();
    CHECK(l.time() - start == settings.keepalive_timeout);
    INFO(idle->received);
    auto ri = strata::testing::parse_responses(idle->received);
    REQUIRE(ri.size() == 1);  // answered, then closed silently when idle
    CHECK(ri[0].status == 200);
    co_await slow->closed();
    CHECK(l.time() - start == settings.header_timeout);
    auto r = strata::testing::parse_responses(slow->received);
    REQUIRE(r.size() == 1);
    CHECK(r[0].status == 408);
    co_await s.stop();
  };
  loop.run(body());
}

STRATA_LOOP_TEST_CASE("HTTP server: graceful shutdown finishes the request in flight and closes idle connections",
                      "[protocols][http]") {
  strata::testing::TestLoop loop(TestType::kind, strata::testing::TestClock::virtual_);
  auto body = [&]() -> Coro<void> {
    auto s = co_await start_http_server(test_router());
    auto busy = co_await connect_raw(s.port);
    auto idle = co_await connect_raw(s.port);
    idle->send(get_plaintext);
    co_await idle->responses(1);
    busy->send("GET /slow?100 HTTP/1.1\r\nHost: x\r\n\r\n");
    co_await strata::sleep(20ms);  // virtual: the slow handler is in its 100 ms sleep
    auto stop = s.stop();
    co_await stop;  // returns once the server side of both connections closed
    co_await idle->closed();
    co_await busy->closed();
    auto r = strata::testing::parse_responses(busy->received);
    REQUIRE(r.size() == 1);
    CHECK(r[0].body == "slow 100");
    CHECK(r[0].header("Connection") == "close");
  };
  loop.run(body());
}

STRATA_LOOP_TEST_CASE("HTTP server: a shutdown between a connection's accept and its connection_made closes it",
                      "[protocols][http]") {
  // The listener makes the protocol when it accepts and calls connection_made() one callback
  // later: a SIGINT in between once made shutdown() close a connection without a transport.
  strata::testing::TestLoop loop(TestType::kind);
  auto body = [&]() -> Coro<void> {
    auto http = std::make_unique<strata::HttpServer>(test_router());
    strata::HttpServer* server = http.get();
    std::size_t made = 0;
    auto factory = [server, &made] {
      auto protocol = server->make_connection();
      ++made;
      server->shutdown();  // the connection exists, its transport does not yet
      return protocol;
    };
    auto listener = co_await strata::create_server(factory, "127.0.0.1", 0);
    const std::uint16_t port = listener->sockets().at(0).address.port();
    auto client = co_await connect_raw(port);
    client->send(get_plaintext);
    co_await client->closed();  // closed by connection_made(), nothing answered
    CHECK(made == 1);
    CHECK(client->received.empty());
    listener->close();
    auto closed = listener->wait_closed();
    co_await closed;
    CHECK(server->connection_count() == 0);
  };
  loop.run(body());
}

STRATA_LOOP_TEST_CASE("HTTP server: 50 connections x 200 requests, each response checked",
                      "[protocols][http]") {
  strata::testing::TestLoop loop(TestType::kind);
  auto body = [&]() -> Coro<void> {
    auto s = co_await start_http_server(test_router());
    auto one = [&](int id) -> Coro<void> {
      auto c = co_await connect_raw(s.port);
      for (int i = 0; i < 200; i += 10) {
        std::string batch;
        for (int k = i; k < i + 10; ++k) {
          batch += "GET /fast?" + std::to_string(id) + "-" + std::to_string(k) +
                   " HTTP/1.1\r\nHost: x\r\n\r\n";
        }
        c->send(batch);
        auto r = co_await c->responses(static_cast<std::size_t>(i) + 10);
        REQUIRE(r.size() == static_cast<std::size_t>(i) + 10);
        for (int k = i; k < i + 10; ++k) {
          REQUIRE(r[static_cast<std::size_t>(k)].body ==
                  "fast " + std::to_string(id) + "-" + std::to_string(k));
        }
      }
    };
    std::vector<strata::Task<void>> tasks;
    tasks.reserve(50);
    for (int id = 0; id < 50; ++id) tasks.push_back(strata::create_task(one(id)));
    for (auto& t : tasks) co_await t;
    co_await s.stop();
  };
  loop.run(body(), 60s);
}

// Found by fuzz/http_server (fuzz/regressions/http_server/max_pipelined_1_body_split_stall):
// the request whose body is still arriving counted against max_pipelined, so with a limit of
// 1 its body was never read.
STRATA_LOOP_TEST_CASE("HTTP server: with max_pipelined 1, a body that comes after its head is read",
                      "[protocols][http]") {
  strata::testing::TestLoop loop(TestType::kind);
  strata::HttpServerSettings settings;
  settings.max_pipelined = 1;
  auto body = [&]() -> Coro<void> {
    auto s = co_await start_http_server(test_router(), settings);
    auto c = co_await connect_raw(s.port);
    c->send("POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\n");
    for (int i = 0; i < 10; ++i) co_await strata::sleep(0s);  // the server reads the head alone
    c->send("hello");
    auto r = co_await c->responses(1);
    REQUIRE(r.size() == 1);
    CHECK(r[0].status == 200);
    CHECK(r[0].body == "hello");
    c->send(get_plaintext);
    r = co_await c->responses(2);
    REQUIRE(r.size() == 2);
    CHECK(r[1].body == "Hello, World!");
    co_await s.stop();
  };
  loop.run(body(), 30s);
}

// Found by fuzz/http_server (fuzz/regressions/http_server/http10_stream_says_content_length_0):
// HTTP/1.0 has no chunked coding, so a streamed body ends with the connection; its head must
// not announce a length.
STRATA_LOOP_TEST_CASE("HTTP server: a streamed body over HTTP/1.0 has no Content-Length and "
                      "ends with the connection",
                      "[protocols][http]") {
  strata::testing::TestLoop loop(TestType::kind);
  auto body = [&]() -> Coro<void> {
    auto s = co_await start_http_server(test_router());
    SECTION("GET") {
      auto c = co_await connect_raw(s.port);
      c->send("GET /stream HTTP/1.0\r\n\r\n");
      co_await c->closed();
      CHECK(c->received.find("Content-Length") == std::string::npos);
      CHECK(c->received.find("Transfer-Encoding") == std::string::npos);
      CHECK(c->received.find("Connection: close\r\n") != std::string::npos);
      const std::size_t end = c->received.find("\r\n\r\n");
      REQUIRE(end != std::string::npos);
      CHECK(c->received.substr(end + 4) == "one,two,three");
    }
    SECTION("HEAD") {
      auto c = co_await connect_raw(s.port);
      c->send("HEAD /stream HTTP/1.0\r\n\r\n");
      co_await c->closed();
      CHECK(c->received.rfind("HTTP/1.0 200", 0) == 0);
      CHECK(c->received.find("Content-Length") == std::string::npos);
      CHECK(c->received.substr(c->received.find("\r\n\r\n") + 4).empty());
    }
    co_await s.stop();
  };
  loop.run(body(), 30s);
}

STRATA_LOOP_TEST_CASE("HTTP server: a stream's large chunks go out whole, chunked on HTTP/1.1 "
                      "and to the close on HTTP/1.0",
                      "[protocols][http]") {
  // A chunk over 16 KiB is written from where it is (one scatter-gather write with its size
  // line), not copied into the output buffer; small chunks around it keep their order.
  strata::testing::TestLoop loop(TestType::kind);
  HttpRouter router = test_router();
  const std::string big_a(100 * 1024, 'a');
  const std::string big_c(70 * 1024 + 3, 'c');
  router.get("/bigstream", [&](HttpServerRequest&) -> Coro<HttpResponse> {
    HttpResponse r;
    r.content_type = "text/plain";
    r.stream = [&](strata::HttpBodyWriter& w) -> Coro<void> {
      co_await w.write(big_a);
      co_await w.write("b");
      co_await w.write(big_c);
      co_await w.write("d");
    };
    co_return r;
  });
  const std::string expected = big_a + "b" + big_c + "d";
  auto body = [&]() -> Coro<void> {
    auto s = co_await start_http_server(std::move(router));
    auto c = co_await connect_raw(s.port);
    c->send("GET /bigstream HTTP/1.1\r\nHost: x\r\n\r\n" + get_plaintext);
    auto r = co_await c->responses(2);
    REQUIRE(r.size() == 2);
    CHECK(r[0].chunked);
    CHECK(r[0].body.size() == expected.size());
    CHECK(r[0].body == expected);
    CHECK(r[1].body == "Hello, World!");
    auto old = co_await connect_raw(s.port);
    old->send("GET /bigstream HTTP/1.0\r\n\r\n");
    co_await old->closed();
    const std::size_t end = old->received.find("\r\n\r\n");
    REQUIRE(end != std::string::npos);
    CHECK(old->received.substr(end + 4) == expected);
    co_await s.stop();
  };
  loop.run(body(), 30s);
}

// Found by fuzz/http_server: the error slot was a recycled one and kept the version of the
// HTTP/1.0 request it had served.
STRATA_LOOP_TEST_CASE("HTTP server: an error after an HTTP/1.0 request is answered as HTTP/1.1",
                      "[protocols][http]") {
  strata::testing::TestLoop loop(TestType::kind);
  auto body = [&]() -> Coro<void> {
    auto s = co_await start_http_server(test_router());
    auto c = co_await connect_raw(s.port);
    c->send("GET /plaintext HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    auto r = co_await c->responses(1);
    REQUIRE(r.size() == 1);
    CHECK(r[0].version == "HTTP/1.0");
    c->send("GET / HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n");
    co_await c->closed();
    r = strata::testing::parse_responses(c->received);
    REQUIRE(r.size() == 2);
    CHECK(r[1].status == 400);
    CHECK(r[1].version == "HTTP/1.1");
    co_await s.stop();
  };
  loop.run(body(), 30s);
}
