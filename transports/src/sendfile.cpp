// sendfile(): asyncio's loop.sendfile (base_events.sendfile, selector_events._sendfile_native,
// base_events._sendfile_fallback) over Strata's transports.
//
// Three ways, picked per transport:
// - A transport of this library (detail::SendfileHost) takes a SendfileJob that lives in this
//   coroutine's frame. The stream transport of a socket sends the file itself with sendfile(2),
//   from its own writability callback (stream_transport.cpp); this coroutine only waits for the
//   job's `wake` future.
// - The same transports, when they cannot splice (TLS, pipes, a file that sendfile(2) refuses):
//   the fallback here reads 64 KiB chunks with pread() and hands them to sendfile_write(); when
//   that says the write buffer is above the high-water mark, it sets the job `waiting` and the
//   transport completes `wake` once the buffer drained to the low-water mark (where it would
//   have called the protocol's resume_writing()).
// - Any other Transport: the same chunks through write(), and the buffer polled on a timer
//   while it is above the high-water mark. Without a hook in the Transport interface the only
//   other way to hear resume_writing() is to take the protocol's place (asyncio's
//   _SendfileFallbackProtocol), which a transport of one's own need not support
//   (exchange_protocol() may throw) and which a protocol can observe (get_protocol()).

#include "strata/transports/sendfile.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstddef>
#include <limits>
#include <memory>
#include <span>
#include <stdexcept>
#include <string>
#include <system_error>

#include "stream_transport.hpp"
#include "strata/core/errors.hpp"
#include "strata/core/event_loop.hpp"
#include "strata/core/future.hpp"
#include "strata/core/sleep.hpp"

namespace strata {

namespace {

constexpr std::size_t chunk_size = 64 * 1024;  // asyncio's fallback reads 256 KiB at most
constexpr std::uint64_t max_offset = static_cast<std::uint64_t>(std::numeric_limits<off_t>::max());
// How often the fallback looks at the buffer of a transport that cannot tell it: from 1 ms,
// doubling while nothing drains, to 50 ms.
constexpr Duration first_poll = std::chrono::milliseconds(1);
constexpr Duration last_poll = std::chrono::milliseconds(50);

std::string fd_text(int fd) { return "file_fd " + std::to_string(fd); }

const char* kind_of(mode_t mode) noexcept {
  if (S_ISFIFO(mode)) return "a pipe or FIFO";
  if (S_ISSOCK(mode)) return "a socket";
  if (S_ISDIR(mode)) return "a directory";
  if (S_ISCHR(mode)) return "a character device";
  if (S_ISBLK(mode)) return "a block device";
  return "not a regular file";
}

/// Throws unless @p fd is an open regular file, readable, and @p offset fits in an off_t;
/// returns the file's size.
std::uint64_t check_file(int fd, std::uint64_t offset) {
  if (fd < 0) {
    throw std::invalid_argument("sendfile: file_fd must be an open descriptor, got " +
                                std::to_string(fd));
  }
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    throw std::system_error(errno, std::system_category(), "sendfile: " + fd_text(fd));
  }
  if (!S_ISREG(st.st_mode)) {
    throw std::invalid_argument("sendfile: " + fd_text(fd) + " is " + kind_of(st.st_mode) +
                                ", not a regular file; read it and write() its bytes instead");
  }
  const int flags = ::fcntl(fd, F_GETFL);
  if (flags < 0) {
    throw std::system_error(errno, std::system_category(), "sendfile: " + fd_text(fd));
  }
  if ((flags & O_ACCMODE) == O_WRONLY || (flags & O_PATH) != 0) {
    throw std::system_error(EBADF, std::system_category(),
                            "sendfile: " + fd_text(fd) + " is not open for reading");
  }
  if (offset > max_offset) {
    throw std::invalid_argument("sendfile: offset must be at most 2^63 - 1, got " +
                                std::to_string(offset));
  }
  return static_cast<std::uint64_t>(st.st_size);
}

/// pread() of up to @p size bytes at @p offset: the bytes read, 0 at the end of the file.
std::size_t read_chunk(int fd, std::byte* buffer, std::size_t size, std::uint64_t offset) {
  for (;;) {
    const ssize_t n = ::pread(fd, buffer, size, static_cast<off_t>(offset));
    if (n >= 0) return static_cast<std::size_t>(n);
    if (errno != EINTR) {
      throw std::system_error(errno, std::system_category(),
                              "sendfile: reading " + fd_text(fd) + " at offset " +
                                  std::to_string(offset));
    }
  }
}

/// The connection ended (or was closed) before the file was sent.
[[noreturn]] void throw_lost(std::error_code ec, std::uint64_t sent, std::uint64_t count) {
  if (!ec) ec = std::make_error_code(std::errc::connection_aborted);
  throw std::system_error(ec, "sendfile: the connection was closed or lost after " +
                                  std::to_string(sent) + " of " + std::to_string(count) +
                                  " bytes of the file");
}

/// Lets the transport go of the job when sendfile() leaves, however it leaves (returns, throws,
/// is cancelled, or its frame is destroyed), unless the transport let go first: then the
/// transport may be gone already and is not touched.
class Attachment {
 public:
  explicit Attachment(detail::SendfileJob& job) noexcept : job_(job) {}
  Attachment(const Attachment&) = delete;
  Attachment& operator=(const Attachment&) = delete;
  ~Attachment() {
    if (job_.host != nullptr) job_.host->detach_sendfile();
  }

