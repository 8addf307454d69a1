#include <sys/epoll.h>
#include <unistd.h>

#include <cerrno>
#include <system_error>

#include "selector.hpp"

namespace strata::detail {

namespace {

std::uint32_t to_epoll(std::uint32_t events) noexcept {
  return ((events & event_read) ? EPOLLIN : 0u) | ((events & event_write) ? EPOLLOUT : 0u);
}

class EpollSelector final : public Selector {
 public:
  EpollSelector() : epfd_(::epoll_create1(EPOLL_CLOEXEC)) {
    if (epfd_ < 0) throw std::system_error(errno, std::generic_category(), "epoll_create1");
    events_.resize(256);
  }
  ~EpollSelector() override { ::close(epfd_); }

  std::string_view name() const noexcept override { return "epoll"; }

  void modify(int fd, std::uint32_t old_events, std::uint32_t new_events) override {
    epoll_event ev{};
    ev.events = to_epoll(new_events);
    ev.data.fd = fd;
    int op = old_events == 0 ? EPOLL_CTL_ADD : new_events == 0 ? EPOLL_CTL_DEL : EPOLL_CTL_MOD;
    if (::epoll_ctl(epfd_, op, fd, &ev) == 0) return;
    if (op == EPOLL_CTL_DEL && (errno == EBADF || errno == ENOENT)) return;  // already closed
    throw std::system_error(errno, std::generic_category(),
                            "epoll_ctl on fd " + std::to_string(fd));
  }

  void select(std::optional<Duration> timeout, std::vector<ReadyFd>& out) override {
    int n = ::epoll_wait(epfd_, events_.data(), static_cast<int>(events_.size()),
                         timeout_ms(timeout));
    if (n < 0) {
      if (errno == EINTR) return;
      throw std::system_error(errno, std::generic_category(), "epoll_wait");
    }
    for (int i = 0; i < n; ++i) {
      std::uint32_t e = events_[i].events;
      std::uint32_t ready = 0;
      if (e & (EPOLLIN | EPOLLERR | EPOLLHUP | EPOLLRDHUP)) ready |= event_read;
      if (e & (EPOLLOUT | EPOLLERR | EPOLLHUP)) ready |= event_write;
      out.push_back({events_[i].data.fd, ready});
    }
    // A full batch suggests more are ready: take more next time.
    if (static_cast<std::size_t>(n) == events_.size() && events_.size() < 65536) {
      events_.resize(events_.size() * 2);
    }
  }

 private:
  int epfd_;
  std::vector<epoll_event> events_;
};

}  // namespace

std::unique_ptr<Selector> make_epoll_selector() { return std::make_unique<EpollSelector>(); }

}  // namespace strata::detail
