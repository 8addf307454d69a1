// The code of docs/guides/http.md: an HttpServer with a router, coroutine handlers, a redirect,
// a streamed response and static files, and an HttpClient that requests them (keep-alive,
// redirects, chunked bodies, timeouts), then a graceful shutdown with a response in flight.
// The server listens on 127.0.0.1 (port 0) and serves files from a temporary directory; the
// program exits 0 when every answer is the expected one.
#include <strata/core/errors.hpp>
#include <strata/core/run.hpp>
#include <strata/core/sleep.hpp>
#include <strata/core/task.hpp>
#include <strata/core/timeout.hpp>
#include <strata/protocols/http_client.hpp>
#include <strata/protocols/http_server.hpp>
#include <strata/protocols/http_static.hpp>
#include <strata/transports/server.hpp>
#include <strata/transports/tcp.hpp>

#include <stdlib.h>

#include <chrono>
#include <cstdio>
#include <exception>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <utility>
#include <vector>

using namespace std::chrono_literals;

namespace {

int failures = 0;

void expect(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "http: FAILED: %s\n", what);
    ++failures;
  }
}

// [snippet:countdown]
/// The body of GET /countdown: a line every 20 ms, each sent as soon as it is written.
strata::Coro<void> countdown(int from, strata::HttpBodyWriter& body) {
  for (int i = from; i > 0; --i) {
    auto writing = body.write(std::to_string(i) + "\n");  // one chunk
    co_await writing;  // waits while the client is slow to read
    co_await strata::sleep(20ms);
  }
  auto writing = body.write("liftoff\n");
  co_await writing;
}
// [/snippet:countdown]

strata::HttpRouter make_router(const std::string& root) {
  // [snippet:routes]
  strata::HttpRouter router;
  router.get("/hello", [](strata::HttpServerRequest& req) -> strata::Coro<strata::HttpResponse> {
    co_return strata::HttpResponse::text("Hello, " + std::string(req.query()) + "!");
  });
  router.post("/echo", [](strata::HttpServerRequest& req) -> strata::Coro<strata::HttpResponse> {
    strata::HttpResponse response;
    response.content_type = req.headers().get("Content-Type").value_or("text/plain");
    response.body = req.body();  // the whole body, decoded if it came chunked
    co_return response;
  });
  router.get("/old", [](strata::HttpServerRequest&) -> strata::Coro<strata::HttpResponse> {
    strata::HttpResponse response = strata::HttpResponse::text("moved", 301);
    response.add_header("Location", "/hello?old");
    co_return response;
  });
  // [/snippet:routes]
  // [snippet:plain-route]
  router.get("/version", [](strata::HttpServerRequest&) {  // awaits nothing: a plain handler
    return strata::HttpResponse::json(R"({"version":"1.0"})");
  });
  // [/snippet:plain-route]
  // [snippet:stream-route]
  router.get("/countdown", [](strata::HttpServerRequest&) -> strata::Coro<strata::HttpResponse> {
    strata::HttpResponse response;
    response.content_type = "text/plain";
    response.stream = [](strata::HttpBodyWriter& body) { return countdown(3, body); };
    co_return response;
  });
  // [/snippet:stream-route]
  // [snippet:slow-route]
  router.get("/slow", [](strata::HttpServerRequest&) -> strata::Coro<strata::HttpResponse> {
    co_await strata::sleep(200ms);  // cancelled if the client goes away meanwhile
    co_return strata::HttpResponse::text("finally");
  });
  // [/snippet:slow-route]
  // [snippet:static-route]
  router.route_prefix("GET", "/", strata::static_files(root));  // every other GET and HEAD
  // [/snippet:static-route]
  return router;
}

// [snippet:shutdown]
/// Stops serving: no new connections, idle ones closed now, busy ones once their response is
/// sent; whatever is left after @p grace is aborted.
strata::Coro<void> shut_down(strata::Server& server, strata::HttpServer& http,
                             strata::Duration grace) {
  server.close();
  http.shutdown();
  bool finished = true;
  try {
    auto finishing = strata::wait_for(server.wait_closed(), grace);
    co_await finishing;
  } catch (const strata::TimeoutError&) {
    finished = false;
  }
  if (!finished) {
    server.abort_clients();
    auto closing = server.wait_closed();
    co_await closing;
  }
}
// [/snippet:shutdown]

