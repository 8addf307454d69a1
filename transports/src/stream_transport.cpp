// The selector transport of a connected stream descriptor: asyncio's
// selector_events._SelectorSocketTransport and unix_events._UnixReadPipeTransport /
// _UnixWritePipeTransport in one class (see stream_transport.hpp).
//
// Costs, because this is the hot path of every server:
// - Reading: one recv() per readiness event into ONE thread-local buffer (Protocol) or into the
//   protocol's own memory (BufferedProtocol). No read after a short read: the loop is
//   level-triggered and reports the descriptor again. The reader stays registered for the
//   whole connection, so a request costs no epoll_ctl.
// - Writing: with nothing buffered, write() sends on the spot (send with MSG_NOSIGNAL); only
//   what the kernel refuses is copied into a write buffer, allocated then and freed once it
//   drains. writelines() is one sendmsg() over an iovec array.
// - Memory of an idle connection: this object (176 bytes on x86-64), the loop's reader handle,
//   and the peer and socket addresses stored at their real length.
// - sendfile() on a socket (asyncio's _sendfile_native): sendfile(2) straight from the file to
//   the socket, one call per writability event as on_writable() does with the buffer; the file's
//   bytes never enter the write buffer. What the protocol wrote before goes first: the native
//   send starts once the buffer is empty. The write path pays nothing for it: a sendfile in
//   progress sets cannot_write_, which write() tests anyway.

#include "stream_transport.hpp"
#include "water_marks.hpp"

#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <exception>
#include <stdexcept>
#include <string>
#include <tuple>
#include <utility>

#include "strata/core/detail/assert.hpp"
#include "strata/core/errors.hpp"
#include "strata/core/log.hpp"

namespace strata::detail {

namespace {

constexpr std::size_t read_buffer_size = 64 * 1024;  // asyncio reads 256 KiB at a time
constexpr std::size_t default_high_water = 64 * 1024;
constexpr std::size_t max_iovecs = 64;                // per writelines() system call
constexpr std::size_t min_write_buffer = 4 * 1024;
constexpr std::uint32_t dropped_writes_warning = 5;   // asyncio's LOG_THRESHOLD_FOR_CONNLOST_WRITES

// ---- The shared read buffer ---------------------------------------------------------------

// One per thread, made on the first read: a Protocol sees the bytes only during
// data_received(), so every connection of the thread's loop can share it. A trivially
// initialised pointer costs one %fs-relative load per read; the owner below frees it when the
// thread ends.
thread_local std::byte* tls_read_buffer = nullptr;

[[gnu::noinline]] std::byte* allocate_read_buffer() {
  struct Owner {
    ~Owner() {
      delete[] tls_read_buffer;
      tls_read_buffer = nullptr;
    }
  };
  thread_local Owner owner;
  static_cast<void>(&owner);  // odr-use: registers the destructor for this thread
  tls_read_buffer = new std::byte[read_buffer_size];
  return tls_read_buffer;
}

inline std::byte* read_buffer() {
  std::byte* b = tls_read_buffer;
  return b != nullptr ? b : allocate_read_buffer();
}

// ---- The hot system calls ----------------------------------------------------------------

// recv() and send() of every request go through syscall(2) rather than glibc's wrappers. In a
// process with more than one thread, glibc's recv/send are cancellation points that switch
// the thread to asynchronous cancellation around the call: about 60 of the ~300 user-space
// instructions an echo request may cost. Strata never uses pthread_cancel (a C++ thread cannot
// be unwound safely from one), so the switch buys nothing. Sanitizer builds keep the wrappers,
// which the sanitizers intercept to check the buffers and to see the synchronisation.
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define STRATA_LIBC_SOCKET_CALLS 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer) || \
    __has_feature(memory_sanitizer)
#define STRATA_LIBC_SOCKET_CALLS 1
#endif
#endif

inline ssize_t sys_recv(int fd, void* buf, std::size_t len) noexcept {
#if defined(STRATA_LIBC_SOCKET_CALLS) || !defined(SYS_recvfrom)
  return ::recv(fd, buf, len, 0);
#else
  return ::syscall(SYS_recvfrom, fd, buf, len, 0, nullptr, nullptr);
#endif
}

inline ssize_t sys_send(int fd, const void* buf, std::size_t len) noexcept {
#if defined(STRATA_LIBC_SOCKET_CALLS) || !defined(SYS_sendto)
  return ::send(fd, buf, len, MSG_NOSIGNAL);
#else
  return ::syscall(SYS_sendto, fd, buf, len, MSG_NOSIGNAL, nullptr, 0);
#endif
}

// ---- Errors ----------------------------------------------------------------------------

std::error_code errno_code(int e) noexcept { return {e, std::system_category()}; }

/// Whether a failed read or write only means "not now".
bool is_transient(int e) noexcept { return e == EAGAIN || e == EWOULDBLOCK || e == EINTR; }

/// Whether sendfile(2) failed on the file's side (the connection is fine): a read error, or a
/// file that the kernel cannot splice. Everything else is the socket's and ends the connection.
bool is_file_error(int e) noexcept {
  switch (e) {
    case EIO:
    case EINVAL:
    case EOVERFLOW:
    case ESPIPE:
    case EBADF:
    case ENOSYS:
    case EOPNOTSUPP:
    case ENOMEM:
    case EFAULT:
    case EISDIR:
    case ENXIO:
      return true;
    default:
      return false;
  }
}

/// Whether sendfile(2) failing with @p e before it sent anything means that this file cannot
/// be sent natively at all (asyncio's SendfileNotAvailableError): the fallback takes over.
bool is_sendfile_unavailable(int e) noexcept {
  return e == EINVAL || e == ENOSYS || e == EOPNOTSUPP;
}

/// The most one sendfile(2) call moves (Linux caps a call at this anyway).
constexpr std::uint64_t max_sendfile_call = 0x7ffff000;

// ---- SIGPIPE on pipes ------------------------------------------------------------------

// Writing to a pipe whose read end is closed raises SIGPIPE, whose default action ends the
// process; send(MSG_NOSIGNAL) avoids it for sockets, but write() has no such flag. Rather than
// changing the process-wide disposition (Python sets SIG_IGN at start-up, which every child
// process then inherits), a write to a pipe blocks SIGPIPE in the calling thread for the
// duration of the call and, if the write failed with EPIPE, consumes the signal it raised
// (sigtimedwait with a zero timeout) before restoring the mask. A SIGPIPE that was already
// pending is left alone: the kernel merges ours into it. Cost: three extra system calls per
// write to a pipe (sigpending, two pthread_sigmask); sockets never pay it.
class SigpipeSuppressor {
 public:
  SigpipeSuppressor() noexcept {
    ::sigemptyset(&set_);
    ::sigaddset(&set_, SIGPIPE);
    sigset_t pending;
    ::sigemptyset(&pending);
    ::sigpending(&pending);
    was_pending_ = ::sigismember(&pending, SIGPIPE) == 1;
    if (!was_pending_) {
      sigset_t old;
      ::pthread_sigmask(SIG_BLOCK, &set_, &old);
      unblock_ = ::sigismember(&old, SIGPIPE) == 0;
    }
  }
  SigpipeSuppressor(const SigpipeSuppressor&) = delete;
  SigpipeSuppressor& operator=(const SigpipeSuppressor&) = delete;

