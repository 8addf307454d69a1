#pragma once
/// @file
/// The callback interfaces that transports call (asyncio.BaseProtocol, Protocol,
/// BufferedProtocol, DatagramProtocol). Subclass one to write a server or a client.

#include <cstddef>
#include <span>
#include <system_error>

namespace strata {

class Transport;
class DatagramTransport;
class SocketAddress;

/// What every protocol hears from its transport: the end of the connection and flow control.
///
/// @par Grammar  All calls come on the loop's thread, never inside the call that caused
/// them. connection_made comes first, connection_lost last and exactly once;
/// pause_writing and resume_writing alternate, starting with pause_writing.
///
/// @par Lifetime  The transport owns its protocol: it destroys the protocol after
/// connection_lost() has returned, in a later loop iteration.
class BaseProtocol {
 public:
  virtual ~BaseProtocol() = default;

  /// The connection ended. @p ec is empty after a clean end (close() or EOF on both sides),
  /// or the error that ended it: e.g. std::errc::connection_reset, std::errc::broken_pipe;
  /// std::errc::operation_canceled after abort(); strata::errc::loop_closed when the loop
  /// closed under it; strata::errc::callback_failed when one of this protocol's callbacks
  /// threw (the exception went to the loop's exception handler).
  virtual void connection_lost(std::error_code ec) { (void)ec; }
  /// The transport's write buffer rose above its high-water mark: stop writing until
  /// resume_writing(). Writing anyway is allowed; the buffer just grows.
  virtual void pause_writing() {}
  /// The write buffer drained to its low-water mark after pause_writing().
  virtual void resume_writing() {}
};

/// A stream protocol that receives data in the transport's buffer (asyncio.Protocol).
///
/// @par Grammar  `connection_made data_received* eof_received? connection_lost`.
class Protocol : public BaseProtocol {
 public:
  /// The connection is up; @p transport stays valid until connection_lost() returns.
  virtual void connection_made(Transport& transport) { (void)transport; }
  /// Bytes arrived. @p data is valid only during the call.
  virtual void data_received(std::span<const std::byte> data) { (void)data; }
  /// The peer closed its sending side. Return true to keep the connection half-open (this
  /// side may still write, then close()); false closes the transport. After this, no more
  /// data_received().
  virtual bool eof_received() { return false; }
};

/// A stream protocol that lends the transport its own memory to read into
/// (asyncio.BufferedProtocol): no copy between the socket and the protocol.
///
/// @par Grammar  `connection_made (get_buffer buffer_updated?)* eof_received? connection_lost`.
class BufferedProtocol : public BaseProtocol {
 public:
  /// The connection is up; @p transport stays valid until connection_lost() returns.
  virtual void connection_made(Transport& transport) { (void)transport; }
  /// The memory the next read goes into; @p size_hint is what the transport would like (at
  /// least 1). An empty span is an error: the transport aborts the connection with
  /// std::errc::no_buffer_space.
  virtual std::span<std::byte> get_buffer(std::size_t size_hint) = 0;
  /// @p nbytes bytes were written at the start of the last buffer get_buffer() returned.
  virtual void buffer_updated(std::size_t nbytes) = 0;
  /// As Protocol::eof_received().
  virtual bool eof_received() { return false; }
};

/// A datagram protocol (asyncio.DatagramProtocol).
///
/// @par Grammar  `connection_made (datagram_received | error_received)* connection_lost`.
class DatagramProtocol : public BaseProtocol {
 public:
  /// The endpoint is ready; @p transport stays valid until connection_lost() returns.
  virtual void connection_made(DatagramTransport& transport) { (void)transport; }
  /// A datagram arrived from @p addr; @p data is valid only during the call.
  virtual void datagram_received(std::span<const std::byte> data, const SocketAddress& addr) {
    (void)data;
    (void)addr;
  }
  /// A send or receive failed without ending the endpoint (e.g. ICMP port unreachable on a
  /// connected endpoint: std::errc::connection_refused).
  virtual void error_received(std::error_code ec) { (void)ec; }
};

}  // namespace strata
