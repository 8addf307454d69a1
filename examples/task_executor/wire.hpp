// wire.hpp: the frame syntax of the task executor's wire protocol (README.md, "Wire protocol"),
// shared by task_coordinator, task_worker and task_submit, and the small parsers their options
// need (HOST:PORT, durations).
//
// A frame is one line: a verb, fields separated by single spaces, and for some verbs a free
// text as the rest of the line, ending in "\n" (a "\r" before it is dropped). Fields are tokens
// (no space, no control character, no backslash); a text is escaped so that it holds no line
// break: "\\" for a backslash, "\n" for a newline, "\r" for a carriage return. A frame is at
// most max_frame bytes with its "\n".
#pragma once

#include <strata/core/clock.hpp>

#include <array>
#include <cerrno>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>

namespace task_executor {

/// The default bound of one frame, "\n" included (--max-frame): what a peer may make the
/// other side buffer.
constexpr std::size_t default_max_frame = 256 * 1024;
/// The most bytes of output a worker returns for one job (before escaping); longer output is
/// cut (and marked). Escaped, it doubles at worst, and stays well inside default_max_frame.
constexpr std::size_t max_output = 64 * 1024;
/// The longest token: a job id or a worker name.
constexpr std::size_t max_token = 64;

/// Whether @p text is a token: 1 to max_token bytes of [A-Za-z0-9_.:@+-].
inline bool is_token(std::string_view text) {
  if (text.empty() || text.size() > max_token) return false;
  for (const char c : text) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '_' || c == '.' || c == ':' || c == '@' || c == '+' || c == '-';
    if (!ok) return false;
  }
  return true;
}

/// @p text escaped for the wire: "\\", "\n" and "\r" for a backslash, a newline and a carriage
/// return; every other byte as it is.
inline std::string escape(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (const char c : text) {
    switch (c) {
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      default:
        out += c;
    }
  }
  return out;
}

/// The text that @p wire escapes, or std::nullopt when it holds a bad escape (a backslash
/// followed by anything but "\\", "n" or "r", or at the end).
inline std::optional<std::string> unescape(std::string_view wire) {
  std::string out;
  out.reserve(wire.size());
  for (std::size_t i = 0; i < wire.size(); ++i) {
    const char c = wire[i];
    if (c != '\\') {
      out += c;
      continue;
    }
    if (++i == wire.size()) return std::nullopt;
    switch (wire[i]) {
      case '\\':
        out += '\\';
        break;
      case 'n':
        out += '\n';
        break;
      case 'r':
        out += '\r';
        break;
      default:
        return std::nullopt;
    }
  }
  return out;
}

/// Whether @p wire is a well-formed escaped text (what unescape() accepts), without copying.
inline bool is_escaped(std::string_view wire) {
  for (std::size_t i = 0; i < wire.size(); ++i) {
    if (wire[i] != '\\') continue;
    if (++i == wire.size()) return false;
    if (wire[i] != '\\' && wire[i] != 'n' && wire[i] != 'r') return false;
  }
  return true;
}

/// A frame split into its verb, N fields and the rest of the line.
template <std::size_t N>
struct Split {
  std::array<std::string_view, N> fields{};
  std::string_view rest;  // after the N-th field and one space; empty when the line ends there
};

/// Splits @p line (without its "\n") into N space-separated fields and the rest. Returns
/// std::nullopt when there are fewer than N fields or one is empty (two spaces in a row), or
/// when @p exact and anything follows the N-th field.
template <std::size_t N>
std::optional<Split<N>> split(std::string_view line, bool exact) {
  Split<N> out;
  for (std::size_t i = 0; i < N; ++i) {
    const std::size_t space = line.find(' ');
    const std::string_view field = line.substr(0, space);
    if (field.empty()) return std::nullopt;
    out.fields[i] = field;
    if (space == std::string_view::npos) {
      if (i + 1 != N) return std::nullopt;
      line = {};
      break;
    }
    line.remove_prefix(space + 1);
    if (i + 1 == N) out.rest = line;
  }
  if (exact && !out.rest.empty()) return std::nullopt;
  return out;
}