  /// After a write: consumes the SIGPIPE that a failure with EPIPE raised. Keeps errno.
  void after_write(bool failed_with_epipe) noexcept {
    if (!failed_with_epipe || was_pending_) return;
    const int saved = errno;
    const timespec zero{};
    while (::sigtimedwait(&set_, nullptr, &zero) < 0 && errno == EINTR) {
    }
    errno = saved;
  }

  ~SigpipeSuppressor() {
    if (unblock_) ::pthread_sigmask(SIG_UNBLOCK, &set_, nullptr);
  }

 private:
  sigset_t set_;
  bool was_pending_ = false;
  bool unblock_ = false;
};

// ---- The write buffer -------------------------------------------------------------------

/// Bytes the kernel has not taken yet, contiguous so that one send() flushes them. Storage is
/// allocated on the first append and freed when the buffer drains, so an idle connection owns
/// none. Appending compacts (memmove) only when that leaves a quarter of the capacity free, and
/// otherwise doubles: amortised O(1) per byte.
class WriteBuffer {
 public:
  WriteBuffer() noexcept = default;
  WriteBuffer(const WriteBuffer&) = delete;
  WriteBuffer& operator=(const WriteBuffer&) = delete;
  ~WriteBuffer() { delete[] data_; }

  std::size_t size() const noexcept { return tail_ - head_; }
  bool empty() const noexcept { return tail_ == head_; }
  const std::byte* data() const noexcept { return data_ + head_; }

  void append(const std::byte* p, std::size_t n) {
    if (cap_ - tail_ < n) make_room(n);
    std::memcpy(data_ + tail_, p, n);
    tail_ += n;
  }

  /// Drops the first @p n bytes (sent); frees the storage once empty.
  void consume(std::size_t n) noexcept {
    head_ += n;
    if (head_ == tail_) clear();
  }

  void clear() noexcept {
    delete[] data_;
    data_ = nullptr;
    cap_ = head_ = tail_ = 0;
  }

 private:
  void make_room(std::size_t n) {
    const std::size_t used = size();
    if (data_ != nullptr && used + n <= cap_ - cap_ / 4) {
      std::memmove(data_, data_ + head_, used);
    } else {
      const std::size_t cap = std::max({cap_ * 2, used + n, min_write_buffer});
      auto* fresh = new std::byte[cap];
      if (used != 0) std::memcpy(fresh, data_ + head_, used);
      delete[] data_;
      data_ = fresh;
      cap_ = cap;
    }
    head_ = 0;
    tail_ = used;
  }

  std::byte* data_ = nullptr;
  std::size_t cap_ = 0;
  std::size_t head_ = 0;
  std::size_t tail_ = 0;
};

// ---- The transport ----------------------------------------------------------------------

/// Where the protocol is in its grammar, `connection_made (data_received | buffer_updated)*
/// eof_received? connection_lost` (asyncio's AppProtocolState); debug builds assert each
/// transition.
enum class ProtocolState : std::uint8_t {
  made,       ///< connection_made() is scheduled
  connected,  ///< connection_made() was called
  eof,        ///< eof_received() was called
  lost,       ///< connection_lost() was called; the transport is about to be destroyed
};

class StreamTransport final : public Transport, public LoopResource, public SendfileHost {
 public:
  StreamTransport(EventLoop& loop, int fd, StreamKind kind, std::unique_ptr<BaseProtocol> protocol,
                  Future<void> waiter, ConnectionTracker* tracker)
      : loop_(&loop),
        tracker_(tracker),
        waiter_(std::move(waiter)),
        fd_(fd),
        kind_(kind),
        cannot_write_(kind == StreamKind::read_pipe) {
    adopt_protocol(std::move(protocol));
  }

  ~StreamTransport() {
    if (fd_ >= 0) ::close(fd_);
  }

  /// Registers with the loop and schedules connection_made(). On an exception nothing is
  /// registered and the descriptor is left open (the caller still owns it).
  void start();

  // ---- BaseTransport ----
  void close() override;
  bool is_closing() const noexcept override { return closing_; }
  std::any get_extra_info(std::string_view name) const override;
  EventLoop& get_loop() const noexcept override { return *loop_; }

