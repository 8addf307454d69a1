#pragma once
/// @file
/// StreamWriter (asyncio.StreamWriter): the coroutine face of a connection's outgoing bytes.

#include <any>
#include <coroutine>
#include <cstddef>
#include <memory>
#include <optional>
#include <span>
#include <string_view>
#include <system_error>

#include "strata/core/coro.hpp"
#include "strata/core/detail/ref.hpp"
#include "strata/core/detail/waiter_queue.hpp"
#include "strata/streams/stream_reader.hpp"
#include "strata/transports/ssl.hpp"
#include "strata/transports/transport.hpp"

namespace strata {

class StreamWriter;

namespace detail {

/// The state one stream connection shares between its protocol (fed by the transport), its
/// StreamReader and its StreamWriter handles (asyncio's StreamReaderProtocol, whose
/// FlowControlMixin holds the drain waiters). Counted by Ref<> (loop thread only).
struct StreamConnection {
  StreamConnection(EventLoop& loop, std::size_t limit) : loop(&loop), reader(limit) {}
  StreamConnection(const StreamConnection&) = delete;
  StreamConnection& operator=(const StreamConnection&) = delete;

  /// A new connection state of @p loop whose reader has @p limit.
  static Ref<StreamConnection> make(EventLoop& loop, std::size_t limit) {
    return Ref<StreamConnection>(new StreamConnection(loop, limit));
  }
  void add_ref() noexcept { ++refs; }
  void release() noexcept {
    if (--refs == 0) delete this;
  }

  EventLoop* loop;
  Transport* transport = nullptr;  // null before connection_made() and after connection_lost()
  StreamReader reader;
  std::error_code lost_error;  // the error that ended the connection, if any
  std::size_t refs = 0;
  bool made = false;           // connection_made() was called (once, or again by start_tls)
  bool lost = false;           // connection_lost() was called
  bool write_paused = false;   // between pause_writing() and resume_writing()
  bool over_warning = false;   // the buffer is above the forgotten-drain threshold
  bool warned = false;         // the forgotten-drain warning was logged
  WaiterQueue drain_waiters;
  WaiterQueue close_waiters;

  /// The error drain() and wait_closed() report for a lost connection, or null.
  std::exception_ptr lost_exception() const;
};

class DrainOp;
StreamWriter make_writer(Ref<StreamConnection> connection) noexcept;
}  // namespace detail

/// The outgoing side of a stream connection (asyncio.StreamWriter).
///
/// A handle: copies write to the same connection. write() never blocks and never suspends;
/// what the socket does not take is buffered by the transport. drain() is how a writer
/// respects the peer's pace: it waits while the transport is above its high-water mark.
/// send() writes and drains in one step, and only waits when the buffer is over the mark;
/// a writer that lets its buffer grow past 16 x the high-water mark without draining gets one
/// warning in the log naming the connection (in debug mode: each time it crosses it).
///
/// @par Lifetime  The connection stays open until close(), the peer's end, or an error; the
/// handle may outlive it (its writes are then dropped, drain() throws).
/// @par Thread safety  Loop thread only.
class StreamWriter {
 public:
  /// Queues @p data (see Transport::write()).
  /// @throws InvalidStateError  after write_eof().
  void write(std::span<const std::byte> data);
  /// write() of the bytes of @p data.
  void write(std::string_view data);
  /// write() of several buffers at once (one system call when nothing is queued).
  void writelines(std::span<const std::span<const std::byte>> buffers);

  /// Waits until the transport's buffer is down to its low-water mark, if it is above the
  /// high-water mark; returns at once otherwise (no suspension, no allocation). On a closing
  /// connection it yields one loop iteration first (asyncio's sleep(0)), so that a
  /// write-and-drain loop lets the connection end and then throws.
  /// @throws std::system_error  the connection was lost with an error (its error_code), or was
  /// lost before this drain() (std::errc::connection_reset, asyncio's "Connection lost"). A
  /// drain already waiting when the connection ends cleanly returns normally, as asyncio's.
  /// @throws  the reader's exception, as asyncio does.
  /// @par Cancellation  Cancel-safe: only the wait is undone; the buffered bytes are still
  /// sent, and the connection is unchanged. Several tasks may wait in drain(); cancelling one
  /// does not affect the others.
  detail::DrainOp drain();
  /// write(@p data), then drain() only if the buffer is above the high-water mark: the one
  /// call a loop that produces data needs, and the cure for the forgotten drain().
  /// @par Cancellation  Cancel-safe: @p data is written when send() is called (even if the
  /// result is never awaited), so a cancelled send() has still queued all of it, and it is
  /// sent; only the drain is undone. Do not send it again.
  detail::DrainOp send(std::span<const std::byte> data);
  /// send() of the bytes of @p data.
  detail::DrainOp send(std::string_view data);

