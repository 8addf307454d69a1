#include <strata/protocols/http_parser.hpp>

#include <catch2/catch.hpp>

#include <array>
#include <atomic>
#include <cctype>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <new>
#include <optional>
#include <random>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <strata/core/errors.hpp>

// Counts heap allocations, for the test that the steady state allocates nothing. Replacing the
// global operator new is per program; it only counts, and forwards to malloc. Not under a
// sanitizer, whose runtime brings its own operator new (mixing the two is an error there).
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define STRATA_TEST_COUNT_ALLOCATIONS 0
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define STRATA_TEST_COUNT_ALLOCATIONS 0
#endif
#endif
#ifndef STRATA_TEST_COUNT_ALLOCATIONS
#define STRATA_TEST_COUNT_ALLOCATIONS 1
#endif

namespace {
std::atomic<std::uint64_t> allocations{0};
}  // namespace

// For the other test files of this binary (test_http_alloc.cpp).
std::uint64_t strata_test_allocations() noexcept {
  return allocations.load(std::memory_order_relaxed);
}
bool strata_test_allocations_counted() noexcept { return STRATA_TEST_COUNT_ALLOCATIONS != 0; }

#if STRATA_TEST_COUNT_ALLOCATIONS

// GCC cannot see that the replaced operator new below is malloc, hence the pragma.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
void* operator new(std::size_t size) {
  allocations.fetch_add(1, std::memory_order_relaxed);
  if (void* p = std::malloc(size == 0 ? 1 : size)) return p;
  throw std::bad_alloc();
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
#pragma GCC diagnostic pop
#endif

namespace {

using strata::HttpParserLimits;
using strata::HttpRequest;
using strata::HttpRequestParser;
using State = strata::HttpRequestParser::State;

std::span<const std::byte> bytes_of(std::string_view s) {
  return std::as_bytes(std::span(s.data(), s.size()));
}

/// One request as the callbacks saw it, copied out of the parser.
struct Parsed {
  std::string method, target, path, query;
  int major = 0, minor = 0;
  std::vector<std::pair<std::string, std::string>> headers, trailers;
  std::string body;
  bool keep_alive = false, expects_continue = false, chunked = false;
  std::optional<std::uint64_t> content_length;
  bool operator==(const Parsed&) const = default;
};

/// Everything a parse produced: the requests, the callback sequence (consecutive body
/// events folded into one, as their number depends on the split), and how it ended.
struct Outcome {
  std::vector<Parsed> requests;
  std::vector<std::string> events;
  State state = State::idle;
  int status = 0;
  std::string reason;
  std::size_t unconsumed = 0;  // bytes the parser left (after an error or a close)
  bool operator==(const Outcome&) const = default;
};

std::vector<std::pair<std::string, std::string>> copy_fields(const strata::HttpHeaders& h) {
  std::vector<std::pair<std::string, std::string>> out;
  for (const auto& f : h) out.emplace_back(std::string(f.name), std::string(f.value));
  return out;
}

class Recorder final : public HttpRequestParser::Callbacks {
 public:
  explicit Recorder(Outcome& out) : out_(out) {}

  void headers_received(const HttpRequest& r) override {
    current_ = Parsed{};
    current_.method = r.method();
    current_.target = r.target();
    current_.path = r.path();
    current_.query = r.query();
    current_.major = r.version_major();
    current_.minor = r.version_minor();
    current_.headers = copy_fields(r.headers());
    current_.keep_alive = r.keep_alive();
    current_.expects_continue = r.expects_continue();
    current_.chunked = r.is_chunked();
    current_.content_length = r.content_length();
    out_.events.push_back("headers");
  }
  void body_received(std::span<const std::byte> data) override {
    REQUIRE(!data.empty());
    current_.body.append(reinterpret_cast<const char*>(data.data()), data.size());
    if (out_.events.empty() || out_.events.back() != "body") out_.events.push_back("body");
  }
  void request_received(const HttpRequest& r) override {
    // The head's views are still valid here, after the body and the trailers.
    REQUIRE(std::string(r.target()) == current_.target);
    REQUIRE(copy_fields(r.headers()) == current_.headers);
    current_.trailers = copy_fields(r.trailers());
    out_.requests.push_back(current_);
    out_.events.push_back("request");
  }

 private:
  Outcome& out_;
  Parsed current_;
};

/// Feeds @p input cut into pieces of the given sizes (the rest in one piece), as a server
/// would: unconsumed bytes are kept, and each complete request is followed by resume().
Outcome parse(std::string_view input, const std::vector<std::size_t>& cuts = {},
              HttpParserLimits limits = {}) {
  Outcome out;
  Recorder recorder(out);
  HttpRequestParser parser(recorder, limits);
  std::string pending;
  std::size_t at = 0;
  auto run = [&] {
    for (;;) {
      const std::size_t n = parser.feed(bytes_of(pending));
      pending.erase(0, n);
      if (parser.is_paused()) {
        parser.resume();
        continue;
      }
      return;
    }
  };
  for (std::size_t cut : cuts) {
    cut = std::min(cut, input.size() - at);
    pending.append(input.substr(at, cut));
    at += cut;
    run();
  }
  pending.append(input.substr(at));
  run();
  out.state = parser.state();
  out.status = parser.error_status();
  out.reason = std::string(parser.error_reason());
  out.unconsumed = parser.has_failed() ? pending.size() : 0;
  return out;
}

Outcome parse_bytewise(std::string_view input, HttpParserLimits limits = {}) {
  return parse(input, std::vector<std::size_t>(input.size(), 1), limits);
}

Outcome parse_random(std::string_view input, std::uint32_t seed, HttpParserLimits limits = {}) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<std::size_t> piece(0, 13);
  std::vector<std::size_t> cuts;
  for (std::size_t total = 0; total < input.size();) {
    cuts.push_back(piece(rng));
    total += cuts.back();
  }
  return parse(input, cuts, limits);
}

/// Parses @p input whole, byte by byte and in random splits; all must agree.
Outcome parse_every_way(std::string_view input, HttpParserLimits limits = {}) {
  Outcome whole = parse(input, {}, limits);
  const Outcome bytewise = parse_bytewise(input, limits);
  CHECK(bytewise.requests == whole.requests);
  CHECK(bytewise.events == whole.events);
  CHECK(bytewise.status == whole.status);
  CHECK(bytewise.reason == whole.reason);
  CHECK(bytewise.state == whole.state);
  CHECK(bytewise.unconsumed == whole.unconsumed);
  for (std::uint32_t seed = 1; seed <= 20; ++seed) {
    const Outcome split = parse_random(input, seed, limits);
    CHECK(split == whole);
  }
  return whole;
}

/// The status a single malformed input gets, checking that no request was reported.
int status_of(std::string_view input, HttpParserLimits limits = {}) {
  const Outcome out = parse_every_way(input, limits);
  CHECK(out.state == State::failed);
  CHECK(out.requests.empty());
  return out.status;
}

std::string header_value(const Parsed& p, std::string_view name) {
  for (const auto& [n, v] : p.headers) {
    if (strata::http_iequals(n, name)) return v;
  }
  return "<none>";
}

}  // namespace

// ---- well-formed requests --------------------------------------------------------------------

TEST_CASE("HttpRequestParser: GET with a query gives method, target, path, query and version",
          "[protocols][http_parser]") {
  const Outcome out = parse_every_way(
      "GET /search/items?q=strata&page=2 HTTP/1.1\r\nHost: example.com\r\nAccept: */*\r\n\r\n");
  REQUIRE(out.requests.size() == 1);
  const Parsed& r = out.requests[0];
  CHECK(r.method == "GET");
  CHECK(r.target == "/search/items?q=strata&page=2");
  CHECK(r.path == "/search/items");
  CHECK(r.query == "q=strata&page=2");
  CHECK(r.major == 1);
  CHECK(r.minor == 1);
  CHECK(r.headers == std::vector<std::pair<std::string, std::string>>{{"Host", "example.com"},
                                                                      {"Accept", "*/*"}});
  CHECK(r.body.empty());
  CHECK_FALSE(r.content_length.has_value());
  CHECK_FALSE(r.chunked);
  CHECK(out.events == std::vector<std::string>{"headers", "request"});
  CHECK(out.state == State::idle);
}

