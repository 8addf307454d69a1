#pragma once
/// @file
/// Stream connections and servers (asyncio's open_connection, start_server and their Unix
/// variants): a StreamReader and a StreamWriter per connection, for coroutine code.

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "strata/core/coro.hpp"
#include "strata/streams/stream_reader.hpp"
#include "strata/streams/stream_writer.hpp"
#include "strata/transports/server.hpp"
#include "strata/transports/tcp.hpp"
#include "strata/transports/unix.hpp"

namespace strata {

/// A connection's two streams: `auto [reader, writer] = co_await open_connection(...)`.
struct Streams {
  StreamReader reader;  ///< the incoming bytes
  StreamWriter writer;  ///< the outgoing bytes, and the connection's close
};

/// What start_server() calls for each connection (asyncio's client_connected_cb): a
/// coroutine, run as a task of its own. When it returns the connection is closed (after what
/// it wrote is sent), so that a handler owns its connection for exactly its own lifetime; an
/// exception it throws goes to the loop's exception handler and the connection is closed too.
using ClientConnected = std::function<Coro<void>(StreamReader reader, StreamWriter writer)>;

/// Opens a TCP connection (create_connection() with @p options, including `ssl`) and
/// returns its streams, the reader with @p limit (asyncio.open_connection()).
/// @throws as create_connection().
/// @par Cancellation  Cancel-safe: nothing stays open. The sockets tried are closed; a
/// connection made already is closed (aborted, during a TLS handshake); the server sees at
/// most a connection that ends at once.
Coro<Streams> open_connection(std::string host, std::uint16_t port, ConnectOptions options = {},
                              std::size_t limit = StreamReader::default_limit);

/// Listens as create_server() does and calls @p on_client for each connection
/// (asyncio.start_server()). Server::close() then wait_closed() is a graceful shutdown: no
/// new connection is accepted and the running handlers finish, with what they wrote sent.
/// @throws as create_server().
/// @par Cancellation  Cancel-safe: the sockets bound so far are closed; no server is left.
Coro<std::unique_ptr<Server>> start_server(ClientConnected on_client, std::string host,
                                           std::uint16_t port, ServerOptions options = {},
                                           std::size_t limit = StreamReader::default_limit);

/// open_connection() over a Unix socket (asyncio.open_unix_connection()).
/// @par Cancellation  As open_connection(): nothing stays open.
Coro<Streams> open_unix_connection(std::string path, UnixConnectOptions options = {},
                                   std::size_t limit = StreamReader::default_limit);

/// start_server() on a Unix socket (asyncio.start_unix_server()).
/// @par Cancellation  As start_server(): nothing stays open.
Coro<std::unique_ptr<Server>> start_unix_server(ClientConnected on_client, std::string path,
                                                UnixServerOptions options = {},
                                                std::size_t limit = StreamReader::default_limit);

}  // namespace strata