 private:
  detail::SendfileJob& job_;
};

/// sendfile() on a transport of this library.
Coro<std::uint64_t> send_on_host(Transport& transport, detail::SendfileHost& host, int file_fd,
                                 std::uint64_t offset, std::uint64_t count) {
  EventLoop& loop = transport.get_loop();
  detail::SendfileJob job;
  job.file_fd = file_fd;
  job.offset = offset;
  job.remaining = count;
  job.wake = loop.create_future<void>();
  host.attach_sendfile(job);  // throws when the transport cannot take it
  Attachment attachment(job);

  const bool native = host.start_native_sendfile();
  if (native) {
    co_await job.wake;  // done already when the socket took the whole file at once
    if (job.host == nullptr) throw_lost(job.error, job.sent, count);
    if (job.file_error) {
      throw std::system_error(job.file_error, "sendfile: sendfile(2) from " + fd_text(file_fd) +
                                                  " at offset " + std::to_string(job.offset));
    }
    if (!job.unavailable) co_return job.sent;
    // sendfile(2) refused this file before sending any of it: the fallback, from `offset`.
  }

  std::unique_ptr<std::byte[]> chunk(new std::byte[chunk_size]);
  std::uint64_t sent = 0;
  while (job.remaining != 0) {
    const auto want = static_cast<std::size_t>(std::min<std::uint64_t>(job.remaining, chunk_size));
    const std::size_t n = read_chunk(file_fd, chunk.get(), want, job.offset);
    if (n == 0) break;  // the file is shorter than offset + count
    const bool must_wait = host.sendfile_write(std::span<const std::byte>(chunk.get(), n));
    job.offset += n;
    job.remaining -= n;
    sent += n;
    if (job.host == nullptr) throw_lost(job.error, sent, count);  // the write ended it
    if (must_wait) {
      // Flow control: the transport completes `wake` at the low-water mark, or ends the job.
      job.wake = loop.create_future<void>();
      job.waiting = true;
      co_await job.wake;
      if (job.host == nullptr) throw_lost(job.error, sent, count);
    }
  }
  co_return sent;
}

/// Pauses reading for a scope, and resumes it after unless the transport is closing.
class ReadingPause {
 public:
  explicit ReadingPause(Transport& transport) : transport_(transport) {
    if (transport.is_reading()) {
      transport.pause_reading();
      paused_ = true;
    }
  }
  ReadingPause(const ReadingPause&) = delete;
  ReadingPause& operator=(const ReadingPause&) = delete;
  ~ReadingPause() {
    if (!paused_ || transport_.is_closing()) return;
    try {
      transport_.resume_reading();
    } catch (...) {
      // Nobody to throw to (this runs while unwinding too): the loop's handler hears of it.
      transport_.get_loop().call_exception_handler(
          {"sendfile: resume_reading() threw after the file was sent", std::current_exception(),
           "sendfile", {}});
    }
  }

 private:
  Transport& transport_;
  bool paused_ = false;
};

/// sendfile() on a transport that is not this library's: write() and polling.
Coro<std::uint64_t> send_polling(Transport& transport, int file_fd, std::uint64_t offset,
                                 std::uint64_t count) {
  std::unique_ptr<std::byte[]> chunk(new std::byte[chunk_size]);
  ReadingPause reading(transport);
  std::uint64_t sent = 0;
  while (sent < count) {
    const auto want = static_cast<std::size_t>(std::min<std::uint64_t>(count - sent, chunk_size));
    const std::size_t n = read_chunk(file_fd, chunk.get(), want, offset + sent);
    if (n == 0) break;
    transport.write(std::span<const std::byte>(chunk.get(), n));
    sent += n;
    if (transport.is_closing()) throw_lost({}, sent, count);
    if (transport.get_write_buffer_size() <= transport.get_write_buffer_limits().second) continue;
    // Above the high-water mark: wait until the buffer drained to the low-water mark.
    Duration delay = first_poll;
    for (;;) {
      auto pause = strata::sleep(delay);
      co_await pause;
      if (transport.is_closing()) throw_lost({}, sent, count);
      if (transport.get_write_buffer_size() <= transport.get_write_buffer_limits().first) break;
      delay = std::min(delay * 2, last_poll);
    }
  }
  co_return sent;
}

}  // namespace

Coro<std::uint64_t> sendfile(Transport& transport, int file_fd, std::uint64_t offset,
                             std::uint64_t count) {
  const std::uint64_t size = check_file(file_fd, offset);
  // Up to the end of the file as it is now: a file that grows meanwhile is not followed, and
  // the last sendfile(2) need not run into the end to learn of it. (One that shrinks ends the
  // send where it ends.)
  count = std::min(count, size > offset ? size - offset : 0);
  if (count == 0) co_return 0;
  if (transport.is_closing()) throw InvalidStateError("sendfile: the transport is closing");
  if (auto* host = dynamic_cast<detail::SendfileHost*>(&transport)) {
    auto op = send_on_host(transport, *host, file_fd, offset, count);
    co_return co_await op;
  }
  auto op = send_polling(transport, file_fd, offset, count);
  co_return co_await op;
}

}  // namespace strata