/// @p text as a decimal number from @p min to @p max, or std::nullopt.
inline std::optional<std::uint64_t> parse_u64(std::string_view text, std::uint64_t min,
                                              std::uint64_t max) {
  if (text.empty() || text.size() > 20) return std::nullopt;
  std::uint64_t value = 0;
  for (const char c : text) {
    if (c < '0' || c > '9') return std::nullopt;
    const auto digit = static_cast<std::uint64_t>(c - '0');
    if (value > (UINT64_MAX - digit) / 10) return std::nullopt;
    value = value * 10 + digit;
  }
  if (value < min || value > max) return std::nullopt;
  return value;
}

/// The value of a duration option: a whole number with a unit, `ms`, `s` or `m` ("250ms",
/// "30s", "2m"); a bare number counts as seconds. At least @p min_ms milliseconds.
/// @throws std::invalid_argument  naming @p option and the bad value.
inline strata::Duration parse_duration(std::string_view option, std::string_view text,
                                       std::uint64_t min_ms = 1) {
  std::string_view digits = text;
  std::uint64_t scale = 1000;  // milliseconds per unit
  if (digits.ends_with("ms")) {
    digits.remove_suffix(2);
    scale = 1;
  } else if (digits.ends_with('s')) {
    digits.remove_suffix(1);
  } else if (digits.ends_with('m')) {
    digits.remove_suffix(1);
    scale = 60'000;
  }
  constexpr std::uint64_t max_ms = 7ULL * 24 * 3600 * 1000;  // a week
  const std::optional<std::uint64_t> value = parse_u64(digits, 0, max_ms / scale);
  if (!value || *value * scale < min_ms) {
    throw std::invalid_argument(std::string(option) + " must be a duration such as 250ms, 30s " +
                                "or 2m, at least " + std::to_string(min_ms) + "ms and at most " +
                                "a week, got '" + std::string(text) + "'");
  }
  return std::chrono::milliseconds(*value * scale);
}

/// Milliseconds in @p d, for messages and the WELCOME frame.
inline std::uint64_t to_ms(strata::Duration d) {
  return static_cast<std::uint64_t>(
      std::chrono::duration_cast<std::chrono::milliseconds>(d).count());
}

/// A coordinator's address, from `--connect HOST:PORT` (an IPv6 address in brackets:
/// `[::1]:7100`).
struct Endpoint {
  std::string host;
  std::uint16_t port = 0;
};

/// Parses `HOST:PORT`. @throws std::invalid_argument  naming @p option.
inline Endpoint parse_endpoint(std::string_view option, std::string_view text) {
  const auto bad = [&] {
    return std::invalid_argument(std::string(option) +
                                 " must be HOST:PORT (an IPv6 host in brackets), got '" +
                                 std::string(text) + "'");
  };
  const std::size_t colon = text.rfind(':');
  if (colon == std::string_view::npos || colon == 0) throw bad();
  std::string_view host = text.substr(0, colon);
  if (host.starts_with('[')) {
    if (!host.ends_with(']') || host.size() < 3) throw bad();
    host = host.substr(1, host.size() - 2);
  } else if (host.find(':') != std::string_view::npos) {
    throw bad();
  }
  const std::optional<std::uint64_t> port = parse_u64(text.substr(colon + 1), 1, 65535);
  if (!port) throw bad();
  return Endpoint{std::string(host), static_cast<std::uint16_t>(*port)};
}

/// One line of a reader's buffer without its "\n" (and without a "\r" before it).
inline std::string_view chomp(std::string_view line) {
  if (line.ends_with('\n')) line.remove_suffix(1);
  if (line.ends_with('\r')) line.remove_suffix(1);
  return line;
}

}  // namespace task_executor
