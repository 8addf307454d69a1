// Strata's HttpClient against Strata's HttpServer, in one loop on 127.0.0.1, on every backend:
// keep-alive reuse, pipelining-free concurrency over the pool, chunked bodies both ways, a
// file body, redirects, HEAD, and errors.
#include <strata/protocols/http_client.hpp>
#include <strata/protocols/http_server.hpp>

#include <catch2/catch.hpp>

#include "http_test_support.hpp"
#include "loop_test.hpp"

#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

#include <string>
#include <vector>

#include <strata/core/sleep.hpp>
#include <strata/core/task.hpp>

namespace {

using strata::Coro;
using strata::HttpResponse;
using strata::HttpServerRequest;

strata::HttpRouter router_for_client(std::string file) {
  strata::HttpRouter router;
  router.get("/plaintext", [](HttpServerRequest&) -> Coro<HttpResponse> {
    co_return HttpResponse::text("Hello, World!");
  });
  router.post("/echo", [](HttpServerRequest& req) -> Coro<HttpResponse> {
    HttpResponse r;
    r.content_type = std::string(req.headers().get("Content-Type").value_or(""));
    r.body = std::string(req.body());
    co_return r;
  });
  router.get("/slow", [](HttpServerRequest& req) -> Coro<HttpResponse> {
    co_await strata::sleep(std::chrono::milliseconds(5));
    co_return HttpResponse::text(std::string(req.query()));
  });
  router.get("/stream", [](HttpServerRequest&) -> Coro<HttpResponse> {
    HttpResponse r;
    r.content_type = "text/plain";
    r.stream = [](strata::HttpBodyWriter& w) -> Coro<void> {
      for (int i = 0; i < 100; ++i) {
        co_await w.write("line " + std::to_string(i) + "\n");
      }
    };
    co_return r;
  });
  router.get("/file", [file](HttpServerRequest&) -> Coro<HttpResponse> {
    HttpResponse r;
    r.content_type = "application/octet-stream";
    const int fd = ::open(file.c_str(), O_RDONLY | O_CLOEXEC);
    r.file = strata::HttpFileBody(fd, 0, 1 << 20);
    co_return r;
  });
  router.get("/moved", [](HttpServerRequest&) -> Coro<HttpResponse> {
    HttpResponse r = HttpResponse::text("moved", 302);
    r.add_header("Location", "/plaintext");
    co_return r;
  });
  return router;
}

}  // namespace

STRATA_LOOP_TEST_CASE("HTTP client against the HTTP server", "[protocols][http]") {
  strata::testing::TestLoop loop(TestType::kind);
  std::string path = "/tmp/strata-http-cs-XXXXXX";
  const int fd = ::mkstemp(path.data());
  REQUIRE(fd >= 0);
  std::string content;
  for (int i = 0; i < (1 << 20); ++i) content += static_cast<char>('A' + (i * 7) % 26);
  REQUIRE(::write(fd, content.data(), content.size()) == static_cast<ssize_t>(content.size()));
  ::close(fd);
  auto body = [&]() -> Coro<void> {
    auto s = co_await strata::testing::start_http_server(router_for_client(path));
    const std::string base = "http://127.0.0.1:" + std::to_string(s.port);
    strata::HttpClient client;
    {
      // Ten requests in a row share one connection.
      for (int i = 0; i < 10; ++i) {
        strata::HttpClientResponse r = co_await client.get(base + "/plaintext");
        CHECK(r.status() == 200);
        std::string text = co_await r.text();
        CHECK(text == "Hello, World!");
      }
      CHECK(client.open_connections() == 1);
      CHECK(s.http->connection_count() == 1);
    }
    {
      std::string payload(100000, 'x');
      strata::HttpClientResponse r = co_await client.post(base + "/echo", payload, "text/x-big");
      CHECK(r.status() == 200);
      CHECK(r.headers().get("Content-Type") == "text/x-big");
      std::string text = co_await r.text();
      CHECK(text == payload);
    }
    {
      strata::HttpClientResponse r = co_await client.get(base + "/stream");
      CHECK(r.is_chunked());
      std::string text = co_await r.text();
      CHECK(text.starts_with("line 0\nline 1\n"));
      CHECK(text.ends_with("line 99\n"));
    }
    {
      strata::HttpClientResponse r = co_await client.get(base + "/file");
      CHECK(r.content_length() == content.size());
      std::string text = co_await r.text();
      CHECK(text == content);
    }
    {
      strata::HttpClientResponse r = co_await client.get(base + "/moved");
      CHECK(r.status() == 200);
      CHECK(r.url() == base + "/plaintext");
      std::string text = co_await r.text();
      CHECK(text == "Hello, World!");
    }
    {
      strata::HttpClientResponse r = co_await client.request("HEAD", base + "/plaintext");
      CHECK(r.status() == 200);
      CHECK(r.content_length() == 13);
      std::string text = co_await r.text();
      CHECK(text.empty());
      strata::HttpClientResponse missing = co_await client.get(base + "/missing");
      CHECK(missing.status() == 404);
      std::string ignored = co_await missing.text();
    }
    {
      // 20 concurrent requests through the pool (8 connections per host by default).
      auto one = [&](int i) -> Coro<void> {
        strata::HttpClientResponse r = co_await client.get(base + "/slow?" + std::to_string(i));
        std::string text = co_await r.text();
        CHECK(text == std::to_string(i));
      };
      std::vector<strata::Task<void>> tasks;
      for (int i = 0; i < 20; ++i) tasks.push_back(strata::create_task(one(i)));
      for (auto& t : tasks) co_await t;
      CHECK(client.open_connections() <= 8);
    }
    client.close();
    auto closed = client.wait_closed();
    co_await closed;
    co_await s.stop();
  };
  loop.run(body(), std::chrono::seconds(30));
  ::unlink(path.c_str());
}
