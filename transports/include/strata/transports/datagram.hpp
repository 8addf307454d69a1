#pragma once
/// @file
/// create_datagram_endpoint(): a UDP or Unix datagram endpoint on the running loop
/// (asyncio's loop.create_datagram_endpoint), with its options and the transport and protocol
/// pair it returns.
/// @code
/// strata::DatagramOptions options;
/// options.local_addr = {"127.0.0.1", 9999};
/// auto [transport, protocol] = co_await strata::create_datagram_endpoint(
///     [] { return std::make_unique<EchoProtocol>(); }, std::move(options));
/// @endcode

#include <concepts>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <type_traits>
#include <utility>

#include "strata/core/coro.hpp"
#include "strata/core/detail/unique_function.hpp"
#include "strata/core/socket_address.hpp"
#include "strata/transports/protocol.hpp"
#include "strata/transports/transport.hpp"

namespace strata {

/// Where a datagram endpoint binds or sends: a host and port to resolve, a Unix-domain socket
/// path, or a SocketAddress taken as it is.
///
/// A host and port are resolved with EventLoop::getaddrinfo() (SOCK_DGRAM, and the options'
/// family, proto and flags): a numeric address ("127.0.0.1", "::1") resolves on the spot, a
/// name on the loop's default executor. An empty host means the loopback address, or for
/// DatagramOptions::local_addr the wildcard address (AI_PASSIVE is added there).
struct DatagramAddress {
  /// What the address holds.
  enum class Kind {
    host_port,  ///< host and port, to resolve
    unix_path,  ///< path: a Unix-domain socket path (a leading '\0' for an abstract name)
    address,    ///< address: used as is
  };

  /// A host and port to resolve: `{"127.0.0.1", 0}`, `{"localhost", 5353}`.
  DatagramAddress(std::string host, std::uint16_t port)
      : kind(Kind::host_port), host(std::move(host)), port(port) {}
  /// A Unix-domain datagram socket path, as asyncio takes a str address: DatagramOptions::family
  /// must be AF_UNIX (a bare string is never taken for a host name). A leading '\0' names an
  /// abstract address. SocketAddress::unix_path() needs no family.
  DatagramAddress(std::string path) : kind(Kind::unix_path), host(std::move(path)) {}
  /// As DatagramAddress(std::string): a string literal is a Unix-domain path.
  DatagramAddress(const char* path) : DatagramAddress(std::string(path)) {}
  /// An address used as is (IPv4, IPv6 or Unix-domain); its family must agree with
  /// DatagramOptions::family unless that is 0.
  DatagramAddress(SocketAddress address) : kind(Kind::address), address(address) {}

