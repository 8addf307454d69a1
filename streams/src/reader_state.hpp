#pragma once
// The shared state behind StreamReader handles and their ReadOps.

#include <cstddef>
#include <exception>
#include <string>

#include "strata/core/detail/waiter_queue.hpp"
#include "strata/streams/stream_reader.hpp"

namespace strata::detail {

struct ReaderState {
  explicit ReaderState(std::size_t limit) noexcept : limit(limit) {}

  /// The unread bytes: data[head, size).
  std::string data;
  std::size_t head = 0;
  std::size_t limit;
  bool eof = false;
  bool paused = false;  // the transport was told pause_reading()
  std::exception_ptr exception;
  Transport* transport = nullptr;
  ReadOp* waiting = nullptr;  // the read a task waits in (woken or not), or null
  WaiterQueue queue;          // holds at most that read's Waiter

  std::size_t size() const noexcept { return data.size() - head; }
  std::string_view view() const noexcept { return std::string_view(data).substr(head); }

  /// Removes and returns the first @p n unread bytes (n <= size()).
  std::string take(std::size_t n);
  /// Resumes the transport once reads brought the buffer down to the limit.
  void maybe_resume_transport() noexcept;
  /// Wakes the waiting read if it can complete now.
  void wake_if_ready();
  /// A waiting read(-1) collects until EOF: it takes what is buffered now, so that the buffer
  /// never pauses the transport on its behalf. False when no such read waits.
  bool feed_read_to_eof();
};

}  // namespace strata::detail
