// The readiness channel: IoChannel on add_reader()/add_writer() and non-blocking system calls.
// The selector loop's only channel; the proactor loop's for pipes (see proactor_event_loop.cpp).
//
// Costs, because this is the hot path of every server on the selector loop:
// - Reading: one recv() per readiness event into ONE thread-local buffer (a Protocol) or into
//   the protocol's own memory (a BufferedProtocol). No read after a short read: the loop is
//   level-triggered and reports the descriptor again. The reader stays registered while
//   reading, so a request costs no epoll_ctl.
// - Writing: with nothing buffered, write() sends on the spot (send with MSG_NOSIGNAL); only
//   what the kernel refuses is copied into a write buffer, allocated then and freed once it
//   drains. writev() is one sendmsg() over an iovec array.

#include "readiness_channel.hpp"

#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

#include <new>
#include <utility>

#include "channel_io.hpp"
#include "strata/core/detail/assert.hpp"
#include "strata/core/event_loop.hpp"

namespace strata::detail {

namespace {

constexpr std::size_t read_buffer_size = 64 * 1024;  // asyncio reads 256 KiB at a time
constexpr std::size_t max_iovecs = 64;                // per writev() system call

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
// (STRATA_LIBC_SOCKET_CALLS: see io_channel.hpp.)

inline ssize_t sys_recv(int fd, void* buf, std::size_t len) noexcept {
#if defined(STRATA_LIBC_SOCKET_CALLS) || !defined(SYS_recvfrom)
  return ::recv(fd, buf, len, 0);
#else
  return ::syscall(SYS_recvfrom, fd, buf, len, 0, nullptr, nullptr);
#endif
}

class ReadinessChannel final : public IoChannel {
 public:
  ReadinessChannel(EventLoop& loop, int fd, ChannelKind kind, IoClient& client,
                   IoWatchPtr watch) noexcept
      : loop_(&loop),
        client_(&client),
        watch_(std::move(watch)),
        fd_(fd),
        is_socket_(kind == ChannelKind::socket) {
    if (is_socket_) {
      direct_fd_ = fd;
      bytes_written_ = &loop.stats().bytes_written;
    }
  }
  ReadinessChannel(const ReadinessChannel&) = delete;
  ReadinessChannel& operator=(const ReadinessChannel&) = delete;
  ~ReadinessChannel() override = default;

  void start_reading() override {
    STRATA_ASSERT(!watch_read_);
    if (reader_) return;
    set_reader([this] { on_readable(); });
    reader_ = true;
  }
  void stop_reading() noexcept override {
    if (reader_ && !watch_read_) remove_reader();
  }

  int write_rest(std::span<const std::byte> data, ssize_t sent) override;
  int writev(std::span<const std::span<const std::byte>> buffers) override;
  /// Buffers @p buffers past their first @p skip bytes (sent already) and waits to write.
  int buffer_rest(std::span<const std::span<const std::byte>> buffers, std::size_t skip);
  void discard_writes() noexcept override {
    buffer_.clear();
    buffered_ = 0;
    if (!watch_write_) remove_writer();
  }
  void shutdown_write() noexcept override {
    if (is_socket_) ::shutdown(fd_, SHUT_WR);  // a failure (the peer is gone) shows on reads
  }

  void watch_writable(bool on) override {
    watch_write_ = on;
    if (on) {
      add_writer();
    } else if (buffer_.empty()) {
      remove_writer();
    }
  }
  void watch_readable(bool on) override {
    if (on) {
      if (reader_) return;
      set_reader([this] { client_->readable(); });
      reader_ = true;
      watch_read_ = true;
    } else if (watch_read_) {
      remove_reader();
      watch_read_ = false;
    }
  }

  ssize_t send_file(int file_fd, std::uint64_t& offset, std::size_t count) noexcept override {
    const ssize_t n = send_file_suppressed(fd_, file_fd, offset, count);
    if (n > 0) loop_->stats().bytes_written += static_cast<std::size_t>(n);
    return n;
  }

  int fd() const noexcept override { return fd_; }

  void close() noexcept override {
    const int fd = release();
    if (fd >= 0) ::close(fd);
  }
  int release() noexcept override {
    remove_reader();
    remove_writer();
    watch_.reset();  // before the caller closes the descriptor: a poll holds it open
    const int fd = fd_;
    delete this;
    return fd;
  }

 private:
  void on_readable() noexcept;
  void on_writable() noexcept;

  ssize_t raw_send(const std::byte* data, std::size_t size) noexcept {
    const ssize_t n = is_socket_ ? send_now(fd_, data, size) : pipe_write(data, size);
    if (n > 0) loop_->stats().bytes_written += static_cast<std::size_t>(n);
    return n;
  }
  /// write() to a pipe with SIGPIPE suppressed. Out of line: the socket path then saves no
  /// registers and keeps no signal set on its stack.
  [[gnu::noinline]] ssize_t pipe_write(const std::byte* data, std::size_t size) noexcept {
    SigpipeSuppressor guard;
    const ssize_t n = ::write(fd_, data, size);
    guard.after_write(n, size);
    return n;
  }

  void add_writer() {
    if (writer_) return;
    if (watch_) {
      watch_->set_writer([this] { on_writable(); });
    } else {
      loop_->add_writer(fd_, [this] { on_writable(); });
    }
    writer_ = true;
  }
  template <class F>
  void set_reader(F&& callback) {
    if (watch_) {
      watch_->set_reader(std::forward<F>(callback));
    } else {
      loop_->add_reader(fd_, std::forward<F>(callback));
    }
  }
  void remove_reader() noexcept {
    if (!reader_) return;
    reader_ = false;
    if (watch_) {
      watch_->clear_reader();
    } else {
      loop_->remove_reader(fd_);
    }
  }
  void remove_writer() noexcept {
    if (!writer_) return;
    writer_ = false;
    if (watch_) {
      watch_->clear_writer();
    } else {
      loop_->remove_writer(fd_);
    }
  }

