#pragma once
/// @file
/// Server: the listening sockets that create_server() and create_unix_server() return
/// (asyncio.Server).

#include <memory>
#include <vector>

#include "strata/core/coro.hpp"
#include "strata/core/event_loop.hpp"
#include "strata/core/socket_address.hpp"

namespace strata {

namespace detail {
class ServerImpl;
}

/// One listening socket of a Server.
struct ServerSocket {
  /// The descriptor, still owned by the server: for getsockopt() and the like. Do not close
  /// it, read from it or accept on it.
  int fd = -1;
  /// The address it is bound to, as getsockname() reports it: with the real port when port 0
  /// was asked for.
  SocketAddress address;
};

/// Listening sockets that accept connections and give each a transport and a protocol from the
/// factory (asyncio.Server).
///
/// The server owns its listening sockets and nothing else: each accepted connection's transport
/// is kept alive by the loop and owns its protocol, so closing or destroying the server leaves
/// open connections open. The server does keep track of them, for wait_closed(),
/// close_clients() and abort_clients().
///
/// Each time a listening socket is readable, the server accepts up to `backlog` connections
/// (asyncio's policy: a burst is drained without starving other callbacks). When accept()
/// fails for lack of resources (EMFILE, ENFILE, ENOBUFS, ENOMEM), the server logs a warning,
/// stops watching that socket and tries again after `accept_retry_delay` (1 s by default), as
/// asyncio does; the pending connections wait in the kernel's queue meanwhile. An exception
/// thrown by the protocol factory goes to the loop's exception handler, and that connection is
/// closed; the server goes on.
///
/// @par Thread safety  Loop thread only.
/// @par Lifetime  Returned as a `std::unique_ptr` by create_server() and create_unix_server().
/// Destroying a server closes it (as close()); its open connections stay open and are no longer
/// tracked, and wait_closed() and serve_forever() calls still waiting return. Closing the loop
/// closes the server's listening sockets; the loop aborts the connections.
class Server {
 public:
  /// @cond INTERNAL
  /// Made by create_server() and create_unix_server() only.
  explicit Server(std::shared_ptr<detail::ServerImpl> impl) noexcept;
  /// @endcond

  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;
  ~Server();

  /// The loop the server runs on.
  EventLoop& get_loop() const noexcept;

  /// Whether the server is accepting connections: start_serving() (or serve_forever()) was
  /// called, and close() was not.
  bool is_serving() const noexcept;

  /// The listening sockets; empty once the server is closed.
  std::vector<ServerSocket> sockets() const;

  /// Starts accepting connections, if not started yet; returns at once (asyncio's
  /// start_serving()). The sockets listen() only from here on, so before this a client's
  /// connect() is refused.
  /// @throws InvalidStateError  the server is closed (checked at the call).
  /// @throws std::system_error  listen() failed, naming the address ("listen 127.0.0.1:8080").
  /// @par Cancellation  Cancel-safe: it never suspends, so a cancel cannot land inside it.
  Coro<void> start_serving();

  /// Starts serving if needed, then waits until the server is closed (asyncio's
  /// serve_forever()).
  ///
  /// Returns once close() is called (or the server is destroyed). Unlike asyncio, which raises
  /// CancelledError in that case, it returns normally, so that a task may
  /// `co_await server->serve_forever()` and carry on with a graceful shutdown.
  /// @throws InvalidStateError  the server is closed, or serve_forever() already runs on it
  /// (checked at the call).
  /// @par Cancellation  Not cancel-safe, by design: cancelling the waiting task closes the
  /// server, waits for its connections to end (wait_closed()), then throws CancelledError, as
  /// asyncio does.
  Coro<void> serve_forever();

  /// Stops listening: removes the listening sockets from the loop and closes them (and, for a
  /// Unix server made with cleanup_socket, removes its socket file). Open connections stay
  /// open. Idempotent.
  void close();

  /// Returns once the server is closed and every connection it accepted has ended
  /// (asyncio 3.12.1's wait_closed()), at once if that is so already.
  /// @par Cancellation  Cancel-safe: nothing but the wait is undone; the server and its
  /// connections are unchanged.
  Coro<void> wait_closed();

  /// Closes every connection the server accepted that is still open (Transport::close(): the
  /// buffered data is sent first), as asyncio 3.13's close_clients(). The server keeps
  /// listening unless close() was called too.
  void close_clients();

  /// Aborts every connection the server accepted that is still open (Transport::abort(): the
  /// buffered data is dropped), as asyncio 3.13's abort_clients().
  void abort_clients();

 private:
  std::shared_ptr<detail::ServerImpl> impl_;
};

}  // namespace strata
