#pragma once
/// @file
/// @cond INTERNAL
/// The loop's I/O interface (DESIGN.md, "The two loops") beyond IoChannel: accepting,
/// connecting, and watching a descriptor that has no completion operation of its own. The
/// selector loop waits for readiness and calls accept4(2) or looks at SO_ERROR; the proactor
/// loop on io_uring starts accept (multishot), connect and poll operations. With these, no
/// transport depends on add_reader()/add_writer().

#include <memory>

#include "strata/core/detail/unique_function.hpp"

namespace strata {
class EventLoop;
class SocketAddress;
}  // namespace strata

namespace strata::detail {

/// What an acceptor reports to: its server. Every report comes from a loop callback, never
/// from inside a call into the acceptor, and none comes after IoAcceptor::close().
class AcceptClient {
 public:
  /// A new connection: a non-blocking, close-on-exec descriptor, the client's from now on.
  virtual void accepted(int fd) noexcept = 0;
  /// accept failed with the errno value @p err (never EAGAIN). The acceptor goes on unless
  /// the client stops it: a transient error (ECONNABORTED) needs nothing, a shortage
  /// (EMFILE) calls for a pause.
  virtual void accept_failed(int err) noexcept = 0;

 protected:
  ~AcceptClient() = default;
};

/// The accepting side of one listening socket, made by EventLoop::open_acceptor().
class IoAcceptor {
 public:
  /// Accepts until stop(); a no-op while accepting.
  /// @throws std::system_error  the loop refused the descriptor (select: past FD_SETSIZE), or
  ///         the operation could not be started.
  virtual void start() = 0;
  /// Stops accepting. Connections the proactor accepted and has not reported yet are kept
  /// for the next start().
  virtual void stop() noexcept = 0;
  /// Stops and frees the acceptor, closing connections accepted and not reported. The
  /// listening descriptor is not the acceptor's: the caller closes it after this call.
  virtual void close() noexcept = 0;

 protected:
  IoAcceptor() = default;
  IoAcceptor(const IoAcceptor&) = delete;
  IoAcceptor& operator=(const IoAcceptor&) = delete;
  virtual ~IoAcceptor() = default;
};

/// Owns an acceptor; destroying it closes the acceptor.
struct IoAcceptorDeleter {
  void operator()(IoAcceptor* acceptor) const noexcept { acceptor->close(); }
};
/// An open acceptor.
using IoAcceptorPtr = std::unique_ptr<IoAcceptor, IoAcceptorDeleter>;

/// What a connect reports to. The report comes from a loop callback, once, and never after
/// IoConnect::cancel().
class ConnectClient {
 public:
  /// The connect ended: @p err is 0 (connected) or the errno value of the failure.
  virtual void connect_done(int err) noexcept = 0;

 protected:
  ~ConnectClient() = default;
};

/// A connect in progress, made by EventLoop::start_connect().
class IoConnect {
 public:
  /// Stops the connect and frees it: the client hears nothing more. The socket is not the
  /// connect's: the caller closes it after this call.
  virtual void cancel() noexcept = 0;

 protected:
  IoConnect() = default;
  IoConnect(const IoConnect&) = delete;
  IoConnect& operator=(const IoConnect&) = delete;
  virtual ~IoConnect() = default;
};

/// Owns a connect in progress; destroying it cancels the connect.
struct IoConnectDeleter {
  void operator()(IoConnect* connect) const noexcept { connect->cancel(); }
};
/// A connect in progress, or none.
using IoConnectPtr = std::unique_ptr<IoConnect, IoConnectDeleter>;

/// What EventLoop::start_connect() did.
struct ConnectStart {
  /// 0: connected at once (no operation, no report); EINPROGRESS: @c op runs and reports;
  /// anything else: the errno value of an immediate failure (no operation).
  int status = 0;
  IoConnectPtr op;
};

/// Readiness of one descriptor, for what has no completion operation of its own: datagram
/// sockets, pipes, pidfds, the signal pipe. Made by EventLoop::open_watch(). Reports are
/// level-triggered, as add_reader()'s: on the proactor each is a poll operation, started again
/// after each report once the iteration's callbacks have run.
class IoWatch {
 public:
  using Callback = UniqueFunction<void()>;

  /// Calls @p callback whenever the descriptor is readable (or has an error or hang-up), until
  /// clear_reader(); replaces an earlier one.
  /// @throws std::system_error  the loop refused the descriptor (epoll: not open; select: past
  ///         FD_SETSIZE).
  virtual void set_reader(Callback callback) = 0;
  /// Stops the reader's reports, one already due included.
  virtual void clear_reader() noexcept = 0;
  /// As set_reader(), for writability.
  virtual void set_writer(Callback callback) = 0;
  /// As clear_reader().
  virtual void clear_writer() noexcept = 0;
  /// Stops both and frees the watch. The descriptor is not the watch's: the caller closes it
  /// after this call.
  virtual void close() noexcept = 0;

 protected:
  IoWatch() = default;
  IoWatch(const IoWatch&) = delete;
  IoWatch& operator=(const IoWatch&) = delete;
  virtual ~IoWatch() = default;
};

/// Owns a watch; destroying it closes the watch.
struct IoWatchDeleter {
  void operator()(IoWatch* watch) const noexcept { watch->close(); }
};
/// An open watch.
using IoWatchPtr = std::unique_ptr<IoWatch, IoWatchDeleter>;

}  // namespace strata::detail
/// @endcond
