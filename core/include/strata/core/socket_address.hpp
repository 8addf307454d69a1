#pragma once
/// @file
/// SocketAddress: an IPv4, IPv6 or Unix-domain socket address held by value (the `address`
/// tuples of Python's socket module, as one type).

#include <sys/socket.h>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <iosfwd>
#include <string>
#include <string_view>

namespace strata {

/// A socket address held by value: a `sockaddr_storage` and the length of its meaningful part.
///
/// It is what the socket calls take and return (bind, connect, accept, getpeername,
/// getsockname, sendto, recvfrom): data() and size() go to the calls that read an address,
/// mutable_data(), capacity() and set_size() to those that fill one in:
/// @code
/// strata::SocketAddress peer;
/// socklen_t len = peer.capacity();
/// int fd = ::accept4(listener, peer.mutable_data(), &len, SOCK_CLOEXEC);
/// peer.set_size(len);
/// @endcode
///
/// Equality and hashing look at the meaningful fields of each family (family, port and address,
/// plus flow info and scope id for IPv6; the path for Unix-domain addresses), never at padding
/// or at bytes past size().
///
/// @par Thread safety  A value type: distinct objects may be used concurrently; one object
/// only with the usual rules (concurrent reads are fine).
class SocketAddress {
 public:
  /// An empty address: family() is AF_UNSPEC and size() is 0.
  SocketAddress() noexcept;

  /// An IPv4 or IPv6 address from its numeric text and a port (in host byte order).
  ///
  /// @p ip is parsed with inet_pton(): dotted-quad IPv4 ("127.0.0.1") or IPv6 text ("::1",
  /// "::ffff:10.0.0.1"), never a host name. An IPv6 address may end in a zone, "%<interface
  /// index>" or "%<interface name>" ("fe80::1%eth0"), which becomes the scope id.
  ///
  /// @throws std::invalid_argument  @p ip is not a numeric IPv4 or IPv6 address, or names an
  /// unknown interface; the message quotes @p ip.
  SocketAddress(std::string_view ip, std::uint16_t port);

  /// A Unix-domain address (AF_UNIX).
  ///
  /// A @p path starting with '\0' names an address in Linux's abstract namespace: the bytes
  /// after it are the name, NULs included, and nothing appears in the file system. An empty
  /// @p path makes the unnamed address (size() is sizeof(sa_family_t)), which binding turns
  /// into an auto-generated abstract name.
  ///
  /// @throws std::invalid_argument  @p path does not fit in `sun_path` (107 bytes for a file
  /// system path, whose terminating NUL must fit too; 108 for an abstract name, leading NUL
  /// included), or a file system path contains a NUL byte.
  static SocketAddress unix_path(std::string_view path);

  /// A copy of the native address @p address of @p size bytes (what getaddrinfo(),
  /// getpeername() and the like return).
  ///
  /// @throws std::invalid_argument  @p size exceeds capacity(); @p address is null while
  /// @p size is not 0; or the address is AF_INET or AF_INET6 but shorter than that family's
  /// sockaddr_in / sockaddr_in6.
  static SocketAddress from_native(const sockaddr* address, socklen_t size);

  /// The address family: AF_INET, AF_INET6, AF_UNIX, or AF_UNSPEC when empty.
  int family() const noexcept;

  /// The native address, for the calls that read one (bind, connect, sendto).
  const sockaddr* data() const noexcept { return reinterpret_cast<const sockaddr*>(&storage_); }

  /// The native address, for the calls that write one (accept, recvfrom, getsockname). Pass
  /// capacity() as the buffer length, then set_size() with the length the call returned.
  sockaddr* mutable_data() noexcept { return reinterpret_cast<sockaddr*>(&storage_); }

  /// The number of meaningful bytes at data(): the `addrlen` of the socket calls.
  socklen_t size() const noexcept { return size_; }

  /// Sets the number of meaningful bytes, after a call wrote the address at mutable_data().
  /// @throws std::invalid_argument  @p size exceeds capacity().
  void set_size(socklen_t size);

  /// The room at mutable_data(): sizeof(sockaddr_storage), enough for every family.
  static constexpr socklen_t capacity() noexcept { return sizeof(sockaddr_storage); }

  /// Whether this is the empty address (AF_UNSPEC).
  bool empty() const noexcept { return family() == AF_UNSPEC; }
  /// Whether the family is AF_INET.
  bool is_ipv4() const noexcept { return family() == AF_INET; }
  /// Whether the family is AF_INET6.
  bool is_ipv6() const noexcept { return family() == AF_INET6; }
  /// Whether the family is AF_UNIX.
  bool is_unix() const noexcept { return family() == AF_UNIX; }
  /// Whether this is a Unix-domain address in the abstract namespace (path() starts with '\0').
  bool is_abstract() const noexcept;

  /// The port in host byte order; 0 for families without ports.
  std::uint16_t port() const noexcept;

  /// The IP address as numeric text: "127.0.0.1", "::1", and for an IPv6 address with a
  /// scope id, "fe80::1%2" (the scope as a number, so that no interface lookup happens).
  /// Empty for other families.
  std::string host() const;

  /// The path of a Unix-domain address: a file system path, or '\0' followed by an abstract
  /// name; empty for the unnamed address and for other families.
  std::string path() const;

  /// A printable form: "127.0.0.1:8080", "[::1]:8080", "[fe80::1%2]:80"; for Unix-domain
  /// addresses, the path, with an abstract name shown as "@name" (as ss(8) shows it) and the
  /// unnamed address as "(unnamed)"; "(unspecified)" when empty; "family <n>" for any other
  /// family.
  std::string to_string() const;

  /// Equal when the families match and so do their meaningful fields (see the class).
  friend bool operator==(const SocketAddress& a, const SocketAddress& b) noexcept;

  /// A hash consistent with operator==; also what std::hash<SocketAddress> returns.
  std::size_t hash() const noexcept;

 private:
  /// The bytes of path(), in place.
  std::string_view path_bytes() const noexcept;

  sockaddr_storage storage_;
  socklen_t size_ = 0;
};

/// Writes to_string() to @p os.
std::ostream& operator<<(std::ostream& os, const SocketAddress& address);

}  // namespace strata

/// Hashes a SocketAddress with SocketAddress::hash(), so that it can key unordered containers.
template <>
struct std::hash<strata::SocketAddress> {
  std::size_t operator()(const strata::SocketAddress& address) const noexcept {
    return address.hash();
  }
};
