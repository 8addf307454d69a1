#include "strata/protocols/http_parser.hpp"

#include <llhttp.h>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include <algorithm>
#include <array>
#include <bit>
#include <cstdint>
#include <cstring>
#include <exception>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "strata/core/errors.hpp"

// How the parser drives llhttp
// ----------------------------
// llhttp is a push parser: one llhttp_execute() call runs as far as the bytes go and calls back
// on the way. To know exactly where each part of a request ends, our callbacks return
// HPE_PAUSED at four points: the end of the head (on_headers_complete), the end of each
// chunk-size line (on_chunk_header), the end of each chunk's data (on_chunk_complete) and the
// end of the request (on_message_complete). llhttp then returns with llhttp_get_error_pos() at
// the byte after that point. The first three pauses are internal: feed() checks the part just
// finished and resumes. The last one is the pause a server sees.
//
// Knowing those positions, feed() hands llhttp slices no longer than what the current section
// may still grow by: the head (and later the trailer section) by max_header_bytes, a chunk-size
// line by what remains of max_chunk_extension_bytes. A section that reaches its limit without
// ending is an error at that very byte, so the outcome does not depend on how the bytes were
// split across feed() calls.
//
// Three flaws of llhttp 8.1.0, as Debian ships it, are closed here rather than in llhttp:
// - CVE-2023-30589 (a bare CR ends a field line and can hide a Transfer-Encoding) and
//   CVE-2024-27982 (an obs-folded Content-Length is honoured): HeadScanner reads every byte of
//   the head and of the trailer section before llhttp does, and refuses a CR not followed by
//   LF, an LF not preceded by CR, and a field line starting with space or tab (obs-fold, which
//   RFC 9112 §5.2 lets a server refuse). llhttp in strict mode also refuses the bare CRs we know
//   of; the scanner does not rely on that. It also refuses a field line starting with ':'
//   (an empty name, which llhttp 8.1 lets through; field-name = token, RFC 9110 §5.1) at that
//   byte, so that a size limit further on does not hide it.
// - CVE-2024-22019 (chunk extensions are unbounded): the bytes of each chunk-size line beyond
//   the size's own digits and CRLF are counted against max_chunk_extension_bytes.
//
// The simple-head path
// --------------------
// Most requests are a request line and a few plain field lines with no body: every request of
// a benchmark, of a browser's page load, of a health check. For those, llhttp's byte-at-a-time
// state machine, its callbacks into our buffers and the head scanner cost about 1,550
// instructions. When a feed() starts at the first byte of a request and holds its whole head,
// SimpleHead first reads it in one pass and, if it is of the narrow shape below, the request is
// complete without llhttp; anything else, in any byte, and llhttp reads the head as always,
// from its first byte. The shape:
//   request-line = method SP target SP "HTTP/1." ("0" / "1") CRLF
//   method       = GET / HEAD / POST / PUT / DELETE / OPTIONS / PATCH
//   target       = "/" *( ALPHA / DIGIT / "-._~!$&'()*+,;=:@/%?" )
//   field-line   = 1*tchar ":" *( SP / HTAB ) *( VCHAR / SP / HTAB ) CRLF
//   head         = request-line *field-line CRLF, no longer than max_header_bytes
// with no Content-Length, Transfer-Encoding, Upgrade or Proxy-Connection field, and no
// Connection field but "keep-alive" or "close". Each of these is a subset of what llhttp
// accepts, read the same way (the tests feed every input whole and byte by byte, which never
// takes this path, and compare; so does the fuzz target http_parser); so a head either parses
// here exactly as llhttp would parse it, or goes to llhttp. No bare CR or LF and no obs-fold
// can be in it, and no body can follow it. Two details keep the paths equal: llhttp skips
// spaces after a Connection token but not a tab ("close\t" is no "close" to it), so such a
// value goes to llhttp; and llhttp starts afresh at each request it reads (llhttp_reset() in
// resume()), so it never carries what it noted of one request (a Connection field in a
// trailer section) to later ones, which it may not even see.

