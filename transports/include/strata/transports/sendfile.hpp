#pragma once
/// @file
/// sendfile(): sends part of a regular file over a stream transport (asyncio's
/// loop.sendfile), with sendfile(2) where the transport is a socket.

#include <cstdint>

#include "strata/core/coro.hpp"
#include "strata/transports/transport.hpp"

namespace strata {

/// Sends @p count bytes of the regular file @p file_fd, from @p offset on, over @p transport
/// (asyncio's loop.sendfile); returns how many were sent.
///
/// What the peer observes: the bytes the protocol wrote before the call, then the file's bytes
/// in order, then what is written after this returned. The file's bytes are read at explicit
/// offsets (sendfile(2) with an offset, pread()): the descriptor's own file offset is left as
/// it was, and @p file_fd stays the caller's (not closed).
///
/// How the bytes travel:
/// - A TCP or Unix stream socket's transport (create_connection, create_server, the Unix
///   variants, connect_accepted_socket): natively, with sendfile(2) from the file to the socket
///   once the transport's write buffer is empty, one call per writability event, never raising
///   SIGPIPE. The file's bytes never enter the write buffer, so get_write_buffer_size() stays 0
///   and the protocol hears no pause_writing() on their account, however slow the peer.
/// - Any other transport (TLS, a pipe, a transport of your own), or a file that sendfile(2)
///   refuses outright (EINVAL, ENOSYS, EOPNOTSUPP before any byte is sent): the file is read in
///   64 KiB chunks with pread() and write()n, and whenever get_write_buffer_size() is above the
///   high-water mark the next chunk waits until the buffer drained to the low-water mark. At
///   most the high-water mark plus one chunk (plus TLS framing) is buffered at a time. The
///   transports of this library wake the wait when their buffer drains; a transport of your own
///   is polled, every millisecond at first and at most every 50 ms.
/// - Either way the file is read on the loop's thread: sendfile(2) and pread() of a regular
///   file block while the pages come from the disk. That is fine for files in the page cache
///   and on local disks; for a cold file on slow storage, read it on an executor instead.
///
/// While this runs, on the transports of this library:
/// - write(), writelines() and write_eof() throw InvalidStateError ("... while a sendfile is in
///   progress", asyncio's RuntimeError), and so does a second sendfile(). (A transport of your
///   own is not guarded: do not write to it meanwhile.)
/// - Reading is paused, so that nothing reaches the protocol that it might answer; it is
///   resumed afterwards if it was on when this was called (asyncio does the same). The protocol
///   may resume reading itself meanwhile, but then it must not write in data_received().
/// - The protocol hears no pause_writing()/resume_writing() caused by the file's bytes; when
///   this returns, it hears whichever of them the state of the buffer calls for, as if it had
///   written the file itself.
///
/// Ending early:
/// - The connection is lost (the peer resets it, a send fails, abort()): the coroutine throws
///   std::system_error with the error that connection_lost() reports (abort():
///   std::errc::operation_canceled), and never hangs. connection_lost() is called once, as
///   always. (A transport of your own does not say why it closed: std::errc::connection_aborted
///   once its is_closing() turns true.)
/// - close() while this runs: sending stops where it is (the bytes already handed to the kernel
///   or the buffer still go out, then the connection closes as close() does, with
///   connection_lost() and no error), and the coroutine throws std::system_error with
///   std::errc::connection_aborted. close() does not wait for the rest of the file as it waits
///   for the write buffer: to close after the file, await this and then close().
/// - The file cannot be read (EIO): std::system_error with that error; the connection stays
///   open, with the file partly sent. The caller should usually close it.
/// - In each of these cases a prefix of the file (perhaps empty) has been sent: the stream is
///   not in a state the peer can parse, unless the protocol has a way to say so.
///
/// @param transport  a stream transport that can write; must stay alive until this finishes
/// (those of this library do: the loop keeps them alive until after connection_lost()).
/// @param file_fd  an open descriptor of a regular file, open for reading; must stay open
/// until this finishes.
/// @param offset  where in the file to start.
/// @param count  how many bytes to send; 0 returns 0 at once. A file that ends before
/// @p offset + @p count is sent up to its end, as it is when the call starts (a file growing
/// meanwhile is not followed; one shrinking ends the send early). asyncio's count=None:
/// pass UINT64_MAX.
/// @return the bytes sent: @p count, or fewer when the file is shorter (0 from an offset at or
/// past its end).
/// @throws std::invalid_argument  @p file_fd is negative or not a regular file (a pipe, a
/// socket, a directory, a device), or @p offset is beyond what off_t can hold. Nothing is sent.
/// The descriptor is checked first, even when @p count is 0.
/// @throws std::system_error  @p file_fd is not open (EBADF), or not open for reading (EBADF);
/// nothing is sent. Or, later, the connection was lost or closed, or the file could not be
/// read (see above).
/// @throws InvalidStateError  the transport is closing, cannot write (a read pipe, after
/// write_eof()), or already runs a sendfile(). Nothing is sent.
/// @par Thread safety  Loop thread only.
/// @par Cancellation  Not cancel-safe for the stream. Sending stops at once: no byte of the
/// file is handed on after the cancel (those already handed to the kernel, or on the fallback
/// to the write buffer, still go out). When the cancelled task resumes (the next iteration),
/// the transport can be written again, reading is resumed as above, and CancelledError
/// propagates. The connection stays open, its stream cut at an arbitrary point of the file:
/// usually the caller closes it.
Coro<std::uint64_t> sendfile(Transport& transport, int file_fd, std::uint64_t offset,
                             std::uint64_t count);

}  // namespace strata
