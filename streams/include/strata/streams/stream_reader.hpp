#pragma once
/// @file
/// StreamReader (asyncio.StreamReader): the coroutine face of a connection's incoming bytes,
/// and the errors of its reads.

#include <algorithm>
#include <coroutine>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <exception>
#include <memory>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "strata/core/async_generator.hpp"
#include "strata/core/detail/ref.hpp"
#include "strata/core/detail/waiter_queue.hpp"

namespace strata {

class Transport;

/// readexactly() or readuntil() met the end of the stream first (asyncio.IncompleteReadError).
/// partial() holds the bytes that were read (and are no longer in the reader).
class IncompleteReadError : public std::runtime_error {
 public:
  /// The bytes read before EOF, @p partial, and the count wanted, @p expected.
  IncompleteReadError(std::string partial, std::optional<std::size_t> expected);
  /// The bytes read before EOF (removed from the reader).
  const std::string& partial() const noexcept { return *partial_; }
  /// The bytes readexactly() wanted; std::nullopt for readuntil().
  std::optional<std::size_t> expected() const noexcept { return expected_; }

 private:
  std::shared_ptr<const std::string> partial_;  // copying an exception must not throw
  std::optional<std::size_t> expected_;
};

/// readuntil() found no separator within the reader's limit (asyncio.LimitOverrunError). The
/// data stays in the reader; consumed() says how much of it may be read safely.
class LimitOverrunError : public std::runtime_error {
 public:
  /// An overrun described by @p message; @p consumed bytes may be read safely.
  LimitOverrunError(const std::string& message, std::size_t consumed)
      : std::runtime_error(message), consumed_(consumed) {}
  /// The buffered bytes before the separator (or before where one could still begin):
  /// reading that many leaves any separator whole.
  std::size_t consumed() const noexcept { return consumed_; }

 private:
  std::size_t consumed_;
};

namespace detail {
struct ReaderState;
class ReadOp;
class ReadIntoOp;
class ReadViewOp;
class StreamProtocol;
class BufferedStreamProtocol;
}  // namespace detail

/// The incoming side of a stream connection (asyncio.StreamReader).
///
/// A handle: copies share one buffer. open_connection() and start_server() make readers fed
/// by their connection; a reader made here is fed by hand (feed_data(), feed_eof()), which
/// is what tests and parsers of in-memory data want.
///
/// Each read returns a std::string of bytes, except read_into(), which fills the caller's
/// buffer and returns a count (a loop that reads into one buffer allocates nothing per read),
/// and read_view(), which returns a view of the reader's own memory, valid until the next
/// read (no copy at all when the bytes are received straight into it).
/// A read that can complete from the buffer does so without suspending or allocating a
/// coroutine frame; otherwise the task waits for data. Only one task may wait at a time (as in
/// asyncio), and while it waits a read from another task throws InvalidStateError even if
/// data is buffered (so that the waiting read's data cannot be taken before it resumes). A
/// read cancelled while it waits consumes nothing: the next read gets the data. Reads are
/// awaitables that strata::timeout(), wait_for() and gather() accept.
///
/// Flow control: when more than 2 x limit() bytes are buffered, the transport stops reading
/// (pause_reading()); once reads bring the buffer down to limit() it reads again. A reader that
/// does not keep up stops the socket; it does not grow memory.
///
/// @par Thread safety  Loop thread only.
/// @par Cancellation  Every read is cancel-safe: a read cancelled while it waits (with
/// Task::cancel(), or by timeout() or wait_for()) throws CancelledError and consumes nothing,
/// not even the partial bytes it was waiting on (those read(-1) had collected go back to the
/// front of the buffer); the next read gets them all, in order. A read whose data arrived in
/// the loop iteration it is cancelled (woken, not yet resumed) leaves that data too. Only
/// lines() loses more: its generator ends (the bytes stay).
class StreamReader {
 public:
  /// The default limit(): 64 KiB, as asyncio's.
  static constexpr std::size_t default_limit = 64 * 1024;

