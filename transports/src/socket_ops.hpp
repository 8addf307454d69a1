#pragma once
// What the connection-making coroutines share (TCP and Unix): an owned descriptor, the
// non-blocking connect and its staggered race, the hand-over to the stream transport, and the
// errors that name the address.

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include "strata/core/clock.hpp"
#include "strata/core/coro.hpp"
#include "strata/core/event_loop.hpp"
#include "strata/core/socket_address.hpp"
#include "strata/transports/connection.hpp"
#include "strata/transports/protocol_factory.hpp"
#include "strata/transports/ssl.hpp"

namespace strata::detail {

/// An owned file descriptor: closed on destruction unless released.
class UniqueFd {
 public:
  UniqueFd() noexcept = default;
  explicit UniqueFd(int fd) noexcept : fd_(fd) {}
  UniqueFd(UniqueFd&& other) noexcept : fd_(other.release()) {}
  UniqueFd& operator=(UniqueFd&& other) noexcept {
    if (this != &other) reset(other.release());
    return *this;
  }
  ~UniqueFd() { reset(); }

  int get() const noexcept { return fd_; }
  explicit operator bool() const noexcept { return fd_ >= 0; }
  int release() noexcept { return std::exchange(fd_, -1); }
  void reset(int fd = -1) noexcept;

 private:
  int fd_ = -1;
};

/// The error_code of an errno value.
inline std::error_code errno_code(int err) noexcept { return {err, std::system_category()}; }

/// The address @p fd is bound to (getsockname()).
/// @throws std::system_error  getsockname() failed.
SocketAddress socket_name(int fd);

/// Sets an int socket option; returns the error (empty on success).
std::error_code set_int_option(int fd, int level, int name, int value) noexcept;

/// Tries to connect to each of @p remotes in turn and returns the first connected socket
/// (non-blocking, close-on-exec), closing every other one.
///
/// Without @p delay, the next address is tried once the previous one failed. With it, this is
/// asyncio's staggered race (RFC 8305): the next attempt also starts once @p delay has passed
/// since the previous one started, while the earlier ones keep running; the first to connect
/// wins and the others are closed.
///
/// With @p bind_local, each socket is first bound to the first of @p locals of its family that
/// binds.
///
/// @throws std::system_error  every attempt failed: naming the address ("connect
/// 127.0.0.1:1: Connection refused"), or listing them all.
/// @par Cancellation  Closes every socket and removes every writer before the CancelledError
/// leaves.
Coro<UniqueFd> connect_race(EventLoop& loop, std::vector<SocketAddress> remotes,
                            std::vector<SocketAddress> locals, bool bind_local,
                            std::optional<Duration> delay);

/// Gives the connected socket @p fd a protocol from @p factory and a stream transport, and
/// returns once connection_made() has returned. With @p ssl, a TLS client runs over the
/// stream transport and the connection returned is the TLS transport's, after the handshake.
/// @throws  what the factory or connection_made() threw; the handshake's SslError.
/// @par Cancellation  Closes the transport (or the socket, before there is one).
Coro<Connection<BaseProtocol>> start_connection(EventLoop& loop, UniqueFd fd,
                                                AnyProtocolFactory& factory,
                                                const std::optional<SslOptions>& ssl);

/// Awaits @p inner, bounded by @p limit when set; a TimeoutError names @p what
/// ("connect localhost:80: timed out after 100 ms").
Coro<Connection<BaseProtocol>> connect_with_timeout(Coro<Connection<BaseProtocol>> inner,
                                                    std::optional<Duration> limit,
                                                    std::string what);

}  // namespace strata::detail