  /// Closes the sending side once the buffer is sent (Transport::write_eof()); a no-op once
  /// the connection is gone.
  /// @throws InvalidStateError  !can_write_eof() (a TLS connection).
  void write_eof();
  /// Whether write_eof() is supported: false for TLS, and once the connection is gone.
  bool can_write_eof() const noexcept;
  /// Closes the connection once the buffer is sent. Idempotent.
  void close();
  /// Whether the connection is closing or gone (close(), the peer's end, an error).
  bool is_closing() const noexcept;
  /// Waits until the connection is closed (connection_lost()); returns at once if it is.
  /// @throws std::system_error  the connection ended with an error (e.g. reset by the peer).
  /// @par Cancellation  Cancel-safe: only the wait is undone; the connection is unchanged.
  Coro<void> wait_closed();

  /// Transport::get_extra_info() of the connection ("peername", "sockname", "socket", and
  /// the TLS keys); empty once the connection is gone.
  std::any get_extra_info(std::string_view name) const;
  /// get_extra_info(@p name) as a T; std::nullopt when absent or of another type.
  template <class T>
  std::optional<T> get_extra_info_as(std::string_view name) const {
    std::any value = get_extra_info(name);
    if (T* p = std::any_cast<T>(&value)) return std::move(*p);
    return std::nullopt;
  }

  /// Upgrades the connection to TLS (asyncio's StreamWriter.start_tls()): the reader and this
  /// writer then carry plaintext over TLS. Data already buffered in the reader was received
  /// before the upgrade and stays readable.
  /// @throws as strata::start_tls().
  /// @par Cancellation  Not cancel-safe: cancelled while it drains the writer first, it
  /// changes nothing; cancelled during the handshake, the connection is aborted (as
  /// strata::start_tls()): the reader ends with the connection's error.
  Coro<void> start_tls(SslOptions ssl, bool server_side = false);

  /// The transport; valid while the connection is open (until connection_lost()).
  /// @throws InvalidStateError  the connection is gone.
  Transport& transport() const;

 private:
  friend StreamWriter detail::make_writer(detail::Ref<detail::StreamConnection>) noexcept;
  explicit StreamWriter(detail::Ref<detail::StreamConnection> connection) noexcept
      : connection_(std::move(connection)) {}
  detail::Ref<detail::StreamConnection> connection_;
};

namespace detail {

/// The awaitable of drain() and send(): ready at once unless the transport is paused.
class [[nodiscard]] DrainOp {
 public:
  using await_result_type = void;  // for timeout(), wait_for(), gather()...
  /// What a task dump calls this await.
  static constexpr const char* await_name = "StreamWriter drain";

  explicit DrainOp(Ref<StreamConnection> connection) noexcept
      : connection_(std::move(connection)) {}
  DrainOp(const DrainOp&) = delete;
  DrainOp& operator=(const DrainOp&) = delete;
  /// Moves a drain that has not started waiting (as the combinators do before awaiting it).
  DrainOp(DrainOp&& other) noexcept : connection_(std::move(other.connection_)) {}
  DrainOp& operator=(DrainOp&&) = delete;

  bool await_ready() {
    const StreamConnection& c = *connection_;
    if (c.lost || c.reader.has_exception()) return true;
    clear_ = !c.write_paused && !c.transport->is_closing();
    return clear_;
  }
  void await_suspend(std::coroutine_handle<> h);
  void await_resume();

 private:
  Ref<StreamConnection> connection_;
  bool waiting_ = false;
  bool yielding_ = false;  // the connection is closing: one loop iteration, as asyncio's sleep(0)
  bool clear_ = false;     // await_ready() saw no pause, no closing and no error
  Waiter waiter_;
};

}  // namespace detail
}  // namespace strata
