// The proactor loop on io_uring, driven through liburing. See proactor_event_loop.hpp.
//
// Why not Asio's io_uring service: it was the first implementation, and it cost about 1,250
// user-space instructions per echoed request in Asio alone (operation objects, its scheduler,
// its completion queue), where the whole hand-written C io_uring echo costs 174. Here each
// operation is a small record inside the object it serves (UringOp); its completion's
// user_data points at it, and reap() hands it straight to its owner. Without liburing the
// proactor loop stays on Asio's io_context (proactor_event_loop.cpp).
//
// How it waits: wait_for_events() submits every operation prepared since the last wait and
// waits for at least one completion in the same io_uring_enter(2); completions queue their
// handles on the ready queue, so that user code runs in the loop's callback phase, under its
// exception handling and stall detector, exactly as on the selector loop. Other threads wake
// it through an eventfd that a read on the ring always waits on.
//
// add_reader()/add_writer(): one-shot poll operations, armed again after each report once the
// callbacks of the iteration have run: level-triggered, like the selector loop's. They serve
// user code only. The transports use the loop's I/O interface: a multishot accept per
// listening socket (UringAcceptor), a connect operation (UringConnect), the socket channel
// below, and for what has no completion operation of its own (datagram sockets, pipes, child
// pidfds, the signal pipe) an IoWatch (UringWatch): the same poll operations on a FdWatch that
// the watch owns, outside add_reader()'s table.
//
// The socket channel (UringChannel): a receive is always in flight while the transport reads,
// into a buffer that the kernel picks from the loop's pool (RecvPool, io_uring's provided
// buffers) when the bytes arrive, so that an idle connection holds no receive memory; a
// connection whose receives fill those buffers gets its own (CompletionChannel). Receives into
// the pool are multishot (Linux 6.0; on a kernel that refuses them, single ones): one
// submission serves every arrival until the connection pauses, so that an echo costs the ring
// a send per request, not a send and a receive. A send is
// in flight while bytes wait, from a buffer that nothing moves meanwhile (writes made during a
// send go to a second buffer, swapped in when it completes). The channel lives until the last
// of its operations has completed, however early the transport lets go of it: the kernel
// writes into its memory. Closing it with operations in flight cancels them and closes the
// descriptor with an operation queued behind the cancellations, so that an operation prepared
// and not yet submitted can never reach another descriptor that takes the same number.
// Pipes keep the readiness channel, on an IoWatch: a write to a pipe whose reader is gone
// raises SIGPIPE in the thread that submits it, and io_uring writes have no flag to prevent it
// (sockets have MSG_NOSIGNAL).

#include "proactor_event_loop.hpp"

#if STRATA_HAS_PROACTOR && STRATA_PROACTOR_URING

#include <fcntl.h>
#include <liburing.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <new>
#include <stdexcept>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include "channel_io.hpp"
#include "strata/core/socket_address.hpp"
#include "completion_channel.hpp"
#include "readiness_channel.hpp"

namespace strata::detail {

namespace {

/// What an operation in the ring is for; its owner is one of the objects below.
enum class OpKind : std::uint8_t {
  recv,
  send,
  wait_read,
  wait_write,
  watch_read,
  watch_write,
  wake,
  accept,
  connect
};

/// One operation in the ring. The completion's user_data is its address; 0 marks operations
/// whose completion nobody needs (cancellations, closes). @c done takes the completion's
/// result and flags: one indirect call per completion, straight to the owner's handling of its
/// kind. A multishot operation (accept) completes many times, with IORING_CQE_F_MORE set on
/// every completion but its last.
struct UringOp {
  OpKind kind;
  void* owner;
  void (*done)(UringOp& op, int res, std::uint32_t flags) noexcept;
};

class UringEventLoop;

/// The loop's receive buffers, registered with the ring as a provided-buffer ring (group 0): a
/// receive started with IOSQE_BUFFER_SELECT takes one only when its bytes arrive, and its
/// channel gives it back once they are delivered. count × size bytes of address space, set up
/// at the first receive, with step buffers in the ring at first and step more whenever a
/// receive finds none free (grow()), up to count: the ring hands buffers out in turn, so every
/// buffer in it is soon written to, and a loop with a few connections should not keep the
/// pages of 256. Only pages that bytes were written to cost memory.
class RecvPool {
 public:
  static constexpr unsigned count = 256;
  static constexpr unsigned step = 32;
  static constexpr std::size_t size = 16 * 1024;
  static constexpr unsigned short group = 0;

  RecvPool() = default;
  RecvPool(const RecvPool&) = delete;
  RecvPool& operator=(const RecvPool&) = delete;
  ~RecvPool() {
    if (map_ != nullptr && !keep_mapped_) ::munmap(map_, map_size);
  }

  /// Whether the pool is registered with @p ring: tried once (kernels before 5.19 refuse).
  bool ready(io_uring& ring) noexcept {
    if (state_ == State::untried) [[unlikely]] open(ring);
    return state_ == State::open;
  }
  std::byte* buffer(int id) const noexcept {
    return buffers_ + static_cast<std::size_t>(id) * size;
  }
  /// Where the held buffer @p id stands in its channel's backlog (CompletionChannel).
  PoolLink& link(int id) noexcept { return links_[static_cast<std::size_t>(id)]; }
  void give_back(int id) noexcept {
    io_uring_buf_ring_add(ring_, buffer(id), size, static_cast<unsigned short>(id),
                          io_uring_buf_ring_mask(count), 0);
    io_uring_buf_ring_advance(ring_, 1);
  }
  /// After a receive found no buffer free: step more buffers into the ring, unless some came
  /// back (or were added) since, as when many receives find the ring empty at once: one
  /// growth for a burst, not one per receive.
  /// @p held: how many are out (LoopMetrics::receive_buffers_held).
  /// @return false: all count are in the ring and out, the receive must do without
  bool grow(std::size_t held) noexcept {
    if (held < added_) return true;  // worth another try as it is
    if (added_ == count) return false;
    add(step);
    return true;
  }
  /// Whether fewer than half of the buffers in the ring are out (@p held of them).
  bool roomy(std::size_t held) const noexcept { return held < added_ / 2; }
  /// Leaves the memory mapped at destruction: operations that may still write to it outlive
  /// the loop (its close gave up waiting for them).
  void keep_mapped() noexcept { keep_mapped_ = true; }

