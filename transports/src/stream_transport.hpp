#pragma once
// The selector transport of a connected stream descriptor (TCP or Unix socket, or one end of
// a pipe): the one implementation of strata::Transport that create_connection, create_server,
// the Unix variants and the pipe functions hand out.

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <system_error>

#include "strata/core/coro.hpp"
#include "strata/core/event_loop.hpp"
#include "strata/core/future.hpp"
#include "strata/transports/transport.hpp"

namespace strata::detail {

/// What the descriptor is: decides recv/send versus read/write, and what is allowed.
enum class StreamKind {
  socket,      ///< a connected stream socket: reads, writes, write_eof via shutdown(SHUT_WR)
  read_pipe,   ///< the read end of a pipe or FIFO: no writes
  write_pipe,  ///< the write end of a pipe or FIFO: no reads; write_eof closes it
};

// ---- sendfile() ----------------------------------------------------------------------------
//
// What strata::sendfile() (src/sendfile.cpp) and the transports of this library share. (It
// would sit best in a private header of its own; it lives here because the TLS transport
// includes this header anyway.)

class SendfileHost;

/// One sendfile() in progress: the state that sendfile() shares with the transport it drives.
///
/// It lives in sendfile()'s coroutine frame. The transport points to it from attach_sendfile()
/// until detach_sendfile(), or until the connection ends first (close(), abort(), an error, the
/// loop closing): then the transport lets go of it by itself, sets `host` to null and `error`,
/// and never touches it again. So `host != nullptr` tells sendfile() that the transport is still
/// alive (it is destroyed only in a later iteration, after connection_lost()).
struct SendfileJob {
  int file_fd = -1;
  std::uint64_t offset = 0;     ///< the file position of the next byte to send
  std::uint64_t remaining = 0;  ///< bytes still to send
  std::uint64_t sent = 0;       ///< bytes of the file the native path has sent
  /// Completed by the transport when sendfile() has something to look at: the native send
  /// ended (or cannot go on), the write buffer drained to the low-water mark (`waiting`), or
  /// the connection ended. sendfile() makes a fresh one before each wait, and cancels it by
  /// being cancelled: a transport seeing it done sends nothing more.
  Future<void> wake;
  SendfileHost* host = nullptr;  ///< the transport, while it holds the job
  std::error_code error;         ///< why the transport let go of the job (the connection ended)
  std::error_code file_error;    ///< sendfile(2) failed on the file's side (EIO, ...)
  bool native = false;       ///< the transport sends the file with sendfile(2) itself
  bool unavailable = false;  ///< sendfile(2) refused the file before sending any of it
  bool waiting = false;      ///< complete `wake` once the write buffer is at the low-water mark

  /// Completes `wake` if it is still pending. A loop that refuses the callback (closed) leaves
  /// it pending: its task is destroyed with the loop anyway.
  void notify() noexcept {
    waiting = false;
    if (!wake.valid() || wake.done()) return;
    try {
      wake.set_result();
    } catch (...) {
    }
  }
  /// For the transport: the connection ended with @p ec; let go of the job.
  void end(std::error_code ec) noexcept {
    host = nullptr;
    native = false;
    error = ec;
    notify();
  }
};

/// A transport that sendfile() drives through a SendfileJob: the stream transport (natively on
/// a socket, with the fallback on a pipe) and the TLS transport (the fallback). Any other
/// Transport gets the fallback that polls its write buffer.
class SendfileHost {
 public:
  /// Takes @p job: from now until detach_sendfile() (or the connection ends), write(),
  /// writelines() and write_eof() throw InvalidStateError, the protocol hears no
  /// pause_writing()/resume_writing() (the fallback's writes are not its own), and reading is
  /// paused if it was on.
  /// @throws InvalidStateError  another sendfile is in progress; the transport cannot write
  /// (a read pipe, after write_eof()) or is closing.
  virtual void attach_sendfile(SendfileJob& job) = 0;
  /// Lets go of the job (sendfile() finished, failed or was cancelled): write() works again,
  /// reading resumes if attach_sendfile() paused it, and the protocol hears pause_writing() or
  /// resume_writing() if the write buffer crossed a water mark meanwhile. A no-op without a job.
  virtual void detach_sendfile() noexcept = 0;
  /// Starts sending the job's file with sendfile(2): now when the write buffer is empty, else
  /// once it drained. Completes `wake` when the file is sent, when sendfile(2) cannot go on
  /// (`unavailable`, `file_error`), or ends the job when the connection ends.
  /// @return false (and nothing started) when this transport cannot: not a socket.
  virtual bool start_native_sendfile() = 0;
  /// write() for the fallback of the attached job, past the guard that makes write() throw.
  /// @return whether the fallback must wait before the next chunk: set `waiting` and await a
  /// fresh `wake`. True when the write buffer is above the high-water mark (`wake` completes
  /// at the low-water mark), or when the connection is going down and the transport will end
  /// the job with its error in a later iteration.
  virtual bool sendfile_write(std::span<const std::byte> data) = 0;

