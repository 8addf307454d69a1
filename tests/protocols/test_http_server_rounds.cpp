// HttpServer started, served and stopped more than once on one loop: every server after the
// first serves as the first did (on the proactor loop, the second once heard nothing).
#include <strata/protocols/http_server.hpp>

#include <catch2/catch.hpp>

#include "http_test_support.hpp"
#include "loop_test.hpp"

#include <array>
#include <string>

#include <strata/core/coro.hpp>

namespace {

using strata::Coro;
using strata::HttpResponse;
using strata::HttpRouter;
using strata::HttpServerRequest;
using strata::HttpServerSettings;
using strata::testing::connect_raw;
using strata::testing::start_http_server;

HttpRouter plaintext_router() {
  HttpRouter router;
  router.get("/plaintext", [](HttpServerRequest&) -> Coro<HttpResponse> {
    co_return HttpResponse::text("Hello, World!");
  });
  return router;
}

const std::string get_plaintext =  // NOLINT(cert-err58-cpp): test data; a throw here ends the run
    "GET /plaintext HTTP/1.1\r\nHost: x\r\n\r\n";

}  // namespace

STRATA_LOOP_TEST_CASE(
    "HTTP server: a server started after another one stopped on the same loop serves, with the "
    "Server field of its own settings on every status and version",
    "[protocols][http]") {
  // Each round: a new server on a new port, a new client, four pipelined requests (a cached
  // 200 head, a 404, an HTTP/1.0 one, a 200 again), then the server stops and its connection
  // closes. The descriptors of the first round's sockets are free for the second's.
  strata::testing::TestLoop loop(TestType::kind);
  auto body = [&]() -> Coro<void> {
    const std::array<std::string, 2> names = {"test-server/2", ""};
    for (const std::string& name : names) {
      HttpServerSettings settings;
      settings.server_name = name;
      auto s = co_await start_http_server(plaintext_router(), settings);
      auto c = co_await connect_raw(s.port);
      std::string requests = get_plaintext;
      requests += "GET /missing HTTP/1.1\r\nHost: x\r\n\r\n";
      requests += "GET /plaintext HTTP/1.0\r\nConnection: keep-alive\r\n\r\n";
      requests += get_plaintext;
      c->send(requests);
      auto r = co_await c->responses(4);
      REQUIRE(r.size() == 4);
      CHECK(r[0].status == 200);
      CHECK(r[1].status == 404);
      CHECK(r[2].version == "HTTP/1.0");
      CHECK(r[3].status == 200);
      for (const auto& response : r) {
        CHECK(response.header("Date").value_or("").size() == 29);
        if (name.empty()) {
          CHECK_FALSE(response.header("Server"));
        } else {
          CHECK(response.header("Server") == name);
        }
      }
      co_await s.stop();
    }
  };
  loop.run(body());
}