 private:
  enum class State : std::uint8_t { untried, open, unavailable };
  // One mapping: the ring's entries (a page, as the kernel wants them page-aligned), then the
  // buffers.
  static constexpr std::size_t ring_bytes = 4096;
  static constexpr std::size_t map_size = ring_bytes + count * size;
  static_assert(count * sizeof(io_uring_buf) <= ring_bytes);
  static_assert(count % step == 0);

  void open(io_uring& ring) noexcept {
    state_ = State::unavailable;
    void* map = ::mmap(nullptr, map_size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                       -1, 0);
    if (map == MAP_FAILED) return;
    ring_ = static_cast<io_uring_buf_ring*>(map);
    buffers_ = static_cast<std::byte*>(map) + ring_bytes;
    io_uring_buf_ring_init(ring_);
    io_uring_buf_reg reg{};
    reg.ring_addr = reinterpret_cast<std::uintptr_t>(ring_);
    reg.ring_entries = count;
    reg.bgid = group;
    if (io_uring_register_buf_ring(&ring, &reg, 0) != 0) {  // receives use their own buffers
      ::munmap(map, map_size);
      return;
    }
    map_ = map;
    add(step);
    state_ = State::open;
  }
  void add(unsigned n) noexcept {
    for (unsigned i = 0; i != n; ++i) {
      const auto id = static_cast<unsigned short>(added_ + i);
      io_uring_buf_ring_add(ring_, buffer(id), size, id, io_uring_buf_ring_mask(count),
                            static_cast<int>(i));
    }
    io_uring_buf_ring_advance(ring_, static_cast<int>(n));
    added_ += n;
  }

  void* map_ = nullptr;
  PoolLink links_[count]{};
  io_uring_buf_ring* ring_ = nullptr;
  std::byte* buffers_ = nullptr;
  unsigned added_ = 0;  // buffers put into the ring so far: ids [0, added_)
  State state_ = State::untried;
  bool keep_mapped_ = false;
};

/// A descriptor watched with add_reader()/add_writer(). Held by the loop's slot for its number
/// and by each poll in flight; released (remove_*), it leaves the slot at once, so that a new
/// registration of the same number gets a new one, and it goes when its last poll completes.
struct FdWatch {
  FdWatch(UringEventLoop& l, int f) noexcept;
  UringEventLoop* loop;
  int fd;
  HandleImpl* reader = nullptr;
  HandleImpl* writer = nullptr;
  UringOp read_op;
  UringOp write_op;
  unsigned refs = 1;         // the slot's, and one per poll in flight
  bool released = false;     // its polls still in flight report nothing
  bool read_armed = false;   // a read poll is in flight
  bool write_armed = false;
  bool queued = false;       // on the loop's list of watches to arm
};

/// IoChannel of a connected stream socket on the io_uring loop: CompletionChannel's receive
/// and send buffers, with its operations as UringOp records in the ring. See the top of this
/// file.
class UringChannel final : public CompletionChannel<UringChannel> {
  friend class CompletionChannel<UringChannel>;

 public:
  UringChannel(UringEventLoop& loop, int fd, IoClient& client);

  void close() noexcept override;
  int release() noexcept override;

 private:
  ~UringChannel() override {
    return_lent();  // a send that ended with the channel closed
    if (close_at_end_) ::close(fd_);
  }
  [[gnu::noinline]] void destroy() noexcept { delete this; }

  // CompletionChannel's operations.
  static constexpr std::size_t pool_buffer_size = RecvPool::size;
  PoolRecv submit_recv_pooled();
  bool grow_pool() noexcept;
  bool pool_roomy() const noexcept;
  std::byte* pool_buffer(int id) const noexcept;
  PoolLink& pool_link(int id) noexcept;
  void give_back(int id) noexcept;
  bool cancel_recv() noexcept;
  void multishot_refused() noexcept;
  void submit_recv(std::byte* buf, std::size_t len);
  int submit_send(const std::byte* data, std::size_t len) noexcept;
  bool try_submit_send(const std::byte* data, std::size_t len) noexcept;
  void prep_send(io_uring_sqe* s, const std::byte* data, std::size_t len) noexcept;
  void submit_wait(bool read);
  void queue(HandleImpl* h);

  /// The completions of this channel's operations (UringOp::done).
  static void on_recv(UringOp& op, int res, std::uint32_t flags) noexcept;
  static void on_send(UringOp& op, int res, std::uint32_t flags) noexcept;
  static void on_wait(UringOp& op, int res, std::uint32_t flags) noexcept;
  /// on_recv() of anything but a multishot receive's arrival on an open loop.
  [[gnu::noinline]] void recv_completed(int res, int id, bool more) noexcept;
  /// on_send() of anything but sent_quietly()'s case.
  [[gnu::noinline]] void send_completed(int res) noexcept;

  /// Prepares the cancellation of every operation in flight (close() and release()).
  /// @return whether the ring took them
  bool cancel_all() noexcept;

  UringEventLoop& uring() const noexcept;

  UringOp recv_op_{OpKind::recv, this, &on_recv};
  UringOp send_op_{OpKind::send, this, &on_send};
  UringOp wait_read_op_{OpKind::wait_read, this, &on_wait};
  UringOp wait_write_op_{OpKind::wait_write, this, &on_wait};
  bool close_at_end_ = false;  // close() left the descriptor to the destructor
};

/// IoAcceptor on io_uring: one multishot accept in flight while started. Its completions
/// queue the descriptors, and a handle reports them in the loop's callback phase. A completion
/// without IORING_CQE_F_MORE ends the operation (a failure, or a cancellation); the report
/// starts a new one if the acceptor is still started. stop() cancels it: connections that the
/// kernel accepted before the cancellation took effect wait for the next start(). A report
/// hands over a batch at most (the selector loop's accepts per wake), and with a batch waiting
/// the operation is cancelled too, so that a flood waits in the kernel's queue, not here.
class UringAcceptor final : public IoAcceptor {
 public:
  UringAcceptor(UringEventLoop& loop, int fd, int batch, AcceptClient& client);

