// The proactor loop on Asio's io_context, for builds without liburing (or STRATA_IO_URING=OFF):
// Asio's epoll reactor carries it. With liburing, uring_event_loop.cpp is the proactor loop
// instead: Asio's own io_uring backend cost about 1,250 instructions per echoed request by
// itself (see there). See proactor_event_loop.hpp.
//
// How it waits: wait_for_events() runs the io_context for at most the timeout (one handler,
// waiting), then every handler already complete (poll()); each handler queues what it
// completes on the ready queue, so that user code runs in the loop's callback phase, under its
// exception handling and stall detector, exactly as on the selector loop. A work guard keeps
// the io_context waiting when nothing is in flight; call_soon_threadsafe() and stop() wake it
// by posting an empty handler.
//
// add_reader()/add_writer() work, as Asio's descriptor waits (on io_uring, a poll operation):
// level-triggered like the selector loop's, by arming the wait again after each report, once
// the callbacks of the iteration have run. They serve user code, the loop's signal pipe and
// child watchers; Strata's stream transports use completion I/O (an IoChannel) instead.
//
// The socket channel (ProactorChannel): a read is always in flight while the transport reads,
// into the channel's own buffer (4 KiB, doubled up to 64 KiB while reads fill it); a send is in
// flight while bytes wait, from a buffer that nothing moves meanwhile (writes made during a
// send go to a second buffer, swapped in when it completes). Completions are queued on the
// ready queue and reach the transport in the callback phase. The channel's memory, which the
// kernel writes into, lives until the last of its operations has completed, however early the
// transport lets go of it; so does Asio's object of the socket on io_uring (ops_outlive_cancel
// says why), while the descriptor closes at once. Pipes keep the readiness channel: a write to
// a pipe whose reader is gone raises SIGPIPE in the thread that submits it, and io_uring writes
// have no flag to prevent it (sockets have MSG_NOSIGNAL).

#include "proactor_event_loop.hpp"

#if STRATA_HAS_PROACTOR

#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <asio/bind_allocator.hpp>
#include <asio/executor_work_guard.hpp>
#include <asio/generic/stream_protocol.hpp>
#include <asio/io_context.hpp>
#include <asio/posix/stream_descriptor.hpp>

#include <algorithm>
#include <cerrno>
#include <cstddef>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <new>
#include <stdexcept>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include "channel_io.hpp"
#include "completion_channel.hpp"
#include "readiness_channel.hpp"

