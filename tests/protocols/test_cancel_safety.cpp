// Cancel-safety of the HTTP client's awaitables, as http_client.hpp's "@par Cancellation"
// states it (docs/reliability.md, "Cancel-safety", has the table), against the HTTP server on
// 127.0.0.1 on every backend: a cancelled read_chunk() takes nothing, a cancelled text() loses
// what it had collected, and a cancelled request() closes its connection and gives its pool
// slot back. A task is suspended in the awaitable (it sets an Event just before the await,
// and the test awaits that Event), then cancelled with Task::cancel().
#include <strata/protocols/http_client.hpp>

#include <catch2/catch.hpp>

#include <chrono>
#include <memory>
#include <string>
#include <utility>

#include <strata/core/coro.hpp>
#include <strata/core/event.hpp>
#include <strata/core/event_loop.hpp>
#include <strata/core/sleep.hpp>
#include <strata/core/task.hpp>
#include <strata/protocols/http_server.hpp>

#include "cancel_test.hpp"
#include "http_test_support.hpp"
#include "loop_test.hpp"

using namespace std::chrono_literals;
using strata::Coro;
using strata::Event;
using strata::HttpClient;
using strata::HttpClientOptions;
using strata::HttpClientResponse;
using strata::HttpResponse;
using strata::HttpRouter;
using strata::HttpServerRequest;
using strata::Task;
using strata::testing::suspended_in;
using strata::testing::TestLoop;

namespace {

/// What the test tells the server's handlers, and what they tell the test.
struct Control {
  Event head_go;      // /held answers once this is set
  Event held_seen;    // /held was called
  Event part_two_go;  // /parts writes its second part once this is set
};

/// /plain: a small body. /held: answers only once head_go is set. /parts: a streamed body,
/// "part one;" at once, "part two" once part_two_go is set.
HttpRouter router_for(Control* control) {
  HttpRouter router;
  router.get("/plain", [](HttpServerRequest&) -> Coro<HttpResponse> {
    co_return HttpResponse::text("plain");
  });
  router.get("/held", [control](HttpServerRequest&) -> Coro<HttpResponse> {
    control->held_seen.set();
    auto waiting = control->head_go.wait();
    co_await waiting;
    co_return HttpResponse::text("late");
  });
  router.get("/parts", [control](HttpServerRequest&) -> Coro<HttpResponse> {
    HttpResponse r;
    r.content_type = "text/plain";
    r.stream = [control](strata::HttpBodyWriter& w) -> Coro<void> {
      auto one = w.write("part one;");
      co_await one;
      auto waiting = control->part_two_go.wait();
      co_await waiting;
      auto two = w.write("part two");
      co_await two;
    };
    co_return r;
  });
  return router;
}

std::string url(std::uint16_t port, std::string_view path) {
  return "http://127.0.0.1:" + std::to_string(port) + std::string(path);
}

/// Yields loop iterations until @p pred() holds (true) or @p limit passes (false).
template <class P>
Coro<bool> poll_until(P pred, strata::Duration limit = 10s) {
  strata::EventLoop& loop = strata::get_running_loop();
  const strata::TimePoint end = loop.time() + limit;
  for (;;) {
    if (pred()) co_return true;
    if (loop.time() > end) co_return false;
    co_await strata::sleep(0s);
  }
}

}  // namespace

STRATA_LOOP_TEST_CASE(
    "HttpClientResponse: a cancelled read_chunk() takes nothing; the next "
    "read gets the bytes",
    "[protocols][cancel]") {
  TestLoop loop(TestType::kind);
  Control control;
  auto body = [&control]() -> Coro<void> {
    auto starting = strata::testing::start_http_server(router_for(&control));
    strata::testing::HttpTestServer server = co_await starting;
    HttpClient client;
    auto getting = client.get(url(server.port, "/parts"));
    HttpClientResponse response = co_await getting;
    auto first = response.read_chunk();
    std::string one = co_await first;
    CHECK(one == "part one;");
    auto reading = suspended_in([&response] { return response.read_chunk(); }, "read_chunk");
    Task<std::string> reader = co_await reading;
    reader.cancel();
    std::string outcome = co_await reader;
    CHECK(outcome == "CancelledError");
    control.part_two_go.set();
    auto arrived = poll_until([&response] { return response.buffered_bytes() == 8; });
    const bool ok = co_await arrived;
    CHECK(ok);
    auto second = response.read_chunk();
    std::string two = co_await second;
    CHECK(two == "part two");
    auto last = response.read_chunk();
    std::string end = co_await last;
    CHECK(end.empty());
    client.close();
    auto closing = client.wait_closed();
    co_await closing;
    auto stopping = server.stop();
    co_await stopping;
  };
  loop.run(body(), 20s);
  CHECK(loop.errors().empty());
}

