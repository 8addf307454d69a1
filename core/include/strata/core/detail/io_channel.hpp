#pragma once
/// @file
/// @cond INTERNAL
/// IoChannel: the loop's I/O interface for one connected stream descriptor, the one thing
/// both loops implement beneath the transports (DESIGN.md, "The two loops"). A transport is
/// written once against it: it asks for reads and hands over bytes to write; the loop decides
/// how. The selector loop waits for readiness and then calls recv()/send(); the proactor loop
/// starts the operations on io_uring (or Asio's reactor) and reports their completions.

#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <system_error>

namespace strata {
class EventLoop;
}

// The sanitizers intercept the C library's socket calls, not syscall(2): keep them there.
#if !defined(STRATA_LIBC_SOCKET_CALLS)
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define STRATA_LIBC_SOCKET_CALLS 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer) || \
    __has_feature(memory_sanitizer)
#define STRATA_LIBC_SOCKET_CALLS 1
#endif
#endif
#endif

namespace strata::detail {

/// What a channel reports to: its transport. Every call comes from a loop callback, never from
/// inside a call into the channel, and none comes after IoChannel::close().
class IoClient {
 public:
  /// Where the next read's bytes go: a BufferedProtocol's buffer, or empty for "the channel's
  /// own memory" (the bytes then reach read_done() there, valid during the call only). The
  /// selector loop asks right before it reads; the proactor loop reads into its own memory
  /// and asks once the bytes are there, to copy them. On a failure (a protocol that threw),
  /// the client ends the connection itself and returns empty.
  virtual std::span<std::byte> read_target() noexcept = 0;
  /// A read brought @p data (never empty), in read_target()'s memory or the channel's.
  virtual void read_done(std::span<const std::byte> data) noexcept = 0;
  /// Reading ended: the end of the stream (@p ec clear) or a failure. The channel reads no
  /// more. (Apart from read_done() so that the hot path carries no error code.)
  virtual void read_ended(std::error_code ec) noexcept = 0;
  /// The write buffer shrank (buffered() tells how far), or writing failed (@p ec set, the
  /// buffer is then dropped).
  virtual void write_done(std::error_code ec) noexcept = 0;
  /// A watch_writable() report: the descriptor may be written to (sendfile(2)).
  virtual void writable() noexcept {}
  /// A watch_readable() report: the descriptor is readable or has hung up (the write end of a
  /// pipe learns that the read end closed).
  virtual void readable() noexcept {}

 protected:
  ~IoClient() = default;
};

/// What kind of descriptor a channel drives.
enum class ChannelKind : unsigned char {
  socket,  ///< a connected stream socket: recv()/send() with MSG_NOSIGNAL
  pipe,    ///< a pipe, FIFO or character device: read()/write(), SIGPIPE suppressed
};

/// I/O on one descriptor, made by EventLoop::open_channel(). The channel owns the descriptor
/// from then on and closes it in close().
class IoChannel {
 public:
  /// Reads until stop_reading(), the end of the stream or a failure; each read reaches
  /// IoClient::read_done(). A no-op while reading.
  /// @throws std::system_error  the loop refused the descriptor (select: past FD_SETSIZE).
  virtual void start_reading() = 0;
  /// Stops reading. A read the proactor has already started completes, and its bytes are
  /// kept for the next start_reading(), which delivers them in a later callback.
  virtual void stop_reading() noexcept = 0;

  /// Whether reads go to IoClient::read_target() (a BufferedProtocol) rather than to the
  /// channel's memory; off at first. With it off, read_target() is never called.
  void set_client_buffers(bool on) noexcept { client_buffers_ = on; }

