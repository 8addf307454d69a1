#pragma once
/// @file
/// EchoProtocol and EchoDatagramProtocol: the reference echo protocols (RFC 862), stream and
/// datagram. They are what `echo_server --api protocol` serves.

#include <cstddef>
#include <cstdint>
#include <span>
#include <system_error>

#include "strata/transports/protocol.hpp"

namespace strata {

/// A stream protocol that writes back every byte it receives, in order (RFC 862 over TCP).
///
/// What the peer observes: each chunk it sends comes back unchanged. When the peer closes
/// its sending side, the echo of everything received so far is sent, then the connection is
/// closed: the peer reads all its bytes back, then end of file.
///
/// Flow control: when the transport's write buffer rises above its high-water mark
/// (pause_writing()), reading is paused until the buffer drains to its low-water mark
/// (resume_writing()). A peer that sends but never reads therefore holds the server's buffer
/// to at most the high-water mark plus one read, and TCP's own window then stops the peer.
///
/// @par Grammar  `connection_made data_received* eof_received? connection_lost`, on the
/// loop's thread; pause_writing and resume_writing alternate between them.
/// @par Thread safety  Loop thread only, as every protocol.
/// @par Lifetime  Owned by its transport (see BaseProtocol); it keeps the Transport* it is
/// given until connection_lost().
class EchoProtocol final : public Protocol {
 public:
  /// Keeps @p transport for writing back.
  void connection_made(Transport& transport) override;
  /// Writes @p data back: sent at once when the kernel takes it, else buffered.
  void data_received(std::span<const std::byte> data) override;
  /// The peer finished sending: returns false, so the transport closes, which sends what is
  /// buffered first, then ends the connection.
  bool eof_received() override;
  /// Drops the transport.
  void connection_lost(std::error_code ec) override;
  /// The write buffer is over its high-water mark: stop reading.
  void pause_writing() override;
  /// The write buffer drained: read again.
  void resume_writing() override;

  /// The transport between connection_made() and connection_lost(), else null.
  Transport* transport() const noexcept { return transport_; }

 private:
  Transport* transport_ = nullptr;
};

/// A datagram protocol that sends each datagram back to the address it came from
/// (RFC 862 over UDP), and counts what it echoed.
///
/// An error on the endpoint (error_received(), e.g. ICMP port unreachable for a reply) is
/// counted and otherwise ignored: the endpoint keeps serving.
///
/// @par Grammar  `connection_made (datagram_received | error_received)* connection_lost`.
/// @par Thread safety  Loop thread only.
class EchoDatagramProtocol final : public DatagramProtocol {
 public:
  /// Keeps @p transport for sending back.
  void connection_made(DatagramTransport& transport) override;
  /// Sends @p data back to @p addr.
  void datagram_received(std::span<const std::byte> data, const SocketAddress& addr) override;
  /// Counts @p ec; the endpoint stays open.
  void error_received(std::error_code ec) override;
  /// Drops the transport.
  void connection_lost(std::error_code ec) override;

  /// Datagrams echoed so far.
  std::uint64_t datagrams() const noexcept { return datagrams_; }
  /// Bytes echoed so far.
  std::uint64_t bytes() const noexcept { return bytes_; }
  /// Errors error_received() reported so far.
  std::uint64_t errors() const noexcept { return errors_; }
  /// The transport between connection_made() and connection_lost(), else null.
  DatagramTransport* transport() const noexcept { return transport_; }

 private:
  DatagramTransport* transport_ = nullptr;
  std::uint64_t datagrams_ = 0;
  std::uint64_t bytes_ = 0;
  std::uint64_t errors_ = 0;
};

}  // namespace strata