STRATA_LOOP_TEST_CASE(
    "HttpClientResponse: a cancelled text() is not cancel-safe: what it had "
    "collected is lost, later reads go on after it",
    "[protocols][cancel]") {
  TestLoop loop(TestType::kind);
  Control control;
  auto body = [&control]() -> Coro<void> {
    auto starting = strata::testing::start_http_server(router_for(&control));
    strata::testing::HttpTestServer server = co_await starting;
    HttpClient client;
    auto getting = client.get(url(server.port, "/parts"));
    HttpClientResponse response = co_await getting;
    auto arrived = poll_until([&response] { return response.buffered_bytes() == 9; });
    const bool ok = co_await arrived;
    REQUIRE(ok);
    // text() takes "part one;" at once, then waits for the rest.
    auto collecting = suspended_in([&response] { return response.text(); }, "text");
    Task<std::string> collector = co_await collecting;
    CHECK(response.buffered_bytes() == 0);
    collector.cancel();
    std::string outcome = co_await collector;
    CHECK(outcome == "CancelledError");
    CHECK(response.buffered_bytes() == 0);  // "part one;" went with the cancelled text()
    control.part_two_go.set();
    auto rest = response.text();
    std::string after = co_await rest;
    CHECK(after == "part two");
    client.close();
    auto closing = client.wait_closed();
    co_await closing;
    auto stopping = server.stop();
    co_await stopping;
  };
  loop.run(body(), 20s);
  CHECK(loop.errors().empty());
}

STRATA_LOOP_TEST_CASE(
    "HttpClient: a request cancelled while it waits for the head closes its "
    "connection; one waiting for a pool slot holds none; the slot is free",
    "[protocols][cancel]") {
  TestLoop loop(TestType::kind);
  Control control;
  auto body = [&control]() -> Coro<void> {
    auto starting = strata::testing::start_http_server(router_for(&control));
    strata::testing::HttpTestServer server = co_await starting;
    HttpClientOptions options;
    options.max_connections_per_host = 1;
    HttpClient client(options);
    const std::string held = url(server.port, "/held");
    const std::string plain = url(server.port, "/plain");

    auto first = suspended_in([&client, held] { return client.get(held); }, "held request");
    Task<std::string> r1 = co_await first;
    auto seen = control.held_seen.wait();
    co_await seen;  // the request went out; r1 waits for the head
    auto second = suspended_in([&client, plain] { return client.get(plain); }, "queued request");
    Task<std::string> r2 = co_await second;  // waits for the only slot
    CHECK(client.open_connections() == 1);

    r2.cancel();
    std::string outcome2 = co_await r2;
    CHECK(outcome2 == "CancelledError");
    CHECK(client.open_connections() == 1);  // r1's, untouched
    r1.cancel();
    std::string outcome1 = co_await r1;
    CHECK(outcome1 == "CancelledError");
    auto closed = poll_until([&client] { return client.open_connections() == 0; });
    const bool closed_ok = co_await closed;
    CHECK(closed_ok);  // closed, not pooled: the server may be halfway through it
    CHECK(client.idle_connections() == 0);

    auto again = client.get(plain);  // hangs (total_timeout) if the slot was not given back
    HttpClientResponse response = co_await again;
    CHECK(response.status() == 200);
    auto text = response.text();
    std::string got = co_await text;
    CHECK(got == "plain");

    control.head_go.set();  // the server's /held handler ends
    client.close();
    auto closing = client.wait_closed();
    co_await closing;
    auto stopping = server.stop();
    co_await stopping;
  };
  loop.run(body(), 20s);
  CHECK(loop.errors().empty());
}