  /// A reader with no transport, fed by feed_data() and feed_eof().
  /// @throws std::invalid_argument  @p limit is 0.
  explicit StreamReader(std::size_t limit = default_limit);

  // ---- Reading: each returns an awaitable of std::string ----------------------------------

  /// Up to @p n bytes: what is buffered, or, with nothing buffered, the next data to arrive;
  /// "" at EOF. @p n = -1 reads until EOF and returns everything; @p n = 0 returns "" at once.
  /// @throws  the exception set by set_exception() (the connection's error).
  /// @par Cancellation  Cancel-safe: consumes nothing (read(-1) gives back what it had
  /// collected); see the class.
  detail::ReadOp read(std::ptrdiff_t n = -1);
  /// One line, ending in "\n"; at EOF the last, unterminated bytes (or "").
  /// @throws std::length_error  the line is longer than limit(): the line (or what was
  /// buffered of it) is dropped, as asyncio's readline() does (it raises ValueError).
  /// @par Cancellation  Cancel-safe: the partial line stays in the buffer.
  detail::ReadOp readline();
  /// Exactly @p n bytes.
  /// @throws IncompleteReadError  EOF came first; partial() holds what was there.
  /// @par Cancellation  Cancel-safe: a cancelled readexactly consumes nothing; the bytes
  /// already buffered stay for the next read.
  detail::ReadOp readexactly(std::size_t n);
  /// The bytes up to and including @p separator.
  /// @throws IncompleteReadError  EOF came first (partial(): everything that was buffered).
  /// @throws LimitOverrunError  no separator within limit() bytes; the data stays.
  /// @throws std::invalid_argument  an empty separator.
  /// @par Cancellation  Cancel-safe: the bytes before the separator (or part of one) stay.
  detail::ReadOp readuntil(std::string separator = "\n");
  /// The bytes up to and including the first match of any of @p separators: the match that
  /// ends first wins, and of matches that end at the same place the shortest (asyncio 3.13).
  /// @throws as readuntil(separator); std::invalid_argument for no or an empty separator.
  /// @par Cancellation  As readuntil(separator): cancel-safe.
  detail::ReadOp readuntil(std::vector<std::string> separators);

  // ---- Reading into the caller's buffer: each returns an awaitable of std::size_t ----------

  /// read(buffer.size()) into @p buffer: up to buffer.size() bytes, what is buffered or, with
  /// nothing buffered, the next data to arrive (which goes straight from the transport into
  /// @p buffer); the count, 0 at EOF or for an empty @p buffer. @p buffer must stay valid
  /// until the read completes.
  /// @throws  the exception set by set_exception() (the connection's error).
  /// @par Cancellation  Cancel-safe: consumes nothing (bytes already copied into @p buffer go
  /// back to the front of the reader); see the class.
  detail::ReadIntoOp read_into(std::span<std::byte> buffer);
  /// read_into() of a span of chars.
  detail::ReadIntoOp read_into(std::span<char> buffer);
  /// read(@p n) into @p buffer, whose contents it replaces and whose capacity it reuses: a loop
  /// that reads into one string allocates only when a read is larger than every one before it,
  /// and a connection that has sent nothing holds no buffer. Returns buffer.size(): 0 at EOF
  /// or for @p n = 0. @p buffer must stay valid until the read completes.
  /// @throws  the exception set by set_exception() (the connection's error).
  /// @par Cancellation  Cancel-safe: consumes nothing (what was appended to @p buffer goes
  /// back to the front of the reader; @p buffer is left empty); see the class.
  detail::ReadIntoOp read_into(std::string& buffer, std::size_t n = default_limit);

  // ---- Reading without a copy: an awaitable of std::string_view -----------------------------

  /// The most bytes one read_view() returns.
  static constexpr std::size_t max_view = 64 * 1024;

