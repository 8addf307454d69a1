// The HTTP server's plaintext path allocates nothing per request once a connection has served
// one: global operator new is counted while a blocking client on another thread (which itself
// allocates nothing per round) sends keep-alive requests, one at a time and pipelined.
#include <strata/protocols/http_server.hpp>

#include <catch2/catch.hpp>

#include "http_test_support.hpp"
#include "loop_test.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <string>
#include <thread>

#include <strata/core/event.hpp>
#include <strata/core/future.hpp>
#include <strata/core/task.hpp>

// The process-wide count of global operator new calls (test_http_parser.cpp replaces it);
// not counted under the sanitizers, which replace it themselves.
std::uint64_t strata_test_allocations() noexcept;
bool strata_test_allocations_counted() noexcept;

namespace {

/// Sends @p rounds rounds of @p depth pipelined GET /plaintext over one blocking connection and
/// reads every response (counted by their bodies). Returns false on any failure.
bool blocking_client(std::uint16_t port, int rounds, int depth) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return false;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bool ok = ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
  std::string batch;
  for (int i = 0; i < depth; ++i) batch += "GET /plaintext HTTP/1.1\r\nHost: x\r\n\r\n";
  std::string received;
  char buf[65536];
  for (int r = 0; ok && r < rounds; ++r) {
    ok = ::send(fd, batch.data(), batch.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(batch.size());
    int seen = 0;
    received.clear();
    while (ok && seen < depth) {
      const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
      if (n <= 0) {
        ok = false;
        break;
      }
      received.append(buf, static_cast<std::size_t>(n));
      seen = 0;
      for (auto at = received.find("Hello, World!"); at != std::string::npos;
           at = received.find("Hello, World!", at + 1)) {
        ++seen;
      }
    }
  }
  ::close(fd);
  return ok;
}

}  // namespace

STRATA_LOOP_TEST_CASE("HTTP server: no allocation per request on the plaintext path",
                      "[protocols][http]") {
  strata::testing::TestLoop loop(TestType::kind);
  const int depth = GENERATE(1, 16);
  const bool plain = GENERATE(false, true);  // a coroutine handler, or a plain one
  auto body = [&]() -> strata::Coro<void> {
    strata::HttpRouter router;
    if (plain) {
      router.get("/plaintext", [](strata::HttpServerRequest&) {
        return strata::HttpResponse::text("Hello, World!");
      });
    } else {
      router.get("/plaintext", [](strata::HttpServerRequest&) -> strata::Coro<strata::HttpResponse> {
        co_return strata::HttpResponse::text("Hello, World!");
      });
    }
    auto s = co_await strata::testing::start_http_server(std::move(router));
    strata::EventLoop& l = strata::get_running_loop();
    // Warm-up on one connection, then the measured rounds on the same one: the client does
    // both in a row, and the count starts after the warm-up's responses were written.
    strata::Future<bool> done = l.create_future<bool>();
    strata::Event warm;
    std::thread client([&] {
      bool ok = blocking_client(s.port, 1, depth);  // first connection: warms the pools
      l.call_soon_threadsafe([&] { warm.set(); });
      ok = ok && blocking_client(s.port, 200, depth);
      l.call_soon_threadsafe([&, ok] { done.set_result(ok); });
    });
    // Count from the moment the warm-up is over.
    co_await warm.wait();
    const std::uint64_t before = strata_test_allocations();
    const bool ok = co_await done;
    const std::uint64_t allocations = strata_test_allocations() - before;
    client.join();
    CHECK(ok);
    // One new connection (its transport, protocol, parser, slot, buffers) is allowed; the 200
    // rounds of requests on it must add nothing.
    INFO("allocations during " << 200 * depth << " requests (" << (plain ? "plain" : "coroutine")
                               << " handler): " << allocations);
    if (strata_test_allocations_counted()) CHECK(allocations < 40);
    co_await s.stop();
  };
  loop.run(body(), std::chrono::seconds(30));
}
