#include <poll.h>

#include <cerrno>
#include <system_error>

#include "selector.hpp"

namespace strata::detail {

namespace {

short to_poll(std::uint32_t events) noexcept {
  return static_cast<short>(((events & event_read) ? POLLIN : 0) |
                            ((events & event_write) ? POLLOUT : 0));
}

class PollSelector final : public Selector {
 public:
  std::string_view name() const noexcept override { return "poll"; }

  void modify(int fd, std::uint32_t old_events, std::uint32_t new_events) override {
    (void)old_events;
    if (fd < 0) throw std::invalid_argument("poll: negative file descriptor");
    if (static_cast<std::size_t>(fd) >= slot_.size()) slot_.resize(fd + 1, npos);
    std::size_t& s = slot_[fd];
    if (new_events == 0) {
      if (s == npos) return;
      // Move the last entry into the hole.
      pollfd last = fds_.back();
      fds_.pop_back();
      if (s < fds_.size()) {
        fds_[s] = last;
        slot_[last.fd] = s;
      }
      s = npos;
      return;
    }
    if (s == npos) {
      s = fds_.size();
      fds_.push_back(pollfd{fd, 0, 0});
    }
    fds_[s].events = to_poll(new_events);
  }

  void select(std::optional<Duration> timeout, std::vector<ReadyFd>& out) override {
    int n = ::poll(fds_.data(), fds_.size(), timeout_ms(timeout));
    if (n < 0) {
      if (errno == EINTR) return;
      throw std::system_error(errno, std::generic_category(), "poll");
    }
    for (const pollfd& p : fds_) {
      if (n == 0) break;
      if (p.revents == 0) continue;
      --n;
      std::uint32_t ready = 0;
      if (p.revents & (POLLIN | POLLERR | POLLHUP | POLLNVAL)) ready |= event_read;
      if (p.revents & (POLLOUT | POLLERR | POLLHUP | POLLNVAL)) ready |= event_write;
      out.push_back({p.fd, ready});
    }
  }

 private:
  static constexpr std::size_t npos = static_cast<std::size_t>(-1);
  std::vector<pollfd> fds_;
  std::vector<std::size_t> slot_;  // fd -> index in fds_
};

}  // namespace

std::unique_ptr<Selector> make_poll_selector() { return std::make_unique<PollSelector>(); }

}  // namespace strata::detail
