// example_options.hpp: the command-line parsing the example programs share. Every function
// reports a bad argument by throwing std::invalid_argument with the message the program prints
// after "PROGRAM: " (and then exits 2).
#pragma once

#include <strata/core/event_loop.hpp>

#include <cerrno>
#include <cstdlib>
#include <initializer_list>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace strata::examples {

/// The value of @p option: a decimal whole number from @p min to @p max.
inline unsigned long long parse_number(std::string_view option, const char* text,
                                       unsigned long long min, unsigned long long max) {
  char* end = nullptr;
  errno = 0;
  const unsigned long long value = std::strtoull(text, &end, 10);
  if (*text == '\0' || *text == '-' || *end != '\0' || errno != 0 || value < min || value > max) {
    throw std::invalid_argument(std::string(option) + " must be a whole number from " +
                                std::to_string(min) + " to " + std::to_string(max) + ", got '" +
                                text + "'");
  }
  return value;
}

/// How parse_loop() words an unknown loop name.
enum class UnknownLoop {
  choices,   // "--loop must be selector, proactor, epoll, poll or select, got 'NAME'"
  loop_kind  // strata::parse_loop_kind()'s own message
};

/// The value of --loop: empty for "selector" (the best available backend), else the LoopKind.
/// "proactor" is refused as not available in this build.
inline std::optional<LoopKind> parse_loop(std::string_view name,
                                          UnknownLoop unknown = UnknownLoop::choices) {
  if (name == "selector") return std::nullopt;
  if (name == "proactor") {
    throw std::invalid_argument(
        "--loop proactor: not available in this build (the proactor loop is not "
        "implemented yet)");
  }
  try {
    return parse_loop_kind(name);
  } catch (const std::invalid_argument&) {
    if (unknown == UnknownLoop::loop_kind) throw;
    throw std::invalid_argument("--loop must be selector, proactor, epoll, poll or select, got '" +
                                std::string(name) + "'");
  }
}

/// The error for an option name the program does not know.
inline std::invalid_argument unknown_option(std::string_view name) {
  return std::invalid_argument("unknown option '" + std::string(name) + "' (see --help)");
}

/// One argument: an option name and its value, or a flag with no value.
struct Argument {
  std::string_view name;
  const char* value = nullptr;  // null for a flag
};

/// Walks argv[1..argc) as `--name value` pairs and the flags given (which take no value).
class ArgumentCursor {
 public:
  /// @p unexpected_suffix ends the message for an argument that is neither a flag nor `--name`.
  ArgumentCursor(int argc, char** argv, std::initializer_list<std::string_view> flags,
                 std::string_view unexpected_suffix = " (see --help)")
      : argc_(argc), argv_(argv), flags_(flags), unexpected_suffix_(unexpected_suffix) {}

  /// The next argument, or empty at the end. Throws for a word that is not an option, and for
  /// an option with no value after it.
  std::optional<Argument> next() {
    if (i_ >= argc_) return std::nullopt;
    const std::string_view name = argv_[i_++];
    for (std::string_view flag : flags_) {
      if (name == flag) return Argument{name, nullptr};
    }
    if (!name.starts_with("--")) {
      throw std::invalid_argument("unexpected argument '" + std::string(name) + "'" +
                                  std::string(unexpected_suffix_));
    }
    if (i_ >= argc_) throw std::invalid_argument(std::string(name) + " needs a value");
    return Argument{name, argv_[i_++]};
  }

 private:
  int argc_;
  char** argv_;
  int i_ = 1;
  std::vector<std::string_view> flags_;
  std::string_view unexpected_suffix_;
};

}  // namespace strata::examples
