// Fuzz target http_server: the whole HTTP/1.1 server protocol (the connection protocol of
// strata::HttpServer) fed the input's bytes as what one client sends, through an in-memory
// FakeTransport, cut into chunks of input-chosen sizes, with the loop run until idle after
// each chunk, small input-chosen limits (header bytes, body bytes, chunk extensions), a small
// write buffer that pauses the server's writing, and an input-chosen end: the client's EOF,
// the server's graceful shutdown, or a reset.
//
// The router has routes of every kind: answered at once (/plaintext, POST /echo, /big with a
// body over 16 KiB), after yielding to the loop (/slow), failing (/throw inside the coroutine,
// /throw-early before it), streamed (/stream, chunked on 1.1, to the close on 1.0), a prefix
// (/files/), plain handlers called without a task (/plain, /plain-big, /plain-throw, and
// /plain-stream, whose stream leaves the direct lane for a slot), and what no route has (404,
// 405, 501).
//
// What it checks, against a reference: an HttpRequestParser with the same limits fed the whole
// input at once, which says which requests there are and where the first error is.
// - Every byte written is part of a well-formed response (status line, field lines, exactly
//   one framing, a chunked body that parses) and none is left incomplete once idle.
// - The responses are, in order, those the reference requests call for: status, version,
//   body (the echo equals the request body), Content-Type, Allow; then the parse error's status
//   if there is one. With a zero header or keep-alive timeout, a prefix of them (plus a 408).
// - `Connection: close` exactly on the response that ends the connection (an error status, a
//   request that does not keep alive, an HTTP/1.0 stream), nothing after it, and the transport
//   closed then; HTTP/1.0 keep-alive responses say so. After the client's EOF the connection
//   closes; after shutdown() it closes unless a request is half received.
// - No stall: once idle, the server reads again unless it is closing. Nothing is written after
//   close(); no abort(). The write buffer never holds more than the high-water mark plus one
//   batch of pipelined responses. Only the handlers that throw reach the exception handler.
//
// Input: 5 configuration bytes, then the bytes the client sends.
//   [0] bits 0-5: largest chunk - 1 (1..64 bytes); bit 6: send everything as one chunk;
//       bit 7: between chunks the client reads only part of what was written (else all).
//   [1] seed of the chunk sizes and partial reads.
//   [2] bits 0-5: max_header_bytes = 32 + 16 n; bits 6-7: max_body_bytes = 1, 8, 64, 1024.
//   [3] bits 0-1: max_pipelined - 1; bits 2-3: end (reset, EOF, shutdown, EOF);
//       bits 4-5: timeouts (as set, header 0, keep-alive 0, both 0);
//       bits 6-7: write buffer high-water mark 64, 256, 4096, 65536 (low: a quarter).
//   [4] max_chunk_extension_bytes - 1.
#include <strata/core/coro.hpp>
#include <strata/core/sleep.hpp>
#include <strata/protocols/http_parser.hpp>
#include <strata/protocols/http_server.hpp>

#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "fuzz_support.hpp"
#include "http_harness.hpp"