namespace strata {

namespace {

constexpr char ascii_lower(char c) noexcept {
  return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c;
}

constexpr bool is_ows(char c) noexcept { return c == ' ' || c == '\t'; }

std::string_view trim_ows(std::string_view s) noexcept {
  while (!s.empty() && is_ows(s.front())) s.remove_prefix(1);
  while (!s.empty() && is_ows(s.back())) s.remove_suffix(1);
  return s;
}

/// Hex digits of @p size written without leading zeros: the shortest chunk-size for it.
std::size_t hex_digits(std::uint64_t size) noexcept {
  std::size_t n = 1;
  while (size >>= 4) ++n;
  return n;
}

// The longest chunk-size line without extensions: 16 hex digits (llhttp refuses more as an
// overflow) and CRLF.
constexpr std::size_t max_plain_chunk_line = 16 + 2;

constexpr std::string_view reason_bare_cr = "bare CR: a CR not followed by LF";
constexpr std::string_view reason_bare_lf = "bare LF: an LF not preceded by CR";
constexpr std::string_view reason_obs_fold =
    "field line starts with whitespace (obs-fold is not accepted)";
constexpr std::string_view reason_empty_name =
    "empty field name (a field line starting with ':')";
constexpr std::string_view reason_chunk_extensions = "chunk extensions too long";

/// Reads the bytes of a request head, or of a trailer section, ahead of llhttp: finds where it
/// ends and refuses the line-level shapes that llhttp 8.1 lets through (see the top of file).
///
/// States, per byte: `start` is before the request line (empty lines allowed, RFC 9112 §2.2);
/// `line` inside a line; `line_cr` after a CR in a line; `line_start` at the start of a field
/// line; `end_cr` after the CR of the empty line that ends the section; `done` after its LF.
/// The first CR or LF in [q, end), or end. Eight bytes at a time (SWAR): after XOR with a
/// word of CRs (or of LFs) a matching byte is zero, and `(x - ones) & ~x & highs` sets the
/// high bit of every zero byte, and possibly of bytes after one (the borrow), never of one
/// before: on a little-endian machine the lowest set bit is the first match, exactly.
/// On x86-64, SSE2 (part of the base instruction set) does sixteen bytes at a time first:
/// two byte compares, an OR and a mask of the matches.
inline const char* find_cr_or_lf(const char* q, const char* end) noexcept {
  constexpr std::uint64_t ones = 0x0101010101010101ULL;
  constexpr std::uint64_t highs = 0x8080808080808080ULL;
#if defined(__SSE2__)
  const __m128i crs = _mm_set1_epi8('\r');
  const __m128i lfs = _mm_set1_epi8('\n');
  while (end - q >= 16) {
    const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(q));
    const __m128i hit = _mm_or_si128(_mm_cmpeq_epi8(v, crs), _mm_cmpeq_epi8(v, lfs));
    const auto mask = static_cast<unsigned>(_mm_movemask_epi8(hit));
    if (mask != 0) return q + std::countr_zero(mask);
    q += 16;
  }
#endif
  if constexpr (std::endian::native == std::endian::little) {
    while (end - q >= 8) {
      std::uint64_t w;
      std::memcpy(&w, q, sizeof w);
      const std::uint64_t cr = w ^ (ones * '\r');
      const std::uint64_t lf = w ^ (ones * '\n');
      const std::uint64_t found = (((cr - ones) & ~cr) | ((lf - ones) & ~lf)) & highs;
      if (found != 0) return q + (std::countr_zero(found) >> 3);
      q += 8;
    }
  }
  while (q != end && *q != '\r' && *q != '\n') ++q;
  return q;
}

class HeadScanner {
 public:
  enum class Result { more, end, violation };
  struct Scan {
    std::size_t length;  // bytes that may go to llhttp: up to the end, or up to the violation
    Result result;
    std::string_view reason;  // for a violation
  };

  void start_message() noexcept {
    state_ = State::start;
    request_line_ = true;
  }
  void start_trailers() noexcept {
    state_ = State::line_start;
    request_line_ = false;
  }
  /// Whether no line of the head has ended yet (an overflow here is a 414, not a 431).
  bool in_request_line() const noexcept { return request_line_; }

  Scan scan(const char* p, std::size_t n) noexcept {
    std::size_t i = 0;
    while (i < n) {
      const char c = p[i];
      switch (state_) {
        case State::start:
          if (c == '\r') {
            state_ = State::start_cr;
          } else if (c == '\n') {
            return {i, Result::violation, reason_bare_lf};
          } else {
            state_ = State::line;
          }
          ++i;
          break;
        case State::start_cr:
          if (c != '\n') return {i, Result::violation, reason_bare_cr};
          state_ = State::start;
          ++i;
          break;
        case State::line: {
          // The hot loop: skip to the next CR or LF.
          const char* q = find_cr_or_lf(p + i, p + n);
          const char* end = p + n;
          i = static_cast<std::size_t>(q - p);
          if (q == end) break;
          if (*q == '\n') return {i, Result::violation, reason_bare_lf};
          state_ = State::line_cr;
          ++i;
          break;
        }
        case State::line_cr:
          if (c != '\n') return {i, Result::violation, reason_bare_cr};
          state_ = State::line_start;
          request_line_ = false;
          ++i;
          break;
        case State::line_start:
          if (is_ows(c)) return {i, Result::violation, reason_obs_fold};
          if (c == '\n') return {i, Result::violation, reason_bare_lf};
          if (c == ':') return {i, Result::violation, reason_empty_name};
          state_ = c == '\r' ? State::end_cr : State::line;
          ++i;
          break;
        case State::end_cr:
          if (c != '\n') return {i, Result::violation, reason_bare_cr};
          state_ = State::done;
          return {i + 1, Result::end, {}};
        case State::done:
          return {i, Result::end, {}};
      }
    }
    return {n, state_ == State::done ? Result::end : Result::more, {}};
  }

 private:
  enum class State : std::uint8_t { start, start_cr, line, line_cr, line_start, end_cr, done };
  State state_ = State::start;
  bool request_line_ = true;
};

/// Where a field's name and value lie in a section's byte buffer.
struct FieldPos {
  std::size_t name_begin = 0;
  std::size_t name_end = 0;
  std::size_t value_begin = 0;
  std::size_t value_end = 0;
};

/// A section's field bytes and positions, and the views built from them once it is complete.
/// Cleared between requests, never shrunk.
struct FieldSection {
  std::string bytes;
  std::vector<FieldPos> positions;
  std::vector<HttpHeader> views;
  bool in_name = false;
  bool in_value = false;

  void clear() noexcept {
    bytes.clear();
    positions.clear();
    views.clear();
    in_name = false;
    in_value = false;
  }

  void name_data(const char* at, std::size_t length) {
    if (!in_name) {
      positions.push_back({bytes.size(), bytes.size(), bytes.size(), bytes.size()});
      in_name = true;
    }
    bytes.append(at, length);
  }
  void name_complete() noexcept {
    if (positions.empty()) return;
    positions.back().name_end = bytes.size();
    in_name = false;
  }
  void value_data(const char* at, std::size_t length) {
    if (positions.empty()) return;
    if (!in_value) {
      positions.back().value_begin = bytes.size();
      in_value = true;
    }
    bytes.append(at, length);
  }
  void value_complete() noexcept {
    if (positions.empty()) return;
    if (!in_value) positions.back().value_begin = bytes.size();
    positions.back().value_end = bytes.size();
    in_value = false;
  }

