#include "strata/transports/server.hpp"

#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <exception>
#include <stdexcept>
#include <string>
#include <system_error>
#include <utility>

#include "server_impl.hpp"
#include "ssl_transport.hpp"
#include "strata/core/errors.hpp"
#include "strata/core/log.hpp"
#include "strata/core/task.hpp"

namespace strata {

namespace detail {

namespace {

/// accept() errors that leave the listening socket fine: the kernel's queue is empty, or the
/// connection at its head went away or carries a pending network error, which Linux reports
/// from accept() itself (accept(2), "Error handling"). The next accept() may succeed.
bool is_transient_accept_error(int err) noexcept {
  switch (err) {
    case ECONNABORTED:
    case EINTR:
    case EPROTO:
    case ENOPROTOOPT:
    case EHOSTDOWN:
    case ENONET:
    case EHOSTUNREACH:
    case ENETUNREACH:
    case ENETDOWN:
    case EPERM:  // a firewall rule refused it
      return true;
    default:
      return false;
  }
}

/// accept() errors that mean the process or the system ran out of something: retrying at once
/// would fail again, and a level-triggered reader would spin.
bool is_resource_error(int err) noexcept {
  return err == EMFILE || err == ENFILE || err == ENOBUFS || err == ENOMEM;
}

std::string milliseconds(Duration d) {
  return std::to_string(std::chrono::duration_cast<std::chrono::milliseconds>(d).count()) + " ms";
}

}  // namespace

ServerImpl::ServerImpl(EventLoop& loop, AnyProtocolFactory factory, const ServerSettings& settings)
    : loop_(&loop),
      factory_(std::move(factory)),
      settings_(settings),
      accepts_per_wake_(std::max(settings.backlog, 1)) {
  loop.attach_resource(*this);
}

ServerImpl::~ServerImpl() { release(); }

void ServerImpl::add_listener(ListenerSpec spec) {
  Listener l;
  l.address = spec.address;
  l.cleanup_path = std::move(spec.cleanup_path);
  l.device = spec.device;
  l.inode = spec.inode;
  listeners_.push_back(std::move(l));
  listeners_.back().fd = spec.fd.release();
}

std::vector<ServerSocket> ServerImpl::sockets() const {
  std::vector<ServerSocket> out;
  out.reserve(listeners_.size());
  for (const Listener& l : listeners_) out.push_back(ServerSocket{l.fd, l.address});
  return out;
}

void ServerImpl::start_serving() {
  if (closed_) throw InvalidStateError("start_serving(): the server is closed");
  if (serving_) return;
  for (Listener& l : listeners_) {
    if (l.listening) continue;
    if (::listen(l.fd, settings_.backlog) < 0) {
      throw std::system_error(errno_code(errno), "listen " + l.address.to_string());
    }
    l.listening = true;
  }
  for (std::size_t i = 0; i < listeners_.size(); ++i) watch(i);
  serving_ = true;
}

void ServerImpl::watch(std::size_t index) {
  Listener& l = listeners_[index];
  if (!l.acceptor) {
    if (!l.acceptance) {
      l.acceptance = std::make_unique<Acceptance>();
      l.acceptance->server = this;
      l.acceptance->index = index;
    }
    l.acceptor = loop_->open_acceptor(l.fd, accepts_per_wake_, *l.acceptance);
  }
  l.acceptor->start();
  l.watched = true;
}

void ServerImpl::accept_failed(std::size_t index, int err) noexcept {
  if (is_transient_accept_error(err)) return;  // the next accept may succeed
  Listener& l = listeners_[index];
  // Accepting again at once would fail again (a level-triggered reader would spin): stop for a
  // while, as asyncio's _accept_connection does. The pending connections wait in the kernel's
  // queue.
  l.acceptor->stop();
  l.watched = false;
  try {
    const std::error_code ec = errno_code(err);
    if (is_resource_error(err)) {
      log(LogLevel::warning, "accept on " + l.address.to_string() + ": " + ec.message() +
                                 "; not accepting for " +
                                 milliseconds(settings_.accept_retry_delay) +
                                 " (close descriptors, or raise RLIMIT_NOFILE)");
    } else {
      loop_->call_exception_handler(ExceptionContext{
          "accept() failed on a listening socket; not accepting for " +
              milliseconds(settings_.accept_retry_delay),
          std::make_exception_ptr(std::system_error(ec, "accept " + l.address.to_string())),
          {},
          {}});
    }
    ServerImpl* self = this;
    l.retry = loop_->call_later(settings_.accept_retry_delay, [self, index] {
      if (self->serving_ && !self->closed_ && !self->listeners_[index].watched) self->watch(index);
    });
  } catch (...) {
    // Out of memory for the message or the timer: this listener stays stopped.
    loop_->call_exception_handler(ExceptionContext{
        "a listening socket stopped accepting after accept() failed", std::current_exception(),
        {}, {}});
  }
}

void ServerImpl::serve(int fd) noexcept {
  std::unique_ptr<BaseProtocol> protocol;
  try {
    protocol = factory_();
    if (!protocol) throw std::invalid_argument("the protocol factory returned a null protocol");
    if (settings_.ssl) protocol = wrap_tls(*loop_, *settings_.ssl, true, std::move(protocol)).layer;
  } catch (...) {
    ::close(fd);
    loop_->call_exception_handler(ExceptionContext{
        "Error on transport creation for incoming connection", std::current_exception(), {}, {}});
    return;
  }
  try {
    make_stream_transport(*loop_, fd, StreamKind::socket, std::move(protocol), {}, this);
  } catch (...) {
    ::close(fd);  // still ours when make_stream_transport() throws
    loop_->call_exception_handler(ExceptionContext{
        "Error on transport creation for incoming connection", std::current_exception(), {}, {}});
  }
}

void ServerImpl::close() {
  if (closed_) return;
  closed_ = true;
  serving_ = false;
  for (Listener& l : listeners_) close_listener(l);
  listeners_.clear();
  if (serving_forever.valid() && !serving_forever.done()) serving_forever.set_result();
  serving_forever = {};
  if (clients_.empty()) wake_waiters();
}

void ServerImpl::close_listener(Listener& l) noexcept {
  l.retry.cancel();
  l.acceptor.reset();  // before the descriptor closes: an accept in flight holds it open
  l.watched = false;
  ::close(l.fd);
  l.fd = -1;
  if (l.cleanup_path.empty()) return;
  // Unlink the socket file only if it is still the one bind() made (asyncio 3.13): another
  // server may have replaced it meanwhile.
  struct stat st {};
  const bool found = ::stat(l.cleanup_path.c_str(), &st) == 0;
  if (found && (static_cast<std::uint64_t>(st.st_dev) != l.device ||
                static_cast<std::uint64_t>(st.st_ino) != l.inode)) {
    return;  // replaced: not ours to remove
  }
  int failed = 0;
  if (!found || ::unlink(l.cleanup_path.c_str()) != 0) failed = errno;  // stat's, or unlink's
  if (failed == 0 || failed == ENOENT) return;
  log(LogLevel::error, "Unable to clean up listening Unix socket " + l.cleanup_path + ": " +
                           errno_code(failed).message());
}

void ServerImpl::close_clients() {
  std::vector<Transport*> clients(clients_.begin(), clients_.end());
  for (Transport* t : clients) {
    // A TLS layer is both the stream's protocol and the application's transport: closing it
    // sends close_notify before the stream closes.
    if (auto* layer = dynamic_cast<Transport*>(&t->get_protocol())) {
      layer->close();
    } else {
      t->close();
    }
  }
}

void ServerImpl::abort_clients() {
  std::vector<Transport*> clients(clients_.begin(), clients_.end());
  for (Transport* t : clients) t->abort();
}

Future<void> ServerImpl::closed_waiter() {
  std::erase_if(waiters_, [](const Future<void>& w) { return w.done(); });  // cancelled waits
  Future<void> waiter(*loop_);
  waiters_.push_back(waiter);
  return waiter;
}

void ServerImpl::wake_waiters() noexcept {
  woken_ = true;
  std::vector<Future<void>> waiters = std::move(waiters_);
  waiters_.clear();
  for (Future<void>& w : waiters) {
    if (!w.done()) w.set_result();
  }
}

void ServerImpl::connection_opened(Transport& transport) noexcept {
  try {
    clients_.insert(&transport);
  } catch (...) {
    // Out of memory: the connection goes untracked (close_clients() will not see it).
  }
}

void ServerImpl::connection_closed(Transport& transport) noexcept {
  clients_.erase(&transport);
  if (closed_ && clients_.empty() && !woken_) wake_waiters();
}

void ServerImpl::detach_clients() noexcept {
  for (Transport* t : clients_) detach_tracker(*t);
  clients_.clear();
}

void ServerImpl::release() noexcept {
  if (loop_closed_) return;
  close();
  detach_clients();
  wake_waiters();  // nothing is tracked any more: nothing left to wait for
  loop_->detach_resource(*this);
  loop_closed_ = true;
}

void ServerImpl::loop_closing() noexcept { release(); }

namespace {

Coro<void> start_serving_in(std::shared_ptr<ServerImpl> impl) {
  impl->start_serving();
  co_return;
}

Coro<void> serve_forever_in(std::shared_ptr<ServerImpl> impl) {
  if (impl->is_closed()) throw InvalidStateError("serve_forever(): the server is closed");
  if (impl->serving_forever.valid()) {
    throw InvalidStateError("serve_forever(): it already runs on this server");
  }
  impl->start_serving();
  Future<void> closed(impl->loop());
  impl->serving_forever = closed;
  std::exception_ptr cancelled;
  try {
    co_await closed;
  } catch (const CancelledError&) {
    cancelled = std::current_exception();
  }
  if (!cancelled) co_return;  // close() was called
  impl->serving_forever = {};
  impl->close();
  if (impl->must_wait()) {
    Future<void> ended = impl->closed_waiter();
    co_await ended;
  }
  std::rethrow_exception(cancelled);
}

Coro<void> wait_closed_in(std::shared_ptr<ServerImpl> impl) {
  if (!impl->must_wait()) co_return;
  Future<void> ended = impl->closed_waiter();
  co_await ended;
}

}  // namespace

}  // namespace detail

Server::Server(std::shared_ptr<detail::ServerImpl> impl) noexcept : impl_(std::move(impl)) {}

Server::~Server() {
  if (impl_) impl_->release();
}

EventLoop& Server::get_loop() const noexcept { return impl_->loop(); }

bool Server::is_serving() const noexcept { return impl_->is_serving(); }

std::vector<ServerSocket> Server::sockets() const { return impl_->sockets(); }

Coro<void> Server::start_serving() {
  if (impl_->is_closed()) throw InvalidStateError("start_serving(): the server is closed");
  return detail::start_serving_in(impl_);
}

Coro<void> Server::serve_forever() {
  if (impl_->is_closed()) throw InvalidStateError("serve_forever(): the server is closed");
  if (impl_->serving_forever.valid()) {
    throw InvalidStateError("serve_forever(): it already runs on this server");
  }
  return detail::serve_forever_in(impl_);
}

void Server::close() { impl_->close(); }

Coro<void> Server::wait_closed() { return detail::wait_closed_in(impl_); }

void Server::close_clients() { impl_->close_clients(); }

void Server::abort_clients() { impl_->abort_clients(); }

}  // namespace strata