  /// read(min(@p n, max_view)), returned as a view of memory that the reader keeps for it: no
  /// string is made, and when the task waits for the bytes, a selector loop's socket receives
  /// them straight into that memory, so they are never copied. "" at EOF or for @p n = 0.
  ///
  /// The view is valid until the next read from this reader (of any kind) starts, that is,
  /// until it is awaited, or until the reader is gone. A handler that keeps the bytes longer
  /// copies them.
  ///
  /// The memory is one block that the reader keeps for its views and reuses: 4 KiB, or as
  /// much as the bytes there are to view need, up to 64 KiB; on the selector loop it doubles
  /// after a receive fills it and halves after one that brings a quarter or less. A reader
  /// holds none before its first read_view(), keeps it while it waits for the next bytes (a
  /// connection that has read a view holds its block while idle), and gives it back (to a
  /// per-thread cache) when a read of another kind starts.
  /// @throws  the exception set by set_exception() (the connection's error).
  /// @par Cancellation  Cancel-safe, as read_into(): the bytes stay for the next read.
  detail::ReadViewOp read_view(std::size_t n = max_view);

  /// The lines until EOF, as readline() reads them (asyncio's `async for line in reader`).
  /// @par Cancellation  Cancel-safe for the data, not for the iteration: a cancelled next()
  /// consumes nothing (the partial line stays in the reader), but the CancelledError ends the
  /// generator, so later next() calls return std::nullopt, where asyncio's `async for` would go
  /// on. Read on with readline() or a new lines().
  AsyncGenerator<std::string> lines();

  /// Whether the buffer is empty and EOF was fed.
  bool at_eof() const noexcept;
  /// Bytes buffered and not yet read.
  std::size_t buffered() const noexcept;
  /// The buffer limit: the longest line or readuntil() match, and the flow-control unit.
  std::size_t limit() const noexcept;

  // ---- Feeding ----------------------------------------------------------------------------

  /// Appends @p data and wakes a waiting read that it completes.
  /// @throws InvalidStateError  after feed_eof().
  void feed_data(std::span<const std::byte> data);
  /// feed_data() of the bytes of @p data.
  void feed_data(std::string_view data);
  /// Marks the end of the stream; a waiting read completes (with what there is).
  void feed_eof();
  /// Makes every later read, and the waiting one, throw @p error (the connection's error).
  void set_exception(std::exception_ptr error);
  /// The exception set, or null.
  std::exception_ptr exception() const noexcept;
  /// Whether an exception is set (exception() without copying it).
  bool has_exception() const noexcept;  // defined below ReaderState
  /// The transport to pause and resume for flow control; asyncio's set_transport().
  /// @throws InvalidStateError  a transport is set already.
  void set_transport(Transport& transport);
  /// Forgets the transport (the connection is gone).
  void clear_transport() noexcept;

 private:
  friend class detail::ReadOp;
  friend class detail::StreamProtocol;
  friend class detail::BufferedStreamProtocol;
  /// feed_data(); with @p resume_now (the connection's data_received), a read_into() that the
  /// bytes complete resumes its task inside this call (Waiter::wake_now()), not on the next
  /// loop iteration.
  void feed(std::string_view data, bool resume_now);
  /// feed_data() past its fast path.
  void feed_more(std::string_view data);
  detail::Ref<detail::ReaderState> state_;  // loop-thread count: no atomic per read
};

namespace detail {

/// The shared state behind StreamReader handles and their ReadOps. Counted by Ref<> (loop
/// thread only, no atomics: a read takes a reference without a locked instruction).
struct ReaderState {
  explicit ReaderState(std::size_t limit) noexcept : limit(limit) {}
  ReaderState(const ReaderState&) = delete;
  ReaderState& operator=(const ReaderState&) = delete;
  ~ReaderState() { release_view(); }

  void add_ref() noexcept { ++refs; }
  void release() noexcept {
    if (--refs == 0) delete this;
  }