  /// Builds the views; @p bytes must not change while they are in use. Values are trimmed
  /// of whitespace unless @p trimmed says their positions are already.
  HttpHeaders build(bool trimmed = false) { return build(bytes, trimmed); }
  /// build() with positions into @p all instead of bytes.
  HttpHeaders build(std::string_view all, bool trimmed) {
    views.clear();
    for (const FieldPos& f : positions) {
      const std::string_view value = all.substr(f.value_begin, f.value_end - f.value_begin);
      views.push_back(
          {all.substr(f.name_begin, f.name_end - f.name_begin), trimmed ? value : trim_ows(value)});
    }
    return HttpHeaders(views);
  }
};

/// What framing and the server's decisions depend on, from one pass over a head's fields.
struct FieldSummary {
  std::size_t hosts = 0;
  std::size_t codings = 0;       // transfer codings listed, over every Transfer-Encoding line
  bool transfer_encoding = false;
  bool chunked_last = false;     // the last coding listed so far is chunked
  bool chunked_earlier = false;  // chunked was listed before the last coding
  bool unknown_coding = false;   // a coding other than chunked was listed
  bool expects_continue = false;

  /// As FieldSummary{} (which GCC 12 stores field by field, a byte at a time).
  void clear() noexcept { std::memset(static_cast<void*>(this), 0, sizeof *this); }

  static FieldSummary of(const HttpHeaders& fields) noexcept {
    FieldSummary f;
    for (const HttpHeader& h : fields) {
      if (http_iequals(h.name, "host")) {
        ++f.hosts;
      } else if (http_iequals(h.name, "transfer-encoding")) {
        f.transfer_encoding = true;
        std::string_view list = h.value;
        while (!list.empty()) {
          const std::size_t comma = list.find(',');
          const std::string_view coding = trim_ows(list.substr(0, comma));
          list = comma == std::string_view::npos ? std::string_view{} : list.substr(comma + 1);
          if (coding.empty()) continue;  // empty list elements are allowed (RFC 9110 §5.6.1)
          ++f.codings;
          if (f.chunked_last) f.chunked_earlier = true;
          f.chunked_last = http_iequals(coding, "chunked");  // "chunked;x=y" is not chunked
          if (!f.chunked_last) f.unknown_coding = true;
        }
      } else if (http_iequals(h.name, "expect")) {
        if (http_iequals(h.value, "100-continue")) f.expects_continue = true;
      }
    }
    return f;
  }
};
static_assert(std::is_trivially_copyable_v<FieldSummary>);  // clear() is a memset

/// Character classes of the simple-head path (see the top of the file).
enum CharClass : std::uint8_t { tchar = 1, target_char = 2, path_char = 4 };

constexpr std::array<std::uint8_t, 256> char_classes = [] {
  std::array<std::uint8_t, 256> t{};
  constexpr std::string_view tchar_marks = "!#$%&'*+-.^_`|~";      // RFC 9110 §5.6.2
  constexpr std::string_view target_marks = "-._~!$&'()*+,;=:@/%?";  // RFC 3986 pchar, '/', '?'
  for (std::size_t c = 0; c < t.size(); ++c) {
    const char ch = static_cast<char>(c);
    const bool alnum =
        (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9');
    if (alnum || (c != 0 && tchar_marks.find(ch) != std::string_view::npos)) t[c] |= tchar;
    if (alnum || (c != 0 && target_marks.find(ch) != std::string_view::npos)) t[c] |= target_char;
    if ((t[c] & target_char) != 0 && ch != '?') t[c] |= path_char;
  }
  return t;
}();

constexpr bool is_a(char c, CharClass cls) noexcept {
  return (char_classes[static_cast<unsigned char>(c)] & cls) != 0;
}

/// The first i' >= @p i with p[i'] not of class @p cls, or @p n. Four bytes a turn: one bound
/// check per four bytes.
inline std::size_t skip_class(const char* p, std::size_t i, std::size_t n, CharClass cls) noexcept {
  for (; n - i >= 4; i += 4) {
    if (!is_a(p[i], cls)) return i;
    if (!is_a(p[i + 1], cls)) return i + 1;
    if (!is_a(p[i + 2], cls)) return i + 2;
    if (!is_a(p[i + 3], cls)) return i + 3;
  }
  while (i < n && is_a(p[i], cls)) ++i;
  return i;
}

/// skip_class() for path_char (@p with_query false) or target_char (true). The first sixteen
/// bytes a byte at a time (most targets are shorter, and the table costs less for them); then,
/// with SSE2, sixteen at a time while sixteen remain: the bytes of neither class are the
/// controls, SP, DEL, the bytes over 0x7F, and " # < > [ \ ] ^ ` { | } (and ? for path_char).
template <bool with_query>
inline std::size_t skip_target(const char* p, std::size_t i, std::size_t n) noexcept {
  constexpr CharClass cls = with_query ? target_char : path_char;
  const std::size_t first = std::min(n, i + 16);
  i = skip_class(p, i, first, cls);
  if (i < first) return i;
#if defined(__SSE2__)
  const auto byte = [](int c) { return _mm_set1_epi8(static_cast<char>(c)); };
  while (n - i >= 16) {
    const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + i));
    // lo <= v <= hi (0 < lo <= hi < 0x7f): v shifted so that lo is -128, then one compare.
    const auto in = [&](int lo, int hi) {
      const __m128i shifted = _mm_add_epi8(v, byte(0x80 - lo));
      return _mm_cmpgt_epi8(byte(hi - lo - 127), shifted);
    };
    __m128i bad = _mm_cmpgt_epi8(byte(0x21), v);  // controls, SP, and every byte over 0x7F
    bad = _mm_or_si128(bad, in(0x22, 0x23));        // " #
    bad = _mm_or_si128(bad, in(0x3c, with_query ? 0x3c : 0x3f));  // < (and = > ?, = undone below)
    bad = _mm_andnot_si128(_mm_cmpeq_epi8(v, byte(0x3d)), bad);    // = is a pchar
    bad = _mm_or_si128(bad, _mm_cmpeq_epi8(v, byte(0x3e)));         // >
    bad = _mm_or_si128(bad, in(0x5b, 0x5e));                        // [ \ ] ^
    bad = _mm_or_si128(bad, _mm_cmpeq_epi8(v, byte(0x60)));         // `
    bad = _mm_or_si128(bad, in(0x7b, 0x7d));                        // { | }
    bad = _mm_or_si128(bad, _mm_cmpeq_epi8(v, byte(0x7f)));         // DEL
    const auto mask = static_cast<unsigned>(_mm_movemask_epi8(bad));
    if (mask != 0) return i + static_cast<std::size_t>(std::countr_zero(mask));
    i += 16;
  }
#endif
  return skip_class(p, i, n, cls);
}