TEST_CASE("HttpRequestParser: a target without '?' has an empty query",
          "[protocols][http_parser]") {
  const Outcome out = parse("GET /plain HTTP/1.1\r\nHost: h\r\n\r\n");
  REQUIRE(out.requests.size() == 1);
  CHECK(out.requests[0].path == "/plain");
  CHECK(out.requests[0].query.empty());
}

TEST_CASE("HttpRequestParser: HEAD is reported as HEAD with no body", "[protocols][http_parser]") {
  const Outcome out = parse_every_way("HEAD /index.html HTTP/1.1\r\nHost: h\r\n\r\n");
  REQUIRE(out.requests.size() == 1);
  CHECK(out.requests[0].method == "HEAD");
  CHECK(out.requests[0].body.empty());
}

TEST_CASE("HttpRequestParser: a POST body framed by Content-Length is delivered in full",
          "[protocols][http_parser]") {
  const Outcome out = parse_every_way(
      "POST /echo HTTP/1.1\r\nHost: h\r\nContent-Type: text/plain\r\nContent-Length: 13\r\n\r\n"
      "Hello, World!");
  REQUIRE(out.requests.size() == 1);
  const Parsed& r = out.requests[0];
  CHECK(r.method == "POST");
  CHECK(r.body == "Hello, World!");
  CHECK(r.content_length == 13u);
  CHECK(header_value(r, "content-type") == "text/plain");
  CHECK(out.events == std::vector<std::string>{"headers", "body", "request"});
}

TEST_CASE("HttpRequestParser: a chunked body is decoded and its trailers kept",
          "[protocols][http_parser]") {
  const Outcome out = parse_every_way(
      "POST /upload HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
      "5\r\nHello\r\n"
      "8;name=value\r\n, World!\r\n"
      "A\r\n0123456789\r\n"
      "0\r\nChecksum: abc\r\nX-Trailer:  two words  \r\n\r\n");
  REQUIRE(out.requests.size() == 1);
  const Parsed& r = out.requests[0];
  CHECK(r.chunked);
  CHECK_FALSE(r.content_length.has_value());
  CHECK(r.body == "Hello, World!0123456789");
  CHECK(r.trailers == std::vector<std::pair<std::string, std::string>>{
                          {"Checksum", "abc"}, {"X-Trailer", "two words"}});
}

TEST_CASE("HttpRequestParser: Transfer-Encoding is matched case-insensitively",
          "[protocols][http_parser]") {
  const Outcome out = parse_every_way(
      "POST / HTTP/1.1\r\nHost: h\r\ntransfer-encoding: Chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n");
  REQUIRE(out.requests.size() == 1);
  CHECK(out.requests[0].body == "abc");
}

TEST_CASE("HttpRequestParser: 100 pipelined requests in one buffer come out one by one, in order",
          "[protocols][http_parser]") {
  std::string input;
  for (int i = 0; i < 100; ++i) {
    if (i % 3 == 1) {
      const std::string body = "body-" + std::to_string(i);
      input += "POST /r/" + std::to_string(i) + " HTTP/1.1\r\nHost: h\r\nContent-Length: " +
               std::to_string(body.size()) + "\r\n\r\n" + body;
    } else if (i % 3 == 2) {
      input += "PUT /r/" + std::to_string(i) +
               " HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n";
    } else {
      input += "GET /r/" + std::to_string(i) + " HTTP/1.1\r\nHost: h\r\n\r\n";
    }
  }

  SECTION("the parser pauses after each request, having consumed exactly it") {
    Outcome out;
    Recorder recorder(out);
    HttpRequestParser parser(recorder);
    std::span<const std::byte> rest = bytes_of(input);
    for (int i = 0; i < 100; ++i) {
      const std::size_t n = parser.feed(rest);
      REQUIRE(parser.is_paused());
      REQUIRE(out.requests.size() == static_cast<std::size_t>(i) + 1);
      CHECK(out.requests.back().target == "/r/" + std::to_string(i));
      CHECK(parser.feed(rest.subspan(n)) == 0);  // paused: nothing more until resume()
      rest = rest.subspan(n);
      parser.resume();
    }
    CHECK(rest.empty());
    CHECK(parser.state() == State::idle);
    CHECK(parser.requests_completed() == 100);
  }
  SECTION("every split gives the same 100 requests") {
    const Outcome out = parse_every_way(input);
    REQUIRE(out.requests.size() == 100);
    for (int i = 0; i < 100; ++i) {
      CHECK(out.requests[i].target == "/r/" + std::to_string(i));
      if (i % 3 == 1) CHECK(out.requests[i].body == "body-" + std::to_string(i));
      if (i % 3 == 2) CHECK(out.requests[i].body == "ok");
    }
  }
}

TEST_CASE("HttpRequestParser: empty lines before a request line are skipped",
          "[protocols][http_parser]") {
  const Outcome out = parse_every_way("\r\n\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n");
  REQUIRE(out.requests.size() == 1);
  CHECK(out.requests[0].target == "/");
}

// ---- keep-alive ------------------------------------------------------------------------------

TEST_CASE("HttpRequestParser: keep-alive follows the HTTP/1.0 and HTTP/1.1 rules",
          "[protocols][http_parser]") {
  auto keep_alive = [](std::string_view head) {
    const Outcome out = parse_every_way(head);
    REQUIRE(out.requests.size() == 1);
    return out.requests[0].keep_alive;
  };
  CHECK(keep_alive("GET / HTTP/1.1\r\nHost: h\r\n\r\n"));
  CHECK_FALSE(keep_alive("GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n"));
  CHECK_FALSE(keep_alive("GET / HTTP/1.1\r\nHost: h\r\nConnection: Close\r\n\r\n"));
  CHECK(keep_alive("GET / HTTP/1.1\r\nHost: h\r\nConnection: keep-alive\r\n\r\n"));
  CHECK_FALSE(keep_alive("GET / HTTP/1.0\r\n\r\n"));
  CHECK_FALSE(keep_alive("GET / HTTP/1.0\r\nHost: h\r\n\r\n"));
  CHECK(keep_alive("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"));
  CHECK(keep_alive("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n"));
  CHECK_FALSE(keep_alive("GET / HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n"));
}

TEST_CASE("HttpRequestParser: after a request that closes the connection, bytes are discarded",
          "[protocols][http_parser]") {
  const std::string_view first = "GET /a HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n";
  const std::string input = std::string(first) + "GET /b HTTP/1.1\r\nHost: h\r\n\r\n";
  Outcome out;
  Recorder recorder(out);
  HttpRequestParser parser(recorder);
  CHECK(parser.feed(bytes_of(input)) == first.size());
  REQUIRE(parser.is_paused());
  parser.resume();
  CHECK(parser.state() == State::closed);
  CHECK(parser.feed(bytes_of(input).subspan(first.size())) == input.size() - first.size());
  CHECK(out.requests.size() == 1);
  CHECK_FALSE(parser.has_failed());

  // And every split agrees: one request, then closed.
  const Outcome all = parse_every_way(input);
  CHECK(all.requests.size() == 1);
  CHECK(all.state == State::closed);
}

TEST_CASE("HttpRequestParser: an HTTP/1.0 request without keep-alive ends the connection",
          "[protocols][http_parser]") {
  const Outcome out = parse_every_way("GET / HTTP/1.0\r\n\r\nGET /ignored HTTP/1.0\r\n\r\n");
  CHECK(out.requests.size() == 1);
  CHECK(out.state == State::closed);
}

TEST_CASE("HttpRequestParser: HTTP/1.0 keep-alive requests follow one another",
          "[protocols][http_parser]") {
  const Outcome out = parse_every_way(
      "GET /1 HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET /2 HTTP/1.0\r\n\r\n");
  REQUIRE(out.requests.size() == 2);
  CHECK(out.requests[0].keep_alive);
  CHECK_FALSE(out.requests[1].keep_alive);
  CHECK(out.state == State::closed);
}

