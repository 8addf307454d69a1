#include "strata/transports/tcp.hpp"

#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <stdexcept>
#include <system_error>

#include "server_impl.hpp"
#include "socket_ops.hpp"
#include "strata/core/event_loop.hpp"
#include "strata/core/future.hpp"
#include "strata/core/resolver.hpp"
#include "strata/core/task.hpp"
#include "strata/transports/transport.hpp"

namespace strata::detail {

namespace {

/// "host:port", "[::1]:port" for the messages.
std::string host_port(const std::string& host, const std::string& port) {
  if (host.find(':') != std::string::npos) return "[" + host + "]:" + port;
  return (host.empty() ? "localhost" : host) + ":" + port;
}

/// asyncio's _interleave_addrinfos: group by family in order of first appearance; take
/// @p first_family_count - 1 of the first family, then one of each family in turn.
std::vector<SocketAddress> interleave(const std::vector<AddrInfo>& infos,
                                      int first_family_count) {
  std::vector<std::vector<const AddrInfo*>> by_family;
  for (const AddrInfo& info : infos) {
    auto it = std::find_if(by_family.begin(), by_family.end(),
                           [&](const auto& group) { return group.front()->family == info.family; });
    if (it == by_family.end()) {
      by_family.push_back({&info});
    } else {
      it->push_back(&info);
    }
  }
  std::vector<SocketAddress> out;
  out.reserve(infos.size());
  std::size_t first_taken = 0;
  if (first_family_count > 1) {
    first_taken = std::min(static_cast<std::size_t>(first_family_count - 1), by_family[0].size());
    for (std::size_t i = 0; i < first_taken; ++i) out.push_back(by_family[0][i]->address);
  }
  for (std::size_t round = 0; out.size() < infos.size(); ++round) {
    for (std::size_t f = 0; f < by_family.size(); ++f) {
      const std::size_t i = round + (f == 0 ? first_taken : 0);
      if (i < by_family[f].size()) out.push_back(by_family[f][i]->address);
    }
  }
  return out;
}

[[noreturn]] void throw_no_address(const std::string& host, const std::string& port) {
  throw std::system_error(EAI_NONAME, resolver_category(),
                          "getaddrinfo " + host_port(host, port) + " returned no address");
}

Coro<Connection<BaseProtocol>> connect_tcp(EventLoop& loop, AnyProtocolFactory factory,
                                           std::string host, std::string port,
                                           ConnectOptions options) {
  Future<std::vector<AddrInfo>> lookup =
      loop.getaddrinfo(host, port, options.family, SOCK_STREAM, 0, options.flags);
  std::vector<AddrInfo> infos = co_await lookup;
  if (infos.empty()) throw_no_address(host, port);

  std::vector<SocketAddress> locals;
  const bool bind_local = options.local_addr.has_value();
  if (bind_local) {
    const LocalAddress& local = *options.local_addr;
    if (!local.address.empty()) {
      locals.push_back(local.address);
    } else {
      const std::string local_port = std::to_string(local.port);
      Future<std::vector<AddrInfo>> local_lookup =
          loop.getaddrinfo(local.host, local_port, options.family, SOCK_STREAM, 0, options.flags);
      std::vector<AddrInfo> local_infos = co_await local_lookup;
      if (local_infos.empty()) throw_no_address(local.host, local_port);
      for (AddrInfo& info : local_infos) locals.push_back(std::move(info.address));
    }
  }

  const int first_family_count = options.interleave.value_or(options.happy_eyeballs_delay ? 1 : 0);
  std::vector<SocketAddress> remotes;
  if (first_family_count > 0) {
    remotes = interleave(infos, first_family_count);
  } else {
    remotes.reserve(infos.size());
    for (AddrInfo& info : infos) remotes.push_back(std::move(info.address));
  }

  Coro<UniqueFd> race = connect_race(loop, std::move(remotes), std::move(locals), bind_local,
                                     options.happy_eyeballs_delay);
  UniqueFd fd = co_await race;
  if (options.ssl && options.ssl->server_hostname.empty()) options.ssl->server_hostname = host;
  Coro<Connection<BaseProtocol>> start = start_connection(loop, std::move(fd), factory, options.ssl);
  Connection<BaseProtocol> connection = co_await start;
  // The transport sets TCP_NODELAY on every TCP socket, as asyncio does; undo it if asked.
  if (!options.nodelay) {
    if (std::optional<int> s = connection.transport->get_extra_info_as<int>("socket")) {
      set_int_option(*s, IPPROTO_TCP, TCP_NODELAY, 0);
    }
  }
  co_return connection;
}

Coro<std::unique_ptr<Server>> serve_tcp(EventLoop& loop, AnyProtocolFactory factory,
                                        std::vector<std::string> hosts, std::uint16_t port,
                                        ServerOptions options) {
  if (hosts.empty()) hosts.emplace_back();
  const std::string service = std::to_string(port);
  const int flags = options.flags.value_or(AI_PASSIVE);
  // Every lookup starts at once (asyncio gathers them); their results are taken in order.
  std::vector<Future<std::vector<AddrInfo>>> lookups;
  lookups.reserve(hosts.size());
  for (const std::string& host : hosts) {
    lookups.push_back(loop.getaddrinfo(host, service, options.family, SOCK_STREAM, 0, flags));
  }
  std::vector<AddrInfo> infos;
  for (std::size_t i = 0; i < lookups.size(); ++i) {
    std::vector<AddrInfo> found = co_await lookups[i];
    if (found.empty()) throw_no_address(hosts[i], service);
    for (AddrInfo& info : found) {
      // One socket per distinct address (asyncio dedupes with a set, losing the order).
      const bool seen = std::any_of(infos.begin(), infos.end(), [&](const AddrInfo& other) {
        return other.address == info.address;
      });
      if (!seen) infos.push_back(std::move(info));
    }
  }

  ServerSettings settings{options.backlog, options.accept_retry_delay, std::move(options.ssl)};
  auto impl = std::make_shared<ServerImpl>(loop, std::move(factory), settings);
  std::error_code skipped;  // why the last skipped address was skipped
  std::string tried;
  for (const AddrInfo& info : infos) {
    tried += (tried.empty() ? "" : ", ") + info.address.to_string();
    UniqueFd fd(::socket(info.family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, info.protocol));
    if (!fd) {
      skipped = errno_code(errno);  // asyncio: a family or protocol this host lacks
      continue;
    }
    std::error_code ec;
    if (options.reuse_address) ec = set_int_option(fd.get(), SOL_SOCKET, SO_REUSEADDR, 1);
    if (!ec && options.reuse_port) ec = set_int_option(fd.get(), SOL_SOCKET, SO_REUSEPORT, 1);
    // One socket per family: without this, Linux's [::] would take the IPv4 port as well.
    if (!ec && info.family == AF_INET6) ec = set_int_option(fd.get(), IPPROTO_IPV6, IPV6_V6ONLY, 1);
    if (ec) throw std::system_error(ec, "setsockopt on the socket for " + info.address.to_string());
    if (::bind(fd.get(), info.address.data(), info.address.size()) != 0) {
      const int err = errno;
      if (err == EADDRNOTAVAIL) {  // asyncio (bpo-30945): assume the family is not enabled
        skipped = errno_code(err);
        continue;
      }
      throw std::system_error(errno_code(err), "bind " + info.address.to_string());
    }
    SocketAddress bound = socket_name(fd.get());
    impl->add_listener(ListenerSpec{std::move(fd), std::move(bound), {}, 0, 0});
  }
  if (impl->listener_count() == 0) {
    throw std::system_error(skipped ? skipped : errno_code(EADDRNOTAVAIL),
                            "bind: could not bind on any address out of " + tried);
  }
  auto server = std::make_unique<Server>(impl);
  if (options.start_serving) impl->start_serving();
  co_return server;
}

}  // namespace

Coro<Connection<BaseProtocol>> create_connection(AnyProtocolFactory factory, std::string host,
                                                 std::string port, ConnectOptions options) {
  if (options.happy_eyeballs_delay && *options.happy_eyeballs_delay < Duration::zero()) {
    throw std::invalid_argument("happy_eyeballs_delay must be >= 0, got " +
                                std::to_string(options.happy_eyeballs_delay->count()) + " ns");
  }
  if (options.interleave && *options.interleave < 0) {
    throw std::invalid_argument("interleave must be >= 0, got " +
                                std::to_string(*options.interleave));
  }
  EventLoop& loop = get_running_loop();
  std::string what = "connect " + host_port(host, port);
  const std::optional<Duration> limit = options.timeout;
  return connect_with_timeout(
      connect_tcp(loop, std::move(factory), std::move(host), std::move(port), std::move(options)),
      limit, std::move(what));
}

Coro<std::unique_ptr<Server>> create_server(AnyProtocolFactory factory,
                                            std::vector<std::string> hosts, std::uint16_t port,
                                            ServerOptions options) {
  if (options.backlog < 0) {
    throw std::invalid_argument("backlog must be >= 0, got " + std::to_string(options.backlog));
  }
  if (options.accept_retry_delay < Duration::zero()) {
    throw std::invalid_argument("accept_retry_delay must be >= 0, got " +
                                std::to_string(options.accept_retry_delay.count()) + " ns");
  }
  EventLoop& loop = get_running_loop();
  return serve_tcp(loop, std::move(factory), std::move(hosts), port, std::move(options));
}

}  // namespace strata::detail