/// The first byte in [q, end) that is neither VCHAR nor SP (a control, DEL or a byte over
/// 0x7F), or end. With SSE2 sixteen bytes at a time: a signed compare with 0x20 finds the
/// controls and every byte over 0x7F at once.
inline const char* find_non_text(const char* q, const char* end) noexcept {
#if defined(__SSE2__)
  const __m128i spaces = _mm_set1_epi8(0x20);
  const __m128i dels = _mm_set1_epi8(0x7f);
  while (end - q >= 16) {
    const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(q));
    const __m128i hit = _mm_or_si128(_mm_cmplt_epi8(v, spaces), _mm_cmpeq_epi8(v, dels));
    const auto mask = static_cast<unsigned>(_mm_movemask_epi8(hit));
    if (mask != 0) return q + std::countr_zero(mask);
    q += 16;
  }
#endif
  while (q != end) {
    const auto c = static_cast<unsigned char>(*q);
    if (c < 0x20 || c >= 0x7f) return q;
    ++q;
  }
  return end;
}

/// ASCII case-insensitive @p a == @p lower, for a @p lower of lower-case letters, digits and
/// '-', and an @p a without bytes below 0x20 other than HTAB (a tchar name, a field value):
/// OR-ing 0x20 into each byte of @p a then lowers its letters and turns no other byte into
/// one of @p lower's, so words of @p a are compared at once, without a call.
[[gnu::always_inline]] inline bool iequals_lower(std::string_view a,
                                                 std::string_view lower) noexcept {
  const std::size_t n = a.size();
  if (n != lower.size()) return false;
  const auto differ = [&](auto word, std::size_t at) {
    decltype(word) x = 0;
    decltype(word) y = 0;
    std::memcpy(&x, a.data() + at, sizeof x);
    std::memcpy(&y, lower.data() + at, sizeof y);
    constexpr auto spaces = static_cast<decltype(word)>(0x2020202020202020ULL);
    return ((x | spaces) ^ y) != 0;
  };
  if (n >= 8) {
    for (std::size_t at = 0; at + 8 < n; at += 8) {
      if (differ(std::uint64_t{}, at)) return false;
    }
    return !differ(std::uint64_t{}, n - 8);
  }
  if (n >= 4) return !differ(std::uint32_t{}, 0) && !differ(std::uint32_t{}, n - 4);
  for (std::size_t i = 0; i < n; ++i) {
    if ((a[i] | 0x20) != lower[i]) return false;
  }
  return true;
}

/// What SimpleHead::read found in a head of the simple shape.
struct SimpleHeadFacts {
  /// Facts whose field summary is written into @p summary (the parser's own).
  explicit SimpleHeadFacts(FieldSummary& summary) noexcept : fields(summary) {}
  std::string_view method;  // a static string, as llhttp_method_name() gives
  std::size_t target_at = 0;
  std::size_t target_size = 0;
  std::size_t query_at = 0;  // in the target: its first '?', or its size
  int minor = 1;
  bool connection_close = false;
  bool connection_keep_alive = false;
  FieldSummary& fields;    // what FieldSummary::of() would find (never a Transfer-Encoding)
  std::size_t length = 0;  // of the whole head, up to and including its final CRLF
};

/// Reads a head of the simple shape (see the top of the file) in one pass.
class SimpleHead {
 public:
  /// Reads the head at the start of @p p, its fields into @p positions as offsets from the
  /// target's first byte, values trimmed. False when @p n bytes do not hold a whole head of
  /// the simple shape; @p positions then holds whatever was read.
  static bool read(const char* p, std::size_t n, SimpleHeadFacts& facts,
                   std::vector<FieldPos>& positions) noexcept {
    const std::string_view method = method_at(p, n);
    if (method.empty()) return false;
    std::size_t i = method.size() + 1;
    if (i >= n || p[i] != '/') return false;
    const std::size_t target_at = i;
    i = skip_target<false>(p, i, n);
    const std::size_t query_at = i - target_at;  // the first '?', if there is one
    if (i < n && p[i] == '?') i = skip_target<true>(p, i + 1, n);
    constexpr std::string_view version = " HTTP/1.";
    if (n - i < version.size() + 3 || std::string_view(p + i, version.size()) != version) {
      return false;
    }
    const std::size_t target_size = i - target_at;
    i += version.size();
    if ((p[i] != '0' && p[i] != '1') || p[i + 1] != '\r' || p[i + 2] != '\n') return false;
    facts.method = method;
    facts.target_at = target_at;
    facts.target_size = target_size;
    facts.query_at = query_at;
    facts.minor = p[i] - '0';
    facts.fields.clear();
    i += 3;
    for (;;) {
      if (i + 1 >= n) return false;
      if (p[i] == '\r') {
        if (p[i + 1] != '\n') return false;
        facts.length = i + 2;
        return true;
      }
      const std::size_t name_at = i;
      i = skip_class(p, i, n, tchar);
      if (i == name_at || i >= n || p[i] != ':') return false;
      const std::size_t name_end = i++;
      if (i < n && p[i] == ' ') ++i;  // the usual single space
      while (i < n && is_ows(p[i])) ++i;
      const std::size_t value_at = i;
      for (;;) {  // VCHAR, SP and HTAB up to the CR
        i = static_cast<std::size_t>(find_non_text(p + i, p + n) - p);
        if (i >= n || p[i] != '\t') break;
        ++i;
      }
      if (i + 1 >= n || p[i] != '\r' || p[i + 1] != '\n') return false;
      std::size_t value_end = i;
      bool tab_after = false;  // in the whitespace after the value
      while (value_end > value_at && is_ows(p[value_end - 1])) [[unlikely]] {
        tab_after = tab_after || p[value_end - 1] == '\t';
        --value_end;
      }
      i += 2;
      if (!plain_field(std::string_view(p + name_at, name_end - name_at),
                       std::string_view(p + value_at, value_end - value_at), tab_after, facts)) {
        return false;
      }
      positions.push_back(
          {name_at - target_at, name_end - target_at, value_at - target_at, value_end - target_at});
    }
  }