namespace strata::detail {

namespace {

/// @p ec in std::system_category() when Asio reports an errno value in its own category, so
/// that transports report the same error codes on both loops.
std::error_code native_error(std::error_code ec) noexcept {
  if (ec && ec.category() == asio::error::get_system_category()) {
    return {ec.value(), std::system_category()};
  }
  return ec;
}

/// Memory for one operation of a channel at a time: Asio allocates an operation's state through
/// its handler's allocator, and a channel has at most one receive and one send in flight, so one
/// slot for each replaces a malloc and a free per operation. Asio moves the handler (and the
/// channel reference it holds) out of the operation before it frees the operation's memory, so
/// the slot is still alive when it is given back.
struct OpSlot {
  alignas(std::max_align_t) unsigned char bytes[320];
  bool used = false;
};

/// The allocator that hands out an OpSlot (or the heap, for anything that does not fit).
template <class T>
struct SlotAllocator {
  using value_type = T;
  explicit SlotAllocator(OpSlot* s) noexcept : slot(s) {}
  template <class U>
  SlotAllocator(const SlotAllocator<U>& other) noexcept : slot(other.slot) {}  // NOLINT
  T* allocate(std::size_t n) {
    if (!slot->used && sizeof(T) * n <= sizeof slot->bytes) {
      slot->used = true;
      return reinterpret_cast<T*>(slot->bytes);
    }
    return static_cast<T*>(::operator new(sizeof(T) * n));
  }
  void deallocate(T* p, std::size_t) noexcept {
    if (reinterpret_cast<unsigned char*>(p) == slot->bytes) {
      slot->used = false;
    } else {
      ::operator delete(p);
    }
  }
  friend bool operator==(const SlotAllocator& a, const SlotAllocator& b) noexcept {
    return a.slot == b.slot;
  }
  OpSlot* slot;
};

/// Whether an operation of an Asio I/O object can still be in the kernel after cancel() has
/// returned. On io_uring it can: the cancellation is itself a request, answered later. Asio's
/// epoll reactor takes its operations back at once.
#if defined(ASIO_HAS_IO_URING_AS_DEFAULT)
constexpr bool ops_outlive_cancel = true;
#else
constexpr bool ops_outlive_cancel = false;
#endif

// Why that matters: Asio 1.22's io_uring backend must not close() or release() an I/O object
// while one of its operations is in the kernel. It returns the object's state to a pool with
// the operation still queued in it, and the next I/O object opened (any descriptor) gets that
// state: its own operations queue behind the stale one and are never submitted, the stale
// one's cancellation is ignored (reuse clears the "cancel requested" flag) and it is submitted
// again, on its old descriptor number, which by then may be a new socket whose bytes it eats.
// So on io_uring the loop cancels, and lets go of an Asio object only once the completions of
// its operations have come back: FdWatch and ProactorChannel below.

/// A descriptor watched for readiness: Asio's descriptor object of it, with the loop's reader
/// and writer handles. Each wait in flight holds a reference to it. Released (clear()), it
/// leaves its slot at once, so that a new registration of the same number gets a new one, and
/// it lets go of Asio's descriptor object when the last reference goes (see above).
struct FdWatch {
  explicit FdWatch(asio::io_context& io) : descriptor(io) {}
  ~FdWatch() {
    if (descriptor.is_open()) static_cast<void>(descriptor.release());  // never closes: not ours
  }
  FdWatch(const FdWatch&) = delete;
  FdWatch& operator=(const FdWatch&) = delete;
  asio::posix::stream_descriptor descriptor;
  HandleImpl* reader = nullptr;
  HandleImpl* writer = nullptr;
  bool released = false;     // its waits still in flight report nothing
  bool read_armed = false;   // a read wait is in flight
  bool write_armed = false;
  bool queued = false;       // on the loop's list of watches to arm
};


class ProactorEventLoop;

/// IoChannel of a connected stream socket on the proactor loop: CompletionChannel's receive and
/// send buffers, with Asio's socket operations. See the top of this file.
class ProactorChannel final : public CompletionChannel<ProactorChannel> {
  friend class CompletionChannel<ProactorChannel>;

 public:
  ProactorChannel(ProactorEventLoop& loop, asio::io_context& io, int family, int fd,
                  IoClient& client);

  void close() noexcept override {
    end();
    std::error_code ec;
    if (ops_outlive_cancel && refs_ > 1) {
      // An operation is in the kernel: Asio's object of the socket must outlive it (see
      // ops_outlive_cancel), the descriptor need not. ~ProactorChannel lets go of the object.
      socket_.cancel(ec);  // what is in flight comes back aborted
      ::close(fd_);
    } else {
      socket_.close(ec);  // cancels what is in flight; its completions come back aborted
    }
    unref();
  }
  int release() noexcept override {
    end();
    std::error_code ec;
    socket_.cancel(ec);
    // With an operation in the kernel, ~ProactorChannel lets go of Asio's object (as close()).
    if (!ops_outlive_cancel || refs_ == 1) static_cast<void>(socket_.release(ec));
    const int fd = fd_;
    unref();  // with nothing in flight, the channel goes here
    return fd;
  }

 private:
  /// Keeps the channel alive while an operation is in flight: its handler holds one.
  class Ref {
   public:
    explicit Ref(ProactorChannel* c) noexcept : c_(c) { c_->ref(); }
    Ref(Ref&& other) noexcept : c_(std::exchange(other.c_, nullptr)) {}
    Ref(const Ref&) = delete;
    Ref& operator=(const Ref&) = delete;
    Ref& operator=(Ref&&) = delete;
    [[gnu::always_inline]] ~Ref() {  // mostly moved-from: Asio moves a handler several times
      if (c_) c_->unref();
    }
    ProactorChannel* operator->() const noexcept { return c_; }
    ProactorChannel& operator*() const noexcept { return *c_; }

