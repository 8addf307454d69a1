#include "socket_ops.hpp"

#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <exception>
#include <new>
#include <stdexcept>

#include "strata/core/errors.hpp"
#include "strata/core/future.hpp"
#include "strata/core/task.hpp"
#include "strata/core/timeout.hpp"
#include "ssl_transport.hpp"
#include "stream_transport.hpp"

namespace strata::detail {

void UniqueFd::reset(int fd) noexcept {
  if (fd_ >= 0) ::close(fd_);
  fd_ = fd;
}

SocketAddress socket_name(int fd) {
  SocketAddress address;
  socklen_t len = SocketAddress::capacity();
  if (::getsockname(fd, address.mutable_data(), &len) < 0) {
    throw std::system_error(errno_code(errno), "getsockname");
  }
  address.set_size(len);
  return address;
}

std::error_code set_int_option(int fd, int level, int name, int value) noexcept {
  if (::setsockopt(fd, level, name, &value, sizeof value) < 0) return errno_code(errno);
  return {};
}

namespace {

/// Wakes the race coroutine: an attempt finished, or the stagger delay passed.
struct RaceWaker {
  Future<void> wake;
  bool delay_elapsed = false;

  void notify() {
    if (wake.valid() && !wake.done()) wake.set_result();
  }
};

/// One non-blocking connect: socket(), bind() to a local address if asked, then the loop's
/// connect (EventLoop::start_connect()) until it reports the outcome.
class ConnectAttempt final : public ConnectClient {
 public:
  enum class State : std::uint8_t { idle, connecting, connected, failed };

  ConnectAttempt() = default;
  ConnectAttempt(const ConnectAttempt&) = delete;
  ConnectAttempt& operator=(const ConnectAttempt&) = delete;
  ~ConnectAttempt() { op_.reset(); }  // cancelled before fd_ closes

  void init(EventLoop& loop, const SocketAddress& remote, RaceWaker& waker) {
    loop_ = &loop;
    remote_ = remote;
    waker_ = &waker;
  }

