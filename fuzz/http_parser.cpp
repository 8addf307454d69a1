// Fuzz target http_parser: HttpRequestParser's two ways of reading a head. A head of the common
// simple shape that arrives whole is read without llhttp (http_parser.cpp, "The simple-head
// path"); any other head, and any head that arrives in pieces, is read by llhttp. The input is
// parsed four times with the same limits: fed whole (each simple head by the simple path),
// fed whole with the heads viewed in the input (HttpRequestParser::set_views_into_input(), as
// the server parses), byte by byte and in input-chosen pieces (never a whole head: always
// llhttp).
//
// What it checks: the four parses agree on everything a caller can see: each request's
// method, target, path, query, version, fields in order, trailers, body, keep-alive, Expect
// and framing (Content-Length, chunked); the callback sequence; the final state, error status
// and reason; the bytes left unconsumed. So the simple path reads exactly what llhttp reads,
// refuses nothing llhttp accepts without the same reason, and accepts nothing it refuses.
//
// Input: 2 configuration bytes, then the bytes a client sends, or a script that builds them.
//   [0] bits 0-3: max_header_bytes = 24 + 24 n; bits 4-5: max_body_bytes = 1, 16, 256, 1 MiB;
//       bit 6: the rest is a script (below), not the bytes themselves.
//   [1] seed of the piece sizes (1..16 bytes).
// A script builds up to four requests near the simple shape, one choice per byte (0 once the
// script runs out): the method (the seven, and others), the target's characters (those of the
// shape and some outside it), the version, each line's end (mostly CRLF), up to six fields
// (names llhttp gives a meaning to, their near misses and case changes; values that mean
// something to it, and others; spaces and tabs around them), maybe a body, then a few bytes
// overwritten. Random bytes seldom make a head of the shape with a Connection field and a tab
// after it; a script makes such heads every few inputs.
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
    for (const auto& [name, value] : copy_fields(r.headers())) {
      text += " " + name + ": " + value + "\n";
    }
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
    for (const auto& [name, value] : copy_fields(r.trailers())) {
      text += " " + name + ": " + value + "\n";
    }
  }

 private:
  bool in_body_ = false;
};

/// Feeds @p input in pieces of the sizes @p next_piece gives, as a server would: unconsumed
/// bytes are kept, each complete request is followed by resume(), the end is an EOF.
template <class NextPiece>
std::string parse(std::string_view input, HttpParserLimits limits, NextPiece next_piece,
                  std::uint64_t* simple_heads = nullptr, bool into_input = false) {
  Transcript transcript;
  HttpRequestParser parser(transcript, limits);
  parser.set_views_into_input(into_input);
  std::string pending;
  std::size_t at = 0;
  for (;;) {
    const std::size_t piece = std::min(next_piece(), input.size() - at);
    pending.append(input.substr(at, piece));
    at += piece;
    for (;;) {
      const std::size_t used = parser.feed(std::as_bytes(std::span(pending.data(), pending.size())));
      const bool paused = parser.is_paused();
      if (paused) parser.resume();  // before the bytes change: the views may point into them
      pending.erase(0, used);
      if (!paused) break;
    }
    if (at == input.size()) break;
  }
  parser.feed_eof();
  if (simple_heads != nullptr) *simple_heads = parser.simple_heads();
  return transcript.text + "state " + std::to_string(static_cast<int>(parser.state())) + " " +
         std::to_string(parser.error_status()) + " " + std::string(parser.error_reason()) +
         " left " + std::to_string(parser.has_failed() ? pending.size() : 0) + "\n";
}

/// Reads a script's choices: one byte each, 0 once it is used up.
class Script {
 public:
  explicit Script(std::string_view bytes) noexcept : bytes_(bytes) {}
  std::size_t pick(std::size_t n) noexcept {
    if (bytes_.empty()) return 0;
    const auto b = static_cast<unsigned char>(bytes_.front());
    bytes_.remove_prefix(1);
    return b % n;
  }
  template <class T, std::size_t N>
  const T& pick(const T (&choices)[N]) noexcept {
    return choices[pick(N)];
  }

 private:
  std::string_view bytes_;
};