  Kind kind;                ///< which of the members below is meant
  std::string host;         ///< the host (host_port) or the path (unix_path)
  std::uint16_t port = 0;   ///< the port (host_port), in host byte order
  SocketAddress address;    ///< the address (address)
};

/// The options of create_datagram_endpoint(): asyncio's keyword arguments.
struct DatagramOptions {
  /// The address to bind to; none leaves binding to the kernel (the first send binds an
  /// ephemeral port).
  std::optional<DatagramAddress> local_addr;
  /// The peer to connect() to: the endpoint then sends only there (sendto() with an empty
  /// address) and receives only from there, and send errors the peer's host reports by ICMP
  /// (port unreachable: std::errc::connection_refused) reach DatagramProtocol::error_received().
  std::optional<DatagramAddress> remote_addr;
  /// AF_INET, AF_INET6, AF_UNIX, or 0 to take the family of the addresses. Required when
  /// neither address is given, and AF_UNIX for a path given as a string.
  int family = 0;
  /// The socket's protocol (IPPROTO_UDP...), or 0 for the default.
  int proto = 0;
  /// AI_* flags for resolving the addresses.
  int flags = 0;
  /// Sets SO_REUSEPORT before binding, so that several endpoints (of the same user) may bind
  /// one address and the kernel spreads datagrams over them.
  bool reuse_port = false;
  /// Sets SO_BROADCAST, allowing sends to broadcast addresses.
  bool allow_broadcast = false;
};

/// A datagram transport and the protocol it serves: what asyncio's
/// loop.create_datagram_endpoint() returns as the `(transport, protocol)` tuple.
///
/// @tparam P  the protocol type the factory made (derived from DatagramProtocol).
///
/// @par Lifetime  Neither pointer owns: the loop keeps the transport alive and the transport
/// owns the protocol. Both stay valid until the protocol's connection_lost() has returned;
/// they are destroyed in a later loop iteration. After DatagramTransport::set_protocol(),
/// @p protocol points to the old protocol, which is destroyed in a later iteration too.
template <class P>
struct DatagramConnection {
  /// The endpoint's transport; never null.
  DatagramTransport* transport = nullptr;
  /// The protocol the factory made, now owned by @p transport; never null.
  P* protocol = nullptr;
};

namespace detail {
template <class T>
struct is_datagram_protocol_ptr : std::false_type {};
template <class P, class D>
struct is_datagram_protocol_ptr<std::unique_ptr<P, D>>
    : std::bool_constant<std::is_same_v<D, std::default_delete<P>> &&
                         std::derived_from<P, DatagramProtocol>> {};
}  // namespace detail

/// A callable that makes the protocol of a datagram endpoint: called with no arguments, it
/// returns `std::unique_ptr<P>` with P derived from DatagramProtocol.
/// ```
/// auto factory = [&stats] { return std::make_unique<EchoDatagramProtocol>(stats); };
/// ```
template <class F>
concept DatagramProtocolFactory =
    std::invocable<F&> && detail::is_datagram_protocol_ptr<std::invoke_result_t<F&>>::value;

/// The protocol type P that the datagram factory F makes.
template <DatagramProtocolFactory F>
using datagram_factory_protocol_t = typename std::invoke_result_t<F&>::element_type;

namespace detail {
/// A DatagramProtocolFactory with its type erased.
using AnyDatagramProtocolFactory = UniqueFunction<std::unique_ptr<DatagramProtocol>()>;

/// The untyped body of create_datagram_endpoint(): resolves, makes the socket, calls
/// @p factory, makes the transport and waits for connection_made().
Coro<DatagramTransport*> open_datagram_endpoint(AnyDatagramProtocolFactory factory,
                                                DatagramOptions options);
}  // namespace detail

/// Opens a datagram endpoint (UDP, or a Unix datagram socket) on the running loop
/// (asyncio's loop.create_datagram_endpoint()).
///
/// Resolves DatagramOptions::local_addr and DatagramOptions::remote_addr, then tries each
/// pair of results of one family in turn: makes a non-blocking socket, sets the options,
/// binds to the local address and connects to the remote one, until one pair succeeds. Then
/// it calls @p factory once, hands the protocol to a new transport, and returns once the
/// protocol's connection_made() has run. A Unix-domain path that names an existing socket
/// file is removed before binding, as asyncio does.
///
/// What the protocol then observes:
/// `connection_made (datagram_received | error_received)* connection_lost`, all on the loop's
/// thread, none inside the call that caused it. Datagrams are read only after
/// connection_made(). Each datagram_received() gets one whole datagram (up to 256 KiB; longer
/// ones are truncated), valid during the call only, and the sender's address.
///
/// What the transport does (asyncio's _SelectorDatagramTransport):
/// - sendto() sends at once when nothing is buffered; what the kernel refuses for now is
///   copied into the buffer and sent, in order, once the socket is writable. The buffered
///   payload bytes count against the water marks (64 KiB and 16 KiB by default):
///   pause_writing() before sendto() returns when the high one is crossed, resume_writing()
///   once the buffer drains to the low one. A send or receive error (ICMP port unreachable
///   on a connected endpoint: std::errc::connection_refused; a datagram too long:
///   std::errc::message_size) goes to error_received() and does not end the endpoint; the
///   datagram is dropped. After close() or abort(), sendto() drops the data.
/// - close() stops reading, sends what is buffered, then connection_lost() with an empty
///   error_code. abort() drops the buffer: connection_lost(std::errc::operation_canceled).
/// - An exception escaping a protocol callback goes to the loop's exception handler and
///   aborts the endpoint: connection_lost(strata::errc::callback_failed).
/// - Closing the loop ends the endpoints still open: connection_lost(strata::errc::loop_closed)
///   from within EventLoop::close(), and the socket is closed.
/// - get_extra_info(): "sockname" (SocketAddress; the kernel's choice once a first send bound
///   an unbound endpoint), "peername" (SocketAddress, connected endpoints only), "socket"
///   (int, until connection_lost() returned).
///
/// @param factory  called once, with no arguments, after the socket is ready; returns
/// std::unique_ptr<P> with P derived from DatagramProtocol.
/// @param options  the addresses and socket options; see DatagramOptions.
/// @return  the transport and the protocol, valid until connection_lost() has returned.
/// @throws std::invalid_argument  the options contradict each other (a path with family
/// AF_INET, a host and port with AF_UNIX, an address of another family than @p family), no
/// address and no family were given, or @p factory returned null.
/// @throws std::system_error  a name did not resolve (strata::resolver_category()), or making,
/// binding or connecting the socket failed: what() names the operation and the address, as in
/// "bind 127.0.0.1:9: Permission denied" (the error of the last pair tried).
/// @throws  what connection_made() threw; the transport is then aborted and the protocol gets
/// connection_lost(strata::errc::callback_failed).
/// @throws EventLoopError  no loop is running on this thread.
///
/// @par Thread safety  Loop thread only.
/// @par Cancellation  Cancel-safe: nothing is left open. Cancelling while the name resolves
/// leaves nothing open. Cancelling once the transport exists closes it: the protocol still
/// sees connection_made(), then connection_lost().
template <DatagramProtocolFactory Factory>
Coro<DatagramConnection<datagram_factory_protocol_t<Factory>>> create_datagram_endpoint(
    Factory factory, DatagramOptions options) {
  using P = datagram_factory_protocol_t<Factory>;
  P* protocol = nullptr;
  // Bound to locals before any co_await (g++ 12 miscompiles lambda temporaries there).
  detail::AnyDatagramProtocolFactory make = [&factory, &protocol]() {
    std::unique_ptr<P> made = factory();
    protocol = made.get();
    return std::unique_ptr<DatagramProtocol>(std::move(made));
  };
  Coro<DatagramTransport*> open =
      detail::open_datagram_endpoint(std::move(make), std::move(options));
  DatagramConnection<P> connection;
  connection.transport = co_await open;
  connection.protocol = protocol;
  co_return connection;
}

}  // namespace strata