  /// The unread bytes: data[head, size).
  std::string data;
  std::size_t head = 0;
  std::size_t limit;
  std::size_t refs = 0;
  bool eof = false;
  bool paused = false;  // the transport was told pause_reading()
  std::exception_ptr exception;
  Transport* transport = nullptr;
  ReadOp* waiting = nullptr;           // the read a task waits in (woken or not), or null
  ReadIntoOp* waiting_into = nullptr;  // or the read_into() it waits in
  WaiterQueue queue;                   // holds at most that read's Waiter
  /// read_view()'s memory, kept from one view to the next (see read_view()), or null.
  std::byte* view_block = nullptr;
  std::uint8_t view_block_class = 0;  // its size: view_block_size(class)
  std::uint8_t view_class = 0;        // the class the next view wants (follows the reads)

  /// The size of a view block of @p cls (0 to view_classes - 1): 4 KiB to 64 KiB.
  static constexpr std::size_t view_classes = 5;
  static constexpr std::size_t view_block_size(std::size_t cls) noexcept {
    return std::size_t{4 * 1024} << cls;
  }
  /// What a read other than read_view() does when it is awaited: the view block goes back to
  /// the per-thread cache, unless a read_view() waits (the block is then that read's).
  void release_view() noexcept {
    if (view_block != nullptr) release_view_block();
  }
  /// The memory for a read_view() of at least @p at_least bytes (at most max_view): the block
  /// kept, when it is of the class wanted and holds that many; its size in @p size. May throw
  /// std::bad_alloc.
  std::byte* view_memory(std::size_t at_least, std::size_t& size) {
    if (view_block != nullptr && view_block_class == view_class &&
        view_block_size(view_class) >= at_least) [[likely]] {
      size = view_block_size(view_class);
      return view_block;
    }
    return new_view_block(at_least, size);
  }
  /// After @p got bytes were received straight into the view block: the class of the next
  /// block follows, doubling after a full block, halving after a quarter or less.
  void note_view_fill(std::size_t got) noexcept {
    const std::size_t size = view_block_size(view_block_class);
    if (got == size) [[unlikely]] {
      if (view_class + 1u < view_classes) ++view_class;
    } else if (got <= size / 4 && view_class > 0) [[unlikely]] {
      --view_class;
    }
  }

  /// Whether a task waits in a read (of either kind).
  bool has_waiter() const noexcept { return waiting != nullptr || waiting_into != nullptr; }

  std::size_t size() const noexcept { return data.size() - head; }
  std::string_view view() const noexcept { return std::string_view(data).substr(head); }

  /// Removes and returns the first @p n unread bytes (n <= size()).
  std::string take(std::size_t n);
  /// Moves the first @p n unread bytes to @p out (n <= size()), appending to what it holds.
  void take_into(char* out, std::size_t n) noexcept;
  /// Appends the first @p n unread bytes to @p out (n <= size()).
  void take_into(std::string& out, std::size_t n);
  /// Puts @p bytes back before the unread bytes (a read that took them consumed nothing).
  void give_back(std::string_view bytes);
  /// What a read does before it waits: refuses to wait beside another read
  /// (InvalidStateError), and resumes a transport its buffer paused.
  void before_wait();
  void release_view_block() noexcept;
  /// view_memory() past its fast path: a block of the class wanted, at least @p at_least.
  std::byte* new_view_block(std::size_t at_least, std::size_t& size);
  /// Resumes the transport once reads brought the buffer down to the limit.
  void maybe_resume_transport() noexcept;
  /// Wakes the waiting read if it can complete now.
  void wake_if_ready();
  /// A waiting read(-1) collects until EOF: it takes what is buffered now, so that the buffer
  /// never pauses the transport on its behalf. False when no such read waits.
  bool feed_read_to_eof();
};

/// The awaitable of one StreamReader read. Completes at once when the buffer allows it.
class [[nodiscard]] ReadOp {
 public:
  enum class Kind : unsigned char { read, readline, readexactly, readuntil };

  ReadOp(Ref<ReaderState> state, Kind kind, std::ptrdiff_t n,
         std::vector<std::string> separators) noexcept;
  using await_result_type = std::string;  // for timeout(), wait_for(), gather()...
  /// What a task dump calls this await.
  static constexpr const char* await_name = "StreamReader read";

