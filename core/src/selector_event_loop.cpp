#include "selector_event_loop.hpp"

#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <system_error>

namespace strata::detail {

SelectorEventLoop::SelectorEventLoop(std::unique_ptr<Selector> selector)
    : selector_(std::move(selector)), name_(selector_->name()), kind_(parse_loop_kind(name_)) {
  wake_fd_ = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (wake_fd_ < 0) throw std::system_error(errno, std::generic_category(), "eventfd");
  try {
    do_add_reader(wake_fd_, [fd = wake_fd_] {
      std::uint64_t n;
      while (::read(fd, &n, sizeof n) > 0) {
      }
    });
  } catch (...) {
    ::close(wake_fd_);
    throw;
  }
}

SelectorEventLoop::~SelectorEventLoop() {
  close_in_destructor();
  ::close(wake_fd_);  // only now: another thread may still call stop() until the loop dies
}

SelectorEventLoop::FdEntry& SelectorEventLoop::entry(int fd) {
  if (fd < 0) throw std::invalid_argument("file descriptor must be >= 0, got " + std::to_string(fd));
  if (static_cast<std::size_t>(fd) >= fds_.size()) fds_.resize(static_cast<std::size_t>(fd) + 1);
  return fds_[fd];
}

void SelectorEventLoop::set_callback(int fd, HandleImpl* FdEntry::*slot, std::uint32_t event,
                                     Callback&& callback) {
  check_open();
  if (debug_) check_thread(event == event_read ? "add_reader" : "add_writer");
  FdEntry& e = entry(fd);
  std::uint32_t events = e.events | event;
  if (events != e.events) {
    selector_->modify(fd, e.events, events);  // may throw: nothing changed yet
    e.events = events;
  }
  auto* h = HandleImpl::create(std::move(callback));
  if (HandleImpl* old = std::exchange(e.*slot, h)) {
    old->cancel();
    old->release();
  }
}

bool SelectorEventLoop::clear_callback(int fd, HandleImpl* FdEntry::*slot, std::uint32_t event) {
  if (is_closed()) return false;
  if (debug_) check_thread(event == event_read ? "remove_reader" : "remove_writer");
  if (fd < 0 || static_cast<std::size_t>(fd) >= fds_.size()) return false;
  FdEntry& e = fds_[fd];
  HandleImpl* h = std::exchange(e.*slot, nullptr);
  if (!h) return false;
  std::uint32_t events = e.events & ~event;
  try {
    selector_->modify(fd, e.events, events);
  } catch (...) {
    // The descriptor is gone from the kernel's view already; forget it here too.
  }
  e.events = events;
  h->cancel();  // a readiness already queued this iteration must not run
  h->release();
  return true;
}

void SelectorEventLoop::do_add_reader(int fd, Callback&& callback) {
  set_callback(fd, &FdEntry::reader, event_read, std::move(callback));
}
void SelectorEventLoop::do_add_writer(int fd, Callback&& callback) {
  set_callback(fd, &FdEntry::writer, event_write, std::move(callback));
}
bool SelectorEventLoop::remove_reader(int fd) {
  return clear_callback(fd, &FdEntry::reader, event_read);
}
bool SelectorEventLoop::remove_writer(int fd) {
  return clear_callback(fd, &FdEntry::writer, event_write);
}

void SelectorEventLoop::wait_for_events(std::optional<Duration> timeout) {
  ready_fds_.clear();
  selector_->select(timeout, ready_fds_);
  for (const ReadyFd& r : ready_fds_) {
    const FdEntry& e = fds_[r.fd];
    if ((r.events & event_read) && e.reader) push_ready(e.reader);
    if ((r.events & event_write) && e.writer) push_ready(e.writer);
  }
}

void SelectorEventLoop::wake_up() noexcept {
  std::uint64_t one = 1;
  // EAGAIN means the counter is saturated: the loop is woken already.
  [[maybe_unused]] auto n = ::write(wake_fd_, &one, sizeof one);
}

void SelectorEventLoop::close_backend() noexcept {
  for (std::size_t fd = 0; fd < fds_.size(); ++fd) {
    FdEntry& e = fds_[fd];
    for (HandleImpl* h : {e.reader, e.writer}) {
      if (h) {
        h->cancel();
        h->release();
      }
    }
    e = FdEntry{};
  }
  fds_.clear();
  selector_.reset();
}

}  // namespace strata::detail
