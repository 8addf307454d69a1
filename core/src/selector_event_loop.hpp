#pragma once
// SelectorEventLoop: the readiness loop. A Selector reports ready descriptors; the loop queues
// their reader and writer callbacks, then runs due timers and ready callbacks.

#include <memory>
#include <vector>

#include "base_event_loop.hpp"
#include "selectors/selector.hpp"

namespace strata::detail {

class SelectorEventLoop final : public BaseEventLoop {
 public:
  explicit SelectorEventLoop(std::unique_ptr<Selector> selector);
  ~SelectorEventLoop() override;

  std::string_view backend_name() const noexcept override { return name_; }
  LoopKind kind() const noexcept override { return kind_; }

  bool remove_reader(int fd) override;
  bool remove_writer(int fd) override;

 protected:
  void do_add_reader(int fd, Callback&& callback) override;
  void do_add_writer(int fd, Callback&& callback) override;
  void wait_for_events(std::optional<Duration> timeout) override;
  void wake_up() noexcept override;
  void close_backend() noexcept override;

 private:
  struct FdEntry {
    HandleImpl* reader = nullptr;
    HandleImpl* writer = nullptr;
    std::uint32_t events = 0;
  };

  FdEntry& entry(int fd);
  void set_callback(int fd, HandleImpl* FdEntry::*slot, std::uint32_t event, Callback&& callback);
  bool clear_callback(int fd, HandleImpl* FdEntry::*slot, std::uint32_t event);

  std::unique_ptr<Selector> selector_;
  std::string_view name_;  // the selector's, kept after close
  LoopKind kind_;          // the kind that the selector's name names
  std::vector<FdEntry> fds_;  // indexed by descriptor
  std::vector<ReadyFd> ready_fds_;
  int wake_fd_ = -1;  // eventfd that call_soon_threadsafe and stop() write to
};

}  // namespace strata::detail
