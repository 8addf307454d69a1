#pragma once
/// @file
/// The transport interfaces (asyncio.BaseTransport, Transport, DatagramTransport): what a
/// protocol calls to write, close and control the flow of its connection.

#include <any>
#include <cstddef>
#include <memory>
#include <optional>
#include <span>
#include <string_view>
#include <utility>

#include "strata/core/socket_address.hpp"
#include "strata/transports/protocol.hpp"

namespace strata {

class EventLoop;

/// What every transport does: close, report, and swap its protocol.
///
/// @par Thread safety  Loop thread only.
/// @par Lifetime  The loop keeps an open transport alive, and the transport owns its
/// protocol. Both are destroyed in a loop iteration after connection_lost() returned, so a
/// protocol may call close() or abort() from inside its own callbacks. Closing the loop
/// aborts the transports still open (connection_lost(strata::errc::loop_closed)). An
/// exception escaping a protocol callback goes to the loop's exception handler and aborts the
/// connection (connection_lost(strata::errc::callback_failed)).
class BaseTransport {
 public:
  BaseTransport(const BaseTransport&) = delete;
  BaseTransport& operator=(const BaseTransport&) = delete;

  /// Closes the transport: sends what is buffered, then ends the connection and calls
  /// connection_lost() with an empty error_code. Idempotent.
  virtual void close() = 0;
  /// Whether close() or abort() was called, or the connection was lost.
  virtual bool is_closing() const noexcept = 0;

  /// Optional information about the transport (asyncio's get_extra_info), or an empty
  /// std::any: "peername" and "sockname" (SocketAddress), "socket" (int: the socket's
  /// descriptor, still owned by the transport), "pipe" (int: the pipe's descriptor).
  virtual std::any get_extra_info(std::string_view name) const = 0;

  /// get_extra_info(name) as a T, or std::nullopt when absent or of another type.
  template <class T>
  std::optional<T> get_extra_info_as(std::string_view name) const {
    std::any value = get_extra_info(name);
    if (T* p = std::any_cast<T>(&value)) return std::move(*p);
    return std::nullopt;
  }

  /// The loop the transport runs on.
  virtual EventLoop& get_loop() const noexcept = 0;

 protected:
  BaseTransport() = default;
  ~BaseTransport() = default;
};

/// A bidirectional stream (TCP, Unix socket, pipe): asyncio's Transport.
///
/// Writes never block and never raise SIGPIPE: what the kernel does not take now is
/// buffered and sent when the socket is writable. A send or receive error ends the
/// connection: connection_lost(ec), once.
///
/// A read pipe's transport cannot be written (write() throws InvalidStateError) and a write
/// pipe's does not read (pause_reading() and resume_reading() do nothing, is_reading() is
/// false).
class Transport : public BaseTransport {
 public:
  // ---- Writing ---------------------------------------------------------------------------

  /// Queues @p data for sending; never blocks and never suspends.
  ///
  /// The bytes are copied (or sent) before this returns. A send error is not reported here:
  /// the transport closes and the protocol's connection_lost(ec) reports it, once. Crossing
  /// the high-water mark calls pause_writing() before this returns. After close(), or once
  /// the connection is lost, the data is dropped (asyncio logs a warning after a few).
  /// @param data  bytes to send; an empty span is a no-op.
  /// @throws InvalidStateError  write_eof() was called earlier, or this is a read pipe.
  virtual void write(std::span<const std::byte> data) = 0;
  /// write() of the bytes of @p data.
  void write(std::string_view data) { write(std::as_bytes(std::span(data.data(), data.size()))); }

  /// write() of several buffers at once, in one scatter-gather system call when the buffer
  /// is empty.
  virtual void writelines(std::span<const std::span<const std::byte>> buffers) = 0;

  /// Closes the sending side once the buffer is sent (shutdown(SHUT_WR)); reading goes on.
  /// @throws InvalidStateError  !can_write_eof().
  virtual void write_eof() = 0;
  /// Whether write_eof() is supported (sockets and write pipes: true).
  virtual bool can_write_eof() const noexcept = 0;

  /// Ends the connection now, dropping the buffer: connection_lost(std::errc::operation_canceled)
  /// follows in a later iteration. Idempotent.
  virtual void abort() = 0;