namespace {

using namespace std::chrono_literals;
using strata::Coro;
using strata::HttpResponse;
using strata::HttpServerRequest;
using namespace strata_fuzz;

constexpr std::size_t big_body_size = 20000;  // over the server's 16 KiB scatter-gather threshold

/// The body of GET /stream?N: min(N, 5) parts (N the query's first digit; 3 without one).
std::vector<std::string> stream_parts(std::string_view query) {
  const std::size_t n =
      !query.empty() && query[0] >= '0' && query[0] <= '9' ? std::min<std::size_t>(query[0] - '0', 5) : 3;
  std::vector<std::string> parts;
  for (std::size_t i = 0; i < n; ++i) parts.push_back("part" + std::to_string(i) + ",");
  return parts;
}

Coro<void> produce(strata::HttpBodyWriter& writer, std::vector<std::string> parts) {
  InFlight counted;
  for (std::string& part : parts) {
    co_await writer.write(std::move(part));
    co_await strata::sleep(0s);
  }
}

/// How many loop iterations GET /slow?... waits: the query's length, at most 3.
std::size_t slow_yields(std::string_view query) { return std::min<std::size_t>(query.size(), 3); }

strata::HttpRouter make_router() {
  strata::HttpRouter router;
  router.get("/plaintext", [](HttpServerRequest&) -> Coro<HttpResponse> {
    InFlight counted;
    co_return HttpResponse::text("Hello, World!");
  });
  router.post("/echo", [](HttpServerRequest& req) -> Coro<HttpResponse> {
    InFlight counted;
    HttpResponse r;
    r.content_type = std::string(req.headers().get("Content-Type").value_or(""));
    r.body = std::string(req.body());
    co_return r;
  });
  router.get("/slow", [](HttpServerRequest& req) -> Coro<HttpResponse> {
    InFlight counted;
    for (std::size_t i = slow_yields(req.query()); i > 0; --i) co_await strata::sleep(0s);
    co_return HttpResponse::text("slow");
  });
  router.get("/throw", [](HttpServerRequest&) -> Coro<HttpResponse> {
    InFlight counted;
    throw std::runtime_error("handler failure");
    co_return HttpResponse{};
  });
  // Not a coroutine: throws while the server calls it, before any coroutine exists.
  router.get("/throw-early", [](HttpServerRequest&) -> Coro<HttpResponse> {
    throw std::runtime_error("handler failure before its coroutine");
  });
  router.get("/stream", [](HttpServerRequest& req) -> Coro<HttpResponse> {
    InFlight counted;
    HttpResponse r;
    r.content_type = "text/plain";
    r.stream = [parts = stream_parts(req.query())](strata::HttpBodyWriter& w) {
      return produce(w, parts);
    };
    co_return r;
  });
  router.get("/big", [](HttpServerRequest&) -> Coro<HttpResponse> {
    InFlight counted;
    co_return HttpResponse::text(std::string(big_body_size, 'b'));
  });
  router.route_prefix("GET", "/files/", [](HttpServerRequest& req) -> Coro<HttpResponse> {
    InFlight counted;
    co_return HttpResponse::text("prefix " + std::string(req.path()));
  });
  router.get("/plain", [](HttpServerRequest&) { return HttpResponse::text("plain"); });
  router.get("/plain-big", [](HttpServerRequest&) {
    return HttpResponse::text(std::string(big_body_size, 'p'));
  });
  router.get("/plain-throw", [](HttpServerRequest&) -> HttpResponse {
    throw std::runtime_error("plain handler failure");
  });
  router.get("/plain-stream", [](HttpServerRequest& req) {
    HttpResponse r;
    r.content_type = "text/plain";
    r.stream = [parts = stream_parts(req.query())](strata::HttpBodyWriter& w) {
      return produce(w, parts);
    };
    return r;
  });
  return router;
}

const strata::HttpRouter& router() {
  static const strata::HttpRouter r = make_router();
  return r;
}

// ---- The reference: what the requests are --------------------------------------------------

struct RefRequest {
  std::string method;
  std::string target;
  int minor = 1;
  bool keep_alive = true;
  std::string body;
  std::string content_type;
};

/// An HttpRequestParser fed the whole input at once, recording the requests it completes.
class Reference final : public strata::HttpRequestParser::Callbacks {
 public:
  explicit Reference(const strata::HttpParserLimits& limits) : parser(*this, limits) {}

  void headers_received(const strata::HttpRequest& request) override {
    current = RefRequest{};
    current.method = std::string(request.method());
    current.target = std::string(request.target());
    current.minor = request.version_minor();
    current.keep_alive = request.keep_alive();
    current.content_type = std::string(request.headers().get("Content-Type").value_or(""));
    if (request.expects_continue()) ++continues;
  }
  void body_received(std::span<const std::byte> data) override {
    current.body.append(reinterpret_cast<const char*>(data.data()), data.size());
  }
  void request_received(const strata::HttpRequest&) override { requests.push_back(current); }