  void start() override;
  void stop() noexcept override;
  void close() noexcept override;

 private:
  ~UringAcceptor() override;
  static void on_accept(UringOp& op, int res, std::uint32_t flags) noexcept;
  void arm();
  void report() noexcept;
  void queue_report() noexcept;
  void cancel_op() noexcept;
  void unref() noexcept {
    if (--refs_ == 0) delete this;
  }

  UringEventLoop& loop_;
  AcceptClient* client_;
  int fd_;
  std::size_t batch_;  // reports per callback at most, as the selector loop's accepts per wake
  UringOp op_{OpKind::accept, this, &on_accept};
  HandleImpl* report_handle_;
  std::vector<int> results_;  // accepted descriptors, or -errno of failures, in order
  unsigned refs_ = 1;         // the owner's, and the operation's while in flight
  bool started_ = false;
  bool armed_ = false;        // the operation is in flight
  bool cancelling_ = false;   // its cancellation is submitted
  bool queued_ = false;       // report_handle_ is on the ready queue
  bool closed_ = false;
};

/// IoConnect on io_uring: one connect operation; its completion reports in the loop's callback
/// phase. The address is kept here until the operation completes.
class UringConnect final : public IoConnect {
 public:
  UringConnect(UringEventLoop& loop, int fd, const SocketAddress& address, ConnectClient& client);

  /// Prepares the operation. @throws std::system_error  the ring takes no more.
  void submit();
  void cancel() noexcept override;

 private:
  ~UringConnect() override { report_handle_->release(); }
  static void on_connect(UringOp& op, int res, std::uint32_t flags) noexcept;
  void unref() noexcept {
    if (--refs_ == 0) delete this;
  }

  UringEventLoop& loop_;
  ConnectClient* client_;
  int fd_;
  SocketAddress address_;
  UringOp op_{OpKind::connect, this, &on_connect};
  HandleImpl* report_handle_;
  int result_ = 0;
  unsigned refs_ = 1;  // the owner's, and the operation's while in flight
  bool in_flight_ = false;
  bool cancelled_ = false;
};

/// IoWatch on io_uring: a FdWatch of its own, with the same poll operations as add_reader()'s.
class UringWatch final : public IoWatch {
 public:
  UringWatch(UringEventLoop& loop, int fd);

  void set_reader(Callback callback) override;
  void clear_reader() noexcept override;
  void set_writer(Callback callback) override;
  void clear_writer() noexcept override;
  void close() noexcept override;

 private:
  ~UringWatch() override = default;

  UringEventLoop& loop_;
  FdWatch* watch_;  // released by close(); freed with its last poll
};

class UringEventLoop final : public BaseEventLoop {
  friend struct FdWatch;  // its operations complete through on_watch()

 public:
  UringEventLoop() {
    // Completions are reported when the loop next enters the kernel rather than by
    // interrupting it (COOP_TASKRUN); TASKRUN_FLAG tells when such work waits, so that a look
    // without waiting still sees it. Older kernels refuse both: then plain.
    io_uring_params params{};
    params.flags = IORING_SETUP_CQSIZE | IORING_SETUP_COOP_TASKRUN | IORING_SETUP_TASKRUN_FLAG;
    params.cq_entries = cq_entries;
    int err = io_uring_queue_init_params(sq_entries, &ring_, &params);
    if (err == -EINVAL) {
      params = {};
      params.flags = IORING_SETUP_CQSIZE;
      params.cq_entries = cq_entries;
      err = io_uring_queue_init_params(sq_entries, &ring_, &params);
    }
    if (err < 0) throw std::system_error(-err, std::generic_category(), "io_uring_queue_init");
    taskrun_flag_ = (params.flags & IORING_SETUP_TASKRUN_FLAG) != 0;
    check_kernel();
    const int fd = ::eventfd(0, EFD_CLOEXEC);  // blocking: the ring waits on it, not a read(2)
    if (fd < 0) {
      const int e = errno;
      io_uring_queue_exit(&ring_);
      throw std::system_error(e, std::generic_category(), "eventfd");
    }
    wake_fd_ = fd;  // set once, before any other thread can see the loop
    arm_wake();
  }
  ~UringEventLoop() override {
    close_in_destructor();
    drain();  // what a transport outliving close() started since
    if (in_flight_ != 0) recv_pool_.keep_mapped();  // (drain() gave up on them)
    io_uring_queue_exit(&ring_);
    ::close(wake_fd_);
  }
  UringEventLoop(const UringEventLoop&) = delete;
  UringEventLoop& operator=(const UringEventLoop&) = delete;

  std::string_view backend_name() const noexcept override { return proactor_backend(); }
  LoopKind kind() const noexcept override { return LoopKind::proactor; }

  IoChannelPtr open_channel(int fd, ChannelKind kind, IoClient& client) override {
    check_open();
    if (kind != ChannelKind::socket) {
      return make_readiness_channel(*this, fd, kind, client, open_watch(fd));
    }
    return IoChannelPtr(new UringChannel(*this, fd, client));
  }

  IoAcceptorPtr open_acceptor(int fd, int batch, AcceptClient& client) override {
    check_open();
    return IoAcceptorPtr(new UringAcceptor(*this, fd, batch, client));
  }

  ConnectStart start_connect(int fd, const SocketAddress& address,
                             ConnectClient& client) override {
    check_open();
    auto* op = new UringConnect(*this, fd, address, client);
    IoConnectPtr owned(op);
    op->submit();
    return {EINPROGRESS, std::move(owned)};
  }

  IoWatchPtr open_watch(int fd) override {
    check_open();
    return IoWatchPtr(new UringWatch(*this, fd));
  }