  /// Bytes queued and not yet taken by the kernel.
  virtual std::size_t get_write_buffer_size() const noexcept = 0;
  /// The water marks that drive pause_writing()/resume_writing(); defaults 64 KiB and 16 KiB.
  /// When only @p high is given, low is high / 4.
  /// @throws std::invalid_argument  low > high.
  virtual void set_write_buffer_limits(std::optional<std::size_t> high = std::nullopt,
                                       std::optional<std::size_t> low = std::nullopt) = 0;
  /// The current {low, high} water marks.
  virtual std::pair<std::size_t, std::size_t> get_write_buffer_limits() const noexcept = 0;

  // ---- Reading ---------------------------------------------------------------------------

  /// Stops delivering data: no data_received() until resume_reading(); the kernel's buffer
  /// fills and TCP's own flow control slows the peer. Idempotent.
  virtual void pause_reading() = 0;
  /// Delivers data again after pause_reading(). Idempotent.
  virtual void resume_reading() = 0;
  /// Whether data is being delivered (false when paused or closing).
  virtual bool is_reading() const noexcept = 0;

  // ---- Protocol --------------------------------------------------------------------------

  /// Hands the connection to @p protocol (asyncio's set_protocol): later callbacks go to it,
  /// and the transport now owns it. The previous protocol is destroyed in a later loop
  /// iteration, so this may be called from inside its callbacks. The new protocol's
  /// connection_made() is not called.
  /// @throws std::invalid_argument  @p protocol is null, or neither a Protocol nor a
  /// BufferedProtocol.
  virtual void set_protocol(std::unique_ptr<BaseProtocol> protocol) = 0;
  /// set_protocol() that hands the previous protocol back to the caller instead of destroying
  /// it: how start_tls() moves a live protocol onto the TLS transport. The caller must keep
  /// the returned protocol alive while one of its callbacks is still running.
  /// @throws std::invalid_argument  as set_protocol(); the protocol is then unchanged.
  virtual std::unique_ptr<BaseProtocol> exchange_protocol(std::unique_ptr<BaseProtocol> protocol) = 0;
  /// The protocol that receives the callbacks.
  virtual BaseProtocol& get_protocol() const noexcept = 0;

 protected:
  Transport() = default;
  ~Transport() = default;
};

/// A datagram endpoint (UDP or a Unix datagram socket): asyncio's DatagramTransport.
class DatagramTransport : public BaseTransport {
 public:
  /// Sends @p data to @p addr, or to the connected peer when @p addr is empty. Never
  /// blocks: what cannot be sent now is buffered. A send error goes to error_received().
  /// @throws std::invalid_argument  the endpoint is connected and @p addr is another address,
  /// or it is not connected and @p addr is empty.
  virtual void sendto(std::span<const std::byte> data, const SocketAddress& addr = {}) = 0;
  /// sendto() of the bytes of @p data.
  void sendto(std::string_view data, const SocketAddress& addr = {}) {
    sendto(std::as_bytes(std::span(data.data(), data.size())), addr);
  }
  /// Ends the endpoint now, dropping the buffer; connection_lost() follows. Idempotent.
  virtual void abort() = 0;
  /// Bytes queued and not yet sent.
  virtual std::size_t get_write_buffer_size() const noexcept = 0;
  /// As Transport::set_write_buffer_limits().
  virtual void set_write_buffer_limits(std::optional<std::size_t> high = std::nullopt,
                                       std::optional<std::size_t> low = std::nullopt) = 0;
  /// The current {low, high} water marks, as Transport::get_write_buffer_limits().
  virtual std::pair<std::size_t, std::size_t> get_write_buffer_limits() const noexcept = 0;

  /// Hands the endpoint to @p protocol; as Transport::set_protocol().
  /// @throws std::invalid_argument  @p protocol is null.
  virtual void set_protocol(std::unique_ptr<DatagramProtocol> protocol) = 0;
  /// The protocol the endpoint serves now.
  virtual DatagramProtocol& get_protocol() const noexcept = 0;

 protected:
  DatagramTransport() = default;
  ~DatagramTransport() = default;
};

}  // namespace strata