 private:
  /// The method at @p p followed by SP, among the common ones; empty if none.
  static std::string_view method_at(const char* p, std::size_t n) noexcept {
    static constexpr std::string_view methods[] = {"GET",    "HEAD",    "POST", "PUT",
                                                   "DELETE", "OPTIONS", "PATCH"};
    for (const std::string_view m : methods) {
      if (n > m.size() && p[m.size()] == ' ' && std::string_view(p, m.size()) == m) return m;
    }
    return {};
  }

  /// False for a field llhttp gives a meaning to, other than a Connection of one token with
  /// no tab after it (@p tab_after); notes what FieldSummary notes.
  static bool plain_field(std::string_view name, std::string_view value, bool tab_after,
                          SimpleHeadFacts& facts) noexcept {
    switch (name.size()) {
      case 4:
        if (iequals_lower(name, "host")) ++facts.fields.hosts;
        return true;
      case 6:
        if (iequals_lower(name, "expect") && iequals_lower(value, "100-continue")) {
          facts.fields.expects_continue = true;
        }
        return true;
      case 10:
        if (!iequals_lower(name, "connection")) return true;
        if (tab_after) return false;
        if (iequals_lower(value, "keep-alive")) {
          facts.connection_keep_alive = true;
          return true;
        }
        if (iequals_lower(value, "close")) {
          facts.connection_close = true;
          return true;
        }
        return false;
      case 7:
        return !iequals_lower(name, "upgrade");
      case 14:
        return !iequals_lower(name, "content-length");
      case 16:
        return !iequals_lower(name, "proxy-connection");
      case 17:
        return !iequals_lower(name, "transfer-encoding");
      default:
        return true;
    }
  }
};

}  // namespace

// ---- HttpHeaders -----------------------------------------------------------------------------

bool http_iequals(std::string_view a, std::string_view b) noexcept {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (ascii_lower(a[i]) != ascii_lower(b[i])) return false;
  }
  return true;
}

std::optional<std::string_view> HttpHeaders::get(std::string_view name) const noexcept {
  for (const HttpHeader& h : fields_) {
    if (http_iequals(h.name, name)) return h.value;
  }
  return std::nullopt;
}

std::size_t HttpHeaders::count(std::string_view name) const noexcept {
  return static_cast<std::size_t>(std::count_if(
      fields_.begin(), fields_.end(), [&](const HttpHeader& h) { return http_iequals(h.name, name); }));
}

// ---- HttpRequestParser::Impl -----------------------------------------------------------------

struct HttpRequestParser::Impl {
  /// The part of a request llhttp is in, as far as feed() slices the input.
  enum class Phase { head, body, chunk_line, chunk_data, trailers };
  /// The pause a callback asked for in the last llhttp_execute().
  enum class Event { none, head_complete, chunk_header, chunk_complete, message_complete };

  explicit Impl(HttpRequestParser& owner) : owner(owner) {
    llhttp_init(&parser, HTTP_REQUEST, &settings());
    parser.data = this;
  }

  static const llhttp_settings_t& settings() noexcept {
    static const llhttp_settings_t s = [] {
      llhttp_settings_t t;
      llhttp_settings_init(&t);
      t.on_message_begin = &Impl::on_message_begin;
      t.on_url = &Impl::on_url;
      t.on_header_field = &Impl::on_header_field;
      t.on_header_field_complete = &Impl::on_header_field_complete;
      t.on_header_value = &Impl::on_header_value;
      t.on_header_value_complete = &Impl::on_header_value_complete;
      t.on_headers_complete = &Impl::on_headers_complete;
      t.on_body = &Impl::on_body;
      t.on_chunk_header = &Impl::on_chunk_header;
      t.on_chunk_complete = &Impl::on_chunk_complete;
      t.on_message_complete = &Impl::on_message_complete;
      return t;
    }();
    return s;
  }

  static Impl& self(llhttp_t* p) noexcept { return *static_cast<Impl*>(p->data); }
  FieldSection& section() noexcept { return phase == Phase::trailers ? trailers : head; }