  // For UringWatch: its FdWatch, outside the table of add_reader()'s.
  void watch_set(FdWatch& w, HandleImpl* FdWatch::*slot, Callback&& callback,
                 const char* method) {
    check_open();
    if (debug_) check_thread(method);
    check_descriptor(w.fd, method);
    set_on(w, slot, std::move(callback));
  }
  static void watch_clear(FdWatch& w, HandleImpl* FdWatch::*slot) noexcept { clear_on(w, slot); }
  void watch_close(FdWatch* w) noexcept {
    clear_on(*w, &FdWatch::reader);
    clear_on(*w, &FdWatch::writer);
    release(w);
  }

  /// For the channels: queues @p h on the ready queue.
  void queue_ready(HandleImpl* h) { push_ready(h); }
  /// For the channels: the blocks their write buffers share.
  BlockCache& write_blocks() noexcept { return write_blocks_; }
  /// For the channels: the receive buffers, or nullptr when the kernel has none to offer.
  RecvPool* recv_pool() noexcept { return recv_pool_.ready(ring_) ? &recv_pool_ : nullptr; }
  /// For the channels: the receive buffers, once recv_pool() has said that they are there.
  RecvPool& open_recv_pool() noexcept { return recv_pool_; }

  /// A free submission entry for an operation of @p op (nullptr: one whose completion is
  /// ignored), counted in flight. Submits what is queued when the queue is full.
  /// @throws std::system_error  the kernel takes no more (the queue stays full).
  io_uring_sqe* sqe(UringOp* op) {
    io_uring_sqe* s = sqe_or_null(op);
    if (s == nullptr) [[unlikely]] {
      throw std::system_error(refusal_, std::generic_category(), "io_uring_submit");
    }
    return s;
  }
  /// sqe() without the exception: nullptr when the kernel takes no more, refusal() says why.
  io_uring_sqe* sqe_or_null(UringOp* op) noexcept {
    io_uring_sqe* s = sqe_if_room(op);
    return s != nullptr ? s : sqe_after_submit(op);
  }
  /// sqe_or_null() without submitting: nullptr when the queue is full. (Inline and without a
  /// call, for the hot paths that leave the rest to an out-of-line one.)
  io_uring_sqe* sqe_if_room(UringOp* op) noexcept {
    // io_uring_get_sqe() without its tests of SQE128 and SQPOLL, which this ring never has:
    // the kernel moves the head only inside io_uring_enter(2), on this thread.
    io_uring_sq& sq = ring_.sq;
    const unsigned tail = sq.sqe_tail;
    if (tail - IO_URING_READ_ONCE(*sq.khead) >= sq.ring_entries) [[unlikely]] return nullptr;
    io_uring_sqe* s = &sq.sqes[tail & sq.ring_mask];
    sq.sqe_tail = tail + 1;
    taken(s, op);
    return s;
  }
  /// Why the last sqe_or_null() found no entry (errno).
  int refusal() const noexcept { return refusal_; }
  /// Submits what is prepared (@p prepared: cancellations were) without waiting: for a close.
  /// @return whether the cancellations reached the kernel
  bool submit_cancels(bool prepared) noexcept {
    return prepared && io_uring_submit(&ring_) >= 0;
  }
  /// Cancels the operation @p op (its completion reports -ECANCELED, or what it got first).
  void cancel(UringOp* op) {
    io_uring_prep_cancel64(sqe(nullptr), reinterpret_cast<std::uintptr_t>(op), 0);
  }
  /// Cancels @p op and submits the cancellation now, before the caller closes the descriptor:
  /// an operation in flight holds the descriptor's file open.
  /// @return whether the ring took the cancellation
  bool cancel_now(UringOp* op) noexcept {
    try {
      cancel(op);
    } catch (const std::system_error&) {
      return false;  // it completes when its descriptor is ready, or at the loop's close
    }
    return io_uring_submit(&ring_) >= 0;
  }
  /// For the channels: whether receives into the pool are multishot (Linux 6.0).
  bool multishot_recv() const noexcept { return multishot_recv_; }
  /// For the channels: the kernel refused a multishot receive; single ones from now on.
  void refuse_multishot_recv() noexcept { multishot_recv_ = false; }
  /// Whether completions are only counted off now: the loop is closing.
  bool draining() const noexcept { return draining_; }

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
    int r = 0;
    if (io_uring_cq_ready(&ring_) != 0 || (timeout && *timeout <= Duration::zero())) {
      // A look without waiting: a system call only with something to submit or, on a ring
      // that reports completions cooperatively, when some wait to be reported.
      if (taskrun_flag_ && (IO_URING_READ_ONCE(*ring_.sq.kflags) & IORING_SQ_TASKRUN) != 0) {
        r = io_uring_submit_and_get_events(&ring_);
      } else {
        r = io_uring_submit(&ring_);
      }
    } else if (!timeout) {
      r = io_uring_submit_and_wait(&ring_, 1);
    } else {
      const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(*timeout).count();
      __kernel_timespec ts{};
      ts.tv_sec = ns / 1'000'000'000;
      ts.tv_nsec = ns % 1'000'000'000;
      io_uring_cqe* cqe = nullptr;
      r = io_uring_submit_and_wait_timeout(&ring_, &cqe, 1, &ts, nullptr);
    }
    // -ETIME: the timeout passed; -EINTR: a signal (its handler's pipe is watched); -EBUSY:
    // completions overflowed, reaping them makes room. Anything else is the kernel refusing.
    if (r < 0 && r != -ETIME && r != -EINTR && r != -EBUSY && r != -EAGAIN) {
      throw std::system_error(-r, std::generic_category(), "io_uring_enter");
    }
    reap();
  }

  void wake_up() noexcept override {
    std::uint64_t one = 1;
    // Fails only with the counter at its maximum: the loop is woken already.
    [[maybe_unused]] auto n = ::write(wake_fd_, &one, sizeof one);
  }

  void close_backend() noexcept override {
    for (FdWatch*& w : watches_) {
      if (w == nullptr) continue;
      for (HandleImpl* h : {w->reader, w->writer}) {
        if (h != nullptr) {
          h->cancel();
          h->release();
        }
      }
      w->reader = w->writer = nullptr;
      release(std::exchange(w, nullptr));
    }
    for (FdWatch* w : to_arm_) unref(w);
    to_arm_.clear();
    drain();
    // The ring and the eventfd live until the destructor: another thread may still call stop().
  }