// ---- headers ---------------------------------------------------------------------------------

TEST_CASE("HttpRequestParser: header lookup ignores case, keeps order and duplicates",
          "[protocols][http_parser]") {
  struct Check final : HttpRequestParser::Callbacks {
    bool seen = false;
    void headers_received(const HttpRequest& r) override {
      seen = true;
      const strata::HttpHeaders& h = r.headers();
      REQUIRE(h.size() == 5);
      CHECK(h[0].name == "Host");
      CHECK(h[1].name == "X-Dup");
      CHECK(h[1].value == "one");
      CHECK(h[2].name == "content-TYPE");
      CHECK(h[3].name == "x-dup");
      CHECK(h[3].value == "two");
      CHECK(h[4].value == "");
      CHECK(h.get("CONTENT-type") == std::optional<std::string_view>("application/json"));
      CHECK(h.get("x-DUP") == std::optional<std::string_view>("one"));  // the first one
      CHECK(h.count("X-DUP") == 2);
      CHECK(h.contains("host"));
      CHECK_FALSE(h.contains("Content-Length"));
      CHECK_FALSE(h.get("missing").has_value());
      CHECK(h.get("x-empty") == std::optional<std::string_view>(""));
    }
    void body_received(std::span<const std::byte>) override {}
    void request_received(const HttpRequest&) override {}
  } check;
  HttpRequestParser parser(check);
  parser.feed(bytes_of("GET / HTTP/1.1\r\nHost: h\r\nX-Dup: one\r\ncontent-TYPE:application/json  "
                       "\r\nx-dup: two\r\nX-Empty:\r\n\r\n"));
  CHECK(check.seen);
  CHECK(parser.is_paused());
}

TEST_CASE("HttpRequestParser: swap_head hands the head over; its views outlive resume()",
          "[protocols][http_parser]") {
  // Each head goes into storage of its own, as a server's request slot keeps it; the views
  // taken in headers_received must still read the same after every later request. The heads
  // range from one whose bytes fit inside a std::string object ("/" and no field) to long ones,
  // and are read by the simple path (fed whole) or by llhttp (byte by byte).
  struct Taking final : HttpRequestParser::Callbacks {
    HttpRequestParser* parser = nullptr;
    std::vector<std::unique_ptr<strata::HttpHeadStorage>> storages;
    struct Seen {
      std::string_view target, path, query;
      strata::HttpHeaders headers;
    };
    std::vector<Seen> seen;
    void headers_received(const HttpRequest& r) override {
      storages.push_back(std::make_unique<strata::HttpHeadStorage>());
      parser->swap_head(*storages.back());
      seen.push_back({r.target(), r.path(), r.query(), r.headers()});
    }
    void body_received(std::span<const std::byte>) override {}
    void request_received(const HttpRequest& r) override {
      CHECK(r.target() == seen.back().target);  // the parser reads the swapped views too
    }
  } taking;
  HttpRequestParser parser(taking);
  taking.parser = &parser;
  const std::string long_value(300, 'v');
  bool into_input = false;
  const std::string input = "GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"
                            "GET /a?b HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"
                            "POST /long/path?q=1 HTTP/1.1\r\nHost: h\r\nX-Long: " + long_value +
                            "\r\nContent-Length: 2\r\n\r\nok"
                            "GET /x HTTP/1.1\r\nHost: localhost:8080\r\nAccept: */*\r\n\r\n"
                            "GET / HTTP/1.0\r\n\r\n";  // the last: 15 bytes from the target on
  bool whole = true;
  SECTION("fed whole") {}
  SECTION("fed whole, heads viewed in the input until swapped") { into_input = true; }
  SECTION("fed byte by byte") { whole = false; }
  parser.set_views_into_input(into_input);
  const std::size_t step = whole ? input.size() : 1;
  std::string pending;
  for (std::size_t at = 0; at < input.size(); at += step) {
    pending.append(input, at, step);
    for (;;) {
      pending.erase(0, parser.feed(bytes_of(pending)));
      if (!parser.is_paused()) break;
      parser.resume();
    }
  }
  CHECK(pending.empty());
  CHECK(parser.state() == State::closed);
  CHECK(parser.simple_heads() == (whole ? 4u : 0u));
  REQUIRE(taking.seen.size() == 5);
  const auto& s = taking.seen;
  CHECK(s[0].target == "/");
  CHECK(s[0].headers.get("connection") == std::optional<std::string_view>("keep-alive"));
  CHECK(s[1].path == "/a");
  CHECK(s[1].query == "b");
  CHECK(s[2].target == "/long/path?q=1");
  CHECK(s[2].headers.get("x-long") == std::optional<std::string_view>(long_value));
  CHECK(s[2].headers.get("Content-Length") == std::optional<std::string_view>("2"));
  CHECK(s[3].path == "/x");
  REQUIRE(s[3].headers.size() == 2);
  CHECK(s[3].headers[0].value == "localhost:8080");
  CHECK(s[3].headers[1].name == "Accept");
  CHECK(s[4].target == "/");
  CHECK(s[4].headers.empty());
}

TEST_CASE("HttpRequestParser: with views into the input, a head read whole is viewed where it "
          "was fed, and swap_head copies it",
          "[protocols][http_parser]") {
  struct Viewing final : HttpRequestParser::Callbacks {
    HttpRequestParser* parser = nullptr;
    const std::string* input = nullptr;
    bool swap = false;
    strata::HttpHeadStorage storage;
    std::vector<std::string> seen;  // target and fields as seen in request_received
    std::vector<bool> in_input;     // whether the target viewed the input then
    void headers_received(const HttpRequest&) override {
      if (swap) parser->swap_head(storage);
    }
    void body_received(std::span<const std::byte>) override {}
    void request_received(const HttpRequest& r) override {
      const char* p = r.target().data();
      in_input.push_back(p >= input->data() && p < input->data() + input->size());
      std::string s(r.target());
      for (const auto& h : r.headers()) s += " " + std::string(h.name) + "=" + std::string(h.value);
      seen.push_back(s);
    }
  };
  const std::string requests =
      "GET /a?b HTTP/1.1\r\nHost: h\r\nX-One: 1 \r\n\r\n"
      "GET / HTTP/1.1\r\nHost: h\r\n\r\n"
      "POST /p HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\n\r\nx";  // llhttp: copied
  const std::vector<std::string> expected = {"/a?b Host=h X-One=1", "/ Host=h",
                                             "/p Host=h Content-Length=1"};
  for (const bool swap : {false, true}) {
    CAPTURE(swap);
    std::string input = requests;
    Viewing viewing;
    HttpRequestParser parser(viewing);
    parser.set_views_into_input(true);
    viewing.parser = &parser;
    viewing.input = &input;
    viewing.swap = swap;
    std::size_t at = 0;
    while (at < input.size()) {
      at += parser.feed(bytes_of(std::string_view(input).substr(at)));
      REQUIRE(parser.is_paused());
      if (swap) {
        // Taken: the views no longer need the input, which the caller may now change.
        const auto text = [&parser] {
          std::string t(parser.request().target());
          for (const auto& h : parser.request().headers()) {
            t += " " + std::string(h.name) + "=" + std::string(h.value);
          }
          return t;
        };
        const std::string kept = text();
        std::fill(input.begin(), input.begin() + static_cast<std::ptrdiff_t>(at), '#');
        CHECK(text() == kept);
      }
      parser.resume();
    }
    CHECK(viewing.seen == expected);
    CHECK(parser.simple_heads() == 2);
    const std::vector<bool> viewed = {!swap, !swap, false};
    CHECK(viewing.in_input == viewed);
  }
  // A request that ends the connection: after resume() nothing views the bytes any more.
  const std::string last = "GET /last HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n";
  Viewing viewing;
  HttpRequestParser parser(viewing);
  parser.set_views_into_input(true);
  viewing.parser = &parser;
  viewing.input = &last;
  CHECK(parser.feed(bytes_of(last)) == last.size());
  REQUIRE(viewing.in_input == std::vector<bool>{true});
  parser.resume();
  CHECK(parser.state() == State::closed);
  CHECK(parser.request().target().empty());
  CHECK(parser.request().headers().empty());
}