  // ---- Transport ----
  void write(std::span<const std::byte> data) override;
  void writelines(std::span<const std::span<const std::byte>> buffers) override;
  void write_eof() override;
  bool can_write_eof() const noexcept override { return kind_ != StreamKind::read_pipe; }
  void abort() override { force_close(std::make_error_code(std::errc::operation_canceled)); }
  std::size_t get_write_buffer_size() const noexcept override { return buffer_.size(); }
  void set_write_buffer_limits(std::optional<std::size_t> high,
                               std::optional<std::size_t> low) override;
  std::pair<std::size_t, std::size_t> get_write_buffer_limits() const noexcept override {
    return {low_water_, high_water_};
  }
  void pause_reading() override;
  void resume_reading() override;
  bool is_reading() const noexcept override {
    return kind_ != StreamKind::write_pipe && !reading_paused_ && !closing_ && !eof_received_;
  }
  void set_protocol(std::unique_ptr<BaseProtocol> protocol) override;
  std::unique_ptr<BaseProtocol> exchange_protocol(std::unique_ptr<BaseProtocol> protocol) override;
  BaseProtocol& get_protocol() const noexcept override { return *protocol_; }

  // ---- LoopResource ----
  void loop_closing() noexcept override;
  std::size_t write_buffered() const noexcept override { return buffer_.size(); }

  // ---- SendfileHost ----
  void attach_sendfile(SendfileJob& job) override;
  void detach_sendfile() noexcept override;
  bool start_native_sendfile() override;
  bool sendfile_write(std::span<const std::byte> data) override {
    send_or_buffer(data);  // a failure ends the job at once (force_close())
    return buffer_.size() > high_water_;
  }

  void detach_tracker() noexcept { tracker_ = nullptr; }
  /// For a failed start(): the destructor must leave the descriptor open.
  void disown_descriptor() noexcept { fd_ = -1; }

 private:
  static std::pair<Protocol*, BufferedProtocol*> classify(BaseProtocol* p) noexcept {
    // A BufferedProtocol wins, as in asyncio (isinstance(protocol, BufferedProtocol)).
    if (auto* b = dynamic_cast<BufferedProtocol*>(p)) return {nullptr, b};
    return {dynamic_cast<Protocol*>(p), nullptr};
  }
  void adopt_protocol(std::unique_ptr<BaseProtocol> protocol) noexcept {
    std::tie(plain_, buffered_) = classify(protocol.get());
    protocol_ = std::move(protocol);
  }

  // Readiness callbacks.
  void on_readable() noexcept;
  void on_writable() noexcept;
  void read_plain() noexcept;
  void read_buffered() noexcept;
  void on_eof() noexcept;
  void on_write_pipe_hangup() noexcept;

  // Protocol callbacks and the end of the connection.
  void call_connection_made() noexcept;
  void call_connection_lost(std::error_code ec) noexcept;
  void schedule_connection_lost(std::error_code ec) noexcept;
  /// asyncio's _force_close: drops the buffer, stops I/O, schedules connection_lost(ec).
  void force_close(std::error_code ec) noexcept;
  /// A protocol callback threw: report it to the loop, then abort with callback_failed.
  void callback_failed(const char* callback) noexcept;
  void report(const char* callback, std::exception_ptr e) noexcept;
  void destroy() noexcept;
  void release_descriptor() noexcept;

  // Writing.
  [[noreturn, gnu::cold]] void throw_cannot_write(const char* method) const;
  /// send(MSG_NOSIGNAL) on a socket, write() with SIGPIPE suppressed on a pipe.
  ssize_t raw_send(const std::byte* data, std::size_t size) noexcept {
    const ssize_t n = is_socket_ ? sys_send(fd_, data, size) : pipe_write(data, size);
    if (n > 0) loop_->stats().bytes_written += static_cast<std::size_t>(n);
    return n;
  }
  ssize_t pipe_write(const std::byte* data, std::size_t size) noexcept;
  /// write() past its guard: sends what the kernel takes now, buffers the rest.
  [[gnu::always_inline]] inline void send_or_buffer(std::span<const std::byte> data);
  /// write() off the fast path: behind a non-empty buffer, or after a short or failed send()
  /// of @p sent bytes (-1: failed, errno tells why); buffers the rest, or ends the connection.
  /// Out of line, so that the fast path saves no registers.
  [[gnu::noinline]] void write_rest(std::span<const std::byte> data, ssize_t sent);
  std::size_t send_some(const std::byte* data, std::size_t size, std::error_code& ec) noexcept;
  std::size_t send_vector(const iovec* iov, std::size_t count, std::error_code& ec) noexcept;
  void start_writer() noexcept;
  void maybe_pause_protocol() noexcept;
  void maybe_resume_protocol() noexcept;
  void drop_write() noexcept;

  // sendfile().
  /// One sendfile(2) of the native job (the buffer is empty): then waits for writability, or
  /// completes the job, or ends the connection.
  void sendfile_step() noexcept;
  /// on_writable() with a job and an empty buffer.
  void sendfile_writable() noexcept;
  /// The connection ends under the job: lets go of it with @p ec (no protocol calls).
  void drop_sendfile(std::error_code ec) noexcept;

  void add_reader() { loop_->add_reader(fd_, [this] { on_readable(); }); reader_ = true; }
  void remove_reader() noexcept {
    if (reader_) {
      loop_->remove_reader(fd_);
      reader_ = false;
    }
  }
  void remove_writer() noexcept {
    if (writer_) {
      loop_->remove_writer(fd_);
      writer_ = false;
    }
  }

  void store_names() noexcept;
  std::any name_at(std::size_t which) const;