strata::Coro<void> client_demo(std::string base) {
  // [snippet:client]
  strata::HttpClient client;  // one per loop: it keeps a pool of connections per host

  auto getting = client.get(base + "/hello?ada");
  strata::HttpClientResponse hello = co_await getting;  // once the head has arrived
  auto reading = hello.text();
  std::string greeting = co_await reading;  // "Hello, ada!"; hello.status() == 200

  auto posting = client.post(base + "/echo", R"({"n":1})", "application/json");
  strata::HttpClientResponse echoed = co_await posting;
  auto content_type = echoed.headers().get("Content-Type");  // "application/json"
  auto reading_echo = echoed.text();
  std::string json = co_await reading_echo;  // {"n":1}

  auto following = client.get(base + "/old");
  strata::HttpClientResponse moved = co_await following;
  // moved.status() == 200, moved.url() == base + "/hello?old",
  // moved.history() == {base + "/old"}
  auto reading_moved = moved.text();
  std::string moved_text = co_await reading_moved;  // "Hello, old!"
  // [/snippet:client]
  expect(hello.status() == 200 && greeting == "Hello, ada!", "client: hello");
  expect(content_type == "application/json" && json == R"({"n":1})", "client: echo");
  expect(moved.status() == 200 && moved.url() == base + "/hello?old" &&
             moved.history() == std::vector<std::string>{base + "/old"} &&
             moved_text == "Hello, old!",
         "client: redirect");
  expect(client.open_connections() == 1, "client: one keep-alive connection for all three");

  auto getting_version = client.get(base + "/version");
  strata::HttpClientResponse version = co_await getting_version;
  auto reading_version = version.text();
  std::string version_json = co_await reading_version;
  expect(version.status() == 200 && version_json == R"({"version":"1.0"})" &&
             version.headers().get("Content-Type") == "application/json",
         "client: a plain handler");

  // [snippet:read-chunks]
  auto getting_countdown = client.get(base + "/countdown");
  strata::HttpClientResponse response = co_await getting_countdown;  // is_chunked()
  std::vector<std::string> chunks;
  for (;;) {
    auto reading_chunk = response.read_chunk();
    std::string chunk = co_await reading_chunk;
    if (chunk.empty()) break;  // the end of the body
    chunks.push_back(chunk);
  }
  // chunks: "3\n", "2\n", "1\n", "liftoff\n" (how a body is cut depends on how it arrives)
  // [/snippet:read-chunks]
  std::string whole;
  for (const std::string& chunk : chunks) whole += chunk;
  expect(response.is_chunked() && whole == "3\n2\n1\nliftoff\n", "client: streamed body");

  // [snippet:static-client]
  auto getting_file = client.get(base + "/notes.txt");
  strata::HttpClientResponse file = co_await getting_file;
  // file.status() == 200, Content-Type "text/plain; charset=utf-8", Last-Modified,
  // Content-Length 6
  auto getting_missing = client.get(base + "/missing.txt");
  strata::HttpClientResponse missing = co_await getting_missing;  // missing.status() == 404
  // [/snippet:static-client]
  auto reading_file = file.text();
  std::string notes = co_await reading_file;
  expect(file.status() == 200 && notes == "notes\n" &&
             file.headers().get("Content-Type") == "text/plain; charset=utf-8" &&
             file.headers().contains("Last-Modified") && file.content_length() == 6,
         "static: notes.txt");
  expect(missing.status() == 404, "static: missing");
  missing.close();

  // [snippet:timeout]
  strata::HttpClientOptions options;
  options.total_timeout = 50ms;  // the whole request: connect, send, redirects, body
  strata::HttpClient impatient(options);
  bool timed_out = false;
  try {
    auto getting_slow = impatient.get(base + "/slow");
    co_await getting_slow;
  } catch (const strata::TimeoutError&) {
    timed_out = true;  // the connection is closed, and the server cancels the handler
  }
  impatient.close();
  auto impatient_closing = impatient.wait_closed();
  co_await impatient_closing;
  // [/snippet:timeout]
  expect(timed_out, "client: timeout");

  // [snippet:client-close]
  client.close();  // closes the idle connections; refuses new requests
  auto closing = client.wait_closed();
  co_await closing;
  // [/snippet:client-close]
}

strata::Coro<int> main_task(std::string root) {
  // [snippet:serve]
  strata::HttpServerSettings settings;
  settings.limits.max_body_bytes = 64 * 1024;  // a longer request body gets 413
  settings.keepalive_timeout = 5s;             // idle connections close after this
  strata::HttpServer http(make_router(root), settings);  // must outlive its connections
  auto serving = strata::create_server(http.protocol_factory(), "127.0.0.1", 0);
  std::unique_ptr<strata::Server> server = co_await serving;
  const std::string base =
      "http://127.0.0.1:" + std::to_string(server->sockets().front().address.port());
  // [/snippet:serve]

  auto clients = client_demo(base);
  co_await clients;

  // [snippet:shutdown-demo]
  strata::HttpClient client;
  auto getting = client.get(base + "/countdown");
  strata::HttpClientResponse response = co_await getting;  // the head: the body is on its way

  auto stopping = strata::create_task(shut_down(*server, http, 5s));
  auto reading = response.text();
  std::string body = co_await reading;  // "3\n2\n1\nliftoff\n": the response in flight ends
  co_await stopping;                    // then its connection closes, and the server is done
  // [/snippet:shutdown-demo]
  expect(body == "3\n2\n1\nliftoff\n", "shutdown: the response in flight is finished");
  expect(http.connection_count() == 0, "shutdown: no connection left");
  client.close();
  auto closing = client.wait_closed();
  co_await closing;
  co_return failures == 0 ? 0 : 1;
}

}  // namespace

int main() {
  char dir_template[] = "/tmp/strata-http-guide-XXXXXX";
  if (::mkdtemp(dir_template) == nullptr) return 1;
  const std::string root = dir_template;
  std::ofstream(root + "/notes.txt") << "notes\n";
  int status = 1;
  try {
    status = strata::run(main_task(root));
  } catch (const std::exception& e) {
    std::fprintf(stderr, "http: %s\n", e.what());
  }
  std::filesystem::remove_all(root);
  return status;
}