  // llhttp callbacks. Span callbacks may be called several times per item (once per execute
  // that holds part of it); the *_complete callbacks mark the ends.
  static int on_message_begin(llhttp_t* p) {
    Impl& im = self(p);
    if (im.owner.state_ == State::idle) im.owner.state_ = State::head;
    return 0;
  }
  static int on_url(llhttp_t* p, const char* at, std::size_t length) {
    Impl& im = self(p);
    im.head.bytes.append(at, length);
    im.url_end = im.head.bytes.size();
    return 0;
  }
  static int on_header_field(llhttp_t* p, const char* at, std::size_t length) {
    self(p).section().name_data(at, length);
    return 0;
  }
  static int on_header_field_complete(llhttp_t* p) {
    self(p).section().name_complete();
    return 0;
  }
  static int on_header_value(llhttp_t* p, const char* at, std::size_t length) {
    self(p).section().value_data(at, length);
    return 0;
  }
  static int on_header_value_complete(llhttp_t* p) {
    self(p).section().value_complete();
    return 0;
  }
  static int on_headers_complete(llhttp_t* p) {
    // Never switch protocols: an Upgrade request or CONNECT is an ordinary request to us, and
    // the bytes after it are parsed as HTTP (the server's answer will not be 101 or 2xx to
    // CONNECT). llhttp reads this flag only after this callback.
    p->upgrade = 0;
    self(p).event = Event::head_complete;
    return HPE_PAUSED;
  }
  static int on_body(llhttp_t* p, const char* at, std::size_t length) {
    Impl& im = self(p);
    if (length == 0) return 0;
    try {
      im.owner.callbacks_.body_received(
          std::span<const std::byte>(reinterpret_cast<const std::byte*>(at), length));
    } catch (...) {
      // Never unwind through llhttp's C frames: stop it, and rethrow from feed().
      im.callback_error = std::current_exception();
      return HPE_USER;
    }
    return 0;
  }
  static int on_chunk_header(llhttp_t* p) {
    self(p).event = Event::chunk_header;
    return HPE_PAUSED;
  }
  static int on_chunk_complete(llhttp_t* p) {
    self(p).event = Event::chunk_complete;
    return HPE_PAUSED;
  }
  static int on_message_complete(llhttp_t* p) {
    self(p).event = Event::message_complete;
    return HPE_PAUSED;
  }

  /// Forgets the current request: back to the start of a head.
  /// The current head's bytes: where SimpleHead read them, or the copy in head.bytes.
  std::string_view head_bytes() const noexcept {
    return head_input.data() != nullptr ? head_input : std::string_view(head.bytes);
  }

  void reset_request() noexcept {
    head.clear();
    head_input = {};
    trailers.clear();
    url_end = 0;
    phase = Phase::head;
    section_bytes = 0;
    line_bytes = 0;
    body_bytes = 0;
    extension_bytes = 0;
    scanner.start_message();
  }

  HttpRequestParser& owner;
  llhttp_t parser{};
  Phase phase = Phase::head;
  Event event = Event::none;
  FieldSection head;      // target bytes first (up to url_end), then the header fields
  FieldSection trailers;  // separate, so that the head's views survive the trailers
  std::string_view head_input;  // a head read whole and viewed in the input (views_into_input)
  FieldSummary fields;    // of the head, for head_complete()
  std::size_t url_end = 0;
  std::size_t section_bytes = 0;    // bytes of the head or trailer section so far
  std::size_t line_bytes = 0;       // bytes of the current chunk-size line so far
  std::uint64_t body_bytes = 0;     // sum of the chunk sizes so far
  std::size_t extension_bytes = 0;  // chunk-size line bytes beyond the size so far
  HeadScanner scanner;
  bool llhttp_used = false;  // llhttp read part of this request: reset it in resume()
  std::exception_ptr callback_error;
  bool in_feed = false;
};

// ---- HttpRequestParser -----------------------------------------------------------------------

HttpRequestParser::HttpRequestParser(Callbacks& callbacks, HttpParserLimits limits)
    : callbacks_(callbacks), limits_(limits) {
  if (limits_.max_header_bytes == 0) {
    throw std::invalid_argument("HttpParserLimits::max_header_bytes must be > 0, got 0");
  }
  if (limits_.max_body_bytes == 0) {
    throw std::invalid_argument(
        "HttpParserLimits::max_body_bytes must be > 0, got 0 (a body-less server still needs "
        "to read a Content-Length: 0)");
  }
  if (limits_.max_chunk_extension_bytes == 0) {
    throw std::invalid_argument("HttpParserLimits::max_chunk_extension_bytes must be > 0, got 0");
  }
  impl_ = std::make_unique<Impl>(*this);
}

HttpRequestParser::~HttpRequestParser() = default;

void HttpRequestParser::fail(int status, std::string_view reason) noexcept {
  if (state_ == State::failed) return;
  state_ = State::failed;
  error_status_ = status;
  error_reason_ = reason;
}

namespace {

/// The status for an error llhttp reports.
int status_of(llhttp_errno_t err) noexcept {
  switch (err) {
    case HPE_PAUSED_H2_UPGRADE:
      return 505;  // the HTTP/2 connection preface
    default:
      return 400;
  }
}

/// Clears a "RAII flag" on every way out of feed().
struct FlagGuard {
  bool& flag;
  explicit FlagGuard(bool& f) : flag(f) { flag = true; }
  ~FlagGuard() { flag = false; }
};

}  // namespace