TEST_CASE("HttpRequestParser: swap_head outside a request's head-to-resume span does nothing",
          "[protocols][http_parser]") {
  struct Nothing final : HttpRequestParser::Callbacks {
    void headers_received(const HttpRequest&) override {}
    void body_received(std::span<const std::byte>) override {}
    void request_received(const HttpRequest&) override {}
  } nothing;
  HttpRequestParser parser(nothing);
  strata::HttpHeadStorage storage;
  storage.bytes = "kept";
  parser.swap_head(storage);  // idle
  CHECK(storage.bytes == "kept");
  parser.feed(bytes_of("GET /p HTTP/1.1\r\nHo"));
  parser.swap_head(storage);  // inside the head
  CHECK(storage.bytes == "kept");
  parser.feed(bytes_of("st: h\r\n\r\n"));
  REQUIRE(parser.is_paused());
  parser.swap_head(storage);  // complete: taken
  CHECK(parser.request().target() == "/p");
  CHECK(std::string_view(storage.bytes).substr(0, 2) == "/p");
}

TEST_CASE("HttpRequestParser: header values keep inner whitespace and obs-text",
          "[protocols][http_parser]") {
  const Outcome out =
      parse_every_way("GET / HTTP/1.1\r\nHost: h\r\nUser-Agent: a  b\tc\r\nX-Latin: caf\xe9\r\n\r\n");
  REQUIRE(out.requests.size() == 1);
  CHECK(header_value(out.requests[0], "user-agent") == "a  b\tc");
  CHECK(header_value(out.requests[0], "x-latin") == "caf\xe9");
}

TEST_CASE("HttpRequestParser: Host is required in HTTP/1.1 and may appear once",
          "[protocols][http_parser]") {
  CHECK(status_of("GET / HTTP/1.1\r\n\r\n") == 400);
  CHECK(status_of("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n") == 400);
  CHECK(status_of("GET / HTTP/1.0\r\nHost: a\r\nhost: a\r\n\r\n") == 400);
  CHECK(parse("GET / HTTP/1.0\r\n\r\n").requests.size() == 1);
}

TEST_CASE("HttpRequestParser: Expect: 100-continue is flagged for HTTP/1.1 only",
          "[protocols][http_parser]") {
  const std::string_view body_follows =
      "POST /up HTTP/1.1\r\nHost: h\r\nExpect: 100-Continue\r\nContent-Length: 3\r\n\r\nabc";
  const Outcome out = parse_every_way(body_follows);
  REQUIRE(out.requests.size() == 1);
  CHECK(out.requests[0].expects_continue);
  CHECK(out.requests[0].body == "abc");

  SECTION("the flag is known when the head arrives, before any body byte") {
    Outcome seen;
    Recorder recorder(seen);
    HttpRequestParser parser(recorder);
    const std::string_view head = body_follows.substr(0, body_follows.size() - 3);
    CHECK(parser.feed(bytes_of(head)) == head.size());
    CHECK(parser.state() == State::body);
    CHECK(parser.request().expects_continue());
    CHECK(seen.events == std::vector<std::string>{"headers"});
  }

  CHECK_FALSE(parse("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n")
                  .requests.at(0)
                  .expects_continue);
  CHECK_FALSE(parse("POST / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 0\r\n\r\n")
                  .requests.at(0)
                  .expects_continue);
}

TEST_CASE("HttpRequestParser: Upgrade and CONNECT are ordinary requests; parsing goes on",
          "[protocols][http_parser]") {
  const Outcome out = parse_every_way(
      "GET /ws HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
      "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n"
      "GET /after HTTP/1.1\r\nHost: h\r\n\r\n");
  REQUIRE(out.requests.size() == 3);
  CHECK(out.requests[1].method == "CONNECT");
  CHECK(out.requests[1].target == "example.com:443");
  CHECK(out.requests[2].target == "/after");
}

// ---- limits ----------------------------------------------------------------------------------

TEST_CASE("HttpRequestParser: a head over max_header_bytes is refused with 431",
          "[protocols][http_parser]") {
  HttpParserLimits limits;
  limits.max_header_bytes = 256;
  const std::string prefix = "GET / HTTP/1.1\r\nHost: h\r\nX-Pad: ";
  auto head_of_size = [&](std::size_t total) {
    // prefix + padding + "\r\n\r\n" == total bytes.
    return prefix + std::string(total - prefix.size() - 4, 'p') + "\r\n\r\n";
  };
  CHECK(parse_every_way(head_of_size(256), limits).requests.size() == 1);  // exactly at it
  CHECK(status_of(head_of_size(257), limits) == 431);
  CHECK(status_of(head_of_size(100000), {}) == 431);  // default limit 8 KiB

  SECTION("many small fields count as much as one large one") {
    std::string many = "GET / HTTP/1.1\r\nHost: h\r\n";
    for (int i = 0; i < 40; ++i) many += "X-" + std::to_string(i) + ": v\r\n";
    CHECK(status_of(many + "\r\n", limits) == 431);
  }
  SECTION("the error comes as soon as the limit is crossed, without the end of the head") {
    Outcome out;
    Recorder recorder(out);
    HttpRequestParser parser(recorder, limits);
    const std::string endless = prefix + std::string(1000, 'p');
    CHECK(parser.feed(bytes_of(endless)) == 256);
    CHECK(parser.error_status() == 431);
  }
  SECTION("endless empty lines before a request count too") {
    std::string blank;
    for (int i = 0; i < 200; ++i) blank += "\r\n";
    CHECK(status_of(blank, limits) == 414);
  }
}

TEST_CASE("HttpRequestParser: a request line over max_header_bytes is refused with 414",
          "[protocols][http_parser]") {
  HttpParserLimits limits;
  limits.max_header_bytes = 128;
  CHECK(status_of("GET /" + std::string(200, 'a') + " HTTP/1.1\r\nHost: h\r\n\r\n", limits) ==
        414);
}

TEST_CASE("HttpRequestParser: trailers over max_header_bytes are refused with 431",
          "[protocols][http_parser]") {
  HttpParserLimits limits;
  limits.max_header_bytes = 128;
  CHECK(status_of("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\n0\r\n"
                  "X-T: " + std::string(200, 't') + "\r\n\r\n",
                  limits) == 431);
}

TEST_CASE("HttpRequestParser: a body over max_body_bytes is refused with 413 before it arrives",
          "[protocols][http_parser]") {
  HttpParserLimits limits;
  limits.max_body_bytes = 10;
  CHECK(parse_every_way("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\n0123456789",
                        limits)
            .requests.size() == 1);

  SECTION("Content-Length over the limit: 413 at the end of the head") {
    Outcome out;
    Recorder recorder(out);
    HttpRequestParser parser(recorder, limits);
    const std::string_view head = "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 11\r\n\r\n";
    CHECK(parser.feed(bytes_of(head)) == head.size());
    CHECK(parser.error_status() == 413);
    CHECK(out.events.empty());
    CHECK(status_of(std::string(head) + "01234567890", limits) == 413);
  }
  SECTION("chunk sizes summing over the limit: 413 at the chunk that crosses it") {
    const Outcome out = parse_every_way(
        "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
        "6\r\n012345\r\n5\r\n67890\r\n0\r\n\r\n",
        limits);
    CHECK(out.status == 413);
    CHECK(out.requests.empty());
    CHECK(out.events == std::vector<std::string>{"headers", "body"});
  }
  SECTION("a huge Content-Length") {
    CHECK(status_of("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 99999999999999\r\n\r\n") ==
          413);
  }
}

TEST_CASE("HttpRequestParser: limits of 0 are refused at construction", "[protocols][http_parser]") {
  Outcome out;
  Recorder recorder(out);
  HttpParserLimits limits;
  limits.max_header_bytes = 0;
  CHECK_THROWS_AS(HttpRequestParser(recorder, limits), std::invalid_argument);
}

