// open_connection, start_server and their Unix variants: a StreamProtocol per connection.

#include "strata/streams/streams.hpp"

#include <utility>

#include "stream_connection.hpp"
#include "strata/core/event_loop.hpp"

namespace strata {

namespace {

/// The protocol factory of a client: one connection, whose state @p connection receives.
auto client_factory(const detail::Ref<detail::StreamConnection>& connection) {
  return [connection] { return std::make_unique<detail::StreamProtocol>(connection, nullptr); };
}

/// The protocol factory of a server: a fresh connection state and the handler for each.
auto server_factory(ClientConnected on_client, std::size_t limit) {
  if (!on_client) throw std::invalid_argument("start_server: the client_connected callback is empty");
  auto shared = std::make_shared<const ClientConnected>(std::move(on_client));
  return [shared, limit] {
    auto connection = detail::StreamConnection::make(get_running_loop(), limit);
    return std::make_unique<detail::StreamProtocol>(std::move(connection), shared);
  };
}

}  // namespace

Coro<Streams> open_connection(std::string host, std::uint16_t port, ConnectOptions options,
                              std::size_t limit) {
  auto connection = detail::StreamConnection::make(get_running_loop(), limit);
  auto connecting = create_connection(client_factory(connection), std::move(host), port,
                                      std::move(options));
  co_await connecting;
  co_return detail::make_streams(connection);
}

Coro<std::unique_ptr<Server>> start_server(ClientConnected on_client, std::string host,
                                           std::uint16_t port, ServerOptions options,
                                           std::size_t limit) {
  auto factory = server_factory(std::move(on_client), limit);
  return create_server(std::move(factory), std::move(host), port, std::move(options));
}

Coro<Streams> open_unix_connection(std::string path, UnixConnectOptions options,
                                   std::size_t limit) {
  auto connection = detail::StreamConnection::make(get_running_loop(), limit);
  auto connecting =
      create_unix_connection(client_factory(connection), std::move(path), std::move(options));
  co_await connecting;
  co_return detail::make_streams(connection);
}

Coro<std::unique_ptr<Server>> start_unix_server(ClientConnected on_client, std::string path,
                                                UnixServerOptions options, std::size_t limit) {
  auto factory = server_factory(std::move(on_client), limit);
  return create_unix_server(std::move(factory), std::move(path), std::move(options));
}

}  // namespace strata
