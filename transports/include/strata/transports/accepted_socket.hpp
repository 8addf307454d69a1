#pragma once
/// @file
/// connect_accepted_socket: a protocol over a stream socket connected by other means
/// (asyncio's loop.connect_accepted_socket).

#include <memory>
#include <utility>

#include "strata/core/coro.hpp"
#include "strata/transports/connection.hpp"
#include "strata/transports/protocol.hpp"
#include "strata/transports/protocol_factory.hpp"
#include "strata/transports/transport.hpp"

namespace strata {

namespace detail {
/// The untyped part of connect_accepted_socket(); defined in src/accepted_socket.cpp.
Coro<Transport*> connect_accepted_socket(std::unique_ptr<BaseProtocol> protocol, int fd);
}  // namespace detail

/// Wraps the connected stream socket @p fd (accepted, or connected with plain system calls,
/// or one end of a socketpair) in a transport serving the protocol that @p factory makes, on
/// the running loop (asyncio's loop.connect_accepted_socket).
///
/// Makes the protocol, sets O_NONBLOCK (and, for TCP, TCP_NODELAY) on @p fd and takes
/// ownership of it (the transport closes it), then completes once the protocol's
/// connection_made() has returned. The protocol then hears `(data_received |
/// buffer_updated)* eof_received? connection_lost` as over any Strata stream connection.
/// get_extra_info() gives "peername", "sockname" (read now) and "socket" (@p fd).
///
/// @param factory  a callable returning std::unique_ptr<P>, P derived from Protocol or
/// BufferedProtocol; called once, on the loop's thread.
/// @param fd  a connected SOCK_STREAM socket (TCP or Unix).
/// @return the transport and the protocol; see Connection for how long they stay valid.
/// @throws std::invalid_argument  @p fd is negative, not a socket, or not a stream socket
/// (then @p fd stays open and the caller's), or the factory returned null.
/// @throws std::system_error  fcntl() failed on @p fd.
/// @throws what the factory or connection_made() threw (the transport is then aborted).
/// @par Thread safety  Loop thread only (needs a running loop).
/// @par Cancellation  Not cancel-safe for @p fd: cancelled while waiting for
/// connection_made(), the transport is closed, and @p fd with it; the protocol still sees
/// connection_made() then connection_lost().
template <ProtocolFactory F>
Coro<Connection<factory_protocol_t<F>>> connect_accepted_socket(F factory, int fd) {
  using P = factory_protocol_t<F>;
  std::unique_ptr<P> protocol = factory();
  P* raw = protocol.get();
  Coro<Transport*> connect = detail::connect_accepted_socket(std::move(protocol), fd);
  Transport* transport = co_await connect;
  Connection<P> connection{transport, raw};
  co_return connection;
}

}  // namespace strata