 private:
  static constexpr unsigned sq_entries = 256;
  static constexpr unsigned cq_entries = 4096;

  /// Refuses a kernel without IORING_ASYNC_CANCEL_ANY (Linux 5.19): the loop's close cancels
  /// everything in flight with it, and would otherwise wait and leak. One probe, with nothing
  /// in flight: "no match" means the kernel knows the flag.
  void check_kernel() {
    io_uring_sqe* s = io_uring_get_sqe(&ring_);
    io_uring_prep_cancel64(s, 0, IORING_ASYNC_CANCEL_ANY);
    io_uring_sqe_set_data(s, nullptr);
    int res = io_uring_submit_and_wait(&ring_, 1);
    io_uring_cqe* cqe = nullptr;
    if (res >= 0 && io_uring_peek_cqe(&ring_, &cqe) == 0) {
      res = cqe->res;
      io_uring_cqe_seen(&ring_, cqe);
    }
    // (A kernel without IORING_FEAT_EXT_ARG, before 5.11, would make liburing add timeouts of
    // its own to the ring, whose completions reap() does not expect.)
    if (res == -EINVAL || (ring_.features & IORING_FEAT_EXT_ARG) == 0) {
      io_uring_queue_exit(&ring_);
      throw std::system_error(ENOSYS, std::generic_category(),
                              "the proactor loop needs Linux 5.19 or later (io_uring cancel-any)");
    }
  }

  /// A free submission entry for @p op after submitting what is queued (the queue was full), or
  /// nullptr with refusal_ set: the kernel takes no more.
  [[gnu::noinline]] io_uring_sqe* sqe_after_submit(UringOp* op) noexcept {
    const int r = io_uring_submit(&ring_);
    io_uring_sqe* s = io_uring_get_sqe(&ring_);
    if (s == nullptr) {
      refusal_ = r < 0 ? -r : EBUSY;
      return nullptr;
    }
    taken(s, op);
    return s;
  }
  /// Marks the entry @p s as @p op's, counted in flight.
  void taken(io_uring_sqe* s, UringOp* op) noexcept {
    io_uring_sqe_set_data(s, op);
    if (op != nullptr) ++in_flight_;
  }

  /// Hands every completion in the queue to its operation's owner.
  void reap() noexcept {
    // The tail is read once: what completes meanwhile is taken by the next wait.
    const unsigned head = *ring_.cq.khead;
    const unsigned tail = io_uring_smp_load_acquire(ring_.cq.ktail);
    for (unsigned i = head; i != tail; ++i) {
      const io_uring_cqe& cqe = ring_.cq.cqes[i & ring_.cq.ring_mask];
      auto* op = static_cast<UringOp*>(io_uring_cqe_get_data(&cqe));
      // Ignored: cancellations. (liburing's own timeouts, LIBURING_UDATA_TIMEOUT, come only
      // from kernels without IORING_FEAT_EXT_ARG, which check_kernel() refuses.)
      if (op == nullptr) continue;
      if ((cqe.flags & IORING_CQE_F_MORE) == 0) --in_flight_;  // (a multishot one goes on)
      op->done(*op, cqe.res, cqe.flags);
    }
    io_uring_cq_advance(&ring_, tail - head);
  }

  static void on_wake(UringOp& op, int /*res*/, std::uint32_t /*flags*/) noexcept {
    auto& loop = *static_cast<UringEventLoop*>(op.owner);
    loop.wake_armed_ = false;
    if (!loop.draining_) loop.arm_wake_noexcept();
  }
  static void on_watch(UringOp& op, int res, std::uint32_t /*flags*/) noexcept {
    auto& w = *static_cast<FdWatch*>(op.owner);
    w.loop->polled(w, op.kind == OpKind::watch_read, res);
  }

  /// Cancels everything in flight and takes the completions until none is left: afterwards no
  /// operation refers to memory of the loop's or of a channel's.
  void drain() noexcept {
    draining_ = true;
    for (int round = 0; in_flight_ != 0 && round < 50; ++round) {
      if (io_uring_sqe* s = io_uring_get_sqe(&ring_)) {
        io_uring_prep_cancel64(s, 0, IORING_ASYNC_CANCEL_ANY);
        io_uring_sqe_set_data(s, nullptr);
      }
      __kernel_timespec ts{};
      ts.tv_nsec = 20'000'000;
      io_uring_cqe* cqe = nullptr;
      io_uring_submit_and_wait_timeout(&ring_, &cqe, 1, &ts, nullptr);
      reap();
    }
    draining_ = false;
    if (!is_closed()) arm_wake_noexcept();
  }

  void arm_wake() {
    if (wake_armed_) return;
    io_uring_sqe* s = sqe(&wake_op_);
    io_uring_prep_read(s, wake_fd_, &wake_count_, sizeof wake_count_, 0);
    wake_armed_ = true;
  }
  void arm_wake_noexcept() noexcept {
    try {
      arm_wake();
    } catch (const std::system_error&) {
      // The ring takes nothing: the next wait_for_events() submits and this is retried then.
      wake_retry_ = true;
    }
  }

  FdWatch& watch(int fd) {
    if (fd < 0) {
      throw std::invalid_argument("file descriptor must be >= 0, got " + std::to_string(fd));
    }
    const auto i = static_cast<std::size_t>(fd);
    if (i >= watches_.size()) watches_.resize(i + 1, nullptr);
    if (watches_[i] == nullptr) watches_[i] = new FdWatch(*this, fd);
    return *watches_[i];
  }

  void set(int fd, HandleImpl* FdWatch::*slot, Callback&& callback, const char* method) {
    check_open();
    if (debug_) check_thread(method);
    check_descriptor(fd, method);
    set_on(watch(fd), slot, std::move(callback));
  }

  bool clear(int fd, HandleImpl* FdWatch::*slot, const char* method) {
    if (is_closed()) return false;
    if (debug_) check_thread(method);
    if (fd < 0 || static_cast<std::size_t>(fd) >= watches_.size() || watches_[fd] == nullptr) {
      return false;
    }
    FdWatch& w = *watches_[fd];
    if (!clear_on(w, slot)) return false;
    if (w.reader == nullptr && w.writer == nullptr) release(std::exchange(watches_[fd], nullptr));
    return true;
  }