// ---- malformed input and smuggling shapes ----------------------------------------------------

TEST_CASE("HttpRequestParser: malformed request lines are refused with 400",
          "[protocols][http_parser]") {
  CHECK(status_of("FOO / HTTP/1.1\r\nHost: h\r\n\r\n") == 400);
  CHECK(status_of("get / HTTP/1.1\r\nHost: h\r\n\r\n") == 400);
  CHECK(status_of("GET / HTTP/1.2\r\nHost: h\r\n\r\n") == 400);
  CHECK(status_of("GET / HTTP/x.y\r\nHost: h\r\n\r\n") == 400);
  CHECK(status_of("GET / FTP/1.1\r\nHost: h\r\n\r\n") == 400);
  CHECK(status_of("GET /\x01 HTTP/1.1\r\nHost: h\r\n\r\n") == 400);
  CHECK(status_of("GET / HTTP/1.1 \r\nHost: h\r\n\r\n") == 400);
}

TEST_CASE("HttpRequestParser: well-formed versions other than 1.0 and 1.1 get 505",
          "[protocols][http_parser]") {
  CHECK(status_of("GET / HTTP/2.0\r\nHost: h\r\n\r\n") == 505);
  CHECK(status_of("GET / HTTP/0.9\r\n\r\n") == 505);
  CHECK(status_of("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n") == 505);
}

TEST_CASE("HttpRequestParser: malformed field lines are refused with 400",
          "[protocols][http_parser]") {
  CHECK(status_of("GET / HTTP/1.1\r\nHost: h\r\nNo colon\r\n\r\n") == 400);
  CHECK(status_of("GET / HTTP/1.1\r\nHost: h\r\nSpace before : colon\r\n\r\n") == 400);
  CHECK(status_of("GET / HTTP/1.1\r\nHost: h\r\nBad\x01Name: v\r\n\r\n") == 400);
  CHECK(status_of("GET / HTTP/1.1\r\nHost: h\r\nX: bad\x01value\r\n\r\n") == 400);
  CHECK(status_of("GET / HTTP/1.1\r\nHost: h\r\n: empty name\r\n\r\n") == 400);
  CHECK(status_of("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
                  "0\r\n: empty\r\n\r\n") == 400);
}

TEST_CASE("HttpRequestParser: an empty field name is a 400 where it stands, before a size limit "
          "further on",
          "[protocols][http_parser]") {
  // The first problem in the bytes decides, whatever follows (found by fuzz/http_chunked).
  HttpParserLimits limits;
  limits.max_header_bytes = 128;
  const std::string long_value(200, 'v');
  CHECK(status_of("GET / HTTP/1.1\r\nHost: h\r\n: v\r\nX: " + long_value + "\r\n\r\n", limits) ==
        400);
  CHECK(status_of("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n"
                  "X-A: 1\r\n: v\r\nX-T: " + long_value + "\r\n\r\n",
                  limits) == 400);
}

TEST_CASE("HttpRequestParser: obs-fold (a field line starting with whitespace) is refused",
          "[protocols][http_parser]") {
  CHECK(status_of("GET / HTTP/1.1\r\nHost: h\r\nX-Long: part one\r\n  part two\r\n\r\n") == 400);
  CHECK(status_of("GET / HTTP/1.1\r\nHost: h\r\nX-Long: part one\r\n\tpart two\r\n\r\n") == 400);
  CHECK(status_of("GET / HTTP/1.1\r\n Host: h\r\n\r\n") == 400);
  const Outcome out = parse("GET / HTTP/1.1\r\nHost: h\r\nX: a\r\n b\r\n\r\n");
  CHECK(out.reason.find("obs-fold") != std::string::npos);
}

TEST_CASE("HttpRequestParser: Content-Length with Transfer-Encoding is refused with 400",
          "[protocols][http_parser]") {
  CHECK(status_of("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n"
                  "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n") == 400);
  CHECK(status_of("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n"
                  "Content-Length: 3\r\n\r\n0\r\n\r\n") == 400);
}

TEST_CASE("HttpRequestParser: a duplicate Content-Length is refused with 400, equal or not",
          "[protocols][http_parser]") {
  CHECK(status_of("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n"
                  "abcd") == 400);
  CHECK(status_of("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\ncontent-length: 3\r\n\r\n"
                  "abc") == 400);
  CHECK(status_of("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3, 4\r\n\r\nabcd") == 400);
  CHECK(status_of("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: -1\r\n\r\n") == 400);
  CHECK(status_of("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 0x10\r\n\r\n") == 400);
  CHECK(status_of("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1 2\r\n\r\n") == 400);
}

TEST_CASE("HttpRequestParser: bad chunk sizes are refused with 400", "[protocols][http_parser]") {
  const std::string head = "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n";
  CHECK(status_of(head + "g\r\nabc\r\n0\r\n\r\n") == 400);
  CHECK(status_of(head + "-1\r\na\r\n0\r\n\r\n") == 400);
  CHECK(status_of(head + "0x3\r\nabc\r\n0\r\n\r\n") == 400);
  CHECK(status_of(head + "\r\nabc\r\n0\r\n\r\n") == 400);
  CHECK(status_of(head + " 3\r\nabc\r\n0\r\n\r\n") == 400);
  CHECK(status_of(head + "3 \r\nabc\r\n0\r\n\r\n") == 400);
  CHECK(status_of(head + "10000000000000000\r\nabc\r\n0\r\n\r\n") == 400);  // overflow
  CHECK(status_of(head + "3\r\nabcd\r\n0\r\n\r\n") == 400);  // data longer than the size
}

TEST_CASE("HttpRequestParser: Transfer-Encoding follows RFC 9112 (400, or 501 for a coding)",
          "[protocols][http_parser]") {
  const std::string start = "POST / HTTP/1.1\r\nHost: h\r\n";
  const std::string body = "\r\n3\r\nabc\r\n0\r\n\r\n";
  // chunked not final: the length cannot be determined, 400 (§6.3).
  CHECK(status_of(start + "Transfer-Encoding: gzip\r\n" + body) == 400);
  CHECK(status_of(start + "Transfer-Encoding: chunked, gzip\r\n" + body) == 400);
  CHECK(status_of(start + "Transfer-Encoding: identity\r\n" + body) == 400);
  CHECK(status_of(start + "Transfer-Encoding: chunked;x=1\r\n" + body) == 400);
  // chunked twice: 400.
  CHECK(status_of(start + "Transfer-Encoding: chunked, chunked\r\n" + body) == 400);
  CHECK(status_of(start + "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n" + body) ==
        400);
  // chunked final after a coding we do not implement: 501 (§6.1).
  CHECK(status_of(start + "Transfer-Encoding: gzip, chunked\r\n" + body) == 501);
  CHECK(status_of(start + "Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n" + body) ==
        501);
  // Any Transfer-Encoding in HTTP/1.0: faulty framing, 400 (§6.1).
  CHECK(status_of("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n" + body) == 400);
}

TEST_CASE("HttpRequestParser: the connection closing mid-request is a 400; between requests not",
          "[protocols][http_parser]") {
  Outcome out;
  Recorder recorder(out);
  {
    HttpRequestParser parser(recorder);
    parser.feed(bytes_of("GET / HTTP/1.1\r\nHo"));
    CHECK(parser.state() == State::head);
    parser.feed_eof();
    CHECK(parser.error_status() == 400);
  }
  {
    HttpRequestParser parser(recorder);
    parser.feed(bytes_of("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nab"));
    CHECK(parser.state() == State::body);
    parser.feed_eof();
    CHECK(parser.error_status() == 400);
  }
  {
    HttpRequestParser parser(recorder);
    CHECK(parser.state() == State::idle);
    parser.feed(bytes_of("GET / HTTP/1.1\r\nHost: h\r\n\r\n"));
    parser.resume();
    parser.feed_eof();
    CHECK(parser.state() == State::closed);
    CHECK_FALSE(parser.has_failed());
  }
}

