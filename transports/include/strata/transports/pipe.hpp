#pragma once
/// @file
/// connect_read_pipe and connect_write_pipe: a protocol over one end of a pipe, a FIFO, a
/// character device or a stream socket (asyncio's loop.connect_read_pipe and
/// loop.connect_write_pipe).
///
/// @par SIGPIPE
/// Writing to a pipe whose read end is closed raises SIGPIPE, which ends the process by
/// default. Strata does not change the process-wide disposition (Python sets SIGPIPE to
/// SIG_IGN at start-up; children started later inherit that, and a library should not decide
/// it for the program). Instead, each write to a write pipe blocks SIGPIPE in the loop's thread
/// for the duration of the write() call and, when the write failed with EPIPE, consumes the
/// SIGPIPE it raised before restoring the thread's signal mask. The protocol then sees
/// connection_lost(std::errc::broken_pipe); no signal handler runs and the process survives.
/// This costs three extra system calls per write to a pipe (sockets use send(MSG_NOSIGNAL) and
/// pay nothing, including a socket passed to connect_write_pipe). A SIGPIPE that was pending
/// already before the write is left pending.

#include <memory>
#include <utility>

#include "strata/core/coro.hpp"
#include "strata/transports/connection.hpp"
#include "strata/transports/protocol.hpp"
#include "strata/transports/protocol_factory.hpp"
#include "strata/transports/transport.hpp"

namespace strata {

namespace detail {
/// The untyped part of connect_read_pipe()/connect_write_pipe(); defined in src/pipe.cpp.
Coro<Transport*> connect_pipe(std::unique_ptr<BaseProtocol> protocol, int fd, bool write_end);
}  // namespace detail

/// Reads the pipe @p fd into the protocol that @p factory makes (asyncio's
/// loop.connect_read_pipe), on the running loop.
///
/// Makes the protocol, sets O_NONBLOCK on @p fd and takes ownership of it (the transport
/// closes it), then completes once the protocol's connection_made() has returned. The
/// protocol then receives data_received() (or get_buffer()/buffer_updated()) until the
/// writer closes its end: eof_received() (its result is ignored: a read pipe cannot stay
/// half-open), then connection_lost() with an empty error_code. The transport cannot write
/// (can_write_eof() is false; write() throws InvalidStateError); close() stops reading and
/// ends the connection; pause_reading() and resume_reading() work as on a socket.
/// get_extra_info("pipe") is @p fd while the transport is open.
///
/// @param factory  a callable returning std::unique_ptr<P>, P derived from Protocol or
/// BufferedProtocol; called once, on the loop's thread.
/// @param fd  a pipe, FIFO, character device or stream socket.
/// @return the transport and the protocol; see Connection for how long they stay valid.
/// @throws std::invalid_argument  @p fd is negative or not a pipe, FIFO, character device or
/// socket (then @p fd stays open and the caller's), or the factory returned null.
/// @throws std::system_error  fstat() or fcntl() failed on @p fd (e.g. bad_file_descriptor).
/// @throws what the factory or connection_made() threw (the transport is then aborted).
/// @par Thread safety  Loop thread only (needs a running loop).
/// @par Cancellation  Not cancel-safe for @p fd: cancelled while waiting for
/// connection_made(), the transport is closed, and @p fd with it; the protocol still sees
/// connection_made() then connection_lost().
template <ProtocolFactory F>
Coro<Connection<factory_protocol_t<F>>> connect_read_pipe(F factory, int fd) {
  using P = factory_protocol_t<F>;
  std::unique_ptr<P> protocol = factory();
  P* raw = protocol.get();
  Coro<Transport*> connect = detail::connect_pipe(std::move(protocol), fd, false);
  Transport* transport = co_await connect;
  Connection<P> connection{transport, raw};
  co_return connection;
}

/// Writes to the pipe @p fd from the protocol that @p factory makes (asyncio's
/// loop.connect_write_pipe), on the running loop.
///
/// As connect_read_pipe(), but the transport only writes: write() and writelines() never
/// block (what the pipe refuses is buffered, with pause_writing()/resume_writing() at the
/// water marks), and write_eof() or close() closes @p fd once the buffer is written, followed
/// by connection_lost() with an empty error_code. When the reading end closes, the transport
/// notices at once (for pipes, FIFOs and sockets): connection_lost() with an empty
/// error_code if nothing was buffered, std::errc::broken_pipe if data was lost. No signal is
/// raised (see SIGPIPE above). is_reading() is false and pause_reading() does nothing.
///
/// @param factory  as for connect_read_pipe(); the protocol receives no data.
/// @param fd  a pipe, FIFO, character device or stream socket.
/// @throws as connect_read_pipe().
/// @par Thread safety  Loop thread only (needs a running loop).
/// @par Cancellation  As connect_read_pipe(): not cancel-safe for @p fd, which is closed.
template <ProtocolFactory F>
Coro<Connection<factory_protocol_t<F>>> connect_write_pipe(F factory, int fd) {
  using P = factory_protocol_t<F>;
  std::unique_ptr<P> protocol = factory();
  P* raw = protocol.get();
  Coro<Transport*> connect = detail::connect_pipe(std::move(protocol), fd, true);
  Transport* transport = co_await connect;
  Connection<P> connection{transport, raw};
  co_return connection;
}

}  // namespace strata