  ReadOp(const ReadOp&) = delete;
  ReadOp& operator=(const ReadOp&) = delete;
  /// Moves a read that has not started waiting (as the combinators do before awaiting it).
  ReadOp(ReadOp&& other) noexcept;
  ReadOp& operator=(ReadOp&&) = delete;
  ~ReadOp();

  bool await_ready();
  void await_suspend(std::coroutine_handle<> h);
  std::string await_resume();

  /// Whether the read can complete now (data enough, a separator, EOF, an error or the limit
  /// passed): what feed_data() asks before it wakes the waiting task.
  bool can_complete() const noexcept;

 private:
  friend struct ReaderState;
  /// Where readuntil()'s separator search starts: the bytes before cannot hold a match.
  std::size_t search_start() const noexcept;
  /// The first match of the separators at or after search_start(): {start, end}, or npos.
  std::pair<std::size_t, std::size_t> find_separator() const noexcept;
  std::string complete();
  std::string complete_readuntil();

  Ref<ReaderState> state_;
  std::vector<std::string> separators_;
  std::string accumulated_;  // read(-1): what was taken from the buffer while waiting
  std::ptrdiff_t n_;
  mutable std::size_t searched_ = 0;  // readuntil(): bytes already scanned without a match
  Kind kind_;
  bool waiting_ = false;
  Waiter waiter_;
};

/// The awaitable of one StreamReader::read_into(): the count read. Completes at once when the
/// buffer allows it; while it waits, arriving data is copied straight into the caller's buffer
/// (by StreamReader::feed_data()). The common paths are inline: a read that waits for the next data and
/// gets it straight costs a park and a step, no call into the library on resumption. Also the
/// base of ReadViewOp, whose "caller's buffer" is a view block of the reader's, taken when the
/// first byte needs it.
class [[nodiscard]] ReadIntoOp {
 public:
  using await_result_type = std::size_t;  // for timeout(), wait_for(), gather()...
  /// What a task dump calls this await.
  static constexpr const char* await_name = "StreamReader read_into";

  ReadIntoOp(const ReadIntoOp&) = delete;
  ReadIntoOp& operator=(const ReadIntoOp&) = delete;
  /// Moves a read that has not started waiting (as the combinators do before awaiting it).
  ReadIntoOp(ReadIntoOp&& other) noexcept
      : state_(std::move(other.state_)),
        into_(other.into_),
        into_string_(other.into_string_),
        n_(other.n_),
        view_(other.view_) {}
  ReadIntoOp& operator=(ReadIntoOp&&) = delete;
  [[gnu::always_inline]] ~ReadIntoOp() {
    if (waiting_) abandon();
  }

  bool await_ready() noexcept {
    ReaderState& st = *state_;
    if (!view_) st.release_view();  // a read of another kind starts: the view block goes
    if (st.has_waiter()) return false;  // another task waits: await_suspend() refuses
    return n_ == 0 || st.size() > 0 || st.eof || st.exception;
  }
  void await_suspend(std::coroutine_handle<> h) {
    ReaderState& st = *state_;
    TaskCore* task = TaskCore::current();
    // Outside a task, beside another read, or with the transport paused: the checked path.
    if (task == nullptr || st.has_waiter() || st.paused) [[unlikely]] {
      suspend_checked(h);
      return;
    }
    // One waiter at most: the task parks on this read's node, no queue needed.
    task->park(waiter_, h);
    st.waiting_into = this;
    waiting_ = true;
  }
  std::size_t await_resume() {
    if (waiting_) {
      // Woken, with no cancel to deliver: the wait just ends. Otherwise end_wait() throws.
      if (waiter_.woken() && !TaskCore::current()->cancel_pending()) [[likely]] {
        waiting_ = false;
        state_->waiting_into = nullptr;
      } else {
        end_wait();
      }
    }
    const ReaderState& st = *state_;
    // Woken by data copied straight in, nothing more buffered: the count is the answer.
    if (st.size() == 0 && !st.exception) return filled();
    return complete();
  }

