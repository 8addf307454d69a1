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

/// Write-buffer blocks of block_size bytes that one loop's channels share (the proactor's, whose
/// every write goes through a buffer): a buffer that drains gives its block back, and the next
/// write on any connection takes it again, so that a busy connection allocates nothing per
/// write and an idle one holds no block. Up to max_blocks wait here; more are freed. One
/// thread's: the loop's.
class BlockCache {
 public:
  static constexpr std::size_t block_size = 4 * 1024;
  static constexpr std::size_t max_blocks = 64;

  BlockCache() noexcept = default;
  BlockCache(const BlockCache&) = delete;
  BlockCache& operator=(const BlockCache&) = delete;
  ~BlockCache() {
    for (std::size_t i = 0; i != count_; ++i) delete[] blocks_[i];
  }

  /// A block of block_size bytes: a cached one, or a new one (may throw std::bad_alloc).
  std::byte* take() {
    if (count_ == 0) return new std::byte[block_size];
    return blocks_[--count_];
  }
  /// Takes back a block that take() gave.
  void give(std::byte* block) noexcept {
    if (count_ == max_blocks) {
      delete[] block;
    } else {
      blocks_[count_++] = block;
    }
  }

 private:
  std::byte* blocks_[max_blocks] = {};
  std::size_t count_ = 0;
};

/// Bytes the kernel has not taken yet, contiguous so that one send() flushes them. Storage is
/// allocated on the first append and freed when the buffer drains, so an idle connection owns
/// none. Appending compacts (memmove) only when that leaves a quarter of the capacity free, and
/// otherwise doubles: amortised O(1) per byte. With a BlockCache (use_cache()), storage of the
/// first size comes from the cache and goes back to it.
class WriteBuffer {
 public:
  static constexpr std::size_t min_capacity = BlockCache::block_size;  ///< the first allocation

  WriteBuffer() noexcept = default;
  WriteBuffer(const WriteBuffer&) = delete;
  WriteBuffer& operator=(const WriteBuffer&) = delete;
  ~WriteBuffer() {
    if (!borrowed_) delete[] data_;  // (not to the cache: a loop may be going)
  }

  /// Exchanges the contents (and storage) of two buffers.
  void swap(WriteBuffer& other) noexcept {
    std::swap(data_, other.data_);
    std::swap(cap_, other.cap_);
    std::swap(head_, other.head_);
    std::swap(tail_, other.tail_);
    std::swap(cache_, other.cache_);
    std::swap(borrowed_, other.borrowed_);
  }

  /// Holds the @p n bytes at @p p, which it does not own, in place of storage of its own (the
  /// buffer is empty before): they are sent from where they are, and the owner keeps them
  /// until the buffer is empty again (or appended to: append() copies them first).
  void borrow(const std::byte* p, std::size_t n) noexcept {
    data_ = const_cast<std::byte*>(p);  // never written through: append() copies first
    cap_ = tail_ = n;
    head_ = 0;
    borrowed_ = true;
  }

  std::size_t size() const noexcept { return tail_ - head_; }
  bool empty() const noexcept { return tail_ == head_; }
  const std::byte* data() const noexcept { return data_ + head_; }

  void append(const std::byte* p, std::size_t n) {
    if (n == 0) return;  // (an empty buffer has no storage: memcpy to null is undefined)
    if (cap_ - tail_ < n) make_room(n);
    std::memcpy(data_ + tail_, p, n);
    tail_ += n;
  }

  /// Drops the first @p n bytes (sent); once empty, lets go of the storage.
  void consume(std::size_t n) noexcept {
    head_ += n;
    if (head_ == tail_) clear();
  }

  /// Takes storage of min_capacity from @p cache, and gives it back there, from now on: for
  /// buffers that every write goes through (the proactor's). None by default.
  void use_cache(BlockCache* cache) noexcept { cache_ = cache; }

  void clear() noexcept {
    release_storage();
    data_ = nullptr;
    cap_ = head_ = tail_ = 0;
  }

 private:
  void release_storage() noexcept {
    if (borrowed_) {
      borrowed_ = false;  // the owner's
    } else if (cache_ != nullptr && cap_ == min_capacity) {
      cache_->give(data_);
    } else {
      delete[] data_;
    }
  }

  void make_room(std::size_t n) {
    if (data_ == nullptr && cache_ != nullptr && n <= min_capacity) {  // a quiet buffer's first
      data_ = cache_->take();
      cap_ = min_capacity;
      return;
    }
    const std::size_t used = size();
    if (data_ != nullptr && !borrowed_ && used + n <= cap_ - cap_ / 4) {
      std::memmove(data_, data_ + head_, used);
    } else {
      // Never min_capacity with a cache: a buffer without storage took the cache's block
      // above, and one with storage has min_capacity at least, so this is twice that.
      const std::size_t cap = std::max({cap_ * 2, used + n, min_capacity});
      auto* fresh = new std::byte[cap];
      if (used != 0) std::memcpy(fresh, data_ + head_, used);
      release_storage();
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
  BlockCache* cache_ = nullptr;
  bool borrowed_ = false;  // data_ is someone else's (borrow())
};

// ---- SIGPIPE on pipes ----

// Writing to a pipe whose read end is closed raises SIGPIPE, whose default action ends the
// process; send(MSG_NOSIGNAL) avoids it for sockets, but write() has no such flag. Rather than
// changing the process-wide disposition (Python sets SIG_IGN at start-up, which every child
// process then inherits), a write to a pipe blocks SIGPIPE in the calling thread for the
// duration of the call and, if the write may have raised it, consumes the signal (sigtimedwait
// with a zero timeout) before restoring the mask. It may have when the write failed with
// EPIPE, and also when it wrote less than asked: the reader can go in the middle of a write,
// and the kernel then raises SIGPIPE and returns what it wrote before. A SIGPIPE that was
// already pending is left alone: the kernel merges ours into it. Cost: three extra system
// calls per write to a pipe (sigpending, two pthread_sigmask), a fourth after a short one;
// sockets never pay it, but for sendfile(2), which has no MSG_NOSIGNAL.
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

  /// After a write of @p asked bytes that returned @p n: consumes the SIGPIPE that it raised,
  /// if it may have (see above). Keeps errno.
  void after_write(ssize_t n, std::size_t asked) noexcept {
    const bool may_have_raised = n < 0 ? errno == EPIPE : static_cast<std::size_t>(n) < asked;
    if (!may_have_raised || was_pending_) return;
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
  guard.after_write(n, count);
  if (n > 0) offset += static_cast<std::uint64_t>(n);
  return n;
}

}  // namespace strata::detail