 protected:
  ~SendfileHost() = default;
};

/// Told when a transport it serves comes and goes: how a Server counts its connections for
/// wait_closed(), close_clients() and abort_clients().
class ConnectionTracker {
 public:
  /// The transport was made (before connection_made()).
  virtual void connection_opened(Transport& transport) noexcept = 0;
  /// connection_lost() has returned; @p transport is destroyed soon after.
  virtual void connection_closed(Transport& transport) noexcept = 0;

 protected:
  ~ConnectionTracker() = default;
};

/// Makes the transport of @p fd and hands it @p protocol (a Protocol or a BufferedProtocol).
///
/// Takes ownership of @p fd, which must be open and non-blocking; if this throws, @p fd stays
/// open and the caller's. Schedules connection_made() for the next iteration (call_soon), then
/// starts reading (the descriptor is registered with the loop here, so that a refusal throws
/// here; no read happens before connection_made()). Completes @p waiter (if not empty) once
/// connection_made() returned, or fails it with what connection_made() threw (the transport is
/// then aborted: connection_lost(strata::errc::callback_failed) follows, and the exception goes
/// to the waiter instead of the loop's exception handler). If @p waiter was cancelled by then,
/// the transport closes itself after connection_made(). The loop keeps the transport alive until
/// after connection_lost(); @p tracker, if given, is told when it opens and closes and must
/// outlive it or be detached with detach_tracker().
///
/// A socket's peer and socket names are read here (getpeername/getsockname), and a TCP socket
/// gets TCP_NODELAY (asyncio's _set_nodelay). If the loop closes before connection_made() ran,
/// the protocol hears nothing (no connection_lost()), and @p waiter is cancelled.
///
/// @throws std::invalid_argument  @p fd is negative, or @p protocol is null or of the wrong kind.
/// @throws std::system_error, std::invalid_argument  the loop refused the descriptor.
Transport& make_stream_transport(EventLoop& loop, int fd, StreamKind kind,
                                 std::unique_ptr<BaseProtocol> protocol,
                                 Future<void> waiter = {},
                                 ConnectionTracker* tracker = nullptr);

/// Forgets @p transport's tracker (a Server being destroyed before its connections).
/// @p transport must come from make_stream_transport().
void detach_tracker(Transport& transport) noexcept;

/// Waits for the @p waiter given to make_stream_transport() for @p transport: returns once
/// connection_made() has returned, throws what it threw. If the awaiting task is cancelled,
/// the transport is closed (asyncio: `except: transport.close(); raise`).
Coro<void> wait_connection_made(Future<void> waiter, Transport& transport);

/// make_stream_transport() with a waiter, then waits until connection_made() has returned:
/// what create_connection, connect_accepted_socket and the pipe functions share.
///
/// Throws what connection_made() threw (the transport is then aborted). If the awaiting task
/// is cancelled, the transport is closed (asyncio: `except: transport.close(); raise`).
/// @throws as make_stream_transport(); then @p fd stays the caller's.
Coro<Transport*> connect_stream(EventLoop& loop, int fd, StreamKind kind,
                                std::unique_ptr<BaseProtocol> protocol,
                                ConnectionTracker* tracker = nullptr);

}  // namespace strata::detail