TEST_CASE("HttpRequestParser: an error is sticky", "[protocols][http_parser]") {
  Outcome out;
  Recorder recorder(out);
  HttpRequestParser parser(recorder);
  const std::string_view good = "GET /ok HTTP/1.1\r\nHost: h\r\n\r\n";
  const std::string input = std::string(good) + "BAD\x01 / HTTP/1.1\r\n\r\n" + std::string(good);
  const std::size_t n = parser.feed(bytes_of(input));
  CHECK(n == good.size());
  parser.resume();
  parser.feed(bytes_of(input).subspan(n));
  REQUIRE(parser.has_failed());
  const int status = parser.error_status();
  const std::string reason(parser.error_reason());
  CHECK(status == 400);
  CHECK_FALSE(reason.empty());

  CHECK(parser.feed(bytes_of(good)) == 0);
  parser.resume();
  parser.feed_eof();
  CHECK(parser.feed(bytes_of(good)) == 0);
  CHECK(parser.has_failed());
  CHECK(parser.error_status() == status);
  CHECK(parser.error_reason() == reason);
  CHECK(out.requests.size() == 1);
}

// ---- the three llhttp 8.1 CVEs ---------------------------------------------------------------

TEST_CASE("HttpRequestParser: CVE-2023-30589, a bare CR cannot end a field line",
          "[protocols][http_parser][cve]") {
  // A bare CR that a lenient parser takes as the end of a line hides a Transfer-Encoding from
  // a front end that does not. Every bare CR (and bare LF) in a head or trailer section is 400.
  const std::vector<std::string> inputs = {
      "POST / HTTP/1.1\r\nHost: h\r\nX:\rTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
      "POST / HTTP/1.1\r\nHost: h\r\nX: y\rTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
      "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\rX: y\r\n\r\n0\r\n\r\n",
      "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\n\rz",
      "POST / HTTP/1.1\rHost: h\r\nContent-Length: 1\r\n\r\nz",
      "POST / HTTP/1.1\r\nHost: h\nContent-Length: 1\r\n\r\nz",
      "\rGET / HTTP/1.1\r\nHost: h\r\n\r\n",
      std::string("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n") +
          "1\r\nz\r\n0\r\nX:\rT: v\r\n\r\n",
  };
  for (const std::string& input : inputs) {
    INFO(input);
    const Outcome out = parse_every_way(input);
    CHECK(out.status == 400);
    CHECK(out.state == State::failed);
    CHECK(out.requests.empty());
  }
  // The head cases are caught by our scanner, whatever llhttp's mode.
  CHECK(parse(inputs[0]).reason.find("bare CR") != std::string::npos);
}

TEST_CASE("HttpRequestParser: a bare CR or LF is found at every offset of a long field line",
          "[protocols][http_parser][cve]") {
  // The head scanner skips to line ends many bytes at a time (16 with SSE2, then 8, then 1):
  // a stray CR or LF at any offset, in every lane of a block and in the tail, is still found.
  const std::string value(40, 'v');
  for (std::size_t at = 0; at < value.size(); ++at) {
    for (const char stray : {'\r', '\n'}) {
      std::string v = value;
      v[at] = stray;
      const std::string input = "GET / HTTP/1.1\r\nHost: h\r\nX-Long: " + v + "\r\n\r\n";
      INFO("offset " << at << (stray == '\r' ? " CR" : " LF"));
      const Outcome out = parse(input);
      CHECK(out.status == 400);
      CHECK(out.requests.empty());
      CHECK(out.reason.find(stray == '\r' ? "bare CR" : "bare LF") != std::string::npos);
    }
  }
  const Outcome clean = parse("GET / HTTP/1.1\r\nHost: h\r\nX-Long: " + value + "\r\n\r\n");
  REQUIRE(clean.requests.size() == 1);
  CHECK(clean.status == 0);
}

TEST_CASE("HttpRequestParser: CVE-2024-27982, an obs-folded Content-Length is not honoured",
          "[protocols][http_parser][cve]") {
  // llhttp 8.1 reads "Content-Length:\r\n 5" as Content-Length 5, where a front end that
  // ignores or joins the fold sees no length: the body would be a smuggled request.
  const std::vector<std::string> inputs = {
      "POST / HTTP/1.1\r\nHost: h\r\nContent-Length:\r\n 5\r\n\r\nhello",
      "POST / HTTP/1.1\r\nHost: h\r\nContent-Length:\r\n\t5\r\n\r\nhello",
      "POST / HTTP/1.1\r\nHost: h\r\n Content-Length: 5\r\n\r\nhello",
      "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n",
  };
  for (const std::string& input : inputs) {
    INFO(input);
    const Outcome out = parse_every_way(input);
    CHECK(out.status == 400);
    CHECK(out.requests.empty());
    CHECK(out.reason.find("obs-fold") != std::string::npos);
  }
}

TEST_CASE("HttpRequestParser: CVE-2024-22019, chunk extensions are bounded (413)",
          "[protocols][http_parser][cve]") {
  HttpParserLimits limits;
  limits.max_chunk_extension_bytes = 100;
  const std::string head = "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n";

  SECTION("one long extension") {
    const Outcome out =
        parse_every_way(head + "1;ext=" + std::string(1000, 'x') + "\r\na\r\n0\r\n\r\n", limits);
    CHECK(out.status == 413);
    CHECK(out.reason == "chunk extensions too long");
  }
  SECTION("an endless extension fails at the limit, without waiting for its end") {
    Outcome out;
    Recorder recorder(out);
    HttpRequestParser parser(recorder, limits);
    parser.feed(bytes_of(head));
    const std::string endless = "1;ext=" + std::string(100000, 'x');
    const std::size_t n = parser.feed(bytes_of(endless));
    CHECK(parser.error_status() == 413);
    CHECK(n <= 100 + 18);
  }
  SECTION("small extensions on many chunks add up") {
    std::string input = head;
    for (int i = 0; i < 30; ++i) input += "1;abcd=ef\r\nz\r\n";  // 8 extension bytes each
    const Outcome out = parse_every_way(input + "0\r\n\r\n", limits);
    CHECK(out.status == 413);
  }
  SECTION("endless leading zeros are bounded the same way") {
    CHECK(status_of(head + std::string(500, '0') + "1\r\na\r\n0\r\n\r\n", limits) == 413);
  }
  SECTION("extensions within the limit are accepted") {
    std::string input = head;
    for (int i = 0; i < 10; ++i) input += "1;abcd=ef\r\nz\r\n";
    const Outcome out = parse_every_way(input + "0;last\r\n\r\n", limits);
    REQUIRE(out.requests.size() == 1);
    CHECK(out.requests[0].body == std::string(10, 'z'));
  }
}

// ---- the simple-head path --------------------------------------------------------------------
// A head of the common simple shape, fed whole, is read without llhttp (http_parser.cpp, "The
// simple-head path"). parse_every_way() compares the whole parse with byte-by-byte and random
// splits, which never hold a whole head and so always go through llhttp: every test above is
// also a comparison of the two paths. The ones here change each byte of a simple head in turn.

namespace {

/// How many of @p input's requests, fed whole, were read by the simple-head path.
std::uint64_t simple_heads_of(std::string_view input, HttpParserLimits limits = {}) {
  Outcome out;
  Recorder recorder(out);
  HttpRequestParser parser(recorder, limits);
  std::string_view rest = input;
  for (;;) {
    rest.remove_prefix(parser.feed(bytes_of(rest)));
    if (!parser.is_paused()) return parser.simple_heads();
    parser.resume();
  }
}

}  // namespace

