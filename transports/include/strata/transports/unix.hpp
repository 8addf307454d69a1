#pragma once
/// @file
/// Unix-domain stream sockets: create_unix_connection() and create_unix_server() (asyncio's
/// loop.create_unix_connection and loop.create_unix_server), with their options.

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <utility>

#include "strata/core/clock.hpp"
#include "strata/core/coro.hpp"
#include "strata/transports/connection.hpp"
#include "strata/transports/detail/typed_connection.hpp"
#include "strata/transports/protocol_factory.hpp"
#include "strata/transports/server.hpp"
#include "strata/transports/ssl.hpp"

namespace strata {

/// How create_unix_connection() connects.
struct UnixConnectOptions {
  /// The most the whole connect may take, connection_made() included. No limit by default.
  std::optional<Duration> timeout;
  /// With a value, TLS over the connection, as ConnectOptions::ssl; server_hostname has no
  /// default here and is needed when the context's check_hostname is on.
  std::optional<SslOptions> ssl;
};

/// How create_unix_server() binds and listens.
struct UnixServerOptions {
  /// The listen() backlog; also how many connections are accepted per readiness event.
  int backlog = 100;
  /// Start accepting before create_unix_server() returns; else call Server::start_serving() or
  /// Server::serve_forever().
  bool start_serving = true;
  /// Remove the socket file when the server closes, if it is still the one the server made
  /// (asyncio 3.13's cleanup_socket).
  bool cleanup_socket = true;
  /// How long accepting pauses after accept() ran out of descriptors or memory.
  Duration accept_retry_delay = std::chrono::seconds(1);
  /// With a value, every accepted connection speaks TLS as a server, as ServerOptions::ssl.
  std::optional<SslOptions> ssl;
};

namespace detail {
Coro<Connection<BaseProtocol>> create_unix_connection(AnyProtocolFactory factory,
                                                      std::string path,
                                                      UnixConnectOptions options);
Coro<std::unique_ptr<Server>> create_unix_server(AnyProtocolFactory factory, std::string path,
                                                 UnixServerOptions options);
}  // namespace detail

/// Connects to the Unix-domain stream socket at @p path, with a protocol from @p factory, on the
/// running loop (asyncio's loop.create_unix_connection).
///
/// @param factory  a ProtocolFactory, called once, after the socket connected.
/// @param path  a file system path, or '\0' followed by a name in Linux's abstract namespace.
/// @param options  timeout and TLS; see UnixConnectOptions.
/// @return the transport and the protocol; see Connection for how long they stay valid.
/// @throws std::system_error  connect() failed, naming the path: "connect /run/app.sock: No
/// such file or directory", or Connection refused (nobody listens), or Resource temporarily
/// unavailable (the server's backlog is full: a Unix socket does not wait, unlike TCP).
/// @throws TimeoutError  options.timeout passed first.
/// @throws  what the factory or connection_made() threw (the transport is then aborted).
/// @throws std::invalid_argument  @p path is empty or too long for sun_path (at the call).
/// @throws EventLoopError  no loop is running on this thread (at the call).
/// @par Thread safety  Loop thread only.
/// @par Cancellation  Cancel-safe: the socket is closed; once the transport exists, it is closed.
template <ProtocolFactory F>
Coro<Connection<factory_protocol_t<F>>> create_unix_connection(F factory, std::string path,
                                                               UnixConnectOptions options = {}) {
  return detail::typed_connection<factory_protocol_t<F>>(detail::create_unix_connection(
      detail::AnyProtocolFactory(std::move(factory)), std::move(path), std::move(options)));
}

/// Listens on the Unix-domain stream socket @p path, serving each accepted connection with a
/// protocol from @p factory, on the running loop (asyncio's loop.create_unix_server).
///
/// A file already at @p path is removed first if it is a socket (a stale one, left by a server
/// that did not clean up; asyncio does the same, even if a live server still listens there);
/// any other kind of file is left alone, and bind() then fails with EADDRINUSE. With
/// options.cleanup_socket, Server::close() removes the socket file, unless another file has
/// replaced it meanwhile. An abstract name (leading '\0') has no file: neither applies.
///
/// @return the server, serving unless options.start_serving is false.
/// @throws std::system_error  bind() or listen() failed, naming the path ("bind
/// /run/app.sock: Address already in use").
/// @throws std::invalid_argument  @p path is empty or too long for sun_path, or a negative
/// backlog or accept_retry_delay (at the call).
/// @throws EventLoopError  no loop is running on this thread (at the call).
/// @par Thread safety  Loop thread only. The stale-file check and the removal are synchronous
/// file-system calls, as in asyncio.
/// @par Cancellation  Cancel-safe: it never suspends, so a cancel cannot land inside it.
template <ProtocolFactory F>
Coro<std::unique_ptr<Server>> create_unix_server(F factory, std::string path,
                                                 UnixServerOptions options = {}) {
  return detail::create_unix_server(detail::AnyProtocolFactory(std::move(factory)),
                                    std::move(path), std::move(options));
}

}  // namespace strata