 private:
  friend class strata::StreamReader;
  friend struct ReaderState;
  friend class ReadViewOp;
  friend class BufferedStreamProtocol;
  ReadIntoOp(Ref<ReaderState> state, char* fixed, std::string* growing, std::size_t n,
             bool view = false) noexcept
      : state_(std::move(state)), into_(fixed), into_string_(growing), n_(n), view_(view) {}

  /// await_suspend() with its checks: refuses outside a task or beside another read, resumes
  /// a transport the buffer paused.
  void suspend_checked(std::coroutine_handle<> h);
  /// The bytes in the caller's buffer.
  std::size_t filled() const noexcept {
    return into_string_ != nullptr ? into_string_->size() : filled_;
  }
  /// Room left in the caller's buffer.
  std::size_t room() const noexcept { return n_ - filled(); }
  /// Appends @p bytes (no more than room()) to the caller's buffer.
  void fill(std::string_view bytes) {
    if (into_string_ != nullptr) {
      into_string_->append(bytes);
      return;
    }
    if (view_ && into_ == nullptr) take_view_block(bytes.size());
    std::memcpy(into_ + filled_, bytes.data(), bytes.size());
    filled_ += bytes.size();
  }
  /// read_view(): its memory, the reader's view block, of at least @p at_least bytes (at most
  /// n_); n_ becomes no more than the block holds.
  void take_view_block(std::size_t at_least) {
    std::size_t size = 0;
    into_ = reinterpret_cast<char*>(state_->view_memory(at_least, size));
    n_ = std::min(n_, size);
  }
  /// Tops the caller's buffer up from the reader's, or throws the connection's error.
  std::size_t complete();
  /// After the wait: unlinks it; throws CancelledError (giving the bytes back) if cancelled.
  void end_wait();
  /// Destroyed while waiting (its task was destroyed): gives the bytes back.
  void abandon() noexcept;
  /// Puts what it filled back at the front of the reader (the read consumes nothing).
  void give_back_filled();

  Ref<ReaderState> state_;
  char* into_;                // a span's bytes, the view block, or null
  std::string* into_string_;  // the string, or null
  std::size_t n_;             // the most bytes to read
  std::size_t filled_ = 0;    // a span or view: bytes filled
  bool view_;                 // read_view(): into_ is the reader's view block, once taken
  bool waiting_ = false;
  Waiter waiter_;
};

/// The awaitable of one StreamReader::read_view(): a view of the bytes read, in the reader's
/// view block (see read_view()).
class [[nodiscard]] ReadViewOp : public ReadIntoOp {
 public:
  using await_result_type = std::string_view;  // for timeout(), wait_for(), gather()...
  /// What a task dump calls this await.
  static constexpr const char* await_name = "StreamReader read_view";

  std::string_view await_resume() {
    const std::size_t n = ReadIntoOp::await_resume();
    return {into_, n};
  }

 private:
  friend class strata::StreamReader;
  ReadViewOp(Ref<ReaderState> state, std::size_t n) noexcept
      : ReadIntoOp(std::move(state), nullptr, nullptr, n, /*view=*/true) {}
};

}  // namespace detail

inline bool StreamReader::has_exception() const noexcept { return state_->exception != nullptr; }

inline detail::ReadIntoOp StreamReader::read_into(std::span<std::byte> buffer) {
  return {state_, reinterpret_cast<char*>(buffer.data()), nullptr, buffer.size()};
}

inline detail::ReadIntoOp StreamReader::read_into(std::span<char> buffer) {
  return {state_, buffer.data(), nullptr, buffer.size()};
}

inline detail::ReadIntoOp StreamReader::read_into(std::string& buffer, std::size_t n) {
  buffer.clear();
  return {state_, nullptr, &buffer, n};
}

inline detail::ReadViewOp StreamReader::read_view(std::size_t n) {
  return detail::ReadViewOp(state_, std::min(n, max_view));
}

}  // namespace strata
