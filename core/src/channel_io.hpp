#pragma once
// The pieces of a channel's I/O that both loops' channels share: the write buffer, the
// suppression of SIGPIPE around a write to a pipe, and what errno values mean.

#include <signal.h>
#include <pthread.h>
#include <sys/sendfile.h>
#include <time.h>

#include <algorithm>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <system_error>
#include <utility>

namespace strata::detail {

inline std::error_code errno_code(int e) noexcept { return {e, std::system_category()}; }

/// Whether a failed read or write only means "not now".
inline bool is_transient(int e) noexcept { return e == EAGAIN || e == EWOULDBLOCK || e == EINTR; }

/// Bytes the kernel has not taken yet, contiguous so that one send() flushes them. Storage is
/// allocated on the first append and freed when the buffer drains, so an idle connection owns
/// none. Appending compacts (memmove) only when that leaves a quarter of the capacity free, and
/// otherwise doubles: amortised O(1) per byte.
class WriteBuffer {
 public:
  static constexpr std::size_t min_capacity = 4 * 1024;  ///< the first allocation

  WriteBuffer() noexcept = default;
  WriteBuffer(const WriteBuffer&) = delete;
  WriteBuffer& operator=(const WriteBuffer&) = delete;
  ~WriteBuffer() { delete[] data_; }

  /// Exchanges the contents (and storage) of two buffers.
  void swap(WriteBuffer& other) noexcept {
    std::swap(data_, other.data_);
    std::swap(cap_, other.cap_);
    std::swap(head_, other.head_);
    std::swap(tail_, other.tail_);
    std::swap(keep_, other.keep_);
  }

  std::size_t size() const noexcept { return tail_ - head_; }
  bool empty() const noexcept { return tail_ == head_; }
  const std::byte* data() const noexcept { return data_ + head_; }

  void append(const std::byte* p, std::size_t n) {
    if (cap_ - tail_ < n) make_room(n);
    std::memcpy(data_ + tail_, p, n);
    tail_ += n;
  }

  /// Drops the first @p n bytes (sent); once empty, frees the storage, unless it is no larger
  /// than keep_storage() asks.
  void consume(std::size_t n) noexcept {
    head_ += n;
    if (head_ != tail_) return;
    if (cap_ <= keep_) {
      head_ = tail_ = 0;
    } else {
      clear();
    }
  }

  /// Keeps storage of up to @p bytes when the buffer drains, rather than allocating it again for
  /// the next write: for a buffer that every write goes through (the proactor's). 0 by default.
  void keep_storage(std::size_t bytes) noexcept { keep_ = bytes; }

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
      const std::size_t cap = std::max({cap_ * 2, used + n, min_capacity});
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
  std::size_t keep_ = 0;
};

// ---- SIGPIPE on pipes ----

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

/// sendfile(2) with SIGPIPE suppressed (it has no MSG_NOSIGNAL): IoChannel::send_file().
inline ssize_t send_file_suppressed(int socket_fd, int file_fd, std::uint64_t& offset,
                                    std::size_t count) noexcept {
  auto off = static_cast<off_t>(offset);
  SigpipeSuppressor guard;
  const ssize_t n = ::sendfile(socket_fd, file_fd, &off, count);
  guard.after_write(n < 0 && errno == EPIPE);
  if (n > 0) offset += static_cast<std::uint64_t>(n);
  return n;
}

}  // namespace strata::detail