  EventLoop* loop_;
  std::unique_ptr<BaseProtocol> protocol_;
  Protocol* plain_ = nullptr;            // protocol_ as a Protocol, or null
  BufferedProtocol* buffered_ = nullptr;  // protocol_ as a BufferedProtocol, or null
  ConnectionTracker* tracker_;
  SendfileJob* sendfile_ = nullptr;  // the sendfile() in progress, or null
  Future<void> waiter_;  // completed after connection_made(); then released
  // The peer and socket addresses, taken at creation (getpeername fails once the peer has
  // gone): [peer length][socket length][peer bytes][socket bytes], lengths in one byte each.
  std::unique_ptr<std::byte[]> names_;
  WriteBuffer buffer_;
  std::size_t high_water_ = default_high_water;
  std::size_t low_water_ = default_high_water / 4;
  int fd_;
  std::uint32_t dropped_writes_ = 0;
  StreamKind kind_;
  ProtocolState state_ = ProtocolState::made;
  bool closing_ = false;          // close(), abort() or an error: no more reading or writing
  bool conn_lost_ = false;        // connection_lost() is scheduled (asyncio's _conn_lost)
  bool eof_written_ = false;      // write_eof() was called
  bool cannot_write_ = false;     // a read pipe, or write_eof() was called: write() throws
  bool eof_received_ = false;     // the peer ended its side
  bool reading_paused_ = false;   // pause_reading()
  bool protocol_paused_ = false;  // pause_writing() was called, resume_writing() not yet
  bool reader_ = false;           // a reader is registered with the loop
  bool writer_ = false;           // a writer is registered with the loop
  bool is_socket_ = false;        // recv/send rather than read/write
  bool sendfile_paused_reading_ = false;  // attach_sendfile() paused reading: resume after
};

// ---- Creation ----------------------------------------------------------------------------

void StreamTransport::start() {
  if (kind_ == StreamKind::socket) {
    is_socket_ = true;
    store_names();
  }
  bool watch = kind_ != StreamKind::write_pipe;
  if (kind_ != StreamKind::socket) {
    struct stat st {};
    if (::fstat(fd_, &st) == 0) {
      is_socket_ = S_ISSOCK(st.st_mode);
      // A write pipe watches for reading too: its descriptor turns readable (an error or a
      // hang-up) when the read end closes, which ends the connection at once rather than at
      // the next write. Not for character devices, which turn readable with input.
      if (kind_ == StreamKind::write_pipe) watch = is_socket_ || S_ISFIFO(st.st_mode);
    }
  }
  // Registering now, rather than after connection_made(), makes a refusal (a descriptor past
  // FD_SETSIZE on select) throw here, before any callback is scheduled. The loop cannot report
  // the descriptor before connection_made() runs: that is already in its ready queue.
  if (watch) add_reader();
  try {
    loop_->call_soon([this] { call_connection_made(); });
  } catch (...) {
    remove_reader();
    throw;
  }
  loop_->attach_resource(*this);
  if (tracker_ != nullptr) tracker_->connection_opened(*this);
}

void StreamTransport::store_names() noexcept {
  SocketAddress peer;
  SocketAddress self;
  socklen_t peer_len = SocketAddress::capacity();
  if (::getpeername(fd_, peer.mutable_data(), &peer_len) != 0) peer_len = 0;
  socklen_t self_len = SocketAddress::capacity();
  if (::getsockname(fd_, self.mutable_data(), &self_len) != 0) self_len = 0;
  peer_len = std::min<socklen_t>(peer_len, 255);  // every family's address fits in one byte
  self_len = std::min<socklen_t>(self_len, 255);
  try {
    names_.reset(new std::byte[2 + peer_len + self_len]);
  } catch (const std::bad_alloc&) {
    return;  // get_extra_info() then reports no names
  }
  names_[0] = static_cast<std::byte>(peer_len);
  names_[1] = static_cast<std::byte>(self_len);
  std::memcpy(names_.get() + 2, peer.data(), peer_len);
  std::memcpy(names_.get() + 2 + peer_len, self.data(), self_len);
  // TCP: no Nagle delay (asyncio's _set_nodelay, done by every socket transport).
  if (self_len != 0 && (self.data()->sa_family == AF_INET || self.data()->sa_family == AF_INET6)) {
    int one = 1;
    ::setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  }
}

std::any StreamTransport::name_at(std::size_t which) const {
  if (!names_) return {};
  const auto peer_len = static_cast<socklen_t>(names_[0]);
  const auto self_len = static_cast<socklen_t>(names_[1]);
  const std::byte* p = names_.get() + 2 + (which == 0 ? 0 : peer_len);
  const socklen_t len = which == 0 ? peer_len : self_len;
  if (len == 0) return {};
  try {
    return SocketAddress::from_native(reinterpret_cast<const sockaddr*>(p), len);
  } catch (const std::invalid_argument&) {
    return {};
  }
}

std::any StreamTransport::get_extra_info(std::string_view name) const {
  if (name == "peername") return name_at(0);
  if (name == "sockname") return name_at(1);
  if (fd_ >= 0) {
    if (name == "socket" && kind_ == StreamKind::socket) return fd_;
    if (name == "pipe" && kind_ != StreamKind::socket) return fd_;
  }
  return {};
}

// ---- Protocol callbacks --------------------------------------------------------------------

void StreamTransport::report(const char* callback, std::exception_ptr e) noexcept {
  std::string message = "Fatal error: protocol ";
  message += callback;
  message += "() threw; the connection is aborted";
  loop_->call_exception_handler({std::move(message), std::move(e), "StreamTransport", {}});
}

void StreamTransport::callback_failed(const char* callback) noexcept {
  report(callback, std::current_exception());
  force_close(make_error_code(errc::callback_failed));
}

void StreamTransport::call_connection_made() noexcept {
  STRATA_ASSERT(state_ == ProtocolState::made);
  state_ = ProtocolState::connected;
  try {
    if (buffered_ != nullptr) {
      buffered_->connection_made(*this);
    } else {
      plain_->connection_made(*this);
    }
  } catch (...) {
    // The creator awaiting the waiter gets the exception; with no waiter, the loop's handler.
    if (waiter_.valid() && !waiter_.done()) {
      waiter_.set_exception(std::current_exception());
      waiter_ = {};
      force_close(make_error_code(errc::callback_failed));
    } else {
      waiter_ = {};
      callback_failed("connection_made");
    }
    return;
  }
  if (waiter_.valid()) {
    // Nobody waits for a cancelled waiter, so nobody would close the transport: close it.
    if (!waiter_.done()) {
      waiter_.set_result();
    } else if (waiter_.cancelled()) {
      close();
    }
    waiter_ = {};
  }
}

void StreamTransport::schedule_connection_lost(std::error_code ec) noexcept {
  try {
    loop_->call_soon([this, ec] { call_connection_lost(ec); });
  } catch (...) {
    // The loop refused (out of memory): report now rather than never.
    call_connection_lost(ec);
  }
}

void StreamTransport::call_connection_lost(std::error_code ec) noexcept {
  STRATA_ASSERT(conn_lost_);
  STRATA_ASSERT(state_ == ProtocolState::connected || state_ == ProtocolState::eof);
  STRATA_ASSERT(sendfile_ == nullptr);
  state_ = ProtocolState::lost;
  try {
    protocol_->connection_lost(ec);
  } catch (...) {
    report("connection_lost", std::current_exception());
  }
  release_descriptor();
  if (ConnectionTracker* t = std::exchange(tracker_, nullptr)) t->connection_closed(*this);
  // Destroyed in a later iteration, as is the protocol: the protocol's own connection_lost()
  // may still be on the stack when this runs from inside one of its calls.
  try {
    loop_->call_soon([this] { destroy(); });
  } catch (...) {
    // Left attached: loop_closing() frees it.
  }
}

void StreamTransport::release_descriptor() noexcept {
  remove_reader();
  remove_writer();
  if (fd_ >= 0) {
    ::close(fd_);
    fd_ = -1;
  }
}

void StreamTransport::destroy() noexcept {
  loop_->detach_resource(*this);
  delete this;
}

void StreamTransport::loop_closing() noexcept {
  if (state_ == ProtocolState::lost) {  // connection_lost() returned: only the delete is due
    destroy();
    return;
  }
  buffer_.clear();
  closing_ = true;
  conn_lost_ = true;
  drop_sendfile(make_error_code(errc::loop_closed));
  if (waiter_.valid() && !waiter_.done()) waiter_.cancel("event loop closed");
  waiter_ = {};
  if (state_ != ProtocolState::made) {
    // connection_lost() directly: the loop is closing and will not run what is scheduled.
    call_connection_lost(make_error_code(errc::loop_closed));
  } else {
    // connection_made() never ran, so the protocol hears nothing (asyncio's
    // _protocol_connected); the tracker still hears that the transport is gone.
    state_ = ProtocolState::lost;
    release_descriptor();
    if (ConnectionTracker* t = std::exchange(tracker_, nullptr)) t->connection_closed(*this);
  }
  destroy();
}

// ---- Closing ---------------------------------------------------------------------------

void StreamTransport::close() {
  if (closing_) return;
  closing_ = true;
  // A sendfile() in progress stops where it is and throws: close() does not wait for the rest
  // of a file as it waits for the buffer (asyncio's fallback raises ConnectionError too).
  if (sendfile_ != nullptr) [[unlikely]] {
    drop_sendfile(std::make_error_code(std::errc::connection_aborted));
  }
  // A write pipe keeps watching for a closed read end while its buffer drains.
  if (kind_ != StreamKind::write_pipe || buffer_.empty()) remove_reader();
  if (buffer_.empty()) {
    conn_lost_ = true;
    remove_writer();
    schedule_connection_lost({});
  }
  // Otherwise on_writable() calls connection_lost() once the buffer is sent.
}

void StreamTransport::force_close(std::error_code ec) noexcept {
  if (conn_lost_) return;
  drop_sendfile(ec);
  buffer_.clear();
  remove_writer();
  closing_ = true;
  remove_reader();
  conn_lost_ = true;
  schedule_connection_lost(ec);
}

// ---- Reading ---------------------------------------------------------------------------

void StreamTransport::on_readable() noexcept {
  if (conn_lost_ || state_ == ProtocolState::made) return;
  if (kind_ == StreamKind::write_pipe) {
    on_write_pipe_hangup();
  } else if (buffered_ != nullptr) {
    read_buffered();
  } else {
    read_plain();
  }
}

void StreamTransport::read_plain() noexcept {
  std::byte* buf = read_buffer();
  const ssize_t n = is_socket_ ? sys_recv(fd_, buf, read_buffer_size)
                               : ::read(fd_, buf, read_buffer_size);
  if (n > 0) [[likely]] {
    STRATA_ASSERT(state_ == ProtocolState::connected);
    loop_->stats().bytes_read += static_cast<std::size_t>(n);
    try {
      plain_->data_received(std::span<const std::byte>(buf, static_cast<std::size_t>(n)));
    } catch (...) {
      callback_failed("data_received");
    }
    return;
  }
  if (n == 0) {
    on_eof();
  } else if (!is_transient(errno)) {
    force_close(errno_code(errno));
  }
}

void StreamTransport::read_buffered() noexcept {
  std::span<std::byte> buf;
  try {
    buf = buffered_->get_buffer(read_buffer_size);
  } catch (...) {
    callback_failed("get_buffer");
    return;
  }
  if (buf.empty()) {
    log(LogLevel::warning, "BufferedProtocol::get_buffer() returned an empty buffer; the "
                           "connection is aborted (return at least one byte)");
    force_close(std::make_error_code(std::errc::no_buffer_space));
    return;
  }
  const ssize_t n = is_socket_ ? sys_recv(fd_, buf.data(), buf.size())
                               : ::read(fd_, buf.data(), buf.size());
  if (n > 0) [[likely]] {
    STRATA_ASSERT(state_ == ProtocolState::connected);
    loop_->stats().bytes_read += static_cast<std::size_t>(n);
    try {
      buffered_->buffer_updated(static_cast<std::size_t>(n));
    } catch (...) {
      callback_failed("buffer_updated");
    }
    return;
  }
  if (n == 0) {
    on_eof();
  } else if (!is_transient(errno)) {
    force_close(errno_code(errno));
  }
}

void StreamTransport::on_eof() noexcept {
  STRATA_ASSERT(state_ == ProtocolState::connected);
  state_ = ProtocolState::eof;
  eof_received_ = true;
  remove_reader();  // nothing more to read; the write side may stay open
  bool keep_open = false;
  try {
    keep_open = buffered_ != nullptr ? buffered_->eof_received() : plain_->eof_received();
  } catch (...) {
    callback_failed("eof_received");
    return;
  }
  // A read pipe has nothing left to do: it closes whatever eof_received() says (asyncio).
  if (!keep_open || kind_ == StreamKind::read_pipe) close();
}

void StreamTransport::on_write_pipe_hangup() noexcept {
  // The read end closed: what is still buffered, or a file being sent, can never be delivered
  // (asyncio's _UnixWritePipeTransport._read_ready).
  if (!buffer_.empty() || sendfile_ != nullptr) {
    force_close(std::make_error_code(std::errc::broken_pipe));
  } else {
    close();
  }
}

void StreamTransport::pause_reading() {
  if (!is_reading()) return;
  reading_paused_ = true;
  remove_reader();
}

void StreamTransport::resume_reading() {
  if (kind_ == StreamKind::write_pipe || closing_ || !reading_paused_) return;
  reading_paused_ = false;
  if (!eof_received_ && !reader_) add_reader();
}

// ---- Writing ---------------------------------------------------------------------------

void StreamTransport::throw_cannot_write(const char* method) const {
  if (sendfile_ != nullptr) {
    throw InvalidStateError(std::string(method) +
                            "() while a sendfile is in progress on this transport: await the "
                            "sendfile() first (asyncio raises RuntimeError)");
  }
  if (kind_ == StreamKind::read_pipe) {
    throw InvalidStateError(std::string(method) + "() on a read pipe's transport: it cannot write");
  }
  throw InvalidStateError(std::string(method) + "() after write_eof(): the sending side is closed");
}

ssize_t StreamTransport::pipe_write(const std::byte* data, std::size_t size) noexcept {
  SigpipeSuppressor guard;
  const ssize_t n = ::write(fd_, data, size);
  guard.after_write(n < 0 && errno == EPIPE);
  return n;
}

std::size_t StreamTransport::send_some(const std::byte* data, std::size_t size,
                                       std::error_code& ec) noexcept {
  const ssize_t n = raw_send(data, size);
  if (n >= 0) return static_cast<std::size_t>(n);
  if (!is_transient(errno)) ec = errno_code(errno);
  return 0;
}

std::size_t StreamTransport::send_vector(const iovec* iov, std::size_t count,
                                         std::error_code& ec) noexcept {
  ssize_t n;
  if (is_socket_) {
    msghdr msg{};
    msg.msg_iov = const_cast<iovec*>(iov);
    msg.msg_iovlen = count;
    n = ::sendmsg(fd_, &msg, MSG_NOSIGNAL);
  } else {
    SigpipeSuppressor guard;
    n = ::writev(fd_, iov, static_cast<int>(count));
    guard.after_write(n < 0 && errno == EPIPE);
  }
  if (n >= 0) {
    loop_->stats().bytes_written += static_cast<std::size_t>(n);
    return static_cast<std::size_t>(n);
  }
  if (!is_transient(errno)) ec = errno_code(errno);
  return 0;
}

void StreamTransport::start_writer() noexcept {
  if (writer_) return;
  try {
    loop_->add_writer(fd_, [this] { on_writable(); });
    writer_ = true;
  } catch (const std::system_error& e) {
    force_close(e.code());
  } catch (...) {
    force_close(std::make_error_code(std::errc::not_enough_memory));
  }
}

void StreamTransport::drop_write() noexcept {
  // asyncio warns from the fifth write after the loss on; this warns on the fifth, then at
  // each power of two, so that a program stuck writing cannot flood the log.
  ++dropped_writes_;
  if (dropped_writes_ == dropped_writes_warning ||
      (dropped_writes_ > dropped_writes_warning &&
       (dropped_writes_ & (dropped_writes_ - 1)) == 0)) {
    log(LogLevel::warning, std::to_string(dropped_writes_) +
                               " writes dropped on a closed transport; stop writing once "
                               "is_closing() is true or connection_lost() was called");
  }
}

inline void StreamTransport::send_or_buffer(std::span<const std::byte> data) {
  if (data.empty()) return;
  if (closing_) [[unlikely]] {
    drop_write();
    return;
  }
  if (buffer_.empty()) [[likely]] {
    // The hot path: one send(), no allocation, no error_code unless it failed.
    const ssize_t n = raw_send(data.data(), data.size());
    if (static_cast<std::size_t>(n) == data.size()) [[likely]] return;
    write_rest(data, n);
    return;
  }
  write_rest(data, 0);
}

void StreamTransport::write(std::span<const std::byte> data) {
  if (cannot_write_) [[unlikely]] throw_cannot_write("write");  // a sendfile() sets it too
  send_or_buffer(data);
}

void StreamTransport::write_rest(std::span<const std::byte> data, ssize_t sent) {
  if (!buffer_.empty()) {
    buffer_.append(data.data(), data.size());  // behind what waits already
    maybe_pause_protocol();
    return;
  }
  if (sent < 0) {
    if (!is_transient(errno)) {
      force_close(errno_code(errno));
      return;
    }
    sent = 0;
  }
  buffer_.append(data.data() + sent, data.size() - static_cast<std::size_t>(sent));
  start_writer();
  maybe_pause_protocol();
}

void StreamTransport::writelines(std::span<const std::span<const std::byte>> buffers) {
  if (cannot_write_) throw_cannot_write("writelines");
  std::size_t total = 0;
  for (const auto& b : buffers) total += b.size();
  if (total == 0) return;
  if (closing_) {
    drop_write();
    return;
  }
  std::size_t skip = 0;  // bytes of `buffers` already sent
  if (buffer_.empty()) {
    iovec iov[max_iovecs];
    std::size_t count = 0;
    for (const auto& b : buffers) {
      if (b.empty()) continue;
      if (count == max_iovecs) break;
      iov[count].iov_base = const_cast<std::byte*>(b.data());
      iov[count].iov_len = b.size();
      ++count;
    }
    std::error_code ec;
    skip = send_vector(iov, count, ec);
    if (ec) {
      force_close(ec);
      return;
    }
    if (skip == total) return;
  }
  for (const auto& b : buffers) {
    if (skip >= b.size()) {
      skip -= b.size();
      continue;
    }
    buffer_.append(b.data() + skip, b.size() - skip);
    skip = 0;
  }
  start_writer();
  maybe_pause_protocol();
}

void StreamTransport::on_writable() noexcept {
  if (conn_lost_ || buffer_.empty()) {
    if (sendfile_ != nullptr) [[unlikely]] {
      sendfile_writable();
      return;
    }
    remove_writer();
    return;
  }
  std::error_code ec;
  const std::size_t n = send_some(buffer_.data(), buffer_.size(), ec);
  if (ec) {
    force_close(ec);
    return;
  }
  buffer_.consume(n);
  maybe_resume_protocol();  // may write, close or abort; with a sendfile(), may wake it instead
  if (conn_lost_ || !buffer_.empty()) return;
  if (sendfile_ != nullptr) [[unlikely]] {
    sendfile_writable();  // a native send waiting for the buffer starts now
    return;
  }
  remove_writer();
  if (closing_) {
    // close() was waiting for the buffer: the connection ends now (we are in a loop callback,
    // not inside a protocol call, so connection_lost() may run directly, as in asyncio).
    conn_lost_ = true;
    remove_reader();
    call_connection_lost({});
  } else if (eof_written_) {
    ::shutdown(fd_, SHUT_WR);  // a failure (the peer is gone) shows up on the read side
  }
}

void StreamTransport::write_eof() {
  if (kind_ == StreamKind::read_pipe) {
    throw InvalidStateError("write_eof() on a read pipe's transport: can_write_eof() is false");
  }
  if (sendfile_ != nullptr) throw_cannot_write("write_eof");
  if (closing_ || eof_written_) return;
  eof_written_ = true;
  cannot_write_ = true;
  if (kind_ == StreamKind::write_pipe) {
    close();  // a pipe's only way to signal the end: close it once the buffer is sent
  } else if (buffer_.empty()) {
    ::shutdown(fd_, SHUT_WR);
  }
}

// ---- Flow control --------------------------------------------------------------------------

void StreamTransport::maybe_pause_protocol() noexcept {
  if (buffer_.size() <= high_water_ || protocol_paused_) return;
  // A sendfile() fallback filled the buffer, not the protocol, which cannot write meanwhile: it
  // hears of the water marks when the sendfile ends (detach_sendfile()).
  if (sendfile_ != nullptr) return;
  protocol_paused_ = true;
  try {
    protocol_->pause_writing();
  } catch (...) {
    callback_failed("pause_writing");
  }
}

void StreamTransport::maybe_resume_protocol() noexcept {
  if (sendfile_ != nullptr) [[unlikely]] {
    // The sendfile() fallback waits for the low-water mark in the protocol's place.
    if (sendfile_->waiting && buffer_.size() <= low_water_) sendfile_->notify();
    return;
  }
  if (!protocol_paused_ || buffer_.size() > low_water_) return;
  protocol_paused_ = false;
  try {
    protocol_->resume_writing();
  } catch (...) {
    callback_failed("resume_writing");
  }
}

void StreamTransport::set_write_buffer_limits(std::optional<std::size_t> high,
                                              std::optional<std::size_t> low) {
  const WaterMarks marks = resolve_water_marks(high, low, default_high_water);
  high_water_ = marks.high;
  low_water_ = marks.low;
  maybe_pause_protocol();
}

// ---- sendfile() --------------------------------------------------------------------------

void StreamTransport::attach_sendfile(SendfileJob& job) {
  if (sendfile_ != nullptr) {
    throw InvalidStateError("sendfile: another sendfile is in progress on this transport; await "
                            "it first (asyncio raises RuntimeError)");
  }
  if (cannot_write_) throw_cannot_write("sendfile");
  if (closing_) throw InvalidStateError("sendfile: the transport is closing");
  sendfile_ = &job;
  job.host = this;
  cannot_write_ = true;  // write(), writelines() and write_eof() throw until the job ends
  // Nothing reaches the protocol meanwhile, so the peer cannot provoke it into writing
  // (asyncio's _sendfile_native pauses reading too).
  sendfile_paused_reading_ = is_reading();
  if (sendfile_paused_reading_) pause_reading();
}

void StreamTransport::drop_sendfile(std::error_code ec) noexcept {
  SendfileJob* job = std::exchange(sendfile_, nullptr);
  if (job == nullptr) return;
  cannot_write_ = kind_ == StreamKind::read_pipe || eof_written_;
  sendfile_paused_reading_ = false;  // the connection is ending: nothing to resume
  job->end(ec);
}

void StreamTransport::detach_sendfile() noexcept {
  SendfileJob* job = std::exchange(sendfile_, nullptr);
  if (job == nullptr) return;
  job->host = nullptr;
  job->native = false;
  job->waiting = false;
  cannot_write_ = kind_ == StreamKind::read_pipe || eof_written_;
  if (buffer_.empty()) remove_writer();  // a native send may have left it registered
  if (std::exchange(sendfile_paused_reading_, false)) {
    try {
      resume_reading();  // a no-op once closing
    } catch (const std::system_error& e) {
      force_close(e.code());
      return;
    } catch (...) {
      force_close(std::make_error_code(std::errc::not_enough_memory));
      return;
    }
  }
  // What the protocol missed while the job held the transport: the fallback's writes may have
  // crossed a water mark, or a buffer the protocol filled may have drained meanwhile.
  maybe_pause_protocol();
  maybe_resume_protocol();
}

bool StreamTransport::start_native_sendfile() {
  STRATA_ASSERT(sendfile_ != nullptr);
  if (!is_socket_) return false;  // a pipe: the fallback, through the buffer
  sendfile_->native = true;
  // Behind bytes the protocol wrote: on_writable() starts the send once they are out.
  if (buffer_.empty()) sendfile_step();
  return true;
}

void StreamTransport::sendfile_writable() noexcept {
  if (sendfile_->native) {
    sendfile_step();
  } else {
    remove_writer();  // the fallback writes through the buffer, which is empty
  }
}

void StreamTransport::sendfile_step() noexcept {
  SendfileJob& job = *sendfile_;
  STRATA_ASSERT(job.native && buffer_.empty());
  if (job.wake.done()) {
    // Its task was cancelled: not one more byte. The task lets go of the job when it resumes.
    job.native = false;
    remove_writer();
    return;
  }
  for (;;) {
    if (job.remaining == 0) break;
    auto offset = static_cast<off_t>(job.offset);
    const auto size = static_cast<std::size_t>(std::min(job.remaining, max_sendfile_call));
    ssize_t n;
    {
      // sendfile(2) has no MSG_NOSIGNAL: a broken connection would raise SIGPIPE.
      SigpipeSuppressor guard;
      n = ::sendfile(fd_, job.file_fd, &offset, size);
      guard.after_write(n < 0 && errno == EPIPE);
    }
    if (n > 0) {
      loop_->stats().bytes_written += static_cast<std::size_t>(n);
      job.offset += static_cast<std::uint64_t>(n);
      job.sent += static_cast<std::uint64_t>(n);
      job.remaining -= static_cast<std::uint64_t>(n);
      if (job.remaining == 0) break;
      // One call per writability event, as on_writable() sends the buffer: the next event
      // comes at once (level-triggered) if the socket can still take more.
      start_writer();
      return;
    }
    if (n == 0) {  // the file ends before offset + count: what there was is sent
      job.remaining = 0;
      break;
    }
    const int e = errno;
    if (e == EINTR) continue;
    if (e == EAGAIN || e == EWOULDBLOCK) {
      start_writer();
      return;
    }
    if (job.sent == 0 && is_sendfile_unavailable(e)) {
      job.unavailable = true;  // the fallback sends it, from the same offset
    } else if (is_file_error(e)) {
      job.file_error = errno_code(e);  // the connection stays open; the caller decides
    } else {
      force_close(errno_code(e));  // the socket's error: the connection ends, the job with it
      return;
    }
    break;
  }
  job.native = false;
  remove_writer();
  job.notify();
}

// ---- Protocol swap -------------------------------------------------------------------------

std::unique_ptr<BaseProtocol> StreamTransport::exchange_protocol(
    std::unique_ptr<BaseProtocol> protocol) {
  if (!protocol) throw std::invalid_argument("set_protocol: protocol must not be null");
  auto [plain, buffered] = classify(protocol.get());
  if (plain == nullptr && buffered == nullptr) {
    throw std::invalid_argument(
        "set_protocol: a stream transport needs a Protocol or a BufferedProtocol");
  }
  plain_ = plain;
  buffered_ = buffered;
  return std::exchange(protocol_, std::move(protocol));
}

void StreamTransport::set_protocol(std::unique_ptr<BaseProtocol> protocol) {
  // The old protocol may be the caller: destroy it in a later iteration.
  std::unique_ptr<BaseProtocol> old = exchange_protocol(std::move(protocol));
  loop_->call_soon([old = std::move(old)]() mutable { old.reset(); });
}

// An idle connection must cost at most 1 KiB of user-space memory in all: this object, its
// names, the loop's reader handle and descriptor entry, and the protocol.
static_assert(sizeof(StreamTransport) <= 256, "keep the per-connection footprint small");

}  // namespace