   private:
    ProactorChannel* c_;
  };

  ~ProactorChannel() override {
    // Still open after close() or release() with an operation in the kernel: that operation
    // has completed now; the descriptor is closed already, or handed back.
    std::error_code ec;
    if (socket_.is_open()) static_cast<void>(socket_.release(ec));
  }
  [[gnu::noinline]] void destroy() noexcept { delete this; }

  /// An operation's result in CompletionChannel's terms: bytes, 0 at the end of the stream,
  /// or -errno (-ECANCELED for an aborted one).
  static int result(std::error_code ec, std::size_t n) noexcept {
    if (!ec) return static_cast<int>(n);
    if (ec == asio::error::eof) return 0;
    if (ec == asio::error::operation_aborted) return -ECANCELED;
    const std::error_code native = native_error(ec);
    return native.category() == std::system_category() ? -native.value() : -EIO;
  }

  // CompletionChannel's operations. Asio has no provided buffers: every receive goes to the
  // channel's own buffer.
  static constexpr std::size_t pool_buffer_size = 0;
  static PoolRecv submit_recv_pooled() noexcept { return PoolRecv::none; }
  static std::byte* pool_buffer(int /*id*/) noexcept { return nullptr; }
  static void give_back(int /*id*/) noexcept {}
  static bool grow_pool() noexcept { return false; }
  static bool pool_roomy() noexcept { return false; }
  void submit_recv(std::byte* buf, std::size_t len);
  int submit_send(const std::byte* data, std::size_t len) noexcept;
  /// Asio's sends always go through submit_send(), which may allocate and catch.
  static bool try_submit_send(const std::byte* /*data*/, std::size_t /*len*/) noexcept {
    return false;
  }
  void submit_wait(bool read);
  void queue(HandleImpl* h);

  ProactorEventLoop& proactor() const noexcept;

  asio::generic::stream_protocol::socket socket_;
  OpSlot recv_slot_;      // the receive in flight's memory
  OpSlot send_slot_;      // the send in flight's memory
};

class ProactorEventLoop final : public BaseEventLoop {
 public:
  // No locking inside Asio: only this thread touches the io_context. Other threads wake it
  // through an eventfd that a wait on the ring watches (wake_up()), as on the selector loop.
  ProactorEventLoop()
      : io_(ASIO_CONCURRENCY_HINT_UNSAFE), work_(asio::make_work_guard(io_)), wake_(io_) {
    const int fd = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (fd < 0) throw std::system_error(errno, std::generic_category(), "eventfd");
    wake_fd_ = fd;  // set once, before any other thread can see the loop
    try {
      wake_.assign(fd);  // starts the backend (the ring, or epoll) too
      arm_wake();
    } catch (...) {
      ::close(fd);
      throw;
    }
  }
  ~ProactorEventLoop() override {
    close_in_destructor();
    std::error_code ec;
    wake_.close(ec);
  }

  std::string_view backend_name() const noexcept override { return proactor_backend(); }
  LoopKind kind() const noexcept override { return LoopKind::proactor; }

  IoChannelPtr open_channel(int fd, ChannelKind kind, IoClient& client) override {
    check_open();
    sockaddr_storage name{};
    socklen_t len = sizeof name;
    if (kind != ChannelKind::socket || ::getsockname(fd, reinterpret_cast<sockaddr*>(&name), &len) != 0) {
      return make_readiness_channel(*this, fd, kind, client);
    }
    return IoChannelPtr(new ProactorChannel(*this, io_, name.ss_family, fd, client));
  }

  /// For the channels: queues @p h on the ready queue.
  void queue_ready(HandleImpl* h) { push_ready(h); }
  /// For the channels: the blocks their write buffers share.
  BlockCache& write_blocks() noexcept { return write_blocks_; }

  bool remove_reader(int fd) override { return clear(fd, &FdWatch::reader, "remove_reader"); }
  bool remove_writer(int fd) override { return clear(fd, &FdWatch::writer, "remove_writer"); }