TEST_CASE("HttpRequestParser: common heads fed whole are read without llhttp, as llhttp reads them",
          "[protocols][http_parser]") {
  const std::string_view wrk = "GET /plaintext HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n";
  CHECK(simple_heads_of(wrk) == 1);
  const Outcome out = parse_every_way(wrk);
  REQUIRE(out.requests.size() == 1);
  CHECK(out.requests[0].target == "/plaintext");
  CHECK(out.requests[0].headers ==
        std::vector<std::pair<std::string, std::string>>{{"Host", "127.0.0.1:8080"}});

  const std::string_view browser =
      "GET /static/app.js?v=3&x=%20y HTTP/1.1\r\nHost: localhost\r\n"
      "User-Agent: Mozilla/5.0 (X11; Linux x86_64)\r\nAccept: */*\r\n"
      "Accept-Language: en-GB,en;q=0.9\r\nCookie: a=1; b=2\r\nX-Empty:\r\n"
      "X-Spaces: \t inner  words \t \r\nConnection: keep-alive\r\n\r\n";
  CHECK(simple_heads_of(browser) == 1);
  const Outcome b = parse_every_way(browser);
  REQUIRE(b.requests.size() == 1);
  CHECK(header_value(b.requests[0], "x-empty").empty());
  CHECK(header_value(b.requests[0], "x-spaces") == "inner  words");
  CHECK(b.requests[0].query == "v=3&x=%20y");

  // Every method of the shape; HTTP/1.0; Connection of one token, in any case.
  for (const std::string_view method : {"GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH"}) {
    const std::string input = std::string(method) + " /m HTTP/1.1\r\nHost: h\r\n\r\n";
    CHECK(simple_heads_of(input) == 1);
    const Outcome m = parse_every_way(input);
    REQUIRE(m.requests.size() == 1);
    CHECK(m.requests[0].method == method);
  }
  CHECK(simple_heads_of("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n") == 1);
  CHECK(simple_heads_of("GET / HTTP/1.1\r\nHost: h\r\nconnection:CLOSE \r\n\r\n") == 1);
  CHECK_FALSE(parse_every_way("GET / HTTP/1.1\r\nHost: h\r\nconnection:CLOSE \r\n\r\n")
                  .requests.at(0)
                  .keep_alive);

  // Pipelined: each head read whole in turn, a request with a body in between through llhttp.
  std::string pipelined;
  for (int i = 0; i < 10; ++i) {
    pipelined += "GET /p/" + std::to_string(i) + " HTTP/1.1\r\nHost: h\r\n\r\n";
    if (i == 4) pipelined += "POST /b HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc";
  }
  CHECK(simple_heads_of(pipelined) == 10);
  CHECK(parse_every_way(pipelined).requests.size() == 11);
}

TEST_CASE("HttpRequestParser: heads outside the simple shape go to llhttp and parse the same",
          "[protocols][http_parser]") {
  // Each is a request llhttp accepts (or refuses) that the simple-head path leaves to it.
  for (const std::string_view input : {
           "POST /b HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n",
           "POST /b HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
           "GET / HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
           "GET / HTTP/1.1\r\nHost: h\r\nProxy-Connection: close\r\n\r\n",
           "GET / HTTP/1.1\r\nHost: h\r\nConnection: keep-alive, close\r\n\r\n",
           "GET / HTTP/1.1\r\nHost: h\r\nX-Latin: caf\xe9\r\n\r\n",
           "GET /a#frag HTTP/1.1\r\nHost: h\r\n\r\n",
           "GET /{x}|[y] HTTP/1.1\r\nHost: h\r\n\r\n",
           "OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n",
           "GET http://h/abs HTTP/1.1\r\nHost: h\r\n\r\n",
           "PROPFIND /dav HTTP/1.1\r\nHost: h\r\n\r\n",
           "\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n",
           "GET / HTTP/1.1\r\nHost: h\r\n",  // incomplete
       }) {
    CAPTURE(input);
    CHECK(simple_heads_of(input) == 0);
    parse_every_way(input);
  }
  // Refused after a simple read, by the checks both paths share.
  CHECK(status_of("GET / HTTP/1.1\r\n\r\n") == 400);                      // no Host
  CHECK(status_of("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n") == 400);  // two
  // At the header limit exactly the simple path reads it; one byte over, llhttp refuses it.
  HttpParserLimits limits;
  limits.max_header_bytes = 64;
  std::string at_limit = "GET / HTTP/1.1\r\nHost: h\r\nX-Pad: ";
  at_limit += std::string(64 - at_limit.size() - 4, 'p') + "\r\n\r\n";
  CHECK(simple_heads_of(at_limit, limits) == 1);
  CHECK(parse_every_way(at_limit, limits).requests.size() == 1);
  CHECK(status_of(at_limit.substr(0, 33) + "p" + at_limit.substr(33), limits) == 431);
}

TEST_CASE("HttpRequestParser: every byte value in every part of a simple head parses as llhttp "
          "parses it",
          "[protocols][http_parser]") {
  // One simple head; each marked place (a '@') takes every byte value in turn, and the whole
  // parse (the simple path when the head stays in its shape) must equal llhttp's. A second
  // request follows, so that a different keep-alive shows as a different count.
  const std::string_view templ =
      "@ET /a@b?c@d HTTP/1.@\r\nHost: h\r\nX-N@me: v@lue@\r\nConnection: @lose@\r\n@\n"
      "GET /next HTTP/1.1\r\nHost: h\r\n\r\n";
  std::vector<std::size_t> places;
  for (std::size_t i = 0; i < templ.size(); ++i) {
    if (templ[i] == '@') places.push_back(i);
  }
  const std::string plain = [&] {
    std::string s(templ);
    const std::string_view fill = "Gxy1aasc \r";  // per place: a byte that keeps the shape
    for (std::size_t k = 0; k < places.size(); ++k) s[places[k]] = fill[k];
    return s;
  }();
  REQUIRE(simple_heads_of(plain) == 1);  // "Connection: close": the second is not read
  std::uint64_t simple = 0;
  for (const std::size_t place : places) {
    for (int c = 0; c < 256; ++c) {
      std::string input = plain;
      input[place] = static_cast<char>(c);
      CAPTURE(place, c);
      const Outcome whole = parse(input);
      const Outcome bytewise = parse_bytewise(input);
      REQUIRE(whole == bytewise);
      simple += simple_heads_of(input);
    }
  }
  // The shape admits most bytes in most places: the simple path was taken, and often.
  CHECK(simple > 400);
}

TEST_CASE("HttpRequestParser: every byte value at every place of a long target parses as llhttp "
          "parses it",
          "[protocols][http_parser]") {
  // The simple path scans a target sixteen bytes at a time while sixteen remain: each byte
  // value at each lane of the first blocks of the path and of the query, and at the ends.
  const std::string path = "/" + std::string(40, 'p');
  const std::string query = std::string(40, 'q');
  const std::string head_end = " HTTP/1.1\r\nHost: h\r\n\r\nGET /next HTTP/1.1\r\nHost: h\r\n\r\n";
  const std::string plain = "GET " + path + "?" + query + head_end;
  REQUIRE(simple_heads_of(plain) == 2);
  const std::size_t path_at = 4;
  const std::size_t query_at = path_at + path.size() + 1;
  // RFC 3986: pchar and '/' in the path; '?' too in the query.
  const auto allowed = [](int c, bool in_query) {
    const std::string_view marks = "-._~!$&'()*+,;=:@/%";
    return std::isalnum(c) != 0 || (c != 0 && marks.find(static_cast<char>(c)) != marks.npos) ||
           (in_query && c == '?');
  };
  for (const std::size_t from : {path_at + 1, query_at}) {
    for (std::size_t lane = 0; lane < 40; ++lane) {
      for (int c = 0; c < 256; ++c) {
        std::string input = plain;
        input[from + lane] = static_cast<char>(c);
        CAPTURE(from, lane, c);
        const Outcome whole = parse(input);
        const Outcome bytewise = parse_bytewise(input);
        REQUIRE(whole == bytewise);
        // A byte of the target's grammar keeps both heads on the simple path.
        if (allowed(c, from == query_at)) REQUIRE(simple_heads_of(input) == 2);
      }
    }
  }
}

