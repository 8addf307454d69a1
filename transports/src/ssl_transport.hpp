#pragma once
// The TLS layer of one connection (asyncio's sslproto.SSLProtocol and _SSLProtocolTransport in
// one object): a BufferedProtocol for the stream transport underneath, and the Transport that
// the application's protocol sees above.

#include <memory>

#include "strata/core/coro.hpp"
#include "strata/core/event_loop.hpp"
#include "strata/core/future.hpp"
#include "strata/transports/connection.hpp"
#include "strata/transports/ssl.hpp"
#include "strata/transports/transport.hpp"

namespace strata::detail {

/// The TLS layer made by wrap_tls(): give `layer` to the stream transport as its protocol;
/// `transport` is what the application's protocol sees (valid while the layer lives).
struct TlsLayer {
  std::unique_ptr<BaseProtocol> layer;
  Transport* transport = nullptr;
};

/// Makes the TLS layer that will carry @p app (a Protocol or BufferedProtocol) over a stream
/// transport. The handshake starts when the layer's connection_made() is called. Once it is
/// done, @p app gets connection_made() with the TLS transport and then @p handshake_done (if
/// valid) completes; if the handshake fails or times out, @p handshake_done fails with
/// SslError / SslCertVerificationError / TimeoutError, the stream transport is closed, and
/// @p app hears nothing, unless @p app_already_connected (start_tls() keeping a protocol that
/// saw connection_made() from the stream): then it hears connection_lost().
/// @throws SslError  OpenSSL could not make the connection's state.
/// @throws std::invalid_argument  @p app is of the wrong kind; a client without
/// server_hostname while the context checks host names.
TlsLayer wrap_tls(EventLoop& loop, const SslOptions& options, bool server_side,
                  std::unique_ptr<BaseProtocol> app, Future<void> handshake_done = {},
                  bool app_already_connected = false);

/// Waits for the @p handshake_done of wrap_tls(); if the awaiting task is cancelled, aborts
/// @p transport (the TLS transport) and rethrows.
Coro<void> wait_handshake(Future<void> handshake_done, Transport& transport);

}  // namespace strata::detail