  /// Leaves state() connecting, connected or failed.
  /// @throws  what start_connect() throws (e.g. a descriptor beyond FD_SETSIZE on select).
  void start(const std::vector<SocketAddress>& locals, bool bind_local) {
    int fd = ::socket(remote_.family(), SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return fail(errno, "connect " + remote_.to_string());
    fd_.reset(fd);
    if (bind_local && !bind_to(locals)) return;
    ConnectStart started = loop_->start_connect(fd, remote_, *this);
    if (started.status == 0) {
      state_ = State::connected;
    } else if (started.status == EINPROGRESS) {
      op_ = std::move(started.op);
      state_ = State::connecting;
    } else {
      fail(started.status, "connect " + remote_.to_string());
    }
  }

  State state() const noexcept { return state_; }
  const std::error_code& error() const noexcept { return error_; }
  const std::string& what() const noexcept { return what_; }
  UniqueFd take_fd() noexcept { return std::move(fd_); }

 private:
  bool bind_to(const std::vector<SocketAddress>& locals) {
    std::error_code last;
    std::string last_what;
    for (const SocketAddress& local : locals) {
      if (local.family() != remote_.family()) continue;
      if (::bind(fd_.get(), local.data(), local.size()) == 0) return true;
      last = errno_code(errno);
      last_what = "bind " + local.to_string();
    }
    if (last) {
      fail(last.value(), std::move(last_what));
    } else {
      fail(EADDRNOTAVAIL, "bind: no local address of the family of " + remote_.to_string());
    }
    return false;
  }

  void connect_done(int err) noexcept override {
    op_.reset();
    if (err == 0) {
      state_ = State::connected;
    } else {
      state_ = State::failed;
      error_ = errno_code(err);
      fd_.reset();
      try {
        what_ = "connect " + remote_.to_string();
      } catch (const std::bad_alloc&) {
        what_.clear();  // the error code still tells
      }
    }
    waker_->notify();
  }

  void fail(int err, std::string what) {
    state_ = State::failed;
    error_ = errno_code(err);
    what_ = std::move(what);
    fd_.reset();
  }

  EventLoop* loop_ = nullptr;
  RaceWaker* waker_ = nullptr;
  IoConnectPtr op_;  // while connecting
  SocketAddress remote_;
  UniqueFd fd_;
  std::error_code error_;
  std::string what_;
  State state_ = State::idle;
};

/// Throws the failure of every attempt, as one std::system_error.
[[noreturn]] void throw_failures(const ConnectAttempt* attempts, std::size_t n) {
  const ConnectAttempt& last = attempts[n - 1];
  if (n == 1) throw std::system_error(last.error(), last.what());
  bool same_error = true;
  bool same_operation = true;
  const std::string operation = last.what().substr(0, last.what().find(' '));
  for (std::size_t i = 0; i + 1 < n; ++i) {
    same_error = same_error && attempts[i].error() == last.error();
    same_operation =
        same_operation && attempts[i].what().compare(0, operation.size() + 1, operation + " ") == 0;
  }
  std::string what;
  if (same_error && same_operation) {
    // "connect [::1]:1, 127.0.0.1:1" and then what() appends ": Connection refused".
    what = operation;
    for (std::size_t i = 0; i < n; ++i) {
      what += (i == 0 ? " " : ", ") + attempts[i].what().substr(operation.size() + 1);
    }
  } else {
    // asyncio's "Multiple exceptions: ...": each failure with its own message; the code (and
    // the message what() appends) is the last one's.
    what = "multiple errors: ";
    for (std::size_t i = 0; i + 1 < n; ++i) {
      what += attempts[i].what() + ": " + attempts[i].error().message() + "; ";
    }
    what += last.what();
  }
  throw std::system_error(last.error(), what);
}

}  // namespace

Coro<UniqueFd> connect_race(EventLoop& loop, std::vector<SocketAddress> remotes,
                            std::vector<SocketAddress> locals, bool bind_local,
                            std::optional<Duration> delay) {
  const std::size_t n = remotes.size();
  if (n == 0) throw std::invalid_argument("connect_race: no address to connect to");
  RaceWaker waker;
  std::unique_ptr<ConnectAttempt[]> attempts(new ConnectAttempt[n]);
  for (std::size_t i = 0; i < n; ++i) attempts[i].init(loop, remotes[i], waker);
  struct TimerGuard {
    TimerHandle handle;
    ~TimerGuard() { handle.cancel(); }
  } timer;
  using State = ConnectAttempt::State;
  std::size_t started = 0;
  for (;;) {
    for (std::size_t i = 0; i < started; ++i) {
      // The first one connected wins; destroying the others closes them.
      if (attempts[i].state() == State::connected) co_return attempts[i].take_fd();
    }
    const bool previous_failed = started > 0 && attempts[started - 1].state() == State::failed;
    if (started < n && (started == 0 || previous_failed || waker.delay_elapsed)) {
      waker.delay_elapsed = false;
      timer.handle.cancel();
      attempts[started++].start(locals, bind_local);
      if (delay && started < n) {
        RaceWaker* w = &waker;
        timer.handle = loop.call_later(*delay, [w] {
          w->delay_elapsed = true;
          w->notify();
        });
      }
      continue;
    }
    bool running = false;
    for (std::size_t i = 0; i < started; ++i) {
      running = running || attempts[i].state() == State::connecting;
    }
    if (!running && started == n) break;  // every one failed
    waker.wake = Future<void>(loop);
    co_await waker.wake;
  }
  throw_failures(attempts.get(), n);
}

Coro<Connection<BaseProtocol>> start_connection(EventLoop& loop, UniqueFd fd,
                                                AnyProtocolFactory& factory,
                                                const std::optional<SslOptions>& ssl) {
  std::unique_ptr<BaseProtocol> protocol = factory();
  if (!protocol) throw std::invalid_argument("the protocol factory returned a null protocol");
  BaseProtocol* app = protocol.get();
  TlsLayer tls;
  Future<void> handshake_done;
  if (ssl) {
    handshake_done = Future<void>(loop);
    tls = wrap_tls(loop, *ssl, false, std::move(protocol), handshake_done);
    protocol = std::move(tls.layer);
  }
  Future<void> waiter(loop);
  // If this throws, the descriptor is still ours, and closes with fd.
  Transport& transport =
      make_stream_transport(loop, fd.get(), StreamKind::socket, std::move(protocol), waiter);
  fd.release();
  Coro<void> made = wait_connection_made(std::move(waiter), transport);
  co_await made;
  if (!ssl) co_return Connection<BaseProtocol>{&transport, app};
  Coro<void> handshake = wait_handshake(std::move(handshake_done), *tls.transport);
  co_await handshake;
  co_return Connection<BaseProtocol>{tls.transport, app};
}

Coro<Connection<BaseProtocol>> connect_with_timeout(Coro<Connection<BaseProtocol>> inner,
                                                    std::optional<Duration> limit,
                                                    std::string what) {
  if (!limit) co_return co_await inner;
  Coro<Connection<BaseProtocol>> bounded = timeout(limit, std::move(inner));
  try {
    co_return co_await bounded;
  } catch (const TimeoutError&) {
    const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(*limit).count();
    throw TimeoutError(what + ": timed out after " + std::to_string(ms) + " ms");
  }
}

}  // namespace strata::detail
