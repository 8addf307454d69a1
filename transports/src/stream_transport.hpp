#pragma once
// The selector transport of a connected stream descriptor (TCP or Unix socket, or one end of
// a pipe): the one implementation of strata::Transport that create_connection, create_server,
// the Unix variants and the pipe functions hand out.

#include <memory>

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
