#pragma once
/// @file
/// Connection<P>: the transport and protocol pair that the connection-making coroutines
/// return (create_connection, connect_accepted_socket, connect_read_pipe, ...).

namespace strata {

class Transport;

/// A connected transport and the protocol it serves: what asyncio returns as the
/// `(transport, protocol)` tuple.
///
/// @tparam P  the protocol type the factory made (derived from Protocol or BufferedProtocol).
///
/// @par Lifetime  Neither pointer owns: the loop keeps the transport alive and the transport
/// owns the protocol. Both stay valid until the protocol's connection_lost() has returned;
/// they are destroyed in a later loop iteration. After Transport::set_protocol(), @p protocol
/// points to the old protocol, which is destroyed in a later iteration too.
template <class P>
struct Connection {
  /// The connection's transport; never null.
  Transport* transport = nullptr;
  /// The protocol the factory made, now owned by @p transport; never null.
  P* protocol = nullptr;
};

}  // namespace strata
