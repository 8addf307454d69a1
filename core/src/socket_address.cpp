#include "strata/core/socket_address.hpp"

#include <arpa/inet.h>
#include <net/if.h>
#include <netinet/in.h>
#include <sys/un.h>

#include <charconv>
#include <cstddef>
#include <cstring>
#include <ostream>
#include <stdexcept>
#include <string>

namespace strata {

namespace {

constexpr socklen_t path_offset = offsetof(sockaddr_un, sun_path);
constexpr std::size_t path_capacity = sizeof(sockaddr_un::sun_path);

/// Parses the zone of "fe80::1%<zone>": an interface index, or an interface name.
std::uint32_t parse_scope(std::string_view zone, std::string_view ip) {
  if (zone.empty()) {
    throw std::invalid_argument("empty IPv6 zone in \"" + std::string(ip) + "\"");
  }
  std::uint32_t index = 0;
  auto [end, ec] = std::from_chars(zone.data(), zone.data() + zone.size(), index);
  if (ec == std::errc() && end == zone.data() + zone.size()) return index;
  index = ::if_nametoindex(std::string(zone).c_str());
  if (index == 0) {
    throw std::invalid_argument("unknown network interface \"" + std::string(zone) +
                                "\" in IPv6 address \"" + std::string(ip) + "\"");
  }
  return index;
}

/// FNV-1a, fed field by field.
class Hasher {
 public:
  void add(const void* data, std::size_t size) noexcept {
    const auto* p = static_cast<const unsigned char*>(data);
    for (std::size_t i = 0; i < size; ++i) {
      value_ = (value_ ^ p[i]) * 1099511628211ULL;
    }
  }
  template <class T>
  void add(const T& value) noexcept {
    add(&value, sizeof value);
  }
  std::size_t value() const noexcept { return static_cast<std::size_t>(value_); }