  void run(std::span<const std::byte> input, bool eof) {
    std::size_t pos = 0;
    for (;;) {
      pos += parser.feed(input.subspan(pos));
      if (!parser.is_paused()) break;
      parser.resume();
    }
    if (eof) parser.feed_eof();
  }

  strata::HttpRequestParser parser;
  std::vector<RefRequest> requests;
  RefRequest current;
  std::size_t continues = 0;  // heads with Expect: 100-continue
};

/// The origin-form target the server hands its handlers (an absolute-form target loses its
/// scheme and authority, RFC 9112 §3.2.2), as HttpServerRequest does.
std::string origin_form(std::string_view t) {
  std::size_t skip = 0;
  if (t.size() >= 7 && strata::http_iequals(t.substr(0, 7), "http://")) {
    skip = 7;
  } else if (t.size() >= 8 && strata::http_iequals(t.substr(0, 8), "https://")) {
    skip = 8;
  } else {
    return std::string(t);
  }
  const std::size_t at = std::min(t.find_first_of("/?", skip), t.size());
  if (at == t.size() || t[at] == '?') return "/" + std::string(t.substr(at));
  return std::string(t.substr(at));
}

/// One response the reference requests call for.
struct Expected {
  int status = 0;
  int minor = 1;
  bool head = false;
  bool ends = false;                        // the connection closes after it
  std::optional<std::string> body;          // nullopt: not checked
  std::optional<std::string> content_type;  // nullopt: not checked; "": none
  std::string allow;                        // for 405
  bool error = false;                       // the parser's error response
};

Expected expect(const RefRequest& req) {
  Expected e;
  e.minor = req.minor;
  e.head = req.method == "HEAD";
  e.ends = !req.keep_alive;
  const std::string target = origin_form(req.target);
  const std::string path = target.substr(0, std::min(target.find('?'), target.size()));
  const std::string query = target.size() > path.size() ? target.substr(path.size() + 1) : "";
  const strata::HttpRouter::Match match = router().resolve(req.method, path);
  if (!match.handler && !match.plain) {
    e.status = match.status;
    e.body = std::string(strata::http_reason_phrase(match.status)) + "\n";
    e.content_type = "text/plain";
    e.allow = std::string(match.allow);
    return e;
  }
  const std::string_view route = match.route;
  e.status = 200;
  e.content_type = "text/plain";
  if (route == "/plaintext") {
    e.body = "Hello, World!";
  } else if (route == "/echo") {
    e.body = req.body;
    e.content_type = req.content_type;
  } else if (route == "/slow") {
    e.body = "slow";
  } else if (route == "/plain") {
    e.body = "plain";
  } else if (route == "/plain-big") {
    e.body = std::string(big_body_size, 'p');
  } else if (route == "/throw" || route == "/throw-early" || route == "/plain-throw") {
    e.status = 500;
    e.body = "Internal Server Error\n";
  } else if (route == "/stream" || route == "/plain-stream") {
    std::string body;
    for (const std::string& p : stream_parts(query)) body += p;
    e.body = body;
    if (req.minor == 0 && !e.head) e.ends = true;  // no chunked coding: the close ends the body
  } else if (route == "/big") {
    e.body = std::string(big_body_size, 'b');
  } else if (route == "/files/") {
    e.body = "prefix " + path;
  } else {
    fail("a route the reference does not know", std::string(route));
  }
  return e;
}

std::string describe(const ParsedResponse& r) {
  std::string s = "HTTP/1." + std::to_string(r.minor) + " " + std::to_string(r.status) + " [";
  for (const auto& [n, v] : r.headers) s += n + ": " + v + "; ";
  return s + "] body " + show_bytes(r.body, 120);
}

void check_response(const ParsedResponse& a, const Expected& e, bool last, std::size_t i,
                    const std::string& context) {
  const std::string where = "response " + std::to_string(i) + ": " + describe(a) + "\n" + context;
  check(a.status == e.status,
        "response status differs from the reference's (expected " + std::to_string(e.status) + ")",
        where);
  check(a.header("Date").value_or("").size() == 29, "response without a 29-byte Date", where);
  check(a.header("Server") == "strata", "response without Server: strata", where);
  if (!e.error) {
    check(a.minor == e.minor, "response version is not the request's", where);
  }
  if (e.body && !e.head) check(a.body == *e.body, "response body differs from the reference's", where);
  if (e.body && e.head && !a.chunked && a.header("Content-Length") && e.minor == 1) {
    check(*a.header("Content-Length") == std::to_string(e.body->size()),
          "HEAD response's Content-Length is not GET's body size", where);
  }
  if (e.error) {
    check(a.body.starts_with(strata::http_reason_phrase(e.status)), "error body without its reason",
          where);
  }
  if (e.content_type) {
    check(a.header("Content-Type").value_or("") == *e.content_type, "wrong Content-Type", where);
  }
  if (e.status == 405) check(a.header("Allow") == e.allow, "405 without the route's Allow", where);
  if (e.ends) {
    check(a.closes(), "the response that ends the connection lacks Connection: close", where);
  } else if (!last) {
    check(!a.closes(), "Connection: close on a response that more responses follow", where);
  }
  if (!a.closes() && a.minor == 0) {
    check(a.header("Connection") == "keep-alive", "HTTP/1.0 keep-alive response without saying so",
          where);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  constexpr std::size_t config_size = 5;
  if (size < config_size) return -1;  // not an input of this target: not added to the corpus
  const std::uint8_t* c = data;
  const auto payload = std::as_bytes(std::span(data + config_size, size - config_size));

  const std::size_t max_chunk = (c[0] & 0x3f) + 1u;
  const bool one_chunk = (c[0] & 0x40) != 0;
  const bool partial_reads = (c[0] & 0x80) != 0;
  Prng prng(c[1]);
  strata::HttpServerSettings settings;
  settings.limits.max_header_bytes = 32 + 16 * (c[2] & 0x3f);
  settings.limits.max_body_bytes = std::array<std::uint64_t, 4>{1, 8, 64, 1024}[c[2] >> 6];
  settings.limits.max_chunk_extension_bytes = c[4] + 1u;
  settings.max_pipelined = (c[3] & 3u) + 1;
  enum class End { reset, eof, shutdown };
  const End end = std::array<End, 4>{End::reset, End::eof, End::shutdown, End::eof}[(c[3] >> 2) & 3];
  const unsigned timeouts = (c[3] >> 4) & 3;
  if (timeouts & 1) settings.header_timeout = 0s;
  if (timeouts & 2) settings.keepalive_timeout = 0s;
  const std::size_t high = std::array<std::size_t, 4>{64, 256, 4096, 65536}[c[3] >> 6];

  loop_exceptions.clear();
  strata::HttpServer server(router(), settings);
  FakeTransport t(server.make_connection(), high, high / 4);
  t.open();
  run_until_idle();

  // Send the input in chunks, as fast as the server reads.
  std::size_t pos = 0;
  while (pos < payload.size() && !t.close_called() && !t.lost()) {
    if (!t.can_receive()) {
      // Reading is paused: the only thing the server may wait for is the client's reading.
      // Once the client has read everything, the server reads again, closes, or has written
      // more (the rest of a pipelined batch) and waits for the client's reading once more.
      t.take(SIZE_MAX);
      run_until_idle();
      check(t.can_receive() || t.close_called() || t.lost() || t.write_paused(),
            "stall: the server stopped reading with nothing to wait for");
      continue;
    }
    const std::size_t n =
        one_chunk ? payload.size() - pos : std::min(prng.between(1, max_chunk), payload.size() - pos);
    t.receive(payload.subspan(pos, n));
    pos += n;
    run_until_idle();
    t.take(partial_reads ? prng.between(0, 2 * high) : SIZE_MAX);
    run_until_idle();
  }
  auto settle = [&] {
    do {
      t.take(SIZE_MAX);
      run_until_idle();
    } while (t.get_write_buffer_size() > 0 && !t.lost());
  };
  settle();
  check(t.can_receive() || t.close_called() || t.lost(),
        "stall: idle, not closing, and not reading");
  const bool eof_sent = end == End::eof && t.can_receive();
  if (eof_sent) t.receive_eof();
  if (end == End::shutdown) in_loop([&] { server.shutdown(); });
  settle();

  // The reference: the requests of the bytes the server was given.
  Reference ref(settings.limits);
  ref.run(payload.first(pos), eof_sent);
  std::vector<Expected> expected;
  for (const RefRequest& r : ref.requests) {
    expected.push_back(expect(r));
    if (expected.back().ends) break;
  }
  if (expected.empty() || !expected.back().ends) {
    if (ref.parser.has_failed()) {
      Expected e;
      e.status = ref.parser.error_status();
      e.ends = true;
      e.error = true;
      expected.push_back(e);
    }
  }

  const bool closed = t.close_called();
  const bool strict = timeouts == 0;  // no timeout can cut the exchange short
  const ParsedStream parsed = parse_responses(
      t.sent(),
      [&](std::size_t i, int status) {
        return i < expected.size() && expected[i].head && !expected[i].error &&
               (strict || status != 408);  // a 408 cuts a request short: it has a body
      },
      closed);
  std::string context = "sent: " + show_bytes(t.sent(), 1500) + "\nreference requests: " +
                        std::to_string(ref.requests.size()) + ", parser error " +
                        std::to_string(ref.parser.error_status()) + " " +
                        std::string(ref.parser.error_reason());
  check(parsed.error.empty(), "the server wrote a malformed response", parsed.error + "\n" + context);
  check(parsed.rest == 0, "an incomplete response is left once idle", context);
  const auto finals = final_responses(parsed);
  check(parsed.responses.size() - finals.size() <= ref.continues,
        "more 100 Continue than requests that asked for one", context);

  if (strict) {
    check(finals.size() == expected.size(),
          "the server answered " + std::to_string(finals.size()) + " requests, the reference has " +
              std::to_string(expected.size()),
          context);
  } else {
    check(finals.size() <= expected.size() + 1, "more responses than requests", context);
  }
  for (std::size_t i = 0; i < finals.size(); ++i) {
    const bool last = i + 1 == finals.size();
    if (!strict && last && finals[i]->status == 408) {
      check(finals[i]->closes(), "408 without Connection: close", context);
      continue;
    }
    check(i < expected.size(), "a response the reference has no request for", context);
    check_response(*finals[i], expected[i], last, i, context);
  }

  // How the connection ends.
  if (!finals.empty() && finals.back()->closes()) {
    check(closed && t.lost(), "Connection: close sent but the connection stays open", context);
  }
  if (eof_sent) check(closed, "the client's EOF did not close the connection once idle", context);
  if (strict && !expected.empty() && expected.back().ends) {
    check(closed, "the last response ends the connection, which stays open", context);
  }
  if (end == End::shutdown && (ref.parser.state() == strata::HttpRequestParser::State::idle ||
                               ref.parser.state() == strata::HttpRequestParser::State::closed)) {
    check(closed, "shutdown() left an idle connection open", context);
  }
  check(t.writes_after_close() == 0, "the server wrote after close()", context);
  check(!t.abort_called(), "the server aborted the connection", context);
  const std::size_t biggest = big_body_size + settings.limits.max_body_bytes +
                              settings.limits.max_header_bytes + 1024;
  check(t.peak_buffered() <= high + (settings.max_pipelined + 1) * biggest,
        "the write buffer grew past the high-water mark plus one batch of responses",
        "peak " + std::to_string(t.peak_buffered()));
  for (const std::string& m : loop_exceptions) {
    check(m.starts_with("HTTP handler failed for ") &&
              (m.find("/throw") != std::string::npos || m.find("/plain-throw") != std::string::npos),
          "an unexpected exception reached the loop", m);
  }

  t.finish();
  check(in_flight == 0, "a handler or stream is still in flight after the connection ended");
  check(server.connection_count() == 0, "the server still counts the connection");
  return 0;
}
