// Fuzz target http_parser: HttpRequestParser's two ways of reading a head. A head of the common
// simple shape that arrives whole is read without llhttp (http_parser.cpp, "The simple-head
// path"); any other head, and any head that arrives in pieces, is read by llhttp. The input is
// parsed three times with the same limits: fed whole (each simple head by the simple path),
// byte by byte and in input-chosen pieces (never a whole head: always llhttp).
//
// What it checks: the three parses agree on everything a caller can see: each request's
// method, target, path, query, version, fields in order, trailers, body, keep-alive, Expect
// and framing (Content-Length, chunked); the callback sequence; the final state, error status
// and reason; the bytes left unconsumed. So the simple path reads exactly what llhttp reads,
// refuses nothing llhttp accepts without the same reason, and accepts nothing it refuses.
//
// Input: 2 configuration bytes, then the bytes a client sends.
//   [0] bits 0-3: max_header_bytes = 24 + 24 n; bits 4-5: max_body_bytes = 1, 16, 256, 1 MiB.
//   [1] seed of the piece sizes (1..16 bytes).
#include <strata/protocols/http_parser.hpp>

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "fuzz_support.hpp"

namespace {

using strata::HttpParserLimits;
using strata::HttpRequest;
using strata::HttpRequestParser;
using namespace strata_fuzz;

using Fields = std::vector<std::pair<std::string, std::string>>;

Fields copy_fields(const strata::HttpHeaders& h) {
  Fields out;
  for (const auto& f : h) out.emplace_back(std::string(f.name), std::string(f.value));
  return out;
}

/// Everything a caller of the parser can see, as text: one line per callback.
class Transcript final : public HttpRequestParser::Callbacks {
 public:
  std::string text;

  void headers_received(const HttpRequest& r) override {
    text += "headers " + std::string(r.method()) + " " + std::string(r.target()) + " path=" +
            std::string(r.path()) + " query=" + std::string(r.query()) + " " +
            std::to_string(r.version_major()) + "." + std::to_string(r.version_minor()) +
            " keep_alive=" + std::to_string(r.keep_alive()) +
            " continue=" + std::to_string(r.expects_continue()) +
            " chunked=" + std::to_string(r.is_chunked()) + " length=" +
            (r.content_length() ? std::to_string(*r.content_length()) : "none") + "\n";
    for (const auto& [name, value] : copy_fields(r.headers())) text += " " + name + ": " + value + "\n";
    in_body_ = false;
  }
  void body_received(std::span<const std::byte> data) override {
    // Folded into one line per request: how llhttp cuts a body depends on the pieces.
    if (!in_body_) text += "body ";
    in_body_ = true;
    text.append(reinterpret_cast<const char*>(data.data()), data.size());
  }
  void request_received(const HttpRequest& r) override {
    if (in_body_) text += "\n";
    in_body_ = false;
    text += "request\n";
    for (const auto& [name, value] : copy_fields(r.trailers())) text += " " + name + ": " + value + "\n";
  }

 private:
  bool in_body_ = false;
};

/// Feeds @p input in pieces of the sizes @p next_piece gives, as a server would: unconsumed
/// bytes are kept, each complete request is followed by resume(), the end is an EOF.
template <class NextPiece>
std::string parse(std::string_view input, HttpParserLimits limits, NextPiece next_piece,
                  std::uint64_t* simple_heads = nullptr) {
  Transcript transcript;
  HttpRequestParser parser(transcript, limits);
  std::string pending;
  std::size_t at = 0;
  for (;;) {
    const std::size_t piece = std::min(next_piece(), input.size() - at);
    pending.append(input.substr(at, piece));
    at += piece;
    for (;;) {
      pending.erase(0, parser.feed(std::as_bytes(std::span(pending.data(), pending.size()))));
      if (!parser.is_paused()) break;
      parser.resume();
    }
    if (at == input.size()) break;
  }
  parser.feed_eof();
  if (simple_heads != nullptr) *simple_heads = parser.simple_heads();
  return transcript.text + "state " + std::to_string(static_cast<int>(parser.state())) + " " +
         std::to_string(parser.error_status()) + " " + std::string(parser.error_reason()) +
         " left " + std::to_string(parser.has_failed() ? pending.size() : 0) + "\n";
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 2) return 0;
  HttpParserLimits limits;
  limits.max_header_bytes = 24 + 24 * static_cast<std::size_t>(data[0] & 0x0f);
  static constexpr std::uint64_t body_limits[] = {1, 16, 256, 1024 * 1024};
  limits.max_body_bytes = body_limits[(data[0] >> 4) & 3];
  Prng rng(data[1] + 1);
  const std::string_view input(reinterpret_cast<const char*>(data + 2), size - 2);

  std::uint64_t simple_heads = 0;
  const std::string whole = parse(input, limits, [&] { return input.size(); }, &simple_heads);
  const std::string bytewise = parse(input, limits, [] { return std::size_t{1}; });
  const std::string pieces =
      parse(input, limits, [&] { return rng.between(1, 16); });
  check(whole == bytewise, "fed whole and byte by byte, the parses differ",
        "input " + show_bytes(input) + "\nsimple heads " + std::to_string(simple_heads) +
            "\n--- whole:\n" + whole + "--- byte by byte:\n" + bytewise);
  check(pieces == bytewise, "fed in pieces and byte by byte, the parses differ",
        "input " + show_bytes(input) + "\n--- pieces:\n" + pieces + "--- byte by byte:\n" + bytewise);
  return 0;
}