std::size_t HttpRequestParser::feed(std::span<const std::byte> data) {
  Impl& im = *impl_;
  if (im.in_feed) {
    throw InvalidStateError(
        "HttpRequestParser::feed called from one of its own callbacks; keep the bytes and feed "
        "them after the callback returns");
  }
  switch (state_) {
    case State::complete:
    case State::failed:
      return 0;
    case State::closed:
      return data.size();
    default:
      break;
  }
  FlagGuard guard(im.in_feed);

  const char* const base = reinterpret_cast<const char*>(data.data());
  const std::size_t size = data.size();
  std::size_t pos = 0;
  static const char empty_input = 0;  // llhttp wants a valid pointer even for no bytes

  if (state_ == State::idle && im.section_bytes == 0) {
    SimpleHeadFacts facts(im.fields);
    if (SimpleHead::read(base, std::min(size, limits_.max_header_bytes), facts,
                         im.head.positions)) {
      const std::string_view head(base + facts.target_at, facts.length - facts.target_at);
      if (views_into_input_) {
        im.head_input = head;
      } else {
        im.head.bytes.assign(head);
      }
      im.url_end = facts.target_size;
      request_.method_ = facts.method;
      request_.headers_ = im.head.build(im.head_bytes(), /*trimmed=*/true);
      const std::uint64_t flags = (facts.connection_close ? F_CONNECTION_CLOSE : 0) |
                                  (facts.connection_keep_alive ? F_CONNECTION_KEEP_ALIVE : 0);
      if (head_complete(1, facts.minor, flags, 0, facts.query_at)) {
        ++simple_heads_;
        complete_request();
      }
      return facts.length;
    }
    im.head.positions.clear();
  }

  // Each turn hands llhttp one slice. A turn that ends in an internal pause loops even with no
  // bytes left: llhttp may have steps to take without input (a body-less request completes).
  for (;;) {
    const char* const p = size != 0 ? base + pos : &empty_input;
    const std::size_t rest = size - pos;
    std::size_t length = rest;
    std::string_view violation;
    bool section_end = false;
    std::size_t chunk_line_cap = 0;

    switch (im.phase) {
      case Impl::Phase::head:
      case Impl::Phase::trailers: {
        length = std::min(rest, limits_.max_header_bytes - im.section_bytes);
        const HeadScanner::Scan scan = im.scanner.scan(p, length);
        length = scan.length;
        if (scan.result == HeadScanner::Result::violation) violation = scan.reason;
        section_end = scan.result == HeadScanner::Result::end;
        break;
      }
      case Impl::Phase::chunk_line:
        chunk_line_cap =
            limits_.max_chunk_extension_bytes - im.extension_bytes + max_plain_chunk_line;
        length = std::min(rest, chunk_line_cap - im.line_bytes);
        break;
      case Impl::Phase::body:
      case Impl::Phase::chunk_data:
        break;
    }

    im.event = Impl::Event::none;
    im.llhttp_used = true;
    const llhttp_errno_t err = llhttp_execute(&im.parser, p, length);
    std::size_t used = length;
    if (err == HPE_PAUSED) {
      used = static_cast<std::size_t>(llhttp_get_error_pos(&im.parser) - p);
    } else if (err != HPE_OK) {
      if (im.callback_error) {
        fail(500, "a body_received callback threw");
        std::rethrow_exception(std::exchange(im.callback_error, nullptr));
      }
      const char* reason = llhttp_get_error_reason(&im.parser);
      fail(status_of(err), reason != nullptr ? reason : llhttp_errno_name(err));
      return pos + static_cast<std::size_t>(llhttp_get_error_pos(&im.parser) - p);
    }
    pos += used;
    if (im.phase == Impl::Phase::chunk_line) {
      im.line_bytes += used;
    } else if (im.phase == Impl::Phase::head || im.phase == Impl::Phase::trailers) {
      im.section_bytes += used;
    }

    if (!violation.empty() && (im.event != Impl::Event::none || used == length)) {
      // llhttp took every byte before the scanner's finding without an error of its own.
      fail(400, violation);
      return pos;
    }

    switch (im.event) {
      case Impl::Event::none:
        switch (im.phase) {
          case Impl::Phase::head:
            if (im.section_bytes >= limits_.max_header_bytes) {
              if (im.scanner.in_request_line()) {
                fail(414, "request line longer than the header limit");
              } else {
                fail(431, "request header section too large");
              }
              return pos;
            }
            if (section_end) {
              // llhttp did not end the head where the scanner did. The one known case is the
              // HTTP/2 preface ("PRI * HTTP/2.0"), which llhttp reads on to its "SM" line.
              if (im.parser.method == HTTP_PRI) {
                fail(505, "HTTP/2 connection preface: HTTP/2 is not supported");
              } else {
                fail(400, "malformed request head");
              }
              return pos;
            }
            break;
          case Impl::Phase::trailers:
            if (im.section_bytes >= limits_.max_header_bytes) {
              fail(431, "trailer section too large");
              return pos;
            }
            if (section_end) {
              fail(400, "malformed trailer section");
              return pos;
            }
            break;
          case Impl::Phase::chunk_line:
            if (im.line_bytes >= chunk_line_cap) {
              fail(413, reason_chunk_extensions);
              return pos;
            }
            break;
          default:
            break;
        }
        if (pos == size) return pos;  // all consumed: wait for more
        if (used == 0) {
          fail(400, "malformed request");  // defensive: never spin without progress
          return pos;
        }
        break;

      case Impl::Event::head_complete: {
        const llhttp_t& parser = im.parser;
        request_.method_ = llhttp_method_name(static_cast<llhttp_method_t>(parser.method));
        request_.headers_ = im.head.build();  // the positions start after the target
        im.fields = FieldSummary::of(request_.headers_);
        if (!head_complete(parser.http_major, parser.http_minor, parser.flags,
                           parser.content_length)) {
          return pos;
        }
        llhttp_resume(&im.parser);
        break;
      }

      case Impl::Event::chunk_header: {
        const std::uint64_t chunk_size = im.parser.content_length;
        const std::size_t plain = hex_digits(chunk_size) + 2;
        im.extension_bytes += im.line_bytes > plain ? im.line_bytes - plain : 0;
        if (im.extension_bytes > limits_.max_chunk_extension_bytes) {
          fail(413, reason_chunk_extensions);
          return pos;
        }
        if (chunk_size == 0) {
          im.phase = Impl::Phase::trailers;
          im.section_bytes = 0;
          im.scanner.start_trailers();
        } else {
          if (chunk_size > limits_.max_body_bytes - im.body_bytes) {
            fail(413, "request body too large");
            return pos;
          }
          im.body_bytes += chunk_size;
          im.phase = Impl::Phase::chunk_data;
        }
        llhttp_resume(&im.parser);
        break;
      }

      case Impl::Event::chunk_complete:
        im.phase = Impl::Phase::chunk_line;
        im.line_bytes = 0;
        llhttp_resume(&im.parser);
        break;

      case Impl::Event::message_complete:
        complete_request();  // llhttp stays paused until resume()
        return pos;
    }
  }
}

