#pragma once
/// @file
/// Name resolution: the results of EventLoop::getaddrinfo() and EventLoop::getnameinfo()
/// (asyncio's loop.getaddrinfo and loop.getnameinfo), and the error category of their failures.
/// Include this header to call them:
/// @code
/// std::vector<strata::AddrInfo> infos =
///     co_await loop.getaddrinfo("localhost", "8080", AF_UNSPEC, SOCK_STREAM);
/// for (const strata::AddrInfo& info : infos) { /* try info.address in turn */ }
/// @endcode
///
/// Both run the blocking C library call on the loop's default executor and complete on the
/// loop's thread. What needs no lookup completes without the thread hop:
/// - getaddrinfo() with a numeric @p host (inet_pton() IPv4 or IPv6 text, an IPv6 zone
///   allowed) or an empty one, and a numeric (decimal, at most 65535) or empty @p port: the
///   returned Future is already done. Its results, order and errors are those %getaddrinfo(3)
///   gives for the same arguments: with @p type and @p protocol 0, one entry per socket type
///   (SOCK_STREAM/IPPROTO_TCP, SOCK_DGRAM/IPPROTO_UDP, SOCK_RAW/0, as glibc does); an IPv4
///   literal with AF_INET6 fails with EAI_ADDRFAMILY unless AI_V4MAPPED maps it, and an IPv6
///   literal with AF_INET fails so too unless it is IPv4-mapped.
/// - getaddrinfo() with a host name and AI_NUMERICHOST, which fails at once (EAI_NONAME).
/// - getnameinfo() with both NI_NUMERICHOST and NI_NUMERICSERV.
///
/// AI_IDN and AI_CANONIDN (which load an IDN library), and flags %getaddrinfo(3) does not
/// know, always take the executor.
///
/// An empty @p host means none (NULL to %getaddrinfo(3)): the loopback addresses, or with
/// AI_PASSIVE the wildcard ones. An empty @p port means none: port 0 in the results. Both
/// empty fail with EAI_NONAME.
///
/// A failed lookup fails the Future with std::system_error whose code() is in
/// resolver_category() (or in std::system_category() for EAI_SYSTEM, with the errno value),
/// and whose what() names the host and port, e.g.
/// `getaddrinfo host "no-such-host.invalid" port "80": Name or service not known`.
///
/// @par Thread safety  Call on the loop's thread; the Future completes there.
/// @par Cancellation  Cancelling the Future drops the result of a lookup already running on
/// the executor (a thread cannot be interrupted); the lookup itself runs to its end.

#include <string>
#include <system_error>
#include <vector>

#include "strata/core/event_loop.hpp"
#include "strata/core/future.hpp"
#include "strata/core/socket_address.hpp"

namespace strata {

/// One result of EventLoop::getaddrinfo(): what `struct addrinfo` holds, by value.
struct AddrInfo {
  int family = 0;         ///< AF_INET or AF_INET6 (ai_family)
  int type = 0;           ///< SOCK_STREAM, SOCK_DGRAM, SOCK_RAW... (ai_socktype)
  int protocol = 0;       ///< IPPROTO_TCP, IPPROTO_UDP... (ai_protocol)
  std::string canonname;  ///< with AI_CANONNAME, the canonical name, on the first result only
  SocketAddress address;  ///< the address and port to bind or connect to (ai_addr)

  friend bool operator==(const AddrInfo&, const AddrInfo&) = default;
};

/// The result of EventLoop::getnameinfo().
struct NameInfo {
  std::string host;     ///< the host name, or the numeric address (NI_NUMERICHOST)
  std::string service;  ///< the service name, or the numeric port (NI_NUMERICSERV)

  friend bool operator==(const NameInfo&, const NameInfo&) = default;
};

/// The category of getaddrinfo() and getnameinfo() failures: the values are the EAI_* codes
/// (EAI_NONAME, EAI_AGAIN, EAI_SERVICE...), message() is gai_strerror()'s, and name() is
/// "resolver". EAI_SYSTEM is never a value: such failures carry errno in
/// std::system_category() instead. EAI_AGAIN is equivalent to
/// std::errc::resource_unavailable_try_again, EAI_MEMORY to std::errc::not_enough_memory.
/// @par Thread safety  Any thread.
const std::error_category& resolver_category() noexcept;

}  // namespace strata
