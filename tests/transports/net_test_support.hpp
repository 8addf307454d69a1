#pragma once
// Test support for the TCP, Unix and Server tests: servers that record each connection, a
// listener that never completes a connect (a local black hole), descriptor limits, temporary
// directories, and how a coroutine failed.

#include <catch2/catch.hpp>

#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <memory>
#include <stdexcept>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include <strata/core/coro.hpp>
#include <strata/core/errors.hpp>
#include <strata/core/event.hpp>
#include <strata/core/log.hpp>
#include <strata/core/socket_address.hpp>
#include <strata/transports/protocol.hpp>
#include <strata/transports/transport.hpp>

#include "stream_test_support.hpp"

namespace strata::testing {

/// The records of every connection a server accepted, in order: each one's protocol records
/// into its own Record (echoing, unless told otherwise).
struct Accepted {
  std::vector<std::unique_ptr<Record>> records;
  bool echo = true;
  int factory_calls = 0;
  int throw_on_call = -1;  // the factory throws on this call (0-based); -1: never
  Event changed;

  /// A ProtocolFactory that records into a new Record.
  auto factory() {
    return [this]() -> std::unique_ptr<RecordingProtocol> {
      const int call = factory_calls++;
      if (call == throw_on_call) throw std::runtime_error("factory refused connection " +
                                                          std::to_string(call));
      records.push_back(std::make_unique<Record>());
      Record& r = *records.back();
      r.echo = echo;
      r.on_made = [this](Transport&) { changed.set(); };
      r.on_lost = [this](std::error_code) { changed.set(); };
      return std::make_unique<RecordingProtocol>(r);
    };
  }

  /// Waits until @p n connections were made (connection_made() ran).
  Coro<void> wait_made(std::size_t n) {
    for (;;) {
      std::size_t made = 0;
      for (const auto& r : records) made += r->events.empty() ? 0 : 1;
      if (made >= n) break;
      changed.clear();
      co_await changed.wait();
    }
  }
  /// Waits until every connection made so far has ended.
  Coro<void> wait_all_lost() {
    for (;;) {
      bool all = true;
      for (const auto& r : records) all = all && r->lost;
      if (all) break;
      changed.clear();
      co_await changed.wait();
    }
  }
};

/// A ProtocolFactory recording into @p r.
inline auto recorder(Record& r) {
  return [&r] { return std::make_unique<RecordingProtocol>(r); };
}

/// How an awaitable ended: the exception, or nullptr.
template <class A>
Coro<std::exception_ptr> exception_of(A aw) {
  std::exception_ptr error;
  try {
    co_await std::move(aw);
  } catch (...) {
    error = std::current_exception();
  }
  co_return error;
}

/// What a failure was: "system_error", "TimeoutError", "CancelledError", "invalid_argument",
/// "InvalidStateError", another std::exception's what(), or "none".
struct Failure {
  std::string kind = "none";
  std::string what;
  std::error_code code;
};

inline Failure describe_failure(const std::exception_ptr& e) {
  Failure f;
  if (!e) return f;
  try {
    std::rethrow_exception(e);
  } catch (const CancelledError& x) {
    f.kind = "CancelledError";
    f.what = x.what();
  } catch (const TimeoutError& x) {
    f.kind = "TimeoutError";
    f.what = x.what();
  } catch (const InvalidStateError& x) {
    f.kind = "InvalidStateError";
    f.what = x.what();
  } catch (const std::system_error& x) {
    f.kind = "system_error";
    f.what = x.what();
    f.code = x.code();
  } catch (const std::invalid_argument& x) {
    f.kind = "invalid_argument";
    f.what = x.what();
  } catch (const std::exception& x) {
    f.kind = "exception";
    f.what = x.what();
  }
  return f;
}

/// Whether ::1 can be bound here.
inline bool ipv6_available() {
  int fd = ::socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  SocketAddress any("::1", 0);
  const bool ok = ::bind(fd, any.data(), any.size()) == 0;
  ::close(fd);
  return ok;
}

/// A plain socket bound to @p address, optionally listening; closed on destruction.
class PlainSocket {
 public:
  PlainSocket(const SocketAddress& address, std::optional<int> backlog, bool reuse_port = false) {
    fd_ = ::socket(address.family(), SOCK_STREAM | SOCK_CLOEXEC, 0);
    check_syscall(fd_, "socket");
    int one = 1;
    if (reuse_port) ::setsockopt(fd_, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
    if (address.is_ipv6()) ::setsockopt(fd_, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
    check_syscall(::bind(fd_, address.data(), address.size()), "bind");
    if (backlog) check_syscall(::listen(fd_, *backlog), "listen");
    SocketAddress bound;
    socklen_t len = SocketAddress::capacity();
    check_syscall(::getsockname(fd_, bound.mutable_data(), &len), "getsockname");
    bound.set_size(len);
    address_ = bound;
  }
  ~PlainSocket() { close(); }
  PlainSocket(const PlainSocket&) = delete;
  PlainSocket& operator=(const PlainSocket&) = delete;

  int fd() const noexcept { return fd_; }
  const SocketAddress& address() const noexcept { return address_; }
  std::uint16_t port() const noexcept { return address_.port(); }
  void close() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }

 private:
  int fd_ = -1;
  SocketAddress address_;
};

/// Waits (bounded) until @p fd is ready for @p events; false on timeout.
inline bool poll_ready(int fd, short events, int timeout_ms = 5000) {
  pollfd p{fd, events, 0};
  return ::poll(&p, 1, timeout_ms) == 1;
}

/// A TCP listener whose accept queue is full and never drained: a connect to it stays in
/// SYN-SENT (the kernel drops the SYNs of a listener whose queue is full), the local stand-in
/// for an unreachable host. Listens with backlog 0 and parks one connection in the queue.
class BlackHole {
 public:
  explicit BlackHole(const SocketAddress& address) : listener_(address, 0) {
    filler_ = ::socket(address.family(), SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    check_syscall(filler_, "socket");
    if (::connect(filler_, listener_.address().data(), listener_.address().size()) != 0 &&
        errno != EINPROGRESS) {
      check_syscall(-1, "connect");
    }
    // The queue holds the filler once the listener turns readable: from then on it is full.
    REQUIRE(poll_ready(listener_.fd(), POLLIN));
  }
  ~BlackHole() { ::close(filler_); }
  BlackHole(const BlackHole&) = delete;
  BlackHole& operator=(const BlackHole&) = delete;

  const SocketAddress& address() const noexcept { return listener_.address(); }
  std::uint16_t port() const noexcept { return listener_.port(); }

 private:
  PlainSocket listener_;
  int filler_ = -1;
};

/// Sets RLIMIT_NOFILE's soft limit for a scope.
class FdLimit {
 public:
  FdLimit() { check_syscall(::getrlimit(RLIMIT_NOFILE, &saved_), "getrlimit"); }
  ~FdLimit() { ::setrlimit(RLIMIT_NOFILE, &saved_); }
  FdLimit(const FdLimit&) = delete;
  FdLimit& operator=(const FdLimit&) = delete;

