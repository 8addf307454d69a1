#pragma once
/// @file
/// TCP: create_connection() and create_server() (asyncio's loop.create_connection and
/// loop.create_server), with their options.

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "strata/core/clock.hpp"
#include "strata/core/coro.hpp"
#include "strata/core/socket_address.hpp"
#include "strata/transports/connection.hpp"
#include "strata/transports/detail/typed_connection.hpp"
#include "strata/transports/protocol_factory.hpp"
#include "strata/transports/server.hpp"
#include "strata/transports/ssl.hpp"

namespace strata {

/// The local end create_connection() binds before connecting (asyncio's local_addr).
struct LocalAddress {
  /// Binds to @p address as is: a numeric address, and a port (0 for an ephemeral one).
  LocalAddress(SocketAddress address) : address(std::move(address)) {}  // NOLINT: converts
  /// Binds to what @p host (a name or a numeric address) and @p port resolve to, with the
  /// family and flags of the ConnectOptions: the first result of the remote address's family
  /// that binds.
  LocalAddress(std::string host, std::uint16_t port = 0) : host(std::move(host)), port(port) {}

  /// When not empty, bound as is, and host and port are ignored.
  SocketAddress address;
  std::string host;        ///< a host name or numeric address to resolve (when address is empty)
  std::uint16_t port = 0;  ///< the port to bind with host; 0 for an ephemeral one
};

/// How create_connection() resolves, binds and connects.
struct ConnectOptions {
  /// AF_INET or AF_INET6 to use only that family; AF_UNSPEC (0) for both.
  int family = 0;
  /// AI_* flags for the lookup of the host (and of local_addr).
  int flags = 0;
  /// Bind the socket to this address before connecting; none by default.
  std::optional<LocalAddress> local_addr;
  /// With a value, connect as RFC 8305's Happy Eyeballs (asyncio's happy_eyeballs_delay):
  /// start the next address once this delay has passed since the previous attempt started
  /// (or as soon as that one failed), while the earlier ones keep running; the first to connect
  /// wins and the others are closed. RFC 8305 suggests 250 ms. Without a value, each address
  /// is tried once the previous one failed.
  std::optional<Duration> happy_eyeballs_delay;
  /// Reorder the addresses by family: this many of the first family first, then alternate
  /// (asyncio's interleave). Unset: 1 with happy_eyeballs_delay, else 0 (the resolver's order).
  std::optional<int> interleave;
  /// The most the whole connect may take: resolving, connecting, and connection_made().
  /// No limit by default.
  std::optional<Duration> timeout;
  /// TCP_NODELAY (no Nagle delay) on the connected socket, as asyncio always sets it.
  bool nodelay = true;
  /// With a value, TLS over the connection: the returned transport is the TLS transport,
  /// after the handshake (which options.timeout includes). server_hostname defaults to the
  /// host argument.
  std::optional<SslOptions> ssl;
};

/// How create_server() binds and listens.
struct ServerOptions {
  /// AF_INET or AF_INET6 to use only that family; AF_UNSPEC (0) for both.
  int family = 0;
  /// AI_* flags for the lookup of the hosts; unset means AI_PASSIVE (asyncio's default), so
  /// that an empty host gives the wildcard addresses.
  std::optional<int> flags;
  /// The listen() backlog; also how many connections are accepted per readiness event.
  int backlog = 100;
  /// SO_REUSEADDR: bind even while old connections on the port linger in TIME_WAIT.
  bool reuse_address = true;
  /// SO_REUSEPORT: let several sockets (of this or other servers, processes or threads) bind
  /// the same address and port; the kernel spreads the connections over them.
  bool reuse_port = false;
  /// Start accepting before create_server() returns; else call Server::start_serving() or
  /// Server::serve_forever().
  bool start_serving = true;
  /// How long accepting pauses after accept() ran out of descriptors or memory (asyncio's
  /// ACCEPT_RETRY_DELAY).
  Duration accept_retry_delay = std::chrono::seconds(1);
  /// With a value, every accepted connection speaks TLS as a server: the protocol sees
  /// connection_made() once the handshake is done. A connection whose handshake fails or
  /// times out is closed (logged at debug level); the server goes on.
  std::optional<SslOptions> ssl;
};

namespace detail {
Coro<Connection<BaseProtocol>> create_connection(AnyProtocolFactory factory, std::string host,
                                                 std::string port, ConnectOptions options);
Coro<std::unique_ptr<Server>> create_server(AnyProtocolFactory factory,
                                            std::vector<std::string> hosts, std::uint16_t port,
                                            ServerOptions options);
}  // namespace detail

/// Opens a TCP connection to @p host and @p port, with a protocol from @p factory, on the
/// running loop (asyncio's loop.create_connection).
///
/// Resolves @p host and @p port (loop.getaddrinfo, SOCK_STREAM, with the options' family and
/// flags; an empty host means the loopback addresses) and tries the addresses in order, or
/// interleaved by family and staggered (see ConnectOptions::happy_eyeballs_delay). Once a
/// socket is connected, the factory makes the protocol, the transport calls connection_made(),
/// and this returns.
///
/// @param factory  a ProtocolFactory, called once, after the socket connected.
/// @param host  a host name or numeric address.
/// @param port  a port number or service name ("80", "http").
/// @param options  resolution, binding, timeout and TLS; see ConnectOptions.
/// @return the transport and the protocol; see Connection for how long they stay valid.
/// @throws std::system_error  the lookup failed (strata::resolver_category()); or every
/// address failed, naming it: "connect 127.0.0.1:1: Connection refused". Several addresses
/// failing with the same error are listed before it ("connect [::1]:1, 127.0.0.1:1:
/// Connection refused"); with different errors, each is listed with its own
/// ("multiple errors: connect [::1]:80: Network is unreachable; connect 192.0.2.1:80: ..."),
/// and code() is the last one's. Binding local_addr fails as "bind 127.0.0.1:5000: ...".
/// @throws TimeoutError  options.timeout passed first ("connect example.com:80: timed out
/// after 100 ms").
/// @throws  what the factory or connection_made() threw (the transport is then aborted).
/// @throws EventLoopError  no loop is running on this thread (at the call).
/// @throws std::invalid_argument  a negative happy_eyeballs_delay or interleave (at the call).
/// @par Thread safety  Loop thread only.
/// @par Cancellation  Cancel-safe: every socket opened so far is closed and unregistered
/// before CancelledError leaves. Once the transport exists, it is closed; its protocol then
/// sees connection_made() and connection_lost().
template <ProtocolFactory F>
Coro<Connection<factory_protocol_t<F>>> create_connection(F factory, std::string host,
                                                          std::string port,
                                                          ConnectOptions options = {}) {
  return detail::typed_connection<factory_protocol_t<F>>(detail::create_connection(
      detail::AnyProtocolFactory(std::move(factory)), std::move(host), std::move(port),
      std::move(options)));
}

/// create_connection() with a numeric port.
/// @par Cancellation  As create_connection(): cancel-safe.
template <ProtocolFactory F>
Coro<Connection<factory_protocol_t<F>>> create_connection(F factory, std::string host,
                                                          std::uint16_t port,
                                                          ConnectOptions options = {}) {
  return create_connection(std::move(factory), std::move(host), std::to_string(port),
                           std::move(options));
}

/// Listens on @p port of every address @p hosts resolve to, serving each accepted connection
/// with a protocol from @p factory, on the running loop (asyncio's loop.create_server).
///
/// Each host is resolved (loop.getaddrinfo, SOCK_STREAM, with the options' family and flags);
/// an empty list, or one empty host, means every interface (the wildcard addresses, 0.0.0.0
/// and ::). One socket is bound per distinct address; IPv6 sockets get IPV6_V6ONLY, so that
/// each family has its own. Addresses that cannot be bound because the family is not enabled
/// (socket() fails, or bind() gives EADDRNOTAVAIL) are skipped, as asyncio does.
///
/// With @p port 0, each socket gets its own ephemeral port: read them from
/// Server::sockets(). Nothing makes them equal.
///
/// @return the server, serving unless options.start_serving is false.
/// @throws std::system_error  the lookup failed; a bind failed, naming the address
/// ("bind 127.0.0.1:8080: Address already in use"); no address could be bound; or listen()
/// failed.
/// @throws EventLoopError  no loop is running on this thread (at the call).
/// @throws std::invalid_argument  a negative backlog or accept_retry_delay (at the call).
/// @par Thread safety  Loop thread only.
/// @par Cancellation  Cancel-safe: it suspends only while the hosts resolve, before any
/// socket exists; nothing is left open and no server made.
template <ProtocolFactory F>
Coro<std::unique_ptr<Server>> create_server(F factory, std::vector<std::string> hosts,
                                            std::uint16_t port, ServerOptions options = {}) {
  return detail::create_server(detail::AnyProtocolFactory(std::move(factory)), std::move(hosts),
                               port, std::move(options));
}

/// create_server() on the addresses of one host (empty: every interface).
/// @par Cancellation  As create_server(): cancel-safe.
template <ProtocolFactory F>
Coro<std::unique_ptr<Server>> create_server(F factory, std::string host, std::uint16_t port,
                                            ServerOptions options = {}) {
  std::vector<std::string> hosts;
  hosts.push_back(std::move(host));
  return create_server(std::move(factory), std::move(hosts), port, std::move(options));
}

}  // namespace strata
