// Accepting, connecting and watching by readiness: EventLoop's default open_acceptor(),
// start_connect() and open_watch(), used by the selector loop and by the proactor on Asio's reactor (whose
// add_reader()/add_writer() are reactor waits). See strata/core/detail/io_ops.hpp.

#include <sys/socket.h>

#include <cerrno>
#include <utility>

#include "strata/core/detail/io_ops.hpp"
#include "strata/core/event_loop.hpp"
#include "strata/core/socket_address.hpp"

namespace strata {

namespace {

/// Defers the deletion of an object closed from inside one of its own reports.
struct Reporting {
  bool& flag;
  explicit Reporting(bool& f) noexcept : flag(f) { flag = true; }
  ~Reporting() { flag = false; }
  Reporting(const Reporting&) = delete;
  Reporting& operator=(const Reporting&) = delete;
};

/// remove_reader() or remove_writer() of @p fd, for noexcept paths: only a debug-mode thread
/// check throws there (the caller is on the wrong thread), and nothing here can repair that.
void remove_quietly(EventLoop& loop, bool (EventLoop::*method)(int), int fd) noexcept {
  try {
    (loop.*method)(fd);
  } catch (...) {
  }
}

/// Accepts up to a batch of connections per readiness report of the listening socket.
class ReadinessAcceptor final : public detail::IoAcceptor {
 public:
  ReadinessAcceptor(EventLoop& loop, int fd, int batch, detail::AcceptClient& client) noexcept
      : loop_(&loop), client_(&client), fd_(fd), batch_(batch < 1 ? 1 : batch) {}

  void start() override {
    if (watching_ || closed_) return;
    loop_->add_reader(fd_, [this] { on_readable(); });
    watching_ = true;
  }
  void stop() noexcept override {
    if (!watching_) return;
    watching_ = false;
    remove_quietly(*loop_, &EventLoop::remove_reader, fd_);
  }
  void close() noexcept override {
    stop();
    closed_ = true;
    if (!reporting_) delete this;  // else when the report ends
  }

 private:
  ~ReadinessAcceptor() override = default;

  void on_readable() {
    {
      Reporting guard(reporting_);
      // The client may stop or close the acceptor from any report: then no more accepts.
      for (int i = 0; i < batch_ && watching_; ++i) {
        // No peer address here: the transport reads its names itself.
        const int fd = ::accept4(fd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd >= 0) {
          client_->accepted(fd);
          continue;
        }
        const int err = errno;
        if (err == EAGAIN || err == EWOULDBLOCK) break;  // drained
        client_->accept_failed(err);
      }
    }
    if (closed_) delete this;
  }

  EventLoop* loop_;
  detail::AcceptClient* client_;
  int fd_;
  int batch_;
  bool watching_ = false;
  bool reporting_ = false;
  bool closed_ = false;
};

/// Waits until the connecting socket is writable, then reads the outcome from SO_ERROR.
class ReadinessConnect final : public detail::IoConnect {
 public:
  ReadinessConnect(EventLoop& loop, int fd, detail::ConnectClient& client) noexcept
      : loop_(&loop), client_(&client), fd_(fd) {}

  void watch() {
    loop_->add_writer(fd_, [this] { on_writable(); });
    watching_ = true;
  }
  void cancel() noexcept override {
    stop_watching();
    cancelled_ = true;
    if (!reporting_) delete this;
  }

 private:
  ~ReadinessConnect() override = default;

  void stop_watching() noexcept {
    // Only while watching: the number may belong to another descriptor once the caller closed
    // this one.
    if (watching_) remove_quietly(*loop_, &EventLoop::remove_writer, fd_);
    watching_ = false;
  }

  void on_writable() {
    int err = 0;
    socklen_t len = sizeof err;
    if (::getsockopt(fd_, SOL_SOCKET, SO_ERROR, &err, &len) < 0) err = errno;
    if (err == EINPROGRESS || err == EINTR || err == EAGAIN) return;  // spurious: keep waiting
    stop_watching();
    {
      Reporting guard(reporting_);
      client_->connect_done(err);
    }
    if (cancelled_) delete this;
  }

  EventLoop* loop_;
  detail::ConnectClient* client_;
  int fd_;
  bool watching_ = false;
  bool reporting_ = false;
  bool cancelled_ = false;
};

/// add_reader()/add_writer() of one descriptor, removed only while set: once the caller has
/// closed the descriptor, its number may belong to someone else's registration.
class ReadinessWatch final : public detail::IoWatch {
 public:
  ReadinessWatch(EventLoop& loop, int fd) noexcept : loop_(&loop), fd_(fd) {}

  void set_reader(Callback callback) override {
    loop_->add_reader(fd_, std::move(callback));
    reader_ = true;
  }
  void clear_reader() noexcept override {
    if (std::exchange(reader_, false)) remove_quietly(*loop_, &EventLoop::remove_reader, fd_);
  }
  void set_writer(Callback callback) override {
    loop_->add_writer(fd_, std::move(callback));
    writer_ = true;
  }
  void clear_writer() noexcept override {
    if (std::exchange(writer_, false)) remove_quietly(*loop_, &EventLoop::remove_writer, fd_);
  }
  void close() noexcept override {
    clear_reader();
    clear_writer();
    delete this;  // the loop's handles own the callbacks: nothing of this object runs later
  }

 private:
  ~ReadinessWatch() override = default;

  EventLoop* loop_;
  int fd_;
  bool reader_ = false;
  bool writer_ = false;
};

}  // namespace

detail::IoWatchPtr EventLoop::open_watch(int fd) {
  return detail::IoWatchPtr(new ReadinessWatch(*this, fd));
}

detail::IoAcceptorPtr EventLoop::open_acceptor(int fd, int batch, detail::AcceptClient& client) {
  return detail::IoAcceptorPtr(new ReadinessAcceptor(*this, fd, batch, client));
}

detail::ConnectStart EventLoop::start_connect(int fd, const SocketAddress& address,
                                              detail::ConnectClient& client) {
  if (::connect(fd, address.data(), address.size()) == 0) return {0, {}};
  const int err = errno;
  // EINTR: a non-blocking connect goes on in the background. Anything else, EAGAIN included
  // (a Unix server's full backlog, or no ephemeral port left), is a failure: waiting for
  // writability would only report a socket that never connected.
  if (err != EINPROGRESS && err != EINTR) return {err, {}};
  auto* op = new ReadinessConnect(*this, fd, client);
  detail::IoConnectPtr owned(op);
  op->watch();  // if it throws, `owned` frees the operation
  return {EINPROGRESS, std::move(owned)};
}

}  // namespace strata
