// create_datagram_endpoint(): resolving, making the socket, and handing it to the transport
// (asyncio's BaseEventLoop.create_datagram_endpoint).

#include "strata/transports/datagram.hpp"

#include <netdb.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <exception>
#include <stdexcept>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include "datagram_transport.hpp"
#include "strata/core/event_loop.hpp"
#include "strata/core/future.hpp"
#include "strata/core/resolver.hpp"

namespace strata {
namespace detail {
namespace {

/// Closes a descriptor unless released.
class FdGuard {
 public:
  explicit FdGuard(int fd) noexcept : fd_(fd) {}
  FdGuard(const FdGuard&) = delete;
  FdGuard& operator=(const FdGuard&) = delete;
  ~FdGuard() {
    if (fd_ >= 0) ::close(fd_);
  }
  int get() const noexcept { return fd_; }
  int release() noexcept { return std::exchange(fd_, -1); }

 private:
  int fd_;
};

[[noreturn]] void throw_errno(int error, const std::string& what) {
  throw std::system_error(error, std::generic_category(), what);
}

std::string family_name(int family) {
  switch (family) {
    case AF_INET: return "AF_INET";
    case AF_INET6: return "AF_INET6";
    case AF_UNIX: return "AF_UNIX";
    case AF_UNSPEC: return "AF_UNSPEC";
    default: return "family " + std::to_string(family);
  }
}

/// Checks that @p address agrees with @p family (a path needs AF_UNIX, a host and port not).
void check_address(const DatagramAddress& address, int family, const char* which) {
  switch (address.kind) {
    case DatagramAddress::Kind::host_port:
      if (family == AF_UNIX) {
        throw std::invalid_argument(std::string("create_datagram_endpoint: ") + which +
                                    " is a host and port (\"" + address.host + "\", " +
                                    std::to_string(address.port) +
                                    ") but the family is AF_UNIX; give a socket path");
      }
      break;
    case DatagramAddress::Kind::unix_path:
      if (family != AF_UNIX) {
        throw std::invalid_argument(std::string("create_datagram_endpoint: ") + which +
                                    " is a Unix socket path (\"" + address.host +
                                    "\"), which needs family AF_UNIX, not " +
                                    family_name(family) +
                                    "; for a host give a port too, as {host, port}");
      }
      break;
    case DatagramAddress::Kind::address:
      if (address.address.empty()) {
        throw std::invalid_argument(std::string("create_datagram_endpoint: ") + which +
                                    " is an empty SocketAddress");
      }
      if (family != AF_UNSPEC && address.address.family() != family) {
        throw std::invalid_argument(std::string("create_datagram_endpoint: ") + which + " " +
                                    address.address.to_string() + " is not of family " +
                                    family_name(family));
      }
      break;
  }
}

/// The candidates for @p address: resolved by getaddrinfo() for a host and port, else the
/// one address (a future already done).
Future<std::vector<AddrInfo>> resolve(EventLoop& loop, const DatagramAddress& address,
                                      int family, int proto, int flags) {
  if (address.kind == DatagramAddress::Kind::host_port) {
    return loop.getaddrinfo(address.host, std::to_string(address.port), family, SOCK_DGRAM,
                            proto, flags);
  }
  AddrInfo info;
  info.type = SOCK_DGRAM;
  info.protocol = proto;
  info.address = address.kind == DatagramAddress::Kind::unix_path
                     ? SocketAddress::unix_path(address.host)
                     : address.address;
  info.family = info.address.family();
  std::vector<AddrInfo> infos;
  infos.push_back(std::move(info));
  Future<std::vector<AddrInfo>> done = loop.create_future<std::vector<AddrInfo>>();
  done.set_result(std::move(infos));
  return done;
}

/// One (local, remote) pair to try; either may be null.
struct Candidate {
  const AddrInfo* local = nullptr;
  const AddrInfo* remote = nullptr;
};

/// A non-blocking datagram socket with the options set, bound and connected as asked.
/// @throws std::system_error  naming the failed call and its address.
int open_socket(int family, int proto, const Candidate& c, const DatagramOptions& options) {
  const int fd = ::socket(family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, proto);
  if (fd < 0) throw_errno(errno, "socket " + family_name(family) + " SOCK_DGRAM");
  FdGuard guard(fd);
  const int one = 1;
  if (options.reuse_port && ::setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) < 0) {
    throw_errno(errno, "setsockopt SO_REUSEPORT");
  }
  if (options.allow_broadcast &&
      ::setsockopt(fd, SOL_SOCKET, SO_BROADCAST, &one, sizeof one) < 0) {
    throw_errno(errno, "setsockopt SO_BROADCAST");
  }
  if (c.local) {
    const SocketAddress& local = c.local->address;
    if (local.is_unix() && !local.is_abstract() && !local.path().empty()) {
      // A socket file left by an earlier endpoint would make bind() fail: remove it (asyncio
      // does the same). Anything that is not a socket is left alone, and bind() reports it.
      struct stat st {};
      if (::lstat(local.path().c_str(), &st) == 0 && S_ISSOCK(st.st_mode)) {
        ::unlink(local.path().c_str());
      }
    }
    if (::bind(fd, local.data(), local.size()) < 0) throw_errno(errno, "bind " + local.to_string());
  }
  if (c.remote) {
    const SocketAddress& remote = c.remote->address;
    int rc;
    do {
      rc = ::connect(fd, remote.data(), remote.size());
    } while (rc < 0 && errno == EINTR);
    // Connecting a datagram socket only records the peer: it completes at once.
    if (rc < 0) throw_errno(errno, "connect " + remote.to_string());
  }
  return guard.release();
}

}  // namespace

Coro<DatagramTransport*> open_datagram_endpoint(AnyDatagramProtocolFactory factory,
                                                DatagramOptions options) {
  EventLoop& loop = get_running_loop();
  const int family = options.family;
  if (options.local_addr) check_address(*options.local_addr, family, "local_addr");
  if (options.remote_addr) check_address(*options.remote_addr, family, "remote_addr");
  if (!options.local_addr && !options.remote_addr && family == AF_UNSPEC) {
    throw std::invalid_argument(
        "create_datagram_endpoint: give local_addr, remote_addr or family (neither address "
        "says which family of socket to make)");
  }

  // Resolve both (numeric addresses without a thread hop). A local host may be empty: with
  // AI_PASSIVE that is the wildcard address.
  std::vector<AddrInfo> locals;
  std::vector<AddrInfo> remotes;
  if (options.local_addr) {
    Future<std::vector<AddrInfo>> resolving =
        resolve(loop, *options.local_addr, family, options.proto, options.flags | AI_PASSIVE);
    locals = co_await resolving;
  }
  if (options.remote_addr) {
    Future<std::vector<AddrInfo>> resolving =
        resolve(loop, *options.remote_addr, family, options.proto, options.flags);
    remotes = co_await resolving;
  }

  // Each local result with each remote one of its family, in the resolver's order.
  std::vector<Candidate> candidates;
  if (options.local_addr && options.remote_addr) {
    for (const AddrInfo& l : locals) {
      for (const AddrInfo& r : remotes) {
        if (l.family == r.family) candidates.push_back(Candidate{&l, &r});
      }
    }
    if (candidates.empty()) {
      throw std::system_error(
          std::make_error_code(std::errc::address_family_not_supported),
          "create_datagram_endpoint: local_addr " + locals.front().address.to_string() +
              " and remote_addr " + remotes.front().address.to_string() +
              " have no address family in common");
    }
  } else if (options.local_addr) {
    for (const AddrInfo& l : locals) candidates.push_back(Candidate{&l, nullptr});
  } else if (options.remote_addr) {
    for (const AddrInfo& r : remotes) candidates.push_back(Candidate{nullptr, &r});
  } else {
    candidates.push_back(Candidate{});
  }

  int fd = -1;
  std::exception_ptr last_error;
  SocketAddress peer;
  for (const Candidate& c : candidates) {
    const AddrInfo* first = c.local ? c.local : c.remote;
    const int fam = first ? first->family : family;
    const int proto = first ? first->protocol : options.proto;
    try {
      fd = open_socket(fam, proto, c, options);
      if (c.remote) peer = c.remote->address;
      break;
    } catch (const std::system_error&) {
      last_error = std::current_exception();  // try the next pair; report the last failure
    }
  }
  if (fd < 0) std::rethrow_exception(last_error);

  FdGuard guard(fd);
  std::unique_ptr<DatagramProtocol> protocol = factory();
  if (!protocol) {
    throw std::invalid_argument("create_datagram_endpoint: the protocol factory returned null");
  }
  Future<void> waiter = loop.create_future<void>();
  DatagramTransport& transport =
      make_datagram_transport(loop, guard.release(), std::move(protocol), peer, waiter);
  std::exception_ptr failure;
  try {
    co_await waiter;  // connection_made() has run
  } catch (...) {
    failure = std::current_exception();
  }
  if (failure) {
    // Cancelled, or connection_made() threw (the transport is aborted already). The transport
    // is alive either way: its connection_lost() runs after this resumption (see
    // make_datagram_transport).
    transport.close();
    std::rethrow_exception(failure);
  }
  co_return &transport;
}

}  // namespace detail
}  // namespace strata