 private:
  std::uint64_t value_ = 14695981039346656037ULL;
};

}  // namespace

SocketAddress::SocketAddress() noexcept : storage_{} {}

SocketAddress::SocketAddress(std::string_view ip, std::uint16_t port) : storage_{} {
  std::string text(ip.substr(0, ip.find('%')));
  in_addr v4{};
  if (text.size() == ip.size() && ::inet_pton(AF_INET, text.c_str(), &v4) == 1) {
    auto& sin = reinterpret_cast<sockaddr_in&>(storage_);
    sin.sin_family = AF_INET;
    sin.sin_port = htons(port);
    sin.sin_addr = v4;
    size_ = sizeof(sockaddr_in);
    return;
  }
  in6_addr v6{};
  if (::inet_pton(AF_INET6, text.c_str(), &v6) == 1) {
    auto& sin6 = reinterpret_cast<sockaddr_in6&>(storage_);
    sin6.sin6_family = AF_INET6;
    sin6.sin6_port = htons(port);
    sin6.sin6_addr = v6;
    if (text.size() != ip.size()) sin6.sin6_scope_id = parse_scope(ip.substr(text.size() + 1), ip);
    size_ = sizeof(sockaddr_in6);
    return;
  }
  throw std::invalid_argument("not a numeric IPv4 or IPv6 address: \"" + std::string(ip) + "\"");
}

SocketAddress SocketAddress::unix_path(std::string_view path) {
  const bool abstract = !path.empty() && path.front() == '\0';
  if (abstract ? path.size() > path_capacity : path.size() >= path_capacity) {
    throw std::invalid_argument("Unix socket path too long: " + std::to_string(path.size()) +
                                " bytes, at most " +
                                std::to_string(abstract ? path_capacity : path_capacity - 1) +
                                (abstract ? " for an abstract name" : " for a path"));
  }
  if (!abstract && path.find('\0') != std::string_view::npos) {
    throw std::invalid_argument("Unix socket path contains a NUL byte");
  }
  SocketAddress address;
  auto& sun = reinterpret_cast<sockaddr_un&>(address.storage_);
  sun.sun_family = AF_UNIX;
  std::memcpy(sun.sun_path, path.data(), path.size());
  // A file system path carries its terminating NUL, as getsockname() reports it; an abstract
  // name is exactly its bytes; the unnamed address is the family alone.
  address.size_ = static_cast<socklen_t>(path_offset + path.size() +
                                         (abstract || path.empty() ? 0 : 1));
  return address;
}

SocketAddress SocketAddress::from_native(const sockaddr* address, socklen_t size) {
  if (size > capacity()) {
    throw std::invalid_argument("socket address of " + std::to_string(size) +
                                " bytes exceeds sockaddr_storage (" + std::to_string(capacity()) +
                                " bytes)");
  }
  if (address == nullptr && size != 0) {
    throw std::invalid_argument("null socket address with a size of " + std::to_string(size));
  }
  SocketAddress result;
  if (size == 0) return result;
  std::memcpy(&result.storage_, address, size);
  result.size_ = size;
  const int family = result.family();
  if ((family == AF_INET && size < sizeof(sockaddr_in)) ||
      (family == AF_INET6 && size < sizeof(sockaddr_in6))) {
    throw std::invalid_argument("truncated " + std::string(family == AF_INET ? "IPv4" : "IPv6") +
                                " socket address: " + std::to_string(size) + " bytes");
  }
  return result;
}

int SocketAddress::family() const noexcept {
  return size_ >= sizeof(sa_family_t) ? storage_.ss_family : AF_UNSPEC;
}

void SocketAddress::set_size(socklen_t size) {
  if (size > capacity()) {
    throw std::invalid_argument("socket address size " + std::to_string(size) +
                                " exceeds capacity " + std::to_string(capacity()));
  }
  size_ = size;
}

bool SocketAddress::is_abstract() const noexcept {
  return is_unix() && size_ > path_offset &&
         reinterpret_cast<const sockaddr_un&>(storage_).sun_path[0] == '\0';
}

std::uint16_t SocketAddress::port() const noexcept {
  switch (family()) {
    case AF_INET: return ntohs(reinterpret_cast<const sockaddr_in&>(storage_).sin_port);
    case AF_INET6: return ntohs(reinterpret_cast<const sockaddr_in6&>(storage_).sin6_port);
    default: return 0;
  }
}

std::string SocketAddress::host() const {
  char text[INET6_ADDRSTRLEN] = {};
  switch (family()) {
    case AF_INET: {
      const auto& sin = reinterpret_cast<const sockaddr_in&>(storage_);
      ::inet_ntop(AF_INET, &sin.sin_addr, text, sizeof text);
      return text;
    }
    case AF_INET6: {
      const auto& sin6 = reinterpret_cast<const sockaddr_in6&>(storage_);
      ::inet_ntop(AF_INET6, &sin6.sin6_addr, text, sizeof text);
      std::string result = text;
      if (sin6.sin6_scope_id != 0) result += '%' + std::to_string(sin6.sin6_scope_id);
      return result;
    }
    default: return {};
  }
}

std::string_view SocketAddress::path_bytes() const noexcept {
  if (!is_unix() || size_ <= path_offset) return {};
  const char* p = reinterpret_cast<const sockaddr_un&>(storage_).sun_path;
  const std::size_t n = size_ - path_offset;
  if (p[0] == '\0') return {p, n};    // abstract: every byte counts
  return {p, ::strnlen(p, n)};       // file system path: up to the NUL, if any
}

std::string SocketAddress::path() const { return std::string(path_bytes()); }

std::string SocketAddress::to_string() const {
  switch (family()) {
    case AF_UNSPEC: return "(unspecified)";
    case AF_INET: return host() + ':' + std::to_string(port());
    case AF_INET6: return '[' + host() + "]:" + std::to_string(port());
    case AF_UNIX: {
      std::string p = path();
      if (p.empty()) return "(unnamed)";
      if (p.front() == '\0') p.front() = '@';
      return p;
    }
    default: return "family " + std::to_string(family());
  }
}

bool operator==(const SocketAddress& a, const SocketAddress& b) noexcept {
  const int family = a.family();
  if (family != b.family()) return false;
  switch (family) {
    case AF_UNSPEC: return true;
    case AF_INET: {
      const auto& x = reinterpret_cast<const sockaddr_in&>(a.storage_);
      const auto& y = reinterpret_cast<const sockaddr_in&>(b.storage_);
      return x.sin_port == y.sin_port && x.sin_addr.s_addr == y.sin_addr.s_addr;
    }
    case AF_INET6: {
      const auto& x = reinterpret_cast<const sockaddr_in6&>(a.storage_);
      const auto& y = reinterpret_cast<const sockaddr_in6&>(b.storage_);
      return x.sin6_port == y.sin6_port && x.sin6_flowinfo == y.sin6_flowinfo &&
             x.sin6_scope_id == y.sin6_scope_id &&
             std::memcmp(&x.sin6_addr, &y.sin6_addr, sizeof x.sin6_addr) == 0;
    }
    case AF_UNIX: return a.path_bytes() == b.path_bytes();
    default:
      return a.size_ == b.size_ && std::memcmp(&a.storage_, &b.storage_, a.size_) == 0;
  }
}

std::size_t SocketAddress::hash() const noexcept {
  Hasher h;
  const int fam = family();
  h.add(fam);
  switch (fam) {
    case AF_UNSPEC: break;
    case AF_INET: {
      const auto& sin = reinterpret_cast<const sockaddr_in&>(storage_);
      h.add(sin.sin_port);
      h.add(sin.sin_addr.s_addr);
      break;
    }
    case AF_INET6: {
      const auto& sin6 = reinterpret_cast<const sockaddr_in6&>(storage_);
      h.add(sin6.sin6_port);
      h.add(sin6.sin6_flowinfo);
      h.add(sin6.sin6_scope_id);
      h.add(sin6.sin6_addr);
      break;
    }
    case AF_UNIX: {
      const std::string_view path = path_bytes();
      h.add(path.data(), path.size());
      break;
    }
    default: h.add(&storage_, size_);
  }
  return h.value();
}

std::ostream& operator<<(std::ostream& os, const SocketAddress& address) {
  return os << address.to_string();
}

}  // namespace strata