  EventLoop* loop_;
  IoClient* client_;
  /// The proactor's readiness (poll operations); empty on the selector loop, whose own
  /// add_reader()/add_writer() are used directly.
  IoWatchPtr watch_;
  WriteBuffer buffer_;
  int fd_;
  bool is_socket_;
  bool reader_ = false;       // a reader is registered with the loop
  bool writer_ = false;       // a writer is registered with the loop
  bool watch_read_ = false;   // the reader reports readable() rather than reading
  bool watch_write_ = false;  // writable() is wanted while the buffer is empty
};

void ReadinessChannel::on_readable() noexcept {
  std::byte* buf;
  std::size_t size;
  if (client_buffers_) {
    const std::span<std::byte> target = client_->read_target();
    if (!reader_) return;  // the client failed and stopped reading
    buf = target.data();
    size = target.size();
    if (size == 0) {  // no memory of the client's this time: the channel's own
      buf = read_buffer();
      size = read_buffer_size;
    }
  } else {
    buf = read_buffer();
    size = read_buffer_size;
  }
  const ssize_t n = is_socket_ ? sys_recv(fd_, buf, size) : ::read(fd_, buf, size);
  if (n > 0) [[likely]] {
    loop_->stats().bytes_read += static_cast<std::size_t>(n);
    client_->read_done(std::span<const std::byte>(buf, static_cast<std::size_t>(n)));
    return;
  }
  if (n < 0 && is_transient(errno)) return;
  const std::error_code ec = n == 0 ? std::error_code() : errno_code(errno);
  remove_reader();  // the end of the stream, or a failure: nothing more to read
  client_->read_ended(ec);
}

int ReadinessChannel::write_rest(std::span<const std::byte> data, ssize_t sent) {
  if (!buffer_.empty()) {
    buffer_.append(data.data(), data.size());  // behind what waits already
    buffered_ = buffer_.size();
    return 0;
  }
  if (sent == 0 && !is_socket_) {  // a pipe: write() does not send inline
    sent = raw_send(data.data(), data.size());
    if (static_cast<std::size_t>(sent) == data.size()) return 0;
  }
  if (sent < 0) {
    if (!is_transient(errno)) return errno;
    sent = 0;
  }
  const std::span<const std::byte> one[] = {data};
  return buffer_rest(one, static_cast<std::size_t>(sent));
}

int ReadinessChannel::buffer_rest(std::span<const std::span<const std::byte>> buffers,
                                  std::size_t skip) {
  try {
    for (const auto& b : buffers) {
      if (skip >= b.size()) {
        skip -= b.size();
        continue;
      }
      buffer_.append(b.data() + skip, b.size() - skip);
      skip = 0;
    }
    buffered_ = buffer_.size();
    add_writer();
  } catch (const std::system_error& e) {
    discard_writes();
    return e.code().value() != 0 ? e.code().value() : ENOMEM;
  } catch (...) {
    discard_writes();
    return ENOMEM;
  }
  return 0;
}

int ReadinessChannel::writev(std::span<const std::span<const std::byte>> buffers) {
  std::size_t skip = 0;  // bytes of `buffers` already sent
  if (buffer_.empty()) {
    iovec iov[max_iovecs];
    std::size_t count = 0;
    std::size_t total = 0;
    std::size_t in_iov = 0;
    for (const auto& b : buffers) {
      total += b.size();
      if (b.empty() || count == max_iovecs) continue;
      iov[count].iov_base = const_cast<std::byte*>(b.data());
      iov[count].iov_len = b.size();
      in_iov += b.size();
      ++count;
    }
    ssize_t n;
    if (is_socket_) {
      msghdr msg{};
      msg.msg_iov = iov;
      msg.msg_iovlen = count;
      n = ::sendmsg(fd_, &msg, MSG_NOSIGNAL);
    } else {
      SigpipeSuppressor guard;
      n = ::writev(fd_, iov, static_cast<int>(count));
      guard.after_write(n, in_iov);
    }
    if (n < 0) {
      if (!is_transient(errno)) return errno;
      n = 0;
    }
    loop_->stats().bytes_written += static_cast<std::size_t>(n);
    skip = static_cast<std::size_t>(n);
    if (skip == total) return 0;
  }
  return buffer_rest(buffers, skip);
}

void ReadinessChannel::on_writable() noexcept {
  if (buffer_.empty()) {
    if (watch_write_) {
      client_->writable();
    } else {
      remove_writer();
    }
    return;
  }
  const ssize_t n = raw_send(buffer_.data(), buffer_.size());
  if (n < 0) {
    if (is_transient(errno)) return;
    const std::error_code ec = errno_code(errno);
    discard_writes();
    client_->write_done(ec);
    return;
  }
  buffer_.consume(static_cast<std::size_t>(n));
  buffered_ = buffer_.size();
  if (buffer_.empty() && !watch_write_) remove_writer();
  client_->write_done({});  // may close the channel: nothing after this
}

}  // namespace

IoChannelPtr make_readiness_channel(EventLoop& loop, int fd, ChannelKind kind, IoClient& client,
                                    IoWatchPtr watch) {
  return IoChannelPtr(new ReadinessChannel(loop, fd, kind, client, std::move(watch)));
}

void IoChannelDeleter::operator()(IoChannel* channel) const noexcept { channel->close(); }

}  // namespace strata::detail