  /// An open descriptor, as epoll_ctl() checks: a poll on a closed one fails only later.
  static void check_descriptor(int fd, const char* method) {
    if (fd >= 0 && ::fcntl(fd, F_GETFD) < 0) {
      throw std::system_error(errno, std::generic_category(),
                              std::string(method) + " on fd " + std::to_string(fd));
    }
  }

  void set_on(FdWatch& w, HandleImpl* FdWatch::*slot, Callback&& callback) {
    auto* h = HandleImpl::create(std::move(callback));
    if (HandleImpl* old = std::exchange(w.*slot, h)) {
      old->cancel();
      old->release();
    }
    queue_arm(w);
  }

  /// @return whether a callback was set
  static bool clear_on(FdWatch& w, HandleImpl* FdWatch::*slot) noexcept {
    HandleImpl* h = std::exchange(w.*slot, nullptr);
    if (h == nullptr) return false;
    h->cancel();  // a report already queued this iteration must not run
    h->release();
    // The poll in flight stays: its report finds no handle (or the next callback set).
    return true;
  }

  /// Lets go of @p w (out of its slot, or closed by its IoWatch; the loop does not own the
  /// descriptor) and cancels its polls, whose completions then find it released; it goes with
  /// the last of them.
  void release(FdWatch* w) noexcept {
    w->released = true;
    if (w->read_armed || w->write_armed) {
      // Submitted now: a poll holds the descriptor's file, so until it is cancelled a close(2)
      // by the caller would not close the socket (a peer would not see it gone).
      try {
        if (w->read_armed) cancel(&w->read_op);
        if (w->write_armed) cancel(&w->write_op);
      } catch (const std::system_error&) {
        // Nothing can be queued: the polls report once their descriptor is ready, or at close.
      }
      io_uring_submit(&ring_);
    }
    unref(w);
  }
  static void unref(FdWatch* w) noexcept {
    if (--w->refs == 0) delete w;
  }


  void queue_arm(FdWatch& w) {
    if (w.queued) return;
    to_arm_.push_back(&w);
    w.queued = true;
    ++w.refs;  // the list's
  }

  /// Starts the polls that registrations and reports since the last wait asked for.
  void arm_watches() {
    if (wake_retry_) {
      arm_wake();
      wake_retry_ = false;
    }
    std::size_t i = 0;
    try {
      for (; i < to_arm_.size(); ++i) {
        FdWatch& w = *to_arm_[i];
        if (!w.released) {  // (released since it was queued: nothing to arm)
          if (w.reader != nullptr && !w.read_armed) arm(w, true);
          if (w.writer != nullptr && !w.write_armed) arm(w, false);
        }
        w.queued = false;
        unref(&w);
      }
    } catch (...) {
      // The ring takes no more: the rest stays queued for the next wait.
      to_arm_.erase(to_arm_.begin(), to_arm_.begin() + static_cast<std::ptrdiff_t>(i));
      throw;
    }
    to_arm_.clear();
  }

  void arm(FdWatch& w, bool read) {
    UringOp* op = read ? &w.read_op : &w.write_op;
    io_uring_prep_poll_add(sqe(op), w.fd, read ? POLLIN : POLLOUT);
    (read ? w.read_armed : w.write_armed) = true;
    ++w.refs;
  }

  void polled(FdWatch& w, bool read, int res) noexcept {
    (read ? w.read_armed : w.write_armed) = false;
    HandleImpl* h = read ? w.reader : w.writer;
    // A failure (-EBADF: the descriptor was closed behind the loop's back) is not readiness:
    // the watch goes quiet, as epoll forgets a closed descriptor, rather than report it forever.
    if (!w.released && !draining_ && h != nullptr && (res >= 0 || res == -ECANCELED)) {
      if (res >= 0) push_ready(h);
      try {
        queue_arm(w);  // level-triggered: look again once this iteration's callbacks ran
      } catch (const std::bad_alloc&) {
        // The watch cannot be armed again; its callback ran, the next add_* re-arms it.
      }
    }
    unref(&w);
  }