 protected:
  void do_add_reader(int fd, Callback&& callback) override {
    set(fd, &FdWatch::reader, std::move(callback), "add_reader");
  }
  void do_add_writer(int fd, Callback&& callback) override {
    set(fd, &FdWatch::writer, std::move(callback), "add_writer");
  }

  void wait_for_events(std::optional<Duration> timeout) override {
    arm_watches();
    if (!timeout) {
      io_.run_one();
    } else if (*timeout > Duration::zero()) {
      io_.run_one_for(*timeout);
    }
    io_.poll();
  }

  void wake_up() noexcept override {
    std::uint64_t one = 1;
    // EAGAIN means the counter is saturated: the loop is woken already.
    [[maybe_unused]] auto n = ::write(wake_fd_, &one, sizeof one);
  }

  void close_backend() noexcept override {
    for (auto& w : watches_) {
      if (!w) continue;
      for (HandleImpl* h : {w->reader, w->writer}) {
        if (h) {
          h->cancel();
          h->release();
        }
      }
      w->reader = w->writer = nullptr;
      release(w);
    }
    to_arm_.clear();
    // The io_context and the eventfd live until the destructor: another thread may still call
    // stop().
  }

 private:
  FdWatch& watch(int fd) {
    if (fd < 0) {
      throw std::invalid_argument("file descriptor must be >= 0, got " + std::to_string(fd));
    }
    const auto i = static_cast<std::size_t>(fd);
    if (i >= watches_.size()) watches_.resize(i + 1);
    if (!watches_[i]) watches_[i] = std::make_shared<FdWatch>(io_);
    return *watches_[i];
  }

  void set(int fd, HandleImpl* FdWatch::*slot, Callback&& callback, const char* method) {
    check_open();
    if (debug_) check_thread(method);
    FdWatch& w = watch(fd);
    if (!w.descriptor.is_open()) {
      std::error_code ec;
      w.descriptor.assign(fd, ec);  // the epoll reactor registers it here; may refuse
      if (ec) throw std::system_error(ec, method);
    }
    auto* h = HandleImpl::create(std::move(callback));
    if (HandleImpl* old = std::exchange(w.*slot, h)) {
      old->cancel();
      old->release();
    }
    queue_arm(fd, w);
  }

  bool clear(int fd, HandleImpl* FdWatch::*slot, const char* method) {
    if (is_closed()) return false;
    if (debug_) check_thread(method);
    if (fd < 0 || static_cast<std::size_t>(fd) >= watches_.size() || !watches_[fd]) return false;
    FdWatch& w = *watches_[fd];
    HandleImpl* h = std::exchange(w.*slot, nullptr);
    if (!h) return false;
    h->cancel();  // a report already queued this iteration must not run
    h->release();
    if (!w.reader && !w.writer) release(watches_[fd]);
    // With one direction left, the other's wait in flight stays: its report finds no handle.
    return true;
  }

  /// Lets go of the descriptor (the loop does not own it) and empties its slot: cancels its
  /// waits, whose handlers then find it released and do nothing. Asio's descriptor object goes
  /// now, or on io_uring with the last wait in flight (~FdWatch; see ops_outlive_cancel).
  void release(std::shared_ptr<FdWatch>& slot) noexcept {
    FdWatch& w = *slot;
    w.released = true;
    if (w.descriptor.is_open()) {
      std::error_code ec;
      w.descriptor.cancel(ec);
      if (!ops_outlive_cancel) static_cast<void>(w.descriptor.release());
    }
    slot.reset();
  }

  void queue_arm(int fd, FdWatch& w) {
    if (w.queued) return;
    to_arm_.push_back(fd);
    w.queued = true;
  }

  /// Starts the waits that registrations and reports since the last wait asked for.
  void arm_wake() {
    wake_.async_wait(asio::posix::descriptor_base::wait_read, [this](std::error_code ec) {
      if (ec) return;  // closing
      std::uint64_t n;
      while (::read(wake_fd_, &n, sizeof n) > 0) {
      }
      arm_wake();
    });
  }

