// connect_accepted_socket (see accepted_socket.hpp): validate the socket, make it
// non-blocking, and hand it to the stream transport (which sets TCP_NODELAY on TCP sockets).

#include "strata/transports/accepted_socket.hpp"

#include <fcntl.h>
#include <sys/socket.h>

#include <cerrno>
#include <stdexcept>
#include <string>
#include <system_error>

#include "strata/core/future.hpp"
#include "stream_transport.hpp"

namespace strata::detail {

Coro<Transport*> connect_accepted_socket(std::unique_ptr<BaseProtocol> protocol, int fd) {
  EventLoop& loop = get_running_loop();
  if (!protocol) throw std::invalid_argument("connect_accepted_socket: the factory returned null");
  if (fd < 0) {
    throw std::invalid_argument("connect_accepted_socket: fd must be >= 0, got " +
                                std::to_string(fd));
  }
  int type = 0;
  socklen_t len = sizeof type;
  if (::getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) != 0) {
    if (errno == ENOTSOCK) {
      throw std::invalid_argument("connect_accepted_socket: fd " + std::to_string(fd) +
                                  " is not a socket");
    }
    throw std::system_error(errno, std::system_category(),
                            "connect_accepted_socket: getsockopt SO_TYPE on fd " +
                                std::to_string(fd));
  }
  if (type != SOCK_STREAM) {
    throw std::invalid_argument("connect_accepted_socket: a stream socket (SOCK_STREAM) was "
                                "expected; fd " + std::to_string(fd) + " has type " +
                                std::to_string(type));
  }
  const int flags = ::fcntl(fd, F_GETFL);
  if (flags < 0 || ::fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0) {
    throw std::system_error(
        errno, std::system_category(),
        "connect_accepted_socket: fcntl O_NONBLOCK on fd " + std::to_string(fd));
  }
  Future<void> waiter = loop.create_future<void>();
  Transport* transport = nullptr;
  try {
    transport = &make_stream_transport(loop, fd, StreamKind::socket, std::move(protocol), waiter);
  } catch (...) {
    ::fcntl(fd, F_SETFL, flags);  // the descriptor stays the caller's, as it was
    throw;
  }
  Coro<void> wait = wait_connection_made(std::move(waiter), *transport);
  co_await wait;
  co_return transport;
}

}  // namespace strata::detail
