#pragma once
// Selector: the readiness backend beneath SelectorEventLoop (Python's selectors module).

#include <cstdint>
#include <memory>
#include <optional>
#include <string_view>
#include <vector>

#include "strata/core/clock.hpp"

namespace strata::detail {

inline constexpr std::uint32_t event_read = 1;
inline constexpr std::uint32_t event_write = 2;

struct ReadyFd {
  int fd;
  std::uint32_t events;  // event_read | event_write; errors and hang-ups report both
};

class Selector {
 public:
  virtual ~Selector() = default;

  virtual std::string_view name() const noexcept = 0;

  /// Changes the events watched on @p fd from @p old_events to @p new_events; 0 means not
  /// watched, so (0 → x) registers and (x → 0) unregisters. Unregistering a descriptor that
  /// was already closed is not an error.
  /// @throws std::system_error or std::invalid_argument when the backend refuses @p fd.
  virtual void modify(int fd, std::uint32_t old_events, std::uint32_t new_events) = 0;

  /// Waits until a watched descriptor is ready or @p timeout passes (nullopt: no limit),
  /// appending what is ready to @p out. A signal interrupting the wait returns early.
  virtual void select(std::optional<Duration> timeout, std::vector<ReadyFd>& out) = 0;
};

/// Rounds a timeout up to whole milliseconds, so that a wait never ends before a timer is due.
int timeout_ms(std::optional<Duration> timeout) noexcept;

std::unique_ptr<Selector> make_epoll_selector();
std::unique_ptr<Selector> make_poll_selector();
std::unique_ptr<Selector> make_select_selector();

}  // namespace strata::detail