  void arm_watches() {
    for (int fd : to_arm_) {
      FdWatch* found = watches_[static_cast<std::size_t>(fd)].get();
      if (found == nullptr) continue;  // released since it was queued
      FdWatch& w = *found;
      w.queued = false;
      if (w.reader && !w.read_armed) arm(fd, w, asio::posix::descriptor_base::wait_read);
      if (w.writer && !w.write_armed) arm(fd, w, asio::posix::descriptor_base::wait_write);
    }
    to_arm_.clear();
  }

  void arm(int fd, FdWatch& w, asio::posix::descriptor_base::wait_type type) {
    const bool read = type == asio::posix::descriptor_base::wait_read;
    (read ? w.read_armed : w.write_armed) = true;
    w.descriptor.async_wait(type, [this, fd, read, watch = watches_[static_cast<std::size_t>(fd)]](
                                      std::error_code ec) {
      FdWatch& w = *watch;
      if (w.released) return;  // the number may be another descriptor's by now: not ours
      (read ? w.read_armed : w.write_armed) = false;
      HandleImpl* h = read ? w.reader : w.writer;
      if (!h) return;
      if (ec != asio::error::operation_aborted) push_ready(h);
      queue_arm(fd, w);  // level-triggered: look again once this iteration's callbacks ran
    });
  }

  BlockCache write_blocks_;  // (before io_: it outlives the channels that io_ may hold)
  asio::io_context io_;
  asio::executor_work_guard<asio::io_context::executor_type> work_;
  std::vector<std::shared_ptr<FdWatch>> watches_;  // by descriptor
  std::vector<int> to_arm_;
  asio::posix::stream_descriptor wake_;  // the eventfd that wake_up() writes to
  int wake_fd_ = -1;  // its number, for other threads: the descriptor object is this thread's
};


ProactorChannel::ProactorChannel(ProactorEventLoop& loop, asio::io_context& io, int family, int fd,
                                 IoClient& client)
    : CompletionChannel(loop, loop.write_blocks(), fd, client),
      socket_(io, asio::generic::stream_protocol(family, SOCK_STREAM), fd) {}

ProactorEventLoop& ProactorChannel::proactor() const noexcept {
  return static_cast<ProactorEventLoop&>(*loop_);
}

void ProactorChannel::queue(HandleImpl* h) {
  // A handle runs once per push; the channel's flags keep a second push from doing anything.
  proactor().queue_ready(h);
}

void ProactorChannel::submit_recv(std::byte* buf, std::size_t len) {
  socket_.async_receive(asio::buffer(buf, len), 0,
                        asio::bind_allocator(SlotAllocator<void>(&recv_slot_),
                                             [self = Ref(this)](std::error_code ec, std::size_t n) {
                                               self->received(result(ec, n));
                                             }));
}

int ProactorChannel::submit_send(const std::byte* data, std::size_t len) noexcept {
  try {
    socket_.async_send(asio::buffer(data, len), MSG_NOSIGNAL,
                       asio::bind_allocator(SlotAllocator<void>(&send_slot_),
                                            [self = Ref(this)](std::error_code ec, std::size_t n) {
                                              self->sent(result(ec, n));
                                            }));
    return 0;
  } catch (const std::system_error& e) {
    return e.code().value();
  } catch (const std::bad_alloc&) {
    return ENOMEM;
  }
}

void ProactorChannel::submit_wait(bool read) {
  socket_.async_wait(read ? asio::socket_base::wait_read : asio::socket_base::wait_write,
                     [self = Ref(this), read](std::error_code ec) {
                       self->waited(read, result(ec, 0));
                     });
}

}  // namespace

std::string_view proactor_backend() noexcept {
#if defined(ASIO_HAS_IO_URING_AS_DEFAULT)
  return "proactor/io_uring";
#else
  return "proactor/epoll";
#endif
}

std::unique_ptr<EventLoop> make_proactor_event_loop() {
  return std::make_unique<ProactorEventLoop>();
}

}  // namespace strata::detail

#else  // !STRATA_HAS_PROACTOR

namespace strata::detail {

std::string_view proactor_backend() noexcept { return {}; }  // NOLINT

std::unique_ptr<EventLoop> make_proactor_event_loop() {
  throw std::invalid_argument(
      "the proactor loop is not in this build: Asio (libasio-dev) was not found at configure "
      "time");
}

}  // namespace strata::detail

#endif