TEST_CASE("HttpRequestParser: keep-alive is decided as llhttp decides it, whichever path reads "
          "the head",
          "[protocols][http_parser]") {
  // llhttp skips spaces after a Connection token, but not a tab: "close\t" is no "close" to
  // it. The simple path leaves a Connection value with a tab after it to llhttp.
  for (const std::string_view head : {
           "GET / HTTP/1.0\r\nConnection: keep-alive\t\r\n\r\n",
           "GET / HTTP/1.0\r\nConnection: keep-alive \t \r\n\r\n",
           "GET / HTTP/1.1\r\nHost: h\r\nConnection: close\t\r\n\r\n",
           "GET / HTTP/1.1\r\nHost: h\r\nConnection: close \t\r\n\r\n",
       }) {
    const std::string input = std::string(head) + "GET /second HTTP/1.1\r\nHost: h\r\n\r\n";
    CAPTURE(input);
    parse_every_way(input);
  }
  // Whitespace before the token, and spaces after it, are skipped by both.
  for (const std::string_view head : {
           "GET / HTTP/1.0\r\nConnection:\tkeep-alive\r\n\r\n",
           "GET / HTTP/1.0\r\nConnection: \t keep-alive   \r\n\r\n",
       }) {
    const std::string input = std::string(head) + "GET /second HTTP/1.1\r\nHost: h\r\n\r\n";
    CAPTURE(input);
    CHECK(simple_heads_of(input) == 2);
    const Outcome out = parse_every_way(input);
    REQUIRE(out.requests.size() == 2);
    CHECK(out.requests[0].keep_alive);
  }

  // A Connection field in a chunked request's trailers does not end the connection (the head
  // decided keep-alive; RFC 9110 §6.5.1 keeps such fields out of trailers). llhttp would note
  // it and refuse what follows; it starts every request afresh instead, so that the requests
  // after it parse the same whether the simple path or llhttp reads them.
  const std::string trailer_close =
      "POST /1 HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
      "0\r\nConnection: close\r\n\r\n"
      "GET /2 HTTP/1.1\r\nHost: h\r\n\r\n"
      "POST /3 HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\n\r\nx";
  const Outcome out = parse_every_way(trailer_close);
  REQUIRE(out.requests.size() == 3);
  CHECK(out.requests[0].trailers ==
        std::vector<std::pair<std::string, std::string>>{{"Connection", "close"}});
  CHECK(out.requests[2].body == "x");
  CHECK(out.state == State::idle);

  // HTTP/1.0 keep-alive, read simply, then a request with a body, read by llhttp.
  const Outcome mixed = parse_every_way(
      "GET /a HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"
      "POST /b HTTP/1.0\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nab"
      "GET /c HTTP/1.0\r\n\r\n");
  REQUIRE(mixed.requests.size() == 3);
  CHECK(mixed.requests[1].body == "ab");
  CHECK(mixed.state == State::closed);
}

// ---- callbacks and allocation ----------------------------------------------------------------

TEST_CASE("HttpRequestParser: a throwing callback fails the parser with 500 and propagates",
          "[protocols][http_parser]") {
  struct Throwing final : HttpRequestParser::Callbacks {
    bool in_body = false;
    void headers_received(const HttpRequest&) override {
      if (!in_body) throw std::runtime_error("head");
    }
    void body_received(std::span<const std::byte>) override { throw std::runtime_error("body"); }
    void request_received(const HttpRequest&) override {}
  };
  {
    Throwing t;
    HttpRequestParser parser(t);
    CHECK_THROWS_WITH(parser.feed(bytes_of("GET / HTTP/1.1\r\nHost: h\r\n\r\n")), "head");
    CHECK(parser.error_status() == 500);
    CHECK(parser.feed(bytes_of("GET / HTTP/1.1\r\nHost: h\r\n\r\n")) == 0);
  }
  {
    Throwing t;
    t.in_body = true;
    HttpRequestParser parser(t);
    CHECK_THROWS_WITH(
        parser.feed(bytes_of("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\nab")),
        "body");
    CHECK(parser.error_status() == 500);
  }
}

TEST_CASE("HttpRequestParser: feeding from inside a callback is refused",
          "[protocols][http_parser]") {
  struct Reentrant final : HttpRequestParser::Callbacks {
    HttpRequestParser* parser = nullptr;
    void headers_received(const HttpRequest&) override {
      parser->feed(bytes_of("GET / HTTP/1.1\r\n"));
    }
    void body_received(std::span<const std::byte>) override {}
    void request_received(const HttpRequest&) override {}
  } r;
  HttpRequestParser parser(r);
  r.parser = &parser;
  CHECK_THROWS_AS(parser.feed(bytes_of("GET / HTTP/1.1\r\nHost: h\r\n\r\n")),
                  strata::InvalidStateError);
  CHECK(parser.has_failed());
}

TEST_CASE("HttpRequestParser: a connection's later requests allocate nothing",
          "[protocols][http_parser]") {
  if (!STRATA_TEST_COUNT_ALLOCATIONS) {
    WARN("allocations are not counted under a sanitizer; skipped");
    return;
  }
  struct Counting final : HttpRequestParser::Callbacks {
    std::size_t requests = 0, body = 0;
    void headers_received(const HttpRequest&) override {}
    void body_received(std::span<const std::byte> d) override { body += d.size(); }
    void request_received(const HttpRequest&) override { ++requests; }
  } counting;
  HttpRequestParser parser(counting);
  const std::string request =
      "POST /plaintext?x=1 HTTP/1.1\r\nHost: localhost:8080\r\nUser-Agent: wrk\r\n"
      "Accept: text/plain\r\nConnection: keep-alive\r\nContent-Length: 4\r\n\r\nbody"
      "GET /json HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n"
      "2;e=1\r\nab\r\n0\r\nTrailer-Field: t\r\n\r\n";
  auto run = [&](std::string_view input) {
    std::span<const std::byte> rest = bytes_of(input);
    while (!rest.empty()) {
      rest = rest.subspan(parser.feed(rest));
      REQUIRE(parser.is_paused());
      parser.resume();
    }
  };
  run(request);  // warms the buffers up
  const std::uint64_t before = allocations.load();
  for (int i = 0; i < 100; ++i) run(request);
  CHECK(allocations.load() - before == 0);
  CHECK(counting.requests == 202);
}

TEST_CASE("HttpRequestParser: heads swapped out to a server's storage allocate nothing",
          "[protocols][http_parser]") {
  if (!STRATA_TEST_COUNT_ALLOCATIONS) {
    WARN("allocations are not counted under a sanitizer; skipped");
    return;
  }
  // Four storages taken in turn, as a server's recycled request slots: buffers circulate
  // between them and the parser, each keeping its capacity.
  struct Swapping final : HttpRequestParser::Callbacks {
    HttpRequestParser* parser = nullptr;
    std::array<strata::HttpHeadStorage, 4> storages;
    std::size_t next = 0;
    std::size_t checked = 0;
    void headers_received(const HttpRequest& r) override {
      parser->swap_head(storages[next++ % storages.size()]);
      if (r.headers().get("host").has_value()) ++checked;
    }
    void body_received(std::span<const std::byte>) override {}
    void request_received(const HttpRequest&) override {}
  } swapping;
  HttpRequestParser parser(swapping);
  swapping.parser = &parser;
  parser.set_views_into_input(GENERATE(false, true));  // copied when read, or when swapped
  const std::string request =
      "GET /plaintext HTTP/1.1\r\nHost: localhost:8080\r\nUser-Agent: wrk\r\n\r\n"
      "GET / HTTP/1.1\r\nHost: h\r\n\r\n"
      "GET /json?pretty=1 HTTP/1.1\r\nHost: localhost\r\nAccept: application/json\r\n\r\n"
      "POST /form HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\nok";  // read by llhttp
  auto run = [&] {
    std::span<const std::byte> rest = bytes_of(request);
    while (!rest.empty()) {
      rest = rest.subspan(parser.feed(rest));
      REQUIRE(parser.is_paused());
      parser.resume();
    }
  };
  for (int i = 0; i < 8; ++i) run();  // warms every buffer up
  const std::uint64_t before = allocations.load();
  for (int i = 0; i < 100; ++i) run();
  CHECK(allocations.load() - before == 0);
  CHECK(swapping.checked == 432);
  CHECK(parser.simple_heads() == 324);
}