// ---- The internal interface --------------------------------------------------------------

Transport& make_stream_transport(EventLoop& loop, int fd, StreamKind kind,
                                 std::unique_ptr<BaseProtocol> protocol, Future<void> waiter,
                                 ConnectionTracker* tracker) {
  if (fd < 0) {
    throw std::invalid_argument("make_stream_transport: fd must be >= 0, got " +
                                std::to_string(fd));
  }
  if (!protocol) throw std::invalid_argument("make_stream_transport: protocol must not be null");
  if (dynamic_cast<Protocol*>(protocol.get()) == nullptr &&
      dynamic_cast<BufferedProtocol*>(protocol.get()) == nullptr) {
    throw std::invalid_argument(
        "make_stream_transport: a stream transport needs a Protocol or a BufferedProtocol");
  }
  auto transport = std::make_unique<StreamTransport>(loop, fd, kind, std::move(protocol),
                                                     std::move(waiter), tracker);
  try {
    transport->start();
  } catch (...) {
    transport->disown_descriptor();  // it stays the caller's
    throw;
  }
  return *transport.release();
}

void detach_tracker(Transport& transport) noexcept {
  static_cast<StreamTransport&>(transport).detach_tracker();
}

Coro<void> wait_connection_made(Future<void> waiter, Transport& transport) {
  try {
    co_await waiter;
  } catch (const CancelledError&) {
    // A cancelled waiter: the transport closes itself once connection_made() returned. A waiter
    // that completed first: the transport is open and alive (it is destroyed two iterations
    // after connection_made() at the earliest, and this task resumes in the next one).
    if (!waiter.cancelled()) transport.close();
    throw;
  }
}

Coro<Transport*> connect_stream(EventLoop& loop, int fd, StreamKind kind,
                                std::unique_ptr<BaseProtocol> protocol,
                                ConnectionTracker* tracker) {
  Future<void> waiter = loop.create_future<void>();
  Transport& transport =
      make_stream_transport(loop, fd, kind, std::move(protocol), waiter, tracker);
  Coro<void> wait = wait_connection_made(std::move(waiter), transport);
  co_await wait;
  co_return &transport;
}

}  // namespace strata::detail