  io_uring ring_{};
  RecvPool recv_pool_;  // unmapped after the destructor has closed the ring
  BlockCache write_blocks_;
  std::vector<FdWatch*> watches_;  // by descriptor
  std::vector<FdWatch*> to_arm_;  // each holds a reference
  std::size_t in_flight_ = 0;      // operations whose completion is awaited
  UringOp wake_op_{OpKind::wake, this, &on_wake};
  std::uint64_t wake_count_ = 0;   // the wake read's buffer
  int wake_fd_ = -1;  // the eventfd that wake_up() writes to
  bool wake_armed_ = false;
  bool wake_retry_ = false;
  bool taskrun_flag_ = false;
  bool multishot_recv_ = true;  // until a kernel refuses one (before 6.0)
  int refusal_ = EBUSY;         // why the kernel took no more submissions (errno)
  bool draining_ = false;
};

FdWatch::FdWatch(UringEventLoop& l, int f) noexcept
    : loop(&l),
      fd(f),
      read_op{OpKind::watch_read, this, &UringEventLoop::on_watch},
      write_op{OpKind::watch_write, this, &UringEventLoop::on_watch} {}

UringWatch::UringWatch(UringEventLoop& loop, int fd) : loop_(loop), watch_(new FdWatch(loop, fd)) {}

void UringWatch::set_reader(Callback callback) {
  loop_.watch_set(*watch_, &FdWatch::reader, std::move(callback), "IoWatch::set_reader");
}
void UringWatch::clear_reader() noexcept { UringEventLoop::watch_clear(*watch_, &FdWatch::reader); }
void UringWatch::set_writer(Callback callback) {
  loop_.watch_set(*watch_, &FdWatch::writer, std::move(callback), "IoWatch::set_writer");
}
void UringWatch::clear_writer() noexcept { UringEventLoop::watch_clear(*watch_, &FdWatch::writer); }
void UringWatch::close() noexcept {
  loop_.watch_close(watch_);
  delete this;
}

UringAcceptor::UringAcceptor(UringEventLoop& loop, int fd, int batch, AcceptClient& client)
    : loop_(loop), client_(&client), fd_(fd), batch_(batch < 1 ? 1 : static_cast<std::size_t>(batch)) {
  report_handle_ = HandleImpl::create([this] { report(); });
}

UringAcceptor::~UringAcceptor() {
  for (int r : results_) {
    if (r >= 0) ::close(r);  // accepted, never reported
  }
}

void UringAcceptor::start() {
  if (started_ || closed_) return;
  started_ = true;
  if (!results_.empty()) queue_report();  // what came in while stopped: in a later callback
  try {
    if (!armed_) arm();
  } catch (...) {
    started_ = false;
    throw;
  }
}

void UringAcceptor::stop() noexcept {
  started_ = false;
  cancel_op();
}

void UringAcceptor::close() noexcept {
  stop();
  closed_ = true;
  report_handle_->cancel();  // already queued: does not run
  report_handle_->release();
  report_handle_ = nullptr;
  unref();  // the accepted descriptors not reported close with the last reference
}

void UringAcceptor::arm() {
  io_uring_prep_multishot_accept(loop_.sqe(&op_), fd_, nullptr, nullptr,
                                 SOCK_NONBLOCK | SOCK_CLOEXEC);
  armed_ = true;
  cancelling_ = false;
  ++refs_;
}

void UringAcceptor::cancel_op() noexcept {
  if (!armed_ || cancelling_) return;
  cancelling_ = loop_.cancel_now(&op_);
}

void UringAcceptor::queue_report() noexcept {
  if (queued_ || closed_) return;
  queued_ = true;
  loop_.queue_ready(report_handle_);
}

void UringAcceptor::on_accept(UringOp& op, int res, std::uint32_t flags) noexcept {
  auto& a = *static_cast<UringAcceptor*>(op.owner);
  const bool last = (flags & IORING_CQE_F_MORE) == 0;
  if (last) a.armed_ = false;
  if (a.closed_ || a.loop_.draining()) {
    if (res >= 0) ::close(res);  // nobody will take it
  } else if (res != -ECANCELED && res != -EAGAIN) {
    try {
      a.results_.push_back(res);
    } catch (const std::bad_alloc&) {
      if (res >= 0) ::close(res);  // the peer sees a reset rather than a hang
    }
    if (a.started_) a.queue_report();
    // A batch waits for its report: the next connections wait in the kernel's queue, as on the
    // selector loop, rather than pile up here (report() arms again).
    if (!last && a.results_.size() >= a.batch_) a.cancel_op();
  } else if (last && a.started_) {
    a.queue_report();  // a cancellation that start() overtook: the report arms again
  }
  if (last) a.unref();
}

void UringAcceptor::report() noexcept {
  queued_ = false;
  ++refs_;  // the client may close the acceptor from any report
  std::size_t i = 0;
  while (i < results_.size() && i < batch_ && started_) {
    const int r = results_[i++];
    if (r >= 0) {
      client_->accepted(r);
    } else {
      client_->accept_failed(-r);
    }
  }
  results_.erase(results_.begin(), results_.begin() + static_cast<std::ptrdiff_t>(i));
  if (started_ && !results_.empty()) queue_report();  // the rest in the next iteration
  if (started_ && !armed_ && results_.size() < batch_) {
    try {
      arm();
    } catch (const std::system_error& e) {
      started_ = false;
      client_->accept_failed(e.code().value());
    }
  }
  unref();
}

UringConnect::UringConnect(UringEventLoop& loop, int fd, const SocketAddress& address,
                           ConnectClient& client)
    : loop_(loop), client_(&client), fd_(fd), address_(address) {
  report_handle_ = HandleImpl::create([this] {
    if (!cancelled_) client_->connect_done(result_);
  });
}

void UringConnect::submit() {
  io_uring_prep_connect(loop_.sqe(&op_), fd_, address_.data(), address_.size());
  in_flight_ = true;
  ++refs_;
}

void UringConnect::cancel() noexcept {
  cancelled_ = true;
  report_handle_->cancel();  // already queued: does not run
  if (in_flight_) loop_.cancel_now(&op_);
  unref();
}

void UringConnect::on_connect(UringOp& op, int res, std::uint32_t /*flags*/) noexcept {
  auto& c = *static_cast<UringConnect*>(op.owner);
  c.in_flight_ = false;
  if (!c.cancelled_ && !c.loop_.draining()) {
    // EISCONN: a kernel that retried the connect after it completed; the socket is connected.
    c.result_ = res < 0 && res != -EISCONN ? -res : 0;
    c.loop_.queue_ready(c.report_handle_);
  }
  c.unref();
}

UringChannel::UringChannel(UringEventLoop& loop, int fd, IoClient& client)

