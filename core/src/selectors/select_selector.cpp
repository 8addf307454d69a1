#include <sys/select.h>

#include <algorithm>
#include <cerrno>
#include <stdexcept>
#include <string>
#include <system_error>

#include "selector.hpp"

namespace strata::detail {

namespace {

class SelectSelector final : public Selector {
 public:
  SelectSelector() {
    FD_ZERO(&read_);
    FD_ZERO(&write_);
  }

  std::string_view name() const noexcept override { return "select"; }

  void modify(int fd, std::uint32_t old_events, std::uint32_t new_events) override {
    (void)old_events;
    if (fd < 0 || fd >= FD_SETSIZE) {
      throw std::invalid_argument("the select backend handles file descriptors 0 to " +
                                  std::to_string(FD_SETSIZE - 1) + ", got " +
                                  std::to_string(fd) + "; use the epoll or poll loop");
    }
    if (new_events & event_read) FD_SET(fd, &read_); else FD_CLR(fd, &read_);
    if (new_events & event_write) FD_SET(fd, &write_); else FD_CLR(fd, &write_);
    if (new_events != 0) {
      max_fd_ = std::max(max_fd_, fd);
    } else if (fd == max_fd_) {
      while (max_fd_ >= 0 && !FD_ISSET(max_fd_, &read_) && !FD_ISSET(max_fd_, &write_)) --max_fd_;
    }
  }

  void select(std::optional<Duration> timeout, std::vector<ReadyFd>& out) override {
    fd_set r = read_;
    fd_set w = write_;
    fd_set x = read_;  // exceptional conditions (out-of-band data, errors) wake readers too
    timeval tv{};
    timeval* tvp = nullptr;
    if (timeout) {
      auto us = std::chrono::ceil<std::chrono::microseconds>(std::max(*timeout, Duration::zero()));
      tv.tv_sec = static_cast<time_t>(us.count() / 1000000);
      tv.tv_usec = static_cast<suseconds_t>(us.count() % 1000000);
      tvp = &tv;
    }
    int n = ::select(max_fd_ + 1, &r, &w, &x, tvp);
    if (n < 0) {
      if (errno == EINTR) return;
      throw std::system_error(errno, std::generic_category(), "select");
    }
    for (int fd = 0; fd <= max_fd_ && n > 0; ++fd) {
      std::uint32_t ready = 0;
      if (FD_ISSET(fd, &r) || FD_ISSET(fd, &x)) ready |= event_read;
      if (FD_ISSET(fd, &w)) ready |= event_write;
      if (ready) {
        out.push_back({fd, ready});
        --n;
      }
    }
  }

 private:
  fd_set read_;
  fd_set write_;
  int max_fd_ = -1;
};

}  // namespace

std::unique_ptr<Selector> make_select_selector() { return std::make_unique<SelectSelector>(); }

}  // namespace strata::detail
