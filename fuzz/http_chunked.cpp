// Fuzz target http_chunked: chunked request bodies. The HTTP server protocol is sent a fixed,
// valid head (`POST /echo HTTP/1.1`, `Transfer-Encoding: chunked`) followed by the input as
// the body, cut into chunks whose sizes a hash of the input chooses, then the client's EOF.
// POST /echo answers with the body it received.
//
// What it checks: the first response against a reference decoding of the chunked coding
// written here from RFC 9112 §7.1 and the documented limits (HttpRequestParser), independent of
// llhttp:
// - a valid body (chunk-size lines of hex digits with simple extensions `;name` or a final
//   `;name=value`, CRLF after each chunk's data, a last chunk, token-named trailer fields,
//   the final CRLF) gets 200 and the echo equals the decoded body;
// - an invalid one gets 400 (a size line that does not start with a hex digit or goes on with
//   anything but ';' or CR, a CR without LF, chunk data not followed by CRLF, a malformed
//   trailer line, obs-fold, an empty trailer name) and one cut short by the EOF gets 400;
// - a body over max_body_bytes (1024), decided from the chunk sizes, gets 413, as do chunk
//   extensions over max_chunk_extension_bytes (64, counted as the parser documents: every
//   byte of a size line beyond the size's shortest hex form and the CRLF); a trailer section
//   of max_header_bytes (256) or more without its end gets 431.
// Where the reference is not sure what llhttp makes of a shape (quoted extension values,
// white space, several extensions with values, obs-text, framing fields in trailers) it
// allows 400 besides its own decoding. Every response must also be well-formed, as in
// http_server.
//
// Input: the bytes after the head. No configuration prefix, so that any chunked body (say,
// one copied from a capture) is an input as it is.
#include <strata/core/coro.hpp>
#include <strata/protocols/http_parser.hpp>
#include <strata/protocols/http_server.hpp>

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <set>
#include <span>
#include <string>
#include <string_view>

#include "fuzz_support.hpp"
#include "http_harness.hpp"

