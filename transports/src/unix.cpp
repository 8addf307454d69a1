#include "strata/transports/unix.hpp"

#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <stdexcept>
#include <system_error>

#include "server_impl.hpp"
#include "socket_ops.hpp"
#include "strata/core/event_loop.hpp"
#include "strata/core/log.hpp"
#include "strata/core/socket_address.hpp"
#include "strata/core/task.hpp"

namespace strata::detail {

namespace {

/// The Unix-domain address of @p path, checked at the call.
SocketAddress unix_address(const std::string& path) {
  if (path.empty()) {
    throw std::invalid_argument(
        "path must not be empty: give a file system path, or '\\0' and an abstract name");
  }
  return SocketAddress::unix_path(path);
}

/// Removes the socket file a previous server left at @p path (asyncio 3.13): only a socket,
/// never a regular file or anything else.
void remove_stale_socket(const std::string& path) {
  struct stat st {};
  int failed = 0;
  if (::stat(path.c_str(), &st) != 0) {
    failed = errno;
  } else if (S_ISSOCK(st.st_mode) && ::unlink(path.c_str()) != 0) {
    failed = errno;
  }
  if (failed == 0 || failed == ENOENT) return;
  // The directory may allow creating the socket but not checking for it: bind() will tell.
  log(LogLevel::error,
      "Unable to check or remove stale Unix socket " + path + ": " + errno_code(failed).message());
}

Coro<Connection<BaseProtocol>> connect_unix(EventLoop& loop, AnyProtocolFactory factory,
                                            SocketAddress address,
                                            std::optional<SslOptions> ssl) {
  std::vector<SocketAddress> remotes;
  remotes.push_back(std::move(address));
  Coro<UniqueFd> connect = connect_race(loop, std::move(remotes), {}, false, std::nullopt);
  UniqueFd fd = co_await connect;
  Coro<Connection<BaseProtocol>> start = start_connection(loop, std::move(fd), factory, ssl);
  Connection<BaseProtocol> connection = co_await start;
  co_return connection;
}

Coro<std::unique_ptr<Server>> serve_unix(EventLoop& loop, AnyProtocolFactory factory,
                                         SocketAddress address, UnixServerOptions options) {
  const std::string path = address.path();
  const bool abstract = address.is_abstract();
  if (!abstract) remove_stale_socket(path);
  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (!fd) throw std::system_error(errno_code(errno), "socket AF_UNIX");
  if (::bind(fd.get(), address.data(), address.size()) != 0) {
    throw std::system_error(errno_code(errno), "bind " + address.to_string());
  }
  ListenerSpec listener{std::move(fd), std::move(address), {}, 0, 0};
  struct stat st {};
  if (options.cleanup_socket && !abstract && ::stat(path.c_str(), &st) == 0) {
    listener.cleanup_path = path;
    listener.device = static_cast<std::uint64_t>(st.st_dev);
    listener.inode = static_cast<std::uint64_t>(st.st_ino);
  }
  ServerSettings settings{options.backlog, options.accept_retry_delay, std::move(options.ssl)};
  auto impl = std::make_shared<ServerImpl>(loop, std::move(factory), settings);
  impl->add_listener(std::move(listener));
  auto server = std::make_unique<Server>(impl);
  if (options.start_serving) impl->start_serving();
  co_return server;
}

}  // namespace

Coro<Connection<BaseProtocol>> create_unix_connection(AnyProtocolFactory factory,
                                                      std::string path,
                                                      UnixConnectOptions options) {
  SocketAddress address = unix_address(path);
  if (options.ssl && options.ssl->server_hostname.empty() && options.ssl->context.check_hostname()) {
    throw std::invalid_argument("create_unix_connection: ssl needs a server_hostname when the "
                                "context checks host names");
  }
  EventLoop& loop = get_running_loop();
  std::string what = "connect " + address.to_string();
  return connect_with_timeout(
      connect_unix(loop, std::move(factory), std::move(address), std::move(options.ssl)),
      options.timeout, std::move(what));
}

Coro<std::unique_ptr<Server>> create_unix_server(AnyProtocolFactory factory, std::string path,
                                                 UnixServerOptions options) {
  SocketAddress address = unix_address(path);
  if (options.backlog < 0) {
    throw std::invalid_argument("backlog must be >= 0, got " + std::to_string(options.backlog));
  }
  if (options.accept_retry_delay < Duration::zero()) {
    throw std::invalid_argument("accept_retry_delay must be >= 0, got " +
                                std::to_string(options.accept_retry_delay.count()) + " ns");
  }
  EventLoop& loop = get_running_loop();
  return serve_unix(loop, std::move(factory), std::move(address), std::move(options));
}

}  // namespace strata::detail
