// connect_read_pipe and connect_write_pipe (see pipe.hpp): validate the descriptor, make it
// non-blocking, and hand it to the stream transport.

#include "strata/transports/pipe.hpp"

#include <fcntl.h>
#include <sys/stat.h>

#include <cerrno>
#include <stdexcept>
#include <string>
#include <system_error>

#include "strata/core/future.hpp"
#include "stream_transport.hpp"

namespace strata::detail {

Coro<Transport*> connect_pipe(std::unique_ptr<BaseProtocol> protocol, int fd, bool write_end) {
  const char* what = write_end ? "connect_write_pipe" : "connect_read_pipe";
  EventLoop& loop = get_running_loop();
  if (!protocol) throw std::invalid_argument(std::string(what) + ": the factory returned null");
  if (fd < 0)
    throw std::invalid_argument(std::string(what) + ": fd must be >= 0, got " + std::to_string(fd));
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    throw std::system_error(errno, std::system_category(),
                            std::string(what) + ": fstat fd " + std::to_string(fd));
  }
  // As asyncio: "Pipe transport is for pipes/sockets only."
  if (!S_ISFIFO(st.st_mode) && !S_ISSOCK(st.st_mode) && !S_ISCHR(st.st_mode)) {
    throw std::invalid_argument(std::string(what) + ": fd " + std::to_string(fd) +
                                " is not a pipe, FIFO, character device or socket");
  }
  const int flags = ::fcntl(fd, F_GETFL);
  if (flags < 0 || ::fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0) {
    throw std::system_error(errno, std::system_category(),
                            std::string(what) + ": fcntl O_NONBLOCK on fd " + std::to_string(fd));
  }
  Future<void> waiter = loop.create_future<void>();
  Transport* transport = nullptr;
  try {
    transport = &make_stream_transport(loop, fd, write_end ? StreamKind::write_pipe
                                                           : StreamKind::read_pipe,
                                       std::move(protocol), waiter);
  } catch (...) {
    ::fcntl(fd, F_SETFL, flags);  // the descriptor stays the caller's, as it was
    throw;
  }
  Coro<void> wait = wait_connection_made(std::move(waiter), *transport);
  co_await wait;
  co_return transport;
}

}  // namespace strata::detail