namespace {

using strata::Coro;
using strata::HttpResponse;
using strata::HttpServerRequest;
using namespace strata_fuzz;

constexpr std::string_view head =
    "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n";
constexpr std::size_t max_header_bytes = 256;
constexpr std::uint64_t max_body_bytes = 1024;
constexpr std::size_t max_extension_bytes = 64;

const strata::HttpRouter& router() {
  static const strata::HttpRouter r = [] {
    strata::HttpRouter router;
    router.post("/echo", [](HttpServerRequest& req) -> Coro<HttpResponse> {
      HttpResponse r;
      r.body = std::string(req.body());
      co_return r;
    });
    return router;
  }();
  return r;
}

// ---- The reference decoding --------------------------------------------------------------------

/// What the reference expects of the first response.
struct Verdict {
  int status = 0;                 // 200, 400, 413 or 431
  std::set<int> also;             // statuses allowed as well, where the reference is unsure
  std::string body;               // for 200: the decoded body
  std::string why;                // the reference's reason, for the failure message
};

bool is_hex(char c) {
  return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}
int hex_value(char c) {
  return c <= '9' ? c - '0' : (c | 0x20) - 'a' + 10;
}
/// Digits of @p v in hex without leading zeros (1 for 0).
std::size_t hex_digits(std::uint64_t v) {
  std::size_t n = 1;
  while (v >>= 4) ++n;
  return n;
}
/// A control byte that no part of a chunk-size line or a field line may hold (HTAB aside).
bool is_ctl(unsigned char c) { return (c < 0x20 && c != '\t') || c == 0x7f; }

/// Whether @p ext (what follows the size digits, up to the CR) is `(;token)*` optionally ending
/// in `;token=token`: the shapes llhttp's strict mode is known to accept.
bool simple_extensions(std::string_view ext) {
  while (!ext.empty()) {
    if (ext.front() != ';') return false;
    ext.remove_prefix(1);
    std::size_t n = 0;
    while (n < ext.size() && detail::is_tchar(ext[n])) ++n;
    if (n == 0) return false;
    ext.remove_prefix(n);
    if (!ext.empty() && ext.front() == '=') {
      ext.remove_prefix(1);
      std::size_t v = 0;
      while (v < ext.size() && detail::is_tchar(ext[v])) ++v;
      return v > 0 && v == ext.size();  // a value only on the last extension
    }
  }
  return true;
}

Verdict decode(std::string_view in) {
  Verdict v;
  auto done = [&](int status, std::string why) {
    v.status = status;
    v.why = std::move(why);
    return v;
  };
  auto incomplete = [&](std::string why) { return done(400, "cut short by EOF: " + why); };
  std::size_t pos = 0;
  std::size_t extension_bytes = 0;
  std::uint64_t body_bytes = 0;

  for (;;) {
    // ---- chunk-size line. llhttp is given at most line_cap bytes of it: a line that has not
    // ended by then is a 413, and so is a problem at or past that offset.
    const std::size_t line_start = pos;
    const std::size_t line_cap = max_extension_bytes - extension_bytes + 18;
    auto line_problem = [&](std::size_t at, std::string why) {
      if (at - line_start >= line_cap) return done(413, "size line reaches the cap");
      return done(400, std::move(why));
    };
    auto line_cut = [&](std::string why) {
      if (in.size() - line_start >= line_cap) return done(413, "size line reaches the cap");
      return incomplete(std::move(why));
    };
    std::size_t digits = 0;
    while (pos + digits < in.size() && is_hex(in[pos + digits])) ++digits;
    std::size_t zeros = 0;
    while (zeros < digits && in[pos + zeros] == '0') ++zeros;
    if (digits - zeros > 16) return line_problem(pos + zeros + 16, "chunk size over 64 bits");
    if (pos + digits == in.size()) return line_cut("in the size digits");
    if (digits == 0) return line_problem(pos, "size line without a hex digit");
    std::uint64_t size = 0;
    for (std::size_t i = zeros; i < digits; ++i) size = size * 16 + hex_value(in[pos + i]);
    pos += digits;
    if (in[pos] != '\r' && in[pos] != ';') {
      return line_problem(pos, "size digits followed by neither ';' nor CR");
    }
    const std::size_t cr = std::min(in.find_first_of("\r\n", pos), in.size());
    if (!simple_extensions(in.substr(pos, cr - pos))) v.also.insert(400);  // llhttp may refuse it
    if (cr == in.size()) return line_cut("in the size line");
    if (in[cr] == '\n') return line_problem(cr, "bare LF ends a size line");
    if (cr + 1 == in.size()) return line_cut("after the size line's CR");
    if (in[cr + 1] != '\n') return line_problem(cr + 1, "CR without LF in a size line");
    if (cr + 1 - line_start >= line_cap) return done(413, "size line reaches the cap");
    extension_bytes += cr + 2 - line_start - (hex_digits(size) + 2);
    if (extension_bytes > max_extension_bytes) return done(413, "chunk extensions over the limit");
    pos = cr + 2;

    if (size == 0) break;
    if (size > max_body_bytes - body_bytes) return done(413, "chunk sizes over max_body_bytes");
    body_bytes += size;

    // ---- chunk data and its CRLF
    if (in.size() - pos < size) return incomplete("in chunk data");
    v.body += in.substr(pos, size);
    pos += size;
    if (pos == in.size()) return incomplete("after chunk data");
    if (in[pos] != '\r') return done(400, "chunk data not followed by CR");
    if (pos + 1 == in.size()) return incomplete("after chunk data's CR");
    if (in[pos + 1] != '\n') return done(400, "chunk data followed by CR without LF");
    pos += 2;
  }

  // ---- trailer section: the first problem at offset k is a 400 if k < max_header_bytes,
  // else the section is a 431 (the parser looks at no byte past its limit).
  const std::size_t section = pos;
  auto problem = [&](std::size_t at, std::string why) {
    if (at - section >= max_header_bytes) return done(431, "trailer section over the limit");
    return done(400, std::move(why));
  };
  for (;;) {
    if (pos == in.size()) {
      if (pos - section >= max_header_bytes) return done(431, "trailer section over the limit");
      return incomplete("in the trailer section");
    }
    if (in[pos] == '\r') {  // the empty line that ends the section
      if (pos + 1 == in.size()) {
        if (pos + 1 - section >= max_header_bytes) return done(431, "trailer section over the limit");
        return incomplete("after the final CR");
      }
      if (in[pos + 1] != '\n') return problem(pos + 1, "final CR without LF");
      if (pos + 2 - section > max_header_bytes) return done(431, "trailer section over the limit");
      v.status = 200;
      v.why = "complete";
      return v;
    }
    if (in[pos] == ' ' || in[pos] == '\t') return problem(pos, "obs-fold in trailers");
    std::size_t name = 0;
    while (pos + name < in.size() && detail::is_tchar(in[pos + name])) ++name;
    if (pos + name == in.size()) {
      if (in.size() - section >= max_header_bytes) return done(431, "trailer section over the limit");
      return incomplete("in a trailer name");
    }
    if (in[pos + name] != ':') return problem(pos + name, "trailer name not a token followed by ':'");
    if (name == 0) return problem(pos, "empty trailer name");
    const std::string_view field = in.substr(pos, name);
    for (std::string_view special : {"content-length", "transfer-encoding", "connection", "upgrade",
                                     "proxy-connection", "keep-alive"}) {
      if (strata::http_iequals(field, special)) v.also.insert(400);  // llhttp may interpret it
    }
    pos += name + 1;
    for (; pos < in.size() && in[pos] != '\r' && in[pos] != '\n'; ++pos) {
      const auto c = static_cast<unsigned char>(in[pos]);
      if (c >= 0x80 || c == 0x7f) {
        v.also.insert(400);  // obs-text, DEL: llhttp's choice
      } else if (is_ctl(c)) {
        return problem(pos, "control byte in a trailer value");
      }
    }
    if (pos == in.size()) {
      if (pos - section >= max_header_bytes) return done(431, "trailer section over the limit");
      return incomplete("in a trailer value");
    }
    if (in[pos] == '\n') return problem(pos, "bare LF in trailers");
    if (pos + 1 == in.size()) {
      if (pos + 1 - section >= max_header_bytes) return done(431, "trailer section over the limit");
      return incomplete("after a trailer line's CR");
    }
    if (in[pos + 1] != '\n') return problem(pos + 1, "CR without LF in trailers");
    pos += 2;
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view body(reinterpret_cast<const char*>(data), size);
  const std::string request = std::string(head) + std::string(body);
  const auto bytes = std::as_bytes(std::span(request.data(), request.size()));
  const std::uint64_t seed = hash(std::span(data, size));
  const std::size_t max_chunk = std::array<std::size_t, 4>{request.size(), 1, 7, 64}[seed & 3];
  Prng prng(seed >> 2);

  strata::HttpServerSettings settings;
  settings.limits.max_header_bytes = max_header_bytes;
  settings.limits.max_body_bytes = max_body_bytes;
  settings.limits.max_chunk_extension_bytes = max_extension_bytes;
  loop_exceptions.clear();
  strata::HttpServer server(router(), settings);
  FakeTransport t(server.make_connection(), 64 * 1024, 16 * 1024);
  t.open();
  std::size_t pos = 0;
  while (pos < bytes.size() && t.can_receive()) {
    const std::size_t n = std::min(prng.between(1, max_chunk), bytes.size() - pos);
    t.receive(bytes.subspan(pos, n));
    pos += n;
    run_until_idle();
    t.take(SIZE_MAX);
  }
  run_until_idle();
  if (t.can_receive()) t.receive_eof();
  run_until_idle();
  t.take(SIZE_MAX);
  run_until_idle();

  const Verdict verdict = decode(body);
  const ParsedStream parsed =
      parse_responses(t.sent(), [](std::size_t, int) { return false; }, t.close_called());
  const std::string context = "reference: " + std::to_string(verdict.status) + " (" + verdict.why +
                              "), body " + show_bytes(verdict.body, 200) + "\nsent: " +
                              show_bytes(t.sent(), 1500);
  check(parsed.error.empty(), "the server wrote a malformed response", parsed.error + "\n" + context);
  const auto finals = final_responses(parsed);
  check(!finals.empty(), "no response to the request", context);
  const ParsedResponse& first = *finals.front();
  check(first.status == verdict.status || verdict.also.count(first.status) != 0,
        "the status differs from the reference's", context);
  if (first.status == 200) {
    check(first.body == verdict.body, "the echo differs from the reference's decoding", context);
  } else {
    check(first.closes(), "an error response without Connection: close", context);
  }
  check(loop_exceptions.empty(), "an exception reached the loop", loop_exceptions.empty() ? "" : loop_exceptions[0]);
  t.finish();
  check(server.connection_count() == 0, "the server still counts the connection");
  return 0;
}
