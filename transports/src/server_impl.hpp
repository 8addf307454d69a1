#pragma once
// The state behind strata::Server: its listening sockets, the accept loop, and the connections
// it tracks for wait_closed(), close_clients() and abort_clients().

#include <cstdint>
#include <memory>
#include <string>
#include <unordered_set>
#include <vector>

#include "socket_ops.hpp"
#include "stream_transport.hpp"
#include "strata/core/clock.hpp"
#include "strata/core/event_loop.hpp"
#include "strata/core/future.hpp"
#include "strata/core/handle.hpp"
#include "strata/core/socket_address.hpp"
#include "strata/transports/protocol_factory.hpp"
#include "strata/transports/server.hpp"
#include "strata/transports/ssl.hpp"

namespace strata::detail {

/// How a server accepts: backlog and the back-off after running out of descriptors.
struct ServerSettings {
  int backlog = 100;
  Duration accept_retry_delay = std::chrono::seconds(1);
  std::optional<SslOptions> ssl;  ///< every accepted connection speaks TLS as a server
};

/// A bound socket handed to a ServerImpl.
struct ListenerSpec {
  UniqueFd fd;
  SocketAddress address;
  /// For a Unix server with cleanup_socket: the path to unlink at close(), if it still names
  /// the file (device and inode) that bind() made.
  std::string cleanup_path;
  std::uint64_t device = 0;
  std::uint64_t inode = 0;
};

class ServerImpl final : public ConnectionTracker, public LoopResource {
 public:
  ServerImpl(EventLoop& loop, AnyProtocolFactory factory, const ServerSettings& settings);
  ~ServerImpl();
  ServerImpl(const ServerImpl&) = delete;
  ServerImpl& operator=(const ServerImpl&) = delete;

  /// Takes over a bound (not yet listening) socket.
  void add_listener(ListenerSpec spec);
  std::size_t listener_count() const noexcept { return listeners_.size(); }

  EventLoop& loop() const noexcept { return *loop_; }
  bool is_serving() const noexcept { return serving_; }
  bool is_closed() const noexcept { return closed_; }
  std::vector<ServerSocket> sockets() const;

  /// listen() (the first time) and watch every listening socket.
  /// @throws std::system_error  listen() failed.
  void start_serving();
  void close();
  void close_clients();
  void abort_clients();

  /// Whether wait_closed() must wait: not closed yet, or connections remain.
  bool must_wait() const noexcept { return !woken_; }
  /// A future completed once closed and without connections.
  Future<void> closed_waiter();

  /// serve_forever()'s future: completed by close(). Empty when none runs.
  Future<void> serving_forever;

  /// The Server object is going away: close, forget the connections, release the waiters.
  void release() noexcept;

  // ConnectionTracker
  void connection_opened(Transport& transport) noexcept override;
  void connection_closed(Transport& transport) noexcept override;

  // LoopResource
  void loop_closing() noexcept override;

 private:
  /// What one listening socket's acceptor reports to.
  struct Acceptance final : AcceptClient {
    ServerImpl* server = nullptr;
    std::size_t index = 0;
    void accepted(int fd) noexcept override { server->serve(fd); }
    void accept_failed(int err) noexcept override { server->accept_failed(index, err); }
  };

  struct Listener {
    int fd = -1;
    SocketAddress address;
    std::string cleanup_path;
    std::uint64_t device = 0;
    std::uint64_t inode = 0;
    TimerHandle retry;
    std::unique_ptr<Acceptance> acceptance;  // at a fixed address: the acceptor keeps it
    IoAcceptorPtr acceptor;                  // open while serving
    bool listening = false;
    bool watched = false;  // the acceptor is started
  };

  /// Starts accepting on listener @p index.
  void watch(std::size_t index);
  /// accept() failed with @p err: nothing for a transient error, else back off (a shortage of
  /// descriptors or memory, with a warning) or report to the exception handler and back off.
  void accept_failed(std::size_t index, int err) noexcept;
  void serve(int fd) noexcept;
  void close_listener(Listener& listener) noexcept;
  void wake_waiters() noexcept;
  void detach_clients() noexcept;

  EventLoop* loop_;
  AnyProtocolFactory factory_;
  std::vector<Listener> listeners_;
  std::unordered_set<Transport*> clients_;
  std::vector<Future<void>> waiters_;
  ServerSettings settings_;
  int accepts_per_wake_;
  bool serving_ = false;
  bool closed_ = false;
  bool woken_ = false;        // closed and no connection left: wait_closed() returns at once
  bool loop_closed_ = false;  // loop_closing() ran: the loop must not be touched again
};

}  // namespace strata::detail
