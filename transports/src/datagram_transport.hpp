#pragma once
// The selector transport of a datagram socket (UDP or Unix datagram), connected or not: the one
// implementation of strata::DatagramTransport that create_datagram_endpoint hands out
// (asyncio's _SelectorDatagramTransport).

#include <memory>

#include "strata/core/event_loop.hpp"
#include "strata/core/future.hpp"
#include "strata/core/socket_address.hpp"
#include "strata/transports/transport.hpp"

namespace strata::detail {

/// Makes the transport of the datagram socket @p fd and hands it @p protocol.
///
/// Takes ownership of @p fd, which must be open and non-blocking; @p peer is the address it is
/// connected to, or empty. Schedules connection_made() for the next iteration (call_soon),
/// then starts reading; completes @p waiter (if valid) once connection_made() returned, or
/// fails it with what connection_made() threw (the transport is then aborted with
/// strata::errc::callback_failed). When connection_made() itself closes the transport,
/// connection_lost() is scheduled only after @p waiter's done callbacks, so that whoever awaits
/// @p waiter sees the transport alive. The loop keeps the transport alive until after
/// connection_lost().
///
/// @throws std::invalid_argument  @p protocol is null (@p fd is then closed).
DatagramTransport& make_datagram_transport(EventLoop& loop, int fd,
                                           std::unique_ptr<DatagramProtocol> protocol,
                                           const SocketAddress& peer, Future<void> waiter = {});

}  // namespace strata::detail
