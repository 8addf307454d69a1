// EventLoop::getaddrinfo() and EventLoop::getnameinfo(): the C library's resolver on the
// default executor, and the inline paths for what needs no lookup.

#include "strata/core/resolver.hpp"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <cerrno>
#include <charconv>
#include <cstring>
#include <exception>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "strata/core/errors.hpp"
#include "strata/core/executor.hpp"

namespace strata {

namespace {

class ResolverCategory final : public std::error_category {
 public:
  const char* name() const noexcept override { return "resolver"; }
  std::string message(int value) const override { return ::gai_strerror(value); }
  std::error_condition default_error_condition(int value) const noexcept override {
    switch (value) {
      case EAI_AGAIN: return std::errc::resource_unavailable_try_again;
      case EAI_MEMORY: return std::errc::not_enough_memory;
      default: return {value, *this};
    }
  }
};

/// The error of a failed ::getaddrinfo()/::getnameinfo() returning @p rc; EAI_SYSTEM carries
/// @p saved_errno.
std::error_code resolver_error(int rc, int saved_errno) noexcept {
  if (rc == EAI_SYSTEM) return {saved_errno, std::system_category()};
  return {rc, resolver_category()};
}

std::string quoted(std::string_view text) {
  std::string out;
  out.reserve(text.size() + 2);
  out += '"';
  out += text;
  out += '"';
  return out;
}

std::system_error getaddrinfo_error(std::error_code ec, std::string_view host,
                                    std::string_view port) {
  return std::system_error(ec, "getaddrinfo host " + quoted(host) + " port " + quoted(port));
}

std::system_error getnameinfo_error(std::error_code ec, const SocketAddress& address) {
  return std::system_error(ec, "getnameinfo " + address.to_string());
}

struct AddrInfoDeleter {
  void operator()(addrinfo* list) const noexcept { ::freeaddrinfo(list); }
};
using AddrInfoList = std::unique_ptr<addrinfo, AddrInfoDeleter>;

/// ::getaddrinfo() itself; blocks for as long as the lookup takes. An empty @p host or
/// @p port is passed as NULL.
std::vector<AddrInfo> call_getaddrinfo(const std::string& host, const std::string& port,
                                       const addrinfo& hints) {
  addrinfo* raw = nullptr;
  const int rc = ::getaddrinfo(host.empty() ? nullptr : host.c_str(),
                               port.empty() ? nullptr : port.c_str(), &hints, &raw);
  const int saved_errno = errno;
  AddrInfoList list(raw);
  if (rc != 0) throw getaddrinfo_error(resolver_error(rc, saved_errno), host, port);
  std::vector<AddrInfo> infos;
  for (const addrinfo* p = list.get(); p != nullptr; p = p->ai_next) {
    AddrInfo& info = infos.emplace_back();
    info.family = p->ai_family;
    info.type = p->ai_socktype;
    info.protocol = p->ai_protocol;
    if (p->ai_canonname != nullptr) info.canonname = p->ai_canonname;
    info.address = SocketAddress::from_native(p->ai_addr, p->ai_addrlen);
  }
  return infos;
}

/// ::getnameinfo() itself; blocks for as long as the lookup takes.
NameInfo call_getnameinfo(const SocketAddress& address, int flags) {
  char host[NI_MAXHOST];
  char service[256];  // NI_MAXSERV (32) is too short for the path of a Unix-domain address
  const int rc = ::getnameinfo(address.data(), address.size(), host, sizeof host, service,
                               sizeof service, flags);
  const int saved_errno = errno;
  if (rc != 0) throw getnameinfo_error(resolver_error(rc, saved_errno), address);
  return NameInfo{host, service};
}

// ---- The inline path of getaddrinfo() ------------------------------------------------------

/// The AI_* flags glibc's getaddrinfo() knows apart from the IDN ones.
constexpr int plain_flags = AI_PASSIVE | AI_CANONNAME | AI_NUMERICHOST | AI_V4MAPPED | AI_ALL |
                            AI_ADDRCONFIG | AI_NUMERICSERV;

/// What ::getaddrinfo() accepts as "no host" or "no service": NULL (empty here) or "*".
bool is_none(std::string_view name) noexcept { return name.empty() || name == "*"; }

/// A port that ::getaddrinfo() takes as a number and that fits: decimal digits, <= 65535.
std::optional<std::uint16_t> numeric_port(std::string_view port) noexcept {
  if (port.empty()) return std::nullopt;
  for (char c : port) {
    if (c < '0' || c > '9') return std::nullopt;
  }
  unsigned value = 0;
  auto [end, ec] = std::from_chars(port.data(), port.data() + port.size(), value);
  if (ec != std::errc() || end != port.data() + port.size() || value > 65535) return std::nullopt;
  return static_cast<std::uint16_t>(value);
}

/// A numeric host: inet_pton() IPv4 text, or IPv6 text with an optional "%zone".
struct NumericHost {
  int family = AF_UNSPEC;  ///< AF_UNSPEC: not numeric
  in_addr v4{};
  in6_addr v6{};
  bool has_zone = false;
};

NumericHost parse_numeric_host(const std::string& host) {
  NumericHost h;
  const std::size_t percent = host.find('%');
  if (percent == std::string::npos && ::inet_pton(AF_INET, host.c_str(), &h.v4) == 1) {
    h.family = AF_INET;
  } else if (::inet_pton(AF_INET6, host.substr(0, percent).c_str(), &h.v6) == 1) {
    h.family = AF_INET6;
    h.has_zone = percent != std::string::npos;
  }
  return h;
}

/// The socket types and protocols glibc returns (gaih_inet_typeproto in getaddrinfo.c).
struct TypeProto {
  int type;
  int protocol;
  bool any_protocol;  ///< matches any requested protocol, and returns it (GAI_PROTO_PROTOANY)
  bool no_service;    ///< a service may not be given (GAI_PROTO_NOSERV)
  bool by_default;    ///< returned when neither type nor protocol is asked for
};
constexpr TypeProto type_protos[] = {
    {SOCK_STREAM, IPPROTO_TCP, false, false, true},
    {SOCK_DGRAM, IPPROTO_UDP, false, false, true},
    {SOCK_DCCP, IPPROTO_DCCP, false, false, false},
    {SOCK_DGRAM, IPPROTO_UDPLITE, false, false, false},
    {SOCK_STREAM, IPPROTO_SCTP, false, false, false},
    {SOCK_SEQPACKET, IPPROTO_SCTP, false, false, false},
    {SOCK_RAW, 0, true, true, true},
};

struct SocketKind {
  int type;
  int protocol;
};

/// The (type, protocol) pairs of the results, as glibc's get_servtuples() picks them; 0 or an
/// EAI_* code.
int socket_kinds(int type, int protocol, bool has_service, std::vector<SocketKind>& out) {
  if (type == 0 && protocol == 0) {
    for (const TypeProto& tp : type_protos) {
      if (tp.by_default) out.push_back({tp.type, tp.protocol});
    }
    return 0;
  }
  for (const TypeProto& tp : type_protos) {
    if (type != 0 && type != tp.type) continue;
    if (protocol != 0 && !tp.any_protocol && protocol != tp.protocol) continue;
    if (has_service && tp.no_service) return EAI_SERVICE;
    out.push_back({tp.type, tp.any_protocol ? protocol : tp.protocol});
    return 0;
  }
  return type != 0 ? EAI_SOCKTYPE : EAI_SERVICE;
}

/// What ::getaddrinfo() gives, computed without calling it.
struct Emulated {
  int error = 0;  ///< an EAI_* code, or 0 for infos
  std::vector<AddrInfo> infos;
};

/// Emulates glibc's getaddrinfo() for a numeric or absent host and a numeric or absent port,
/// in the cases where the answer depends on nothing but the arguments: one address, and no
/// AI_ADDRCONFIG (which looks at the configured interfaces) or IPv6 zone (which may name an
/// interface). Returns nullopt for the other cases. Follows getaddrinfo() and gaih_inet() of
/// glibc 2.36, check by check; test_resolver.cpp compares the two.
std::optional<Emulated> emulate_getaddrinfo(const std::string& host, const NumericHost& numeric,
                                            std::optional<std::uint16_t> port, int family,
                                            int type, int protocol, int flags) {
  const bool no_host = is_none(host);
  if (no_host && !port) return Emulated{EAI_NONAME, {}};
  if ((flags & AI_CANONNAME) != 0 && no_host) return Emulated{EAI_BADFLAGS, {}};
  if (family != AF_UNSPEC && family != AF_INET && family != AF_INET6) {
    return Emulated{EAI_FAMILY, {}};
  }
  if ((flags & AI_ADDRCONFIG) != 0 || numeric.has_zone) return std::nullopt;
  if (no_host && family == AF_UNSPEC) return std::nullopt;  // two addresses, sorted per RFC 6724
  if (!no_host && numeric.family == AF_UNSPEC) return std::nullopt;  // a name, AI_NUMERICHOST

  std::vector<SocketKind> kinds;
  if (int rc = socket_kinds(type, protocol, port.has_value(), kinds); rc != 0) {
    return Emulated{rc, {}};
  }

  // The one address, as (family, bytes).
  int address_family = AF_UNSPEC;
  in_addr v4{};
  in6_addr v6{};
  if (no_host) {
    const bool passive = (flags & AI_PASSIVE) != 0;
    address_family = family;
    v4.s_addr = htonl(passive ? INADDR_ANY : INADDR_LOOPBACK);
    v6 = passive ? in6addr_any : in6addr_loopback;
  } else if (numeric.family == AF_INET) {
    if (family == AF_UNSPEC || family == AF_INET) {
      address_family = AF_INET;
      v4 = numeric.v4;
    } else if ((flags & AI_V4MAPPED) != 0) {  // AF_INET6: ::ffff:a.b.c.d
      address_family = AF_INET6;
      v6.s6_addr[10] = 0xff;
      v6.s6_addr[11] = 0xff;
      std::memcpy(&v6.s6_addr[12], &numeric.v4, 4);
    } else {
      return Emulated{EAI_ADDRFAMILY, {}};
    }
  } else {  // AF_INET6
    if (family == AF_UNSPEC || family == AF_INET6) {
      address_family = AF_INET6;
      v6 = numeric.v6;
    } else if (IN6_IS_ADDR_V4MAPPED(&numeric.v6)) {  // AF_INET: the IPv4 address inside
      address_family = AF_INET;
      std::memcpy(&v4, &numeric.v6.s6_addr[12], 4);
    } else {
      return Emulated{EAI_ADDRFAMILY, {}};
    }
  }

  SocketAddress address;
  if (address_family == AF_INET) {
    sockaddr_in sin{};
    sin.sin_family = AF_INET;
    sin.sin_port = htons(port.value_or(0));
    sin.sin_addr = v4;
    address = SocketAddress::from_native(reinterpret_cast<const sockaddr*>(&sin), sizeof sin);
  } else {
    sockaddr_in6 sin6{};
    sin6.sin6_family = AF_INET6;
    sin6.sin6_port = htons(port.value_or(0));
    sin6.sin6_addr = v6;
    address = SocketAddress::from_native(reinterpret_cast<const sockaddr*>(&sin6), sizeof sin6);
  }
  Emulated result;
  for (const SocketKind& kind : kinds) {
    result.infos.push_back(AddrInfo{address_family, kind.type, kind.protocol, {}, address});
  }
  if ((flags & AI_CANONNAME) != 0) result.infos.front().canonname = host;
  return result;
}

}  // namespace

const std::error_category& resolver_category() noexcept {
  static const ResolverCategory category;
  return category;
}

Future<std::vector<AddrInfo>> EventLoop::getaddrinfo(std::string host, std::string port,
                                                     int family, int type, int protocol,
                                                     int flags) {
  if (is_closed()) throw EventLoopError("Event loop is closed");
  if (debug_) check_thread("getaddrinfo");

  addrinfo hints{};
  hints.ai_family = family;
  hints.ai_socktype = type;
  hints.ai_protocol = protocol;
  hints.ai_flags = flags;

  // Whether ::getaddrinfo() would look anything up: a host name (unless AI_NUMERICHOST forbids
  // it), a service name, or IDN processing.
  const NumericHost numeric = is_none(host) ? NumericHost{} : parse_numeric_host(host);
  const std::optional<std::uint16_t> port_number = numeric_port(port);
  const bool host_ok = is_none(host) || numeric.family != AF_UNSPEC || (flags & AI_NUMERICHOST);
  const bool port_ok = is_none(port) || port_number.has_value();
  if (!host_ok || !port_ok || (flags & ~plain_flags) != 0) {
    auto lookup = [host = std::move(host), port = std::move(port), hints] {
      return call_getaddrinfo(host, port, hints);
    };
    return strata::run_in_executor(*this, nullptr, std::move(lookup));
  }

  Future<std::vector<AddrInfo>> future(*this);
  try {
    std::optional<Emulated> emulated =
        emulate_getaddrinfo(host, numeric, is_none(port) ? std::nullopt : port_number, family,
                            type, protocol, flags);
    if (!emulated) {
      // Nothing to look up, but the answer depends on the interfaces or the routing table:
      // ask ::getaddrinfo(), forbidding it any lookup.
      hints.ai_flags |= AI_NUMERICHOST | AI_NUMERICSERV;
      future.set_result(call_getaddrinfo(host, port, hints));
    } else if (emulated->error != 0) {
      future.set_exception(getaddrinfo_error(resolver_error(emulated->error, 0), host, port));
    } else {
      future.set_result(std::move(emulated->infos));
    }
  } catch (const std::system_error&) {
    future.set_exception(std::current_exception());
  }
  return future;
}

Future<NameInfo> EventLoop::getnameinfo(const SocketAddress& address, int flags) {
  if (is_closed()) throw EventLoopError("Event loop is closed");
  if (debug_) check_thread("getnameinfo");

  if ((flags & NI_NUMERICHOST) != 0 && (flags & NI_NUMERICSERV) != 0) {
    Future<NameInfo> future(*this);
    try {
      future.set_result(call_getnameinfo(address, flags));
    } catch (const std::system_error&) {
      future.set_exception(std::current_exception());
    }
    return future;
  }
  return strata::run_in_executor(*this, nullptr, [address, flags] {
    return call_getnameinfo(address, flags);
  });
}

}  // namespace strata