/// Checks a complete head, fills request_ (its method and headers already set, and
/// impl_->fields) and reports it; false when it failed. @p flags are llhttp's
/// (F_CONTENT_LENGTH, F_CHUNKED, F_CONNECTION_*), whichever path read the head.
bool HttpRequestParser::head_complete(int major, int minor, std::uint64_t flags,
                                      std::uint64_t content_length, std::size_t query_at) {
  Impl& im = *impl_;

  request_.target_ = im.head_bytes().substr(0, im.url_end);
  request_.query_at_ = query_at != std::string_view::npos
                           ? query_at
                           : std::min(request_.target_.find('?'), request_.target_.size());
  request_.version_major_ = major;
  request_.version_minor_ = minor;

  if (major != 1 || minor > 1) {
    fail(505, "HTTP version not supported (only 1.0 and 1.1)");
    return false;
  }
  const bool http11 = minor == 1;

  const FieldSummary& f = im.fields;
  if (f.hosts > 1) {
    fail(400, "more than one Host header field");
    return false;
  }
  if (http11 && f.hosts == 0) {
    fail(400, "HTTP/1.1 request without a Host header field");
    return false;
  }
  if (f.transfer_encoding) {
    if (!http11) {
      fail(400, "Transfer-Encoding in an HTTP/1.0 request");
      return false;
    }
    if ((flags & F_CONTENT_LENGTH) != 0) {
      fail(400, "Content-Length together with Transfer-Encoding");
      return false;
    }
    if (f.codings == 0 || !f.chunked_last) {
      fail(400, "chunked is not the final transfer coding");
      return false;
    }
    if (f.chunked_earlier) {
      fail(400, "chunked transfer coding applied more than once");
      return false;
    }
    if (f.unknown_coding) {
      // A coding before the final chunked that we cannot undo (RFC 9112 §6.1: 501).
      fail(501, "transfer coding not implemented (only chunked is)");
      return false;
    }
    if ((flags & F_CHUNKED) == 0) {
      fail(400, "malformed Transfer-Encoding");
      return false;
    }
    request_.chunked_ = true;
  } else if ((flags & F_CONTENT_LENGTH) != 0) {
    request_.content_length_ = content_length;
    if (content_length > limits_.max_body_bytes) {
      fail(413, "request body too large");
      return false;
    }
  }

  if ((flags & F_CONNECTION_CLOSE) != 0) {
    request_.keep_alive_ = false;
  } else {
    request_.keep_alive_ = http11 || (flags & F_CONNECTION_KEEP_ALIVE) != 0;
  }
  request_.expects_continue_ = http11 && f.expects_continue;

  im.phase = request_.chunked_ ? Impl::Phase::chunk_line : Impl::Phase::body;
  im.line_bytes = 0;
  state_ = State::body;
  try {
    callbacks_.headers_received(request_);
  } catch (...) {
    fail(500, "a headers_received callback threw");
    throw;
  }
  return true;
}

/// Reports the request complete: nothing more is consumed until resume().
void HttpRequestParser::complete_request() {
  FieldSection& trailers = impl_->trailers;
  if (!trailers.positions.empty()) request_.trailers_ = trailers.build();
  state_ = State::complete;
  ++requests_completed_;
  try {
    callbacks_.request_received(request_);
  } catch (...) {
    fail(500, "a request_received callback threw");
    throw;
  }
}

void HttpRequestParser::swap_head(HttpHeadStorage& storage) {
  if (state_ != State::body && state_ != State::complete) return;
  Impl& im = *impl_;
  const char* const before = im.head_bytes().data();
  if (im.head_input.data() != nullptr) {  // viewed in the input: copied now
    im.head.bytes.assign(im.head_input);
    im.head_input = {};
  }
  im.head.bytes.swap(storage.bytes);
  im.head.views.swap(storage.fields);  // a vector's swap keeps its elements where they are
  const char* const after = storage.bytes.data();
  if (after == before) return;
  // The bytes were in the input, or short enough to sit inside the string object and were
  // copied: point the views at their new place.
  const auto rebase = [&](std::string_view v) {
    return std::string_view(after + (v.data() - before), v.size());
  };
  request_.target_ = rebase(request_.target_);
  for (HttpHeader& h : storage.fields) {
    h.name = rebase(h.name);
    h.value = rebase(h.value);
  }
}

void HttpRequestParser::feed_eof() {
  switch (state_) {
    case State::idle:
      state_ = State::closed;
      break;
    case State::head:
    case State::body:
      fail(400, "connection closed in the middle of a request");
      break;
    default:
      break;
  }
}

void HttpRequestParser::resume() {
  if (state_ != State::complete) return;
  if (!request_.keep_alive_) {
    // RFC 9112 §9.6: no further request is processed. llhttp stays paused for good.
    state_ = State::closed;
    request_.clear();  // its views may point into bytes the caller now lets go of
    impl_->head_input = {};
    return;
  }
  Impl& im = *impl_;
  request_.clear();
  if (std::exchange(im.llhttp_used, false)) {
    im.reset_request();
    // Afresh, not llhttp_resume(): llhttp would carry the flags of this request's trailers
    // (a Connection: close) into the next (see the top of the file).
    llhttp_reset(&im.parser);
  } else {
    // Read by SimpleHead, which touches nothing of reset_request() but these.
    im.head.clear();
    im.head_input = {};
    im.url_end = 0;
    im.phase = Impl::Phase::head;
  }
  state_ = State::idle;
}

}  // namespace strata
