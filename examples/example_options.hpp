// example_options.hpp: the command-line parsing the example programs share. Every function
// reports a bad argument by throwing std::invalid_argument (or SslError for a certificate, key
// or CA file that cannot be loaded) with the message the program prints after "PROGRAM: " (and
// then exits 2).
#pragma once

#include <strata/core/event_loop.hpp>
#include <strata/transports/ssl.hpp>

#include <algorithm>
#include <cerrno>
#include <cstdio>
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

/// The value of --loop: empty for "selector" (the best available backend), else the LoopKind
/// ("proactor" too). A loop that this build or this kernel lacks is refused as "not available
/// in this build".
inline std::optional<LoopKind> parse_loop(std::string_view name,
                                          UnknownLoop unknown = UnknownLoop::choices) {
  if (name == "selector") return std::nullopt;
  LoopKind kind;
  try {
    kind = parse_loop_kind(name);
  } catch (const std::invalid_argument&) {
    if (unknown == UnknownLoop::loop_kind) throw;
    throw std::invalid_argument("--loop must be selector, proactor, epoll, poll or select, got '" +
                                std::string(name) + "'");
  }
  const auto& kinds = available_loop_kinds();
  if (std::find(kinds.begin(), kinds.end(), kind) == kinds.end()) {
    throw std::invalid_argument("--loop " + std::string(name) +
                                ": not available in this build or on this kernel");
  }
  return kind;
}

/// Prints, after a program's --help, which backend each --loop value runs on here, e.g.
/// "selector: epoll; proactor: proactor/io_uring".
inline void print_loop_backends() {
  std::string line = "loops here: selector = " + std::string(to_string(available_loop_kinds().front()));
  try {
    auto loop = new_event_loop(LoopKind::proactor);
    line += "; proactor = " + std::string(loop->backend_name());
    loop->close();
  } catch (const std::exception&) {
    line += "; proactor: not available";
  }
  std::printf("%s\n", line.c_str());
}

/// The error for an option name the program does not know.
inline std::invalid_argument unknown_option(std::string_view name) {
  return std::invalid_argument("unknown option '" + std::string(name) + "' (see --help)");
}

/// One argument: an option name and its value, a flag with no value, or (for a cursor that
/// allows them) a positional argument, with an empty name.
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

  /// Makes next() return a word that is not an option as a positional argument (an empty
  /// name, the word as value) instead of throwing.
  ArgumentCursor& allow_positionals() noexcept {
    positionals_ = true;
    return *this;
  }

  /// The next argument, or empty at the end. Throws for a word that is not an option (unless
  /// allow_positionals()), and for an option with no value after it.
  std::optional<Argument> next() {
    if (i_ >= argc_) return std::nullopt;
    const std::string_view name = argv_[i_++];
    for (std::string_view flag : flags_) {
      if (name == flag) return Argument{name, nullptr};
    }
    if (positionals_ && !name.starts_with("-")) return Argument{{}, argv_[i_ - 1]};
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
  bool positionals_ = false;
};

// ---- TLS ----------------------------------------------------------------------------------------

/// A server's `--tls-cert FILE --tls-key FILE`: its certificate chain and private key (PEM).
class ServerTlsOptions {
 public:
  static constexpr const char* usage =
      "  --tls-cert FILE --tls-key FILE\n"
      "                        serve TLS instead of plain TCP, with this certificate chain and\n"
      "                        private key (PEM; scripts/make_cert.sh makes a throwaway pair)\n";

  /// Takes @p name when it is one of the TLS options; returns whether it was.
  bool take(std::string_view name, const char* value) {
    if (name == "--tls-cert") {
      cert_ = value;
    } else if (name == "--tls-key") {
      key_ = value;
    } else {
      return false;
    }
    return true;
  }

  /// Whether either option was given.
  bool enabled() const noexcept { return cert_ || key_; }

  /// The server context (SslPurpose::client_auth) holding the certificate and key, or empty
  /// when neither option was given.
  /// @throws std::invalid_argument  only one of the two was given.
  /// @throws SslError  they cannot be loaded (a missing or unreadable file, a key that does not
  /// match the certificate); what() names the file.
  std::optional<SslContext> load() const {
    if (!enabled()) return std::nullopt;
    if (!cert_ || !key_) {
      throw std::invalid_argument("--tls-cert and --tls-key must be given together (see --help)");
    }
    SslContext context = SslContext::create_default_context(SslPurpose::client_auth);
    context.load_cert_chain(*cert_, *key_);
    return context;
  }

 private:
  std::optional<std::string> cert_;
  std::optional<std::string> key_;
};

/// A client's `--tls`, `--cafile FILE`, `--server-hostname NAME` and `--insecure`: whether and
/// how it speaks TLS. `--tls` and `--insecure` are flags (list them in ArgumentCursor's flags).
class ClientTlsOptions {
 public:
  static constexpr const char* usage =
      "  --tls              speak TLS, verifying the server against the system's CA store\n"
      "  --cafile FILE      speak TLS, trusting only the CA certificates in FILE (PEM)\n"
      "  --server-hostname NAME\n"
      "                     the name sent in SNI and checked against the server's\n"
      "                     certificate (default: --host)\n"
      "  --insecure         speak TLS without verifying the server (tests only)\n";

  /// Takes @p name when it is one of the TLS options; returns whether it was. @p value is null
  /// for the flags.
  bool take(std::string_view name, const char* value) {
    if (name == "--tls") {
      tls_ = true;
    } else if (name == "--insecure") {
      insecure_ = true;
    } else if (name == "--cafile") {
      cafile_ = value;
    } else if (name == "--server-hostname") {
      server_hostname_ = value;
    } else {
      return false;
    }
    return true;
  }

  /// Whether TLS was asked for (--tls, --cafile or --insecure).
  bool enabled() const noexcept { return tls_ || insecure_ || cafile_; }

  /// The `ssl` option for ConnectOptions, or empty without TLS. Its server_hostname is empty
  /// unless --server-hostname was given: create_connection() then checks the host.
  /// @throws std::invalid_argument  --insecure with --cafile, or --server-hostname without TLS.
  /// @throws SslError  the --cafile cannot be loaded; what() names the file.
  std::optional<SslOptions> load() const {
    if (!enabled()) {
      if (server_hostname_) {
        throw std::invalid_argument("--server-hostname needs --tls, --cafile or --insecure");
      }
      return std::nullopt;
    }
    if (insecure_ && cafile_) {
      throw std::invalid_argument("--insecure and --cafile exclude each other: --insecure "
                                  "trusts any certificate");
    }
    SslOptions ssl = make_context();
    if (server_hostname_) ssl.server_hostname = *server_hostname_;
    return ssl;
  }

 private:
  SslContext make_context() const {
    if (insecure_) {
      SslContext context;  // bare: nothing trusted, nothing checked
      context.set_check_hostname(false);
      context.set_verify_mode(VerifyMode::none);
      return context;
    }
    if (!cafile_) return SslContext::create_default_context(SslPurpose::server_auth);
    // As Python's create_default_context(cafile=...): this CA, not the system's store.
    SslContext context;
    context.set_check_hostname(true);  // and so verify_mode required
    context.load_verify_locations(*cafile_);
    return context;
  }

  bool tls_ = false;
  bool insecure_ = false;
  std::optional<std::string> cafile_;
  std::optional<std::string> server_hostname_;
};

}  // namespace strata::examples