    : CompletionChannel(loop, loop.write_blocks(), fd, client) {}

UringEventLoop& UringChannel::uring() const noexcept {
  return static_cast<UringEventLoop&>(*loop_);
}

void UringChannel::queue(HandleImpl* h) {
  // A handle runs once per push; the channel's flags keep a second push from doing anything.
  uring().queue_ready(h);
}

PoolRecv UringChannel::submit_recv_pooled() {
  UringEventLoop& loop = uring();
  if (loop.recv_pool() == nullptr) return PoolRecv::none;
  io_uring_sqe* s = loop.sqe(&recv_op_);
  // Multishot: one submission for every arrival until it ends (the length comes from the
  // buffer the kernel picks).
  const bool multishot = loop.multishot_recv();
  if (multishot) {
    io_uring_prep_recv_multishot(s, fd_, nullptr, 0, 0);
  } else {
    io_uring_prep_recv(s, fd_, nullptr, RecvPool::size, 0);
  }
  s->flags |= IOSQE_BUFFER_SELECT;
  s->buf_group = RecvPool::group;
  ref();
  return multishot ? PoolRecv::multishot : PoolRecv::single;
}

bool UringChannel::cancel_recv() noexcept {
  // Submitted now, not with the next wait: until the kernel has it, the receive takes a pool
  // buffer for every arrival, and any system call this thread makes meanwhile (a send(2) from
  // the protocol) lets the kernel complete more of them.
  return uring().cancel_now(&recv_op_);
}

void UringChannel::multishot_refused() noexcept { uring().refuse_multishot_recv(); }

PoolLink& UringChannel::pool_link(int id) noexcept { return uring().open_recv_pool().link(id); }

std::byte* UringChannel::pool_buffer(int id) const noexcept {
  return uring().open_recv_pool().buffer(id);
}

bool UringChannel::grow_pool() noexcept {
  return uring().open_recv_pool().grow(loop_->stats().receive_buffers_held);
}

bool UringChannel::pool_roomy() const noexcept {
  return uring().open_recv_pool().roomy(loop_->stats().receive_buffers_held);
}

void UringChannel::give_back(int id) noexcept {
  --loop_->stats().receive_buffers_held;
  uring().open_recv_pool().give_back(id);
}

void UringChannel::submit_recv(std::byte* buf, std::size_t len) {
  io_uring_prep_recv(uring().sqe(&recv_op_), fd_, buf, len, 0);
  ref();
}

int UringChannel::submit_send(const std::byte* data, std::size_t len) noexcept {
  io_uring_sqe* s = uring().sqe_or_null(&send_op_);
  if (s == nullptr) [[unlikely]] return uring().refusal();
  prep_send(s, data, len);
  return 0;
}

bool UringChannel::try_submit_send(const std::byte* data, std::size_t len) noexcept {
  io_uring_sqe* s = uring().sqe_if_room(&send_op_);
  if (s == nullptr) [[unlikely]] return false;
  prep_send(s, data, len);
  return true;
}

void UringChannel::prep_send(io_uring_sqe* s, const std::byte* data, std::size_t len) noexcept {
  // MSG_WAITALL: the kernel sends the whole buffer before it completes (as the C floor does), so
  // a slow peer costs one completion per buffer, not one per dribble of the kernel's window.
  io_uring_prep_send(s, fd_, data, len, MSG_NOSIGNAL | MSG_WAITALL);
  ref();
}

void UringChannel::submit_wait(bool read) {
  io_uring_prep_poll_add(uring().sqe(read ? &wait_read_op_ : &wait_write_op_), fd_,
                         read ? POLLIN : POLLOUT);
  ref();
}

bool UringChannel::cancel_all() noexcept {
  try {
    for (UringOp* op : {&recv_op_, &send_op_, &wait_read_op_, &wait_write_op_}) {
      const bool flying = op == &recv_op_    ? reading_in_flight()
                          : op == &send_op_  ? sending_in_flight()
                                             : waiting_in_flight(op == &wait_read_op_);
      if (flying) {
        io_uring_prep_cancel64(uring().sqe(nullptr), reinterpret_cast<std::uintptr_t>(op), 0);
      }
    }
    return true;
  } catch (const std::system_error&) {
    // Nothing can be queued: what is in flight completes when its socket is ready, or is
    // cancelled when the loop closes; the channel lives until then.
    return false;
  }
}

void UringChannel::close() noexcept {
  end();
  // Operations in flight are cancelled, and submitted now, before the descriptor closes: one
  // prepared and not yet submitted reaches this socket, not another that takes its number, and
  // the cancelled ones let go of the socket's file, so that close(2) closes it here and now.
  if (in_flight() && !uring().submit_cancels(cancel_all())) {
    // The ring took no cancellation: an operation prepared and not yet submitted may still go
    // to this descriptor number, so it stays ours until the last operation is done with it.
    close_at_end_ = true;
  } else {
    ::close(fd_);
  }
  unref();
}

int UringChannel::release() noexcept {
  end();
  if (in_flight()) uring().submit_cancels(cancel_all());
  const int fd = fd_;
  unref();  // with nothing in flight, the channel goes here
  return fd;
}

void UringChannel::on_recv(UringOp& op, int res, std::uint32_t flags) noexcept {
  auto& c = *static_cast<UringChannel*>(op.owner);
  const int id = (flags & IORING_CQE_F_BUFFER) != 0
                     ? static_cast<int>(flags >> IORING_CQE_BUFFER_SHIFT)
                     : -1;
  if (id >= 0) ++c.loop_->stats().receive_buffers_held;
  if ((flags & IORING_CQE_F_MORE) != 0 && !c.uring().draining()) [[likely]] {
    // A multishot receive that goes on. (Nothing follows received() here, so that its calls end
    // this function and it saves no registers for them.)
    c.received(res, id, true);
    return;
  }
  c.recv_completed(res, id, (flags & IORING_CQE_F_MORE) != 0);
}

void UringChannel::recv_completed(int res, int id, bool more) noexcept {
  if (uring().draining()) {
    if (!more) drop_recv();  // the loop is closing: nothing is delivered any more
    if (id >= 0) give_back(id);
  } else {
    received(res, id, more);
  }
  if (!more) unref();  // the receive's last completion
}

void UringChannel::on_send(UringOp& op, int res, std::uint32_t /*flags*/) noexcept {
  auto& c = *static_cast<UringChannel*>(op.owner);
  // The common case inline, ending in calls only, so that it saves no registers.
  if (!c.uring().draining() && c.sent_quietly(res)) [[likely]] {
    c.unref();
    return;
  }
  c.send_completed(res);
}

void UringChannel::send_completed(int res) noexcept {
  if (uring().draining()) {
    drop_send();
  } else {
    sent(res);
  }
  unref();
}

void UringChannel::on_wait(UringOp& op, int res,
                           std::uint32_t /*flags*/) noexcept {  // watch_readable(), watch_writable()
  auto& c = *static_cast<UringChannel*>(op.owner);
  const bool read = op.kind == OpKind::wait_read;
  if (c.uring().draining()) {
    c.drop_wait(read);
  } else {
    c.waited(read, res);
  }
  c.unref();
}

}  // namespace

std::string_view proactor_backend() noexcept { return "proactor/io_uring"; }

std::unique_ptr<EventLoop> make_proactor_event_loop() {
  return std::make_unique<UringEventLoop>();
}

}  // namespace strata::detail

#endif