  /// Soft limit @p n (at most the hard limit).
  void set(rlim_t n) {
    rlimit r = saved_;
    r.rlim_cur = std::min(n, saved_.rlim_max);
    check_syscall(::setrlimit(RLIMIT_NOFILE, &r), "setrlimit");
  }
  /// The soft limit that makes the next new descriptor fail with EMFILE: every one below the
  /// lowest free descriptor is in use.
  void exhaust() {
    const int lowest_free = ::fcntl(0, F_DUPFD_CLOEXEC, 0);
    check_syscall(lowest_free, "fcntl F_DUPFD");
    ::close(lowest_free);
    set(static_cast<rlim_t>(lowest_free));
  }
  void restore() { check_syscall(::setrlimit(RLIMIT_NOFILE, &saved_), "setrlimit"); }
  /// Raises the soft limit to the hard one.
  void raise_to_hard() { set(saved_.rlim_max); }
  rlim_t soft() const noexcept { return saved_.rlim_cur; }
  rlim_t hard() const noexcept { return saved_.rlim_max; }

 private:
  rlimit saved_{};
};

/// A fresh directory under $TMPDIR (or /tmp), removed with its contents on destruction.
class TempDir {
 public:
  TempDir() {
    const char* base = std::getenv("TMPDIR");
    std::string tmpl = std::string(base && *base ? base : "/tmp") + "/strata-XXXXXX";
    if (::mkdtemp(tmpl.data()) == nullptr) check_syscall(-1, "mkdtemp");
    path_ = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  std::string path(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

/// Whether a file exists at @p path (without following a symbolic link).
inline bool exists(const std::string& path) {
  struct stat st {};
  return ::lstat(path.c_str(), &st) == 0;
}

/// Log records, with an Event set at each one, for a scope.
class LogRecorder {
 public:
  LogRecorder() {
    strata::set_log_handler([this](LogLevel level, std::string_view message) {
      records.emplace_back(level, std::string(message));
      changed.set();
    });
  }
  ~LogRecorder() { strata::set_log_handler({}); }
  LogRecorder(const LogRecorder&) = delete;
  LogRecorder& operator=(const LogRecorder&) = delete;

  /// Waits until there are at least @p n records.
  Coro<void> wait_count(std::size_t n) {
    for (;;) {
      if (records.size() >= n) break;
      changed.clear();
      co_await changed.wait();
    }
  }
  std::size_t count(LogLevel level) const {
    std::size_t n = 0;
    for (const auto& r : records) n += r.first == level ? 1 : 0;
    return n;
  }

  std::vector<std::pair<LogLevel, std::string>> records;
  Event changed;
};

}  // namespace strata::testing