/// The requests a script builds (see the top of the file).
std::string build_requests(Script& script) {
  static constexpr std::string_view methods[] = {"GET",     "HEAD",  "POST",     "PUT", "DELETE",
                                                 "OPTIONS", "PATCH", "PROPFIND", "get", "CONNECT"};
  static constexpr std::string_view target_chars = "abcXYZ019-._~!$&'()*+,;=:@/%?#<\"\x7f\x80 ";
  static constexpr std::string_view versions[] = {" HTTP/1.1", " HTTP/1.0", " HTTP/1.2",
                                                  " HTTP/2.0", " http/1.1"};
  static constexpr std::string_view names[] = {
      "Host",       "Connection", "Content-Length", "Transfer-Encoding", "Upgrade",
      "Proxy-Connection", "Expect", "Keep-Alive",   "Connectio",         "Connectionn",
      "Content-Lengthx",  "X-A",    "Te",           ""};
  static constexpr std::string_view values[] = {
      "close",   "keep-alive",   "Keep-Alive", "CLOSE", "close, keep-alive", "upgrade",
      "chunked", "100-continue", "0",          "5",     "",                  "a b",
      "x\x7f",   "caf\xe9",      "websocket"};
  static constexpr std::string_view spaces[] = {"", "", " ", "\t", " \t", "\t "};
  // Mostly CRLF; a bare LF or CR now and then.
  static constexpr std::string_view line_ends[] = {"\r\n", "\r\n", "\r\n", "\r\n",
                                                   "\r\n", "\r\n", "\n",    "\r"};
  std::string out;
  const std::size_t requests = 1 + script.pick(4);
  for (std::size_t r = 0; r < requests; ++r) {
    const std::size_t start = out.size();
    out += script.pick(methods);
    out += " /";
    for (std::size_t k = script.pick(8); k > 0; --k) {
      out += target_chars[script.pick(target_chars.size())];
    }
    out += script.pick(versions);
    out += script.pick(line_ends);
    for (std::size_t f = script.pick(7); f > 0; --f) {
      std::string name(script.pick(names));
      for (char& c : name) {  // change the case of some letters
        if (((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')) && script.pick(4) == 0) c ^= 0x20;
      }
      out += name;
      out += script.pick(8) == 0 ? " :" : ":";
      out += script.pick(spaces);
      out += script.pick(values);
      out += script.pick(spaces);
      out += script.pick(line_ends);
    }
    out += script.pick(line_ends);
    if (script.pick(3) == 1) out += "hello";  // (not 0: a script that ran out adds none)
    for (std::size_t m = script.pick(4); m > 0 && out.size() > start; --m) {
      out[start + script.pick(out.size() - start)] = static_cast<char>(script.pick(256));
    }
  }
  return out;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 2) return 0;
  HttpParserLimits limits;
  limits.max_header_bytes = 24 + 24 * static_cast<std::size_t>(data[0] & 0x0f);
  static constexpr std::uint64_t body_limits[] = {1, 16, 256, 1024 * 1024};
  limits.max_body_bytes = body_limits[(data[0] >> 4) & 3];
  Prng rng(data[1] + 1);
  const std::string_view rest(reinterpret_cast<const char*>(data + 2), size - 2);
  std::string built;
  if ((data[0] & 0x40) != 0) {
    Script script(rest);
    built = build_requests(script);
  }
  const std::string_view input = (data[0] & 0x40) != 0 ? std::string_view(built) : rest;

  std::uint64_t simple_heads = 0;
  const std::string whole = parse(input, limits, [&] { return input.size(); }, &simple_heads);
  const std::string viewed =
      parse(input, limits, [&] { return input.size(); }, nullptr, /*into_input=*/true);
  const std::string bytewise = parse(input, limits, [] { return std::size_t{1}; });
  const std::string pieces =
      parse(input, limits, [&] { return rng.between(1, 16); });
  check(whole == bytewise, "fed whole and byte by byte, the parses differ",
        "input " + show_bytes(input) + "\nsimple heads " + std::to_string(simple_heads) +
            "\n--- whole:\n" + whole + "--- byte by byte:\n" + bytewise);
  check(viewed == whole, "fed whole, the parses differ with the heads viewed in the input",
        "input " + show_bytes(input) + "\n--- copied:\n" + whole + "--- viewed:\n" + viewed);
  check(pieces == bytewise, "fed in pieces and byte by byte, the parses differ",
        "input " + show_bytes(input) + "\n--- pieces:\n" + pieces + "--- byte by byte:\n" + bytewise);
  return 0;
}
