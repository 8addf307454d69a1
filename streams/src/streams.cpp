// open_connection, start_server and their Unix variants: a stream protocol per connection
// (make_stream_protocol(): buffered on the selector loop, plain on the proactor).

#include "strata/streams/streams.hpp"

#include <string>
#include <utility>
#include <vector>

#include "stream_connection.hpp"
#include "strata/core/event_loop.hpp"

namespace strata {

namespace {

/// The protocol factory of a client: one connection, whose state @p connection receives.
detail::AnyProtocolFactory client_factory(const detail::Ref<detail::StreamConnection>& connection) {
  return [connection] {
    return detail::make_stream_protocol(*connection->loop, connection, nullptr);
  };
}

/// The protocol factory of a server: a fresh connection state and the handler for each.
detail::AnyProtocolFactory server_factory(ClientConnected on_client, std::size_t limit) {
  if (!on_client) throw std::invalid_argument("start_server: the client_connected callback is empty");
  auto shared = std::make_shared<const ClientConnected>(std::move(on_client));
  return [shared, limit] {
    EventLoop& loop = get_running_loop();
    return detail::make_stream_protocol(loop, detail::StreamConnection::make(loop, limit), shared);
  };
}

}  // namespace

Coro<Streams> open_connection(std::string host, std::uint16_t port, ConnectOptions options,
                              std::size_t limit) {
  auto connection = detail::StreamConnection::make(get_running_loop(), limit);
  auto connecting = detail::create_connection(client_factory(connection), std::move(host),
                                              std::to_string(port), std::move(options));
  co_await connecting;
  co_return detail::make_streams(connection);
}

Coro<std::unique_ptr<Server>> start_server(ClientConnected on_client, std::string host,
                                           std::uint16_t port, ServerOptions options,
                                           std::size_t limit) {
  std::vector<std::string> hosts;
  hosts.push_back(std::move(host));
  return detail::create_server(server_factory(std::move(on_client), limit), std::move(hosts),
                               port, std::move(options));
}

Coro<Streams> open_unix_connection(std::string path, UnixConnectOptions options,
                                   std::size_t limit) {
  auto connection = detail::StreamConnection::make(get_running_loop(), limit);
  auto connecting =
      detail::create_unix_connection(client_factory(connection), std::move(path), std::move(options));
  co_await connecting;
  co_return detail::make_streams(connection);
}

Coro<std::unique_ptr<Server>> start_unix_server(ClientConnected on_client, std::string path,
                                                UnixServerOptions options, std::size_t limit) {
  return detail::create_unix_server(server_factory(std::move(on_client), limit), std::move(path),
                                    std::move(options));
}

}  // namespace strata
