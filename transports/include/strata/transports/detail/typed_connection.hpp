#pragma once
/// @file
/// The last step of the connection-making coroutines: the untyped Connection that their
/// non-template part returns, as the Connection<P> of the factory's protocol type.

#include "strata/core/coro.hpp"
#include "strata/transports/connection.hpp"
#include "strata/transports/protocol.hpp"

namespace strata::detail {

/// Awaits @p connect and returns its pair with the protocol as the P the factory made.
template <class P>
Coro<Connection<P>> typed_connection(Coro<Connection<BaseProtocol>> connect) {
  Connection<BaseProtocol> c = co_await connect;
  Connection<P> typed{c.transport, static_cast<P*>(c.protocol)};
  co_return typed;
}

}  // namespace strata::detail