  /// Sends @p data: on the selector loop, at once as far as the kernel takes it; the rest is
  /// buffered and sent as the descriptor turns writable (write_done() reports progress).
  /// @return 0, or the errno value of a failure of the immediate send (then nothing was
  /// buffered). An int rather than a std::error_code: this is every request's path.
  ///
  /// The selector loop's common case (a socket, nothing buffered) is inline: one send() and
  /// no call through the vtable, as when the transports made the system calls themselves.
  int write(std::span<const std::byte> data) {
    if (direct_fd_ >= 0 && buffered_ == 0) [[likely]] {
      const ssize_t n = send_now(direct_fd_, data.data(), data.size());
      if (n > 0) *bytes_written_ += static_cast<std::size_t>(n);
      if (static_cast<std::size_t>(n) == data.size()) [[likely]] return 0;
      return write_rest(data, n);
    }
    return write_rest(data, 0);
  }
  /// write() of several buffers, as one gathering send where possible.
  virtual int writev(std::span<const std::span<const std::byte>> buffers) = 0;
  /// Bytes accepted by write() and not yet sent.
  std::size_t buffered() const noexcept { return buffered_; }
  /// Whether IoClient::write_done() must hear of every send that shrinks the buffer (on at
  /// first). Off, a channel may leave out the reports of sends that succeed: the client then
  /// waits for nothing (no flow-control pause, no close or shutdown waiting for the buffer).
  /// Failures are always reported. The proactor saves a trip through the ready queue per
  /// request with it; the client turns it on before it starts to wait, and a send is in
  /// flight whenever the buffer is not empty, so the report it waits for still comes.
  void report_sends(bool on) noexcept { report_sends_ = on; }
  /// Drops what is buffered (an abort). A send in flight on the proactor still completes; its
  /// report is swallowed.
  virtual void discard_writes() noexcept = 0;
  /// shutdown(SHUT_WR) on a socket once the buffer is empty; the caller checks that.
  virtual void shutdown_write() noexcept = 0;

  /// sendfile(2) of up to @p count bytes of @p file_fd from @p offset (advanced) to this
  /// socket, SIGPIPE suppressed: what it returned, errno set on -1. For the native path of
  /// strata::sendfile(), driven by watch_writable().
  virtual ssize_t send_file(int file_fd, std::uint64_t& offset, std::size_t count) noexcept = 0;

  /// Reports IoClient::writable() whenever the descriptor is writable, until turned off.
  virtual void watch_writable(bool on) = 0;
  /// Reports IoClient::readable() whenever the descriptor is readable, until turned off.
  virtual void watch_readable(bool on) = 0;

  /// The descriptor, or -1 after close() or release().
  virtual int fd() const noexcept = 0;

  /// Stops everything, closes the descriptor and frees the channel: the client hears nothing
  /// more. Memory that an operation in flight uses stays alive until the loop has its
  /// completion. IoChannelPtr calls it.
  virtual void close() noexcept = 0;
  /// As close(), but hands the descriptor back open instead (a failed transport start).
  virtual int release() noexcept = 0;

  virtual ~IoChannel() = default;

 protected:
  IoChannel() = default;
  IoChannel(const IoChannel&) = delete;

  /// write() past its inline part: @p sent bytes of @p data went already (-1: the send failed,
  /// errno tells why); buffers and sends the rest, or reports the failure as write() does.
  virtual int write_rest(std::span<const std::byte> data, ssize_t sent) = 0;

  /// send(MSG_NOSIGNAL) through syscall(2): glibc's send() is a cancellation point, which
  /// costs about 60 instructions per call in a threaded process; Strata never cancels threads.
  /// Sanitizer builds keep the wrapper, which the sanitizers intercept.
  static ssize_t send_now(int fd, const void* buf, std::size_t len) noexcept {
#if defined(STRATA_LIBC_SOCKET_CALLS) || !defined(SYS_sendto)
    return ::send(fd, buf, len, MSG_NOSIGNAL);
#else
    return ::syscall(SYS_sendto, fd, buf, len, MSG_NOSIGNAL, nullptr, 0);
#endif
  }

  int direct_fd_ = -1;  ///< the socket that write() sends to inline, or -1 (see write())
  std::size_t* bytes_written_ = nullptr;  ///< the loop's counter, with direct_fd_
  IoChannel& operator=(const IoChannel&) = delete;

  std::size_t buffered_ = 0;     ///< what buffered() reports; kept up to date by the channel
  bool client_buffers_ = false;  ///< see set_client_buffers()
  bool report_sends_ = true;     ///< see report_sends()
};

/// Owns a channel; destroying it closes the channel.
struct IoChannelDeleter {
  void operator()(IoChannel* channel) const noexcept;
};
/// An open channel.
using IoChannelPtr = std::unique_ptr<IoChannel, IoChannelDeleter>;

}  // namespace strata::detail
/// @endcond
